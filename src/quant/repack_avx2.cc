// The x16 dots with AVX2 and no VNNI (quant/repack.h), for q4_0, q4_1, q4_K and q6_K (the k-quant
// kernels are at the end): a group's 16 rows as two
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
#include <type_traits>
#include <vector>

#include "quant/repack.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)

// GCC cannot see that the per-x-row sum arrays are written before they are read in every
// unrolled path (as in repack_avx512.cc).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
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

// ---- k-quants (q4_K, q6_K), half a group (8 rows) at a time -----------------------------------

// x rows per pass: each needs two i16 sums, the integer total and the float sums in registers.
constexpr int kMaxXK = 2;

// Byte k (0..3) of each dword lane, zero-extended, copied into both i16 halves of the lane: the
// lane's scale for vpmaddwd against a sub-block's two i16 partial sums.
inline __m256i byte_pair(__m256i v, int k) {
  const __m256i b = _mm256_and_si256(_mm256_srli_epi32(v, 8 * k), _mm256_set1_epi32(0xff));
  return _mm256_or_si256(b, _mm256_slli_epi32(b, 16));
}

// q4_K, half h (rows 8h..8h+7) against kX x rows: per sub-block of 32, vpmaddubsw of nibbles by x
// (pairs <= 2 * 15 * 127), the 8 words summed in i16 (<= 30480: exact), one vpmaddwd by the
// lane's 6-bit scale in both halves: the sub-block's scaled sum in i32. Mins by vpmaddwd against
// x's paired sub-block sums. Then the scalar twin's float steps.
// The fifth bit of q5_K's codes: bit `bit` of each qh byte moved to bit 4 (0x10).
inline __m256i fifth_bit(__m256i qh, int bit) {
  const __m256i b = bit <= 4 ? _mm256_slli_epi16(qh, 4 - bit) : _mm256_srli_epi16(qh, bit - 4);
  return _mm256_and_si256(b, _mm256_set1_epi8(0x10));
}

