// The explicit policy registry (no self-registration: static libraries drop unreferenced objects).
// Adding a method: one row here + src/kv/policies/<name>.cc (see docs/METHODS.md).
#include <string>
#include <vector>

#include "kv/method_spec.h"
#include "kv/policies/common.h"

namespace fkv {

namespace {

enum Opt : unsigned {
  kTspLayer = 1u << 0,
  kTspRate = 1u << 1,
  kTspLen = 1u << 2,
  kRetainRate = 1u << 3,
  kKvBudget = 1u << 4,
  kWindow = 1u << 5,
  kKernel = 1u << 6,
  kPooling = 1u << 7,
  kMode = 1u << 8,
  kFilterLayer = 1u << 9,
  kPerQueryHead = 1u << 10,
};
constexpr unsigned kBudget = kRetainRate | kKvBudget;
constexpr unsigned kWindowScore = kBudget | kWindow | kKernel | kPooling;

struct Entry {
  const char* name;
  kvp::Factory make;
  unsigned options;  // which PolicyOptions fields the method reads
};

const Entry kRegistry[] = {
    {"fullkv", kvp::make_fullkv, 0},
    {"fastkv", kvp::make_fastkv, kWindowScore | kTspLayer | kTspRate | kTspLen | kMode},
    {"snapkv", kvp::make_snapkv, kWindowScore | kPerQueryHead},
    {"pyramidkv", kvp::make_pyramidkv, kWindowScore},
    {"adakv", kvp::make_adakv, kWindowScore},
    {"streamingllm", kvp::make_streamingllm, kBudget},
    {"h2o", kvp::make_h2o, kBudget | kWindow},
    {"gemfilter", kvp::make_gemfilter, kBudget | kFilterLayer},
    {"pyramidinfer", kvp::make_pyramidinfer, kRetainRate | kWindow},
};

// The options a caller set, with their flag names for messages.
std::vector<std::pair<Opt, const char*>> set_options(const PolicyOptions& o) {
  std::vector<std::pair<Opt, const char*>> out;
  if (o.tsp_layer) out.push_back({kTspLayer, "tsp_layer"});
  if (o.tsp_rate) out.push_back({kTspRate, "tsp_rate"});
  if (o.tsp_len) out.push_back({kTspLen, "tsp_len"});
  if (o.retain_rate) out.push_back({kRetainRate, "retain_rate"});
  if (o.kv_budget) out.push_back({kKvBudget, "kv_budget"});
  if (o.window) out.push_back({kWindow, "window"});
  if (o.kernel) out.push_back({kKernel, "kernel"});
  if (o.pooling) out.push_back({kPooling, "pooling"});
  if (o.mode) out.push_back({kMode, "mode"});
  if (o.filter_layer) out.push_back({kFilterLayer, "filter_layer"});
  if (o.per_query_head) out.push_back({kPerQueryHead, "per_query_head"});
  return out;
}

// Bit of each key in method_option_infos() order.
const Opt kOptionBits[] = {kTspLayer, kTspRate, kTspLen, kRetainRate,  kKvBudget,    kWindow,
                           kKernel,   kPooling, kMode,   kFilterLayer, kPerQueryHead};

const Entry* find_entry(const std::string& method) {
  for (const Entry& e : kRegistry)
    if (method == e.name) return &e;
  return nullptr;
}

std::string valid_names() {
  std::string valid;
  for (const Entry& e : kRegistry) valid += (valid.empty() ? "" : ", ") + std::string(e.name);
  return valid;
}

}  // namespace

const std::vector<MethodOptionInfo>& method_option_infos() {
  using K = MethodOptionKind;
  static const std::vector<MethodOptionInfo> infos = {
      {"tsp_layer", K::kInt, "fastkv: layer after which only the selected tokens propagate"},
      {"tsp_rate", K::kFloat, "fastkv: share of tokens propagated after the TSP layer, (0, 1]"},
      {"tsp_len", K::kInt, "fastkv: tokens propagated after the TSP layer (absolute)"},
      {"retain_rate", K::kFloat, "share of prompt KV entries each layer keeps, (0, 1]"},
      {"kv_budget", K::kInt, "KV entries each layer keeps (absolute)"},
      {"window", K::kInt, "observation window W (the last W prompt tokens)"},
      {"kernel", K::kInt, "pooling kernel size (odd)"},
      {"pooling", K::kString, "score pooling: max | avg"},
      {"mode", K::kString, "fastkv budgets: proportional (rates) | constant (counts)"},
      {"filter_layer", K::kInt, "gemfilter: layer whose attention selects the tokens"},
      {"per_query_head", K::kBool, "snapkv: select per query head (parity with the reference)"},
  };
  static_assert(sizeof(kOptionBits) / sizeof(kOptionBits[0]) == 11);
  return infos;
}

Expected<std::vector<MethodOptionInfo>> method_options(const std::string& method) {
  const Entry* entry = find_entry(method);
  if (entry == nullptr) {
    return Status::error(
        strfmt("unknown KV method '%s'; valid methods: %s", method.c_str(), valid_names().c_str()));
  }
  std::vector<MethodOptionInfo> out;
  const auto& infos = method_option_infos();
  for (size_t i = 0; i < infos.size(); ++i)
    if (entry->options & kOptionBits[i]) out.push_back(infos[i]);
  return out;
}

std::vector<std::string> policy_names() {
  std::vector<std::string> names;
  for (const Entry& e : kRegistry) names.emplace_back(e.name);
  return names;
}

Expected<std::unique_ptr<KvPolicy>> make_policy(const PolicyOptions& opts,
                                                const PolicyModelInfo& model) {
  const Entry* entry = find_entry(opts.method);
  if (entry == nullptr) {
    return Status::error(strfmt("unknown KV method '%s'; valid methods: %s", opts.method.c_str(),
                                valid_names().c_str()));
  }
  if (model.n_layers <= 0 || model.n_heads <= 0 || model.n_kv_heads <= 0 ||
      model.n_heads % model.n_kv_heads != 0 || model.head_dim <= 0)
    return Status::error(strfmt(
        "%s: unsupported model shape: n_layers=%d n_heads=%d "
        "n_kv_heads=%d head_dim=%d",
        opts.method.c_str(), model.n_layers, model.n_heads, model.n_kv_heads, model.head_dim));
  for (const auto& [bit, flag] : set_options(opts))
    if ((entry->options & bit) == 0)
      return Status::error(
          strfmt("%s: option %s does not apply to this method", opts.method.c_str(), flag));
  return entry->make(opts, model);
}

}  // namespace fkv
