#include "kv/scoring.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/thread_pool.h"

namespace fkv {

namespace {

float dot(const float* a, const float* b, int d) {
  float s = 0.0f;
  for (int t = 0; t < d; ++t) s += a[t] * b[t];
  return s;
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
  float mx = -std::numeric_limits<float>::infinity();
  for (int j = 0; j < n_keys; ++j) {
    p[j] = dot(q, k + j * k_stride, head_dim) * scale;
    mx = std::max(mx, p[j]);
  }
  double sum = 0.0;
  for (int j = 0; j < n_keys; ++j) {
    p[j] = std::exp(p[j] - mx);
    sum += p[j];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int j = 0; j < n_keys; ++j) p[j] *= inv;
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
  const int threads = static_cast<int64_t>(n) * window > 4096 ? 0 : 1;
  parallel_for(d.n_heads,
               [&](int64_t head) {
                 const int h = static_cast<int>(head);
                 std::vector<float> p(n),
                     raw(m, 0.0f);  // p: one softmax row; raw: this head's column sums
                 const int g = h / d.group;
                 for (int i = 0; i < window; ++i) {
                   const int r = m + i;  // causal: the row sees keys 0..r
                   softmax_row(lv.qrow(r) + h * d.head_dim, lv.k + g * d.head_dim, lv.k_stride,
                               r + 1, d.head_dim, lv.scale, p.data());
                   for (int j = 0; j < m; ++j) raw[j] += p[j];
                 }
                 pool1d(raw, kernel, pooling,
                        {s_q.data() + static_cast<int64_t>(h) * m, static_cast<size_t>(m)});
               },
               {.grain = 1, .max_threads = threads});
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
  parallel_for(d.n_heads,
               [&](int64_t head) {
                 const int h = static_cast<int>(head);
                 std::vector<float> l(n);  // [n] logits of one query row; the only per-row scratch
                 const float* kh = lv.k + (h / d.group) * d.head_dim;
                 float* col = s_q.data() + static_cast<int64_t>(h) * n;
                 for (int i = 0; i < n; ++i) {
                   const float* q = lv.qrow(i) + h * d.head_dim;
                   // Row i's causal softmax: logits, their max, exp(l - max) once, then normalise
                   // into the column sums (one exp per element; the sum is accumulated in double).
                   float mx = -std::numeric_limits<float>::infinity();
                   for (int j = 0; j <= i; ++j) {
                     l[j] = dot(q, kh + j * lv.k_stride, d.head_dim) * lv.scale;
                     mx = std::max(mx, l[j]);
                   }
                   double sum = 0.0;
                   for (int j = 0; j <= i; ++j) {
                     l[j] = std::exp(l[j] - mx);
                     sum += l[j];
                   }
                   const float inv = static_cast<float>(1.0 / sum);
                   for (int j = 0; j <= i; ++j) col[j] += l[j] * inv;
                 }
               },
               {.grain = 1, .max_threads = n > 64 ? 0 : 1});
}

void last_query_logit_sum(const LayerView& lv, std::vector<float>& s) {
  const Dims d = dims_of(lv);
  const int n = lv.n_rows;
  s.assign(n, 0.0f);
  const float* q_last = lv.qrow(n - 1);
  for (int h = 0; h < d.n_heads; ++h) {
    const float* kh = lv.k + (h / d.group) * d.head_dim;
    for (int j = 0; j < n; ++j)
      s[j] += dot(q_last + h * d.head_dim, kh + j * lv.k_stride, d.head_dim);
  }
}

}  // namespace fkv