template <class T, int kX>
void dot_half_q4k(const uint8_t* wg, int h, int64_t nb, const uint8_t* xq, size_t xq_stride,
                  const XSideK& xs, int64_t i0, float* y, int64_t y_stride) {
  // q5_K's codes reach 31: 8 words of pairs would pass i16 (8 * 7874), so its sums are scaled
  // and widened every 4 words (<= 31496); q4_K's every 8 (<= 30480).
  constexpr bool kFive = std::is_same_v<T, Q5_K>;
  constexpr int kWordsPerSum = kFive ? 4 : 8;
  const __m256i m4 = _mm256_set1_epi8(0x0f), m6 = _mm256_set1_epi8(0x3f),
                m30 = _mm256_set1_epi8(0x30), words = _mm256_set1_epi32(0x00ff00ff);
  __m256 acc[kX], macc[kX];
  for (int i = 0; i < kX; ++i) acc[i] = macc[i] = _mm256_setzero_ps();
  auto load = [&](const uint8_t* p) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32 * h));
  };
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = wg + b * T::kBlock;
    if (h == 0) {  // the second half finds the group in cache
      const char* ahead = reinterpret_cast<const char*>(blk + 4 * T::kBlock);
      for (size_t l = 0; l < T::kBlock; l += 64) _mm_prefetch(ahead + l, _MM_HINT_T0);
    }
    const __m256i d0 = load(blk + T::kScales), d1 = load(blk + T::kScales + 64),
                  d2 = load(blk + T::kScales + 128);
    const __m256i sc_lo = _mm256_and_si256(d0, m6);
    const __m256i sc_hi =
        _mm256_or_si256(_mm256_and_si256(d2, m4), _mm256_and_si256(_mm256_srli_epi32(d0, 2), m30));
    __m256i tot[kX];
    for (int i = 0; i < kX; ++i) tot[i] = _mm256_setzero_si256();
    for (int c = 0; c < 4; ++c) {
      const int s0 = 2 * c, s1 = 2 * c + 1;
      const __m256i sc0 = byte_pair(s0 < 4 ? sc_lo : sc_hi, s0 % 4);
      const __m256i sc1 = byte_pair(s1 < 4 ? sc_lo : sc_hi, s1 % 4);
      __m256i lo_sum[kX], hi_sum[kX];
      for (int w = 0; w < 8; ++w) {
        if (w % kWordsPerSum == 0) {
          for (int i = 0; i < kX; ++i) lo_sum[i] = hi_sum[i] = _mm256_setzero_si256();
        }
        const __m256i q = load(blk + T::kCodes + 64 * (8 * c + w));
        __m256i lo = _mm256_and_si256(q, m4);
        __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
        if constexpr (kFive) {  // bits 2c and 2c + 1 of qh byte 4w + t
          const __m256i qh = load(blk + T::kHigh + 64 * w);
          lo = _mm256_or_si256(lo, fifth_bit(qh, 2 * c));
          hi = _mm256_or_si256(hi, fifth_bit(qh, 2 * c + 1));
        }
        for (int i = 0; i < kX; ++i) {
          const uint8_t* xc = xq + (i0 + i) * xq_stride + b * kQ8KBlock + kQ8KCodes + 64 * c;
          lo_sum[i] = _mm256_add_epi16(
              lo_sum[i], _mm256_maddubs_epi16(lo, _mm256_set1_epi32(load_i32(xc + 4 * w))));
          hi_sum[i] = _mm256_add_epi16(
              hi_sum[i], _mm256_maddubs_epi16(hi, _mm256_set1_epi32(load_i32(xc + 32 + 4 * w))));
        }
        if (w % kWordsPerSum == kWordsPerSum - 1) {
          for (int i = 0; i < kX; ++i) {
            tot[i] = _mm256_add_epi32(tot[i], _mm256_madd_epi16(lo_sum[i], sc0));
            tot[i] = _mm256_add_epi32(tot[i], _mm256_madd_epi16(hi_sum[i], sc1));
          }
        }
      }
    }
    const __m256i mn_lo = _mm256_and_si256(d1, m6);
    const __m256i mn_hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(d2, 4), m4),
                                          _mm256_and_si256(_mm256_srli_epi32(d1, 2), m30));
    const __m256i ma = _mm256_and_si256(mn_lo, words);
    const __m256i mb = _mm256_and_si256(_mm256_srli_epi32(mn_lo, 8), words);
    const __m256i mc = _mm256_and_si256(mn_hi, words);
    const __m256i md = _mm256_and_si256(_mm256_srli_epi32(mn_hi, 8), words);
    const __m256 dw =
        _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 16 * h)));
    const __m256 dmin =
        _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + T::kDmin + 16 * h)));
    for (int i = 0; i < kX; ++i) {
      const int32_t* p = &xs.ints[((i0 + i) * nb + b) * 4];
      const __m256i ms =
          _mm256_add_epi32(_mm256_add_epi32(_mm256_madd_epi16(ma, _mm256_set1_epi32(p[0])),
                                            _mm256_madd_epi16(mb, _mm256_set1_epi32(p[1]))),
                           _mm256_add_epi32(_mm256_madd_epi16(mc, _mm256_set1_epi32(p[2])),
                                            _mm256_madd_epi16(md, _mm256_set1_epi32(p[3]))));
      const __m256 dx = _mm256_set1_ps(xs.dx[(i0 + i) * nb + b]);
      acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(tot[i]), _mm256_mul_ps(dw, dx), acc[i]);
      macc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ms), _mm256_mul_ps(dmin, dx), macc[i]);
    }
  }
  for (int i = 0; i < kX; ++i) {
    _mm256_storeu_ps(y + (i0 + i) * y_stride + 8 * h, _mm256_sub_ps(acc[i], macc[i]));
  }
}

