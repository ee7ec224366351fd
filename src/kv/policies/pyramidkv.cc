// PyramidKV (Cai et al. 2024, arXiv 2406.02069), spec FASTKV.md §4: the SnapKV window score with a
// linearly decreasing per-layer capacity. Parameters: retain_rate r (0.1) or kv_budget C = the
// average capacity; W, K, pooling as SnapKV; beta = 20 (fixed).
//   min = (C-W)/beta, max = 2(C-W) - min, C_l = W + max - floor(l*(max-min)/(L-1)).
// Guards: C - W <= 0 (short prompt) or C >= n -> keep everything in every layer. A layer whose C_l
// == W keeps just the window (the formula's intent); C_l >= n keeps everything.
#include "kv/budget.h"
#include "kv/policies/common.h"
#include "kv/topk.h"

namespace fkv::kvp {

namespace {
class PyramidKv final : public KvPolicy {
 public:
  PyramidKv(WindowOpts w, Budget b) : w_(w), b_(b) {}
  std::string name() const override { return "pyramidkv"; }

  bool select_kv(const LayerView& lv, KeepLists& keep) override {
    const int n = lv.n_rows, W = w_.window;
    const int C = b_.of(lv.n_prompt);
    if (C - W <= 0 || C >= n) return false;  // as the reference: an average >= n keeps all
    const int C_l = pyramid_capacity(C, W, kPyramidBeta, lv.model->n_layers, lv.il);
    if (C_l >= n) return false;
    window_scores(lv, W, w_.kernel, w_.pooling, s_);
    std::vector<int> k(lv.model->n_kv_heads, C_l - W);
    keep_topk_plus_window(s_.data(), lv.model->n_kv_heads, n, W, k, keep);
    return true;
  }

 private:
  WindowOpts w_;
  Budget b_;
  std::vector<float> s_;
};

Expected<std::unique_ptr<KvPolicy>> make_pyramidkv(const PolicyOptions& o, const PolicyModelInfo&) {
  auto w = parse_window(o);
  if (!w) return w.status();
  auto b = parse_budget(o, w->window, "window");
  if (!b) return b.status();
  return std::unique_ptr<KvPolicy>(new PyramidKv(*w, *b));
}

// C_l = W + max - floor(...) <= W + 2 (C - W) < 2 C.
int64_t max_rows_pyramidkv(const PolicyOptions& o, const PolicyModelInfo&, int n_prompt) {
  const int64_t c = budget_or_all(o, n_prompt, o.window.value_or(kDefaultWindow));
  return c < n_prompt ? 2 * c : c;
}

}  // namespace

const MethodInfo kPyramidKvInfo = {"pyramidkv", make_pyramidkv, kWindowScoreOpts,
                                   max_rows_pyramidkv, true};

}  // namespace fkv::kvp
