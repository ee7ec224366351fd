// AVX2 + FMA + F16C kernels. Compiled with those flags by CMake; only reached through the
// dispatcher when the CPU has them. Everything here has internal linkage and uses no inline
// library templates, so no AVX2 code can leak into a baseline caller via ODR merging.
#if defined(__x86_64__)

#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "core/check.h"
#include "core/dtype.h"
#include "kernels/dispatch.h"
#include "kernels/simd_avx2.h"

namespace fkv {
namespace {

constexpr int kLanes = 8;

float dot_avx2(const float* a, const float* b, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 4 * kLanes <= n; i += 4 * kLanes) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
    acc2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), acc2);
    acc3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), acc3);
  }
  for (; i + kLanes <= n; i += kLanes) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
  }
  if (i < n) {
    const __m256i m = tail_mask(n - i);
    acc1 = _mm256_fmadd_ps(_mm256_maskload_ps(a + i, m), _mm256_maskload_ps(b + i, m), acc1);
  }
  return hsum(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
}

void axpy_avx2(float alpha, const float* x, float* y, int64_t n) {
  const __m256 va = _mm256_set1_ps(alpha);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  }
  if (i < n) {
    const __m256i m = tail_mask(n - i);
    _mm256_maskstore_ps(
        y + i, m, _mm256_fmadd_ps(va, _mm256_maskload_ps(x + i, m), _mm256_maskload_ps(y + i, m)));
  }
}

void add_inplace_avx2(float* y, const float* x, int64_t n) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_loadu_ps(x + i)));
  }
  if (i < n) {
    const __m256i m = tail_mask(n - i);
    _mm256_maskstore_ps(y + i, m,
                        _mm256_add_ps(_mm256_maskload_ps(y + i, m), _mm256_maskload_ps(x + i, m)));
  }
}

void rms_norm_row_avx2(const float* x, const float* w, int64_t dim, float eps, float* y) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 2 * kLanes <= dim; i += 2 * kLanes) {
    const __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
    acc0 = _mm256_fmadd_ps(a, a, acc0);
    acc1 = _mm256_fmadd_ps(b, b, acc1);
  }
  for (; i < dim; i += kLanes) {
    const __m256 a = _mm256_maskload_ps(x + i, tail_mask(dim - i >= kLanes ? kLanes : dim - i));
    acc0 = _mm256_fmadd_ps(a, a, acc0);
  }
  const double ss = hsum(_mm256_add_ps(acc0, acc1));
  const __m256 scale =
      _mm256_set1_ps(static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(dim) + eps)));
  for (i = 0; i < dim; i += kLanes) {
    const __m256i m = tail_mask(dim - i >= kLanes ? kLanes : dim - i);
    const __m256 v = _mm256_mul_ps(_mm256_mul_ps(_mm256_maskload_ps(x + i, m), scale),
                                   _mm256_maskload_ps(w + i, m));
    _mm256_maskstore_ps(y + i, m, v);
  }
}

void silu_mul_avx2(float* gate, const float* up, int64_t n) {
  const __m256 one = _mm256_set1_ps(1.0f);
  for (int64_t i = 0; i < n; i += kLanes) {
    const __m256i m = tail_mask(n - i >= kLanes ? kLanes : n - i);
    const __m256 g = _mm256_maskload_ps(gate + i, m);
    const __m256 e = exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), g));
    const __m256 s = _mm256_div_ps(g, _mm256_add_ps(one, e));
    _mm256_maskstore_ps(gate + i, m, _mm256_mul_ps(s, _mm256_maskload_ps(up + i, m)));
  }
}

void softmax_inplace_avx2(float* x, int64_t n) {
  if (n <= 0) return;
  __m256 vmax = _mm256_set1_ps(-INFINITY);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(x + i));
  float mxs = -INFINITY;
  {
    alignas(32) float lanes[kLanes];
    _mm256_store_ps(lanes, vmax);
    for (float v : lanes) mxs = v > mxs ? v : mxs;
    for (int64_t j = i; j < n; ++j) mxs = x[j] > mxs ? x[j] : mxs;
  }
  const __m256 mx = _mm256_set1_ps(mxs);
  __m256 sum = _mm256_setzero_ps();
  for (i = 0; i < n; i += kLanes) {
    const __m256i m = tail_mask(n - i >= kLanes ? kLanes : n - i);
    const __m256 e = _mm256_and_ps(exp_ps(_mm256_sub_ps(_mm256_maskload_ps(x + i, m), mx)),
                                   _mm256_castsi256_ps(m));
    _mm256_maskstore_ps(x + i, m, e);
    sum = _mm256_add_ps(sum, e);
  }
  const __m256 inv = _mm256_set1_ps(static_cast<float>(1.0 / static_cast<double>(hsum(sum))));
  for (i = 0; i < n; i += kLanes) {
    const __m256i m = tail_mask(n - i >= kLanes ? kLanes : n - i);
    _mm256_maskstore_ps(x + i, m, _mm256_mul_ps(_mm256_maskload_ps(x + i, m), inv));
  }
}

