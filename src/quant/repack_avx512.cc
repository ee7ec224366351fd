// The x16 dots with AVX512-VNNI (quant/repack.h): lanes are the 16 rows of a group. Per block, 4
// loads (q4: low and high nibbles) or 8 (q8_0) give the 16 rows' unsigned codes word by word; each
// x row's 4 bytes are broadcast into vpdpbusd, so 8 of them leave the block's exact integer sum of
// all 16 outputs, started at -bias * sum(x) for the signed types. Then one convert, one product
// d_w * d_x and one fma per 16 outputs (q4_1: plus m_w * s_x summed apart): the float order of the
// scalar twin, hence its bits.
// Built with the AVX-512 flags (CMake glob on *_avx512.cc) plus VNNI enabled here; only called
// after a runtime check.
#include <cstdint>
#include <cstring>
#include <vector>

#include "quant/repack.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512vnni"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC target("avx512vnni")
#endif
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#include <immintrin.h>

#include "quant/repack_kernels.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace fkv::repack_detail {
namespace {

constexpr int64_t kAhead = 32;  // blocks prefetched ahead; measured 4 / 8 / 16 / 32: 32 best at 1,
                                // 8 and 16 x rows (docs/KERNELS.md)

// x rows per pass, every type: 8 share one unpacking of the group's codes. For q4_1 the 8 min sums
// then spill a few registers to L1, still 5-9 % faster per x row than two passes of 4 (0.134 vs
// 0.141 ns per weight block and x row, 1536 x 576 in L2).
constexpr int kMaxX = 8;

// One group of 16 rows against kX x rows (from x row i0). Code word j (elements 4j..4j+3) of the
// 16 rows is one vector; x's 4 bytes of word j are broadcast. With few x rows the 8-step vpdpbusd
// chain of each output is split in two (integer sums: the same exact result).
template <class T, int kX>
void dot_group(const uint8_t* wg, int64_t nb, const uint8_t* xq, size_t xq_stride, const XSide& xs,
               int64_t i0, float* y, int64_t y_stride) {
  constexpr bool kSplit = kX < 4;
  const __m512i m4 = _mm512_set1_epi8(0x0f);
  __m512 acc[kX], msum[kX];
  for (int i = 0; i < kX; ++i) {
    acc[i] = _mm512_setzero_ps();
    if constexpr (T::kHasMin) msum[i] = _mm512_setzero_ps();
  }
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = wg + b * T::kBlock;
    // The group is one sequential stream: fetch kAhead blocks ahead.
    const char* ahead = reinterpret_cast<const char*>(blk + kAhead * T::kBlock);
    for (size_t l = 0; l < T::kBlock; l += 64) _mm_prefetch(ahead + l, _MM_HINT_T0);
    const __m512 dw =
        _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk)));  // [16]
    __m512i code[8];  // word j of the 16 rows, unsigned
    for (int j = 0; j < (T::kNibbles ? 4 : 8); ++j) {
      const __m512i q = _mm512_loadu_si512(blk + T::kCodes + 64 * j);
      if constexpr (T::kNibbles) {
        code[j] = _mm512_and_si512(q, m4);
        code[j + 4] = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
      } else {
        code[j] = q;
      }
    }
    __m512i is[kX], is2[kX];
    for (int i = 0; i < kX; ++i) {
      is[i] = _mm512_set1_epi32(xs.start[(i0 + i) * nb + b]);
      if constexpr (kSplit) is2[i] = _mm512_setzero_si512();
    }
    for (int j = 0; j < 8; ++j) {
      for (int i = 0; i < kX; ++i) {
        const uint8_t* xb = xq + (i0 + i) * xq_stride + b * T::kXBlock + T::kXCodes;
        const __m512i xv = _mm512_set1_epi32(load_i32(xb + 4 * j));
        if (kSplit && j >= 4) {
          is2[i] = _mm512_dpbusd_epi32(is2[i], code[j], xv);
        } else {
          is[i] = _mm512_dpbusd_epi32(is[i], code[j], xv);
        }
      }
    }
    __m512 mw;
    if constexpr (T::kHasMin) {
      mw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 32)));
    }
    for (int i = 0; i < kX; ++i) {
      const __m512i sum = kSplit ? _mm512_add_epi32(is[i], is2[i]) : is[i];
      const __m512 s = _mm512_mul_ps(dw, _mm512_set1_ps(xs.dx[(i0 + i) * nb + b]));
      acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), s, acc[i]);
      if constexpr (T::kHasMin) {
        msum[i] =
            _mm512_add_ps(msum[i], _mm512_mul_ps(mw, _mm512_set1_ps(xs.sx[(i0 + i) * nb + b])));
      }
    }
  }
  for (int i = 0; i < kX; ++i) {
    const __m512 out = T::kHasMin ? _mm512_add_ps(acc[i], msum[i]) : acc[i];
    _mm512_storeu_ps(y + (i0 + i) * y_stride, out);
  }
}

template <class T>
void dot_vnni(const uint8_t* w, size_t w_stride, int64_t nr, const uint8_t* xq, size_t xq_stride,
              int64_t nx, int64_t n, float* y, int64_t y_stride) {
  const int64_t nb = n / 32;
  thread_local XSide xs;
  prepare_x<T>(xq, xq_stride, nx, nb, &xs);
  for (int64_t g = 0; g < nr / kRepackRows; ++g) {
    const uint8_t* wg = w + static_cast<size_t>(g * kRepackRows) * w_stride;
    float* yg = y + g * kRepackRows;
    int64_t i = 0;
    for (; i + kMaxX <= nx; i += kMaxX) {
      dot_group<T, kMaxX>(wg, nb, xq, xq_stride, xs, i, yg, y_stride);
    }
    if (nx - i >= 4) {  // then 4, 2, 1
      dot_group<T, 4>(wg, nb, xq, xq_stride, xs, i, yg, y_stride);
      i += 4;
    }
    if (nx - i >= 2) {
      dot_group<T, 2>(wg, nb, xq, xq_stride, xs, i, yg, y_stride);
      i += 2;
    }
    if (nx - i >= 1) dot_group<T, 1>(wg, nb, xq, xq_stride, xs, i, yg, y_stride);
  }
}

}  // namespace

QDotFn x16_vnni_kernel(DType t) {
  switch (t) {
    case DType::kQ4_0:
      return dot_vnni<Q4_0>;
    case DType::kQ4_1:
      return dot_vnni<Q4_1>;
    case DType::kQ8_0:
      return dot_vnni<Q8_0>;
    default:
      return nullptr;
  }
}

}  // namespace fkv::repack_detail

#if defined(__clang__)
#pragma clang attribute pop
#endif

#else  // no AVX-512 in this build

namespace fkv::repack_detail {
QDotFn x16_vnni_kernel(DType) { return nullptr; }
}  // namespace fkv::repack_detail

#endif
