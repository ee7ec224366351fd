// What the x16 vector kernels (repack_avx2.cc, repack_avx512.cc) share: each type's group-block
// layout (quant/repack.h) as constants, and the x side, i.e. per x row and block the integer start
// -bias * sum(x), d_x and (q4_1) s_x, shared by every group of a call.
// Included only by those two files, after <immintrin.h>: the anonymous namespace gives each its
// own copy compiled with its own ISA flags (one shared inline copy could be the AVX-512 one).
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace fkv::repack_detail {
namespace {  // NOLINT(google-build-namespaces): one copy per ISA translation unit, on purpose

// Per type: group block bytes, offsets of the codes (x16 block) and of x's codes (x block), the
// bias that makes the stored codes unsigned, whether there are mins, whether codes are nibbles.
struct Q4_0 {
  static constexpr size_t kBlock = 16 * 18, kCodes = 32, kXBlock = 34, kXCodes = 2;
  static constexpr int kBias = 8;  // codes enter unsigned (nibble = code + 8)
  static constexpr bool kHasMin = false, kNibbles = true;
};
struct Q4_1 {
  static constexpr size_t kBlock = 16 * 20, kCodes = 64, kXBlock = 36, kXCodes = 4;
  static constexpr int kBias = 0;
  static constexpr bool kHasMin = true, kNibbles = true;
};
struct Q8_0 {
  static constexpr size_t kBlock = 16 * 34, kCodes = 32, kXBlock = 34, kXCodes = 2;
  static constexpr int kBias = 128;  // stored code ^ 0x80 = code + 128
  static constexpr bool kHasMin = false, kNibbles = false;
};

// k-quant group-superblock layouts (256 elements per row, repack.h): byte offsets of the fields.
// q8_K x block: d f32 | qs i8[256] at 4 | bsums i16[16] at 260.
struct Q4_K {
  static constexpr size_t kBlock = 16 * 144, kDmin = 32, kScales = 64, kCodes = 256;
  static constexpr size_t kHigh = 0;  // no fifth bit
};
// q5_K: q4_K's fields plus qh (the fifth bit of every code) as 8 words at 256.
struct Q5_K {
  static constexpr size_t kBlock = 16 * 176, kDmin = 32, kScales = 64, kCodes = 768;
  static constexpr size_t kHigh = 256;
};
struct Q6_K {
  static constexpr size_t kBlock = 16 * 210, kScales = 32, kLow = 288, kHigh = 2336;
};
inline constexpr size_t kQ8KBlock = 292, kQ8KCodes = 4, kQ8KSums = 260;

inline int32_t load_i32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

struct XSide {
  std::vector<int32_t> start;  // [nx, nb]
  std::vector<float> dx, sx;   // [nx, nb]
};

// T: one of the layouts above.
template <class T>
void prepare_x(const uint8_t* xq, size_t xq_stride, int64_t nx, int64_t nb, XSide* s) {
  const size_t count = static_cast<size_t>(nx * nb);
  s->start.resize(count);
  s->dx.resize(count);
  if constexpr (T::kHasMin) s->sx.resize(count);
  for (int64_t i = 0; i < nx; ++i) {
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* xb = xq + i * xq_stride + b * T::kXBlock;
      int32_t sum = 0;
      if constexpr (T::kBias != 0) {
        // The 32 signed codes' sum, exactly: (x ^ 0x80) = x + 128 as unsigned bytes, summed by
        // vpsadbw in 4 groups of 8 (the scalar loop was ~5 % of a batched SmolLM2 step, all of it
        // in the 512 tiles of the Q8_0 LM head).
        const __m256i u =
            _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb + T::kXCodes)),
                             _mm256_set1_epi8(static_cast<char>(0x80)));
        const __m256i s4 = _mm256_sad_epu8(u, _mm256_setzero_si256());
        const __m128i s2 =
            _mm_add_epi64(_mm256_castsi256_si128(s4), _mm256_extracti128_si256(s4, 1));
        sum = static_cast<int32_t>(_mm_cvtsi128_si64(s2) + _mm_extract_epi64(s2, 1)) - 32 * 128;
      }
      s->start[i * nb + b] = -T::kBias * sum;
      uint16_t h;
      std::memcpy(&h, xb, 2);
      s->dx[i * nb + b] = _cvtsh_ss(h);
      if constexpr (T::kHasMin) {
        std::memcpy(&h, xb + 2, 2);
        s->sx[i * nb + b] = _cvtsh_ss(h);
      }
    }
  }
}

// The x side of the k-quant kernels, per x row and superblock: d_x, and the integer terms that
// depend on x alone. q4_K / q5_K: the 8 sub-block sums of 32 x codes, as 4 words of i16 pairs
// (bs0 | bs2 << 16, bs1 | bs3, bs4 | bs6, bs5 | bs7) for vpdpwssd against the mins. q6_K: the
// starts -32 * (sum of the 16 x codes) of the 16 sub-blocks (codes enter unsigned, code + 32).
struct XSideK {
  std::vector<float> dx;      // [nx, nb]
  std::vector<int32_t> ints;  // [nx, nb, 4] (q4_K) or [nx, nb, 16] (q6_K)
};

template <class T>
void prepare_x_k(const uint8_t* xq, size_t xq_stride, int64_t nx, int64_t nb, XSideK* s) {
  constexpr int kInts = std::is_same_v<T, Q6_K> ? 16 : 4;
  s->dx.resize(static_cast<size_t>(nx * nb));
  s->ints.resize(static_cast<size_t>(nx * nb * kInts));
  for (int64_t i = 0; i < nx; ++i) {
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* xb = xq + i * xq_stride + b * kQ8KBlock;
      std::memcpy(&s->dx[i * nb + b], xb, 4);
      int16_t bs[16];
      std::memcpy(bs, xb + kQ8KSums, sizeof(bs));
      int32_t* out = &s->ints[(i * nb + b) * kInts];
      if constexpr (kInts == 4) {
        int32_t sub[8];
        for (int j = 0; j < 8; ++j) sub[j] = bs[2 * j] + bs[2 * j + 1];  // |sum| <= 4096: i16
        auto pair = [](int32_t lo, int32_t hi) {
          return static_cast<int32_t>((static_cast<uint32_t>(static_cast<uint16_t>(lo))) |
                                      (static_cast<uint32_t>(static_cast<uint16_t>(hi)) << 16));
        };
        out[0] = pair(sub[0], sub[2]);
        out[1] = pair(sub[1], sub[3]);
        out[2] = pair(sub[4], sub[6]);
        out[3] = pair(sub[5], sub[7]);
      } else {
        for (int j = 0; j < 16; ++j) out[j] = -32 * bs[j];
      }
    }
  }
}

}  // namespace
}  // namespace fkv::repack_detail
