// AVX2 helpers shared by the avx2 kernel files (ops_avx2.cc, attention_avx2.cc). Include it
// only from files compiled with the avx2 flags; everything here has internal linkage, so no
// avx2 code can be merged by the linker into code that runs on other CPUs.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace fkv {
namespace {  // NOLINT: internal linkage on purpose (see above)

alignas(32) constexpr int32_t kMaskBits[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                               0,  0,  0,  0,  0,  0,  0,  0};
// Lanes [0, rem) set, rem in [0, 8].
inline __m256i tail_mask(int64_t rem) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMaskBits + 8 - rem));
}

inline float hsum(__m256 v) {
  __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
  return _mm_cvtss_f32(s4);
}

// exp(x) to ~2 ulp: Cody-Waite reduction by ln2 and a degree-6 polynomial (Cephes expf).
// Inputs below -87 give 0 (the true value is below the normal range); above 88 are clamped.
inline __m256 exp_ps(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.0f);
  const __m256 keep = _mm256_cmp_ps(x, lo, _CMP_GE_OQ);
  x = _mm256_min_ps(_mm256_max_ps(x, lo), _mm256_set1_ps(88.0f));
  const __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  const __m256 r2 = _mm256_mul_ps(r, r);
  const __m256 y = _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), _mm256_set1_ps(1.0f));
  const __m256i e =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
  return _mm256_and_ps(_mm256_mul_ps(y, _mm256_castsi256_ps(e)), keep);
}

inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Loads of 8 stored elements as f32 from byte base p at element c (the halves widen exactly),
// shared by the matmul and attention kernels that read f32 / f16 / bf16 rows; kBytes per element.
struct LoadF32 {
  static constexpr int kBytes = 4;
  static __m256 load(const uint8_t* p, int64_t c) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(p) + c);
  }
  static __m256 load_tail(const uint8_t* p, int64_t c, int64_t rem) {
    return _mm256_maskload_ps(reinterpret_cast<const float*>(p) + c, tail_mask(rem));
  }
};
inline __m128i load_halves_tail(const uint8_t* p, int64_t rem) {
  alignas(16) uint16_t tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::memcpy(tmp, p, static_cast<size_t>(rem) * 2);
  return _mm_load_si128(reinterpret_cast<const __m128i*>(tmp));
}
struct LoadF16 {
  static constexpr int kBytes = 2;
  static __m256 load(const uint8_t* p, int64_t c) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2 * c)));
  }
  static __m256 load_tail(const uint8_t* p, int64_t c, int64_t rem) {
    return _mm256_cvtph_ps(load_halves_tail(p + 2 * c, rem));
  }
};
struct LoadBF16 {
  static constexpr int kBytes = 2;
  static __m256 widen(__m128i h) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  static __m256 load(const uint8_t* p, int64_t c) {
    return widen(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2 * c)));
  }
  static __m256 load_tail(const uint8_t* p, int64_t c, int64_t rem) {
    return widen(load_halves_tail(p + 2 * c, rem));
  }
};

}  // namespace
}  // namespace fkv
