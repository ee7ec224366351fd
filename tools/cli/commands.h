// The fastkv subcommands; each lives in its own file of tools/cli and is listed in main.cc.
#pragma once

#include <string>
#include <vector>

namespace fkv::cli {

int cmd_bench(const std::vector<std::string>& args);
int cmd_generate(const std::vector<std::string>& args);
int cmd_tokenize(const std::vector<std::string>& args);
int cmd_serve(const std::vector<std::string>& args);
int cmd_eval(const std::vector<std::string>& args);

}  // namespace fkv::cli
