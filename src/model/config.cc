#include "model/config.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <type_traits>

#include "core/json_excerpt.h"

namespace fkv {
using json = nlohmann::json;

namespace {

// What an explicit `null` means for a field. transformers reads a JSON null as Python None, and
// only some config classes replace None by the default (num_key_value_heads, and head_dim of
// Llama and Mistral); for the others None breaks the model, so null is an error, never a silent
// default.
enum class NullIs { kError, kAbsent };

// Reads an optional numeric field; errors name the field and the file. Integers must be written
// as integers (2.5 is not a layer count) and fit the field before it is narrowed; floats must be
// finite.
template <class T>
Status read_num(const json& j, const char* key, T& out, bool required, const std::string& src,
                NullIs null_is = NullIs::kError) {
  if (!j.contains(key) || (null_is == NullIs::kAbsent && j[key].is_null())) {
    if (required) return Status::error(strfmt("%s: missing field '%s'", src.c_str(), key));
    return Status::ok();
  }
  const json& v = j[key];
  if (v.is_null()) {
    return Status::error(strfmt("%s: field '%s' must be a number, got null%s", src.c_str(), key,
                                required ? "" : " (leave the field out to use the default)"));
  }
  if (!v.is_number()) {
    return Status::error(strfmt("%s: field '%s' must be a number, got %s", src.c_str(), key,
                                json_excerpt(v).c_str()));
  }
  if constexpr (std::is_integral_v<T>) {
    const bool integral =
        v.is_number_integer() || (v.is_number_float() && std::isfinite(v.get<double>()) &&
                                  std::floor(v.get<double>()) == v.get<double>());
    if (!integral) {
      return Status::error(strfmt("%s: field '%s' must be an integer, got %s", src.c_str(), key,
                                  json_excerpt(v).c_str()));
    }
    const double as_double = v.get<double>();
    const bool fits =
        v.is_number_unsigned()
            ? v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<T>::max())
            : (as_double >= static_cast<double>(std::numeric_limits<T>::min()) &&
               as_double <= static_cast<double>(std::numeric_limits<T>::max()));
    if (!fits) {
      return Status::error(
          strfmt("%s: field '%s' = %s is out of range", src.c_str(), key, json_excerpt(v).c_str()));
    }
    out = v.is_number_float() ? static_cast<T>(as_double) : v.get<T>();
  } else {
    const double d = v.get<double>();
    if (!std::isfinite(d) || std::abs(d) > static_cast<double>(std::numeric_limits<T>::max())) {
      return Status::error(
          strfmt("%s: field '%s' = %s is out of range", src.c_str(), key, json_excerpt(v).c_str()));
    }
    out = static_cast<T>(d);
  }
  return Status::ok();
}

// Token id fields (eos_token_id: an integer or a list of them; bos_token_id). A value that is
// not an integer id is an error, not skipped.
Status read_token_ids(const json& j, const char* key, std::vector<int>& out,
                      const std::string& src) {
  if (!j.contains(key) || j[key].is_null()) return Status::ok();
  auto one = [&](const json& v) -> Status {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 ||
        v.get<int64_t>() > std::numeric_limits<int>::max()) {
      return Status::error(strfmt("%s: field '%s' must hold non-negative integer token ids, got %s",
                                  src.c_str(), key, json_excerpt(v).c_str()));
    }
    const int id = static_cast<int>(v.get<int64_t>());
    if (std::find(out.begin(), out.end(), id) == out.end()) out.push_back(id);
    return Status::ok();
  };
  if (j[key].is_array()) {
    for (const auto& v : j[key]) FKV_RETURN_IF_ERROR(one(v));
    return Status::ok();
  }
  return one(j[key]);
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
  if (d_ff <= 0 || d_ff > (1 << 20)) return bad("intermediate_size", d_ff);
  if (n_vocab <= 0 || n_vocab > (1 << 24)) return bad("vocab_size", n_vocab);
  if (n_ctx <= 0) return bad("max_position_embeddings", n_ctx);
  if (!(rope_theta > 0) || !std::isfinite(rope_theta)) {
    return Status::error(strfmt("%s: invalid rope_theta = %g (must be > 0)", src.c_str(),
                                static_cast<double>(rope_theta)));
  }
  if (!(rms_eps > 0) || !std::isfinite(rms_eps)) {
    return Status::error(strfmt("%s: invalid rms_norm_eps = %g (must be > 0)", src.c_str(),
                                static_cast<double>(rms_eps)));
  }
  if (sliding_window < 0) return bad("sliding_window", sliding_window);
  for (int id : eos_token_ids) {
    if (id < 0 || id >= n_vocab) {
      return Status::error(strfmt("%s: eos_token_id %d is outside the vocabulary [0, %d)",
                                  src.c_str(), id, n_vocab));
    }
  }
  if (bos_token_id >= n_vocab) {
    return Status::error(strfmt("%s: bos_token_id %d is outside the vocabulary [0, %d)",
                                src.c_str(), bos_token_id, n_vocab));
  }
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
  FKV_RETURN_IF_ERROR(
      read_num(j, "num_key_value_heads", c.n_kv_heads, false, src, NullIs::kAbsent));
  FKV_RETURN_IF_ERROR(read_num(j, "intermediate_size", c.d_ff, true, src));
  FKV_RETURN_IF_ERROR(read_num(j, "vocab_size", c.n_vocab, true, src));
  c.n_ctx = 2048;
  FKV_RETURN_IF_ERROR(read_num(j, "max_position_embeddings", c.n_ctx, false, src));
  FKV_RETURN_IF_ERROR(read_num(j, "rms_norm_eps", c.rms_eps, false, src));
  FKV_RETURN_IF_ERROR(read_num(j, "rope_theta", c.rope_theta, false, src));
  if (c.n_heads <= 0) return Status::error(strfmt("%s: invalid num_attention_heads", src.c_str()));
  c.head_dim = c.d_model / c.n_heads;
  FKV_RETURN_IF_ERROR(read_num(
      j, "head_dim", c.head_dim, false, src,
      c.arch == Arch::kLlama || c.arch == Arch::kMistral ? NullIs::kAbsent : NullIs::kError));
  c.rot_dim = c.head_dim;
  if (j.contains("partial_rotary_factor")) {
    return Status::error(strfmt("%s: partial_rotary_factor is not supported", src.c_str()));
  }
  // Flags are booleans (null: as transformers reads it, false); anything else is an error, not a
  // silent default.
  for (const char* key :
       {"tie_word_embeddings", "use_sliding_window", "attention_bias", "mlp_bias"}) {
    if (j.contains(key) && !j[key].is_null() && !j[key].is_boolean()) {
      return Status::error(strfmt("%s: field '%s' must be true or false, got %s", src.c_str(), key,
                                  json_excerpt(j[key]).c_str()));
    }
  }
  if (j.contains("hidden_act") && !j["hidden_act"].is_string()) {
    return Status::error(strfmt("%s: field 'hidden_act' must be a string (\"silu\"), got %s",
                                src.c_str(), json_excerpt(j["hidden_act"]).c_str()));
  }
  if (j.contains("tie_word_embeddings") && j["tie_word_embeddings"].is_null()) {
    c.tie_embeddings = false;
  } else if (j.contains("tie_word_embeddings") && j["tie_word_embeddings"].is_boolean()) {
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
    if (use && j.contains("sliding_window") && !j["sliding_window"].is_null()) {
      FKV_RETURN_IF_ERROR(read_num(j, "sliding_window", c.sliding_window, false, src));
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
  FKV_RETURN_IF_ERROR(read_token_ids(j, "eos_token_id", c.eos_token_ids, src));
  std::vector<int> bos;
  FKV_RETURN_IF_ERROR(read_token_ids(j, "bos_token_id", bos, src));
  if (j.contains("bos_token_id") && j["bos_token_id"].is_array()) {
    return Status::error(strfmt("%s: field 'bos_token_id' must be one integer token id, got %s",
                                src.c_str(), json_excerpt(j["bos_token_id"]).c_str()));
  }
  if (!bos.empty()) c.bos_token_id = bos[0];
  FKV_RETURN_IF_ERROR(c.validate(src));
  return c;
}

Status apply_generation_config(const std::string& text, const std::string& src, ModelConfig& c) {
  json g = json::parse(text, nullptr, false);
  if (g.is_discarded() || !g.is_object()) {
    return Status::error(strfmt("%s: not a valid JSON object", src.c_str()));
  }
  std::vector<int> ids = c.eos_token_ids;
  FKV_RETURN_IF_ERROR(read_token_ids(g, "eos_token_id", ids, src));
  for (int id : ids) {
    if (id >= c.n_vocab) {
      return Status::error(strfmt("%s: eos_token_id %d is outside the vocabulary [0, %d)",
                                  src.c_str(), id, c.n_vocab));
    }
  }
  c.eos_token_ids = std::move(ids);
  return Status::ok();
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