void rope_rotate_avx2(float* x, int n_heads, int head_dim, int rot_dim, const float* cos_t,
                      const float* sin_t, RopeStyle style) {
  const int half = rot_dim / 2;
  const __m256i dup = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
  const __m256 alt_sign = _mm256_setr_ps(-1, 1, -1, 1, -1, 1, -1, 1);
  for (int h = 0; h < n_heads; ++h) {
    float* xh = x + static_cast<int64_t>(h) * head_dim;
    if (style == RopeStyle::kNeox) {
      for (int i = 0; i < half; i += kLanes) {
        const __m256i m = tail_mask(half - i >= kLanes ? kLanes : half - i);
        const __m256 c = _mm256_maskload_ps(cos_t + i, m), s = _mm256_maskload_ps(sin_t + i, m);
        const __m256 x0 = _mm256_maskload_ps(xh + i, m);
        const __m256 x1 = _mm256_maskload_ps(xh + i + half, m);
        _mm256_maskstore_ps(xh + i, m, _mm256_fmsub_ps(x0, c, _mm256_mul_ps(x1, s)));
        _mm256_maskstore_ps(xh + i + half, m, _mm256_fmadd_ps(x1, c, _mm256_mul_ps(x0, s)));
      }
    } else {
      for (int i = 0; i < half; i += kLanes / 2) {  // 4 pairs = 8 floats per step
        const int pairs = half - i >= kLanes / 2 ? kLanes / 2 : half - i;
        const __m256i mp = tail_mask(pairs);
        const __m256i mx = tail_mask(2 * pairs);
        const __m256 c = _mm256_permutevar8x32_ps(_mm256_maskload_ps(cos_t + i, mp), dup);
        const __m256 s = _mm256_mul_ps(
            _mm256_permutevar8x32_ps(_mm256_maskload_ps(sin_t + i, mp), dup), alt_sign);
        const __m256 v = _mm256_maskload_ps(xh + 2 * i, mx);
        const __m256 swapped = _mm256_permute_ps(v, 0xB1);  // (b, a) per pair
        _mm256_maskstore_ps(xh + 2 * i, mx, _mm256_fmadd_ps(v, c, _mm256_mul_ps(swapped, s)));
      }
    }
  }
}

// ---- f32 / f16 / bf16 weight rows: the loaders (LoadF32, LoadF16, LoadBF16) are in simd_avx2.h
// ---- Decode: NW stored rows against one x, converting on the fly (one pass over the weights).
template <class L, int NW>
void gemv_block(const float* x, const uint8_t* w, size_t row_bytes, int64_t cols, float* y) {
  __m256 acc[NW][2];
  for (int r = 0; r < NW; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + 2 * kLanes <= cols; c += 2 * kLanes) {
    const __m256 x0 = _mm256_loadu_ps(x + c), x1 = _mm256_loadu_ps(x + c + kLanes);
    for (int r = 0; r < NW; ++r) {
      const uint8_t* wr = w + r * row_bytes;
      acc[r][0] = _mm256_fmadd_ps(L::load(wr, c), x0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(L::load(wr, c + kLanes), x1, acc[r][1]);
    }
  }
  for (; c + kLanes <= cols; c += kLanes) {
    const __m256 x0 = _mm256_loadu_ps(x + c);
    for (int r = 0; r < NW; ++r) {
      acc[r][0] = _mm256_fmadd_ps(L::load(w + r * row_bytes, c), x0, acc[r][0]);
    }
  }
  if (c < cols) {
    const __m256 x0 = _mm256_maskload_ps(x + c, tail_mask(cols - c));
    for (int r = 0; r < NW; ++r) {
      acc[r][1] = _mm256_fmadd_ps(L::load_tail(w + r * row_bytes, c, cols - c), x0, acc[r][1]);
    }
  }
  for (int r = 0; r < NW; ++r) y[r] = hsum(_mm256_add_ps(acc[r][0], acc[r][1]));
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
  __m256 acc[NX][NW];
  for (int i = 0; i < NX; ++i)
    for (int r = 0; r < NW; ++r) acc[i][r] = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + kLanes <= cols; c += kLanes) {
    __m256 wv[NW];
    for (int r = 0; r < NW; ++r) wv[r] = _mm256_loadu_ps(w + r * w_stride + c);
    for (int i = 0; i < NX; ++i) {
      const __m256 xv = _mm256_loadu_ps(x + i * x_stride + c);
      for (int r = 0; r < NW; ++r) acc[i][r] = _mm256_fmadd_ps(xv, wv[r], acc[i][r]);
    }
  }
  if (c < cols) {
    const __m256i m = tail_mask(cols - c);
    __m256 wv[NW];
    for (int r = 0; r < NW; ++r) wv[r] = _mm256_maskload_ps(w + r * w_stride + c, m);
    for (int i = 0; i < NX; ++i) {
      const __m256 xv = _mm256_maskload_ps(x + i * x_stride + c, m);
      for (int r = 0; r < NW; ++r) acc[i][r] = _mm256_fmadd_ps(xv, wv[r], acc[i][r]);
    }
  }
  for (int i = 0; i < NX; ++i)
    for (int r = 0; r < NW; ++r) y[i * y_stride + r] = hsum(acc[i][r]);
}

