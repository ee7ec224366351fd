// AVX2 block dot products with ggml's AVX2 float structure: per block, the 32 code products are
// summed exactly into 8 i32 lanes (lane k = elements 4k..4k+3), converted to f32 (exact: |lane|
// < 2^24) and fused into an 8-lane accumulator as acc = fma(d_w * d_x, lanes, acc); the q*_1 min
// terms m_w * s_x are summed as scalars in block order; the result is hsum(acc) (+ min sum).
// Several weight rows and activation rows share each decoded block; every output element still
// sees the same operations in the same order, so results do not depend on the batching.
// Built with -mavx2 -mfma -mf16c (CMake glob on *_avx2.cc); only called after a runtime check.
// quant_dot_avx512.cc includes this file with FKV_QDOT_VNNI defined: the same kernels with the
// lane sums done by one AVX512-VNNI vpdpbusd (the same exact i32 lanes, hence the same bits).
// Contraction is off so the scalar min sums stay plain mul + add, the same in every instantiation.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "quant/quant_dot.h"

#if defined(FKV_QDOT_VNNI)
#define FKV_QDOT_KERNEL avx512_kernel
#define FKV_QDOT_COMPILED avx512_compiled
#if defined(__AVX512VL__)  // VNNI itself is switched on by quant_dot_avx512.cc's target pragma
#define FKV_QDOT_HAVE_ISA 1
#else
#define FKV_QDOT_HAVE_ISA 0
#endif
#else
#define FKV_QDOT_KERNEL avx2_kernel
#define FKV_QDOT_COMPILED avx2_compiled
#define FKV_QDOT_HAVE_ISA 1
#endif

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__) && \
    FKV_QDOT_HAVE_ISA

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <utility>

namespace fkv::qdot_detail {
namespace {

inline float load_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

inline __m256i load32(const uint8_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

// 16 bytes of packed nibbles -> 32 bytes: low nibbles in bytes 0..15, high nibbles in 16..31.
inline __m256i nibbles32(const uint8_t* p) {
  const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m256i both = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0f));
}

// Byte j = 0xff when bit j of `bits` is set, else 0.
inline __m256i bits32(uint32_t bits) {
  const __m256i shuf = _mm256_setr_epi64x(0x0000000000000000, 0x0101010101010101,
                                          0x0202020202020202, 0x0303030303030303);
  __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(bits)), shuf);
  const __m256i sel = _mm256_set1_epi64x(static_cast<long long>(0x7fbfdfeff7fbfdfeULL));
  v = _mm256_or_si256(v, sel);
  return _mm256_cmpeq_epi8(v, _mm256_set1_epi8(-1));
}

// Exact per-lane i32 sums of u8 x i8 products, 4 elements per lane (no i16 saturation for the
// magnitudes used here: u8 <= 31 or, through the sign trick, |i8| <= 128 with |y| <= 127).
inline __m256 sum_u8i8(__m256i u, __m256i s) {
#if defined(FKV_QDOT_VNNI)
  return _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s));
#else
  const __m256i p16 = _mm256_maddubs_epi16(u, s);
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
#endif
}
// Signed x signed through |x| and sign(y, x).
inline __m256 sum_i8i8(__m256i x, __m256i y) {
  return sum_u8i8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
}

// ggml's hsum_float_8: (hi + lo), then pairs, then the last two.
inline float hsum8(__m256 v) {
  __m128 r = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
  r = _mm_add_ps(r, _mm_movehl_ps(r, r));
  r = _mm_add_ss(r, _mm_movehdup_ps(r));
  return _mm_cvtss_f32(r);
}

