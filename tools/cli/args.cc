#include "cli/args.h"

#include <algorithm>
#include <cstdio>

#include "core/parse_number.h"
#include "kernels/matmul.h"
#include "kv/method_spec.h"

namespace fkv::cli {

// Typed reads of parsed flags: full-width parse, range check, then narrow (core/parse_number.h).
Expected<int64_t> get_int(const ParsedArgs& pa, const std::string& flag, int64_t def, int64_t lo,
                          int64_t hi) {
  if (!pa.has(flag)) return def;
  return parse_int_in_range(pa.str(flag), "--" + flag, lo, hi);
}
Expected<double> get_float(const ParsedArgs& pa, const std::string& flag, double def, double lo,
                           double hi) {
  if (!pa.has(flag)) return def;
  return parse_double_in_range(pa.str(flag), "--" + flag, lo, hi);
}

Expected<ParsedArgs> parse_args(const std::vector<std::string>& args,
                                const std::vector<ArgSpec>& specs, const std::string& command) {
  ParsedArgs out;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string a = args[i];
    if (a.rfind("--", 0) != 0) {
      return Status::error(strfmt("%s: unexpected argument '%s' (see fastkv %s --help)",
                                  command.c_str(), a.c_str(), command.c_str()));
    }
    std::string name = a.substr(2);
    std::optional<std::string> inline_value;
    if (auto eq = name.find('='); eq != std::string::npos) {
      inline_value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    const ArgSpec* spec = nullptr;
    for (const auto& s : specs) {
      if (name == s.name) spec = &s;
    }
    if (spec == nullptr) {
      return Status::error(strfmt("%s: unknown option '--%s' (see fastkv %s --help)",
                                  command.c_str(), name.c_str(), command.c_str()));
    }
    if (out.has(name)) {
      return Status::error(strfmt("%s: option '--%s' given twice", command.c_str(), name.c_str()));
    }
    if (spec->kind == ArgKind::kFlag) {
      if (inline_value) {
        return Status::error(
            strfmt("%s: option '--%s' takes no value", command.c_str(), name.c_str()));
      }
      out.values[name] = "1";
      continue;
    }
    std::string value;
    if (inline_value) {
      value = *inline_value;
    } else {
      if (i + 1 >= args.size()) {
        return Status::error(
            strfmt("%s: option '--%s' needs a value", command.c_str(), name.c_str()));
      }
      value = args[++i];
    }
    // Numbers are parsed (with their ranges) where they are read: get_int / get_float.
    out.values[name] = value;
  }
  return out;
}

void print_help(const char* usage, const std::vector<ArgSpec>& specs) {
  std::printf("%s\n\nOptions:\n", usage);
  for (const auto& s : specs) {
    const char* meta = s.kind == ArgKind::kFlag ? "" : s.kind == ArgKind::kString ? " VALUE" : " N";
    std::printf("  --%s%s\n      %s\n", s.name, meta, s.help);
  }
}

bool wants_help(const std::vector<std::string>& args) {
  for (const auto& a : args) {
    if (a == "--help" || a == "-h") return true;
  }
  return false;
}

int fail(const Status& st) {
  std::fflush(stdout);
  std::fprintf(stderr, "fastkv: error: %s\n", st.message().c_str());
  return 1;
}

Status apply_threads(const ParsedArgs& pa) {
  if (!pa.has("threads")) return Status::ok();
  auto t = get_int(pa, "threads", 0, 1, 1024);
  if (!t) return t.status();
  set_num_threads(static_cast<int>(*t));  // the calling (main) thread's pool
  return Status::ok();
}

namespace {
// The registry's names, so a new method shows up in --help with no edit here.
std::string method_help() {
  std::string names;
  for (const std::string& m : policy_names())
    names += (names.empty() ? "" : ", ") + m + (m == "fullkv" ? " (default)" : "");
  return "KV method spec NAME[:key=value,...]: " + names +
         "; e.g. fastkv:tsp_rate=0.2,retain_rate=0.1";
}
}  // namespace

// --method, then one flag per method option, made from the option table the spec parser reads
// (method_option_infos: key with '-' for '_', its kind and help), so the two cannot drift.
const std::vector<ArgSpec>& method_arg_specs() {
  static const std::string method_doc = method_help();
  static const std::vector<std::string> flag_names = [] {
    std::vector<std::string> names;
    for (const MethodOptionInfo& info : method_option_infos()) {
      std::string flag = info.key;
      std::replace(flag.begin(), flag.end(), '_', '-');
      names.push_back(flag);
    }
    return names;
  }();
  static const std::vector<ArgSpec> specs = [] {
    std::vector<ArgSpec> out = {{"method", ArgKind::kString, method_doc.c_str()}};
    const auto& infos = method_option_infos();
    for (size_t i = 0; i < infos.size(); ++i) {
      ArgKind kind = ArgKind::kString;
      switch (infos[i].kind) {
        case MethodOptionKind::kInt:
          kind = ArgKind::kInt;
          break;
        case MethodOptionKind::kFloat:
          kind = ArgKind::kFloat;
          break;
        case MethodOptionKind::kString:
          kind = ArgKind::kString;
          break;
        case MethodOptionKind::kBool:
          kind = ArgKind::kFlag;
          break;
      }
      out.push_back({flag_names[i].c_str(), kind, infos[i].help});
    }
    return out;
  }();
  return specs;
}

// --method takes a spec ("fastkv" or "fastkv:tsp_rate=0.2,retain_rate=0.1", the parser bench,
// eval, serve and Python share); the per-option flags (--tsp-rate ...) add to it.
Expected<PolicyOptions> policy_options(const ParsedArgs& pa) {
  const std::string spec = pa.str("method", "fullkv");
  auto po = parse_method_spec(spec);
  if (!po) return po.status();
  auto spec_keys = method_spec_keys(spec);
  if (!spec_keys) return spec_keys.status();
  for (const auto& info : method_option_infos()) {
    std::string flag = info.key;
    for (char& ch : flag)
      if (ch == '_') ch = '-';
    if (!pa.has(flag)) continue;
    if (std::find(spec_keys->begin(), spec_keys->end(), info.key) != spec_keys->end()) {
      return Status::error(strfmt("--%s repeats option %s of --method '%s'; give it once",
                                  flag.c_str(), info.key, spec.c_str()));
    }
    const std::string value = info.kind == MethodOptionKind::kBool ? "true" : pa.str(flag);
    if (auto st = set_method_option(*po, info.key, value); !st) {
      return Status::error(strfmt("--%s: %s", flag.c_str(), st.message().c_str()));
    }
  }
  return po;
}

}  // namespace fkv::cli
