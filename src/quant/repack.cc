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
QDotFn x16_avx2_kernel(DType t);  // repack_avx2.cc: all but q8_0
// The int8 multiply-add instruction's peak loops (MACs done; 0 where not built).
int64_t vnni_peak_loop(int64_t iters);  // repack_avx512.cc: vpdpbusd zmm
int64_t avx2_peak_loop(int64_t iters);  // repack_avx2.cc: vpmaddubsw ymm
}  // namespace repack_detail

namespace {

// One field of a row-layout block and where its units go in the x16 group block: unit u (2 bytes
// for an f16, 4 for a code word) of row rho lands at x16_off + 16 * unit * u + unit * rho, so one
// vector load gives unit u of the 16 rows. `flip`: bytes stored ^ 0x80 (q8_0's unsigned codes).
struct X16Field {
  size_t row_off, bytes, unit, x16_off;
  bool flip = false;
};

// Row-layout block of `block_elems` elements: its bytes and fields. The fields tile the block
// exactly, so a group block has the bytes of its 16 row blocks (repacking works in place).
struct X16Format {
  int64_t block_elems;  // 32, or 256 for the k-quants
  size_t row_block;     // 18 / 20 / 34 / 144 / 176 / 210
  X16Field fields[5];
  int n_fields;
  size_t x16_codes;  // q4_0 / q4_1 / q8_0: offset of the code words in the group block
  bool has_min;
};

X16Format format_of(DType t) {
  switch (t) {
    case DType::kQ4_0:  // d | nibbles[16]
      return {32, 18, {{0, 2, 2, 0}, {2, 16, 4, 32}}, 2, 32, false};
    case DType::kQ4_1:  // d | m | nibbles[16]
      return {32, 20, {{0, 2, 2, 0}, {2, 2, 2, 32}, {4, 16, 4, 64}}, 3, 64, true};
    case DType::kQ8_0:  // d | codes[32]
      return {32, 34, {{0, 2, 2, 0}, {2, 32, 4, 32, true}}, 2, 32, false};
    case DType::kQ4_K:  // d | dmin | scales[12] | nibbles[128]
      return {256, 144, {{0, 2, 2, 0}, {2, 2, 2, 32}, {4, 12, 4, 64}, {16, 128, 4, 256}},
              4,   0,   true};
    case DType::kQ5_K:  // d | dmin | scales[12] | qh[32] | nibbles[128]
      return {256,
              176,
              {{0, 2, 2, 0}, {2, 2, 2, 32}, {4, 12, 4, 64}, {16, 32, 4, 256}, {48, 128, 4, 768}},
              5,
              0,
              true};
    case DType::kQ6_K:  // ql[128] | qh[64] | scales[16] | d
      return {256, 210, {{208, 2, 2, 0}, {192, 16, 4, 32}, {0, 128, 4, 288}, {128, 64, 4, 2336}},
              4,   0,   false};
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

float load_f32(const uint8_t* p) {
  float f;
  std::memcpy(&f, p, 4);
  return f;
}

// Copies one unit between a row block and a group block (flip: ^ 0x80 each byte, both ways).
void copy_unit(const X16Field& f, const uint8_t* src, uint8_t* dst) {
  std::memcpy(dst, src, f.unit);
  if (f.flip) {
    for (size_t k = 0; k < f.unit; ++k) dst[k] ^= 0x80;
  }
}

size_t x16_unit_offset(const X16Field& f, size_t u, int rho) {
  return f.x16_off + 16 * f.unit * u + f.unit * static_cast<size_t>(rho);
}

// One group (16 consecutive row-layout rows, `nb` blocks each) into x16 at dst.
void repack_group(const X16Format& f, const uint8_t* rows, int64_t nb, uint8_t* dst) {
  for (int64_t b = 0; b < nb; ++b) {
    uint8_t* out = dst + static_cast<size_t>(b) * 16 * f.row_block;
    for (int rho = 0; rho < 16; ++rho) {
      const uint8_t* blk = rows + (static_cast<size_t>(rho) * nb + b) * f.row_block;
      for (int k = 0; k < f.n_fields; ++k) {
        const X16Field& fl = f.fields[k];
        for (size_t u = 0; u < fl.bytes / fl.unit; ++u) {
          copy_unit(fl, blk + fl.row_off + fl.unit * u, out + x16_unit_offset(fl, u, rho));
        }
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

// Byte p of row rho's code words starting at `off` in a group block (a 4-byte-unit field).
uint8_t word_byte(const uint8_t* blk, size_t off, int rho, int p) {
  return blk[off + 64 * static_cast<size_t>(p / 4) + 4 * static_cast<size_t>(rho) + p % 4];
}

// q4_K: scale and min of sub-block j (0..7) from the 12 packed bytes (ggml's get_scale_min_k4).
void q4k_scale_min(const uint8_t* s, int j, int* sc, int* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
    *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// q4_K code (0..15) of element e (0..255) of row rho: ggml's order, 64-element chunks whose low
// nibbles are elements 0..31 and high nibbles 32..63.
int q4k_code(const uint8_t* blk, int rho, int e) {
  const int chunk = e / 64, r = e % 64;
  const uint8_t q = word_byte(blk, 256, rho, 32 * chunk + r % 32);
  return r < 32 ? (q & 15) : (q >> 4);
}

// q5_K code (0..31) of element e of row rho: q4_K's nibble plus bit (2 chunk + high) of qh byte
// e % 32 as 16 (ggml's u1 / u2 masks).
int q5k_code(const uint8_t* blk, int rho, int e) {
  const int chunk = e / 64, r = e % 64, l = r % 32;
  const uint8_t q = word_byte(blk, 768, rho, 32 * chunk + l);
  const uint8_t qh = word_byte(blk, 256, rho, l);
  const int bit = 2 * chunk + (r < 32 ? 0 : 1);
  return (r < 32 ? (q & 15) : (q >> 4)) | (((qh >> bit) & 1) << 4);
}

// q6_K code (0..63, before its -32) of element e (0..255) of row rho: ggml's order, halves of 128
// whose quarters k = 0..3 take ql's low nibbles (k = 0, 1) or high ones (k = 2, 3) of bytes l
// (k even) or 32 + l (k odd) and qh's bits 2k, 2k + 1 of byte l.
int q6k_code(const uint8_t* blk, int rho, int e) {
  const int h = e / 128, k = (e % 128) / 32, l = e % 32;
  const uint8_t ql = word_byte(blk, 288, rho, 64 * h + (k % 2) * 32 + l);
  const uint8_t qh = word_byte(blk, 2336, rho, 32 * h + l);
  const int low = k < 2 ? (ql & 15) : (ql >> 4);
  return low | (((qh >> (2 * k)) & 3) << 4);
}

// The k-quant x16 float order (repack.h), as the vector kernels follow it. q8_K: d f32 | qs[256]
// | bsums i16[16].
template <DType kT>
void dot_scalar_k(const uint8_t* w, size_t w_stride, int64_t nr, const uint8_t* xq,
                  size_t xq_stride, int64_t nx, int64_t n, float* y, int64_t y_stride) {
  const X16Format f = format_of(kT);
  const int64_t nb = n / 256;
  for (int64_t g = 0; g < nr / kRepackRows; ++g) {
    const uint8_t* wg = w + static_cast<size_t>(g * kRepackRows) * w_stride;
    for (int64_t i = 0; i < nx; ++i) {
      const uint8_t* xr = xq + static_cast<size_t>(i) * xq_stride;
      for (int rho = 0; rho < 16; ++rho) {
        float acc = 0.0f, macc = 0.0f;
        for (int64_t b = 0; b < nb; ++b) {
          const uint8_t* blk = wg + static_cast<size_t>(b) * 16 * f.row_block;
          const uint8_t* xb = xr + static_cast<size_t>(b) * 292;
          const int8_t* xs = reinterpret_cast<const int8_t*>(xb + 4);
          int16_t bsums[16];
          std::memcpy(bsums, xb + 260, sizeof(bsums));
          const float dx = load_f32(xb);
          int32_t isum = 0, msum = 0;
          if constexpr (kT == DType::kQ4_K || kT == DType::kQ5_K) {
            uint8_t packed[12];
            for (int p = 0; p < 12; ++p) packed[p] = word_byte(blk, 64, rho, p);
            for (int j = 0; j < 8; ++j) {
              int sc, m;
              q4k_scale_min(packed, j, &sc, &m);
              int32_t sub = 0;
              for (int e = 32 * j; e < 32 * j + 32; ++e) {
                const int code = kT == DType::kQ4_K ? q4k_code(blk, rho, e) : q5k_code(blk, rho, e);
                sub += code * xs[e];
              }
              isum += sc * sub;
              msum += m * (bsums[2 * j] + bsums[2 * j + 1]);
            }
            acc = std::fma(static_cast<float>(isum), load_f16(blk + 2 * rho) * dx, acc);
            macc = std::fma(static_cast<float>(msum), load_f16(blk + 32 + 2 * rho) * dx, macc);
          } else {
            for (int j = 0; j < 16; ++j) {
              const int sc = static_cast<int8_t>(word_byte(blk, 32, rho, j));
              int32_t sub = -32 * bsums[j];
              for (int e = 16 * j; e < 16 * j + 16; ++e) sub += q6k_code(blk, rho, e) * xs[e];
              isum += sc * sub;
            }
            acc = std::fma(static_cast<float>(isum), load_f16(blk + 2 * rho) * dx, acc);
          }
        }
        y[i * y_stride + g * kRepackRows + rho] = kT == DType::kQ6_K ? acc : acc - macc;
      }
    }
  }
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
    case DType::kQ4_K:
      return dot_scalar_k<DType::kQ4_K>;
    case DType::kQ5_K:
      return dot_scalar_k<DType::kQ5_K>;
    case DType::kQ6_K:
      return dot_scalar_k<DType::kQ6_K>;
    default:
      return nullptr;
  }
}

}  // namespace

bool x16_type(DType t) {
  return t == DType::kQ4_0 || t == DType::kQ4_1 || t == DType::kQ8_0 || t == DType::kQ4_K ||
         t == DType::kQ5_K || t == DType::kQ6_K;
}

bool x16_shape_ok(DType t, int64_t rows, int64_t cols) {
  return x16_type(t) && rows > 0 && cols > 0 && rows % kRepackRows == 0 &&
         cols % format_of(t).block_elems == 0;
}

void repack_x16(DType t, const uint8_t* src, uint8_t* dst, int64_t rows, int64_t cols) {
  FKV_CHECK(x16_shape_ok(t, rows, cols), "repack_x16: %s [%lld, %lld]", dtype_name(t),
            static_cast<long long>(rows), static_cast<long long>(cols));
  const X16Format f = format_of(t);
  const int64_t nb = cols / f.block_elems;
  const size_t group_bytes = static_cast<size_t>(kRepackRows * nb) * f.row_block;
  std::vector<uint8_t> tmp(src == dst ? group_bytes : 0);
  for (int64_t g = 0; g < rows / kRepackRows; ++g) {
    const uint8_t* in = src + g * group_bytes;
    uint8_t* out = dst + g * group_bytes;
    if (src == dst) {
      std::memcpy(tmp.data(), in, group_bytes);
      in = tmp.data();
    }
    repack_group(f, in, nb, out);
  }
}

void x16_row(DType t, const uint8_t* data, int64_t cols, int64_t r, uint8_t* row_out) {
  const X16Format f = format_of(t);
  const int64_t nb = cols / f.block_elems;
  const int64_t g = r / kRepackRows;
  const int rho = static_cast<int>(r % kRepackRows);
  const uint8_t* wg = data + static_cast<size_t>(g * kRepackRows * nb) * f.row_block;
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = wg + static_cast<size_t>(b) * 16 * f.row_block;
    uint8_t* out = row_out + static_cast<size_t>(b) * f.row_block;
    for (int k = 0; k < f.n_fields; ++k) {
      const X16Field& fl = f.fields[k];
      for (size_t u = 0; u < fl.bytes / fl.unit; ++u) {
        copy_unit(fl, blk + x16_unit_offset(fl, u, rho), out + fl.row_off + fl.unit * u);
      }
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

int64_t int8_peak_loop(QDotIsa isa, int64_t iters) {
  if (!quant_dot_isa_supported(isa)) return 0;
  if (isa == QDotIsa::kAvx512) return repack_detail::vnni_peak_loop(iters);
  if (isa == QDotIsa::kAvx2) return repack_detail::avx2_peak_loop(iters);
  return 0;
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
