// AVX-512 (F/BW/VL/DQ + FMA + F16C) kernels. Compiled with those flags by CMake; only reached
// through the dispatcher when the CPU has them. Everything here has internal linkage and uses no
// inline library templates, so no AVX-512 code can leak into a baseline caller via ODR merging.
#if defined(__x86_64__)

// GCC 12 flags the intrinsics' internal _mm512_undefined_* placeholders as uninitialised.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "core/check.h"
#include "core/dtype.h"
#include "kernels/dispatch.h"
#include "kernels/simd_avx512.h"

namespace fkv {
namespace {

constexpr int kLanes = 16;

inline float hsum(__m512 v) {
  const __m256 lo = _mm512_castps512_ps256(v);
  const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
  __m256 s8 = _mm256_add_ps(lo, hi);
  __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
  return _mm_cvtss_f32(s4);
}

// The four horizontal sums of a, b, c, d, in that order (shares the shuffles between them).
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

float dot_avx512(const float* a, const float* b, int64_t n) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  __m512 acc2 = _mm512_setzero_ps(), acc3 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 4 * kLanes <= n; i += 4 * kLanes) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
    acc2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), acc2);
    acc3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), acc3);
  }
  for (; i + kLanes <= n; i += kLanes) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
  }
  if (i < n) {
    const __mmask16 m = tail_mask(n - i);
    acc1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc1);
  }
  return hsum(_mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3)));
}

void axpy_avx512(float alpha, const float* x, float* y, int64_t n) {
  const __m512 va = _mm512_set1_ps(alpha);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    _mm512_storeu_ps(y + i, _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
  }
  if (i < n) {
    const __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(
        y + i, m,
        _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i)));
  }
}

void add_inplace_avx512(float* y, const float* x, int64_t n) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    _mm512_storeu_ps(y + i, _mm512_add_ps(_mm512_loadu_ps(y + i), _mm512_loadu_ps(x + i)));
  }
  if (i < n) {
    const __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(
        y + i, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, y + i), _mm512_maskz_loadu_ps(m, x + i)));
  }
}

void rms_norm_row_avx512(const float* x, const float* w, int64_t dim, float eps, float* y) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 2 * kLanes <= dim; i += 2 * kLanes) {
    const __m512 a = _mm512_loadu_ps(x + i), b = _mm512_loadu_ps(x + i + 16);
    acc0 = _mm512_fmadd_ps(a, a, acc0);
    acc1 = _mm512_fmadd_ps(b, b, acc1);
  }
  for (; i < dim; i += kLanes) {
    const __m512 a = _mm512_maskz_loadu_ps(dim - i >= kLanes ? 0xffff : tail_mask(dim - i), x + i);
    acc0 = _mm512_fmadd_ps(a, a, acc0);
  }
  const double ss = hsum(_mm512_add_ps(acc0, acc1));
  const __m512 scale =
      _mm512_set1_ps(static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(dim) + eps)));
  for (i = 0; i < dim; i += kLanes) {
    const __mmask16 m = dim - i >= kLanes ? 0xffff : tail_mask(dim - i);
    const __m512 v = _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), scale),
                                   _mm512_maskz_loadu_ps(m, w + i));
    _mm512_mask_storeu_ps(y + i, m, v);
  }
}

void silu_mul_avx512(float* gate, const float* up, int64_t n) {
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t i = 0; i < n; i += kLanes) {
    const __mmask16 m = n - i >= kLanes ? 0xffff : tail_mask(n - i);
    const __m512 g = _mm512_maskz_loadu_ps(m, gate + i);
    const __m512 e = exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), g));
    const __m512 s = _mm512_div_ps(g, _mm512_add_ps(one, e));
    _mm512_mask_storeu_ps(gate + i, m, _mm512_mul_ps(s, _mm512_maskz_loadu_ps(m, up + i)));
  }
}