// Per-type block decoding. Each provides: kWBytes, kXBytes (activation block), kHasMin,
//   decode(w) -> weight codes as a __m256i (u8 when kUnsigned, else i8),
//   and the byte offsets of the scales.
struct Q4_0 {
  static constexpr int kWBytes = 18, kXBytes = 34, kXqOff = 2;
  static constexpr bool kHasMin = false, kUnsigned = false;
  static constexpr int kBias = 8;  // ucodes - kBias == codes
  static __m256i ucodes(const uint8_t* w) { return nibbles32(w + 2); }
  static __m256i codes(const uint8_t* w) {
    return _mm256_sub_epi8(ucodes(w), _mm256_set1_epi8(kBias));
  }
};
struct Q4_1 {
  static constexpr int kWBytes = 20, kXBytes = 36, kXqOff = 4;
  static constexpr bool kHasMin = true, kUnsigned = true;
  static constexpr int kBias = 0;
  static __m256i codes(const uint8_t* w) { return nibbles32(w + 4); }
  static __m256i ucodes(const uint8_t* w) { return codes(w); }
};
struct Q5_0 {
  static constexpr int kWBytes = 22, kXBytes = 34, kXqOff = 2;
  static constexpr bool kHasMin = false, kUnsigned = false;
  static constexpr int kBias = 16;
  static __m256i ucodes(const uint8_t* w) {  // nibble | bit << 4
    uint32_t qh;
    std::memcpy(&qh, w + 2, 4);
    return _mm256_or_si256(nibbles32(w + 6), _mm256_and_si256(bits32(qh), _mm256_set1_epi8(0x10)));
  }
  static __m256i codes(const uint8_t* w) {
    uint32_t qh;
    std::memcpy(&qh, w + 2, 4);
    // (nibble | bit << 4) - 16 == nibble | 0xf0 where the bit is clear (as i8).
    const __m256i hi = _mm256_andnot_si256(bits32(qh), _mm256_set1_epi8(static_cast<char>(0xf0)));
    return _mm256_or_si256(nibbles32(w + 6), hi);
  }
};
struct Q5_1 {
  static constexpr int kWBytes = 24, kXBytes = 36, kXqOff = 4;
  static constexpr bool kHasMin = true, kUnsigned = true;
  static constexpr int kBias = 0;
  static __m256i ucodes(const uint8_t* w) { return codes(w); }
  static __m256i codes(const uint8_t* w) {
    uint32_t qh;
    std::memcpy(&qh, w + 4, 4);
    const __m256i hi = _mm256_and_si256(bits32(qh), _mm256_set1_epi8(0x10));
    return _mm256_or_si256(nibbles32(w + 8), hi);
  }
};
struct Q8_0 {
  static constexpr int kWBytes = 34, kXBytes = 34, kXqOff = 2;
  static constexpr bool kHasMin = false, kUnsigned = false;
  static constexpr int kBias = 128;
  static __m256i codes(const uint8_t* w) { return load32(w + 2); }
  static __m256i ucodes(const uint8_t* w) {  // c + 128
    return _mm256_xor_si256(codes(w), _mm256_set1_epi8(static_cast<char>(0x80)));
  }
};

// Decode reads each weight row once, kR rows at a time. Interleaved rows are short strided
// streams the hardware prefetchers do not follow (4 rows from DRAM ran 3.5x slower than from L2
// on Zen 5), so the kernels prefetch the next group of rows (adjacent in memory) line by line
// in address order, spread over the nb block steps of the current group.
inline void prefetch_next_rows(const uint8_t* next, int64_t lines, int64_t b, int64_t nb) {
  const char* p = reinterpret_cast<const char*>(next);
  for (int64_t l = b * lines / nb; l < (b + 1) * lines / nb; ++l) {
    _mm_prefetch(p + 64 * l, _MM_HINT_T0);
  }
}

// kR weight rows against kN activation rows: each weight block is decoded once for the kN x rows,
// each x block loaded once for the kR weight rows; every (row, x row) pair has its own
// accumulators, updated by the same operations in the same order whatever kR and kN are.
template <class T, int kR, int kN>
void dot_tile(const uint8_t* w, size_t w_stride, const uint8_t* xq, size_t xq_stride, int64_t nb,
              float* y, int64_t y_stride) {
  __m256 acc[kR][kN];
  float summs[kR][kN];
  for (int r = 0; r < kR; ++r) {
    for (int i = 0; i < kN; ++i) {
      acc[r][i] = _mm256_setzero_ps();
      summs[r][i] = 0.0f;
    }
  }
  const int64_t lines = (kR * static_cast<int64_t>(w_stride) + 63) / 64;
  for (int64_t b = 0; b < nb; ++b) {
    if constexpr (kN == 1 && kR > 1) prefetch_next_rows(w + kR * w_stride, lines, b, nb);
    const size_t woff = static_cast<size_t>(b) * T::kWBytes;
    const size_t xoff = static_cast<size_t>(b) * T::kXBytes;
    __m256i qw[kR], uw[kR];
    __m256 dw[kR];
    float mw[kR];
    for (int r = 0; r < kR; ++r) {
      const uint8_t* wb = w + r * w_stride + woff;
      dw[r] = _mm256_set1_ps(load_f16(wb));
      if constexpr (T::kHasMin) mw[r] = load_f16(wb + 2);
      qw[r] = T::codes(wb);
      uw[r] = T::kUnsigned ? qw[r] : _mm256_sign_epi8(qw[r], qw[r]);
    }
    for (int i = 0; i < kN; ++i) {
      const uint8_t* xb = xq + i * xq_stride + xoff;
      const __m256 dx = _mm256_set1_ps(load_f16(xb));
      const __m256i qx = load32(xb + T::kXqOff);
      float sx = 0.0f;
      if constexpr (T::kHasMin) sx = load_f16(xb + 2);
      for (int r = 0; r < kR; ++r) {
        if constexpr (T::kHasMin) summs[r][i] += mw[r] * sx;
        const __m256 lanes =
            T::kUnsigned ? sum_u8i8(uw[r], qx) : sum_u8i8(uw[r], _mm256_sign_epi8(qx, qw[r]));
        acc[r][i] = _mm256_fmadd_ps(_mm256_mul_ps(dw[r], dx), lanes, acc[r][i]);
      }
    }
  }
  for (int r = 0; r < kR; ++r) {
    for (int i = 0; i < kN; ++i) {
      y[i * y_stride + r] = T::kHasMin ? hsum8(acc[r][i]) + summs[r][i] : hsum8(acc[r][i]);
    }
  }
}

