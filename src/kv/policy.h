// KV-compression policy interface. A policy only answers "which rows to keep" (and, for TSP /
// PyramidInfer, "which rows travel on"; for GemFilter, "which prompt tokens to re-prefill").
// It never touches model code or kernels: it sees post-RoPE Q/K of one layer and their original
// positions (LayerView) and returns row indices.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"

namespace fkv {

// What a policy may know of the model.
struct PolicyModelInfo {
  std::string
      model_name;  // e.g. "Llama-3.1-8B-Instruct" (from config _name_or_path / GGUF general.name)
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int n_ctx = 0;
};

// Per-KV-head rows to keep, CSR layout: head h owns idx[off[h] .. off[h+1]).
// Row indices refer to the rows of the current layer (0..n_rows), strictly ascending per head.
struct KeepLists {
  std::vector<int32_t> off;  // [n_kv_heads + 1]
  std::vector<int32_t> idx;  // [sum of kept rows]
  int n_heads() const { return off.empty() ? 0 : static_cast<int>(off.size()) - 1; }
  std::span<const int32_t> head(int h) const {
    return {idx.data() + off[h], static_cast<size_t>(off[h + 1] - off[h])};
  }
  void clear() {
    off.clear();
    idx.clear();
  }
};

// Read-only view handed to a policy after layer il's prefill attention.
struct LayerView {
  int il = 0;
  const PolicyModelInfo* model = nullptr;
  int n_prompt = 0;              // original prompt length N
  int n_rows = 0;                // rows entering this layer (n_l; < N after TSP)
  std::span<const int32_t> pos;  // [n_rows] original positions, ascending
  const float* q = nullptr;      // [n_rows, n_heads * head_dim] post-RoPE, row stride q_stride
  int64_t q_stride = 0;
  const float* k = nullptr;  // [n_rows, n_kv_heads * head_dim] post-RoPE, row stride k_stride
  int64_t k_stride = 0;
  float scale = 0.0f;  // attention scale, 1/sqrt(head_dim)
  const float* qrow(int r) const { return q + static_cast<int64_t>(r) * q_stride; }
  const float* krow(int r) const { return k + static_cast<int64_t>(r) * k_stride; }
};

// One KV head's cache during decode (read-only view for decode-time policies).
struct HeadCacheView {
  int len = 0;
  const float* k = nullptr;      // [len, head_dim] post-RoPE (null unless reads_decode_cache)
  const float* v = nullptr;      // [len, head_dim] (null unless reads_decode_cache)
  const int32_t* pos = nullptr;  // [len] original positions, ascending
};
// Handed to a policy after layer il's decode attention for token at position `pos`.
struct DecodeView {
  int il = 0;
  const PolicyModelInfo* model = nullptr;
  int32_t pos = 0;           // position of the token just decoded (N + step)
  int step = 0;              // 0 for the first decoded token
  const float* q = nullptr;  // [n_heads * head_dim] post-RoPE
  float scale = 0.0f;
  std::vector<HeadCacheView> heads;  // [n_kv_heads], including the row just appended
};

class KvPolicy {
 public:
  virtual ~KvPolicy() = default;
  virtual std::string name() const = 0;
  virtual void begin_prefill(const PolicyModelInfo& model, int n_prompt) {
    (void)model;
    (void)n_prompt;
  }
  // Rows of each KV head that this layer's cache keeps. Return false to keep every row.
  virtual bool select_kv(const LayerView& lv, KeepLists& keep) = 0;
  // Rows of the hidden state that go on to layer il+1 (FastKV TSP, PyramidInfer), ascending.
  // Return false to propagate all rows. The last row must always be kept.
  virtual bool select_rows(const LayerView& lv, std::vector<int32_t>& rows) {
    (void)lv;
    (void)rows;
    return false;
  }
  // GemFilter: run layers [0, filter_layer()] first, then select_prompt() at that layer picks
  // the prompt tokens (ascending indices into the prompt) for a fresh prefill.
  virtual std::optional<int> filter_layer() const { return std::nullopt; }
  virtual void select_prompt(const LayerView& lv, std::vector<int32_t>& keep_tokens) {
    (void)lv;
    (void)keep_tokens;
  }
  // Decode-time compression (PyramidInfer). Return true and fill `keep` (rows of each head's
  // current cache) to compact that layer's cache. Default: never.
  virtual bool on_decode(const DecodeView& dv, KeepLists& keep) {
    (void)dv;
    (void)keep;
    return false;
  }
  // Whether on_decode at decode step `step` reads the cached K/V (DecodeView::heads[].k / v). The
  // engine widens a half-precision cache to f32 for those steps only; at other steps the views'
  // k and v are null.
  virtual bool reads_decode_cache(int step) const {
    (void)step;
    return false;
  }
};

// Every option any method takes; unset fields mean "the method's default".
struct PolicyOptions {
  std::string method = "fullkv";
  std::optional<int> tsp_layer;
  std::optional<double> tsp_rate;
  std::optional<int> tsp_len;
  std::optional<double> retain_rate;
  std::optional<int> kv_budget;
  std::optional<int> window;
  std::optional<int> kernel;
  std::optional<std::string> pooling;  // "max" | "avg"
  std::optional<std::string> mode;     // "proportional" | "constant"
  std::optional<int> filter_layer;
  bool per_query_head = false;  // snapkv parity option
};

// Validates options against the model (layer range, rates in (0, 1], budget >= window, ...).
Expected<std::unique_ptr<KvPolicy>> make_policy(const PolicyOptions& opts,
                                                const PolicyModelInfo& model);
// Names accepted by make_policy, for --help and error messages.
std::vector<std::string> policy_names();
// The most rows a layer's cache holds per KV head on average (summed over the KV heads, divided by
// their number) for a prompt of n_prompt tokens under these options, before any decoded token;
// in [0, n_prompt], n_prompt for an unknown method. What admission control reserves.
int64_t max_kept_prompt_rows(const PolicyOptions& opts, const PolicyModelInfo& model, int n_prompt);
// Whether the method's prompt pass is the full forward and only its cache differs (fullkv, snapkv,
// ...): an eval sample runs that pass once for all such methods (Session::prefill_shared).
bool shares_prompt_pass(const std::string& method);

}  // namespace fkv
