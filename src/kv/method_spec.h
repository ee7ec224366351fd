// The one parser of KV-method specs, shared by every front-end (generate, bench, eval, serve and
// the Python module): "name" or "name:key=value,key=value", e.g.
// "fastkv:tsp_rate=0.2,retain_rate=0.1". Keys are PolicyOptions fields (CLI flags with '-' are
// accepted too: "tsp-rate"). Values are parsed at full width and range-checked before narrowing;
// which keys a method accepts and their value ranges are checked by make_policy().
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "kv/policy.h"

namespace fkv {

enum class MethodOptionKind { kInt, kFloat, kString, kBool };

struct MethodOptionInfo {
  const char* key;  // PolicyOptions field name, e.g. "tsp_rate"
  MethodOptionKind kind;
  const char* help;
};

// Every option key any method takes, in a fixed order.
const std::vector<MethodOptionInfo>& method_option_infos();
// The entry of `key` ('-' or '_'), nullptr for a key no method takes.
const MethodOptionInfo* method_option_info(std::string_view key);
// The keys `method` accepts (a subset of method_option_infos(), same order); error for an
// unknown method.
Expected<std::vector<MethodOptionInfo>> method_options(const std::string& method);

// Sets one option from its text form ("0.2", "7", "max", "true"). `key` may use '-' or '_'.
// Errors name the key and quote the value as given.
Status set_method_option(PolicyOptions& opts, std::string_view key, std::string_view value);

// "name[:key=value,...]" -> options. Does not check the method against the model (make_policy
// does); does check the method name and that each key applies to it.
Expected<PolicyOptions> parse_method_spec(std::string_view spec);

// The option keys a valid spec gives, normalised as parse_method_spec() reads them, in order
// ("fastkv:tsp-rate=0.2, retain_rate=0.1" -> {tsp_rate, retain_rate}); the spec's error otherwise.
Expected<std::vector<std::string>> method_spec_keys(std::string_view spec);

// Canonical spec string: the method name, then the options that are set in
// method_option_infos() order ("fastkv:tsp_rate=0.2,retain_rate=0.1"). Round-trips through
// parse_method_spec().
std::string format_method_spec(const PolicyOptions& opts);

}  // namespace fkv