// Rows [0, nr) in groups of kR against x rows [0, nx) in groups of kN, remainders by smaller tiles.
template <class T, int kR, int kN>
void tile_x(const uint8_t* w, size_t w_stride, const uint8_t* xq, size_t xq_stride, int64_t nx,
            int64_t nb, float* y, int64_t y_stride) {
  int64_t i = 0;
  for (; i + kN <= nx; i += kN) {
    dot_tile<T, kR, kN>(w, w_stride, xq + i * xq_stride, xq_stride, nb, y + i * y_stride, y_stride);
  }
  if constexpr (kN > 1) {
    if (i < nx) {
      tile_x<T, kR, kN - 1>(w, w_stride, xq + i * xq_stride, xq_stride, nx - i, nb,
                            y + i * y_stride, y_stride);
    }
  }
}

template <class T, int kR, int kN>
void tile_rows(const uint8_t* w, size_t w_stride, int64_t nr, const uint8_t* xq, size_t xq_stride,
               int64_t nx, int64_t nb, float* y, int64_t y_stride) {
  int64_t r = 0;
  for (; r + kR <= nr; r += kR) {
    tile_x<T, kR, kN>(w + r * w_stride, w_stride, xq, xq_stride, nx, nb, y + r, y_stride);
  }
  if constexpr (kR > 1) {
    if (r < nr) {
      tile_rows<T, kR - 1, kN>(w + r * w_stride, w_stride, nr - r, xq, xq_stride, nx, nb, y + r,
                               y_stride);
    }
  }
}

#if defined(FKV_QDOT_VNNI)
// Prefill form (VNNI build only): the 256-bit lanes of two activation rows side by side in one
// 512-bit vector, so one vpdpbusd / cvt / mul / fma serves two outputs. Each 256-bit half holds
// exactly the lanes and goes through exactly the operations of dot_tile's accumulator, and the
// min sums run as 8-lane vectors whose lane i is x row i's scalar sum (separate mul and add), so
// every output has the same bits as from dot_tile. x rows in groups of 8 (4 pairs; a remainder of
// 2-7 rows in 1-3 pairs: batched decode of a few sequences); their blocks are first gathered into
// pair order with scales as f32, in a per-thread buffer (nb <= kMaxPairBlocks: rows of up to 16384
// elements, the d_ff of 8B-class models).
constexpr int64_t kMaxPairBlocks = 512;

// -T::kBias * (the sum of x over each i32 lane's 4 bytes of qx): where vpdpbusd starts when the
// codes enter unsigned (code + kBias), so that it ends on the signed product's exact lanes.
template <class T>
__m512i bias_start(__m512i qx) {
  const __m512i zero = _mm512_setzero_si512();
  if constexpr (T::kBias == 0) {
    return zero;
  } else {
    return _mm512_sub_epi32(
        zero, _mm512_dpbusd_epi32(zero, _mm512_set1_epi8(static_cast<char>(T::kBias)), qx));
  }
}

struct PairedX {
  alignas(64) uint8_t qs[kMaxPairBlocks][4][64];  // [block][pair][row 2p | row 2p+1]
  alignas(64) float dx[kMaxPairBlocks][4][16];    // the two rows' d, 8 lanes each
  alignas(32) float sx[kMaxPairBlocks][8];        // s of the 8 rows (q*_1)
  // -kBias * (sum of x over each i32 lane's 4 elements), the vpdpbusd start for unsigned codes.
  alignas(64) int32_t start[kMaxPairBlocks][4][16];
};

// The first 2 kP x rows (kP pairs).
template <class T, int kP>
void pair_x(const uint8_t* xq, size_t xq_stride, int64_t nb, PairedX* px) {
  for (int64_t b = 0; b < nb; ++b) {
    for (int i = 0; i < 2 * kP; ++i) {
      const uint8_t* xb = xq + i * xq_stride + static_cast<size_t>(b) * T::kXBytes;
      std::memcpy(px->qs[b][i / 2] + 32 * (i % 2), xb + T::kXqOff, 32);
      const float d = load_f16(xb);
      for (int l = 0; l < 8; ++l) px->dx[b][i / 2][8 * (i % 2) + l] = d;
      px->sx[b][i] = T::kHasMin ? load_f16(xb + 2) : 0.0f;
    }
    for (int p = 0; p < kP; ++p) {
      _mm512_store_si512(px->start[b][p], bias_start<T>(_mm512_load_si512(px->qs[b][p])));
    }
  }
}

