// PyramidInfer (Yang et al. 2024, arXiv 2405.12532), spec FASTKV.md §4. At every prefill layer l
// with n rows: the last R = min(W, n) rows are "recent", the ctx = n - R before them the context.
// Score[j] = mean over query heads of sum_i w_i * A[h, n-R+i, j] (fp32 causal softmax), with
// w = linspace(1, 1.2, R); the first 4 rows are sinks (forced, ranked first). If ctx > 64, keep the
// top floor(ctx * ratio_l) context rows (ties -> lower row) plus the recent ones, with
// ratio_l = (1-d)(cos(pi*l/L)+1)/2 + d; otherwise keep all. The same rows are cached (all KV heads)
// and propagated (hidden states + positions), so the ratio compounds over layers.
// Decoding: after every 16th decoded token (step % 16 == 15), each layer's last 16 decoded rows
// keep floor(16*0.9) = 14, ranked per KV head by the current query's softmax attention summed over
// the head's query group (ties -> lower row).
// Parameters: d = retain_rate (default 0.2, our choice: the spec gives none); W = window (8).
#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>

#include "kv/policies/common.h"
#include "kv/topk.h"

namespace fkv::kvp {

namespace {
constexpr int kMinContext = 64;
constexpr int kDecodeBlock = 16;
constexpr double kDecodeKeep = 0.9;
constexpr double kDefaultMinRatio = 0.2;

class PyramidInfer final : public KvPolicy {
 public:
  PyramidInfer(double min_ratio, int window) : d_(min_ratio), window_(window) {}
  std::string name() const override { return "pyramidinfer"; }

  void begin_prefill(const PolicyModelInfo&, int) override { cached_il_ = -1; }

  bool select_kv(const LayerView& lv, KeepLists& keep) override {
    cached_il_ = -1;  // select_kv opens a layer; select_rows of the same layer reuses its rows
    if (!select(lv)) return false;
    keep_begin(keep);
    for (int g = 0; g < lv.model->n_kv_heads; ++g) keep_push_head(keep, rows_);
    return true;
  }

  bool select_rows(const LayerView& lv, std::vector<int32_t>& rows) override {
    if (!select(lv)) return false;
    rows = rows_;
    return true;
  }

  bool reads_decode_cache(int step) const override {
    return step % kDecodeBlock == kDecodeBlock - 1;
  }

  bool on_decode(const DecodeView& dv, KeepLists& keep) override {
    if (dv.step % kDecodeBlock != kDecodeBlock - 1) return false;
    const PolicyModelInfo& m = *dv.model;
    const int G = m.n_heads / m.n_kv_heads, d = m.head_dim;
    const int keep_n = static_cast<int>(std::floor(kDecodeBlock * kDecodeKeep));
    keep_begin(keep);
    std::vector<float> p, score;
    std::vector<int32_t> sel, rows;
    for (int g = 0; g < m.n_kv_heads; ++g) {
      const HeadCacheView& hc = dv.heads[g];
      int first = hc.len;  // first row of the block: decoded positions > pos - 16
      while (first > 0 && hc.pos[first - 1] > dv.pos - kDecodeBlock) --first;
      score.assign(hc.len - first, 0.0f);
      p.resize(hc.len);
      for (int h = g * G; h < (g + 1) * G; ++h) {
        softmax_row(dv.q + h * d, hc.k, d, hc.len, d, dv.scale, p.data());
        for (int r = first; r < hc.len; ++r) score[r - first] += p[r];
      }
      rows.clear();
      for (int r = 0; r < first; ++r) rows.push_back(r);
      top_k(score, keep_n, sel);
      for (int32_t r : sel) rows.push_back(first + r);
      keep_push_head(keep, rows);
    }
    return true;
  }

 private:
  // Fills rows_ for this layer (cached across select_kv / select_rows); false = keep all.
  bool select(const LayerView& lv) {
    if (cached_il_ == lv.il && cached_q_ == lv.q && cached_n_ == lv.n_rows) return active_;
    cached_il_ = lv.il;
    cached_q_ = lv.q;
    cached_n_ = lv.n_rows;
    active_ = false;
    const int n = lv.n_rows, R = std::min(window_, n), ctx = n - R;
    if (ctx <= kMinContext) return false;
    const int L = lv.model->n_layers;
    const double ratio = (1.0 - d_) * (std::cos(std::numbers::pi * lv.il / L) + 1.0) / 2.0 + d_;
    const int k = static_cast<int>(std::floor(ctx * ratio));
    if (k >= ctx) return false;
    const int H = lv.model->n_heads, G = H / lv.model->n_kv_heads, hd = lv.model->head_dim;
    std::vector<float> score(ctx, 0.0f), p(n);
    for (int h = 0; h < H; ++h) {
      for (int i = 0; i < R; ++i) {
        const int r = ctx + i;
        const float w =
            R > 1 ? 1.0f + 0.2f * static_cast<float>(i) / static_cast<float>(R - 1) : 1.0f;
        softmax_row(lv.qrow(r) + h * hd, lv.k + (h / G) * hd, lv.k_stride, r + 1, hd, lv.scale,
                    p.data());
        for (int j = 0; j < ctx; ++j) score[j] += w * p[j];
      }
    }
    for (int j = 0; j < ctx; ++j) score[j] /= static_cast<float>(H);
    for (int j = 0; j < std::min(kStreamingSinks, ctx); ++j)
      score[j] = std::numeric_limits<float>::infinity();
    top_k(score, k, rows_);
    for (int r = ctx; r < n; ++r) rows_.push_back(r);
    active_ = true;
    return true;
  }

  double d_;
  int window_;
  int cached_il_ = -1, cached_n_ = -1;
  const float* cached_q_ = nullptr;
  bool active_ = false;
  std::vector<int32_t> rows_;
};

Expected<std::unique_ptr<KvPolicy>> make_pyramidinfer(const PolicyOptions& o,
                                                      const PolicyModelInfo&) {
  FKV_RETURN_IF_ERROR(check_rate(o.method, "retain_rate", o.retain_rate));
  auto w = parse_window(o);
  if (!w) return w.status();
  return std::unique_ptr<KvPolicy>(
      new PyramidInfer(o.retain_rate.value_or(kDefaultMinRatio), w->window));
}

}  // namespace

const MethodInfo kPyramidInferInfo = {"pyramidinfer", make_pyramidinfer, kRetainRate | kWindow,
                                      keeps_every_row, false};

}  // namespace fkv::kvp
