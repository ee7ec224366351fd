// The x16 dots with AVX2 and no VNNI (quant/repack.h), for q4_0 and q4_1: a group's 16 rows as two
// halves of 8 lanes. Per half block, 4 loads give the 8 rows' nibbles word by word (low and high);
// each x row's 4 bytes are broadcast into vpmaddubsw (nibble x code, pairs summed to i16: at most
// 2 * 15 * 128 = 3840), the 8 words summed in i16 (at most 30720: exact), one vpmaddwd by ones
// leaves the block's exact integer sum of all 8 outputs (q4_0: plus -8 * sum(x), the nibble bias).
// Then one convert, one product d_w * d_x and one fma per 8 outputs; q4_1's m_w * s_x is summed in
// a second pass over the half's (L1-resident) mins, so the 4 x rows' sums fit the 16 registers.
// Same integer sums and float order as the scalar twin, hence its bits. q8_0 has no AVX2 x16
// kernel (its unsigned codes reach 255, past vpmaddubsw's i16 pairs): AVX2 machines keep its row
// layout (x16_repack_enabled).
// Built with the AVX2 flags (CMake glob on *_avx2.cc); only called after a runtime check.
#include <cstdint>
#include <cstring>
#include <vector>

#include "quant/repack.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)

#include <immintrin.h>

#include "quant/repack_kernels.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace fkv::repack_detail {
namespace {

constexpr int64_t kAhead = 32;  // blocks prefetched ahead, as the AVX-512 kernel
constexpr int kMaxX = 4;        // x rows per pass: 8 codes + 4 sums + constants in 16 registers

// Half h (rows 8h..8h+7) of one group against kX x rows (from x row i0).
template <class T, int kX>
void dot_half(const uint8_t* wg, int h, int64_t nb, const uint8_t* xq, size_t xq_stride,
              const XSide& xs, int64_t i0, float* y, int64_t y_stride) {
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[kX];
  for (int i = 0; i < kX; ++i) acc[i] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = wg + b * T::kBlock;
    if (h == 0) {  // the second half finds the group in cache
      const char* ahead = reinterpret_cast<const char*>(blk + kAhead * T::kBlock);
      for (size_t l = 0; l < T::kBlock; l += 64) _mm_prefetch(ahead + l, _MM_HINT_T0);
    }
    const __m256 dw =
        _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 16 * h)));  // [8]
    __m256i code[8];  // word j (elements 4j..4j+3) of the 8 rows, 0..15
    for (int j = 0; j < 4; ++j) {
      const __m256i q =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + T::kCodes + 64 * j + 32 * h));
      code[j] = _mm256_and_si256(q, m4);
      code[j + 4] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
    }
    for (int i = 0; i < kX; ++i) {
      const uint8_t* xb = xq + (i0 + i) * xq_stride + b * T::kXBlock + T::kXCodes;
      __m256i p[8];
      for (int j = 0; j < 8; ++j) {
        p[j] = _mm256_maddubs_epi16(code[j], _mm256_set1_epi32(load_i32(xb + 4 * j)));
      }
      // A tree of i16 sums (exact: |sum| <= 8 * 3840), then pairs to i32.
      const __m256i s16 = _mm256_add_epi16(
          _mm256_add_epi16(_mm256_add_epi16(p[0], p[1]), _mm256_add_epi16(p[2], p[3])),
          _mm256_add_epi16(_mm256_add_epi16(p[4], p[5]), _mm256_add_epi16(p[6], p[7])));
      __m256i sum = _mm256_madd_epi16(s16, ones);
      if constexpr (T::kBias != 0) {  // q4_0: the nibbles' +8, -8 * sum(x)
        sum = _mm256_add_epi32(sum, _mm256_set1_epi32(xs.start[(i0 + i) * nb + b]));
      }
      const __m256 s = _mm256_mul_ps(dw, _mm256_set1_ps(xs.dx[(i0 + i) * nb + b]));
      acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), s, acc[i]);
    }
  }
  if constexpr (T::kHasMin) {
    __m256 msum[kX];
    for (int i = 0; i < kX; ++i) msum[i] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
      const __m256 mw = _mm256_cvtph_ps(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(wg + b * T::kBlock + 32 + 16 * h)));
      for (int i = 0; i < kX; ++i) {
        msum[i] =
            _mm256_add_ps(msum[i], _mm256_mul_ps(mw, _mm256_set1_ps(xs.sx[(i0 + i) * nb + b])));
      }
    }
    for (int i = 0; i < kX; ++i) acc[i] = _mm256_add_ps(acc[i], msum[i]);
  }
  for (int i = 0; i < kX; ++i) _mm256_storeu_ps(y + (i0 + i) * y_stride + 8 * h, acc[i]);
}

template <class T>
void dot_avx2(const uint8_t* w, size_t w_stride, int64_t nr, const uint8_t* xq, size_t xq_stride,
              int64_t nx, int64_t n, float* y, int64_t y_stride) {
  const int64_t nb = n / 32;
  thread_local XSide xs;
  prepare_x<T>(xq, xq_stride, nx, nb, &xs);
  for (int64_t g = 0; g < nr / kRepackRows; ++g) {
    const uint8_t* wg = w + static_cast<size_t>(g * kRepackRows) * w_stride;
    float* yg = y + g * kRepackRows;
    for (int h = 0; h < 2; ++h) {
      int64_t i = 0;
      for (; i + kMaxX <= nx; i += kMaxX) {
        dot_half<T, kMaxX>(wg, h, nb, xq, xq_stride, xs, i, yg, y_stride);
      }
      if (nx - i >= 2) {
        dot_half<T, 2>(wg, h, nb, xq, xq_stride, xs, i, yg, y_stride);
        i += 2;
      }
      if (nx - i >= 1) dot_half<T, 1>(wg, h, nb, xq, xq_stride, xs, i, yg, y_stride);
    }
  }
}

}  // namespace

QDotFn x16_avx2_kernel(DType t) {
  switch (t) {
    case DType::kQ4_0:
      return dot_avx2<Q4_0>;
    case DType::kQ4_1:
      return dot_avx2<Q4_1>;
    default:
      return nullptr;
  }
}

}  // namespace fkv::repack_detail

#else  // no AVX2 in this build

namespace fkv::repack_detail {
QDotFn x16_avx2_kernel(DType) { return nullptr; }
}  // namespace fkv::repack_detail

#endif