template <class T, int kR, int kP>
void dot_pairs(const uint8_t* w, size_t w_stride, const PairedX& px, int64_t nb, float* y,
               int64_t y_stride) {
  __m512 acc[kR][kP];
  __m256 summs[kR];
  for (int r = 0; r < kR; ++r) {
    for (int p = 0; p < kP; ++p) acc[r][p] = _mm512_setzero_ps();
    summs[r] = _mm256_setzero_ps();
  }
  const int64_t lines = (kR * static_cast<int64_t>(w_stride) + 63) / 64;
  for (int64_t b = 0; b < nb; ++b) {
    prefetch_next_rows(w + kR * w_stride, lines, b, nb);
    const size_t woff = static_cast<size_t>(b) * T::kWBytes;
    __m512i uw[kR];
    __m512 dw[kR];
    for (int r = 0; r < kR; ++r) {
      const uint8_t* wb = w + r * w_stride + woff;
      // Unsigned codes (code + kBias) with the lanes started at -kBias * sum(x): the exact i32
      // lanes of the signed product, without the per-pair sign fix-up.
      uw[r] = _mm512_broadcast_i64x4(T::ucodes(wb));
      dw[r] = _mm512_set1_ps(load_f16(wb));
      if constexpr (T::kHasMin) {
        const __m256 mw = _mm256_set1_ps(load_f16(wb + 2));
        summs[r] = _mm256_add_ps(summs[r], _mm256_mul_ps(mw, _mm256_load_ps(px.sx[b])));
      }
    }
    for (int p = 0; p < kP; ++p) {
      const __m512i qx = _mm512_load_si512(px.qs[b][p]);
      const __m512 dx = _mm512_load_ps(px.dx[b][p]);
      const __m512i start =
          T::kBias != 0 ? _mm512_load_si512(px.start[b][p]) : _mm512_setzero_si512();
      for (int r = 0; r < kR; ++r) {
        const __m512 lanes = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(start, uw[r], qx));
        acc[r][p] = _mm512_fmadd_ps(_mm512_mul_ps(dw[r], dx), lanes, acc[r][p]);
      }
    }
  }
  for (int r = 0; r < kR; ++r) {
    alignas(32) float m[8];
    _mm256_store_ps(m, summs[r]);
    for (int p = 0; p < kP; ++p) {
      const __m256 lo = _mm512_castps512_ps256(acc[r][p]);
      const __m256 hi = _mm512_extractf32x8_ps(acc[r][p], 1);
      const float s0 = hsum8(lo), s1 = hsum8(hi);
      y[(2 * p) * y_stride + r] = T::kHasMin ? s0 + m[2 * p] : s0;
      y[(2 * p + 1) * y_stride + r] = T::kHasMin ? s1 + m[2 * p + 1] : s1;
    }
  }
}

// Weight rows [0, nr) against the first 2 kP x rows; fewer pairs leave registers for more rows.
template <class T, int kP>
void rows_pairs(const uint8_t* w, size_t w_stride, int64_t nr, const uint8_t* xq, size_t xq_stride,
                int64_t nb, float* y, int64_t y_stride) {
  constexpr int kR = kP <= 2 ? 8 : 4;
  thread_local std::unique_ptr<PairedX> buf;  // ~400 KB: too big for a worker's stack
  if (!buf) buf = std::make_unique<PairedX>();
  PairedX& px = *buf;
  pair_x<T, kP>(xq, xq_stride, nb, &px);
  int64_t r = 0;
  for (; r + kR <= nr; r += kR) {
    dot_pairs<T, kR, kP>(w + r * w_stride, w_stride, px, nb, y + r, y_stride);
  }
  for (; r < nr; ++r) dot_pairs<T, 1, kP>(w + r * w_stride, w_stride, px, nb, y + r, y_stride);
}
#endif

#if defined(FKV_QDOT_VNNI)
// Decode form (VNNI build, one activation row): two weight rows per 512-bit vector (row a in the
// low 256 bits, row b in the high), kPairs pairs at once. Each half holds exactly dot_tile's 8
// lanes and goes through its f32 operations (acc = fma(d_w * d_x, lanes, acc), min terms as
// separate mul and add, hsum8 at the end), so the bits are dot_tile's. The codes enter vpdpbusd
// as unsigned bytes: a q4_0 code q - 8 as q, a q8_0 code c as c + 128, with the accumulator
// started at -bias * (the lane's sum of x), which gives the same exact i32 lanes with fewer
// operations than the sign trick (this path is bound by operations per block, not bytes).
template <class T>
struct DecodePairs {
  static constexpr bool kAvailable = false;
};
inline __m512i nibble_codes2(const uint8_t* qa, const uint8_t* qb) {
  // [qa | qa | qb | qb] (16 bytes each), then low nibbles in lanes 0 and 2, high in 1 and 3.
  const __m512i v = _mm512_inserti64x4(
      _mm512_zextsi256_si512(
          _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qa)))),
      _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qb))), 1);
  const __m512i shifts = _mm512_setr_epi64(0, 0, 0x0004000400040004, 0x0004000400040004, 0, 0,
                                           0x0004000400040004, 0x0004000400040004);
  return _mm512_and_si512(_mm512_srlv_epi16(v, shifts), _mm512_set1_epi8(0x0f));
}
// codes2: the unsigned codes (code + T::kBias) of rows a and b.
template <>
struct DecodePairs<Q4_0> {
  static constexpr bool kAvailable = true;
  static __m512i codes2(const uint8_t* a, const uint8_t* b) { return nibble_codes2(a + 2, b + 2); }
};
template <>
struct DecodePairs<Q4_1> {
  static constexpr bool kAvailable = true;
  static __m512i codes2(const uint8_t* a, const uint8_t* b) { return nibble_codes2(a + 4, b + 4); }
};
template <>
struct DecodePairs<Q8_0> {
  static constexpr bool kAvailable = true;
  static __m512i codes2(const uint8_t* a, const uint8_t* b) {
    const __m512i v = _mm512_inserti64x4(_mm512_zextsi256_si512(load32(a + 2)), load32(b + 2), 1);
    return _mm512_xor_si512(v, _mm512_set1_epi8(static_cast<char>(0x80)));
  }
};

