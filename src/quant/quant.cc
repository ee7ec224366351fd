// Scalar dequantisation of ggml block formats. Each value is computed with the same f32 operations
// in the same order as the gguf package's NumPy code (and ggml's reference C), one rounding per
// operation, so results are bit-exact; contraction into FMA would change them, hence the pragma.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "quant/quant.h"

#include <cstring>

#include "core/check.h"
#include "core/cpu.h"
#include "quant/quant_internal.h"

namespace fkv {
namespace {

constexpr int kQK = 32;    // elements per block of the legacy formats
constexpr int kQKK = 256;  // elements per K-quant super-block

inline float load_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

// Block layouts (bytes, in order), as in ggml-common.h:
//   q4_0: d f16 | qs[16]               q4_1: d f16 | m f16 | qs[16]
//   q5_0: d f16 | qh u32 | qs[16]      q5_1: d f16 | m f16 | qh u32 | qs[16]
//   q8_0: d f16 | qs i8[32]
// Element j < 16 takes the low nibble of qs[j], element j + 16 the high nibble; q5 adds bit j of qh
// as the fifth bit.
void deq_q4_0(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 18, y += kQK) {
    const float d = load_f16(b);
    const uint8_t* qs = b + 2;
    for (int j = 0; j < 16; ++j) {
      y[j] = d * static_cast<float>((qs[j] & 0x0f) - 8);
      y[j + 16] = d * static_cast<float>((qs[j] >> 4) - 8);
    }
  }
}

void deq_q4_1(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 20, y += kQK) {
    const float d = load_f16(b);
    const float m = load_f16(b + 2);
    const uint8_t* qs = b + 4;
    for (int j = 0; j < 16; ++j) {
      y[j] = d * static_cast<float>(qs[j] & 0x0f) + m;
      y[j + 16] = d * static_cast<float>(qs[j] >> 4) + m;
    }
  }
}

void deq_q5_0(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 22, y += kQK) {
    const float d = load_f16(b);
    uint32_t qh;
    std::memcpy(&qh, b + 2, 4);
    const uint8_t* qs = b + 6;
    for (int j = 0; j < 16; ++j) {
      const int lo = (qs[j] & 0x0f) | static_cast<int>(((qh >> j) & 1u) << 4);
      const int hi = (qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
      y[j] = d * static_cast<float>(lo - 16);
      y[j + 16] = d * static_cast<float>(hi - 16);
    }
  }
}

void deq_q5_1(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 24, y += kQK) {
    const float d = load_f16(b);
    const float m = load_f16(b + 2);
    uint32_t qh;
    std::memcpy(&qh, b + 4, 4);
    const uint8_t* qs = b + 8;
    for (int j = 0; j < 16; ++j) {
      const int lo = (qs[j] & 0x0f) | static_cast<int>(((qh >> j) & 1u) << 4);
      const int hi = (qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
      y[j] = d * static_cast<float>(lo) + m;
      y[j + 16] = d * static_cast<float>(hi) + m;
    }
  }
}

void deq_q8_0(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 34, y += kQK) {
    const float d = load_f16(b);
    const int8_t* qs = reinterpret_cast<const int8_t*>(b + 2);
    for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(qs[j]) * d;
  }
}

// q2_k (84 bytes): scales[16] (low nibble scale, high nibble min) | qs[64] | d f16 | dmin f16.
// Element 128h + 32s + l (h < 2, s < 4, l < 32) = bits 2s..2s+1 of qs[32h + l]; its 16-element
// group g = element / 16 uses scales[g].
void deq_q2_k(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 84, y += kQKK) {
    const uint8_t* sc = b;
    const uint8_t* qs = b + 16;
    const float d = load_f16(b + 80);
    const float dmin = load_f16(b + 82);
    for (int h = 0; h < 2; ++h) {
      for (int s = 0; s < 4; ++s) {
        for (int half = 0; half < 2; ++half) {
          const int g = h * 8 + s * 2 + half;
          const float dl = d * static_cast<float>(sc[g] & 0x0f);
          const float ml = dmin * static_cast<float>(sc[g] >> 4);
          for (int l = half * 16; l < half * 16 + 16; ++l) {
            const int q = (qs[h * 32 + l] >> (2 * s)) & 3;
            y[h * 128 + s * 32 + l] = dl * static_cast<float>(q) - ml;
          }
        }
      }
    }
  }
}