// q6_K, half h against kX x rows: 6-bit codes (code + 32) from ql's nibbles and qh's bit pairs;
// per sub-block of 16, two pairs of vpmaddubsw summed in i16 (<= 2 * 2 * 63 * 127 = 32004: exact),
// each by vpmaddwd with the lane's signed scale in both halves. The codes' +32 comes off as
// -32 * sum_j sc_j * (x sum of j), by vpmaddwd of the sign-extended scale pairs against x's
// sub-block sums. Same integer total as the scalar twin, then its float steps.
template <int kX>
void dot_half_q6k(const uint8_t* wg, int h, int64_t nb, const uint8_t* xq, size_t xq_stride,
                  const XSideK& xs, int64_t i0, float* y, int64_t y_stride) {
  const __m256i m4 = _mm256_set1_epi8(0x0f), m30 = _mm256_set1_epi8(0x30);
  __m256 acc[kX];
  for (int i = 0; i < kX; ++i) acc[i] = _mm256_setzero_ps();
  auto load = [&](const uint8_t* p) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32 * h));
  };
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = wg + b * Q6_K::kBlock;
    if (h == 0) {
      const char* ahead = reinterpret_cast<const char*>(blk + 4 * Q6_K::kBlock);
      for (size_t l = 0; l < Q6_K::kBlock; l += 64) _mm_prefetch(ahead + l, _MM_HINT_T0);
    }
    __m256i tot[kX];
    for (int i = 0; i < kX; ++i) tot[i] = _mm256_setzero_si256();
      // Every loop index a compile-time constant (the k switch below resolves statically, no
      // branch or spilled pointer in the loop).
#pragma GCC unroll 2
    for (int hh = 0; hh < 2; ++hh) {
#pragma GCC unroll 4
      for (int k = 0; k < 4; ++k) {
#pragma GCC unroll 2
        for (int v = 0; v < 2; ++v) {
          const int j = 8 * hh + 2 * k + v;  // sub-block
          __m256i pair0[kX], pair1[kX];
#pragma GCC unroll 4
          for (int u = 4 * v; u < 4 * v + 4; ++u) {
            const __m256i ql = load(blk + Q6_K::kLow + 64 * (16 * hh + 8 * (k % 2) + u));
            const __m256i qh = load(blk + Q6_K::kHigh + 64 * (8 * hh + u));
            const __m256i low =
                k < 2 ? _mm256_and_si256(ql, m4) : _mm256_and_si256(_mm256_srli_epi16(ql, 4), m4);
            const __m256i high = k == 0   ? _mm256_slli_epi16(qh, 4)
                                 : k == 1 ? _mm256_slli_epi16(qh, 2)
                                 : k == 2 ? qh
                                          : _mm256_srli_epi16(qh, 2);
            const __m256i code = _mm256_or_si256(low, _mm256_and_si256(high, m30));
            for (int i = 0; i < kX; ++i) {
              const uint8_t* xc =
                  xq + (i0 + i) * xq_stride + b * kQ8KBlock + kQ8KCodes + 128 * hh + 32 * k + 4 * u;
              const __m256i p = _mm256_maddubs_epi16(code, _mm256_set1_epi32(load_i32(xc)));
              if (u % 4 == 0) {
                pair0[i] = p;
              } else if (u % 4 == 1) {
                pair0[i] = _mm256_add_epi16(pair0[i], p);
              } else if (u % 4 == 2) {
                pair1[i] = p;
              } else {
                pair1[i] = _mm256_add_epi16(pair1[i], p);
              }
            }
          }
          const __m256i sv = load(blk + Q6_K::kScales + 64 * (j / 4));
          const __m256i s32 = _mm256_srai_epi32(_mm256_slli_epi32(sv, 24 - 8 * (j % 4)), 24);
          const __m256i sc = _mm256_or_si256(_mm256_and_si256(s32, _mm256_set1_epi32(0xffff)),
                                             _mm256_slli_epi32(s32, 16));
          for (int i = 0; i < kX; ++i) {
            tot[i] = _mm256_add_epi32(tot[i], _mm256_add_epi32(_mm256_madd_epi16(pair0[i], sc),
                                                               _mm256_madd_epi16(pair1[i], sc)));
          }
        }
      }
    }
    // -32 * sum_j sc_j * bs_j: scale words (s_4k, s_4k+2) and (s_4k+1, s_4k+3), sign-extended.
    for (int i = 0; i < kX; ++i) {
      const uint8_t* xb = xq + (i0 + i) * xq_stride + b * kQ8KBlock;
      int16_t bs[16];
      std::memcpy(bs, xb + kQ8KSums, sizeof(bs));
      __m256i off = _mm256_setzero_si256();
      for (int k = 0; k < 4; ++k) {
        const __m256i sv = load(blk + Q6_K::kScales + 64 * k);
        const __m256i even = _mm256_srai_epi16(_mm256_slli_epi16(sv, 8), 8);
        const __m256i odd = _mm256_srai_epi16(sv, 8);
        auto pair = [](int16_t lo, int16_t hi) {
          return _mm256_set1_epi32(
              static_cast<int32_t>(static_cast<uint16_t>(lo)) |
              static_cast<int32_t>(static_cast<uint32_t>(static_cast<uint16_t>(hi)) << 16));
        };
        off = _mm256_add_epi32(off, _mm256_madd_epi16(even, pair(bs[4 * k], bs[4 * k + 2])));
        off = _mm256_add_epi32(off, _mm256_madd_epi16(odd, pair(bs[4 * k + 1], bs[4 * k + 3])));
      }
      tot[i] = _mm256_sub_epi32(tot[i], _mm256_slli_epi32(off, 5));
    }
    const __m256 dw =
        _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 16 * h)));
    for (int i = 0; i < kX; ++i) {
      const __m256 dx = _mm256_set1_ps(xs.dx[(i0 + i) * nb + b]);
      acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(tot[i]), _mm256_mul_ps(dw, dx), acc[i]);
    }
  }
  for (int i = 0; i < kX; ++i) _mm256_storeu_ps(y + (i0 + i) * y_stride + 8 * h, acc[i]);
}

