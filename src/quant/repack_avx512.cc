// The x16 dots with AVX512-VNNI (quant/repack.h): lanes are the 16 rows of a group (the k-quant
// kernels, q4_K and q6_K, are at the end). Per block, 4
// loads (q4: low and high nibbles) or 8 (q8_0) give the 16 rows' unsigned codes word by word; each
// x row's 4 bytes are broadcast into vpdpbusd, so 8 of them leave the block's exact integer sum of
// all 16 outputs, started at -bias * sum(x) for the signed types. Then one convert, one product
// d_w * d_x and one fma per 16 outputs (q4_1: plus m_w * s_x summed apart): the float order of the
// scalar twin, hence its bits.
// Built with the AVX-512 flags (CMake glob on *_avx512.cc) plus VNNI enabled here; only called
// after a runtime check.
#include <cstdint>
#include <cstring>
#include <type_traits>
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

// ---- k-quants (q4_K, q6_K): superblocks of 256, sub-block scales per row --------------------

// x rows per pass: the per-x accumulators (integer total, sub-block sums, float acc) of more rows
// would spill.
constexpr int kMaxXK = 4;

// Byte k (0..3) of each dword lane, zero-extended.
inline __m512i byte_of(__m512i v, int k) {
  return _mm512_and_si512(_mm512_srli_epi32(v, 8 * k), _mm512_set1_epi32(0xff));
}

// q4_K (and q5_K, whose codes take a fifth bit from qh), one group of 16 rows against kX x rows:
// per 64-element chunk, 8 code words whose low nibbles are sub-block 2c and high nibbles 2c + 1;
// each sub-block's exact sum times its 6-bit scale (vpmulld) into the superblock total; the mins
// against x's sub-block sums by vpdpwssd. The fifth bit of q5_K's codes: bit `bit` of each qh byte
// moved to bit 4 (0x10).
inline __m512i fifth_bit(__m512i qh, int bit) {
  const __m512i b = bit <= 4 ? _mm512_slli_epi16(qh, 4 - bit) : _mm512_srli_epi16(qh, bit - 4);
  return _mm512_and_si512(b, _mm512_set1_epi8(0x10));
}

