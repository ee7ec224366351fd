// KV cache: per layer, per KV head, each head with its own length and the original position of
// every row (AdaKV/PyramidKV/FastKV need independent lengths). Rows a policy drops are released:
// compaction shrinks each head's storage to what it keeps plus the decode reserve.
// Rows are stored as f32, f16 or bf16 (SessionOptions::kv_dtype; f16 by default, as llama.cpp):
// the engine hands in f32 rows and the attention kernels widen half rows as they read them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "core/dtype.h"
#include "kv/policy.h"

namespace fkv {

// True for the element types a cache can hold (f32, f16, bf16).
bool kv_dtype_supported(DType t);

class HeadKv {
 public:
  int len() const { return static_cast<int>(pos_.size()); }
  DType dtype() const { return dtype_; }
  const void* k_data() const { return k_.data(); }    // [len, head_dim] of dtype(), post-RoPE
  const void* v_data() const { return v_.data(); }    // [len, head_dim] of dtype()
  const int32_t* pos() const { return pos_.data(); }  // [len] ascending original positions
  // f32 caches only (checked): the rows as floats.
  const float* k() const;
  const float* v() const;
  // Rows [0, len) widened to f32 (exact for f16/bf16): dst [len, head_dim].
  void k_to_f32(int head_dim, float* dst) const;
  void v_to_f32(int head_dim, float* dst) const;

 private:
  friend class LayerKv;
  DType dtype_ = DType::kF32;
  size_t elem_bytes_ = 4;
  std::vector<uint8_t> k_, v_;
  std::vector<int32_t> pos_;
};

class LayerKv {
 public:
  LayerKv(int n_kv_heads, int head_dim, DType dtype = DType::kF32);
  int n_kv_heads() const { return static_cast<int>(heads_.size()); }
  int head_dim() const { return head_dim_; }
  DType dtype() const { return dtype_; }
  const HeadKv& head(int h) const { return heads_[h]; }

  // Stores the rows of the layer's prefill that `keep` lists (all rows when keep is null).
  //   k_all, v_all : [n_rows, n_kv_heads * head_dim] f32 with row stride `stride` floats
  //   pos          : [n_rows] original positions
  // `reserve` rows per head are set aside for decode, so appends do not reallocate.
  void write_prefill(const float* k_all, const float* v_all, int64_t stride,
                     std::span<const int32_t> pos, const KeepLists* keep, int reserve);
  // Appends one decoded row to every head: k_row, v_row : [n_kv_heads * head_dim] f32.
  void append(const float* k_row, const float* v_row, int32_t pos);
  // Keeps only the listed rows of each head (ascending); frees the rest.
  void retain(const KeepLists& keep, int reserve);
  // Kept rows only, in the stored dtype: sum over heads of len * head_dim * 2 * element bytes.
  size_t bytes() const;

 private:
  void push_row(HeadKv& head, const float* k, const float* v);
  int head_dim_;
  DType dtype_;
  std::vector<HeadKv> heads_;
};

class KvCache {
 public:
  KvCache() = default;
  // dtype must satisfy kv_dtype_supported (checked).
  void reset(int n_layers, int n_kv_heads, int head_dim, DType dtype = DType::kF32);
  LayerKv& layer(int il) { return layers_[il]; }
  const LayerKv& layer(int il) const { return layers_[il]; }
  int n_layers() const { return static_cast<int>(layers_.size()); }
  DType dtype() const { return dtype_; }
  size_t bytes() const;
  // Position of the next token = tokens seen so far, NOT rows kept.
  int32_t next_pos() const { return next_pos_; }
  void set_next_pos(int32_t p) { next_pos_ = p; }

 private:
  std::vector<LayerKv> layers_;
  DType dtype_ = DType::kF32;
  int32_t next_pos_ = 0;
};

}  // namespace fkv
