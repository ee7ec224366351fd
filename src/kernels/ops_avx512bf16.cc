// AVX512_BF16 kernels for bf16 weights: vdpbf16ps multiplies pairs of bf16 values and adds both
// products to an f32 lane, so weights are used as stored (no widening) and x is rounded to bf16
// once per matmul call, as ggml's CPU backend computes bf16 products. Compiled with the avx512
// flags plus -mavx512bf16 by CMake; reached only through avx512bf16_kernel_table(), which the
// dispatcher uses only when cpuid reports AVX512_BF16. Internal linkage throughout (see
// ops_avx512.cc).
#if defined(__x86_64__)

// GCC 12 flags the intrinsics' internal _mm512_undefined_* placeholders as uninitialised.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <immintrin.h>

#include <cstring>

#include "kernels/dispatch.h"
#include "kernels/simd_avx512.h"

namespace fkv {
namespace {

inline float hsum(__m512 v) {
  const __m256 lo = _mm512_castps512_ps256(v);
  const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
  __m256 s8 = _mm256_add_ps(lo, hi);
  __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
  return _mm_cvtss_f32(s4);
}

// Lanes [0, rem) of 32 halves set.
inline __mmask32 tail_mask32(int64_t rem) {
  return rem >= 32 ? static_cast<__mmask32>(0xffffffffu)
                   : static_cast<__mmask32>((1u << static_cast<unsigned>(rem)) - 1u);
}

inline __m512 dp(__m512 acc, __m512i a, __m512i b) {
  return _mm512_dpbf16_ps(acc, reinterpret_cast<__m512bh&>(a), reinterpret_cast<__m512bh&>(b));
}

// xb[round_up(cols, 32)]: 32 floats per vcvtne2ps2bf16 (RNE, DAZ/FTZ); masked loads give the zero
// padding.
void round_row_bf16_avx512(const float* x, int64_t cols, uint16_t* xb) {
  for (int64_t c = 0; c < cols; c += 32) {
    const __m512 lo = _mm512_maskz_loadu_ps(tail_mask(cols - c), x + c);
    const __m512 hi =
        _mm512_maskz_loadu_ps(cols - c > 16 ? tail_mask(cols - c - 16) : 0, x + c + 16);
    const __m512bh h = _mm512_cvtne2ps_pbh(hi, lo);
    _mm512_storeu_si512(xb + c, reinterpret_cast<const __m512i&>(h));
  }
}

// Decode: NW stored bf16 rows against the rounded x; each row has two f32 accumulators (even and
// odd 32-element blocks), so a row's bits do not depend on NW.
template <int NW>
void gemv_block(const uint16_t* xb, const uint8_t* w, size_t row_bytes, int64_t cols, float* y) {
  __m512 acc[NW][2];
  for (int r = 0; r < NW; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  int64_t c = 0;
  for (; c + 64 <= cols; c += 64) {
    const __m512i x0 = _mm512_loadu_si512(xb + c), x1 = _mm512_loadu_si512(xb + c + 32);
    for (int r = 0; r < NW; ++r) {
      const uint8_t* wr = w + r * row_bytes + 2 * c;
      acc[r][0] = dp(acc[r][0], x0, _mm512_loadu_si512(wr));
      acc[r][1] = dp(acc[r][1], x1, _mm512_loadu_si512(wr + 64));
    }
  }
  for (; c < cols; c += 32) {
    const __mmask32 m = tail_mask32(cols - c);
    const __m512i x0 = _mm512_loadu_si512(xb + c);  // zero past cols
    for (int r = 0; r < NW; ++r) {
      acc[r][0] = dp(acc[r][0], x0, _mm512_maskz_loadu_epi16(m, w + r * row_bytes + 2 * c));
    }
  }
  for (int r = 0; r < NW; ++r) y[r] = hsum(_mm512_add_ps(acc[r][0], acc[r][1]));
}

void gemv_bf16dot_avx512(const uint16_t* xb, const uint8_t* w, size_t row_bytes, int64_t nr,
                         int64_t cols, float* y) {
  int64_t r = 0;
  for (; r + 4 <= nr; r += 4) gemv_block<4>(xb, w + r * row_bytes, row_bytes, cols, y + r);
  for (; r < nr; ++r) gemv_block<1>(xb, w + r * row_bytes, row_bytes, cols, y + r);
}

inline __m512i broadcast_pair(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(static_cast<int>(v));
}

// Prefill micro-kernel: NW weight rows (one bf16 pair broadcast at a time) x one panel of 32 x
// rows (NV = 2 vectors of 16 pairs; NV = 1 when the panel holds at most 16 rows, which halves the
// work of a short last panel). Each output is one f32 chain over the column pairs, the same for
// NV = 1 and 2, so a row's bits do not depend on the panel's fill.
template <int NW, int NV>
void panel_block(const uint32_t* panel, int64_t nx, const uint8_t* w, size_t row_bytes,
                 int64_t cols, float* y, int64_t y_stride) {
  __m512 acc[NW][NV];
  for (int r = 0; r < NW; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  const int64_t full_pairs = cols / 2;
  for (int64_t q = 0; q < full_pairs; ++q) {
    __m512i xv[NV];
    for (int v = 0; v < NV; ++v) xv[v] = _mm512_loadu_si512(panel + q * 32 + 16 * v);
    for (int r = 0; r < NW; ++r) {
      const __m512i wv = broadcast_pair(w + r * row_bytes + 4 * q);
      for (int v = 0; v < NV; ++v) acc[r][v] = dp(acc[r][v], xv[v], wv);
    }
  }
  if (cols % 2 != 0) {
    // The last column alone: its pair's odd half is zero in x, and zero (not the next row's first
    // element, which may be Inf or NaN) in w.
    __m512i xv[NV];
    for (int v = 0; v < NV; ++v) xv[v] = _mm512_loadu_si512(panel + full_pairs * 32 + 16 * v);
    for (int r = 0; r < NW; ++r) {
      uint16_t h;
      std::memcpy(&h, w + r * row_bytes + 4 * full_pairs, 2);
      const __m512i wv = _mm512_set1_epi32(static_cast<int>(h));
      for (int v = 0; v < NV; ++v) acc[r][v] = dp(acc[r][v], xv[v], wv);
    }
  }
  // acc[r] holds column r of y for the panel's rows: transpose through a small buffer.
  alignas(64) float t[NW][16 * NV];
  for (int r = 0; r < NW; ++r)
    for (int v = 0; v < NV; ++v) _mm512_store_ps(t[r] + 16 * v, acc[r][v]);
  for (int64_t i = 0; i < nx; ++i)
    for (int r = 0; r < NW; ++r) y[i * y_stride + r] = t[r][i];
}

// 12 rows: 24 accumulators + 2 x vectors + 1 broadcast of the 32 zmm registers (a kernel loop at
// ~90% of this core's measured vdpbf16ps peak, docs/KERNELS.md). -D overrides for tuning.
#ifndef FKV_BF16DOT_BW
#define FKV_BF16DOT_BW 12
#endif
constexpr int kPanelBlockW = FKV_BF16DOT_BW;

template <int NV, int NW = kPanelBlockW>
void panel_w_rows(int64_t nw, const uint32_t* panel, int64_t nx, const uint8_t* w, size_t row_bytes,
                  int64_t cols, float* y, int64_t y_stride) {
  if constexpr (NW > 0) {
    if (nw == NW) {
      panel_block<NW, NV>(panel, nx, w, row_bytes, cols, y, y_stride);
    } else {
      panel_w_rows<NV, NW - 1>(nw, panel, nx, w, row_bytes, cols, y, y_stride);
    }
  }
}

void gemm_bf16dot_avx512(const uint32_t* xp, int64_t n, const uint8_t* w, size_t row_bytes,
                         int64_t nr, int64_t cols, float* y, int64_t y_stride) {
  const int64_t panel_words = bf16_pairs(cols) * kXPanel;
  for (int64_t i0 = 0; i0 < n; i0 += kXPanel) {
    const int64_t nx = n - i0 < kXPanel ? n - i0 : kXPanel;
    const uint32_t* panel = xp + (i0 / kXPanel) * panel_words;
    for (int64_t r0 = 0; r0 < nr; r0 += kPanelBlockW) {
      const int64_t nw = nr - r0 < kPanelBlockW ? nr - r0 : kPanelBlockW;
      const uint8_t* wb = w + r0 * row_bytes;
      float* yb = y + i0 * y_stride + r0;
      if (nx > 16) {
        panel_w_rows<2>(nw, panel, nx, wb, row_bytes, cols, yb, y_stride);
      } else {
        panel_w_rows<1>(nw, panel, nx, wb, row_bytes, cols, yb, y_stride);
      }
    }
  }
}

}  // namespace

const KernelTable& avx512bf16_kernel_table() {
  static const KernelTable table = [] {
    KernelTable t = avx512_kernel_table();
    t.name = "avx512+bf16dot";
    t.round_row_bf16 = round_row_bf16_avx512;
    t.gemv_bf16dot = gemv_bf16dot_avx512;
    t.gemm_bf16dot = gemm_bf16dot_avx512;
    return t;
  }();
  return table;
}

}  // namespace fkv

#endif  // __x86_64__
