#include "kv/scoring.h"

#include <algorithm>

#include "core/thread_pool.h"
#include "kernels/attention.h"
#include "kernels/dispatch.h"

namespace fkv {

namespace {

// logits[j] = q . k_j for j < n_keys: one row of Q K^T through the ISA's small-GEMM micro-kernel
// (register-blocked over keys, vectorised over head_dim), so that scoring costs what attention
// costs rather than a scalar loop per dot.
void key_logits(const KernelTable& kt, const float* q, const float* k, int64_t k_stride, int n_keys,
                int head_dim, float* logits) {
  if (n_keys <= 0) return;
  kt.gemm_f32(q, 1, head_dim, k, n_keys, k_stride, head_dim, logits, n_keys);
}

// Query rows per block of causal_softmax_block: the block's keys are read once for all its rows.
constexpr int kScoreRowBlock = 16;

// Causal softmax of query rows [r0, r0 + nb) of one head against keys [0, r0 + nb): row r of the
// block gets p[(r - r0) * ld + j] = softmax_j(scale * q_r . k_j) over j <= r (entries past r are
// garbage). One GEMM for the block (keys past a row's own are computed and ignored: at most nb - 1
// per row), then one vectorised softmax per row.  p : [nb, ld], ld >= r0 + nb.
void causal_softmax_block(const KernelTable& kt, const float* q, int64_t q_stride, int r0, int nb,
                          const float* k, int64_t k_stride, int head_dim, float scale, float* p,
                          int64_t ld) {
  const int n_keys = r0 + nb;
  kt.gemm_f32(q + static_cast<int64_t>(r0) * q_stride, nb, q_stride, k, n_keys, k_stride, head_dim,
              p, ld);
  for (int b = 0; b < nb; ++b) {
    float* row = p + b * ld;
    const int visible = r0 + b + 1;
    for (int j = 0; j < visible; ++j) row[j] *= scale;
    kt.softmax_inplace(row, visible);
  }
}

struct Dims {
  int n_heads, n_kv_heads, head_dim, group;
};

Dims dims_of(const LayerView& lv) {
  FKV_CHECK(lv.model != nullptr, "LayerView without model info");
  const PolicyModelInfo& m = *lv.model;
  FKV_CHECK(m.n_heads > 0 && m.n_kv_heads > 0 && m.n_heads % m.n_kv_heads == 0 && m.head_dim > 0,
            "bad head counts: n_heads=%d n_kv_heads=%d head_dim=%d", m.n_heads, m.n_kv_heads,
            m.head_dim);
  return {m.n_heads, m.n_kv_heads, m.head_dim, m.n_heads / m.n_kv_heads};
}

}  // namespace

void softmax_row(const float* q, const float* k, int64_t k_stride, int n_keys, int head_dim,
                 float scale, float* p) {
  const KernelTable& kt = active_kernels();
  key_logits(kt, q, k, k_stride, n_keys, head_dim, p);
  for (int j = 0; j < n_keys; ++j) p[j] *= scale;
  kt.softmax_inplace(p, n_keys);
}

void pool1d(std::span<const float> in, int kernel, Pooling pooling, std::span<float> out) {
  FKV_CHECK(kernel >= 1 && kernel % 2 == 1, "pool kernel must be odd, got %d", kernel);
  FKV_CHECK(in.size() == out.size(), "pool1d: %zu != %zu", in.size(), out.size());
  const int m = static_cast<int>(in.size());
  const int pad = kernel / 2;
  for (int j = 0; j < m; ++j) {
    const int lo = std::max(0, j - pad), hi = std::min(m - 1, j + pad);
    if (pooling == Pooling::kMax) {
      float v = in[lo];
      for (int t = lo + 1; t <= hi; ++t) v = std::max(v, in[t]);
      out[j] = v;
    } else {
      float s = 0.0f;
      for (int t = lo; t <= hi; ++t) s += in[t];
      out[j] = s / static_cast<float>(kernel);  // zero padding counts in the divisor
    }
  }
}

void gqa_sum(const float* s, int n_heads, int n_kv_heads, int m, float* s_kv) {
  const int group = n_heads / n_kv_heads;
  for (int g = 0; g < n_kv_heads; ++g) {
    float* dst = s_kv + static_cast<int64_t>(g) * m;
    std::fill(dst, dst + m, 0.0f);
    for (int h = g * group; h < (g + 1) * group; ++h) {
      const float* src = s + static_cast<int64_t>(h) * m;
      for (int j = 0; j < m; ++j) dst[j] += src[j];
    }
  }
}

void window_scores_per_query_head(const LayerView& lv, int window, int kernel, Pooling pooling,
                                  std::vector<float>& s_q) {
  const Dims d = dims_of(lv);
  const int n = lv.n_rows;
  FKV_CHECK(window >= 1 && n > window, "window score needs n_rows (%d) > window (%d)", n, window);
  const int m = n - window;
  s_q.assign(static_cast<size_t>(d.n_heads) * m, 0.0f);
  // Heads are independent (and each sums in a fixed order), so threads do not change results.
  auto score_head = [&](int64_t head) {
    const int h = static_cast<int>(head);
    const KernelTable& kt = active_kernels();
    const int g = h / d.group;
    std::vector<float> p(static_cast<size_t>(kScoreRowBlock) * n);  // [block, n] softmax rows
    std::vector<float> raw(m, 0.0f);                                // [m] this head's column sums
    for (int i0 = 0; i0 < window; i0 += kScoreRowBlock) {
      const int nb = std::min(kScoreRowBlock, window - i0);
      // Window rows m + i see keys 0..m + i (causal); the first m columns are the scored ones.
      causal_softmax_block(kt, lv.q + h * d.head_dim, lv.q_stride, m + i0, nb,
                           lv.k + g * d.head_dim, lv.k_stride, d.head_dim, lv.scale, p.data(), n);
      for (int b = 0; b < nb; ++b) kt.add_inplace(raw.data(), p.data() + b * n, m);
    }
    pool1d(raw, kernel, pooling,
           {s_q.data() + static_cast<int64_t>(h) * m, static_cast<size_t>(m)});
  };
  const bool parallel = static_cast<int64_t>(n) * window > 4096;
  parallel_for(d.n_heads, score_head, {.grain = 1, .max_threads = parallel ? 0 : 1});
}

void window_scores(const LayerView& lv, int window, int kernel, Pooling pooling,
                   std::vector<float>& s_kv) {
  const Dims d = dims_of(lv);
  std::vector<float> s_q;
  window_scores_per_query_head(lv, window, kernel, pooling, s_q);
  const int m = lv.n_rows - window;
  s_kv.assign(static_cast<size_t>(d.n_kv_heads) * m, 0.0f);
  gqa_sum(s_q.data(), d.n_heads, d.n_kv_heads, m, s_kv.data());
}

void accumulated_attention(const LayerView& lv, std::vector<float>& s_q) {
  const Dims d = dims_of(lv);
  const int n = lv.n_rows;
  s_q.assign(static_cast<size_t>(d.n_heads) * n, 0.0f);
  // The logits come from the attention kernels' packed-key product (keys packed per tile of
  // kAttnKeyBlock as [head_dim, keys], scale applied inside), 2.5x faster than the small GEMM over
  // unpacked keys at 8K (docs/KERNELS.md "Scorers"); head dims those kernels do not take use the
  // GEMM.
  const AttentionKernels& ak = active_attention_kernels();
  const bool packed = d.head_dim % ak.lanes == 0;
  constexpr int kKb = kAttnKeyBlock;
  auto sum_head = [&](int64_t head) {
    const int h = static_cast<int>(head);
    const KernelTable& kt = active_kernels();
    std::vector<float> p(static_cast<size_t>(kScoreRowBlock) * n);  // [block, n]: O(n) scratch
    const float* kh = lv.k + (h / d.group) * d.head_dim;
    const float* qh = lv.q + h * d.head_dim;
    float* col = s_q.data() + static_cast<int64_t>(h) * n;
    const int hd = d.head_dim;
    const int nkb = (n + kKb - 1) / kKb;
    std::vector<float> ktiles, sc;  // [nkb, hd, kKb] packed keys; [block, kKb] one tile's scores
    if (packed) {
      ktiles.resize(static_cast<size_t>(nkb) * hd * kKb);
      for (int kb = 0; kb < nkb; ++kb) {
        pack_key_tile(kh + static_cast<int64_t>(kb) * kKb * lv.k_stride, lv.k_stride,
                      std::min(kKb, n - kb * kKb), hd,
                      ktiles.data() + static_cast<size_t>(kb) * hd * kKb);
      }
      sc.resize(static_cast<size_t>(kScoreRowBlock) * kKb);
    }
    for (int i0 = 0; i0 < n; i0 += kScoreRowBlock) {
      const int nb = std::min(kScoreRowBlock, n - i0);
      // Rows i0.. i0 + nb - 1: causal softmax over keys 0..i, normalised, added into the sums.
      if (packed) {
        const int n_keys = i0 + nb;
        for (int kb = 0; kb * kKb < n_keys; ++kb) {
          ak.scores_packed(qh + static_cast<int64_t>(i0) * lv.q_stride, lv.q_stride, nb,
                           ktiles.data() + static_cast<size_t>(kb) * hd * kKb, hd, lv.scale,
                           sc.data());
          const int nk = std::min(kKb, n_keys - kb * kKb);
          for (int b = 0; b < nb; ++b) {
            std::copy(sc.data() + b * kKb, sc.data() + b * kKb + nk,
                      p.data() + static_cast<int64_t>(b) * n + kb * kKb);
          }
        }
        for (int b = 0; b < nb; ++b) kt.softmax_inplace(p.data() + b * n, i0 + b + 1);
      } else {
        causal_softmax_block(kt, qh, lv.q_stride, i0, nb, kh, lv.k_stride, hd, lv.scale, p.data(),
                             n);
      }
      for (int b = 0; b < nb; ++b) kt.add_inplace(col, p.data() + b * n, i0 + b + 1);
    }
  };
  parallel_for(d.n_heads, sum_head, {.grain = 1, .max_threads = n > 64 ? 0 : 1});
}

void last_query_logit_sum(const LayerView& lv, std::vector<float>& s) {
  const Dims d = dims_of(lv);
  const int n = lv.n_rows;
  s.assign(n, 0.0f);
  const float* q_last = lv.qrow(n - 1);
  const KernelTable& kt = active_kernels();
  std::vector<float> logits(n);  // [n] one head's raw logits
  for (int h = 0; h < d.n_heads; ++h) {
    const float* kh = lv.k + (h / d.group) * d.head_dim;
    key_logits(kt, q_last + h * d.head_dim, kh, lv.k_stride, n, d.head_dim, logits.data());
    kt.add_inplace(s.data(), logits.data(), n);
  }
}

}  // namespace fkv
