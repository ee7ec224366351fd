// Per-ISA kernel tables. Every variant built into the binary is reachable explicitly (tests compare
// each against the scalar twin); the unqualified kernels in ops.h / matmul.h use active_kernels(),
// chosen once from the CPU's features (override with FKV_ISA=scalar|avx2|avx512|avx512bf16).
// "avx512+bf16dot" is the AVX-512 table plus vdpbf16ps kernels for bf16 weights (activations
// rounded to bf16, as ggml computes bf16 products); it is picked by default where the CPU has
// AVX512_BF16, and FKV_BF16_DOT=0 or FKV_ISA=avx512 keeps the exact f32 path.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/matmul.h"
#include "kernels/ops.h"

namespace fkv {

enum class Isa : uint8_t { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };
inline constexpr int kNumIsas = 3;

struct KernelTable {
  const char* name;
  float (*dot)(const float* a, const float* b, int64_t n);
  void (*axpy)(float alpha, const float* x, float* y, int64_t n);
  void (*rms_norm_row)(const float* x, const float* w, int64_t dim, float eps, float* y);
  void (*silu_mul)(float* gate, const float* up, int64_t n);
  void (*add_inplace)(float* y, const float* x, int64_t n);
  void (*softmax_inplace)(float* x, int64_t n);
  // Rotates pairs of the first rot_dim dims of every head with precomputed cos/sin [rot_dim / 2].
  void (*rope_rotate)(float* x, int n_heads, int head_dim, int rot_dim, const float* cos_t,
                      const float* sin_t, RopeStyle style);

  // ---- matmul micro-kernels (the threaded driver is shared, see matmul_with) ----
  // y[i * y_stride + r] = dot(x[i * x_stride ..], w[r * w_stride ..]) for i < n, r < nr, over
  // `cols` elements. w holds f32 rows; w_stride >= cols.
  void (*gemm_f32)(const float* x, int64_t n, int64_t x_stride, const float* w, int64_t nr,
                   int64_t w_stride, int64_t cols, float* y, int64_t y_stride);
  // Decode (n == 1) fused convert + dot over nr stored rows: y[r] = dot(x, row r).
  void (*gemv_f32)(const float* x, const uint8_t* w, size_t row_bytes, int64_t nr, int64_t cols,
                   float* y);
  void (*gemv_f16)(const float* x, const uint8_t* w, size_t row_bytes, int64_t nr, int64_t cols,
                   float* y);
  void (*gemv_bf16)(const float* x, const uint8_t* w, size_t row_bytes, int64_t nr, int64_t cols,
                    float* y);
  // Exact widening of a row of halves to f32.
  void (*f16_row_to_f32)(const uint16_t* src, float* dst, int64_t n);
  void (*bf16_row_to_f32)(const uint16_t* src, float* dst, int64_t n);
  // f32 to f16, round to nearest even, bit for bit core's f32_to_f16 (NaN -> sign | 0x7e00): the
  // KV cache's appends and prefill writes.
  void (*f32_row_to_f16)(const float* src, uint16_t* dst, int64_t n);
  // Prefill form (nullptr when the variant has none): x pre-packed by pack_x_panels, so the
  // kernel broadcasts weights and vectorises over kXPanel x rows, with no horizontal sums.
  //   xp : [ceil(n / kXPanel), cols, kXPanel]; y[i * y_stride + r] for i < n, r < nr.
  void (*gemm_xpacked)(const float* xp, int64_t n, const float* w, int64_t nr, int64_t w_stride,
                       int64_t cols, float* y, int64_t y_stride);

