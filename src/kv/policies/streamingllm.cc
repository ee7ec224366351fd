// StreamingLLM (Xiao et al. 2023, arXiv 2309.17453), spec FASTKV.md §4: keep the first 4 tokens
// (attention sinks) plus the most recent C-4, in every layer and head. Parameters: retain_rate r
// (0.1) or kv_budget C. Guards: C <= 4 or C >= n -> keep everything. Prefill only (no eviction
// during decoding, as the FastKV baseline).
#include "kv/policies/common.h"
#include "kv/topk.h"

namespace fkv::kvp {

namespace {
class StreamingLlm final : public KvPolicy {
 public:
  explicit StreamingLlm(Budget b) : b_(b) {}
  std::string name() const override { return "streamingllm"; }

  bool select_kv(const LayerView& lv, KeepLists& keep) override {
    const int n = lv.n_rows;
    const int C = b_.of(lv.n_prompt);
    if (C - kStreamingSinks <= 0 || C >= n) return false;
    std::vector<int32_t> rows;
    for (int r = 0; r < kStreamingSinks; ++r) rows.push_back(r);
    for (int r = n - (C - kStreamingSinks); r < n; ++r) rows.push_back(r);
    keep_begin(keep);
    for (int g = 0; g < lv.model->n_kv_heads; ++g) keep_push_head(keep, rows);
    return true;
  }

 private:
  Budget b_;
};

Expected<std::unique_ptr<KvPolicy>> make_streamingllm(const PolicyOptions& o,
                                                      const PolicyModelInfo&) {
  auto b = parse_budget(o, kStreamingSinks, "number of sink tokens");
  if (!b) return b.status();
  return std::unique_ptr<KvPolicy>(new StreamingLlm(*b));
}

int64_t max_rows_streamingllm(const PolicyOptions& o, const PolicyModelInfo&, int n_prompt) {
  return budget_or_all(o, n_prompt, kStreamingSinks);
}

}  // namespace

const MethodInfo kStreamingLlmInfo = {"streamingllm", make_streamingllm, kBudgetOpts,
                                      max_rows_streamingllm, true};

}  // namespace fkv::kvp
