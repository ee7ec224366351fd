#include "kv/topk.h"

#include <algorithm>
#include <numeric>

namespace fkv {

void top_k(std::span<const float> s, int k, std::vector<int32_t>& out) {
  const int m = static_cast<int>(s.size());
  k = std::clamp(k, 0, m);
  out.resize(m);
  std::iota(out.begin(), out.end(), 0);
  if (k < m) {
    // A total order (score desc, index asc), so the selected set is unique whatever the algorithm.
    auto better = [&](int32_t a, int32_t b) { return s[a] > s[b] || (s[a] == s[b] && a < b); };
    std::nth_element(out.begin(), out.begin() + k, out.end(), better);
    out.resize(k);
    std::sort(out.begin(), out.end());
  }
}

void keep_begin(KeepLists& keep) {
  keep.off.assign(1, 0);
  keep.idx.clear();
}

void keep_push_head(KeepLists& keep, std::span<const int32_t> rows) {
  FKV_DCHECK(std::is_sorted(rows.begin(), rows.end()), "keep rows must be ascending");
  keep.idx.insert(keep.idx.end(), rows.begin(), rows.end());
  keep.off.push_back(static_cast<int32_t>(keep.idx.size()));
}

void keep_topk_plus_window(const float* s_kv, int n_kv_heads, int n_rows, int window,
                           std::span<const int> k_per_head, KeepLists& keep) {
  FKV_CHECK(window >= 0 && window <= n_rows, "window %d vs n_rows %d", window, n_rows);
  FKV_CHECK(static_cast<int>(k_per_head.size()) == n_kv_heads, "k_per_head has %zu != %d",
            k_per_head.size(), n_kv_heads);
  const int m = n_rows - window;
  keep_begin(keep);
  std::vector<int32_t> rows;
  for (int g = 0; g < n_kv_heads; ++g) {
    top_k({s_kv + static_cast<int64_t>(g) * m, static_cast<size_t>(m)}, k_per_head[g], rows);
    for (int r = m; r < n_rows; ++r) rows.push_back(r);
    keep_push_head(keep, rows);
  }
}

}  // namespace fkv
