// KeyDiff (Park et al. 2025, arXiv 2504.15364), as kvpress's KeyDiffPress: query-free, so it needs
// nothing of the attention kernel. Per layer and KV head: anchor = the mean over the layer's rows
// of the L2-normalised post-RoPE keys; score(row) = -cos(key, anchor), so the keys least like the
// average key score highest; keep the top C rows by score (ties -> lower position), ascending.
// Parameters: retain_rate r (0.1) or kv_budget C; C = floor(n * r) with n the rows of the layer.
// No window is kept apart. Guards: C >= n keeps every row; C <= 0 (a rate on a short prompt)
// also keeps every row, since a cache with no rows cannot be attended to.
// Numerics (the NumPy reference uses float64): norms and dot products in double, scores stored as
// float; a zero key (or anchor) has cosine 0, as torch's eps-clamped normalisation gives.
#include <algorithm>
#include <cmath>

#include "kv/policies/common.h"
#include "kv/topk.h"

namespace fkv::kvp {

namespace {
class KeyDiff final : public KvPolicy {
 public:
  explicit KeyDiff(Budget b) : b_(b) {}
  std::string name() const override { return "keydiff"; }

  bool select_kv(const LayerView& lv, KeepLists& keep) override {
    const int n = lv.n_rows, d = lv.model->head_dim, n_kv = lv.model->n_kv_heads;
    const int C = b_.of(n);
    if (C <= 0 || C >= n) return false;
    std::vector<double> anchor(static_cast<size_t>(d));   // [head_dim]
    std::vector<float> score(static_cast<size_t>(n));     // [n]
    std::vector<double> key_len(static_cast<size_t>(n));  // [n] L2 norms of one head's keys
    std::vector<int32_t> rows;
    keep_begin(keep);
    for (int g = 0; g < n_kv; ++g) {
      auto key = [&](int r) { return lv.krow(r) + static_cast<int64_t>(g) * d; };
      auto norm = [&](const float* x) {
        double s = 0.0;
        for (int e = 0; e < d; ++e) s += static_cast<double>(x[e]) * x[e];
        return std::sqrt(s);
      };
      std::fill(anchor.begin(), anchor.end(), 0.0);
      for (int r = 0; r < n; ++r) {
        const float* k = key(r);
        const double len = key_len[r] = norm(k);
        if (len == 0.0) continue;
        for (int e = 0; e < d; ++e) anchor[e] += k[e] / len;
      }
      double anchor_len = 0.0;
      for (int e = 0; e < d; ++e) {
        anchor[e] /= n;
        anchor_len += anchor[e] * anchor[e];
      }
      anchor_len = std::sqrt(anchor_len);
      for (int r = 0; r < n; ++r) {
        const float* k = key(r);
        double dot = 0.0;
        for (int e = 0; e < d; ++e) dot += k[e] * anchor[e];
        const double den = key_len[r] * anchor_len;
        score[r] = static_cast<float>(den > 0.0 ? -dot / den : 0.0);
      }
      top_k(score, C, rows);
      keep_push_head(keep, rows);
    }
    return true;
  }

 private:
  Budget b_;
};

Expected<std::unique_ptr<KvPolicy>> make_keydiff(const PolicyOptions& o, const PolicyModelInfo&) {
  auto b = parse_budget(o, 0, "minimum of one token");
  if (!b) return b.status();
  return std::unique_ptr<KvPolicy>(new KeyDiff(*b));
}

int64_t max_rows_keydiff(const PolicyOptions& o, const PolicyModelInfo&, int n_prompt) {
  return budget_or_all(o, n_prompt, 0);
}

}  // namespace

const MethodInfo kKeyDiffInfo = {"keydiff", make_keydiff, kBudgetOpts, max_rows_keydiff, true};

}  // namespace fkv::kvp
