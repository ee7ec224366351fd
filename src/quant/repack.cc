// x16 layouts: repacking, row extraction, the scalar twin of the 16-row dots and their dispatch.
#include "quant/repack.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/check.h"

// The scalar twin states the float order exactly: one product and one fma per block.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace fkv {

namespace repack_detail {
// Defined in repack_avx512.cc: the VNNI kernel for t, nullptr when that build has no AVX-512.
QDotFn x16_vnni_kernel(DType t);  // repack_avx512.cc
QDotFn x16_avx2_kernel(DType t);  // repack_avx2.cc: q4_0 and q4_1
}  // namespace repack_detail

namespace {

// Row-layout block: bytes, offset of the codes; x16 group block: offset of the codes.
struct X16Format {
  size_t row_block;  // 18 / 20 / 34
  size_t row_codes;  // 2 / 4 / 2
  size_t x16_codes;  // 32 / 64 / 32
  int code_words;    // 4-byte words of codes per row block: 4 / 4 / 8
  bool has_min;
};

X16Format format_of(DType t) {
  switch (t) {
    case DType::kQ4_0:
      return {18, 2, 32, 4, false};
    case DType::kQ4_1:
      return {20, 4, 64, 4, true};
    case DType::kQ8_0:
      return {34, 2, 32, 8, false};
    default:
      FKV_CHECK(false, "x16: no repacked layout for %s", dtype_name(t));
      return {};
  }
}

float load_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

// q8_0 codes are stored as code ^ 0x80 (unsigned, code + 128); repacking applies it, extraction
// undoes it.
void copy_word(DType t, const uint8_t* src, uint8_t* dst) {
  std::memcpy(dst, src, 4);
  if (t == DType::kQ8_0) {
    for (int k = 0; k < 4; ++k) dst[k] ^= 0x80;
  }
}

// One group (16 consecutive row-layout rows, `nb` blocks each) into x16 at dst.
void repack_group(DType t, const X16Format& f, const uint8_t* rows, int64_t nb, uint8_t* dst) {
  for (int64_t b = 0; b < nb; ++b) {
    uint8_t* out = dst + static_cast<size_t>(b) * 16 * f.row_block;
    for (int rho = 0; rho < 16; ++rho) {
      const uint8_t* blk = rows + (static_cast<size_t>(rho) * nb + b) * f.row_block;
      std::memcpy(out + 2 * rho, blk, 2);                          // d
      if (f.has_min) std::memcpy(out + 32 + 2 * rho, blk + 2, 2);  // m
      for (int j = 0; j < f.code_words; ++j) {
        copy_word(t, blk + f.row_codes + 4 * j, out + f.x16_codes + 64 * j + 4 * rho);
      }
    }
  }
}

// Weight code of element e (0..31) of row rho in an x16 group block, as the signed (q4_0, q8_0) or
// unsigned (q4_1) integer the dot multiplies.
int code_at(DType t, const X16Format& f, const uint8_t* blk, int rho, int e) {
  if (t == DType::kQ8_0) {
    return static_cast<int8_t>(blk[f.x16_codes + 64 * (e / 4) + 4 * rho + e % 4] ^ 0x80);
  }
  const int word = (e % 16) / 4;
  const int q = blk[f.x16_codes + 64 * word + 4 * rho + e % 4];
  const int nibble = e < 16 ? (q & 15) : (q >> 4);
  return t == DType::kQ4_0 ? nibble - 8 : nibble;
}

template <DType kT>
void dot_scalar(const uint8_t* w, size_t w_stride, int64_t nr, const uint8_t* xq, size_t xq_stride,
                int64_t nx, int64_t n, float* y, int64_t y_stride) {
  const X16Format f = format_of(kT);
  const size_t xblock = kT == DType::kQ4_1 ? 36 : 34;  // q8_1 / q8_0
  const size_t xcodes = kT == DType::kQ4_1 ? 4 : 2;
  const int64_t nb = n / 32;
  for (int64_t g = 0; g < nr / kRepackRows; ++g) {
    const uint8_t* wg = w + static_cast<size_t>(g * kRepackRows) * w_stride;
    for (int64_t i = 0; i < nx; ++i) {
      const uint8_t* xr = xq + static_cast<size_t>(i) * xq_stride;
      for (int rho = 0; rho < 16; ++rho) {
        float acc = 0.0f, msum = 0.0f;
        for (int64_t b = 0; b < nb; ++b) {
          const uint8_t* blk = wg + static_cast<size_t>(b) * 16 * f.row_block;
          const uint8_t* xb = xr + static_cast<size_t>(b) * xblock;
          int32_t isum = 0;
          for (int e = 0; e < 32; ++e) {
            isum += code_at(kT, f, blk, rho, e) * static_cast<int8_t>(xb[xcodes + e]);
          }
          const float s = load_f16(blk + 2 * rho) * load_f16(xb);
          acc = std::fma(static_cast<float>(isum), s, acc);
          if (f.has_min) {
            const float m = load_f16(blk + 32 + 2 * rho) * load_f16(xb + 2);
            msum = msum + m;
          }
        }
        y[i * y_stride + g * kRepackRows + rho] = f.has_min ? acc + msum : acc;
      }
    }
  }
}

QDotFn scalar_fn(DType t) {
  switch (t) {
    case DType::kQ4_0:
      return dot_scalar<DType::kQ4_0>;
    case DType::kQ4_1:
      return dot_scalar<DType::kQ4_1>;
    case DType::kQ8_0:
      return dot_scalar<DType::kQ8_0>;
    default:
      return nullptr;
  }
}

}  // namespace

