#include "kv/method_spec.h"

#include <cstdio>
#include <limits>

#include "core/parse_number.h"

namespace fkv {
namespace {

std::string normalise_key(std::string_view key) {
  std::string k(key);
  for (char& c : k)
    if (c == '-') c = '_';
  return k;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Shortest text that parses back to the same double.
std::string format_double(double v) {
  char buf[64];
  for (int prec = 1; prec <= 17; ++prec) {
    std::snprintf(buf, sizeof(buf), "%.*g", prec, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

}  // namespace

const MethodOptionInfo* method_option_info(std::string_view key) {
  const std::string k = normalise_key(key);
  for (const MethodOptionInfo& info : method_option_infos()) {
    if (k == info.key) return &info;
  }
  return nullptr;
}

Status set_method_option(PolicyOptions& o, std::string_view key_in, std::string_view value) {
  const std::string key = normalise_key(key_in);
  const std::string what = "method option " + key;
  constexpr int64_t kIntMax = std::numeric_limits<int>::max();
  auto set_int = [&](std::optional<int>& out) -> Status {
    auto v = parse_int_in_range(value, what, std::numeric_limits<int>::min(), kIntMax);
    if (!v) return v.status();
    out = static_cast<int>(*v);
    return Status::ok();
  };
  auto set_float = [&](std::optional<double>& out) -> Status {
    auto v = parse_double_in_range(value, what, -std::numeric_limits<double>::max(),
                                   std::numeric_limits<double>::max());
    if (!v) return v.status();
    out = *v;
    return Status::ok();
  };
  if (key == "tsp_layer") return set_int(o.tsp_layer);
  if (key == "tsp_rate") return set_float(o.tsp_rate);
  if (key == "tsp_len") return set_int(o.tsp_len);
  if (key == "retain_rate") return set_float(o.retain_rate);
  if (key == "kv_budget") return set_int(o.kv_budget);
  if (key == "window") return set_int(o.window);
  if (key == "kernel") return set_int(o.kernel);
  if (key == "filter_layer") return set_int(o.filter_layer);
  if (key == "pooling" || key == "mode") {
    if (value.empty()) return Status::error(strfmt("%s needs a value", what.c_str()));
    (key == "pooling" ? o.pooling : o.mode) = std::string(value);
    return Status::ok();
  }
  if (key == "per_query_head") {
    if (value == "true" || value == "1") {
      o.per_query_head = true;
    } else if (value == "false" || value == "0") {
      o.per_query_head = false;
    } else {
      return Status::error(
          strfmt("%s expects true or false, got '%s'", what.c_str(), std::string(value).c_str()));
    }
    return Status::ok();
  }
  std::string valid;
  for (const auto& info : method_option_infos())
    valid += (valid.empty() ? "" : ", ") + std::string(info.key);
  return Status::error(strfmt("unknown method option '%s'; valid options: %s",
                              std::string(key_in).c_str(), valid.c_str()));
}

namespace {
// The parser; `seen` receives the normalised keys the spec gives, in order.
Expected<PolicyOptions> parse_spec(std::string_view spec_in, std::vector<std::string>& seen) {
  const std::string_view spec = trim(spec_in);
  const size_t colon = spec.find(':');
  PolicyOptions o;
  o.method = std::string(trim(spec.substr(0, colon)));
  if (o.method.empty()) {
    return Status::error(
        strfmt("method spec '%s' has no method name (expected "
               "name[:key=value,...])",
               std::string(spec_in).c_str()));
  }
  auto accepted = method_options(o.method);
  if (!accepted) return accepted.status();
  if (colon == std::string_view::npos) return o;
  std::string_view rest = spec.substr(colon + 1);
  while (true) {
    const size_t comma = rest.find(',');
    const std::string_view item = trim(rest.substr(0, comma));
    const size_t eq = item.find('=');
    if (item.empty() || eq == std::string_view::npos || eq == 0) {
      return Status::error(strfmt("method spec '%s': expected key=value, got '%s'",
                                  std::string(spec_in).c_str(), std::string(item).c_str()));
    }
    const std::string key = normalise_key(trim(item.substr(0, eq)));
    for (const auto& s : seen)
      if (s == key)
        return Status::error(strfmt("method spec '%s': option %s given twice",
                                    std::string(spec_in).c_str(), key.c_str()));
    seen.push_back(key);
    FKV_RETURN_IF_ERROR(set_method_option(o, key, trim(item.substr(eq + 1))));
    bool applies = false;
    for (const auto& a : *accepted) applies |= key == a.key;
    if (!applies) {
      std::string valid;
      for (const auto& a : *accepted) valid += (valid.empty() ? "" : ", ") + std::string(a.key);
      return Status::error(strfmt("%s: option %s does not apply to this method (its options: %s)",
                                  o.method.c_str(), key.c_str(),
                                  valid.empty() ? "none" : valid.c_str()));
    }
    if (comma == std::string_view::npos) break;
    rest = rest.substr(comma + 1);
  }
  return o;
}

}  // namespace

Expected<PolicyOptions> parse_method_spec(std::string_view spec) {
  std::vector<std::string> keys;
  return parse_spec(spec, keys);
}

Expected<std::vector<std::string>> method_spec_keys(std::string_view spec) {
  std::vector<std::string> keys;
  FKV_RETURN_IF_ERROR(parse_spec(spec, keys).status());
  return keys;
}

std::string format_method_spec(const PolicyOptions& o) {
  std::string out = o.method;
  char sep = ':';
  auto add = [&](const char* key, const std::string& value) {
    out += sep;
    out += key;
    out += '=';
    out += value;
    sep = ',';
  };
  if (o.tsp_layer) add("tsp_layer", std::to_string(*o.tsp_layer));
  if (o.tsp_rate) add("tsp_rate", format_double(*o.tsp_rate));
  if (o.tsp_len) add("tsp_len", std::to_string(*o.tsp_len));
  if (o.retain_rate) add("retain_rate", format_double(*o.retain_rate));
  if (o.kv_budget) add("kv_budget", std::to_string(*o.kv_budget));
  if (o.window) add("window", std::to_string(*o.window));
  if (o.kernel) add("kernel", std::to_string(*o.kernel));
  if (o.pooling) add("pooling", *o.pooling);
  if (o.mode) add("mode", *o.mode);
  if (o.filter_layer) add("filter_layer", std::to_string(*o.filter_layer));
  if (o.per_query_head) add("per_query_head", "true");
  return out;
}

}  // namespace fkv
