// SnapKV (Li et al. 2024, arXiv 2404.14469), as restated in spec FASTKV.md §2 + §4.
// Reference: FastKV repo baselines/snapkv (observation window W=8, pooling kernel 7, maxpool).
// Parameters: retain_rate r (default 0.1) or kv_budget C (tokens); window W; kernel K; pooling.
// Every layer keeps C = floor(N*r) (or C) rows per KV head: top-(C-W) of the window score + the
// last W rows. Deviations: scores are fp32 (reference fp16); kept rows ascending; guard
// C - W <= 0 -> keep everything. GQA: by default one selection per KV head from the group-summed
// score (reference repeats K/V to every query head: G times the memory). per_query_head=true
// selects per query head like the reference; a KV head then keeps the UNION of its G query heads'
// selections (plus the window): each query head's chosen rows are all present, but the head may
// hold up to G*(C-W)+W rows (never more than the reference's G copies of C rows).
#include <algorithm>

#include "kv/policies/common.h"
#include "kv/topk.h"

namespace fkv::kvp {

namespace {
class SnapKv final : public KvPolicy {
 public:
  SnapKv(WindowOpts w, Budget b, bool per_query_head) : w_(w), b_(b), per_q_(per_query_head) {}
  std::string name() const override { return "snapkv"; }

  bool select_kv(const LayerView& lv, KeepLists& keep) override {
    const int n = lv.n_rows, W = w_.window;
    const int C = b_.of(lv.n_prompt);
    if (C - W <= 0 || C >= n) return false;
    const int Hkv = lv.model->n_kv_heads, H = lv.model->n_heads, G = H / Hkv, m = n - W;
    if (!per_q_) {
      window_scores(lv, W, w_.kernel, w_.pooling, s_);
      std::vector<int> k(Hkv, C - W);
      keep_topk_plus_window(s_.data(), Hkv, n, W, k, keep);
      return true;
    }
    window_scores_per_query_head(lv, W, w_.kernel, w_.pooling, s_);
    keep_begin(keep);
    std::vector<int32_t> sel, uni;
    for (int g = 0; g < Hkv; ++g) {
      std::vector<char> mark(m, 0);
      for (int h = g * G; h < (g + 1) * G; ++h) {
        top_k({s_.data() + static_cast<int64_t>(h) * m, static_cast<size_t>(m)}, C - W, sel);
        for (int32_t r : sel) mark[r] = 1;
      }
      uni.clear();
      for (int j = 0; j < m; ++j)
        if (mark[j]) uni.push_back(j);
      for (int r = m; r < n; ++r) uni.push_back(r);
      keep_push_head(keep, uni);
    }
    return true;
  }

 private:
  WindowOpts w_;
  Budget b_;
  bool per_q_;
  std::vector<float> s_;
};

Expected<std::unique_ptr<KvPolicy>> make_snapkv(const PolicyOptions& o, const PolicyModelInfo&) {
  auto w = parse_window(o);
  if (!w) return w.status();
  auto b = parse_budget(o, w->window, "window");
  if (!b) return b.status();
  return std::unique_ptr<KvPolicy>(new SnapKv(*w, *b, o.per_query_head));
}

// The budget C per KV head; per_query_head keeps the union of the G query heads' top C - W
// plus the window: up to min(n - W, G (C - W)) + W.
int64_t max_rows_snapkv(const PolicyOptions& o, const PolicyModelInfo& model, int n_prompt) {
  const int64_t window = o.window.value_or(kDefaultWindow);
  const int64_t c = budget_or_all(o, n_prompt, window);
  if (!o.per_query_head || c >= n_prompt || model.n_kv_heads <= 0) return c;
  const int64_t group = model.n_heads / model.n_kv_heads;
  return std::min<int64_t>(n_prompt - window, group * (c - window)) + window;
}

}  // namespace

const MethodInfo kSnapKvInfo = {"snapkv", make_snapkv, kWindowScoreOpts | kPerQueryHead,
                                max_rows_snapkv, true};

}  // namespace fkv::kvp