bool x16_type(DType t) { return t == DType::kQ4_0 || t == DType::kQ4_1 || t == DType::kQ8_0; }

bool x16_shape_ok(DType t, int64_t rows, int64_t cols) {
  return x16_type(t) && rows > 0 && cols > 0 && rows % kRepackRows == 0 && cols % 32 == 0;
}

void repack_x16(DType t, const uint8_t* src, uint8_t* dst, int64_t rows, int64_t cols) {
  FKV_CHECK(x16_shape_ok(t, rows, cols), "repack_x16: %s [%lld, %lld]", dtype_name(t),
            static_cast<long long>(rows), static_cast<long long>(cols));
  const X16Format f = format_of(t);
  const int64_t nb = cols / 32;
  const size_t group_bytes = static_cast<size_t>(kRepackRows * nb) * f.row_block;
  std::vector<uint8_t> tmp(src == dst ? group_bytes : 0);
  for (int64_t g = 0; g < rows / kRepackRows; ++g) {
    const uint8_t* in = src + g * group_bytes;
    uint8_t* out = dst + g * group_bytes;
    if (src == dst) {
      std::memcpy(tmp.data(), in, group_bytes);
      in = tmp.data();
    }
    repack_group(t, f, in, nb, out);
  }
}

void x16_row(DType t, const uint8_t* data, int64_t cols, int64_t r, uint8_t* row_out) {
  const X16Format f = format_of(t);
  const int64_t nb = cols / 32;
  const int64_t g = r / kRepackRows;
  const int rho = static_cast<int>(r % kRepackRows);
  const uint8_t* wg = data + static_cast<size_t>(g * kRepackRows * nb) * f.row_block;
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = wg + static_cast<size_t>(b) * 16 * f.row_block;
    uint8_t* out = row_out + static_cast<size_t>(b) * f.row_block;
    std::memcpy(out, blk + 2 * rho, 2);
    if (f.has_min) std::memcpy(out + 2, blk + 32 + 2 * rho, 2);
    for (int j = 0; j < f.code_words; ++j) {
      copy_word(t, blk + f.x16_codes + 64 * j + 4 * rho, out + f.row_codes + 4 * j);
    }
  }
}

QDotFn x16_dot_fn(DType t, QDotIsa isa) {
  if (!x16_type(t)) return nullptr;
  switch (isa) {
    case QDotIsa::kScalar:
      return scalar_fn(t);
    case QDotIsa::kAvx512:
      return quant_dot_isa_supported(isa) ? repack_detail::x16_vnni_kernel(t) : nullptr;
    case QDotIsa::kAvx2:
      return quant_dot_isa_supported(isa) ? repack_detail::x16_avx2_kernel(t) : nullptr;
    default:
      return nullptr;
  }
}

QDotFn x16_best_dot(DType t) {
  QDotFn f = x16_dot_fn(t, quant_dot_best_isa());
  return f != nullptr ? f : scalar_fn(t);
}

bool x16_repack_enabled(DType t) {
  static const bool allowed = [] {
    const char* env = std::getenv("FKV_REPACK");
    return env == nullptr || std::strcmp(env, "0") != 0;
  }();
  const QDotIsa isa = quant_dot_best_isa();
  return allowed && isa != QDotIsa::kScalar && x16_dot_fn(t, isa) != nullptr;
}

}  // namespace fkv
