// AVX2 dequantisation, eight lanes at a time. Bit-identical to quant.cc: the same f32 operations in
// the same order (separate mul and add, never FMA: contraction is switched off below), scales
// converted by the same scalar f16_to_f32. Q2_K and Q3_K are left to the scalar path.
// Built with -mavx2 -mfma -mf16c (CMake glob on *_avx2.cc); only called after a runtime check.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "quant/quant_internal.h"

#if defined(__x86_64__) && defined(__AVX2__) && defined(__F16C__)

#include <immintrin.h>

#include <cstring>

namespace fkv::quant_detail {
namespace {

inline float load_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

// Eight bytes at p, zero-extended to eight i32 lanes.
inline __m256i u8x8(const uint8_t* p) {
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}
inline __m256 to_f32(__m256i v) { return _mm256_cvtepi32_ps(v); }
// Bit (start + lane) of `bits`, as 0/1 in each lane.
inline __m256i bit_lanes(uint32_t bits, int start) {
  const __m256i idx =
      _mm256_add_epi32(_mm256_set1_epi32(start), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  return _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(bits)), idx),
                          _mm256_set1_epi32(1));
}

void deq_f16(const uint8_t* b, float* y, int64_t n) {
  int64_t i = 0;
  const __m256i exp_mask = _mm256_set1_epi32(0x7c00);
  const __m256i nan_quiet = _mm256_set1_epi32(0x0200);
  const __m256i zero = _mm256_setzero_si256();
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 2 * i));
    __m256 f = _mm256_cvtph_ps(h);
    // vcvtph2ps quiets signalling NaNs; the scalar conversion keeps the payload as it is, so clear
    // the quiet bit again where the input was a signalling NaN.
    const __m256i hw = _mm256_cvtepu16_epi32(h);
    const __m256i is_max_exp = _mm256_cmpeq_epi32(_mm256_and_si256(hw, exp_mask), exp_mask);
    const __m256i quiet_clear = _mm256_cmpeq_epi32(_mm256_and_si256(hw, nan_quiet), zero);
    const __m256i payload = _mm256_and_si256(hw, _mm256_set1_epi32(0x01ff));
    const __m256i has_payload =
        _mm256_xor_si256(_mm256_cmpeq_epi32(payload, zero), _mm256_set1_epi32(-1));
    const __m256i snan = _mm256_and_si256(_mm256_and_si256(is_max_exp, quiet_clear), has_payload);
    const __m256i fix = _mm256_and_si256(snan, _mm256_set1_epi32(0x00400000));
    f = _mm256_castsi256_ps(_mm256_andnot_si256(fix, _mm256_castps_si256(f)));
    _mm256_storeu_ps(y + i, f);
  }
  for (; i < n; ++i) y[i] = load_f16(b + 2 * i);
}

void deq_bf16(const uint8_t* b, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 2 * i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + i),
                        _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  for (; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, b + 2 * i, 2);
    y[i] = bf16_to_f32(h);
  }
}

void deq_q4_0(const uint8_t* b, float* y, int64_t nb) {
  const __m256i low = _mm256_set1_epi32(0x0f), eight = _mm256_set1_epi32(8);
  for (int64_t i = 0; i < nb; ++i, b += 18, y += 32) {
    const __m256 d = _mm256_set1_ps(load_f16(b));
    for (int k = 0; k < 16; k += 8) {
      const __m256i v = u8x8(b + 2 + k);
      const __m256i lo = _mm256_sub_epi32(_mm256_and_si256(v, low), eight);
      const __m256i hi = _mm256_sub_epi32(_mm256_srli_epi32(v, 4), eight);
      _mm256_storeu_ps(y + k, _mm256_mul_ps(d, to_f32(lo)));
      _mm256_storeu_ps(y + 16 + k, _mm256_mul_ps(d, to_f32(hi)));
    }
  }
}