void softmax_inplace_avx512(float* x, int64_t n) {
  if (n <= 0) return;
  __m512 vmax = _mm512_set1_ps(-INFINITY);
  for (int64_t i = 0; i < n; i += kLanes) {
    const __mmask16 m = n - i >= kLanes ? 0xffff : tail_mask(n - i);
    vmax = _mm512_mask_max_ps(vmax, m, vmax, _mm512_maskz_loadu_ps(m, x + i));
  }
  const __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
  __m512 sum = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += kLanes) {
    const __mmask16 m = n - i >= kLanes ? 0xffff : tail_mask(n - i);
    const __m512 e =
        _mm512_maskz_mov_ps(m, exp_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), mx)));
    _mm512_mask_storeu_ps(x + i, m, e);
    sum = _mm512_add_ps(sum, e);
  }
  const __m512 inv = _mm512_set1_ps(static_cast<float>(1.0 / static_cast<double>(hsum(sum))));
  for (int64_t i = 0; i < n; i += kLanes) {
    const __mmask16 m = n - i >= kLanes ? 0xffff : tail_mask(n - i);
    _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), inv));
  }
}

void rope_rotate_avx512(float* x, int n_heads, int head_dim, int rot_dim, const float* cos_t,
                        const float* sin_t, RopeStyle style) {
  const int half = rot_dim / 2;
  // Interleaved: lane 2j / 2j+1 take cos/sin j; the partner is the neighbour within the pair.
  const __m512i dup = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
  const __m512 alt_sign = _mm512_setr_ps(-1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1);
  for (int h = 0; h < n_heads; ++h) {
    float* xh = x + static_cast<int64_t>(h) * head_dim;
    if (style == RopeStyle::kNeox) {
      for (int i = 0; i < half; i += kLanes) {
        const __mmask16 m = half - i >= kLanes ? 0xffff : tail_mask(half - i);
        const __m512 c = _mm512_maskz_loadu_ps(m, cos_t + i),
                     s = _mm512_maskz_loadu_ps(m, sin_t + i);
        const __m512 x0 = _mm512_maskz_loadu_ps(m, xh + i);
        const __m512 x1 = _mm512_maskz_loadu_ps(m, xh + i + half);
        _mm512_mask_storeu_ps(xh + i, m, _mm512_fmsub_ps(x0, c, _mm512_mul_ps(x1, s)));
        _mm512_mask_storeu_ps(xh + i + half, m, _mm512_fmadd_ps(x1, c, _mm512_mul_ps(x0, s)));
      }
    } else {
      for (int i = 0; i < half; i += kLanes / 2) {  // 8 pairs = 16 floats per step
        const int pairs = half - i >= kLanes / 2 ? kLanes / 2 : half - i;
        const __mmask16 mp = tail_mask(pairs);
        const __mmask16 mx = pairs == kLanes / 2 ? 0xffff : tail_mask(2 * pairs);
        const __m512 c = _mm512_permutexvar_ps(dup, _mm512_maskz_loadu_ps(mp, cos_t + i));
        const __m512 s = _mm512_mul_ps(
            _mm512_permutexvar_ps(dup, _mm512_maskz_loadu_ps(mp, sin_t + i)), alt_sign);
        const __m512 v = _mm512_maskz_loadu_ps(mx, xh + 2 * i);
        const __m512 swapped = _mm512_permute_ps(v, 0xB1);  // (b, a) per pair
        // (a, b) -> (a c - b s, b c + a s)
        _mm512_mask_storeu_ps(xh + 2 * i, mx, _mm512_fmadd_ps(v, c, _mm512_mul_ps(swapped, s)));
      }
    }
  }
}

