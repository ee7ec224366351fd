// KV cache: per layer, per KV head, each head with its own length and the original position of
// every row (AdaKV/PyramidKV/FastKV need independent lengths). Rows a policy drops are released:
// compaction shrinks each head's storage to what it keeps plus the decode reserve.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "kv/policy.h"

namespace fkv {

class HeadKv {
 public:
  int len() const { return static_cast<int>(pos_.size()); }
  const float* k() const { return k_.data(); }        // [len, head_dim] post-RoPE
  const float* v() const { return v_.data(); }        // [len, head_dim]
  const int32_t* pos() const { return pos_.data(); }  // [len] ascending original positions
  std::vector<float>& k_mut() { return k_; }
  std::vector<float>& v_mut() { return v_; }
  std::vector<int32_t>& pos_mut() { return pos_; }

 private:
  std::vector<float> k_, v_;
  std::vector<int32_t> pos_;
};

class LayerKv {
 public:
  LayerKv(int n_kv_heads, int head_dim) : head_dim_(head_dim), heads_(n_kv_heads) {}
  int n_kv_heads() const { return static_cast<int>(heads_.size()); }
  int head_dim() const { return head_dim_; }
  const HeadKv& head(int h) const { return heads_[h]; }

  // Stores the rows of the layer's prefill that `keep` lists (all rows when keep is null).
  //   k_all, v_all : [n_rows, n_kv_heads * head_dim] with row stride `stride` floats
  //   pos          : [n_rows] original positions
  // `reserve` rows per head are set aside for decode, so appends do not reallocate.
  void write_prefill(const float* k_all, const float* v_all, int64_t stride,
                     std::span<const int32_t> pos, const KeepLists* keep, int reserve);
  // Appends one decoded row to every head: k_row, v_row : [n_kv_heads * head_dim].
  void append(const float* k_row, const float* v_row, int32_t pos);
  // Keeps only the listed rows of each head (ascending); frees the rest.
  void retain(const KeepLists& keep, int reserve);
  size_t bytes() const;  // kept rows only: sum over heads of len * head_dim * 2 * sizeof(float)

 private:
  int head_dim_;
  std::vector<HeadKv> heads_;
};

class KvCache {
 public:
  KvCache() = default;
  void reset(int n_layers, int n_kv_heads, int head_dim);
  LayerKv& layer(int il) { return layers_[il]; }
  const LayerKv& layer(int il) const { return layers_[il]; }
  int n_layers() const { return static_cast<int>(layers_.size()); }
  size_t bytes() const;
  // Position of the next token = tokens seen so far, NOT rows kept.
  int32_t next_pos() const { return next_pos_; }
  void set_next_pos(int32_t p) { next_pos_ = p; }

 private:
  std::vector<LayerKv> layers_;
  int32_t next_pos_ = 0;
};

}  // namespace fkv