  // ---- bf16-dot form for bf16 weights (nullptr except in the avx512+bf16dot variant) ----
  // x is rounded once per matmul call to bf16 (round_row_bf16, the twin is round_to_bf16_dot);
  // products of bf16 pairs accumulate in f32 (vdpbf16ps), straight from the stored weight rows.
  //   xb : [round_up(cols, 32)] bf16, zero past cols.
  void (*round_row_bf16)(const float* x, int64_t cols, uint16_t* xb);
  // Decode / small n: y[r] = dot(xb, bf16 row r) for r < nr.
  void (*gemv_bf16dot)(const uint16_t* xb, const uint8_t* w, size_t row_bytes, int64_t nr,
                       int64_t cols, float* y);
  // Prefill: xp packed by pack_x_bf16_panels; y[i * y_stride + r] for i < n, r < nr.
  void (*gemm_bf16dot)(const uint32_t* xp, int64_t n, const uint8_t* w, size_t row_bytes,
                       int64_t nr, int64_t cols, float* y, int64_t y_stride);
};

// x rows per packed panel of gemm_xpacked.
inline constexpr int64_t kXPanel = 32;
// xp[p][c][l] = x[(p * kXPanel + l) * x_stride + c], zero past row n. xp holds
// ceil(n / kXPanel) * cols * kXPanel floats.
void pack_x_panels(const float* x, int64_t n, int64_t x_stride, int64_t cols, float* xp);

// bf16-dot panels: word xp[p][q][l] holds the bf16 pair (x[i][2q], x[i][2q + 1]) of row
// i = p * kXPanel + l (low half the even column), zero past row n and past column cols. xp holds
// ceil(n / kXPanel) * bf16_pairs(cols) * kXPanel words; k.round_row_bf16 does the rounding.
inline int64_t bf16_pairs(int64_t cols) { return (cols + 1) / 2; }
void pack_x_bf16_panels(const KernelTable& k, const float* x, int64_t n, int64_t x_stride,
                        int64_t cols, uint32_t* xp);
// The scalar twin of round_row_bf16 (what vcvtne2ps2bf16 does): round to nearest even, bf16
// denormals become signed zero (the instruction's DAZ/FTZ), NaN stays a quiet NaN.
uint16_t round_to_bf16_dot(float v);

// True when the variant is compiled in and the CPU (and OS) can run it.
bool isa_supported(Isa isa);
// The table of a variant, or nullptr when !isa_supported(isa).
const KernelTable* kernel_table(Isa isa);
// The avx512+bf16dot variant, or nullptr when the CPU lacks AVX512_BF16 (or AVX-512).
const KernelTable* bf16dot_kernel_table();
// The variant the dispatcher picked (once, at first use).
const KernelTable& active_kernels();
// The ISA of active_kernels() (kAvx512 for avx512+bf16dot): the other kernel families follow it.
Isa active_isa();
// The choice pick makes for the given FKV_ISA and FKV_BF16_DOT values (nullptr = unset), for tests.
const KernelTable& pick_kernels_for(const char* isa_env, const char* bf16_dot_env);

// matmul / rope_row using the given variant's micro-kernels (same threading as matmul()).
void matmul_with(const KernelTable& k, const float* x, int64_t n, int64_t x_stride,
                 const WeightMatrix& w, float* y, int64_t y_stride);
void matmul_rows_with(const KernelTable& k, const float* x, int64_t n, int64_t x_stride,
                      const WeightMatrix& w, float* y, int64_t y_stride);
void rope_row_with(const KernelTable& k, float* x, int n_heads, int head_dim, int rot_dim,
                   int32_t pos, const float* inv_freq, RopeStyle style);

namespace scalar {
void rope_row(float* x, int n_heads, int head_dim, int rot_dim, int32_t pos, const float* inv_freq,
              RopeStyle style);
}  // namespace scalar

// Tables defined by the per-ISA files (the AVX ones only when compiled for x86-64).
const KernelTable& scalar_kernel_table();
#if defined(__x86_64__)
const KernelTable& avx2_kernel_table();
const KernelTable& avx512_kernel_table();
// The avx512 table plus the vdpbf16ps kernels (ops_avx512bf16.cc).
const KernelTable& avx512bf16_kernel_table();
#endif

}  // namespace fkv
