// What the x16 vector kernels (repack_avx2.cc, repack_avx512.cc) share: each type's group-block
// layout (quant/repack.h) as constants, and the x side, i.e. per x row and block the integer start
// -bias * sum(x), d_x and (q4_1) s_x, shared by every group of a call.
// Included only by those two files, after <immintrin.h>: the anonymous namespace gives each its
// own copy compiled with its own ISA flags (one shared inline copy could be the AVX-512 one).
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>
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

}  // namespace
}  // namespace fkv::repack_detail