// Register block: 4 x 3 = 12 accumulators + 3 weight vectors + 1 x vector = the 16 ymm registers.
constexpr int kBlockX = 4;
constexpr int kBlockW = 3;

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

void gemm_f32_avx2(const float* x, int64_t n, int64_t x_stride, const float* w, int64_t nr,
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

void f16_row_to_f32_avx2(const uint16_t* src, float* dst, int64_t n) {
  const uint8_t* p = reinterpret_cast<const uint8_t*>(src);
  int64_t c = 0;
  for (; c + kLanes <= n; c += kLanes) _mm256_storeu_ps(dst + c, LoadF16::load(p, c));
  if (c < n) _mm256_maskstore_ps(dst + c, tail_mask(n - c), LoadF16::load_tail(p, c, n - c));
}

void bf16_row_to_f32_avx2(const uint16_t* src, float* dst, int64_t n) {
  const uint8_t* p = reinterpret_cast<const uint8_t*>(src);
  int64_t c = 0;
  for (; c + kLanes <= n; c += kLanes) _mm256_storeu_ps(dst + c, LoadBF16::load(p, c));
  if (c < n) _mm256_maskstore_ps(dst + c, tail_mask(n - c), LoadBF16::load_tail(p, c, n - c));
}

// F16C's round-to-nearest-even conversion gives core's f32_to_f16 bits for every non-NaN input
// (overflow to inf, f16 subnormals); a chunk holding a NaN goes through f32_to_f16, whose NaN is
// sign | 0x7e00 whatever the payload.
void f32_row_to_f16_avx2(const float* src, uint16_t* dst, int64_t n) {
  int64_t c = 0;
  for (; c + kLanes <= n; c += kLanes) {
    const __m256 x = _mm256_loadu_ps(src + c);
    if (_mm256_movemask_ps(_mm256_cmp_ps(x, x, _CMP_UNORD_Q)) != 0) {
      for (int i = 0; i < kLanes; ++i) dst[c + i] = f32_to_f16(src[c + i]);
      continue;
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + c),
                     _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  for (; c < n; ++c) dst[c] = f32_to_f16(src[c]);
}

}  // namespace

const KernelTable& avx2_kernel_table() {
  static const KernelTable table = {
      "avx2",
      dot_avx2,
      axpy_avx2,
      rms_norm_row_avx2,
      silu_mul_avx2,
      add_inplace_avx2,
      softmax_inplace_avx2,
      rope_rotate_avx2,
      gemm_f32_avx2,
      gemv<LoadF32>,
      gemv<LoadF16>,
      gemv<LoadBF16>,
      f16_row_to_f32_avx2,
      bf16_row_to_f32_avx2,
      f32_row_to_f16_avx2,
      // No prefill form: with 16 registers the packed-x kernel is load-bound and measured
      // slower than the dot-product form (50-64 vs 75 GFLOP/s at n = 128, docs/KERNELS.md).
      nullptr,
      // No bf16-dot form (the avx512+bf16dot table adds it).
      nullptr,
      nullptr,
      nullptr,
  };
  return table;
}

}  // namespace fkv

#endif  // __x86_64__
