// Element-wise and row-wise kernels of the forward pass. Each has a scalar twin (namespace
// fkv::scalar) that the tests compare against every ISA variant built; the unqualified functions
// dispatch once, at start-up, to the best variant the CPU supports.
#pragma once

#include <cstdint>

namespace fkv {

enum class RopeStyle : uint8_t {
  kNeox,         // HF rotate_half: pairs (i, i + rot_dim/2)
  kInterleaved,  // GPT-J / llama.cpp "normal": pairs (2i, 2i+1) (GGUF llama permuted weights)
};

// sum_i a[i] * b[i]
float dot(const float* a, const float* b, int64_t n);
// y[i] += alpha * x[i]
void axpy(float alpha, const float* x, float* y, int64_t n);
// y[i] = x[i] * w[i] / sqrt(mean(x^2) + eps), one row of dim elements
void rms_norm_row(const float* x, const float* w, int64_t dim, float eps, float* y);
// gate[i] = silu(gate[i]) * up[i]
void silu_mul(float* gate, const float* up, int64_t n);
// y[i] += x[i]
void add_inplace(float* y, const float* x, int64_t n);
// In-place numerically stable softmax of x[0..n).
void softmax_inplace(float* x, int64_t n);
// Rotates the first rot_dim dims of each head of one row x [n_heads * head_dim] at position pos.
// inv_freq : [rot_dim / 2] (already includes any rope scaling). Angles use float pos * inv_freq
// (as HF computes them) and cos/sin in double.
void rope_row(float* x, int n_heads, int head_dim, int rot_dim, int32_t pos, const float* inv_freq,
              RopeStyle style);
// rope_row of a row's q [n_q_heads * head_dim] and k [n_kv_heads * head_dim] at one position, the
// cos / sin computed once for both (they were ~1 % of a decode step, twice per row and layer).
void rope_qk_row(float* q, int n_q_heads, float* k, int n_kv_heads, int head_dim, int rot_dim,
                 int32_t pos, const float* inv_freq, RopeStyle style);

namespace scalar {
float dot(const float* a, const float* b, int64_t n);
void axpy(float alpha, const float* x, float* y, int64_t n);
void rms_norm_row(const float* x, const float* w, int64_t dim, float eps, float* y);
void silu_mul(float* gate, const float* up, int64_t n);
void add_inplace(float* y, const float* x, int64_t n);
void softmax_inplace(float* x, int64_t n);
}  // namespace scalar

// Name of the variant the dispatcher picked ("scalar", "avx2", "avx512").
const char* kernel_isa_name();

}  // namespace fkv
