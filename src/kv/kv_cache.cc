#include "kv/kv_cache.h"

#include <cstring>

#include "core/check.h"

namespace fkv {

void LayerKv::write_prefill(const float* k_all, const float* v_all, int64_t stride,
                            std::span<const int32_t> pos, const KeepLists* keep, int reserve) {
  const int n_rows = static_cast<int>(pos.size());
  const size_t hd = static_cast<size_t>(head_dim_);
  if (keep != nullptr) {
    FKV_CHECK(keep->n_heads() == n_kv_heads(), "keep lists for %d heads, layer has %d",
              keep->n_heads(), n_kv_heads());
  }
  for (int h = 0; h < n_kv_heads(); ++h) {
    HeadKv& head = heads_[h];
    std::vector<int32_t> rows;
    if (keep != nullptr) {
      auto span = keep->head(h);
      rows.assign(span.begin(), span.end());
    } else {
      rows.resize(n_rows);
      for (int r = 0; r < n_rows; ++r) rows[r] = r;
    }
    const size_t n_keep = rows.size();
    auto& k = head.k_mut();
    auto& v = head.v_mut();
    auto& p = head.pos_mut();
    k.clear();
    v.clear();
    p.clear();
    k.reserve((n_keep + reserve) * hd);
    v.reserve((n_keep + reserve) * hd);
    p.reserve(n_keep + reserve);
    int32_t prev = -1;
    for (int32_t r : rows) {
      FKV_CHECK(r >= 0 && r < n_rows && r > prev, "keep row %d invalid (n_rows %d, previous %d)", r,
                n_rows, prev);
      prev = r;
      const float* ks = k_all + static_cast<int64_t>(r) * stride + h * hd;
      const float* vs = v_all + static_cast<int64_t>(r) * stride + h * hd;
      k.insert(k.end(), ks, ks + hd);
      v.insert(v.end(), vs, vs + hd);
      p.push_back(pos[r]);
    }
  }
}

void LayerKv::append(const float* k_row, const float* v_row, int32_t pos) {
  const size_t hd = static_cast<size_t>(head_dim_);
  for (int h = 0; h < n_kv_heads(); ++h) {
    HeadKv& head = heads_[h];
    FKV_CHECK(head.len() == 0 || head.pos()[head.len() - 1] < pos,
              "append position %d not after %d", pos, head.pos()[head.len() - 1]);
    head.k_mut().insert(head.k_mut().end(), k_row + h * hd, k_row + (h + 1) * hd);
    head.v_mut().insert(head.v_mut().end(), v_row + h * hd, v_row + (h + 1) * hd);
    head.pos_mut().push_back(pos);
  }
}

void LayerKv::retain(const KeepLists& keep, int reserve) {
  FKV_CHECK(keep.n_heads() == n_kv_heads(), "keep lists for %d heads, layer has %d", keep.n_heads(),
            n_kv_heads());
  const size_t hd = static_cast<size_t>(head_dim_);
  for (int h = 0; h < n_kv_heads(); ++h) {
    HeadKv& head = heads_[h];
    auto rows = keep.head(h);
    std::vector<float> k, v;
    std::vector<int32_t> p;
    k.reserve((rows.size() + reserve) * hd);
    v.reserve((rows.size() + reserve) * hd);
    p.reserve(rows.size() + reserve);
    int32_t prev = -1;
    for (int32_t r : rows) {
      FKV_CHECK(r >= 0 && r < head.len() && r > prev, "retain row %d invalid (len %d, previous %d)",
                r, head.len(), prev);
      prev = r;
      k.insert(k.end(), head.k() + r * hd, head.k() + (r + 1) * hd);
      v.insert(v.end(), head.v() + r * hd, head.v() + (r + 1) * hd);
      p.push_back(head.pos()[r]);
    }
    head.k_mut().swap(k);
    head.v_mut().swap(v);
    head.pos_mut().swap(p);
  }
}

size_t LayerKv::bytes() const {
  size_t rows = 0;
  for (const auto& h : heads_) rows += static_cast<size_t>(h.len());
  return rows * static_cast<size_t>(head_dim_) * 2 * sizeof(float);
}

void KvCache::reset(int n_layers, int n_kv_heads, int head_dim) {
  layers_.clear();
  layers_.reserve(n_layers);
  for (int il = 0; il < n_layers; ++il) layers_.emplace_back(n_kv_heads, head_dim);
  next_pos_ = 0;
}

size_t KvCache::bytes() const {
  size_t total = 0;
  for (const auto& l : layers_) total += l.bytes();
  return total;
}

}  // namespace fkv