// ---- f32 / f16 / bf16 weight rows: the loaders (LoadF32, LoadF16, LoadBF16) are in simd_avx512.h
// ---- Decode: NW stored rows against one x, converting on the fly (one pass over the weights).
template <class L, int NW>
void gemv_block(const float* x, const uint8_t* w, size_t row_bytes, int64_t cols, float* y) {
  __m512 acc[NW][2];
  for (int r = 0; r < NW; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  int64_t c = 0;
  for (; c + 2 * kLanes <= cols; c += 2 * kLanes) {
    const __m512 x0 = _mm512_loadu_ps(x + c), x1 = _mm512_loadu_ps(x + c + kLanes);
    for (int r = 0; r < NW; ++r) {
      const uint8_t* wr = w + r * row_bytes;
      acc[r][0] = _mm512_fmadd_ps(L::load(wr, c), x0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(L::load(wr, c + kLanes), x1, acc[r][1]);
    }
  }
  for (; c < cols; c += kLanes) {
    const __mmask16 m = cols - c >= kLanes ? 0xffff : tail_mask(cols - c);
    const __m512 x0 = _mm512_maskz_loadu_ps(m, x + c);
    for (int r = 0; r < NW; ++r) {
      acc[r][0] = _mm512_fmadd_ps(L::load_tail(w + r * row_bytes, c, m), x0, acc[r][0]);
    }
  }
  for (int r = 0; r < NW; ++r) y[r] = hsum(_mm512_add_ps(acc[r][0], acc[r][1]));
}

template <class L>
void gemv(const float* x, const uint8_t* w, size_t row_bytes, int64_t nr, int64_t cols, float* y) {
  int64_t r = 0;
  for (; r + 4 <= nr; r += 4) gemv_block<L, 4>(x, w + r * row_bytes, row_bytes, cols, y + r);
  for (; r < nr; ++r) gemv_block<L, 1>(x, w + r * row_bytes, row_bytes, cols, y + r);
}

// NX x-rows by NW f32 weight rows; each output is one dot product accumulated in a fixed order.
template <int NX, int NW>
void gemm_block(const float* x, int64_t x_stride, const float* w, int64_t w_stride, int64_t cols,
                float* y, int64_t y_stride) {
  __m512 acc[NX][NW];
  for (int i = 0; i < NX; ++i)
    for (int r = 0; r < NW; ++r) acc[i][r] = _mm512_setzero_ps();
  int64_t c = 0;
  for (; c + kLanes <= cols; c += kLanes) {
    __m512 wv[NW];
    for (int r = 0; r < NW; ++r) wv[r] = _mm512_loadu_ps(w + r * w_stride + c);
    for (int i = 0; i < NX; ++i) {
      const __m512 xv = _mm512_loadu_ps(x + i * x_stride + c);
      for (int r = 0; r < NW; ++r) acc[i][r] = _mm512_fmadd_ps(xv, wv[r], acc[i][r]);
    }
  }
  if (c < cols) {
    const __mmask16 m = tail_mask(cols - c);
    __m512 wv[NW];
    for (int r = 0; r < NW; ++r) wv[r] = _mm512_maskz_loadu_ps(m, w + r * w_stride + c);
    for (int i = 0; i < NX; ++i) {
      const __m512 xv = _mm512_maskz_loadu_ps(m, x + i * x_stride + c);
      for (int r = 0; r < NW; ++r) acc[i][r] = _mm512_fmadd_ps(xv, wv[r], acc[i][r]);
    }
  }
  for (int i = 0; i < NX; ++i) {
    if constexpr (NW == 4) {
      _mm_storeu_ps(y + i * y_stride, hsum4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]));
    } else {
      for (int r = 0; r < NW; ++r) y[i * y_stride + r] = hsum(acc[i][r]);
    }
  }
}

// Register block: 6 x 4 = 24 accumulators + 4 weight vectors + 1 x vector of the 32 zmm
// registers (measured a few % faster than 4 x 4; 8 x 3 spills). -D overrides for tuning.
#ifndef FKV_AVX512_BX
#define FKV_AVX512_BX 6
#define FKV_AVX512_BW 4
#endif
constexpr int kBlockX = FKV_AVX512_BX;
constexpr int kBlockW = FKV_AVX512_BW;

