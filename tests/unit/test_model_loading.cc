// Model loading: every supported layout loads, and each kind of bad input gives one clear error
// naming the file, tensor, field or value.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "model/config.h"
#include "model/model.h"

namespace fkv {
namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;

const fs::path kModels = fs::path(FKV_SOURCE_DIR) / "tests/data/models";

// A scratch copy of a fixture that a test may damage.
fs::path scratch_copy(const std::string& name) {
  const fs::path dst =
      fs::temp_directory_path() / ("fkv_model_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dst);
  fs::copy(kModels / name, dst, fs::copy_options::recursive);
  return dst;
}

void edit_config(const fs::path& dir, const std::function<void(json&)>& edit) {
  json j = json::parse(std::ifstream(dir / "config.json"));
  edit(j);
  std::ofstream(dir / "config.json") << j.dump(2);
}

std::string load_error(const fs::path& p) {
  auto m = Model::load(p.string());
  return m.has_value() ? std::string() : m.error();
}

TEST(ModelLoading, EveryFixtureLoadsWithItsConfig) {
  struct Want {
    const char* name;
    Arch arch;
    int head_dim;
    bool tied;
  };
  for (const Want& w :
       {Want{"tiny-llama", Arch::kLlama, 16, false}, Want{"tiny-llama3", Arch::kLlama, 16, true},
        Want{"tiny-mistral", Arch::kMistral, 32, false}, Want{"tiny-qwen2", Arch::kQwen2, 16, true},
        Want{"tiny-qwen3", Arch::kQwen3, 16, false}}) {
    auto m = Model::load((kModels / w.name).string());
    ASSERT_TRUE(m.has_value()) << w.name << ": " << m.error();
    EXPECT_EQ((*m)->config().arch, w.arch) << w.name;
    EXPECT_EQ((*m)->config().tie_embeddings, w.tied) << w.name;
    if (w.arch == Arch::kMistral) {
      EXPECT_GT((*m)->config().sliding_window, 0);
    }
    if (w.arch == Arch::kQwen3) {
      EXPECT_TRUE((*m)->config().qk_norm);
    }
  }
}

TEST(ModelLoading, Llama3RopeScalingChangesLowFrequenciesOnly) {
  auto m = Model::load((kModels / "tiny-llama3").string());
  ASSERT_TRUE(m.has_value()) << m.error();
  ModelConfig plain = (*m)->config();
  plain.rope_scaling = RopeScaling();
  const auto scaled = rope_inv_freq((*m)->config());
  const auto base = rope_inv_freq(plain);
  EXPECT_EQ(scaled.front(), base.front());  // high frequency: untouched
  EXPECT_LT(scaled.back(), base.back());    // low frequency: divided by the factor
}

TEST(ModelLoading, MissingPathAndUnknownFile) {
  EXPECT_NE(load_error("/nonexistent/model").find("/nonexistent/model"), std::string::npos);
  const fs::path f = fs::temp_directory_path() / "fkv_not_a_model.bin";
  std::ofstream(f) << "x";
  EXPECT_NE(load_error(f).find("not a model folder"), std::string::npos);
  fs::remove(f);
}

TEST(ModelLoading, BadConfigsNameTheField) {
  const fs::path dir = scratch_copy("tiny-llama");
  struct Case {
    std::function<void(json&)> edit;
    const char* must_mention;
  };
  const std::vector<Case> cases = {
      {[](json& j) { j["architectures"] = {"GPT2LMHeadModel"}; }, "GPT2LMHeadModel"},
      {[](json& j) { j.erase("hidden_size"); }, "hidden_size"},
      {[](json& j) { j["num_key_value_heads"] = 3; }, "num_key_value_heads"},
      {[](json& j) { j["num_hidden_layers"] = "two"; }, "num_hidden_layers"},
      {[](json& j) {
         j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
       },
       "yarn"},
      {[](json& j) { j["hidden_act"] = "gelu"; }, "gelu"},
      // Issue 11, cause 2: numbers are range-checked before narrowing (was -727379968).
      {[](json& j) { j["vocab_size"] = 1e12; }, "vocab_size"},
      {[](json& j) { j["vocab_size"] = 1000000000000LL; }, "1000000000000"},
      {[](json& j) { j["num_attention_heads"] = 4294967300ULL; }, "4294967300"},
      // Issue 11, cause 3: non-integers where integers belong, non-positive eps, bad token ids.
      {[](json& j) { j["num_hidden_layers"] = 2.5; }, "must be an integer, got 2.5"},
      {[](json& j) { j["max_position_embeddings"] = 1024.5; }, "max_position_embeddings"},
      {[](json& j) { j["rms_norm_eps"] = -1; }, "rms_norm_eps"},
      {[](json& j) { j["rms_norm_eps"] = 0; }, "rms_norm_eps"},
      {[](json& j) { j["rope_theta"] = -5; }, "rope_theta"},
      {[](json& j) { j["eos_token_id"] = 100000; }, "eos_token_id 100000 is outside"},
      {[](json& j) {
         j["eos_token_id"] = {1, "two"};
       },
       "eos_token_id"},
      {[](json& j) { j["bos_token_id"] = 1.5; }, "bos_token_id"},
      {[](json& j) { j["bos_token_id"] = 100000; }, "bos_token_id 100000 is outside"},
  };
  const std::string original = json::parse(std::ifstream(dir / "config.json")).dump();
  for (const auto& c : cases) {
    std::ofstream(dir / "config.json") << original;
    edit_config(dir, c.edit);
    const std::string err = load_error(dir);
    EXPECT_NE(err.find(c.must_mention), std::string::npos) << err;
    EXPECT_NE(err.find("config.json"), std::string::npos) << err;
  }
  std::ofstream(dir / "config.json") << "{ malformed";
  EXPECT_NE(load_error(dir).find("not a valid JSON"), std::string::npos);
  // Issue 11, cause 1: an empty config or a directory in its place says so.
  std::ofstream(dir / "config.json", std::ios::trunc).close();
  std::string err = load_error(dir);
  EXPECT_NE(err.find("is empty"), std::string::npos) << err;
  fs::remove(dir / "config.json");
  fs::create_directory(dir / "config.json");
  err = load_error(dir);
  EXPECT_NE(err.find("is a directory"), std::string::npos) << err;
  fs::remove_all(dir);
}

// Issue 21: an explicit null for a numeric field is an error naming the field (rms_norm_eps: null
// used to take the default silently). transformers replaces None by the default only for
// num_key_value_heads and Llama/Mistral head_dim; sliding_window and rope_scaling null mean "none"
// in Mistral/Qwen2 configs. Those keep loading.
TEST(ModelLoading, ExplicitNullNumericFieldIsAnErrorNamingTheField) {
  auto config_of = [](const std::string& model, const std::function<void(json&)>& edit) {
    json j = json::parse(std::ifstream(kModels / model / "config.json"));
    edit(j);
    return parse_hf_config(j.dump(), "config.json");
  };
  auto error_of = [&](const std::string& model, const std::function<void(json&)>& edit) {
    auto c = config_of(model, edit);
    return c.has_value() ? std::string("(parsed without error)") : c.error();
  };
  const std::string use_default = " (leave the field out to use the default)";
  for (const char* key : {"rms_norm_eps", "rope_theta", "max_position_embeddings"}) {
    EXPECT_EQ(
        error_of("tiny-llama", [&](json& j) { j[key] = nullptr; }),
        std::string("config.json: field '") + key + "' must be a number, got null" + use_default);
  }
  for (const char* key : {"num_hidden_layers", "hidden_size", "num_attention_heads",
                          "intermediate_size", "vocab_size"}) {
    EXPECT_EQ(error_of("tiny-llama", [&](json& j) { j[key] = nullptr; }),
              std::string("config.json: field '") + key + "' must be a number, got null");
  }
  EXPECT_EQ(error_of("tiny-llama",
                     [](json& j) {
                       j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", nullptr}};
                     }),
            "config.json rope_scaling: field 'factor' must be a number, got null");
  EXPECT_EQ(error_of("tiny-qwen3", [](json& j) { j["head_dim"] = nullptr; }),
            "config.json: field 'head_dim' must be a number, got null" + use_default);
  // HF's own None-means-default fields.
  auto kv = config_of("tiny-llama", [](json& j) { j["num_key_value_heads"] = nullptr; });
  ASSERT_TRUE(kv.has_value()) << kv.error();
  EXPECT_EQ(kv->n_kv_heads, kv->n_heads);
  auto hd = config_of("tiny-llama", [](json& j) { j["head_dim"] = nullptr; });
  ASSERT_TRUE(hd.has_value()) << hd.error();
  EXPECT_EQ(hd->head_dim, hd->d_model / hd->n_heads);
  auto sw = config_of("tiny-mistral", [](json& j) {
    j["sliding_window"] = nullptr;
    j["rope_scaling"] = nullptr;
  });
  ASSERT_TRUE(sw.has_value()) << sw.error();
  EXPECT_EQ(sw->sliding_window, 0);
  // The fixtures carry "rope_scaling": null and "sliding_window": null as HF wrote them.
  for (const char* model : {"tiny-llama", "tiny-qwen2", "tiny-qwen3", "tiny-llama-fastkv"}) {
    auto c = config_of(model, [](json&) {});
    EXPECT_TRUE(c.has_value()) << model << ": " << c.error();
  }
}

// Boolean flags and hidden_act of the wrong type are errors naming the field and the value, not
// silent defaults; a null flag reads as transformers reads it (false).
TEST(ModelLoading, FlagOfWrongTypeIsAnErrorNamingTheField) {
  auto config_of = [](const std::string& model, const std::function<void(json&)>& edit) {
    json j = json::parse(std::ifstream(kModels / model / "config.json"));
    edit(j);
    return parse_hf_config(j.dump(), "config.json");
  };
  for (const char* key :
       {"tie_word_embeddings", "use_sliding_window", "attention_bias", "mlp_bias"}) {
    auto c = config_of("tiny-qwen2", [&](json& j) { j[key] = "yes"; });
    ASSERT_FALSE(c.has_value()) << key;
    EXPECT_EQ(c.error(),
              std::string("config.json: field '") + key + "' must be true or false, got \"yes\"");
  }
  auto act = config_of("tiny-llama", [](json& j) { j["hidden_act"] = 3; });
  ASSERT_FALSE(act.has_value());
  EXPECT_EQ(act.error(), "config.json: field 'hidden_act' must be a string (\"silu\"), got 3");
  auto tied = config_of("tiny-llama", [](json& j) { j["tie_word_embeddings"] = nullptr; });
  ASSERT_TRUE(tied.has_value()) << tied.error();
  EXPECT_FALSE(tied->tie_embeddings);
}

TEST(ModelLoading, BadGenerationConfigNamesTheField) {
  const fs::path dir = scratch_copy("tiny-llama");
  std::ofstream(dir / "generation_config.json") << R"({"eos_token_id": [2, 99999]})";
  std::string err = load_error(dir);
  EXPECT_NE(err.find("generation_config.json"), std::string::npos) << err;
  EXPECT_NE(err.find("99999"), std::string::npos) << err;
  std::ofstream(dir / "generation_config.json", std::ios::trunc) << R"({"eos_token_id": "x"})";
  err = load_error(dir);
  EXPECT_NE(err.find("eos_token_id"), std::string::npos) << err;
  std::ofstream(dir / "generation_config.json", std::ios::trunc) << R"({"eos_token_id": [2]})";
  EXPECT_EQ(load_error(dir), "");
  fs::remove_all(dir);
}

TEST(ModelLoading, ShapeMismatchAndMissingTensorAreNamed) {
  const fs::path dir = scratch_copy("tiny-llama");
  edit_config(dir, [](json& j) { j["intermediate_size"] = 96; });
  std::string err = load_error(dir);
  EXPECT_NE(err.find("mlp.gate_proj.weight"), std::string::npos) << err;
  EXPECT_NE(err.find("shape"), std::string::npos) << err;
  edit_config(dir, [](json& j) {
    j["intermediate_size"] = 128;
    j["num_hidden_layers"] = 3;
  });
  err = load_error(dir);
  EXPECT_NE(err.find("model.layers.2."), std::string::npos) << err;
  EXPECT_NE(err.find("not found"), std::string::npos) << err;
  fs::remove_all(dir);
}

TEST(ModelLoading, TruncatedWeightsFileIsRejected) {
  const fs::path dir = scratch_copy("tiny-llama");
  const fs::path st = dir / "model.safetensors";
  const auto size = fs::file_size(st);
  fs::resize_file(st, size / 2);
  const std::string err = load_error(dir);
  EXPECT_NE(err.find("model.safetensors"), std::string::npos) << err;
  EXPECT_NE(err.find("out of range"), std::string::npos) << err;
  fs::remove_all(dir);
}

TEST(ModelLoading, TruncatedGgufIsRejected) {
  const fs::path src = fs::path(FKV_SHARED_DIR) / "models/stories260K/stories260K.gguf";
  const fs::path dst = fs::temp_directory_path() / "fkv_truncated.gguf";
  fs::copy_file(src, dst, fs::copy_options::overwrite_existing);
  fs::resize_file(dst, fs::file_size(src) - 1000);
  const std::string err = load_error(dst);
  EXPECT_FALSE(err.empty());
  EXPECT_NE(err.find("fkv_truncated.gguf"), std::string::npos) << err;
  fs::remove(dst);
}

}  // namespace
}  // namespace fkv
