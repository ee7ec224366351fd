// Private to src/quant: the per-ISA entry points behind dequantize_row's dispatch.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace fkv::quant_detail {

// Returns false when the AVX2 file has no kernel for `t` (the caller falls back to scalar).
// Only call on a CPU with AVX2 + FMA + F16C.
bool dequantize_row_avx2(DType t, const void* src, float* dst, int64_t n);
// True when this build contains the AVX2 kernels at all.
bool avx2_compiled();

}  // namespace fkv::quant_detail
