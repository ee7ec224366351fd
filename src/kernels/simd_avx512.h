// AVX512 helpers shared by the avx512 kernel files (ops_avx512.cc, attention_avx512.cc). Include it
// only from files compiled with the avx512 flags; everything here has internal linkage, so no
// avx512 code can be merged by the linker into code that runs on other CPUs.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace fkv {
namespace {  // NOLINT: internal linkage on purpose (see above)

// Lanes [0, rem) set; rem >= 16 gives all 16.
inline __mmask16 tail_mask(int64_t rem) {
  return rem >= 16 ? static_cast<__mmask16>(0xffff)
                   : static_cast<__mmask16>((1u << static_cast<unsigned>(rem)) - 1u);
}

// exp(x) to ~2 ulp: Cody-Waite reduction by ln2 and a degree-6 polynomial (Cephes expf).
// Inputs below -87 give 0 (the true value is below the normal range); above 88 are clamped.
inline __m512 exp_ps(__m512 x) {
  const __m512 lo = _mm512_set1_ps(-87.0f);
  const __mmask16 underflow = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
  x = _mm512_min_ps(_mm512_max_ps(x, lo), _mm512_set1_ps(88.0f));
  const __m512 fx = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                         _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(fx, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(fx, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  const __m512 r2 = _mm512_mul_ps(r, r);
  const __m512 y = _mm512_add_ps(_mm512_fmadd_ps(p, r2, r), _mm512_set1_ps(1.0f));
  const __m512i e =
      _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(fx), _mm512_set1_epi32(127)), 23);
  return _mm512_maskz_mul_ps(static_cast<__mmask16>(~underflow), y, _mm512_castsi512_ps(e));
}

// Loads of 16 stored elements as f32 from byte base p at element c (the halves widen exactly),
// shared by the matmul and attention kernels that read f32 / f16 / bf16 rows; kBytes per element.
struct LoadF32 {
  static constexpr int kBytes = 4;
  static __m512 load(const uint8_t* p, int64_t c) {
    return _mm512_loadu_ps(reinterpret_cast<const float*>(p) + c);
  }
  static __m512 load_tail(const uint8_t* p, int64_t c, __mmask16 m) {
    return _mm512_maskz_loadu_ps(m, reinterpret_cast<const float*>(p) + c);
  }
};
struct LoadF16 {
  static constexpr int kBytes = 2;
  static __m512 load(const uint8_t* p, int64_t c) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 2 * c)));
  }
  static __m512 load_tail(const uint8_t* p, int64_t c, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p + 2 * c));
  }
};
struct LoadBF16 {
  static constexpr int kBytes = 2;
  static __m512 widen(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  static __m512 load(const uint8_t* p, int64_t c) {
    return widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 2 * c)));
  }
  static __m512 load_tail(const uint8_t* p, int64_t c, __mmask16 m) {
    return widen(_mm256_maskz_loadu_epi16(m, p + 2 * c));
  }
};

}  // namespace
}  // namespace fkv
