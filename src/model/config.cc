#include "model/config.h"

#include <cmath>
#include <nlohmann/json.hpp>

namespace fkv {
using json = nlohmann::json;

namespace {

// Reads an optional numeric field; errors name the field and the file.
template <class T>
Status read_num(const json& j, const char* key, T& out, bool required, const std::string& src) {
  if (!j.contains(key) || j[key].is_null()) {
    if (required) return Status::error(strfmt("%s: missing field '%s'", src.c_str(), key));
    return Status::ok();
  }
  if (!j[key].is_number()) {
    return Status::error(
        strfmt("%s: field '%s' must be a number, got %s", src.c_str(), key, j[key].dump().c_str()));
  }
  out = j[key].get<T>();
  return Status::ok();
}

}  // namespace

Status ModelConfig::validate(const std::string& src) const {
  auto bad = [&](const char* field, long long v) {
    return Status::error(strfmt("%s: invalid %s = %lld", src.c_str(), field, v));
  };
  if (n_layers <= 0 || n_layers > 1024) return bad("num_hidden_layers", n_layers);
  if (d_model <= 0 || d_model > (1 << 17)) return bad("hidden_size", d_model);
  if (n_heads <= 0 || n_heads > 1024) return bad("num_attention_heads", n_heads);
  if (n_kv_heads <= 0 || n_heads % n_kv_heads != 0) {
    return Status::error(strfmt("%s: num_key_value_heads = %d must divide num_attention_heads = %d",
                                src.c_str(), n_kv_heads, n_heads));
  }
  if (head_dim <= 0 || head_dim % 2 != 0 || head_dim > 1024) return bad("head_dim", head_dim);
  if (d_ff <= 0) return bad("intermediate_size", d_ff);
  if (n_vocab <= 0) return bad("vocab_size", n_vocab);
  if (n_ctx <= 0) return bad("max_position_embeddings", n_ctx);
  if (!(rope_theta > 0)) return bad("rope_theta", static_cast<long long>(rope_theta));
  if (rot_dim <= 0 || rot_dim > head_dim || rot_dim % 2 != 0) return bad("rope dimension", rot_dim);
  return Status::ok();
}

Expected<ModelConfig> parse_hf_config(const std::string& text, const std::string& src) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return Status::error(strfmt("%s: not a valid JSON object", src.c_str()));
  }
  ModelConfig c;
  std::string arch;
  if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty() &&
      j["architectures"][0].is_string()) {
    arch = j["architectures"][0].get<std::string>();
  } else if (j.contains("model_type") && j["model_type"].is_string()) {
    arch = j["model_type"].get<std::string>();
  } else {
    return Status::error(strfmt("%s: missing field 'architectures'", src.c_str()));
  }
  c.arch_name = arch;
  if (arch == "LlamaForCausalLM" || arch == "llama") {
    c.arch = Arch::kLlama;
  } else if (arch == "MistralForCausalLM" || arch == "mistral") {
    c.arch = Arch::kMistral;
  } else if (arch == "Qwen2ForCausalLM" || arch == "qwen2") {
    c.arch = Arch::kQwen2;
    c.attn_qkv_bias = true;
  } else if (arch == "Qwen3ForCausalLM" || arch == "qwen3") {
    c.arch = Arch::kQwen3;
    c.qk_norm = true;
  } else {
    return Status::error(
        strfmt("%s: unsupported architecture '%s' (fastkv runs LlamaForCausalLM, "
               "MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM)",
               src.c_str(), arch.c_str()));
  }
  if (j.contains("_name_or_path") && j["_name_or_path"].is_string()) {
    c.model_name = j["_name_or_path"].get<std::string>();
  }
  FKV_RETURN_IF_ERROR(read_num(j, "num_hidden_layers", c.n_layers, true, src));
  FKV_RETURN_IF_ERROR(read_num(j, "hidden_size", c.d_model, true, src));
  FKV_RETURN_IF_ERROR(read_num(j, "num_attention_heads", c.n_heads, true, src));
  c.n_kv_heads = c.n_heads;
  FKV_RETURN_IF_ERROR(read_num(j, "num_key_value_heads", c.n_kv_heads, false, src));
  FKV_RETURN_IF_ERROR(read_num(j, "intermediate_size", c.d_ff, true, src));
  FKV_RETURN_IF_ERROR(read_num(j, "vocab_size", c.n_vocab, true, src));
  c.n_ctx = 2048;
  FKV_RETURN_IF_ERROR(read_num(j, "max_position_embeddings", c.n_ctx, false, src));
  FKV_RETURN_IF_ERROR(read_num(j, "rms_norm_eps", c.rms_eps, false, src));
  FKV_RETURN_IF_ERROR(read_num(j, "rope_theta", c.rope_theta, false, src));
  if (c.n_heads <= 0) return Status::error(strfmt("%s: invalid num_attention_heads", src.c_str()));
  c.head_dim = c.d_model / c.n_heads;
  FKV_RETURN_IF_ERROR(read_num(j, "head_dim", c.head_dim, false, src));
  c.rot_dim = c.head_dim;
  if (j.contains("partial_rotary_factor")) {
    return Status::error(strfmt("%s: partial_rotary_factor is not supported", src.c_str()));
  }
  if (j.contains("tie_word_embeddings") && j["tie_word_embeddings"].is_boolean()) {
    c.tie_embeddings = j["tie_word_embeddings"].get<bool>();
  } else if (c.arch == Arch::kQwen2 || c.arch == Arch::kQwen3) {
    c.tie_embeddings = false;  // transformers' default for these classes is also false
  }
  if (c.arch == Arch::kMistral || c.arch == Arch::kQwen2 || c.arch == Arch::kQwen3) {
    // Qwen2/3 only apply the window when use_sliding_window is true.
    bool use = c.arch == Arch::kMistral;
    if (j.contains("use_sliding_window") && j["use_sliding_window"].is_boolean()) {
      use = j["use_sliding_window"].get<bool>();
    }
    if (use && j.contains("sliding_window") && j["sliding_window"].is_number_integer()) {
      c.sliding_window = j["sliding_window"].get<int>();
      if (c.arch != Arch::kMistral) {
        return Status::error(
            strfmt("%s: use_sliding_window with max_window_layers is not supported", src.c_str()));
      }
    }
  }
  if (j.contains("attention_bias") && j["attention_bias"].is_boolean() && j["attention_bias"]) {
    if (c.arch != Arch::kQwen2) {
      return Status::error(
          strfmt("%s: attention_bias=true is not supported for %s", src.c_str(), arch.c_str()));
    }
  }
  if (j.contains("mlp_bias") && j["mlp_bias"].is_boolean() && j["mlp_bias"].get<bool>()) {
    return Status::error(strfmt("%s: mlp_bias=true is not supported", src.c_str()));
  }
  if (j.contains("hidden_act") && j["hidden_act"].is_string() &&
      j["hidden_act"].get<std::string>() != "silu") {
    return Status::error(strfmt("%s: hidden_act '%s' is not supported (only silu)", src.c_str(),
                                j["hidden_act"].get<std::string>().c_str()));
  }
  if (j.contains("rope_scaling") && j["rope_scaling"].is_object()) {
    const json& rs = j["rope_scaling"];
    std::string type = "default";
    if (rs.contains("rope_type") && rs["rope_type"].is_string()) {
      type = rs["rope_type"].get<std::string>();
    } else if (rs.contains("type") && rs["type"].is_string()) {
      type = rs["type"].get<std::string>();
    }
    const std::string rsrc = src + " rope_scaling";
    c.rope_scaling.type = type;
    if (type == "llama3") {
      FKV_RETURN_IF_ERROR(read_num(rs, "factor", c.rope_scaling.factor, true, rsrc));
      FKV_RETURN_IF_ERROR(
          read_num(rs, "low_freq_factor", c.rope_scaling.low_freq_factor, true, rsrc));
      FKV_RETURN_IF_ERROR(
          read_num(rs, "high_freq_factor", c.rope_scaling.high_freq_factor, true, rsrc));
      FKV_RETURN_IF_ERROR(read_num(rs, "original_max_position_embeddings",
                                   c.rope_scaling.original_max_position_embeddings, true, rsrc));
    } else if (type == "linear") {
      FKV_RETURN_IF_ERROR(read_num(rs, "factor", c.rope_scaling.factor, true, rsrc));
    } else if (type != "default") {
      return Status::error(
          strfmt("%s: rope_scaling type '%s' is not supported (default, linear, "
                 "llama3)",
                 src.c_str(), type.c_str()));
    }
  }
  auto read_ids = [&](const char* key, std::vector<int>& out) {
    if (!j.contains(key)) return;
    if (j[key].is_number_integer()) out.push_back(j[key].get<int>());
    if (j[key].is_array()) {
      for (const auto& v : j[key]) {
        if (v.is_number_integer()) out.push_back(v.get<int>());
      }
    }
  };
  read_ids("eos_token_id", c.eos_token_ids);
  if (j.contains("bos_token_id") && j["bos_token_id"].is_number_integer()) {
    c.bos_token_id = j["bos_token_id"].get<int>();
  }
  FKV_RETURN_IF_ERROR(c.validate(src));
  return c;
}

