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
// Decode reads each cache row once, in runs of a few hundred rows per head that the hardware
// prefetcher hardly ramps up on (it restarts at every 4 KB page): the score and half P.V loops
// prefetch the rows one key block ahead, a few lines per step. SmolLM2 shape, 8 sequences x 30
// layers x 300 keys per head out of cache: 2.9 -> 1.7-1.8 ms on 2 threads (a plain read of the
// bytes: 1.3-1.5 ms); 16 keys ahead: half the gain; 128: a little less than 64.
constexpr int kPrefetchKeys = kKb;

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

// R query rows x 4 unpacked keys (rows of hd elements, k_stride apart, from byte base k): a[r][i]
// sums q_r . key i over the dims in order, one reduction per row for the 4 keys. Each key vector is
// loaded (and, for the halves, widened) once for all R rows.
template <class L, int R>
inline void scores_4keys(const float* q, int64_t q_stride, const uint8_t* k, int64_t k_stride,
                         int hd, __m128 vscale, float* s) {
  const int64_t step = L::kBytes * k_stride;
  __m512 a[R][4];
  for (int r = 0; r < R; ++r) {
    for (int i = 0; i < 4; ++i) a[r][i] = _mm512_setzero_ps();
  }
  for (int d = 0; d < hd; d += kLanes) {
    for (int i = 0; i < 4; ++i) {
      const __m512 kv = L::load(k + i * step, d);
      for (int r = 0; r < R; ++r) {
        a[r][i] = _mm512_fmadd_ps(_mm512_loadu_ps(q + r * q_stride + d), kv, a[r][i]);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm_storeu_ps(s + r * kKb, _mm_mul_ps(hsum4(a[r][0], a[r][1], a[r][2], a[r][3]), vscale));
  }
}

// Decode scores from unpacked keys stored as L's type (hd a multiple of 16): 4 keys per pass share
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
    for (; m + kRows <= rows; m += kRows) {
      scores_4keys<L, kRows>(q + m * q_stride, q_stride, kj, k_stride, hd, vscale, s + m * kKb + j);
    }
    const float* qm = q + m * q_stride;
    float* sm = s + m * kKb + j;
    switch (rows - m) {
      case 3:
        scores_4keys<L, 3>(qm, q_stride, kj, k_stride, hd, vscale, sm);
        break;
      case 2:
        scores_4keys<L, 2>(qm, q_stride, kj, k_stride, hd, vscale, sm);
        break;
      case 1:
        scores_4keys<L, 1>(qm, q_stride, kj, k_stride, hd, vscale, sm);
        break;
      default:
        break;
    }
  }
  for (; j < nk; ++j) {
    const uint8_t* kj = k + L::kBytes * j * k_stride;
    for (int m = 0; m < rows; ++m) {
      const float* qm = q + m * q_stride;
      __m512 a = _mm512_setzero_ps();
      for (int d = 0; d < hd; d += kLanes) {
        a = _mm512_fmadd_ps(_mm512_loadu_ps(qm + d), L::load(kj, d), a);
      }
      s[m * kKb + j] = _mm512_reduce_add_ps(a) * scale;
    }
  }
}

void scores_rows_avx512(const float* q, int64_t q_stride, int rows, const float* k,
                        int64_t k_stride, int nk, int hd, float scale, float* s) {
  scores_rows_t<LoadF32>(q, q_stride, rows, reinterpret_cast<const uint8_t*>(k), k_stride, nk, hd,
                         scale, s);
}