// q3_k (110 bytes): hmask[32] | qs[64] | scales[12] (16 six-bit scales, packed) | d f16.
// Low two bits as in q2_k; bit i of hmask[l] is the high bit of element 32i + l, and a CLEAR bit
// subtracts 4. Scale g: low nibble from byte g % 8 (high nibble when g >= 8), top two bits from
// byte 8 + g % 4 at bit 2 * (g / 4); stored with +32 bias.
void deq_q3_k(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 110, y += kQKK) {
    const uint8_t* hm = b;
    const uint8_t* qs = b + 32;
    const uint8_t* sc = b + 96;
    const float d = load_f16(b + 108);
    float dl[16];
    for (int g = 0; g < 16; ++g) {
      const int lo = (sc[g % 8] >> (g < 8 ? 0 : 4)) & 0x0f;
      const int hi = (sc[8 + g % 4] >> (2 * (g / 4))) & 3;
      dl[g] = d * static_cast<float>((lo | (hi << 4)) - 32);
    }
    for (int h = 0; h < 2; ++h) {
      for (int s = 0; s < 4; ++s) {
        for (int l = 0; l < 32; ++l) {
          const int e = h * 128 + s * 32 + l;
          const int q = ((qs[h * 32 + l] >> (2 * s)) & 3) - (((hm[l] >> (e / 32)) & 1) ? 0 : 4);
          y[e] = dl[e / 16] * static_cast<float>(q);
        }
      }
    }
  }
}

// The 12-byte scale/min block of q4_k and q5_k: eight 6-bit scales and eight 6-bit mins.
inline void k_scale_min(const uint8_t* s, int j, int* sc, int* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
    *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// q4_k (144 bytes): d f16 | dmin f16 | scales[12] | qs[128]. Sub-block j (32 elements) uses the
// low (j even) or high (j odd) nibbles of qs[32 * (j / 2) ...].
void deq_q4_k(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 144, y += kQKK) {
    const float d = load_f16(b);
    const float dmin = load_f16(b + 2);
    const uint8_t* scales = b + 4;
    const uint8_t* qs = b + 16;
    for (int j = 0; j < 8; ++j) {
      int sc, m;
      k_scale_min(scales, j, &sc, &m);
      const float d1 = d * static_cast<float>(sc);
      const float m1 = dmin * static_cast<float>(m);
      const uint8_t* q = qs + 32 * (j / 2);
      const int shift = 4 * (j % 2);
      for (int l = 0; l < 32; ++l) {
        y[j * 32 + l] = d1 * static_cast<float>((q[l] >> shift) & 0x0f) - m1;
      }
    }
  }
}

// q5_k (176 bytes): d f16 | dmin f16 | scales[12] | qh[32] | qs[128]; bit j of qh[l] is the fifth
// bit of element 32j + l.
void deq_q5_k(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 176, y += kQKK) {
    const float d = load_f16(b);
    const float dmin = load_f16(b + 2);
    const uint8_t* scales = b + 4;
    const uint8_t* qh = b + 16;
    const uint8_t* qs = b + 48;
    for (int j = 0; j < 8; ++j) {
      int sc, m;
      k_scale_min(scales, j, &sc, &m);
      const float d1 = d * static_cast<float>(sc);
      const float m1 = dmin * static_cast<float>(m);
      const uint8_t* q = qs + 32 * (j / 2);
      const int shift = 4 * (j % 2);
      for (int l = 0; l < 32; ++l) {
        const int v = ((q[l] >> shift) & 0x0f) | (((qh[l] >> j) & 1) << 4);
        y[j * 32 + l] = d1 * static_cast<float>(v) - m1;
      }
    }
  }
}

