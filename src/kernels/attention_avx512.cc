// AVX-512 attention primitives (see AttentionKernels in attention.h). Compiled with the AVX-512
// flags by CMake; reached only when the CPU has them. Internal linkage throughout and no inline
// library templates, so no AVX-512 code can be merged into baseline callers.
#if defined(__x86_64__)

// GCC 12 flags the intrinsics' internal _mm512_undefined_* placeholders as uninitialised.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <immintrin.h>

#include <cstdint>

#include "kernels/attention.h"
#include "kernels/simd_avx512.h"

namespace fkv {
namespace {

constexpr int kLanes = 16;
constexpr int kKb = kAttnKeyBlock;  // 4 vectors of keys
constexpr int kRows = 4;            // query rows per register block

// R query rows x all 64 keys of a packed tile: per d, 4 key vectors times R broadcast q values.
template <int R>
inline void scores_block(const float* q, int64_t q_stride, const float* kt, int hd, __m512 vscale,
                         float* s) {
  __m512 acc[R][4];
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < 4; ++c) acc[r][c] = _mm512_setzero_ps();
  }
  for (int d = 0; d < hd; ++d) {
    const float* kd = kt + d * kKb;
    const __m512 k0 = _mm512_loadu_ps(kd), k1 = _mm512_loadu_ps(kd + 16);
    const __m512 k2 = _mm512_loadu_ps(kd + 32), k3 = _mm512_loadu_ps(kd + 48);
    for (int r = 0; r < R; ++r) {
      const __m512 qb = _mm512_set1_ps(q[r * q_stride + d]);
      acc[r][0] = _mm512_fmadd_ps(qb, k0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(qb, k1, acc[r][1]);
      acc[r][2] = _mm512_fmadd_ps(qb, k2, acc[r][2]);
      acc[r][3] = _mm512_fmadd_ps(qb, k3, acc[r][3]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < 4; ++c) {
      _mm512_storeu_ps(s + r * kKb + c * kLanes, _mm512_mul_ps(acc[r][c], vscale));
    }
  }
}

void scores_packed_avx512(const float* q, int64_t q_stride, int rows, const float* kt, int hd,
                          float scale, float* s) {
  const __m512 vscale = _mm512_set1_ps(scale);
  int m = 0;
  for (; m + kRows <= rows; m += kRows) {
    scores_block<kRows>(q + m * q_stride, q_stride, kt, hd, vscale, s + m * kKb);
  }
  const float* qm = q + m * q_stride;
  switch (rows - m) {
    case 3:
      scores_block<3>(qm, q_stride, kt, hd, vscale, s + m * kKb);
      break;
    case 2:
      scores_block<2>(qm, q_stride, kt, hd, vscale, s + m * kKb);
      break;
    case 1:
      scores_block<1>(qm, q_stride, kt, hd, vscale, s + m * kKb);
      break;
    default:
      break;
  }
}

// Horizontal sums of a, b, c, d as the 4 lanes of one vector.
inline __m128 hsum4(__m512 a, __m512 b, __m512 c, __m512 d) {
  auto fold = [](__m512 v) {
    return _mm256_add_ps(_mm512_castps512_ps256(v),
                         _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
  };
  const __m256 ab = _mm256_hadd_ps(fold(a), fold(b));
  const __m256 cd = _mm256_hadd_ps(fold(c), fold(d));
  const __m256 abcd = _mm256_hadd_ps(ab, cd);
  return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

// Decode scores from unpacked keys (hd a multiple of 16): 4 keys per pass share one reduction.
void scores_rows_avx512(const float* q, int64_t q_stride, int rows, const float* k,
                        int64_t k_stride, int nk, int hd, float scale, float* s) {
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
      __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
      __m512 a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
      for (int d = 0; d < hd; d += kLanes) {
        const __m512 qv = _mm512_loadu_ps(qm + d);
        a0 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k0 + d), a0);
        a1 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k1 + d), a1);
        a2 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k2 + d), a2);
        a3 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k3 + d), a3);
      }
      _mm_storeu_ps(sm + j, _mm_mul_ps(hsum4(a0, a1, a2, a3), vscale));
    }
    for (; j < nk; ++j) {
      const float* kj = k + j * k_stride;
      __m512 a = _mm512_setzero_ps();
      for (int d = 0; d < hd; d += kLanes) {
        a = _mm512_fmadd_ps(_mm512_loadu_ps(qm + d), _mm512_loadu_ps(kj + d), a);
      }
      sm[j] = _mm512_reduce_add_ps(a) * scale;
    }
  }
}

float max_of_avx512(const float* x, int n) {
  const __m512 ninf = _mm512_set1_ps(-__builtin_inff());
  __m512 mx = ninf;
  for (int i = 0; i < n; i += kLanes) {
    mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(ninf, tail_mask(n - i), x + i));
  }
  return _mm512_reduce_max_ps(mx);
}

float exp_sub_sum_avx512(float* x, int n, float m) {
  const __m512 vm = _mm512_set1_ps(m);
  __m512 sum = _mm512_setzero_ps();
  for (int i = 0; i < n; i += kLanes) {
    const __mmask16 mk = tail_mask(n - i);
    const __m512 e = exp_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, x + i), vm));
    _mm512_mask_storeu_ps(x + i, mk, e);
    sum = _mm512_mask_add_ps(sum, mk, sum, e);
  }
  return _mm512_reduce_add_ps(sum);
}

// o[R rows, C vectors] += p[R rows, nk] . v[nk, C vectors], accumulators in registers.
template <int R, int C>
inline void pv_block(const float* p, int64_t p_stride, const float* v, int64_t v_stride, int nk,
                     float* o, int64_t o_stride) {
  __m512 acc[R][C];
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_loadu_ps(o + r * o_stride + c * kLanes);
  }
  for (int j = 0; j < nk; ++j) {
    const float* vj = v + j * v_stride;
    __m512 vv[C];
    for (int c = 0; c < C; ++c) vv[c] = _mm512_loadu_ps(vj + c * kLanes);
    for (int r = 0; r < R; ++r) {
      const __m512 pb = _mm512_set1_ps(p[r * p_stride + j]);
      for (int c = 0; c < C; ++c) acc[r][c] = _mm512_fmadd_ps(pb, vv[c], acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) _mm512_storeu_ps(o + r * o_stride + c * kLanes, acc[r][c]);
  }
}

template <int R>
inline void pv_rows(const float* p, int64_t p_stride, const float* v, int64_t v_stride, int nk,
                    int hd, float* o, int64_t o_stride) {
  int d = 0;
  for (; d + 4 * kLanes <= hd; d += 4 * kLanes) {
    pv_block<R, 4>(p, p_stride, v + d, v_stride, nk, o + d, o_stride);
  }
  switch ((hd - d) / kLanes) {
    case 3:
      pv_block<R, 3>(p, p_stride, v + d, v_stride, nk, o + d, o_stride);
      break;
    case 2:
      pv_block<R, 2>(p, p_stride, v + d, v_stride, nk, o + d, o_stride);
      break;
    case 1:
      pv_block<R, 1>(p, p_stride, v + d, v_stride, nk, o + d, o_stride);
      break;
    default:
      break;
  }
}

void pv_avx512(const float* p, int64_t p_stride, int rows, const float* v, int64_t v_stride, int nk,
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

const AttentionKernels& avx512_attention_kernels() {
  static const AttentionKernels k = {"avx512",           kLanes,        scores_packed_avx512,
                                     scores_rows_avx512, max_of_avx512, exp_sub_sum_avx512,
                                     pv_avx512};
  return k;
}

}  // namespace fkv

#endif  // defined(__x86_64__)