inline uint16_t load_u16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return h;
}

// The 16-bit words at p + r * stride for r in I..., in lanes r (the lane index must be a
// constant for vpinsrw even in unoptimised builds, hence the index pack).
template <size_t... I>
__m128i gather_u16(const uint8_t* p, size_t stride, std::index_sequence<I...>) {
  __m128i v = _mm_setzero_si128();
  ((v = _mm_insert_epi16(v, load_u16(p + I * stride), static_cast<int>(I))), ...);
  return v;
}

// Rows [0, 2 kPairs) of w: pair p is rows 2p and 2p + 1.
template <class T, int kPairs>
void dot_decode_pairs(const uint8_t* w, size_t w_stride, const uint8_t* xq, int64_t nb, float* y) {
  using D = DecodePairs<T>;
  constexpr int kR = 2 * kPairs;
  static_assert(kR <= 8, "the scales of a group fit one 8-lane vector");
  __m512 acc[kPairs];
  for (int p = 0; p < kPairs; ++p) acc[p] = _mm512_setzero_ps();
  __m256 summs = _mm256_setzero_ps();  // lane r: row r's min-term sum (q*_1)
  // Lane l of the 16 selects scale l / 8 of the pair: [d_a x 8, d_b x 8] from [d_a, d_b, ...].
  __m512i pair_idx[kPairs];
  for (int p = 0; p < kPairs; ++p) {
    pair_idx[p] = _mm512_inserti64x4(_mm512_zextsi256_si512(_mm256_set1_epi32(2 * p)),
                                     _mm256_set1_epi32(2 * p + 1), 1);
  }
  const int64_t lines = (kR * static_cast<int64_t>(w_stride) + 63) / 64;
  for (int64_t b = 0; b < nb; ++b) {
    prefetch_next_rows(w + kR * w_stride, lines, b, nb);
    const size_t woff = static_cast<size_t>(b) * T::kWBytes;
    const uint8_t* xb = xq + static_cast<size_t>(b) * T::kXBytes;
    const __m512i qx = _mm512_broadcast_i64x4(load32(xb + T::kXqOff));
    const __m512 dx = _mm512_set1_ps(load_f16(xb));
    const __m512i init = bias_start<T>(qx);
    // The kR rows' scales (and mins) as f32 lanes.
    const __m128i dh = gather_u16(w + woff, w_stride, std::make_index_sequence<kR>{});
    __m128i mh = _mm_setzero_si128();
    if constexpr (T::kHasMin) {
      mh = gather_u16(w + woff + 2, w_stride, std::make_index_sequence<kR>{});
    }
    const __m512 dw = _mm512_zextps256_ps512(_mm256_cvtph_ps(dh));
    if constexpr (T::kHasMin) {
      const __m256 sx = _mm256_set1_ps(load_f16(xb + 2));
      summs = _mm256_add_ps(summs, _mm256_mul_ps(_mm256_cvtph_ps(mh), sx));
    }
    for (int p = 0; p < kPairs; ++p) {
      const uint8_t* wa = w + (2 * p) * w_stride + woff;
      const __m512i codes = D::codes2(wa, wa + w_stride);
      const __m512 lanes = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(init, codes, qx));
      const __m512 d2 = _mm512_permutexvar_ps(pair_idx[p], dw);
      acc[p] = _mm512_fmadd_ps(_mm512_mul_ps(d2, dx), lanes, acc[p]);
    }
  }
  alignas(32) float m[8];
  _mm256_store_ps(m, summs);
  for (int p = 0; p < kPairs; ++p) {
    const float sa = hsum8(_mm512_castps512_ps256(acc[p]));
    const float sb = hsum8(_mm512_extractf32x8_ps(acc[p], 1));
    y[2 * p] = T::kHasMin ? sa + m[2 * p] : sa;
    y[2 * p + 1] = T::kHasMin ? sb + m[2 * p + 1] : sb;
  }
}

template <class T>
void rows_decode_pairs(const uint8_t* w, size_t w_stride, int64_t nr, const uint8_t* xq, int64_t nb,
                       float* y) {
  // 8 rows: 0.67 ns per block from DRAM on Zen 5, against 0.92 with 4 and 1.17 one by one.
  constexpr int kPairs = 4;
  int64_t r = 0;
  for (; r + 2 * kPairs <= nr; r += 2 * kPairs) {
    dot_decode_pairs<T, kPairs>(w + r * w_stride, w_stride, xq, nb, y + r);
  }
  for (; r < nr; ++r) dot_tile<T, 1, 1>(w + r * w_stride, w_stride, xq, 0, nb, y + r, 1);
}
#endif

