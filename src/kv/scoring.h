// Shared scoring math for the KV policies (spec FASTKV.md §2, §4). Every scorer reads a LayerView
// (post-RoPE Q/K of one layer) and writes plain float arrays; nothing here allocates n x n.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kv/policy.h"

namespace fkv {

enum class Pooling { kMax, kAvg };

// 1-D pooling along j with kernel `kernel` (odd), stride 1, padding kernel/2, output length ==
// input length. kMax ignores the padding (PyTorch max_pool1d pads with -inf); kAvg counts the zero
// padding in the divisor (avg_pool1d count_include_pad=True), i.e. divides by `kernel` always.
void pool1d(std::span<const float> in, int kernel, Pooling pooling, std::span<float> out);

// GQA reduction with the HF grouping: s_kv[g, j] = sum_{h = g*G .. g*G+G-1} s[h, j].
// s: [n_heads, m], s_kv: [n_kv_heads, m].
void gqa_sum(const float* s, int n_heads, int n_kv_heads, int m, float* s_kv);

// Observation-window score (spec §2 steps 1-5), per QUERY head, before the GQA sum.
// Needs n_rows > window. Output s_q: [n_heads, m] with m = n_rows - window; row h is the pooled
// sum over the last `window` query rows of the fp32 causal softmax, window columns dropped.
void window_scores_per_query_head(const LayerView& lv, int window, int kernel, Pooling pooling,
                                  std::vector<float>& s_q);

// Full §2 score through step 6: s_kv [n_kv_heads, m], m = n_rows - window.
void window_scores(const LayerView& lv, int window, int kernel, Pooling pooling,
                   std::vector<float>& s_kv);

// H2O accumulated attention per query head: s[h, j] = sum_{i >= j} softmax_causal(q_i . k_j)[j]
// over ALL rows i. Streaming over blocks of query rows: the block's logits (one small GEMM), each
// row's causal softmax, then the normalised rows added into the column sums; O(n) scratch.
// Output s_q: [n_heads, n_rows].
void accumulated_attention(const LayerView& lv, std::vector<float>& s_q);

// GemFilter: the last row's raw logits q_last . k_j (no scaling, no softmax) summed over all query
// heads (head h reads KV head h / G). Output: [n_rows].
void last_query_logit_sum(const LayerView& lv, std::vector<float>& s);

// Softmax of one query row against rows [0, n_keys) of one KV head: p [n_keys] (fp32, with the
// max subtracted). `k` has row stride k_stride, the head's columns start at k.
void softmax_row(const float* q, const float* k, int64_t k_stride, int n_keys, int head_dim,
                 float scale, float* p);

}  // namespace fkv
