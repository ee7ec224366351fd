// Model hyper-parameters, read from HF config.json or GGUF metadata; nothing is hard-coded.
#pragma once

#include <string>
#include <vector>

#include "core/status.h"
#include "kernels/ops.h"

namespace fkv {

enum class Arch { kLlama, kMistral, kQwen2, kQwen3 };

struct RopeScaling {
  std::string type = "default";  // "default" | "linear" | "llama3"
  float factor = 1.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int original_max_position_embeddings = 0;
};

struct ModelConfig {
  Arch arch = Arch::kLlama;
  std::string arch_name;   // "LlamaForCausalLM", "llama" (GGUF), ...
  std::string model_name;  // _name_or_path / general.name, informational
  int n_layers = 0;
  int d_model = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int d_ff = 0;
  int n_vocab = 0;
  int n_ctx = 0;  // max_position_embeddings / context_length
  float rms_eps = 1e-6f;
  float rope_theta = 10000.0f;
  RopeScaling rope_scaling;
  RopeStyle rope_style = RopeStyle::kNeox;
  int rot_dim = 0;  // dims rotated per head (== head_dim for every supported arch)
  bool tie_embeddings = false;
  int sliding_window = 0;          // 0 = none
  bool attn_qkv_bias = false;      // Qwen2
  bool qk_norm = false;            // Qwen3
  std::vector<int> eos_token_ids;  // from config/generation_config
  int bos_token_id = -1;

  // Checks ranges and divisibility; `source` names the file in messages.
  Status validate(const std::string& source) const;
};

// Parses config.json text. `source` is its path (for messages).
Expected<ModelConfig> parse_hf_config(const std::string& config_json, const std::string& source);

// RoPE inverse frequencies [rot_dim / 2], computed in float32 as transformers does (incl. llama3
// and linear scaling), so angles match the reference bit for bit.
std::vector<float> rope_inv_freq(const ModelConfig& cfg);
// Adds generation_config.json's end-of-generation ids (`text`, named `src` in errors) to `c`.
Status apply_generation_config(const std::string& text, const std::string& src, ModelConfig& c);

}  // namespace fkv