template <class T>
void rows_avx2(const uint8_t* w, size_t w_stride, int64_t nr, const uint8_t* xq, size_t xq_stride,
               int64_t nx, int64_t n, float* y, int64_t y_stride) {
  const int64_t nb = n / 32;
  if (nx == 1) {
#if defined(FKV_QDOT_VNNI)
    if constexpr (DecodePairs<T>::kAvailable) {
      rows_decode_pairs<T>(w, w_stride, nr, xq, nb, y);
      return;
    }
#endif
    // Decode: 4 rows at a time (independent accumulator chains), the next 4 prefetched.
    tile_rows<T, 4, 1>(w, w_stride, nr, xq, xq_stride, nx, nb, y, y_stride);
    return;
  }
  int64_t i = 0;
#if defined(FKV_QDOT_VNNI)
  if (nb <= kMaxPairBlocks) {
    for (; i + 8 <= nx; i += 8) {
      rows_pairs<T, 4>(w, w_stride, nr, xq + i * xq_stride, xq_stride, nb, y + i * y_stride,
                       y_stride);
    }
    const uint8_t* xi = xq + i * xq_stride;
    float* yi = y + i * y_stride;
    switch ((nx - i) / 2) {
      case 3:
        rows_pairs<T, 3>(w, w_stride, nr, xi, xq_stride, nb, yi, y_stride);
        break;
      case 2:
        rows_pairs<T, 2>(w, w_stride, nr, xi, xq_stride, nb, yi, y_stride);
        break;
      case 1:
        rows_pairs<T, 1>(w, w_stride, nr, xi, xq_stride, nb, yi, y_stride);
        break;
      default:
        break;
    }
    i += (nx - i) / 2 * 2;
  }
#endif
  if (i < nx) {
    tile_rows<T, 2, 4>(w, w_stride, nr, xq + i * xq_stride, xq_stride, nx - i, nb, y + i * y_stride,
                       y_stride);
  }
}

// ---- k-quants x q8_K ----------------------------------------------------------------------------
// Per super-block: for each 32-element chunk c, the products are summed in pairs (i16, exact) and
// the pairs multiplied by the chunk's two 16-element group scales into 8 i32 lanes (vpmaddwd), all
// exact; then acc = fma(d_w * d_x, lanes, acc) once per super-block and the mins term
// (dmin_w * d_x) * sum(bsums * mins) summed as a scalar; result hsum(acc) - mins sum.

inline float q8k_d(const uint8_t* y) {
  float d;
  std::memcpy(&d, y, 4);
  return d;
}
inline void k_scale_min(const uint8_t* s, int j, int* sc, int* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
    *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}
inline __m256i shr_mask(__m256i v, int shift, int mask) {
  return _mm256_and_si256(_mm256_srli_epi16(v, shift), _mm256_set1_epi8(static_cast<char>(mask)));
}
// 0xff in byte l where bit `bit` of p[l] is set.
inline __m256i bit_set(const uint8_t* p, int bit) {
  const __m256i m = _mm256_set1_epi8(static_cast<char>(1 << bit));
  return _mm256_cmpeq_epi8(_mm256_and_si256(load32(p), m), m);
}