std::vector<float> rope_inv_freq(const ModelConfig& cfg) {
  const int half = cfg.rot_dim / 2;
  std::vector<float> inv(half);
  for (int i = 0; i < half; ++i) {
    // transformers: 1 / base ** (arange(0, dim, 2).float() / dim), all float32.
    const float expo = static_cast<float>(2 * i) / static_cast<float>(cfg.rot_dim);
    const float p = static_cast<float>(
        std::pow(static_cast<double>(cfg.rope_theta), static_cast<double>(expo)));
    inv[i] = 1.0f / p;
  }
  const RopeScaling& rs = cfg.rope_scaling;
  if (rs.type == "linear") {
    for (float& f : inv) f = f / rs.factor;
  } else if (rs.type == "llama3") {
    const float old_ctx = static_cast<float>(rs.original_max_position_embeddings);
    const float low_wavelen = old_ctx / rs.low_freq_factor;
    const float high_wavelen = old_ctx / rs.high_freq_factor;
    const float two_pi = static_cast<float>(2.0 * M_PI);
    for (float& f : inv) {
      const float wavelen = two_pi / f;
      float scaled = wavelen > low_wavelen ? f / rs.factor : f;
      const bool medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
      if (medium) {
        const float smooth =
            (old_ctx / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
        scaled = (1.0f - smooth) * scaled / rs.factor + smooth * scaled;
      }
      f = scaled;
    }
  }
  return inv;
}

}  // namespace fkv
