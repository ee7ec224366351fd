// Causal (optionally sliding-window) multi-head attention with grouped KV heads, for prefill (many
// query rows against themselves) and decode (one query row against per-KV-head caches).
// The unqualified functions run a tiled, online-softmax kernel (flash-attention style) on the best
// ISA variant; fkv::scalar has the double-accumulating twins the tests use as the oracle.
#pragma once

#include <cstdint>
#include <functional>

#include "kernels/dispatch.h"

namespace fkv {

struct AttentionShape {
  int n_heads = 0;     // query heads
  int n_kv_heads = 0;  // KV heads; query head h reads KV head h / (n_heads / n_kv_heads)
  int head_dim = 0;
  float scale = 1.0f;      // multiplies q.k before the softmax
  int sliding_window = 0;  // 0 = none; else key j is visible to query r iff pos_r - pos_j < window
};

// Prefill: n rows with ascending original positions pos[0..n). Row r attends to rows j <= r with
// pos[r] - pos[j] < sliding_window (when set).
//   q   : [n, n_heads * hd]    row stride q_stride
//   k, v: [n, n_kv_heads * hd] row stride kv_stride
//   out : [n, n_heads * hd]    row stride out_stride
// The result does not depend on the thread count (fixed work split, no cross-thread reductions).
// `between_parts`, when set, is called on the calling thread between the parts of the work (a few
// per call, outside parallel regions), e.g. to stop a long prompt: it may throw.
void attention_prefill(const AttentionShape& s, const float* q, int64_t q_stride, const float* k,
                       const float* v, int64_t kv_stride, const int32_t* pos, int n, float* out,
                       int64_t out_stride, const std::function<void()>& between_parts = {});

// Decode: one query row q [n_heads * hd] against each KV head's own cache: k_heads[g], v_heads[g]
// [len[g], hd], pos_heads[g] [len[g]] ascending; qpos is the query's position (for the window).
// A head with no visible key (len 0, or all outside the window) gets a zero output.
//   out : [n_heads * hd]
void attention_decode(const AttentionShape& s, const float* q, const float* const* k_heads,
                      const float* const* v_heads, const int32_t* const* pos_heads, const int* len,
                      int32_t qpos, float* out);

// Decode against caches stored as f32, f16 or bf16 (`kv_dtype`): k_heads[g], v_heads[g] point at
// [len[g], hd] elements of that type. Half-precision keys and values are widened (exactly) to f32
// one key block at a time, in L1, by the variant's own converter, and go through the same
// primitives: the cache is read once, at half the bytes.
void attention_decode_kv(const AttentionShape& s, DType kv_dtype, const float* q,
                         const void* const* k_heads, const void* const* v_heads,
                         const int32_t* const* pos_heads, const int* len, int32_t qpos, float* out);

namespace scalar {
// Twin of attention_decode_kv: widens every head to f32, then the double-precision definition.
void attention_decode_kv(const AttentionShape& s, DType kv_dtype, const float* q,
                         const void* const* k_heads, const void* const* v_heads,
                         const int32_t* const* pos_heads, const int* len, int32_t qpos, float* out);
void attention_prefill(const AttentionShape& s, const float* q, int64_t q_stride, const float* k,
                       const float* v, int64_t kv_stride, const int32_t* pos, int n, float* out,
                       int64_t out_stride);
void attention_decode(const AttentionShape& s, const float* q, const float* const* k_heads,
                      const float* const* v_heads, const int32_t* const* pos_heads, const int* len,
                      int32_t qpos, float* out);
}  // namespace scalar

// ---- per-ISA building blocks (tests and benchmarks reach every variant through these) ----

// Keys per packed K tile: kt[d * kAttnKeyBlock + j] = k[key0 + j][d], zero past the last key.
inline constexpr int kAttnKeyBlock = 64;

struct AttentionKernels {
  const char* name;
  // Head dims the vector primitives accept must be multiples of this; for others the driver
  // switches on its own to a narrower variant (AVX2 for hd = 8 under AVX-512) or the portable one.
  int lanes;
  // s[m * kAttnKeyBlock + j] = scale * dot(q + m * q_stride, key j of the packed tile) for
  // m < rows, j < kAttnKeyBlock.   kt : [hd, kAttnKeyBlock]
  void (*scores_packed)(const float* q, int64_t q_stride, int rows, const float* kt, int hd,
                        float scale, float* s);
  // Same from unpacked keys: s[m * kAttnKeyBlock + j] = scale * dot(q_m, k + j * k_stride), j < nk.
  void (*scores_rows)(const float* q, int64_t q_stride, int rows, const float* k, int64_t k_stride,
                      int nk, int hd, float scale, float* s);
  // max of x[0..n), n >= 1
  float (*max_of)(const float* x, int n);
  // x[i] = exp(x[i] - m) for i < n; returns the sum of the new x
  float (*exp_sub_sum)(float* x, int n, float m);
  // o[m * o_stride + d] += sum_j p[m * p_stride + j] * v[j * v_stride + d], m < rows, j < nk, d <
  // hd
  void (*pv)(const float* p, int64_t p_stride, int rows, const float* v, int64_t v_stride, int nk,
             int hd, float* o, int64_t o_stride);
  // scores_rows and pv over half-precision rows (`half`: kF16 or kBF16) read in place, each element
  // widened once in a register: bit for bit what scores_rows / pv give on the rows widened to f32,
  // without the pass through scratch. nullptr: the decode driver widens each block first.
  void (*scores_rows_half)(DType half, const float* q, int64_t q_stride, int rows,
                           const uint16_t* k, int64_t k_stride, int nk, int hd, float scale,
                           float* s);
  void (*pv_half)(DType half, const float* p, int64_t p_stride, int rows, const uint16_t* v,
                  int64_t v_stride, int nk, int hd, float* o, int64_t o_stride);
};

// The variant for an ISA (nullptr when !isa_supported(isa)); the active one follows
// active_kernels() (so FKV_ISA caps it too).
const AttentionKernels* attention_kernels(Isa isa);
const AttentionKernels& active_attention_kernels();

// Packs nk <= kAttnKeyBlock keys (rows of hd floats, k_stride apart) into the tile layout that
// scores_packed reads, zero past nk.   dst : [hd, kAttnKeyBlock]
void pack_key_tile(const float* k, int64_t k_stride, int nk, int hd, float* dst);

void attention_prefill_with(const AttentionKernels& kern, const AttentionShape& s, const float* q,
                            int64_t q_stride, const float* k, const float* v, int64_t kv_stride,
                            const int32_t* pos, int n, float* out, int64_t out_stride,
                            const std::function<void()>& between_parts = {});
void attention_decode_with(const AttentionKernels& kern, const AttentionShape& s, const float* q,
                           const float* const* k_heads, const float* const* v_heads,
                           const int32_t* const* pos_heads, const int* len, int32_t qpos,
                           float* out);
void attention_decode_kv_with(const AttentionKernels& kern, const AttentionShape& s, DType kv_dtype,
                              const float* q, const void* const* k_heads,
                              const void* const* v_heads, const int32_t* const* pos_heads,
                              const int* len, int32_t qpos, float* out);

// Tables defined by the per-ISA files.
const AttentionKernels& portable_attention_kernels();
#if defined(__x86_64__)
const AttentionKernels& avx2_attention_kernels();
const AttentionKernels& avx512_attention_kernels();
#endif

}  // namespace fkv