template <class T, int kX>
void dot_group_q4k(const uint8_t* wg, int64_t nb, const uint8_t* xq, size_t xq_stride,
                   const XSideK& xs, int64_t i0, float* y, int64_t y_stride) {
  constexpr bool kFive = std::is_same_v<T, Q5_K>;
  const __m512i m4 = _mm512_set1_epi8(0x0f), m6 = _mm512_set1_epi8(0x3f),
                m30 = _mm512_set1_epi8(0x30), words = _mm512_set1_epi32(0x00ff00ff);
  __m512 acc[kX], macc[kX];
  for (int i = 0; i < kX; ++i) acc[i] = macc[i] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = wg + b * T::kBlock;
    const char* ahead = reinterpret_cast<const char*>(blk + 4 * T::kBlock);
    for (size_t l = 0; l < T::kBlock; l += 64) _mm_prefetch(ahead + l, _MM_HINT_T0);
    // The 16 rows' 12 scale bytes, 3 words each: 6-bit scales and mins of sub-blocks 0..3 and
    // 4..7, one byte per sub-block in each lane.
    const __m512i d0 = _mm512_loadu_si512(blk + T::kScales);
    const __m512i d1 = _mm512_loadu_si512(blk + T::kScales + 64);
    const __m512i d2 = _mm512_loadu_si512(blk + T::kScales + 128);
    const __m512i sc_lo = _mm512_and_si512(d0, m6);
    const __m512i mn_lo = _mm512_and_si512(d1, m6);
    const __m512i sc_hi =
        _mm512_or_si512(_mm512_and_si512(d2, m4), _mm512_and_si512(_mm512_srli_epi32(d0, 2), m30));
    const __m512i mn_hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(d2, 4), m4),
                                          _mm512_and_si512(_mm512_srli_epi32(d1, 2), m30));
    __m512i tot[kX];
    for (int i = 0; i < kX; ++i) tot[i] = _mm512_setzero_si512();
    for (int c = 0; c < 4; ++c) {
      __m512i lo_sum[kX], hi_sum[kX];
      for (int i = 0; i < kX; ++i) lo_sum[i] = hi_sum[i] = _mm512_setzero_si512();
      for (int w = 0; w < 8; ++w) {
        const __m512i q = _mm512_loadu_si512(blk + T::kCodes + 64 * (8 * c + w));
        __m512i lo = _mm512_and_si512(q, m4);
        __m512i hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
        if constexpr (kFive) {  // bits 2c and 2c + 1 of qh byte 4w + t
          const __m512i qh = _mm512_loadu_si512(blk + T::kHigh + 64 * w);
          lo = _mm512_or_si512(lo, fifth_bit(qh, 2 * c));
          hi = _mm512_or_si512(hi, fifth_bit(qh, 2 * c + 1));
        }
        for (int i = 0; i < kX; ++i) {
          const uint8_t* xc = xq + (i0 + i) * xq_stride + b * kQ8KBlock + kQ8KCodes + 64 * c;
          lo_sum[i] = _mm512_dpbusd_epi32(lo_sum[i], lo, _mm512_set1_epi32(load_i32(xc + 4 * w)));
          hi_sum[i] =
              _mm512_dpbusd_epi32(hi_sum[i], hi, _mm512_set1_epi32(load_i32(xc + 32 + 4 * w)));
        }
      }
      const int s0 = 2 * c, s1 = 2 * c + 1;
      const __m512i sc0 = byte_of(s0 < 4 ? sc_lo : sc_hi, s0 % 4);
      const __m512i sc1 = byte_of(s1 < 4 ? sc_lo : sc_hi, s1 % 4);
      for (int i = 0; i < kX; ++i) {
        tot[i] = _mm512_add_epi32(tot[i], _mm512_mullo_epi32(lo_sum[i], sc0));
        tot[i] = _mm512_add_epi32(tot[i], _mm512_mullo_epi32(hi_sum[i], sc1));
      }
    }
    // Mins as i16 pairs (m0, m2), (m1, m3), (m4, m6), (m5, m7) against x's paired sums.
    const __m512i ma = _mm512_and_si512(mn_lo, words);
    const __m512i mb = _mm512_and_si512(_mm512_srli_epi32(mn_lo, 8), words);
    const __m512i mc = _mm512_and_si512(mn_hi, words);
    const __m512i md = _mm512_and_si512(_mm512_srli_epi32(mn_hi, 8), words);
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk)));
    const __m512 dmin =
        _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + T::kDmin)));
    for (int i = 0; i < kX; ++i) {
      const int32_t* p = &xs.ints[((i0 + i) * nb + b) * 4];
      __m512i ms = _mm512_dpwssd_epi32(_mm512_setzero_si512(), ma, _mm512_set1_epi32(p[0]));
      ms = _mm512_dpwssd_epi32(ms, mb, _mm512_set1_epi32(p[1]));
      ms = _mm512_dpwssd_epi32(ms, mc, _mm512_set1_epi32(p[2]));
      ms = _mm512_dpwssd_epi32(ms, md, _mm512_set1_epi32(p[3]));
      const __m512 dx = _mm512_set1_ps(xs.dx[(i0 + i) * nb + b]);
      acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(tot[i]), _mm512_mul_ps(dw, dx), acc[i]);
      macc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ms), _mm512_mul_ps(dmin, dx), macc[i]);
    }
  }
  for (int i = 0; i < kX; ++i) {
    _mm512_storeu_ps(y + (i0 + i) * y_stride, _mm512_sub_ps(acc[i], macc[i]));
  }
}

