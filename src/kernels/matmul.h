// Matrix products against weights in any supported dtype (f32/f16/bf16/ggml quants).
// Weights stay in their stored format (mmap'd). Prefill converts weight tiles to f32 on the fly
// (bf16 weights on AVX512_BF16 CPUs: bf16 activations and vdpbf16ps, see dispatch.h);
// decode-sized products on quantized weights use llama.cpp-style 8-bit activation dot products.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "core/dtype.h"
#include "core/thread_pool.h"  // set_num_threads / num_threads: the kernels' thread count

namespace fkv {

// A 2-D weight as stored by HF (out x in, row-major): rows = out features, cols = in features.
// kRows: row r at data + r * row_bytes. kX16: q4_0 / q4_1 / q8_0 rows repacked 16 at a time for the
// VNNI dot (quant/repack.h); only matmul, matmul_rows, matmul_scalar and weight_row_to_f32 read it.
enum class WeightLayout : uint8_t { kRows, kX16 };

struct WeightMatrix {
  DType dtype = DType::kF32;
  WeightLayout layout = WeightLayout::kRows;
  const uint8_t* data = nullptr;  // borrowed (mmap) or owned elsewhere
  int64_t rows = 0;
  int64_t cols = 0;
  size_t row_bytes = 0;  // bytes between row starts
  std::string name;      // tensor name, for error messages
  bool empty() const { return data == nullptr; }
  // The start of row r (kRows), or of r's 16-row group when r % 16 == 0 (kX16).
  const uint8_t* row(int64_t r) const { return data + static_cast<size_t>(r) * row_bytes; }
};

// Whether w's type and shape have an x16 layout and its rows are packed (row_bytes exact): what
// repacking needs and what a kX16 matrix must satisfy.
bool x16_layout_fits(const WeightMatrix& w);

// y[i, :] = W . x[i, :]  for i in [0, n)
//   x : [n, w.cols] with row stride x_stride (floats)
//   y : [n, w.rows] with row stride y_stride (floats)
// Work is split over the calling thread's pool (core/thread_pool.h). Deterministic: the result
// does not depend on the thread count.
void matmul(const float* x, int64_t n, int64_t x_stride, const WeightMatrix& w, float* y,
            int64_t y_stride);

// Row-wise form for batched decode: y[i, :] holds exactly the bits matmul(x[i, :], 1 row) gives,
// whatever n is (matmul switches kernels at n = 1 and n = 8, so its rows depend on n). Each tile of
// weight rows is loaded once and used for all n x rows while it is in cache.
void matmul_rows(const float* x, int64_t n, int64_t x_stride, const WeightMatrix& w, float* y,
                 int64_t y_stride);

// One output of matmul_rows_shared_x: y [n, w->rows] with row stride y_stride.
struct MatmulOut {
  const WeightMatrix* w;
  float* y;
  int64_t y_stride;
};

// matmul(x, n, x_stride, *o.w, o.y, o.y_stride) for every output o, the same bits. Where all are
// x16 weights of one type and width (a layer's q / k / v, or gate / up), x is quantised once and
// all their tiles run in one parallel region: a decode step ran 8 regions per layer, each ending
// in a wait for the slowest thread.
void matmul_shared_x(const float* x, int64_t n, int64_t x_stride, std::span<const MatmulOut> outs);
// The same for matmul_rows (batched decode).
void matmul_rows_shared_x(const float* x, int64_t n, int64_t x_stride,
                          std::span<const MatmulOut> outs);

// Scalar twin of matmul: the oracle for the optimised kernels' tests.
void matmul_scalar(const float* x, int64_t n, int64_t x_stride, const WeightMatrix& w, float* y,
                   int64_t y_stride);

// Scalar twin of the bf16-dot kernels (avx512+bf16dot, bf16 weights only): each x element rounded
// as vcvtne2ps2bf16 does (round_to_bf16_dot), bf16 weight denormals read as zero (vdpbf16ps's DAZ),
// exact products summed in double. The kernels differ from it only by their f32 accumulation.
void matmul_bf16dot_scalar(const float* x, int64_t n, int64_t x_stride, const WeightMatrix& w,
                           float* y, int64_t y_stride);

// Copies row r of an embedding-like weight [rows, cols] to dst[cols] as f32.
void weight_row_to_f32(const WeightMatrix& w, int64_t r, float* dst);

}  // namespace fkv
