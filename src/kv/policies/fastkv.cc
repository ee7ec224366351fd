// FastKV (Jo et al. 2025, arXiv 2502.01068 v7), spec FASTKV.md §2-§3: the window score for every
// layer's cache plus Token-Selective Propagation (TSP) at tsp_layer.
// Parameters (defaults): tsp_layer (paper value for Llama-3.1-8B 15 / Ministral-8B 17 /
// Mistral-Nemo 19, else round(15/32*L) clamped to [0, L-2]); window W 8; kernel K 7; pooling max;
// KV budget as retain_rate r (0.1) or kv_budget C (tokens); TSP length as tsp_rate t (0.2) or
// tsp_len T (tokens); mode proportional (rates) or constant (C=512, T=2048 unless given).
//   Layer capacity: C_l = C (count), or floor(n_l * r_l) with r_l = r for l <= tsp_layer and
//   r_l = r / t after an active TSP (t = T/N when T is a count), so later layers keep ~r*N rows.
//   TSP: T = floor(N*t) or the count; active only when T - W > 0 and T < N. g[j] = sum over KV
//   heads of the window score; rows = top-(T-W) of g among [0, n-W) + the W window rows, ascending.
// Guards (the reference lacks them): C_l - W <= 0 keeps everything in that layer; an inactive TSP
// propagates every row (and later layers then use r, as they see all N rows).
#include <algorithm>

#include "kv/budget.h"
#include "kv/policies/common.h"
#include "kv/topk.h"

namespace fkv::kvp {

namespace {
class FastKv final : public KvPolicy {
 public:
  FastKv(WindowOpts w, Budget kv, Budget tsp, int tsp_layer)
      : w_(w), kv_(kv), tsp_(tsp), tsp_layer_(tsp_layer) {}
  std::string name() const override { return "fastkv"; }

  void begin_prefill(const PolicyModelInfo&, int n_prompt) override {
    n_prompt_ = n_prompt;
    tsp_len_ = tsp_.of(n_prompt);
    tsp_active_ = tsp_len_ - w_.window > 0 && tsp_len_ < n_prompt;
    cached_il_ = -1;
  }

  bool select_kv(const LayerView& lv, KeepLists& keep) override {
    if (lv.n_prompt != n_prompt_) begin_prefill(*lv.model, lv.n_prompt);  // engine skipped it
    const int n = lv.n_rows, W = w_.window;
    cached_il_ = -1;  // select_kv opens a layer; select_rows of the same layer reuses the score
    const int C = capacity(lv.il, n);
    if (C - W <= 0 || C >= n) return false;
    const std::vector<float>& s = scores(lv);
    std::vector<int> k(lv.model->n_kv_heads, C - W);
    keep_topk_plus_window(s.data(), lv.model->n_kv_heads, n, W, k, keep);
    return true;
  }

  bool select_rows(const LayerView& lv, std::vector<int32_t>& rows) override {
    if (lv.n_prompt != n_prompt_) begin_prefill(*lv.model, lv.n_prompt);
    if (lv.il != tsp_layer_ || !tsp_active_) return false;
    const int n = lv.n_rows, W = w_.window, m = n - W, Hkv = lv.model->n_kv_heads;
    FKV_CHECK(n > tsp_len_, "TSP layer %d sees %d rows <= T=%d", lv.il, n, tsp_len_);
    const std::vector<float>& s = scores(lv);
    std::vector<float> g(m, 0.0f);  // [m] one ranking shared by all heads
    for (int h = 0; h < Hkv; ++h)
      for (int j = 0; j < m; ++j) g[j] += s[static_cast<int64_t>(h) * m + j];
    top_k(g, tsp_len_ - W, rows);
    for (int r = m; r < n; ++r) rows.push_back(r);
    return true;
  }

 private:
  int capacity(int il, int n) const {
    if (kv_.is_count) return kv_.count;
    double r = kv_.rate;
    if (il > tsp_layer_ && tsp_active_) {
      const double t = tsp_.is_count ? static_cast<double>(tsp_len_) / n_prompt_ : tsp_.rate;
      r = r / t;
    }
    return floor_mul(n, r);
  }

  // The layer's window score, computed once for select_kv + select_rows of the same layer.
  const std::vector<float>& scores(const LayerView& lv) {
    if (cached_il_ != lv.il || cached_q_ != lv.q || cached_n_ != lv.n_rows) {
      window_scores(lv, w_.window, w_.kernel, w_.pooling, s_);
      cached_il_ = lv.il;
      cached_q_ = lv.q;
      cached_n_ = lv.n_rows;
    }
    return s_;
  }