// q6_K, one group of 16 rows against kX x rows: the 6-bit codes (code + 32, unsigned) assembled
// word by word from ql's nibbles and qh's bit pairs; each 16-element sub-block's sum starts at
// -32 * sum(x) and is scaled by its signed 8-bit scale (vpmulld) into the superblock total.
// Scaling: vpmulld is 2 uops on vpdpbusd's port; a sub-block's |sum| <= 16 * 32 * 128 = 2^16 and
// |scale| <= 128, so two sub-blocks' scaled sums are at most 2^24 and exact in f32: converted,
// scaled by mul + fma and converted back per pair, the i32 total is the scalar twin's.
// Word u of half h holds, per row, 4 elements of each of the four 32-element quarters k: the
// low / high nibbles of ql words (16 h + u) and (16 h + 8 + u) and the 2-bit pairs of qh word
// (8 h + u). All four quarters are unpacked from one load of each word (compile-time k, so no
// branch or spilled pointer is left in the loop).
template <int kX>
void dot_group_q6k(const uint8_t* wg, int64_t nb, const uint8_t* xq, size_t xq_stride,
                   const XSideK& xs, int64_t i0, float* y, int64_t y_stride) {
  const __m512i m4 = _mm512_set1_epi8(0x0f), m30 = _mm512_set1_epi8(0x30);
  __m512 acc[kX];
  for (int i = 0; i < kX; ++i) acc[i] = _mm512_setzero_ps();
  const uint8_t* xrow[kX];
  for (int i = 0; i < kX; ++i) xrow[i] = xq + (i0 + i) * xq_stride + kQ8KCodes;
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = wg + b * Q6_K::kBlock;
    const char* ahead = reinterpret_cast<const char*>(blk + 4 * Q6_K::kBlock);
    for (size_t l = 0; l < Q6_K::kBlock; l += 64) _mm_prefetch(ahead + l, _MM_HINT_T0);
    __m512i tot[kX];
    for (int i = 0; i < kX; ++i) tot[i] = _mm512_setzero_si512();
    const int32_t* start[kX];  // -32 * x sum of each of the 16 sub-blocks
    for (int i = 0; i < kX; ++i) start[i] = &xs.ints[((i0 + i) * nb + b) * 16];
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
#pragma GCC unroll 2
      for (int v = 0; v < 2; ++v) {
        __m512i sum[kX][4];  // quarter k's sub-block 8 h + 2 k + v
        for (int i = 0; i < kX; ++i) {
          for (int k = 0; k < 4; ++k) sum[i][k] = _mm512_set1_epi32(start[i][8 * h + 2 * k + v]);
        }
#pragma GCC unroll 4
        for (int u = 4 * v; u < 4 * v + 4; ++u) {
          const __m512i qa = _mm512_loadu_si512(blk + Q6_K::kLow + 64 * (16 * h + u));
          const __m512i qb = _mm512_loadu_si512(blk + Q6_K::kLow + 64 * (16 * h + 8 + u));
          const __m512i qh = _mm512_loadu_si512(blk + Q6_K::kHigh + 64 * (8 * h + u));
          const __m512i code[4] = {
              _mm512_or_si512(_mm512_and_si512(qa, m4),
                              _mm512_and_si512(_mm512_slli_epi16(qh, 4), m30)),
              _mm512_or_si512(_mm512_and_si512(qb, m4),
                              _mm512_and_si512(_mm512_slli_epi16(qh, 2), m30)),
              _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(qa, 4), m4),
                              _mm512_and_si512(qh, m30)),
              _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(qb, 4), m4),
                              _mm512_and_si512(_mm512_srli_epi16(qh, 2), m30))};
          for (int i = 0; i < kX; ++i) {
            const uint8_t* xc = xrow[i] + b * kQ8KBlock + 128 * h + 4 * u;
            for (int k = 0; k < 4; ++k) {
              sum[i][k] =
                  _mm512_dpbusd_epi32(sum[i][k], code[k], _mm512_set1_epi32(load_i32(xc + 32 * k)));
            }
          }
        }
        // Signed scale byte j = 8 h + 2 k + v of each row. Quarters k and k + 1 scaled in f32 (see
        // above: exact), back to i32, added.
        __m512 fsc[4];
        for (int k = 0; k < 4; ++k) {
          const int j = 8 * h + 2 * k + v;
          const __m512i sv = _mm512_loadu_si512(blk + Q6_K::kScales + 64 * (j / 4));
          fsc[k] =
              _mm512_cvtepi32_ps(_mm512_srai_epi32(_mm512_slli_epi32(sv, 24 - 8 * (j % 4)), 24));
        }
        for (int i = 0; i < kX; ++i) {
          for (int k = 0; k < 4; k += 2) {
            const __m512 pair =
                _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum[i][k + 1]), fsc[k + 1],
                                _mm512_mul_ps(_mm512_cvtepi32_ps(sum[i][k]), fsc[k]));
            tot[i] = _mm512_add_epi32(tot[i], _mm512_cvtps_epi32(pair));
          }
        }
      }
    }
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk)));
    for (int i = 0; i < kX; ++i) {
      const __m512 dx = _mm512_set1_ps(xs.dx[(i0 + i) * nb + b]);
      acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(tot[i]), _mm512_mul_ps(dw, dx), acc[i]);
    }
  }
  for (int i = 0; i < kX; ++i) _mm512_storeu_ps(y + (i0 + i) * y_stride, acc[i]);
}