// All nw (< kBlockW when at the tile's end) weight rows against NX x rows.
template <int NX, int NW = kBlockW>
void gemm_w_rows(int64_t nw, const float* x, int64_t x_stride, const float* w, int64_t w_stride,
                 int64_t cols, float* y, int64_t y_stride) {
  if constexpr (NW > 0) {
    if (nw == NW) {
      gemm_block<NX, NW>(x, x_stride, w, w_stride, cols, y, y_stride);
    } else {
      gemm_w_rows<NX, NW - 1>(nw, x, x_stride, w, w_stride, cols, y, y_stride);
    }
  }
}

// The last nx (< kBlockX) x rows.
template <int NX = kBlockX - 1>
void gemm_x_tail(int64_t nx, int64_t nw, const float* x, int64_t x_stride, const float* w,
                 int64_t w_stride, int64_t cols, float* y, int64_t y_stride) {
  if constexpr (NX > 0) {
    if (nx == NX) {
      gemm_w_rows<NX>(nw, x, x_stride, w, w_stride, cols, y, y_stride);
    } else {
      gemm_x_tail<NX - 1>(nx, nw, x, x_stride, w, w_stride, cols, y, y_stride);
    }
  }
}

void gemm_f32_avx512(const float* x, int64_t n, int64_t x_stride, const float* w, int64_t nr,
                     int64_t w_stride, int64_t cols, float* y, int64_t y_stride) {
  // Weight rows are the outer loop: a block of kBlockW rows stays in L1 while x streams past.
  for (int64_t r0 = 0; r0 < nr; r0 += kBlockW) {
    const int64_t nw = nr - r0 < kBlockW ? nr - r0 : kBlockW;
    const float* wb = w + r0 * w_stride;
    int64_t i = 0;
    for (; i + kBlockX <= n; i += kBlockX) {
      gemm_w_rows<kBlockX>(nw, x + i * x_stride, x_stride, wb, w_stride, cols,
                           y + i * y_stride + r0, y_stride);
    }
    if (i < n) {
      gemm_x_tail(n - i, nw, x + i * x_stride, x_stride, wb, w_stride, cols, y + i * y_stride + r0,
                  y_stride);
    }
  }
}

