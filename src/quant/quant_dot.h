// Products of quantised weight rows with quantised activation rows, the way ggml's CPU backend does
// them: each activation row is quantised once to the weight type's "vec_dot_type" (q8_0, q8_1 or
// q8_K, with ggml's rounding, see quantize_row_for_dot), then every output element is a sum over
// blocks of an exact integer dot product scaled in f32.
//
// Float order: the scalar kernels repeat ggml's generic C (one f32 accumulator, blocks in order),
// the AVX2 kernels ggml's AVX2 structure (block scale times the 8 per-lane integer partial sums
// fused into an 8-lane f32 accumulator, horizontal sum at the end, q*_1 min terms summed as
// scalars). Integer parts are identical; the two float orders agree to ~1e-6 of sum |terms|.
//
// Activation block layouts (bytes, as in ggml-common.h):
//   q8_0 (34): d f16 | qs i8[32]
//   q8_1 (36): d f16 | s f16 (= d * sum(qs), rounded once) | qs i8[32]
//   q8_K (292): d f32 | qs i8[256] | bsums i16[16] (sums of 16 consecutive qs)
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/dtype.h"

namespace fkv {

// The activation format ggml pairs with weight type `t`: kQ8_0 (q4_0, q5_0, q8_0), kQ8_1 (q4_1,
// q5_1) or kQ8_K (k-quants). kF32 when fastkv has no quantised dot for `t`.
DType vec_dot_type(DType t);
// True when a quantised dot exists for weight type `t` (vec_dot_type(t) != kF32).
bool has_quant_dot(DType t);
// Bytes of one activation row of n elements quantised for weight type `t`.
size_t vec_dot_row_bytes(DType t, int64_t n);

// ggml's reference activation quantisers. n must be a multiple of the block size (32, or 256 for
// q8_K). y receives n / block blocks in the layouts above.
void quantize_row_q8_0_ref(const float* x, void* y, int64_t n);
void quantize_row_q8_1_ref(const float* x, void* y, int64_t n);
void quantize_row_q8_K_ref(const float* x, void* y, int64_t n);
// What ggml-cpu's x86 build runs instead of the *_ref code for q8_0 / q8_1 activations:
// id = 127 / amax (not 1 / (amax / 127)) and round half to even (not half away from zero).
void quantize_row_q8_0_x86(const float* x, void* y, int64_t n);
void quantize_row_q8_1_x86(const float* x, void* y, int64_t n);
// Quantises x[n] to vec_dot_type(t) (which must not be kF32): q8_0 / q8_1 with the *_x86 rounding
// (llama.cpp's x86 CPU backend; FKV_Q8_ROUND=ref switches to the *_ref one), q8_K with *_ref (the
// only one ggml has on x86).
void quantize_row_for_dot(DType t, const float* x, void* y, int64_t n);

// kAvx512: the AVX2 kernels with AVX512-VNNI lane sums (vpdpbusd), plus a 512-bit form pairing two
// activation rows for prefill; bit-identical to kAvx2.
enum class QDotIsa : uint8_t { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

// y[i * y_stride + r] = dot(weight row r, activation row i) for r < nr, i < nx, over n elements:
//   w  : nr weight rows of type t, w_stride bytes apart
//   xq : nx activation rows quantised by quantize_row_for_dot(t, ...), xq_stride bytes apart
// Every element is computed by the same operations whatever nr and nx are (so callers may tile
// freely without changing results).
using QDotFn = void (*)(const uint8_t* w, size_t w_stride, int64_t nr, const uint8_t* xq,
                        size_t xq_stride, int64_t nx, int64_t n, float* y, int64_t y_stride);

// True when the variant is compiled in and this CPU can run it.
bool quant_dot_isa_supported(QDotIsa isa);
// The best supported variant (FKV_ISA=scalar|avx2 caps it).
QDotIsa quant_dot_best_isa();
const char* quant_dot_isa_name(QDotIsa isa);
// The kernel for weight type `t` in a variant; nullptr when there is none (the variant falls back
// to nothing: callers pick another path).
QDotFn quant_dot_fn(DType t, QDotIsa isa);

// True where the variant has the 512-bit paired prefill form for `t` (kAvx512 with q4_0, q4_1,
// q5_0, q5_1, q8_0): the one case where the quantised dot beats dequantise + f32 for many x rows.
bool quant_dot_has_paired_prefill(DType t, QDotIsa isa);

// One dot product with the best variant (tests and tools; matmul uses quant_dot_fn).
float vec_dot_quant(DType t, const void* w_row, const void* xq, int64_t n);

}  // namespace fkv