void deq_q4_1(const uint8_t* b, float* y, int64_t nb) {
  const __m256i low = _mm256_set1_epi32(0x0f);
  for (int64_t i = 0; i < nb; ++i, b += 20, y += 32) {
    const __m256 d = _mm256_set1_ps(load_f16(b));
    const __m256 m = _mm256_set1_ps(load_f16(b + 2));
    for (int k = 0; k < 16; k += 8) {
      const __m256i v = u8x8(b + 4 + k);
      const __m256 lo = to_f32(_mm256_and_si256(v, low));
      const __m256 hi = to_f32(_mm256_srli_epi32(v, 4));
      _mm256_storeu_ps(y + k, _mm256_add_ps(_mm256_mul_ps(d, lo), m));
      _mm256_storeu_ps(y + 16 + k, _mm256_add_ps(_mm256_mul_ps(d, hi), m));
    }
  }
}

// Five-bit values of a q5 block: elements k..k+7 (lo) and k+16..k+23 (hi).
inline void q5_vals(const uint8_t* qs, uint32_t qh, int k, __m256i* lo, __m256i* hi) {
  const __m256i v = u8x8(qs + k);
  *lo = _mm256_or_si256(_mm256_and_si256(v, _mm256_set1_epi32(0x0f)),
                        _mm256_slli_epi32(bit_lanes(qh, k), 4));
  *hi = _mm256_or_si256(_mm256_srli_epi32(v, 4), _mm256_slli_epi32(bit_lanes(qh, k + 16), 4));
}

void deq_q5_0(const uint8_t* b, float* y, int64_t nb) {
  const __m256i sixteen = _mm256_set1_epi32(16);
  for (int64_t i = 0; i < nb; ++i, b += 22, y += 32) {
    const __m256 d = _mm256_set1_ps(load_f16(b));
    uint32_t qh;
    std::memcpy(&qh, b + 2, 4);
    for (int k = 0; k < 16; k += 8) {
      __m256i lo, hi;
      q5_vals(b + 6, qh, k, &lo, &hi);
      _mm256_storeu_ps(y + k, _mm256_mul_ps(d, to_f32(_mm256_sub_epi32(lo, sixteen))));
      _mm256_storeu_ps(y + 16 + k, _mm256_mul_ps(d, to_f32(_mm256_sub_epi32(hi, sixteen))));
    }
  }
}

void deq_q5_1(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 24, y += 32) {
    const __m256 d = _mm256_set1_ps(load_f16(b));
    const __m256 m = _mm256_set1_ps(load_f16(b + 2));
    uint32_t qh;
    std::memcpy(&qh, b + 4, 4);
    for (int k = 0; k < 16; k += 8) {
      __m256i lo, hi;
      q5_vals(b + 8, qh, k, &lo, &hi);
      _mm256_storeu_ps(y + k, _mm256_add_ps(_mm256_mul_ps(d, to_f32(lo)), m));
      _mm256_storeu_ps(y + 16 + k, _mm256_add_ps(_mm256_mul_ps(d, to_f32(hi)), m));
    }
  }
}

void deq_q8_0(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 34, y += 32) {
    const __m256 d = _mm256_set1_ps(load_f16(b));
    for (int k = 0; k < 32; k += 8) {
      const __m256i v =
          _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + 2 + k)));
      _mm256_storeu_ps(y + k, _mm256_mul_ps(to_f32(v), d));
    }
  }
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

