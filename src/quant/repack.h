// Quantised weights repacked 16 rows at a time ("x16": q4_0, q4_1, q8_0, and the k-quants q4_K,
// q5_K and q6_K of the Q4_K_M / Q5_K_M files most GGUFs are published in), for the AVX512-VNNI dot
// whose vector lanes are 16 weight rows (llama.cpp's CPU "repack" buffers do the same for its
// q4_0 GEMM).
//
// Why: in the row layout a block's 32 products land in 8 i32 lanes of one output, so every block
// costs a convert, a scale product and an fma per 8 lanes of every (weight row, x row) pair: the
// prefill and batched-decode kernels were bound by that float work. With 16 rows side by side, one
// vpdpbusd does 4 elements of 16 outputs, each output's block sum ends exact in its own lane, and
// the float work is one convert / product / fma per 16 outputs per block (docs/KERNELS.md).
//
// Layout: rows in groups of 16 (rows % 16 == 0, cols % 32 == 0); group g, block b starts at byte
// (g * nb + b) * 16 * B, B = the type's block bytes (18 / 20 / 34), nb = cols / 32. So the bytes
// are those of the row layout rearranged, a group still starts at row(16 g) and row_bytes is
// unchanged. Within a group block, row rho (0..15):
//   q4_0: [0, 32) f16 d at 2 rho; [32 + 64 j + 4 rho + t] = nibble byte 4 j + t (j, t < 4): low
//         nibble = element 4 j + t, high nibble = element 16 + 4 j + t
//   q4_1: d as q4_0; [32, 64) f16 m at 32 + 2 rho; nibble bytes at 64 + 64 j + 4 rho + t
//   q8_0: d as q4_0; [32 + 64 j + 4 rho + t] = (code of element 4 j + t) ^ 0x80 (j < 8): unsigned
//         code + 128, what vpdpbusd takes
//
// k-quants: superblocks of 256 elements (cols % 256 == 0); group superblock b at byte
// b * 16 * B (B = 144 / 210), its fields laid out unit by unit as above (unit u of row rho at
// field + 16 * unit * u + unit * rho; units are the f16 scales or 4-byte words):
//   q4_K (row: d, dmin, scales[12], qs[128]): d at 2 rho; dmin at 32 + 2 rho; the 12 packed 6-bit
//        scale / min bytes as 3 words at 64; the 128 nibble bytes as 32 words at 256
//   q5_K (row: d, dmin, scales[12], qh[32], qs[128]): as q4_K, plus qh as 8 words at 256 and the
//        nibbles as 32 words at 768; a code's fifth bit (16) is bit 2 c (+1 for high nibbles) of
//        qh byte e % 32, c = the element's 64-element chunk
//   q6_K (row: ql[128], qh[64], scales i8[16], d): d at 2 rho; scales as 4 words at 32; ql as 32
//        words at 288; qh as 16 words at 2336
// so one 64-byte load gives a word of all 16 rows, and the kernels unpack codes and scales for
// 16 rows at once. Activations are q8_K (d f32, qs[256], bsums i16[16]). Float order, per output:
//   acc = 0, macc = 0; for each superblock b in order:
//     q4_K, q5_K: isum = sum_j sc_j * (sum of code * x over sub-block j of 32) (exact i32)
//           msum = sum_j m_j * (x sum of sub-block j)                         (exact i32)
//           acc = fma(float(isum), d_w * d_x, acc); macc = fma(float(msum), dmin_w * d_x, macc)
//     q6_K: isum = sum_j sc_j * (sum of code * x over sub-block j of 16 - 32 * x sum of j)
//           acc = fma(float(isum), d_w * d_x, acc)
//   y = acc - macc (q4_K, q5_K) or acc (q6_K). Codes are unsigned (q4_K 0..15, q5_K 0..31, q6_K
//   0..63 before -32).
//
// Float order (every kernel, every ISA, any number of x rows): for output (row r, x row i),
//   acc = 0, msum = 0; for each block b in order:
//     acc = fma(float(isum_b), d_w * d_x, acc)     isum_b = sum of code * x over the block (exact)
//     msum = msum + m_w * s_x                      (q4_1 only; separate product and sum)
//   y = acc (+ msum for q4_1)
// with codes signed (q4_0: nibble - 8, q8_0: i8) or unsigned (q4_1: nibble). The scalar twin
// computes exactly this, so every variant gives the same bits. The row-layout kernels of
// quant_dot.h sum 8 lanes per block instead: the layouts agree to ~1e-6 of sum |terms|, not
// bitwise.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/dtype.h"
#include "quant/quant_dot.h"

namespace fkv {

inline constexpr int64_t kRepackRows = 16;  // rows per x16 group

// Whether weights of type t have an x16 layout (q4_0, q4_1, q8_0, q4_K, q5_K, q6_K).
bool x16_type(DType t);
// Whether a [rows, cols] matrix of type t can be repacked (x16_type, rows % 16, cols % 32 or 256).
bool x16_shape_ok(DType t, int64_t rows, int64_t cols);
// Row layout -> x16, rows * cols / 32 * B bytes each way. src may equal dst (in place, one group at
// a time); otherwise they must not overlap.
void repack_x16(DType t, const uint8_t* src, uint8_t* dst, int64_t rows, int64_t cols);
// Row r of an x16 matrix back in the row layout (cols / 32 blocks).
void x16_row(DType t, const uint8_t* data, int64_t cols, int64_t r, uint8_t* row_out);

// y[i * y_stride + r] = dot(row r, x row i) for r < nr (nr % 16 == 0), i < nx:
//   w  : the x16 bytes of rows [0, nr) (a group start), w_stride = the row bytes
//   xq : activation rows quantised by quantize_row_for_dot(t, ...), xq_stride bytes apart.
// The same QDotFn signature as quant_dot_fn's kernels.
// kScalar always exists; kAvx512 (VNNI, every x16 type) and kAvx2 (q4_0 / q4_1 only; nullptr for
// q8_0 and the k-quants) where compiled and supported.
QDotFn x16_dot_fn(DType t, QDotIsa isa);
// The best variant for this machine (FKV_ISA caps it).
QDotFn x16_best_dot(DType t);
// The peak of the x16 kernels' int8 multiply-add instruction on this core: `iters` steps of
// independent chains of vpdpbusd zmm (kAvx512) or vpmaddubsw ymm (kAvx2); returns the
// multiply-adds done (0 where the variant is not built or supported). For bench --int8-peak.
int64_t int8_peak_loop(QDotIsa isa, int64_t iters);
// True when the model loader repacks matrices of type t: this machine's best variant (FKV_ISA caps
// it) has a vector x16 kernel for t and FKV_REPACK is not "0". Elsewhere the row-layout kernels
// are faster than the scalar x16 dot (so q8_0 keeps its rows on AVX2-only machines).
bool x16_repack_enabled(DType t);

}  // namespace fkv
