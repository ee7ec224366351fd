#include "kv/kv_cache.h"

#include <algorithm>
#include <cstring>

#include "core/check.h"
#include "kernels/dispatch.h"

namespace fkv {
namespace {

size_t elem_bytes_of(DType t) { return t == DType::kF32 ? 4 : 2; }

// Appends hd f32 values to `dst` as `dtype` (round to nearest even for the halves).
void append_converted(DType dtype, const float* src, size_t hd, std::vector<uint8_t>& dst) {
  const size_t at = dst.size();
  dst.resize(at + hd * elem_bytes_of(dtype));
  uint8_t* out = dst.data() + at;
  if (dtype == DType::kF32) {
    std::memcpy(out, src, hd * sizeof(float));
    return;
  }
  uint16_t h[256];
  for (size_t d0 = 0; d0 < hd; d0 += 256) {
    const size_t nd = std::min<size_t>(256, hd - d0);
    if (dtype == DType::kF16) {
      // The vector converter (core's f32_to_f16 bits): the scalar one was ~3 % of a batched
      // decode step and ~2 % of a long prefill's cache writes.
      active_kernels().f32_row_to_f16(src + d0, h, static_cast<int64_t>(nd));
    } else {
      for (size_t d = 0; d < nd; ++d) h[d] = f32_to_bf16(src[d0 + d]);
    }
    std::memcpy(out + d0 * 2, h, nd * 2);
  }
}

void widen(DType dtype, const uint8_t* src, size_t count, float* dst) {
  if (dtype == DType::kF32) {
    std::memcpy(dst, src, count * sizeof(float));
    return;
  }
  // The kernel table's exact widening, as the decode attention reads the same rows.
  const KernelTable& k = active_kernels();
  const auto* halves = reinterpret_cast<const uint16_t*>(src);
  const int64_t n = static_cast<int64_t>(count);
  if (dtype == DType::kF16) {
    k.f16_row_to_f32(halves, dst, n);
  } else {
    k.bf16_row_to_f32(halves, dst, n);
  }
}

}  // namespace

bool kv_dtype_supported(DType t) {
  return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16;
}

const float* HeadKv::k() const {
  FKV_CHECK(dtype_ == DType::kF32, "HeadKv::k() on a %s cache", dtype_name(dtype_));
  return reinterpret_cast<const float*>(k_.data());
}
const float* HeadKv::v() const {
  FKV_CHECK(dtype_ == DType::kF32, "HeadKv::v() on a %s cache", dtype_name(dtype_));
  return reinterpret_cast<const float*>(v_.data());
}
void HeadKv::k_to_f32(int head_dim, float* dst) const {
  widen(dtype_, k_.data(), static_cast<size_t>(len()) * head_dim, dst);
}
void HeadKv::v_to_f32(int head_dim, float* dst) const {
  widen(dtype_, v_.data(), static_cast<size_t>(len()) * head_dim, dst);
}

LayerKv::LayerKv(int n_kv_heads, int head_dim, DType dtype)
    : head_dim_(head_dim), dtype_(dtype), heads_(n_kv_heads) {
  FKV_CHECK(kv_dtype_supported(dtype), "KV cache dtype %s (f32, f16, bf16)", dtype_name(dtype));
  for (HeadKv& h : heads_) {
    h.dtype_ = dtype;
    h.elem_bytes_ = elem_bytes_of(dtype);
  }
}

void LayerKv::push_row(HeadKv& head, const float* k, const float* v) {
  append_converted(dtype_, k, static_cast<size_t>(head_dim_), head.k_);
  append_converted(dtype_, v, static_cast<size_t>(head_dim_), head.v_);
}

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
    head.k_.clear();
    head.v_.clear();
    head.pos_.clear();
    head.k_.reserve((n_keep + reserve) * hd * head.elem_bytes_);
    head.v_.reserve((n_keep + reserve) * hd * head.elem_bytes_);
    head.pos_.reserve(n_keep + reserve);
    int32_t prev = -1;
    for (int32_t r : rows) {
      FKV_CHECK(r >= 0 && r < n_rows && r > prev, "keep row %d invalid (n_rows %d, previous %d)", r,
                n_rows, prev);
      prev = r;
      push_row(head, k_all + static_cast<int64_t>(r) * stride + h * hd,
               v_all + static_cast<int64_t>(r) * stride + h * hd);
      head.pos_.push_back(pos[r]);
    }
  }
}

void LayerKv::append(const float* k_row, const float* v_row, int32_t pos) {
  const size_t hd = static_cast<size_t>(head_dim_);
  for (int h = 0; h < n_kv_heads(); ++h) {
    HeadKv& head = heads_[h];
    FKV_CHECK(head.len() == 0 || head.pos()[head.len() - 1] < pos,
              "append position %d not after %d", pos, head.pos()[head.len() - 1]);
    push_row(head, k_row + h * hd, v_row + h * hd);
    head.pos_.push_back(pos);
  }
}

void LayerKv::retain(const KeepLists& keep, int reserve) {
  FKV_CHECK(keep.n_heads() == n_kv_heads(), "keep lists for %d heads, layer has %d", keep.n_heads(),
            n_kv_heads());
  const size_t hd = static_cast<size_t>(head_dim_);
  for (int h = 0; h < n_kv_heads(); ++h) {
    HeadKv& head = heads_[h];
    const size_t row_bytes = hd * head.elem_bytes_;
    auto rows = keep.head(h);
    std::vector<uint8_t> k, v;
    std::vector<int32_t> p;
    k.reserve((rows.size() + reserve) * row_bytes);
    v.reserve((rows.size() + reserve) * row_bytes);
    p.reserve(rows.size() + reserve);
    int32_t prev = -1;
    for (int32_t r : rows) {
      FKV_CHECK(r >= 0 && r < head.len() && r > prev, "retain row %d invalid (len %d, previous %d)",
                r, head.len(), prev);
      prev = r;
      k.insert(k.end(), head.k_.data() + r * row_bytes, head.k_.data() + (r + 1) * row_bytes);
      v.insert(v.end(), head.v_.data() + r * row_bytes, head.v_.data() + (r + 1) * row_bytes);
      p.push_back(head.pos()[r]);
    }
    head.k_.swap(k);
    head.v_.swap(v);
    head.pos_.swap(p);
  }
}

size_t LayerKv::bytes() const {
  size_t rows = 0;
  for (const auto& h : heads_) rows += static_cast<size_t>(h.len());
  return rows * static_cast<size_t>(head_dim_) * 2 * elem_bytes_of(dtype_);
}

void KvCache::reset(int n_layers, int n_kv_heads, int head_dim, DType dtype) {
  FKV_CHECK(kv_dtype_supported(dtype), "KV cache dtype %s (f32, f16, bf16)", dtype_name(dtype));
  layers_.clear();
  layers_.reserve(n_layers);
  for (int il = 0; il < n_layers; ++il) layers_.emplace_back(n_kv_heads, head_dim, dtype);
  dtype_ = dtype;
  next_pos_ = 0;
}

size_t KvCache::bytes() const {
  size_t total = 0;
  for (const auto& l : layers_) total += l.bytes();
  return total;
}

}  // namespace fkv
