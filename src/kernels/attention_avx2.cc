// AVX2 + FMA attention primitives (see AttentionKernels in attention.h). Compiled with
// -mavx2 -mfma -mf16c by CMake; reached only when the CPU has them. Internal linkage throughout and
// no inline library templates, so no AVX2 code can be merged into baseline callers.
#if defined(__x86_64__)

#include <immintrin.h>

#include <cstdint>

#include "kernels/attention.h"
#include "kernels/simd_avx2.h"

namespace fkv {
namespace {

constexpr int kLanes = 8;
constexpr int kKb = kAttnKeyBlock;  // 8 vectors of keys
constexpr int kRows = 4;            // query rows per register block (16 ymm registers)

// R query rows x 16 keys (2 vectors) of a packed tile starting at column c0.
template <int R>
inline void scores_block(const float* q, int64_t q_stride, const float* kt, int c0, int hd,
                         __m256 vscale, float* s) {
  __m256 acc[R][2];
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (int d = 0; d < hd; ++d) {
    const float* kd = kt + d * kKb + c0;
    const __m256 k0 = _mm256_loadu_ps(kd), k1 = _mm256_loadu_ps(kd + kLanes);
    for (int r = 0; r < R; ++r) {
      const __m256 qb = _mm256_broadcast_ss(q + r * q_stride + d);
      acc[r][0] = _mm256_fmadd_ps(qb, k0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(qb, k1, acc[r][1]);
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm256_storeu_ps(s + r * kKb + c0, _mm256_mul_ps(acc[r][0], vscale));
    _mm256_storeu_ps(s + r * kKb + c0 + kLanes, _mm256_mul_ps(acc[r][1], vscale));
  }
}

template <int R>
inline void scores_rows_all_cols(const float* q, int64_t q_stride, const float* kt, int hd,
                                 __m256 vscale, float* s) {
  for (int c0 = 0; c0 < kKb; c0 += 2 * kLanes) scores_block<R>(q, q_stride, kt, c0, hd, vscale, s);
}

void scores_packed_avx2(const float* q, int64_t q_stride, int rows, const float* kt, int hd,
                        float scale, float* s) {
  const __m256 vscale = _mm256_set1_ps(scale);
  int m = 0;
  for (; m + kRows <= rows; m += kRows) {
    scores_rows_all_cols<kRows>(q + m * q_stride, q_stride, kt, hd, vscale, s + m * kKb);
  }
  const float* qm = q + m * q_stride;
  switch (rows - m) {
    case 3:
      scores_rows_all_cols<3>(qm, q_stride, kt, hd, vscale, s + m * kKb);
      break;
    case 2:
      scores_rows_all_cols<2>(qm, q_stride, kt, hd, vscale, s + m * kKb);
      break;
    case 1:
      scores_rows_all_cols<1>(qm, q_stride, kt, hd, vscale, s + m * kKb);
      break;
    default:
      break;
  }
}

// Horizontal sums of a, b, c, d as the 4 lanes of one vector.
inline __m128 hsum4(__m256 a, __m256 b, __m256 c, __m256 d) {
  const __m256 abcd = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
  return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

// Decode scores from unpacked keys (hd a multiple of 8): 4 keys per pass share one reduction.
void scores_rows_avx2(const float* q, int64_t q_stride, int rows, const float* k, int64_t k_stride,
                      int nk, int hd, float scale, float* s) {
  const __m128 vscale = _mm_set1_ps(scale);
  for (int m = 0; m < rows; ++m) {
    const float* qm = q + m * q_stride;
    float* sm = s + m * kKb;
    int j = 0;
    for (; j + 4 <= nk; j += 4) {
      const float* k0 = k + j * k_stride;
      const float* k1 = k0 + k_stride;
      const float* k2 = k1 + k_stride;
      const float* k3 = k2 + k_stride;
      __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
      __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
      for (int d = 0; d < hd; d += kLanes) {
        const __m256 qv = _mm256_loadu_ps(qm + d);
        a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + d), a0);
        a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k1 + d), a1);
        a2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k2 + d), a2);
        a3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k3 + d), a3);
      }
      _mm_storeu_ps(sm + j, _mm_mul_ps(hsum4(a0, a1, a2, a3), vscale));
    }
    for (; j < nk; ++j) {
      const float* kj = k + j * k_stride;
      __m256 a = _mm256_setzero_ps();
      for (int d = 0; d < hd; d += kLanes) {
        a = _mm256_fmadd_ps(_mm256_loadu_ps(qm + d), _mm256_loadu_ps(kj + d), a);
      }
      sm[j] = hsum(a) * scale;
    }
  }
}

