// fastkv command-line interface: one executable, one file per subcommand (tools/cli/*.cc), all on
// the same engine API and method-spec parser.
#include <cstdio>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "engine/app.h"

namespace {

struct Command {
  const char* name;
  int (*run)(const std::vector<std::string>&);
  const char* help;
};

const std::vector<Command>& commands() {
  static const std::vector<Command> table = {
      {"generate", fkv::cli::cmd_generate,
       "generate text from a prompt (streams to stdout, timing on stderr)"},
      {"bench", fkv::cli::cmd_bench,
       "time prefill and decode over lists of lengths, methods, threads (llama-bench style)"},
      {"tokenize", fkv::cli::cmd_tokenize, "print the token ids of a text"},
      {"serve", fkv::cli::cmd_serve,
       "OpenAI-compatible HTTP server with continuous batching and per-request KV compression"},
      {"eval", fkv::cli::cmd_eval,
       "accuracy of KV methods: needle, RULER, LongBench (official metrics); merge shards"},
  };
  return table;
}

void print_main_help() {
  std::printf(
      "fastkv: long-context LLM inference with FastKV and baseline KV-cache compression.\n\n"
      "usage: fastkv COMMAND [options]\n\nCommands:\n");
  for (const Command& c : commands()) std::printf("  %-10s %s\n", c.name, c.help);
  std::printf("\nRun 'fastkv COMMAND --help' for a command's options.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (fkv::Status st = fkv::check_engine_environment(); !st) {
    std::fprintf(stderr, "fastkv: error: %s\n", st.message().c_str());
    return 2;
  }
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    print_main_help();
    return args.empty() ? 2 : 0;
  }
  std::vector<std::string> rest(args.begin() + 1, args.end());
  std::string names;
  for (const Command& c : commands()) {
    if (args[0] == c.name) return c.run(rest);
    names += (names.empty() ? "" : ", ") + std::string(c.name);
  }
  std::fprintf(stderr, "fastkv: error: unknown command '%s' (commands: %s)\n", args[0].c_str(),
               names.c_str());
  return 2;
}