void scores_rows_half_avx512(DType half, const float* q, int64_t q_stride, int rows,
                             const uint16_t* k, int64_t k_stride, int nk, int hd, float scale,
                             float* s) {
  const uint8_t* kb = reinterpret_cast<const uint8_t*>(k);
  if (half == DType::kBF16) {
    scores_rows_t<LoadBF16>(q, q_stride, rows, kb, k_stride, nk, hd, scale, s);
  } else {
    scores_rows_t<LoadF16>(q, q_stride, rows, kb, k_stride, nk, hd, scale, s);
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

// o[R rows, C vectors] += p[R rows, nk] . v[nk, C vectors] (v from byte base, rows v_stride
// elements apart, as L's type), accumulators in registers. kPrefetch (decode's half rows): fetch
// the same columns kPrefetchKeys rows ahead (prefill's P.V reuses each tile from cache: none).
template <class L, bool kPrefetch, int R, int C>
inline void pv_block(const float* p, int64_t p_stride, const uint8_t* v, int64_t v_stride, int nk,
                     float* o, int64_t o_stride) {
  __m512 acc[R][C];
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_loadu_ps(o + r * o_stride + c * kLanes);
  }
  for (int j = 0; j < nk; ++j) {
    const uint8_t* vj = v + L::kBytes * j * v_stride;
    if constexpr (kPrefetch) {  // this block's C vectors of the row a key block ahead
      const char* ahead = reinterpret_cast<const char*>(vj + L::kBytes * kPrefetchKeys * v_stride);
      for (int b = 0; b < L::kBytes * C * kLanes; b += 64) _mm_prefetch(ahead + b, _MM_HINT_T0);
    }
    __m512 vv[C];
    for (int c = 0; c < C; ++c) vv[c] = L::load(vj, c * kLanes);
    for (int r = 0; r < R; ++r) {
      const __m512 pb = _mm512_set1_ps(p[r * p_stride + j]);
      for (int c = 0; c < C; ++c) acc[r][c] = _mm512_fmadd_ps(pb, vv[c], acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) _mm512_storeu_ps(o + r * o_stride + c * kLanes, acc[r][c]);
  }
}

template <class L, bool kPrefetch, int R>
inline void pv_rows(const float* p, int64_t p_stride, const uint8_t* v, int64_t v_stride, int nk,
                    int hd, float* o, int64_t o_stride) {
  int d = 0;
  for (; d + 4 * kLanes <= hd; d += 4 * kLanes) {
    pv_block<L, kPrefetch, R, 4>(p, p_stride, v + L::kBytes * d, v_stride, nk, o + d, o_stride);
  }
  const uint8_t* vd = v + L::kBytes * d;
  switch ((hd - d) / kLanes) {
    case 3:
      pv_block<L, kPrefetch, R, 3>(p, p_stride, vd, v_stride, nk, o + d, o_stride);
      break;
    case 2:
      pv_block<L, kPrefetch, R, 2>(p, p_stride, vd, v_stride, nk, o + d, o_stride);
      break;
    case 1:
      pv_block<L, kPrefetch, R, 1>(p, p_stride, vd, v_stride, nk, o + d, o_stride);
      break;
    default:
      break;
  }
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

void pv_avx512(const float* p, int64_t p_stride, int rows, const float* v, int64_t v_stride, int nk,
               int hd, float* o, int64_t o_stride) {
  pv_t<LoadF32, false>(p, p_stride, rows, reinterpret_cast<const uint8_t*>(v), v_stride, nk, hd, o,
                       o_stride);
}

void pv_half_avx512(DType half, const float* p, int64_t p_stride, int rows, const uint16_t* v,
                    int64_t v_stride, int nk, int hd, float* o, int64_t o_stride) {
  const uint8_t* vb = reinterpret_cast<const uint8_t*>(v);
  if (half == DType::kBF16) {
    pv_t<LoadBF16, true>(p, p_stride, rows, vb, v_stride, nk, hd, o, o_stride);
  } else {
    pv_t<LoadF16, true>(p, p_stride, rows, vb, v_stride, nk, hd, o, o_stride);
  }
}

}  // namespace

const AttentionKernels& avx512_attention_kernels() {
  static const AttentionKernels k = {
      "avx512",           kLanes,    scores_packed_avx512,    scores_rows_avx512, max_of_avx512,
      exp_sub_sum_avx512, pv_avx512, scores_rows_half_avx512, pv_half_avx512};
  return k;
}

}  // namespace fkv

#endif  // defined(__x86_64__)
