// H2O (Zhang et al. 2023, arXiv 2306.14048), spec FASTKV.md §4: accumulated attention
// s[h, j] = sum over ALL query rows i >= j of the causal softmax A[h, i, j], summed over each KV
// head's query group (HF grouping), no pooling; keep top-(C-W) heavy hitters among [0, n-W) plus
// the last W rows. Parameters: retain_rate r (0.1) or kv_budget C; window W (8).
// Deviation: the reference masks only the last WxW block of a materialised n x n matrix; we use the
// proper causal mask and stream (log-sum-exp pass + column-sum pass, O(n) scratch per row).
// Guards: C - W <= 0 or C >= n -> keep everything.
#include <algorithm>

#include "kv/policies/common.h"
#include "kv/topk.h"

namespace fkv::kvp {

namespace {
class H2o final : public KvPolicy {
 public:
  H2o(int window, Budget b) : window_(window), b_(b) {}
  std::string name() const override { return "h2o"; }

  bool select_kv(const LayerView& lv, KeepLists& keep) override {
    const int n = lv.n_rows, W = window_;
    const int C = b_.of(lv.n_prompt);
    if (C - W <= 0 || C >= n) return false;
    const int H = lv.model->n_heads, Hkv = lv.model->n_kv_heads, m = n - W;
    accumulated_attention(lv, s_q_);
    std::vector<float> cols(static_cast<size_t>(H) * m);  // [H, m]: drop the window columns
    for (int h = 0; h < H; ++h)
      std::copy_n(s_q_.data() + static_cast<int64_t>(h) * n, m,
                  cols.data() + static_cast<int64_t>(h) * m);
    std::vector<float> s_kv(static_cast<size_t>(Hkv) * m);
    gqa_sum(cols.data(), H, Hkv, m, s_kv.data());
    std::vector<int> k(Hkv, C - W);
    keep_topk_plus_window(s_kv.data(), Hkv, n, W, k, keep);
    return true;
  }

 private:
  int window_;
  Budget b_;
  std::vector<float> s_q_;
};

Expected<std::unique_ptr<KvPolicy>> make_h2o(const PolicyOptions& o, const PolicyModelInfo&) {
  auto w = parse_window(o);
  if (!w) return w.status();
  auto b = parse_budget(o, w->window, "window");
  if (!b) return b.status();
  return std::unique_ptr<KvPolicy>(new H2o(w->window, *b));
}

}  // namespace

const MethodInfo kH2oInfo = {"h2o", make_h2o, kBudgetOpts | kWindow, window_budget_rows, true};

}  // namespace fkv::kvp