  WindowOpts w_;
  Budget kv_, tsp_;
  int tsp_layer_;
  int n_prompt_ = -1, tsp_len_ = 0;
  bool tsp_active_ = false;
  int cached_il_ = -1, cached_n_ = -1;
  const float* cached_q_ = nullptr;
  std::vector<float> s_;  // [n_kv_heads, n - W]
};

Expected<std::unique_ptr<KvPolicy>> make_fastkv(const PolicyOptions& o,
                                                const PolicyModelInfo& model) {
  auto w = parse_window(o);
  if (!w) return w.status();
  FKV_RETURN_IF_ERROR(check_rate(o.method, "tsp_rate", o.tsp_rate));
  const std::string mode = o.mode.value_or("proportional");
  if (mode != "proportional" && mode != "constant")
    return Status::error(
        strfmt("fastkv: mode must be 'proportional' or 'constant', got '%s'", mode.c_str()));
  if (mode == "constant" && (o.retain_rate || o.tsp_rate))
    return Status::error(
        "fastkv: mode=constant takes token counts (kv_budget, tsp_len), not "
        "rates (retain_rate, tsp_rate)");
  if (o.mode && mode == "proportional" && (o.kv_budget || o.tsp_len))
    return Status::error(
        "fastkv: mode=proportional takes rates (retain_rate, tsp_rate), not "
        "token counts (kv_budget, tsp_len)");
  PolicyOptions kv_opts = o;
  if (mode == "constant" && !kv_opts.kv_budget) kv_opts.kv_budget = kDefaultConstantBudget;
  auto kv = parse_budget(kv_opts, w->window, "window");
  if (!kv) return kv.status();
  if (o.tsp_len && o.tsp_rate)
    return Status::error(
        strfmt("fastkv: give either tsp_len (%d tokens) or tsp_rate (%g), not "
               "both",
               *o.tsp_len, *o.tsp_rate));
  Budget tsp;
  if (o.tsp_len || mode == "constant") {
    tsp.is_count = true;
    tsp.count = o.tsp_len.value_or(kDefaultConstantTspLen);
    if (tsp.count <= w->window)
      return Status::error(
          strfmt("fastkv: tsp_len %d must be greater than the window (%d)", tsp.count, w->window));
  } else {
    tsp.rate = o.tsp_rate.value_or(kDefaultTspRate);
  }
  const int tsp_layer = o.tsp_layer.value_or(default_tsp_layer(model));
  FKV_RETURN_IF_ERROR(check_layer("fastkv", "tsp_layer", tsp_layer, model));
  return std::unique_ptr<KvPolicy>(new FastKv(*w, *kv, tsp, tsp_layer));
}

// Restates FastKv::capacity and its guards: layers up to the TSP layer see N rows, later ones
// (when TSP is active) T rows at the rate r / t.
int64_t max_rows_fastkv(const PolicyOptions& o, const PolicyModelInfo&, int n_prompt) {
  const int window = o.window.value_or(kDefaultWindow);
  const bool constant = o.mode && *o.mode == "constant";
  const bool kv_count = o.kv_budget.has_value() || constant;
  const int kv_c = o.kv_budget.value_or(kDefaultConstantBudget);
  const double r = o.retain_rate.value_or(kDefaultRetainRate);
  const bool tsp_count = o.tsp_len.has_value() || constant;
  const double t = o.tsp_rate.value_or(kDefaultTspRate);
  const int T = tsp_count ? o.tsp_len.value_or(kDefaultConstantTspLen) : floor_mul(n_prompt, t);
  const bool tsp_active = T - window > 0 && T < n_prompt;
  auto kept = [&](int n, double rate) -> int64_t {
    const int cap = kv_count ? kv_c : floor_mul(n, rate);
    return (cap - window <= 0 || cap >= n) ? n : cap;
  };
  int64_t rows = kept(n_prompt, r);
  if (tsp_active) {
    const double t_eff = tsp_count ? static_cast<double>(T) / n_prompt : t;
    rows = std::max(rows, kept(T, r / t_eff));
  }
  return rows;
}

}  // namespace

const MethodInfo kFastKvInfo = {"fastkv", make_fastkv,
                                kWindowScoreOpts | kTspLayer | kTspRate | kTspLen | kMode,
                                max_rows_fastkv, false};

}  // namespace fkv::kvp
