#include "core/dtype.h"

#include "core/check.h"

namespace fkv {

std::optional<DTypeInfo> dtype_info(DType t) {
  switch (t) {
    case DType::kF32:
      return DTypeInfo{"f32", 1, 4, true};
    case DType::kF16:
      return DTypeInfo{"f16", 1, 2, true};
    case DType::kBF16:
      return DTypeInfo{"bf16", 1, 2, true};
    case DType::kQ4_0:
      return DTypeInfo{"q4_0", 32, 18, false};
    case DType::kQ4_1:
      return DTypeInfo{"q4_1", 32, 20, false};
    case DType::kQ5_0:
      return DTypeInfo{"q5_0", 32, 22, false};
    case DType::kQ5_1:
      return DTypeInfo{"q5_1", 32, 24, false};
    case DType::kQ8_0:
      return DTypeInfo{"q8_0", 32, 34, false};
    case DType::kQ8_1:
      return DTypeInfo{"q8_1", 32, 36, false};
    case DType::kQ2_K:
      return DTypeInfo{"q2_k", 256, 84, false};
    case DType::kQ3_K:
      return DTypeInfo{"q3_k", 256, 110, false};
    case DType::kQ4_K:
      return DTypeInfo{"q4_k", 256, 144, false};
    case DType::kQ5_K:
      return DTypeInfo{"q5_k", 256, 176, false};
    case DType::kQ6_K:
      return DTypeInfo{"q6_k", 256, 210, false};
    case DType::kQ8_K:
      return DTypeInfo{"q8_k", 256, 292, false};
    case DType::kI8:
      return DTypeInfo{"i8", 1, 1, false};
    case DType::kI16:
      return DTypeInfo{"i16", 1, 2, false};
    case DType::kI32:
      return DTypeInfo{"i32", 1, 4, false};
    case DType::kI64:
      return DTypeInfo{"i64", 1, 8, false};
    case DType::kF64:
      return DTypeInfo{"f64", 1, 8, false};
  }
  return std::nullopt;
}

const char* dtype_name(DType t) {
  auto info = dtype_info(t);
  return info ? info->name : "unknown";
}

size_t dtype_row_bytes(DType t, int64_t n) {
  auto info = dtype_info(t);
  FKV_CHECK(info.has_value(), "unknown dtype id %u", static_cast<unsigned>(t));
  FKV_CHECK(n % info->block_elems == 0, "row of %lld elements is not a multiple of %s block %d",
            static_cast<long long>(n), info->name, info->block_elems);
  return static_cast<size_t>(n / info->block_elems) * static_cast<size_t>(info->block_bytes);
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ffu;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t absx = x & 0x7fffffffu;
  if (absx > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);   // NaN
  if (absx >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow -> inf
  if (absx < 0x38800000u) {                                               // subnormal / zero
    if (absx < 0x33000000u) return static_cast<uint16_t>(sign);
    const uint32_t e = absx >> 23;
    const uint32_t m = (absx & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - e;  // f16 subnormal = M * 2^-24, M = 24-bit mantissa
    // round to nearest even on the bits shifted out
    const uint32_t rem = m & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1);
    uint32_t r = m >> shift;
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return static_cast<uint16_t>(sign | r);
  }
  uint32_t r = absx - 0x38000000u;  // rebias exponent 127 -> 15
  const uint32_t rem = r & 0x1fffu;
  r >>= 13;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;
  return static_cast<uint16_t>(sign | r);
}

}  // namespace fkv
