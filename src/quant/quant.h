// Dequantisation of ggml block formats (and f16/bf16/f32 rows) to f32.
// Bit-exact against the `gguf` Python package's NumPy dequantisers (tests/unit/test_quant.cc).
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace fkv {

// True when dequantize_row supports `t`.
bool can_dequantize(DType t);
// dst[0..n) = values of the row that starts at `src`. n must be a multiple of the block size.
void dequantize_row(DType t, const void* src, float* dst, int64_t n);

// The portable reference path (tests compare the SIMD path against it bit for bit).
void dequantize_row_scalar(DType t, const void* src, float* dst, int64_t n);
// Name of the ISA dequantize_row dispatches to on this CPU: "avx2" or "scalar".
const char* dequantize_isa();

}  // namespace fkv
