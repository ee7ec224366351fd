// AdaKV (Feng et al. 2024, arXiv 2407.11550), spec FASTKV.md §4: the SnapKV window score, then the
// layer budget B = Hkv*(C-W) is split across KV heads by a layer-wide top-B over all heads' scores,
// mixed with a floor: cap_g = c_g*(1-alpha) + alpha*(C-W), alpha = 0.2. Heads keep different
// lengths for real (the cache stores each head unpadded).
// Rounding: largest remainder (ties -> lower head) so that sum_g cap_g == B exactly, i.e. the same
// memory as SnapKV; the spec's "round" leaves the sum off by up to Hkv/2 rows.
// Guards: C - W <= 0 or C >= n -> keep everything.
#include "kv/budget.h"
#include "kv/policies/common.h"
#include "kv/topk.h"

namespace fkv::kvp {

namespace {
class AdaKv final : public KvPolicy {
 public:
  AdaKv(WindowOpts w, Budget b) : w_(w), b_(b) {}
  std::string name() const override { return "adakv"; }

  bool select_kv(const LayerView& lv, KeepLists& keep) override {
    const int n = lv.n_rows, W = w_.window;
    const int C = b_.of(lv.n_prompt);
    if (C - W <= 0 || C >= n) return false;
    const int Hkv = lv.model->n_kv_heads, m = n - W;
    window_scores(lv, W, w_.kernel, w_.pooling, s_);
    const std::vector<int> caps = adakv_caps(s_, Hkv, m, C - W, kAdaKvAlpha);
    keep_topk_plus_window(s_.data(), Hkv, n, W, caps, keep);
    return true;
  }

 private:
  WindowOpts w_;
  Budget b_;
  std::vector<float> s_;
};

Expected<std::unique_ptr<KvPolicy>> make_adakv(const PolicyOptions& o, const PolicyModelInfo&) {
  auto w = parse_window(o);
  if (!w) return w.status();
  auto b = parse_budget(o, w->window, "window");
  if (!b) return b.status();
  return std::unique_ptr<KvPolicy>(new AdaKv(*w, *b));
}

}  // namespace

const MethodInfo kAdaKvInfo = {"adakv", make_adakv, kWindowScoreOpts, window_budget_rows, true};

}  // namespace fkv::kvp
