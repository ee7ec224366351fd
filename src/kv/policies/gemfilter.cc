// GemFilter (Shi et al. 2024, arXiv 2409.17422), spec FASTKV.md §4. The engine runs layers
// 0..filter_layer() on the whole prompt; select_prompt() scores the prompt with the LAST row's raw
// logits q_last . k_j (post-RoPE, no scaling, no softmax) summed over all query heads,
// average-pooled with kernel 5 (padding 2, zero padding counted), and keeps the top-k tokens (ties
// -> lower position), ascending. The engine then re-prefills tokens[keep] at fresh positions 0..k-1
// through the whole model with no further compression (select_kv keeps everything). Parameters:
// filter_layer (13 Llama-3.1-8B / 17 Ministral-8B / 19 Mistral-Nemo, else round(13/32*L) clamped to
// [0, L-1]); k = floor(N*r) (retain_rate, 0.1) or kv_budget. Guards: k <= 0 or k >= N -> keep the
// whole prompt. The last token is not forced (as the paper).
#include <numeric>

#include "kv/budget.h"
#include "kv/policies/common.h"
#include "kv/topk.h"

namespace fkv::kvp {

namespace {
class GemFilter final : public KvPolicy {
 public:
  GemFilter(Budget b, int filter_layer) : b_(b), filter_layer_(filter_layer) {}
  std::string name() const override { return "gemfilter"; }
  bool select_kv(const LayerView&, KeepLists&) override { return false; }
  std::optional<int> filter_layer() const override { return filter_layer_; }

  void select_prompt(const LayerView& lv, std::vector<int32_t>& keep_tokens) override {
    const int n = lv.n_rows;
    const int k = b_.of(lv.n_prompt);
    if (k <= 0 || k >= n) {
      keep_tokens.resize(n);
      std::iota(keep_tokens.begin(), keep_tokens.end(), 0);
      return;
    }
    std::vector<float> s, pooled(n);
    last_query_logit_sum(lv, s);
    pool1d(s, kGemFilterKernel, Pooling::kAvg, pooled);
    top_k(pooled, k, keep_tokens);
  }

 private:
  Budget b_;
  int filter_layer_;
};

Expected<std::unique_ptr<KvPolicy>> make_gemfilter(const PolicyOptions& o,
                                                   const PolicyModelInfo& model) {
  auto b = parse_budget(o, 0, "minimum of one token");
  if (!b) return b.status();
  const int fl = o.filter_layer.value_or(default_filter_layer(model));
  FKV_RETURN_IF_ERROR(check_layer("gemfilter", "filter_layer", fl, model));
  return std::unique_ptr<KvPolicy>(new GemFilter(*b, fl));
}

int64_t max_rows_gemfilter(const PolicyOptions& o, const PolicyModelInfo&, int n_prompt) {
  return budget_or_all(o, n_prompt, 0);
}

}  // namespace

const MethodInfo kGemFilterInfo = {"gemfilter", make_gemfilter, kBudgetOpts | kFilterLayer,
                                   max_rows_gemfilter, false};

}  // namespace fkv::kvp
