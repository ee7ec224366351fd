// What every fastkv command shares: flag specs, parsing ("--name value" / "--name=value"),
// typed reads with full-width range checks, --help text, error exit, thread setup.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/status.h"
#include "kv/policy.h"

namespace fkv::cli {

enum class ArgKind { kFlag, kString, kInt, kFloat };  // kInt/kFloat: shown as N in --help
struct ArgSpec {
  const char* name;  // without the leading "--"
  ArgKind kind;
  const char* help;
};

struct ParsedArgs {
  std::map<std::string, std::string> values;
  bool has(const std::string& k) const { return values.count(k) != 0; }
  std::string str(const std::string& k, const std::string& def = "") const {
    auto it = values.find(k);
    return it == values.end() ? def : it->second;
  }
};

// Typed reads of parsed flags: full-width parse, range check, then narrow (core/parse_number.h).
Expected<int64_t> get_int(const ParsedArgs& pa, const std::string& flag, int64_t def, int64_t lo,
                          int64_t hi);
Expected<double> get_float(const ParsedArgs& pa, const std::string& flag, double def, double lo,
                           double hi);

Expected<ParsedArgs> parse_args(const std::vector<std::string>& args,
                                const std::vector<ArgSpec>& specs, const std::string& command);
void print_help(const char* usage, const std::vector<ArgSpec>& specs);
bool wants_help(const std::vector<std::string>& args);
// Prints "fastkv: error: ..." on stderr; returns the exit code 1.
int fail(const Status& st);
// --threads N (if given): the calling thread's kernel threads (core/thread_pool.h).
Status apply_threads(const ParsedArgs& pa);

// The method flags every command that runs a model takes (--method SPEC, --tsp-rate, ...).
const std::vector<ArgSpec>& method_arg_specs();
// --method takes a spec ("fastkv" or "fastkv:tsp_rate=0.2,retain_rate=0.1", the parser bench,
// eval, serve and Python share); the per-option flags (--tsp-rate ...) add to it.
Expected<PolicyOptions> policy_options(const ParsedArgs& pa);

}  // namespace fkv::cli