template <class T>
void dot_avx2_k(const uint8_t* w, size_t w_stride, int64_t nr, const uint8_t* xq, size_t xq_stride,
                int64_t nx, int64_t n, float* y, int64_t y_stride) {
  const int64_t nb = n / 256;
  thread_local XSideK xs;
  prepare_x_k<T>(xq, xq_stride, nx, nb, &xs);
  for (int64_t g = 0; g < nr / kRepackRows; ++g) {
    const uint8_t* wg = w + static_cast<size_t>(g * kRepackRows) * w_stride;
    float* yg = y + g * kRepackRows;
    for (int h = 0; h < 2; ++h) {
      int64_t i = 0;
      auto run = [&](auto x_rows) {
        constexpr int kX = decltype(x_rows)::value;
        if constexpr (!std::is_same_v<T, Q6_K>) {
          dot_half_q4k<T, kX>(wg, h, nb, xq, xq_stride, xs, i, yg, y_stride);
        } else {
          dot_half_q6k<kX>(wg, h, nb, xq, xq_stride, xs, i, yg, y_stride);
        }
        i += kX;
      };
      while (nx - i >= kMaxXK) run(std::integral_constant<int, kMaxXK>{});
      if (nx - i >= 1) run(std::integral_constant<int, 1>{});
    }
  }
}

}  // namespace

int64_t avx2_peak_loop(int64_t iters) {
  // The AVX2 kernels' inner step: vpmaddubsw (32 MACs into i16 pairs) + vpaddw, in 8 chains.
  __m256i acc[8];
  for (int k = 0; k < 8; ++k) acc[k] = _mm256_set1_epi16(static_cast<int16_t>(k));
  const __m256i a = _mm256_set1_epi8(3), b = _mm256_set1_epi8(-2);
  for (int64_t it = 0; it < iters; ++it) {
    for (int k = 0; k < 8; ++k) acc[k] = _mm256_add_epi16(acc[k], _mm256_maddubs_epi16(a, b));
    __asm__ volatile("" : "+x"(acc[0]), "+x"(acc[1]), "+x"(acc[2]), "+x"(acc[3]));
  }
  __m256i sum = acc[0];
  for (int k = 1; k < 8; ++k) sum = _mm256_add_epi16(sum, acc[k]);
  return _mm256_extract_epi16(sum, 0) == 42 ? 0 : iters * 8 * 32;
}

QDotFn x16_avx2_kernel(DType t) {
  switch (t) {
    case DType::kQ4_0:
      return dot_avx2<Q4_0>;
    case DType::kQ4_1:
      return dot_avx2<Q4_1>;
    case DType::kQ4_K:
      return dot_avx2_k<Q4_K>;
    case DType::kQ5_K:
      return dot_avx2_k<Q5_K>;
    case DType::kQ6_K:
      return dot_avx2_k<Q6_K>;
    default:
      return nullptr;
  }
}

}  // namespace fkv::repack_detail

#else  // no AVX2 in this build

namespace fkv::repack_detail {
QDotFn x16_avx2_kernel(DType) { return nullptr; }
int64_t avx2_peak_loop(int64_t) { return 0; }
}  // namespace fkv::repack_detail

#endif