// Each type: kBytes, kUnsigned, kHasMin, d(w), dmin(w), scales(w, sc[16], mn[16]) (16-element
// group scales and mins, 0 without mins), codes(w, c) for chunk c < 8 (elements 32c..32c+31).
struct Q2_K {
  static constexpr int kBytes = 84;
  static constexpr bool kUnsigned = true, kHasMin = true;
  static float d(const uint8_t* w) { return load_f16(w + 80); }
  static float dmin(const uint8_t* w) { return load_f16(w + 82); }
  static void scales(const uint8_t* w, int16_t* sc, int16_t* mn) {
    for (int g = 0; g < 16; ++g) {
      sc[g] = w[g] & 0x0f;
      mn[g] = w[g] >> 4;
    }
  }
  static __m256i codes(const uint8_t* w, int c) {
    return shr_mask(load32(w + 16 + 32 * (c / 4)), 2 * (c % 4), 3);
  }
};
struct Q3_K {
  static constexpr int kBytes = 110;
  static constexpr bool kUnsigned = false, kHasMin = false;
  static float d(const uint8_t* w) { return load_f16(w + 108); }
  static float dmin(const uint8_t*) { return 0.0f; }
  static void scales(const uint8_t* w, int16_t* sc, int16_t* mn) {
    const uint8_t* scb = w + 96;
    for (int g = 0; g < 16; ++g) {
      const int lo = (scb[g % 8] >> (g < 8 ? 0 : 4)) & 0x0f;
      const int hi = (scb[8 + g % 4] >> (2 * (g / 4))) & 3;
      sc[g] = static_cast<int16_t>((lo | (hi << 4)) - 32);
      mn[g] = 0;
    }
  }
  static __m256i codes(const uint8_t* w, int c) {
    const __m256i lo = shr_mask(load32(w + 32 + 32 * (c / 4)), 2 * (c % 4), 3);
    const __m256i minus4 = _mm256_andnot_si256(bit_set(w, c), _mm256_set1_epi8(4));
    return _mm256_sub_epi8(lo, minus4);
  }
};
struct Q4_K {
  static constexpr int kBytes = 144;
  static constexpr bool kUnsigned = true, kHasMin = true;
  static float d(const uint8_t* w) { return load_f16(w); }
  static float dmin(const uint8_t* w) { return load_f16(w + 2); }
  static void scales(const uint8_t* w, int16_t* sc, int16_t* mn) {
    for (int j = 0; j < 8; ++j) {
      int s, m;
      k_scale_min(w + 4, j, &s, &m);
      sc[2 * j] = sc[2 * j + 1] = static_cast<int16_t>(s);
      mn[2 * j] = mn[2 * j + 1] = static_cast<int16_t>(m);
    }
  }
  static __m256i codes(const uint8_t* w, int c) {
    return shr_mask(load32(w + 16 + 32 * (c / 2)), 4 * (c % 2), 0x0f);
  }
};
struct Q5_K {
  static constexpr int kBytes = 176;
  static constexpr bool kUnsigned = true, kHasMin = true;
  static float d(const uint8_t* w) { return load_f16(w); }
  static float dmin(const uint8_t* w) { return load_f16(w + 2); }
  static void scales(const uint8_t* w, int16_t* sc, int16_t* mn) { Q4_K::scales(w, sc, mn); }
  static __m256i codes(const uint8_t* w, int c) {
    const __m256i lo = shr_mask(load32(w + 48 + 32 * (c / 2)), 4 * (c % 2), 0x0f);
    return _mm256_or_si256(lo, _mm256_and_si256(bit_set(w + 16, c), _mm256_set1_epi8(16)));
  }
};
struct Q6_K {
  static constexpr int kBytes = 210;
  static constexpr bool kUnsigned = false, kHasMin = false;
  static float d(const uint8_t* w) { return load_f16(w + 208); }
  static float dmin(const uint8_t*) { return 0.0f; }
  static void scales(const uint8_t* w, int16_t* sc, int16_t* mn) {
    for (int g = 0; g < 16; ++g) {
      sc[g] = static_cast<int8_t>(w[192 + g]);
      mn[g] = 0;
    }
  }
  static __m256i codes(const uint8_t* w, int c) {
    const int h = c / 4, k = c % 4;
    const __m256i lo = shr_mask(load32(w + 64 * h + 32 * (k % 2)), 4 * (k / 2), 0x0f);
    const __m256i hi = shr_mask(load32(w + 128 + 32 * h), 2 * k, 3);
    return _mm256_sub_epi8(_mm256_or_si256(lo, _mm256_slli_epi16(hi, 4)), _mm256_set1_epi8(32));
  }
};

// One weight row against kN activation rows: scales and codes decoded once per super-block and
// chunk; each x row has its own accumulators, updated identically whatever kN is.
template <class T, int kN>
void dot_k(const uint8_t* w, const uint8_t* xq, size_t xq_stride, int64_t nsb, float* out,
           int64_t out_stride) {
  __m256 acc[kN];
  float msum[kN];
  for (int i = 0; i < kN; ++i) {
    acc[i] = _mm256_setzero_ps();
    msum[i] = 0.0f;
  }
  for (int64_t b = 0; b < nsb; ++b, w += T::kBytes) {
    int16_t sc[16], mn[16];
    T::scales(w, sc, mn);
    const size_t xoff = static_cast<size_t>(b) * 292;
    __m256i isum[kN];
    for (int i = 0; i < kN; ++i) isum[i] = _mm256_setzero_si256();
    for (int c = 0; c < 8; ++c) {
      const __m256i qw = T::codes(w, c);
      const __m256i uw = T::kUnsigned ? qw : _mm256_sign_epi8(qw, qw);
      const __m256i s16 =
          _mm256_set_m128i(_mm_set1_epi16(sc[2 * c + 1]), _mm_set1_epi16(sc[2 * c]));
      for (int i = 0; i < kN; ++i) {
        const __m256i qx = load32(xq + i * xq_stride + xoff + 4 + 32 * c);
        const __m256i p16 = _mm256_maddubs_epi16(uw, T::kUnsigned ? qx : _mm256_sign_epi8(qx, qw));
        isum[i] = _mm256_add_epi32(isum[i], _mm256_madd_epi16(p16, s16));
      }
    }
    const float dw = T::d(w);
    const float dmw = T::kHasMin ? T::dmin(w) : 0.0f;
    for (int i = 0; i < kN; ++i) {
      const uint8_t* y = xq + i * xq_stride + xoff;
      const float dy = q8k_d(y);
      acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(dw * dy), _mm256_cvtepi32_ps(isum[i]), acc[i]);
      if constexpr (T::kHasMin) {
        // sum_g bsums[g] * mn[g], exact in i32 (scalar: a wide load of the just-stored mn would
        // stall store forwarding).
        int16_t bs[16];
        std::memcpy(bs, y + 4 + 256, 32);
        int md = 0;
        for (int g = 0; g < 16; ++g) md += bs[g] * mn[g];
        msum[i] += (dmw * dy) * static_cast<float>(md);
      }
    }
  }
  for (int i = 0; i < kN; ++i) out[i * out_stride] = hsum8(acc[i]) - msum[i];
}