// Prefill micro-kernel: NW weight rows (broadcast one element at a time) x one packed panel of 32
// x rows (two vectors). Each output is a plain sequential FMA chain over c = 0..cols-1.
template <int NW>
void xpacked_block(const float* xp, int64_t nx, const float* w, int64_t w_stride, int64_t cols,
                   float* y, int64_t y_stride) {
  __m512 acc[NW][2];
  for (int r = 0; r < NW; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (int64_t c = 0; c < cols; ++c) {
    const __m512 x0 = _mm512_loadu_ps(xp + c * 32), x1 = _mm512_loadu_ps(xp + c * 32 + 16);
    for (int r = 0; r < NW; ++r) {
      const __m512 wv = _mm512_set1_ps(w[r * w_stride + c]);
      acc[r][0] = _mm512_fmadd_ps(wv, x0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(wv, x1, acc[r][1]);
    }
  }
  // acc[r] holds column r of y for the panel's rows: transpose through a small buffer.
  alignas(64) float t[NW][32];
  for (int r = 0; r < NW; ++r) {
    _mm512_store_ps(t[r], acc[r][0]);
    _mm512_store_ps(t[r] + 16, acc[r][1]);
  }
  for (int64_t i = 0; i < nx; ++i)
    for (int r = 0; r < NW; ++r) y[i * y_stride + r] = t[r][i];
}

constexpr int kXpBlockW = 12;  // 24 accumulators + 2 x vectors + 1 broadcast

template <int NW = kXpBlockW>
void xpacked_w_rows(int64_t nw, const float* xp, int64_t nx, const float* w, int64_t w_stride,
                    int64_t cols, float* y, int64_t y_stride) {
  if constexpr (NW > 0) {
    if (nw == NW) {
      xpacked_block<NW>(xp, nx, w, w_stride, cols, y, y_stride);
    } else {
      xpacked_w_rows<NW - 1>(nw, xp, nx, w, w_stride, cols, y, y_stride);
    }
  }
}

void gemm_xpacked_avx512(const float* xp, int64_t n, const float* w, int64_t nr, int64_t w_stride,
                         int64_t cols, float* y, int64_t y_stride) {
  for (int64_t i0 = 0; i0 < n; i0 += 32) {
    const int64_t nx = n - i0 < 32 ? n - i0 : 32;
    const float* panel = xp + (i0 / 32) * cols * 32;
    for (int64_t r0 = 0; r0 < nr; r0 += kXpBlockW) {
      const int64_t nw = nr - r0 < kXpBlockW ? nr - r0 : kXpBlockW;
      xpacked_w_rows(nw, panel, nx, w + r0 * w_stride, w_stride, cols, y + i0 * y_stride + r0,
                     y_stride);
    }
  }
}

void f16_row_to_f32_avx512(const uint16_t* src, float* dst, int64_t n) {
  const uint8_t* p = reinterpret_cast<const uint8_t*>(src);
  int64_t c = 0;
  // Plain stores where whole: masked stores in every step ran this at ~3 GB/s on Zen 5 (it widens
  // every key and value block the decode attention reads).
  for (; c + kLanes <= n; c += kLanes) _mm512_storeu_ps(dst + c, LoadF16::load(p, c));
  if (c < n) {
    const __mmask16 m = tail_mask(n - c);
    _mm512_mask_storeu_ps(dst + c, m, LoadF16::load_tail(p, c, m));
  }
}

void bf16_row_to_f32_avx512(const uint16_t* src, float* dst, int64_t n) {
  const uint8_t* p = reinterpret_cast<const uint8_t*>(src);
  int64_t c = 0;
  // Plain stores where whole: masked stores in every step ran this at ~3 GB/s on Zen 5 (it widens
  // every key and value block the decode attention reads).
  for (; c + kLanes <= n; c += kLanes) _mm512_storeu_ps(dst + c, LoadBF16::load(p, c));
  if (c < n) {
    const __mmask16 m = tail_mask(n - c);
    _mm512_mask_storeu_ps(dst + c, m, LoadBF16::load_tail(p, c, m));
  }
}

// As f32_row_to_f16_avx2: the hardware conversion, and core's f32_to_f16 for a chunk with a NaN.
void f32_row_to_f16_avx512(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t c = 0; c < n; c += kLanes) {
    const __mmask16 m = tail_mask(n - c);
    const __m512 x = _mm512_maskz_loadu_ps(m, src + c);
    if (_mm512_mask_cmp_ps_mask(m, x, x, _CMP_UNORD_Q) != 0) {
      const int64_t end = n - c < kLanes ? n : c + kLanes;  // no std::min: see the file comment
      for (int64_t i = c; i < end; ++i) dst[i] = f32_to_f16(src[i]);
      continue;
    }
    _mm256_mask_storeu_epi16(dst + c, m,
                             _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
}

}  // namespace

const KernelTable& avx512_kernel_table() {
  static const KernelTable table = {
      "avx512",
      dot_avx512,
      axpy_avx512,
      rms_norm_row_avx512,
      silu_mul_avx512,
      add_inplace_avx512,
      softmax_inplace_avx512,
      rope_rotate_avx512,
      gemm_f32_avx512,
      gemv<LoadF32>,
      gemv<LoadF16>,
      gemv<LoadBF16>,
      f16_row_to_f32_avx512,
      bf16_row_to_f32_avx512,
      f32_row_to_f16_avx512,
      gemm_xpacked_avx512,
      // No bf16-dot form (the avx512+bf16dot table adds it).
      nullptr,
      nullptr,
      nullptr,
  };
  return table;
}

}  // namespace fkv

#endif  // __x86_64__