// q6_k (210 bytes): ql[128] | qh[64] | scales i8[16] | d f16. Element 128h + 64k + l (l < 64):
// nibble k of ql[64h + l]; element 128h + 32s + l (l < 32): bits 2s..2s+1 of qh[32h + l] are its
// top two bits. Values carry a +32 bias; 16-element group g uses scales[g].
void deq_q6_k(const uint8_t* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, b += 210, y += kQKK) {
    const uint8_t* ql = b;
    const uint8_t* qh = b + 128;
    const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
    const float d = load_f16(b + 208);
    for (int e = 0; e < kQKK; ++e) {
      const int h = e / 128, r = e % 128;
      const int lo = (ql[64 * h + r % 64] >> (4 * (r / 64))) & 0x0f;
      const int hi = (qh[32 * h + r % 32] >> (2 * (r / 32))) & 3;
      const float dl = d * static_cast<float>(sc[e / 16]);
      y[e] = dl * static_cast<float>((lo | (hi << 4)) - 32);
    }
  }
}

bool avx2_usable() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool ok = quant_detail::avx2_compiled() && cpu_has_avx2_fma_f16c();
  return ok;
#else
  return false;
#endif
}

}  // namespace

bool can_dequantize(DType t) {
  switch (t) {
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16:
    case DType::kQ4_0:
    case DType::kQ4_1:
    case DType::kQ5_0:
    case DType::kQ5_1:
    case DType::kQ8_0:
    case DType::kQ2_K:
    case DType::kQ3_K:
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K:
      return true;
    default:
      return false;
  }
}

void dequantize_row_scalar(DType t, const void* src, float* dst, int64_t n) {
  FKV_CHECK(can_dequantize(t), "dequantize_row: unsupported type %s (%u)", dtype_name(t),
            static_cast<unsigned>(t));
  const int block = dtype_info(t)->block_elems;
  FKV_CHECK(n >= 0 && n % block == 0,
            "dequantize_row: %lld elements is not a multiple of the %s "
            "block size %d",
            static_cast<long long>(n), dtype_name(t), block);
  const auto* b = static_cast<const uint8_t*>(src);
  const int64_t nb = n / block;
  switch (t) {
    case DType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      break;
    case DType::kF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = load_f16(b + 2 * i);
      break;
    case DType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, b + 2 * i, 2);
        dst[i] = bf16_to_f32(h);
      }
      break;
    case DType::kQ4_0:
      deq_q4_0(b, dst, nb);
      break;
    case DType::kQ4_1:
      deq_q4_1(b, dst, nb);
      break;
    case DType::kQ5_0:
      deq_q5_0(b, dst, nb);
      break;
    case DType::kQ5_1:
      deq_q5_1(b, dst, nb);
      break;
    case DType::kQ8_0:
      deq_q8_0(b, dst, nb);
      break;
    case DType::kQ2_K:
      deq_q2_k(b, dst, nb);
      break;
    case DType::kQ3_K:
      deq_q3_k(b, dst, nb);
      break;
    case DType::kQ4_K:
      deq_q4_k(b, dst, nb);
      break;
    case DType::kQ5_K:
      deq_q5_k(b, dst, nb);
      break;
    case DType::kQ6_K:
      deq_q6_k(b, dst, nb);
      break;
    default:
      break;
  }
}

void dequantize_row(DType t, const void* src, float* dst, int64_t n) {
  if (avx2_usable()) {
    FKV_CHECK(can_dequantize(t), "dequantize_row: unsupported type %s (%u)", dtype_name(t),
              static_cast<unsigned>(t));
    const int block = dtype_info(t)->block_elems;
    FKV_CHECK(n >= 0 && n % block == 0,
              "dequantize_row: %lld elements is not a multiple of the %s block size %d",
              static_cast<long long>(n), dtype_name(t), block);
    if (quant_detail::dequantize_row_avx2(t, src, dst, n)) return;
  }
  dequantize_row_scalar(t, src, dst, n);
}

const char* dequantize_isa() { return avx2_usable() ? "avx2" : "scalar"; }

}  // namespace fkv