template <class T>
void dot_vnni_k(const uint8_t* w, size_t w_stride, int64_t nr, const uint8_t* xq, size_t xq_stride,
                int64_t nx, int64_t n, float* y, int64_t y_stride) {
  const int64_t nb = n / 256;
  thread_local XSideK xs;
  prepare_x_k<T>(xq, xq_stride, nx, nb, &xs);
  for (int64_t g = 0; g < nr / kRepackRows; ++g) {
    const uint8_t* wg = w + static_cast<size_t>(g * kRepackRows) * w_stride;
    float* yg = y + g * kRepackRows;
    int64_t i = 0;
    auto run = [&](auto x_rows) {
      constexpr int kX = decltype(x_rows)::value;
      if constexpr (!std::is_same_v<T, Q6_K>) {
        dot_group_q4k<T, kX>(wg, nb, xq, xq_stride, xs, i, yg, y_stride);
      } else {
        dot_group_q6k<kX>(wg, nb, xq, xq_stride, xs, i, yg, y_stride);
      }
      i += kX;
    };
    while (nx - i >= kMaxXK) run(std::integral_constant<int, kMaxXK>{});
    if (nx - i >= 2) run(std::integral_constant<int, 2>{});
    if (nx - i >= 1) run(std::integral_constant<int, 1>{});
  }
}

}  // namespace

int64_t vnni_peak_loop(int64_t iters) {
  // 16 independent vpdpbusd chains (more than latency x issue width), 64 MACs each per step.
  __m512i acc[16];
  for (int k = 0; k < 16; ++k) acc[k] = _mm512_set1_epi32(k);
  const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
  for (int64_t it = 0; it < iters; ++it) {
    for (int k = 0; k < 16; ++k) acc[k] = _mm512_dpbusd_epi32(acc[k], a, b);
    __asm__ volatile("" : "+v"(acc[0]), "+v"(acc[1]), "+v"(acc[2]), "+v"(acc[3]));
  }
  // The sums wrap by design; they are only kept observable (summed as unsigned: no overflow).
  __m512i sum = acc[0];
  for (int k = 1; k < 16; ++k) sum = _mm512_add_epi32(sum, acc[k]);
  uint32_t lanes[16];
  _mm512_storeu_si512(lanes, sum);
  uint32_t total = 0;
  for (uint32_t v : lanes) total += v;
  return total == 42u ? 0 : iters * 16 * 64;
}

QDotFn x16_vnni_kernel(DType t) {
  switch (t) {
    case DType::kQ4_0:
      return dot_vnni<Q4_0>;
    case DType::kQ4_1:
      return dot_vnni<Q4_1>;
    case DType::kQ8_0:
      return dot_vnni<Q8_0>;
    case DType::kQ4_K:
      return dot_vnni_k<Q4_K>;
    case DType::kQ5_K:
      return dot_vnni_k<Q5_K>;
    case DType::kQ6_K:
      return dot_vnni_k<Q6_K>;
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
int64_t vnni_peak_loop(int64_t) { return 0; }
}  // namespace fkv::repack_detail

#endif