float max_of_avx2(const float* x, int n) {
  const __m256 ninf = _mm256_set1_ps(-__builtin_inff());
  __m256 mx = ninf;
  int i = 0;
  for (; i + kLanes <= n; i += kLanes) mx = _mm256_max_ps(mx, _mm256_loadu_ps(x + i));
  if (i < n) {
    const __m256i mk = tail_mask(n - i);
    mx = _mm256_max_ps(
        mx, _mm256_blendv_ps(ninf, _mm256_maskload_ps(x + i, mk), _mm256_castsi256_ps(mk)));
  }
  return hmax(mx);
}

float exp_sub_sum_avx2(float* x, int n, float m) {
  const __m256 vm = _mm256_set1_ps(m);
  __m256 sum = _mm256_setzero_ps();
  int i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const __m256 e = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
    _mm256_storeu_ps(x + i, e);
    sum = _mm256_add_ps(sum, e);
  }
  if (i < n) {
    const __m256i mk = tail_mask(n - i);
    const __m256 e = _mm256_and_ps(exp_ps(_mm256_sub_ps(_mm256_maskload_ps(x + i, mk), vm)),
                                   _mm256_castsi256_ps(mk));
    _mm256_maskstore_ps(x + i, mk, e);
    sum = _mm256_add_ps(sum, e);
  }
  return hsum(sum);
}

// o[R rows, C vectors] += p[R rows, nk] . v[nk, C vectors], accumulators in registers.
template <int R, int C>
inline void pv_block(const float* p, int64_t p_stride, const float* v, int64_t v_stride, int nk,
                     float* o, int64_t o_stride) {
  __m256 acc[R][C];
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) acc[r][c] = _mm256_loadu_ps(o + r * o_stride + c * kLanes);
  }
  for (int j = 0; j < nk; ++j) {
    const float* vj = v + j * v_stride;
    __m256 vv[C];
    for (int c = 0; c < C; ++c) vv[c] = _mm256_loadu_ps(vj + c * kLanes);
    for (int r = 0; r < R; ++r) {
      const __m256 pb = _mm256_broadcast_ss(p + r * p_stride + j);
      for (int c = 0; c < C; ++c) acc[r][c] = _mm256_fmadd_ps(pb, vv[c], acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) _mm256_storeu_ps(o + r * o_stride + c * kLanes, acc[r][c]);
  }
}

// Columns in chunks of 2 vectors (4 rows x 2 = 8 accumulators + 2 values + 1 broadcast).
template <int R>
inline void pv_rows(const float* p, int64_t p_stride, const float* v, int64_t v_stride, int nk,
                    int hd, float* o, int64_t o_stride) {
  int d = 0;
  for (; d + 2 * kLanes <= hd; d += 2 * kLanes) {
    pv_block<R, 2>(p, p_stride, v + d, v_stride, nk, o + d, o_stride);
  }
  if (d < hd) pv_block<R, 1>(p, p_stride, v + d, v_stride, nk, o + d, o_stride);
}

void pv_avx2(const float* p, int64_t p_stride, int rows, const float* v, int64_t v_stride, int nk,
             int hd, float* o, int64_t o_stride) {
  int m = 0;
  for (; m + kRows <= rows; m += kRows) {
    pv_rows<kRows>(p + m * p_stride, p_stride, v, v_stride, nk, hd, o + m * o_stride, o_stride);
  }
  const float* pm = p + m * p_stride;
  float* om = o + m * o_stride;
  switch (rows - m) {
    case 3:
      pv_rows<3>(pm, p_stride, v, v_stride, nk, hd, om, o_stride);
      break;
    case 2:
      pv_rows<2>(pm, p_stride, v, v_stride, nk, hd, om, o_stride);
      break;
    case 1:
      pv_rows<1>(pm, p_stride, v, v_stride, nk, hd, om, o_stride);
      break;
    default:
      break;
  }
}

}  // namespace

const AttentionKernels& avx2_attention_kernels() {
  static const AttentionKernels k = {
      "avx2", kLanes, scores_packed_avx2, scores_rows_avx2, max_of_avx2, exp_sub_sum_avx2, pv_avx2};
  return k;
}

}  // namespace fkv

#endif  // defined(__x86_64__)
