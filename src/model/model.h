// A loaded model: config plus weights borrowed from memory-mapped files (safetensors or GGUF).
// Large matrices stay in their stored dtype; only small vectors (norms, biases) become f32.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/mmap_file.h"
#include "core/status.h"
#include "kernels/matmul.h"
#include "kv/policy.h"
#include "model/config.h"

namespace fkv {

class GgufFile;

struct LayerWeights {
  std::vector<float> attn_norm;  // [d_model]
  std::vector<float> ffn_norm;   // [d_model]
  std::vector<float> q_norm;     // [head_dim] (Qwen3) or empty
  std::vector<float> k_norm;     // [head_dim] (Qwen3) or empty
  std::vector<float> bq;         // [n_heads * head_dim] (Qwen2) or empty
  std::vector<float> bk;         // [n_kv_heads * head_dim] or empty
  std::vector<float> bv;         // [n_kv_heads * head_dim] or empty
  WeightMatrix wq;               // [n_heads * head_dim, d_model]
  WeightMatrix wk;               // [n_kv_heads * head_dim, d_model]
  WeightMatrix wv;               // [n_kv_heads * head_dim, d_model]
  WeightMatrix wo;               // [d_model, n_heads * head_dim]
  WeightMatrix w_gate;           // [d_ff, d_model]
  WeightMatrix w_up;             // [d_ff, d_model]
  WeightMatrix w_down;           // [d_model, d_ff]
};

class Model {
 public:
  // `path`: a Hugging Face model folder (config.json + *.safetensors) or a .gguf file.
  static Expected<std::unique_ptr<Model>> load(const std::string& path);
  // A model of `config`'s shapes with random weights made in memory (src/model/synthetic.h):
  // matrices in `dtype` (f32, f16, bf16, q4_0, q8_0; kQ4_K: the Q4_K_M mix), norm weights 1,
  // biases 0. The same seed
  // gives the same weights on every machine and thread count.
  static Expected<std::unique_ptr<Model>> synthetic(const ModelConfig& config, DType dtype,
                                                    uint64_t seed);
  ~Model();

  const ModelConfig& config() const { return config_; }
  const std::string& path() const { return path_; }
  bool is_gguf() const { return gguf_ != nullptr; }
  const GgufFile* gguf() const { return gguf_.get(); }

  const WeightMatrix& tok_embd() const { return tok_embd_; }  // [n_vocab, d_model]
  const WeightMatrix& lm_head() const { return lm_head_; }    // [n_vocab, d_model] (may alias)
  const std::vector<float>& out_norm() const { return out_norm_; }
  const LayerWeights& layer(int il) const { return layers_[il]; }
  const std::vector<float>& rope_inv_freq() const { return inv_freq_; }  // [rot_dim / 2]
  size_t weight_bytes() const { return weight_bytes_; }
  // What a KV policy may know of this model.
  PolicyModelInfo policy_info() const {
    const ModelConfig& c = config_;
    return {c.model_name, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.n_ctx};
  }

 private:
  Model() = default;
  Status load_hf(const std::string& dir);
  Status load_gguf(const std::string& file);
  Status finish();
  // q4_0 / q4_1 / q8_0 matrices used only by matmul -> x16 (quant/repack.h), where its kernel runs.
  void repack_x16_weights();

  ModelConfig config_;
  std::string path_;
  WeightMatrix tok_embd_, lm_head_;
  std::vector<float> out_norm_;
  std::vector<LayerWeights> layers_;
  std::vector<float> inv_freq_;
  size_t weight_bytes_ = 0;
  std::shared_ptr<void> storage_;  // keeps the safetensors maps alive
  std::unique_ptr<GgufFile> gguf_;
  bool weights_writable_ = false;  // synthetic: matrices in owned buffers, repacked in place
  std::vector<std::unique_ptr<uint8_t[]>> repacked_;  // copies of read-only (mmap) matrices
};

}  // namespace fkv
