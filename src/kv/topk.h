// The one top-k selector every policy uses, with the documented tie rule: higher score first,
// equal scores -> lower position first. Outputs are ascending (the cache stores rows in position
// order; spec §2 step 7).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kv/policy.h"

namespace fkv {

// Indices of the k highest scores of s[0..m) (ties -> lower index), ascending. k is clamped to
// [0, m].
void top_k(std::span<const float> s, int k, std::vector<int32_t>& out);

// KeepLists construction.
void keep_begin(KeepLists& keep);
void keep_push_head(KeepLists& keep, std::span<const int32_t> rows);  // rows ascending

// Per KV head g: top-k_g of s_kv[g, 0..n_rows-window) plus the window rows [n_rows-window, n_rows).
// s_kv: [n_kv_heads, n_rows - window]; k_per_head: [n_kv_heads].
void keep_topk_plus_window(const float* s_kv, int n_kv_heads, int n_rows, int window,
                           std::span<const int> k_per_head, KeepLists& keep);

}  // namespace fkv
