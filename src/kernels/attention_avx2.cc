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
// Decode's rows a key block ahead are prefetched a few lines per step (the hardware prefetcher
// hardly ramps up on runs of a few hundred rows; attention_avx512.cc has the figures).
constexpr int kPrefetchKeys = kKb;

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

// R query rows x 4 unpacked keys (rows of hd elements, k_stride apart, from byte base k): a[r][i]
// sums q_r . key i over the dims in order, one reduction per row for the 4 keys. Each key vector is
// loaded (and, for the halves, widened) once for all R rows; R <= 3 keeps the 4R accumulators and
// one key vector in the 16 ymm registers (q comes from memory into the multiply-add).
template <class L, int R>
inline void scores_4keys(const float* q, int64_t q_stride, const uint8_t* k, int64_t k_stride,
                         int hd, __m128 vscale, float* s) {
  const int64_t step = L::kBytes * k_stride;
  __m256 a[R][4];
  for (int r = 0; r < R; ++r) {
    for (int i = 0; i < 4; ++i) a[r][i] = _mm256_setzero_ps();
  }
  for (int d = 0; d < hd; d += kLanes) {
    for (int i = 0; i < 4; ++i) {
      const __m256 kv = L::load(k + i * step, d);
      for (int r = 0; r < R; ++r) {
        a[r][i] = _mm256_fmadd_ps(_mm256_loadu_ps(q + r * q_stride + d), kv, a[r][i]);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm_storeu_ps(s + r * kKb, _mm_mul_ps(hsum4(a[r][0], a[r][1], a[r][2], a[r][3]), vscale));
  }
}

constexpr int kScoreRows = 3;

// Decode scores from unpacked keys stored as L's type (hd a multiple of 8): 4 keys per pass share
// one reduction; the keys past the last 4 reduce one by one.
template <class L>
void scores_rows_t(const float* q, int64_t q_stride, int rows, const uint8_t* k, int64_t k_stride,
                   int nk, int hd, float scale, float* s) {
  const __m128 vscale = _mm_set1_ps(scale);
  int j = 0;
  for (; j + 4 <= nk; j += 4) {
    const uint8_t* kj = k + L::kBytes * j * k_stride;
    for (int i = 0; i < 4; ++i) {  // the 4 rows a key block ahead
      const char* ahead =
          reinterpret_cast<const char*>(kj + L::kBytes * (kPrefetchKeys + i) * k_stride);
      for (int b = 0; b < L::kBytes * hd; b += 64) _mm_prefetch(ahead + b, _MM_HINT_T0);
    }
    int m = 0;
    for (; m + kScoreRows <= rows; m += kScoreRows) {
      scores_4keys<L, kScoreRows>(q + m * q_stride, q_stride, kj, k_stride, hd, vscale,
                                  s + m * kKb + j);
    }
    const float* qm = q + m * q_stride;
    float* sm = s + m * kKb + j;
    if (rows - m == 2) scores_4keys<L, 2>(qm, q_stride, kj, k_stride, hd, vscale, sm);
    if (rows - m == 1) scores_4keys<L, 1>(qm, q_stride, kj, k_stride, hd, vscale, sm);
  }
  for (; j < nk; ++j) {
    const uint8_t* kj = k + L::kBytes * j * k_stride;
    for (int m = 0; m < rows; ++m) {
      const float* qm = q + m * q_stride;
      __m256 a = _mm256_setzero_ps();
      for (int d = 0; d < hd; d += kLanes) {
        a = _mm256_fmadd_ps(_mm256_loadu_ps(qm + d), L::load(kj, d), a);
      }
      s[m * kKb + j] = hsum(a) * scale;
    }
  }
}

void scores_rows_avx2(const float* q, int64_t q_stride, int rows, const float* k, int64_t k_stride,
                      int nk, int hd, float scale, float* s) {
  scores_rows_t<LoadF32>(q, q_stride, rows, reinterpret_cast<const uint8_t*>(k), k_stride, nk, hd,
                         scale, s);
}

void scores_rows_half_avx2(DType half, const float* q, int64_t q_stride, int rows,
                           const uint16_t* k, int64_t k_stride, int nk, int hd, float scale,
                           float* s) {
  const uint8_t* kb = reinterpret_cast<const uint8_t*>(k);
  if (half == DType::kBF16) {
    scores_rows_t<LoadBF16>(q, q_stride, rows, kb, k_stride, nk, hd, scale, s);
  } else {
    scores_rows_t<LoadF16>(q, q_stride, rows, kb, k_stride, nk, hd, scale, s);
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

// o[R rows, C vectors] += p[R rows, nk] . v[nk, C vectors] (v from byte base, rows v_stride
// elements apart, as L's type), accumulators in registers. kPrefetch (decode's half rows): fetch
// the same columns kPrefetchKeys rows ahead (prefill's P.V reuses each tile from cache: none).
template <class L, bool kPrefetch, int R, int C>
inline void pv_block(const float* p, int64_t p_stride, const uint8_t* v, int64_t v_stride, int nk,
                     float* o, int64_t o_stride) {
  __m256 acc[R][C];
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) acc[r][c] = _mm256_loadu_ps(o + r * o_stride + c * kLanes);
  }
  for (int j = 0; j < nk; ++j) {
    const uint8_t* vj = v + L::kBytes * j * v_stride;
    if constexpr (kPrefetch) {  // this block's C vectors of the row a key block ahead
      const char* ahead = reinterpret_cast<const char*>(vj + L::kBytes * kPrefetchKeys * v_stride);
      for (int b = 0; b < L::kBytes * C * kLanes; b += 64) _mm_prefetch(ahead + b, _MM_HINT_T0);
    }
    __m256 vv[C];
    for (int c = 0; c < C; ++c) vv[c] = L::load(vj, c * kLanes);
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
template <class L, bool kPrefetch, int R>
inline void pv_rows(const float* p, int64_t p_stride, const uint8_t* v, int64_t v_stride, int nk,
                    int hd, float* o, int64_t o_stride) {
  int d = 0;
  for (; d + 2 * kLanes <= hd; d += 2 * kLanes) {
    pv_block<L, kPrefetch, R, 2>(p, p_stride, v + L::kBytes * d, v_stride, nk, o + d, o_stride);
  }
  if (d < hd)
    pv_block<L, kPrefetch, R, 1>(p, p_stride, v + L::kBytes * d, v_stride, nk, o + d, o_stride);
}

template <class L, bool kPrefetch>
void pv_t(const float* p, int64_t p_stride, int rows, const uint8_t* v, int64_t v_stride, int nk,
          int hd, float* o, int64_t o_stride) {
  int m = 0;
  for (; m + kRows <= rows; m += kRows) {
    pv_rows<L, kPrefetch, kRows>(p + m * p_stride, p_stride, v, v_stride, nk, hd, o + m * o_stride,
                                 o_stride);
  }
  const float* pm = p + m * p_stride;
  float* om = o + m * o_stride;
  switch (rows - m) {
    case 3:
      pv_rows<L, kPrefetch, 3>(pm, p_stride, v, v_stride, nk, hd, om, o_stride);
      break;
    case 2:
      pv_rows<L, kPrefetch, 2>(pm, p_stride, v, v_stride, nk, hd, om, o_stride);
      break;
    case 1:
      pv_rows<L, kPrefetch, 1>(pm, p_stride, v, v_stride, nk, hd, om, o_stride);
      break;
    default:
      break;
  }
}

void pv_avx2(const float* p, int64_t p_stride, int rows, const float* v, int64_t v_stride, int nk,
             int hd, float* o, int64_t o_stride) {
  pv_t<LoadF32, false>(p, p_stride, rows, reinterpret_cast<const uint8_t*>(v), v_stride, nk, hd, o,
                       o_stride);
}

void pv_half_avx2(DType half, const float* p, int64_t p_stride, int rows, const uint16_t* v,
                  int64_t v_stride, int nk, int hd, float* o, int64_t o_stride) {
  const uint8_t* vb = reinterpret_cast<const uint8_t*>(v);
  if (half == DType::kBF16) {
    pv_t<LoadBF16, true>(p, p_stride, rows, vb, v_stride, nk, hd, o, o_stride);
  } else {
    pv_t<LoadF16, true>(p, p_stride, rows, vb, v_stride, nk, hd, o, o_stride);
  }
}

}  // namespace

const AttentionKernels& avx2_attention_kernels() {
  static const AttentionKernels k = {
      "avx2",           kLanes,  scores_packed_avx2,    scores_rows_avx2, max_of_avx2,
      exp_sub_sum_avx2, pv_avx2, scores_rows_half_avx2, pv_half_avx2};
  return k;
}

}  // namespace fkv

#endif  // defined(__x86_64__)