// q4_k (qh == nullptr) and q5_k: 8 sub-blocks of 32, y = d1 * q - m1.
void deq_k4or5(const uint8_t* d_at, const uint8_t* scales, const uint8_t* qh, const uint8_t* qs,
               float* y) {
  const float d = load_f16(d_at);
  const float dmin = load_f16(d_at + 2);
  const __m256i low = _mm256_set1_epi32(0x0f), one = _mm256_set1_epi32(1);
  for (int j = 0; j < 8; ++j) {
    int sc, m;
    k_scale_min(scales, j, &sc, &m);
    const __m256 d1 = _mm256_set1_ps(d * static_cast<float>(sc));
    const __m256 m1 = _mm256_set1_ps(dmin * static_cast<float>(m));
    const uint8_t* q = qs + 32 * (j / 2);
    const __m128i shift = _mm_cvtsi32_si128(4 * (j % 2));
    const __m128i hshift = _mm_cvtsi32_si128(j);
    for (int l = 0; l < 32; l += 8) {
      __m256i v = _mm256_and_si256(_mm256_srl_epi32(u8x8(q + l), shift), low);
      if (qh != nullptr) {
        const __m256i h = _mm256_and_si256(_mm256_srl_epi32(u8x8(qh + l), hshift), one);
        v = _mm256_or_si256(v, _mm256_slli_epi32(h, 4));
      }
      _mm256_storeu_ps(y + j * 32 + l, _mm256_sub_ps(_mm256_mul_ps(d1, to_f32(v)), m1));
    }
  }
}

void deq_q4_k(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 144, y += 256) deq_k4or5(b, b + 4, nullptr, b + 16, y);
}

void deq_q5_k(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 176, y += 256) deq_k4or5(b, b + 4, b + 16, b + 48, y);
}

void deq_q6_k(const uint8_t* b, float* y, int64_t nb) {
  const __m256i low = _mm256_set1_epi32(0x0f), three = _mm256_set1_epi32(3);
  const __m256i bias = _mm256_set1_epi32(32);
  for (int64_t i = 0; i < nb; ++i, b += 210, y += 256) {
    const uint8_t* ql = b;
    const uint8_t* qh = b + 128;
    const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
    const float d = load_f16(b + 208);
    for (int e = 0; e < 256; e += 8) {
      const int h = e / 128, r = e % 128;
      const __m128i lshift = _mm_cvtsi32_si128(4 * (r / 64));
      const __m128i hshift = _mm_cvtsi32_si128(2 * (r / 32));
      const __m256i lo =
          _mm256_and_si256(_mm256_srl_epi32(u8x8(ql + 64 * h + r % 64), lshift), low);
      const __m256i hi =
          _mm256_and_si256(_mm256_srl_epi32(u8x8(qh + 32 * h + r % 32), hshift), three);
      const __m256i q = _mm256_sub_epi32(_mm256_or_si256(lo, _mm256_slli_epi32(hi, 4)), bias);
      const __m256 dl = _mm256_set1_ps(d * static_cast<float>(sc[e / 16]));
      _mm256_storeu_ps(y + e, _mm256_mul_ps(dl, to_f32(q)));
    }
  }
}

}  // namespace

bool avx2_compiled() { return true; }

bool dequantize_row_avx2(DType t, const void* src, float* dst, int64_t n) {
  const auto* b = static_cast<const uint8_t*>(src);
  switch (t) {
    case DType::kF16:
      deq_f16(b, dst, n);
      return true;
    case DType::kBF16:
      deq_bf16(b, dst, n);
      return true;
    case DType::kQ4_0:
      deq_q4_0(b, dst, n / 32);
      return true;
    case DType::kQ4_1:
      deq_q4_1(b, dst, n / 32);
      return true;
    case DType::kQ5_0:
      deq_q5_0(b, dst, n / 32);
      return true;
    case DType::kQ5_1:
      deq_q5_1(b, dst, n / 32);
      return true;
    case DType::kQ8_0:
      deq_q8_0(b, dst, n / 32);
      return true;
    case DType::kQ4_K:
      deq_q4_k(b, dst, n / 256);
      return true;
    case DType::kQ5_K:
      deq_q5_k(b, dst, n / 256);
      return true;
    case DType::kQ6_K:
      deq_q6_k(b, dst, n / 256);
      return true;
    default:
      return false;  // f32 (a copy), q2_k, q3_k: scalar
  }
}

}  // namespace fkv::quant_detail

#else  // not x86-64 with AVX2: nothing to dispatch to

namespace fkv::quant_detail {
bool avx2_compiled() { return false; }
bool dequantize_row_avx2(DType, const void*, float*, int64_t) { return false; }
}  // namespace fkv::quant_detail

#endif