template <class T>
void rows_k(const uint8_t* w, size_t w_stride, int64_t nr, const uint8_t* xq, size_t xq_stride,
            int64_t nx, int64_t n, float* y, int64_t y_stride) {
  const int64_t nsb = n / 256;
  for (int64_t r = 0; r < nr; ++r) {
    const uint8_t* wr = w + r * w_stride;
    int64_t i = 0;
    for (; i + 4 <= nx; i += 4) {
      dot_k<T, 4>(wr, xq + i * xq_stride, xq_stride, nsb, y + i * y_stride + r, y_stride);
    }
    switch (nx - i) {
      case 3:
        dot_k<T, 3>(wr, xq + i * xq_stride, xq_stride, nsb, y + i * y_stride + r, y_stride);
        break;
      case 2:
        dot_k<T, 2>(wr, xq + i * xq_stride, xq_stride, nsb, y + i * y_stride + r, y_stride);
        break;
      case 1:
        dot_k<T, 1>(wr, xq + i * xq_stride, xq_stride, nsb, y + i * y_stride + r, y_stride);
        break;
      default:
        break;
    }
  }
}

#if !defined(FKV_QDOT_VNNI)
// x86 activation quantisers, eight lanes at a time: the same f32 operations as the scalar
// quantize_row_q8_{0,1}_x86 (max is exact in any order, one f32 mul, vroundps to nearest even,
// F16C's round-to-nearest-even f16), hence the same bytes.
template <bool kQ81>
void quantize_q8_x86(const float* x, uint8_t* y, int64_t n) {
  constexpr size_t kBytes = kQ81 ? 36 : 34;
  constexpr int kQOff = kQ81 ? 4 : 2;
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  for (int64_t b = 0; b < n / 32; ++b, x += 32, y += kBytes) {
    __m256 v[4];
    __m256 m = _mm256_setzero_ps();
    for (int k = 0; k < 4; ++k) {
      v[k] = _mm256_loadu_ps(x + 8 * k);
      m = _mm256_max_ps(m, _mm256_and_ps(v[k], abs_mask));
    }
    __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float amax = _mm_cvtss_f32(m4);
    const float d = amax / 127.0f;
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    const uint16_t dh = _cvtss_sh(d, 0);
    std::memcpy(y, &dh, 2);
    __m256i q[4];
    for (int k = 0; k < 4; ++k) {
      q[k] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[k], _mm256_set1_ps(id)),
                                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    // i32 -> i8 (|q| <= 127, no saturation), back in element order after the in-lane packs.
    const __m256i p01 = _mm256_packs_epi32(q[0], q[1]);
    const __m256i p23 = _mm256_packs_epi32(q[2], q[3]);
    const __m256i p = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(p01, p23),
                                                  _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + kQOff), p);
    if constexpr (kQ81) {
      __m256i s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
      __m128i s4 = _mm_add_epi32(_mm256_extracti128_si256(s, 1), _mm256_castsi256_si128(s));
      s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
      s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
      const uint16_t sh = _cvtss_sh(d * static_cast<float>(_mm_cvtsi128_si32(s4)), 0);
      std::memcpy(y + 2, &sh, 2);
    }
  }
}
#endif

}  // namespace

bool FKV_QDOT_COMPILED() { return true; }

#if !defined(FKV_QDOT_VNNI)
void avx2_quantize_q8_0_x86(const float* x, void* y, int64_t n) {
  quantize_q8_x86<false>(x, static_cast<uint8_t*>(y), n);
}
void avx2_quantize_q8_1_x86(const float* x, void* y, int64_t n) {
  quantize_q8_x86<true>(x, static_cast<uint8_t*>(y), n);
}
#endif

QDotFn FKV_QDOT_KERNEL(DType t) {
  switch (t) {
    case DType::kQ4_0:
      return rows_avx2<Q4_0>;
    case DType::kQ4_1:
      return rows_avx2<Q4_1>;
    case DType::kQ5_0:
      return rows_avx2<Q5_0>;
    case DType::kQ5_1:
      return rows_avx2<Q5_1>;
    case DType::kQ8_0:
      return rows_avx2<Q8_0>;
    case DType::kQ2_K:
      return rows_k<Q2_K>;
    case DType::kQ3_K:
      return rows_k<Q3_K>;
    case DType::kQ4_K:
      return rows_k<Q4_K>;
    case DType::kQ5_K:
      return rows_k<Q5_K>;
    case DType::kQ6_K:
      return rows_k<Q6_K>;
    default:
      return nullptr;
  }
}

}  // namespace fkv::qdot_detail

#else  // ISA not available to this build

namespace fkv::qdot_detail {
bool FKV_QDOT_COMPILED() { return false; }
QDotFn FKV_QDOT_KERNEL(DType) { return nullptr; }
#if !defined(FKV_QDOT_VNNI)
void avx2_quantize_q8_0_x86(const float*, void*, int64_t) {}
void avx2_quantize_q8_1_x86(const float*, void*, int64_t) {}
#endif
}  // namespace fkv::qdot_detail

#endif

#undef FKV_QDOT_KERNEL
#undef FKV_QDOT_COMPILED
#undef FKV_QDOT_HAVE_ISA
