// The explicit policy registry (no self-registration: static libraries drop unreferenced objects).
// Adding a method: src/kv/policies/<name>.cc with its MethodInfo, one row here, its line in
// common.h (see docs/ADDING_A_METHOD.md).
#include <algorithm>
#include <string>
#include <vector>

#include "kv/method_spec.h"
#include "kv/policies/common.h"

namespace fkv {

namespace {

using namespace kvp;  // MethodInfo, the Opt bits

// One row per method; the facts about a method live in its own file (policies/<name>.cc).
const MethodInfo* const kRegistry[] = {
    &kvp::kFullKvInfo,       &kvp::kFastKvInfo,       &kvp::kSnapKvInfo, &kvp::kPyramidKvInfo,
    &kvp::kAdaKvInfo,        &kvp::kStreamingLlmInfo, &kvp::kH2oInfo,    &kvp::kGemFilterInfo,
    &kvp::kPyramidInferInfo, &kvp::kKeyDiffInfo,
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

const MethodInfo* find_entry(const std::string& method) {
  for (const MethodInfo* e : kRegistry)
    if (method == e->name) return e;
  return nullptr;
}

std::string valid_names() {
  std::string valid;
  for (const MethodInfo* e : kRegistry) valid += (valid.empty() ? "" : ", ") + std::string(e->name);
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
  const MethodInfo* entry = find_entry(method);
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
  for (const MethodInfo* e : kRegistry) names.emplace_back(e->name);
  return names;
}

Expected<std::unique_ptr<KvPolicy>> make_policy(const PolicyOptions& opts,
                                                const PolicyModelInfo& model) {
  const MethodInfo* entry = find_entry(opts.method);
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

int64_t max_kept_prompt_rows(const PolicyOptions& opts, const PolicyModelInfo& model,
                             int n_prompt) {
  const MethodInfo* entry = find_entry(opts.method);
  const int64_t rows = entry != nullptr ? entry->max_rows(opts, model, n_prompt) : n_prompt;
  return std::clamp<int64_t>(rows, 0, n_prompt);
}

bool shares_prompt_pass(const std::string& method) {
  const MethodInfo* entry = find_entry(method);
  return entry != nullptr && entry->shares_prompt_pass;
}

}  // namespace fkv
