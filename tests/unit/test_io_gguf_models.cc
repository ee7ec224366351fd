// Real pretrained GGUF files fetched by tools/scripts/fetch_models.py (skipped when absent, so CI
// without the model passes). Expected values come from the gguf Python package's GGUFReader
// (SmolLM2) and from `fetch_models.py --describe` (Qwen2.5-Coder); docs/MODELS.md lists them.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <utility>

#include "io/gguf.h"

namespace fkv {
namespace {

std::string model_path(const std::string& file) {
  const char* dir = std::getenv("FASTKV_MODEL_DIR");
  std::string d;
  if (dir != nullptr && *dir != '\0') {
    d = dir;
  } else {
    const char* home = std::getenv("HOME");
    d = std::string(home ? home : "") + "/.cache/fastkv/models";
  }
  return d + "/" + file;
}

bool exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0;
}

TEST(GgufModels, SmolLM2_135M_Instruct_Q4_1) {
  const std::string path = model_path("SmolLM2-135M-Instruct.Q4_1.gguf");
  if (!exists(path)) {
    GTEST_SKIP() << path << " absent; run tools/scripts/fetch_models.py smollm2-135m-instruct";
  }
  auto g = GgufFile::open(path);
  ASSERT_TRUE(g.has_value()) << g.error();
  EXPECT_EQ(g->version(), 3u);
  EXPECT_EQ(g->metadata().size(), 33u);
  EXPECT_EQ(g->get_string("general.architecture").value(), "llama");
  EXPECT_EQ(g->get_string("general.license").value(), "apache-2.0");
  EXPECT_EQ(g->get_int("llama.block_count").value(), 30);
  EXPECT_EQ(g->get_int("llama.context_length").value(), 8192);
  EXPECT_EQ(g->get_int("llama.embedding_length").value(), 576);
  EXPECT_EQ(g->get_int("llama.feed_forward_length").value(), 1536);
  EXPECT_EQ(g->get_int("llama.attention.head_count").value(), 9);
  EXPECT_EQ(g->get_int("llama.attention.head_count_kv").value(), 3);
  EXPECT_EQ(g->get_int("llama.rope.dimension_count").value(), 64);
  EXPECT_EQ(g->get_float("llama.rope.freq_base").value(), 100000.0);
  EXPECT_EQ(g->get_int("llama.vocab_size").value(), 49152);
  EXPECT_EQ(g->get_int("tokenizer.ggml.add_bos_token").value(), 0);
  EXPECT_EQ(g->get_string("tokenizer.ggml.model").value(), "gpt2");
  EXPECT_EQ(g->get_string("tokenizer.ggml.pre").value(), "smollm");
  auto tokens = g->get_string_array("tokenizer.ggml.tokens");
  ASSERT_TRUE(tokens.has_value()) << tokens.error();
  ASSERT_EQ(tokens->size(), 49152u);
  EXPECT_EQ((*tokens)[1], "<|im_start|>");
  EXPECT_EQ((*tokens)[2], "<|im_end|>");
  auto merges = g->get_string_array("tokenizer.ggml.merges");
  ASSERT_TRUE(merges.has_value());
  EXPECT_EQ(merges->size(), 48900u);
  EXPECT_EQ((*merges)[0], "\xC4\xA0 t");  // "Ġ t"
  EXPECT_NE(g->get_string("tokenizer.chat_template")->find("<|im_start|>"), std::string::npos);

  EXPECT_EQ(g->tensors().size(), 272u);
  std::map<DType, int> counts;
  for (const auto& t : g->tensors()) ++counts[t.dtype];
  EXPECT_EQ(counts[DType::kQ4_1], 210);
  EXPECT_EQ(counts[DType::kF32], 61);
  EXPECT_EQ(counts[DType::kQ8_0], 1);
  const GgufTensorInfo* emb = g->find_tensor("token_embd.weight");
  ASSERT_NE(emb, nullptr);
  EXPECT_EQ(emb->dtype, DType::kQ8_0);
  EXPECT_EQ(emb->dims, (std::vector<int64_t>{576, 49152}));
  EXPECT_EQ(g->find_tensor("output.weight"), nullptr);  // tied to token_embd
  const GgufTensorInfo* down = g->find_tensor("blk.29.ffn_down.weight");
  ASSERT_NE(down, nullptr);
  EXPECT_EQ(down->dtype, DType::kQ4_1);
  EXPECT_EQ(down->dims, (std::vector<int64_t>{1536, 576}));
  EXPECT_EQ(g->find_tensor("blk.0.attn_k.weight")->dims, (std::vector<int64_t>{576, 192}));
}

// Qwen2.5-Coder-1.5B-Instruct Q4_K_M: the official Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF file
// (fetch_models.py checks its sha256), 1,117,320,768 bytes.
TEST(GgufModels, Qwen25Coder_1_5B_Instruct_Q4_K_M) {
  const std::string path = model_path("qwen2.5-coder-1.5b-instruct-q4_k_m.gguf");
  if (!exists(path)) {
    GTEST_SKIP()
        << path << " absent; run python3 tools/scripts/fetch_models.py qwen2.5-coder-1.5b-instruct";
  }
  auto g = GgufFile::open(path);
  ASSERT_TRUE(g.has_value()) << g.error();
  EXPECT_EQ(g->version(), 3u);
  EXPECT_EQ(g->metadata().size(), 26u);
  EXPECT_EQ(g->get_string("general.architecture").value(), "qwen2");
  EXPECT_EQ(g->get_string("general.name").value(), "Qwen2.5 Coder 1.5B Instruct GGUF");
  EXPECT_EQ(g->get_int("general.file_type").value(), 15);  // MOSTLY_Q4_K_M
  EXPECT_EQ(g->get_int("qwen2.block_count").value(), 28);
  EXPECT_EQ(g->get_int("qwen2.context_length").value(), 32768);
  EXPECT_EQ(g->get_int("qwen2.embedding_length").value(), 1536);
  EXPECT_EQ(g->get_int("qwen2.feed_forward_length").value(), 8960);
  EXPECT_EQ(g->get_int("qwen2.attention.head_count").value(), 12);
  EXPECT_EQ(g->get_int("qwen2.attention.head_count_kv").value(), 2);
  EXPECT_FALSE(g->has("qwen2.rope.dimension_count"));  // head_dim = 1536 / 12 = 128
  EXPECT_EQ(g->get_float("qwen2.rope.freq_base").value(), 1000000.0);
  EXPECT_NEAR(g->get_float("qwen2.attention.layer_norm_rms_epsilon").value(), 1e-6, 1e-12);

  // Tokenizer: byte-level BPE with the qwen2 pre-tokenizer, 151,936 ids, ChatML specials.
  EXPECT_EQ(g->get_string("tokenizer.ggml.model").value(), "gpt2");
  EXPECT_EQ(g->get_string("tokenizer.ggml.pre").value(), "qwen2");
  EXPECT_EQ(g->get_int("tokenizer.ggml.add_bos_token").value(), 0);
  EXPECT_EQ(g->get_int("tokenizer.ggml.bos_token_id").value(), 151643);
  EXPECT_EQ(g->get_int("tokenizer.ggml.eos_token_id").value(), 151645);
  EXPECT_EQ(g->get_int("tokenizer.ggml.padding_token_id").value(), 151643);
  auto tokens = g->get_string_array("tokenizer.ggml.tokens");
  ASSERT_TRUE(tokens.has_value()) << tokens.error();
  ASSERT_EQ(tokens->size(), 151936u);
  EXPECT_EQ((*tokens)[151643], "<|endoftext|>");
  EXPECT_EQ((*tokens)[151644], "<|im_start|>");
  EXPECT_EQ((*tokens)[151645], "<|im_end|>");
  auto types = g->get_int_array("tokenizer.ggml.token_type");
  ASSERT_TRUE(types.has_value()) << types.error();
  EXPECT_EQ(types->size(), 151936u);
  auto merges = g->get_string_array("tokenizer.ggml.merges");
  ASSERT_TRUE(merges.has_value()) << merges.error();
  EXPECT_EQ(merges->size(), 151387u);
  EXPECT_EQ((*merges)[0], "\xC4\xA0 \xC4\xA0");  // "Ġ Ġ"
  auto tmpl = g->get_string("tokenizer.chat_template");
  ASSERT_TRUE(tmpl.has_value()) << tmpl.error();
  EXPECT_EQ(tmpl->size(), 2509u);
  EXPECT_NE(tmpl->find("<|im_start|>"), std::string::npos);
  EXPECT_NE(tmpl->find("<|im_end|>"), std::string::npos);
  EXPECT_NE(tmpl->find("You are Qwen, created by Alibaba Cloud."), std::string::npos);

  // Tensor types, in total and per role (blk.N. folded): Q4_K_M here is Q4_K + Q6_K + F32 only;
  // no Q5_0 / Q8_0 fallbacks (every row length, 1536 and 8960, is a multiple of 256).
  ASSERT_EQ(g->tensors().size(), 339u);
  std::map<DType, int> counts;
  std::map<std::string, std::map<DType, int>> by_role;
  std::set<int> q6k_v_layers, q6k_down_layers;
  const std::regex blk(R"(^blk\.(\d+)\.(.*)$)");
  for (const auto& t : g->tensors()) {
    ++counts[t.dtype];
    std::smatch m;
    std::string role = t.name;
    if (std::regex_match(t.name, m, blk)) {
      role = "blk.*." + m[2].str();
      if (t.dtype == DType::kQ6_K && m[2] == "attn_v.weight") q6k_v_layers.insert(std::stoi(m[1]));
      if (t.dtype == DType::kQ6_K && m[2] == "ffn_down.weight") {
        q6k_down_layers.insert(std::stoi(m[1]));
      }
    }
    ++by_role[role][t.dtype];
  }
  EXPECT_EQ(counts.size(), 3u);
  EXPECT_EQ(counts[DType::kQ4_K], 169);
  EXPECT_EQ(counts[DType::kQ6_K], 29);
  EXPECT_EQ(counts[DType::kF32], 141);
  EXPECT_EQ(counts.count(DType::kQ5_0), 0u);
  EXPECT_EQ(counts.count(DType::kQ8_0), 0u);
  using Roles = std::map<std::string, std::map<DType, int>>;
  const Roles expected = {
      {"token_embd.weight", {{DType::kQ4_K, 1}}},
      {"output.weight", {{DType::kQ6_K, 1}}},
      {"output_norm.weight", {{DType::kF32, 1}}},
      {"blk.*.attn_norm.weight", {{DType::kF32, 28}}},
      {"blk.*.ffn_norm.weight", {{DType::kF32, 28}}},
      {"blk.*.attn_q.bias", {{DType::kF32, 28}}},
      {"blk.*.attn_k.bias", {{DType::kF32, 28}}},
      {"blk.*.attn_v.bias", {{DType::kF32, 28}}},
      {"blk.*.attn_q.weight", {{DType::kQ4_K, 28}}},
      {"blk.*.attn_k.weight", {{DType::kQ4_K, 28}}},
      {"blk.*.attn_v.weight", {{DType::kQ4_K, 14}, {DType::kQ6_K, 14}}},
      {"blk.*.attn_output.weight", {{DType::kQ4_K, 28}}},
      {"blk.*.ffn_gate.weight", {{DType::kQ4_K, 28}}},
      {"blk.*.ffn_up.weight", {{DType::kQ4_K, 28}}},
      {"blk.*.ffn_down.weight", {{DType::kQ4_K, 14}, {DType::kQ6_K, 14}}},
  };
  EXPECT_EQ(by_role, expected);
  const std::set<int> q6k_layers = {0, 1, 5, 6, 7, 8, 9, 10, 13, 16, 19, 21, 24, 27};
  EXPECT_EQ(q6k_v_layers, q6k_layers);
  EXPECT_EQ(q6k_down_layers, q6k_layers);

  // Shapes (ggml order: dims[0] is the row length).
  const std::vector<std::pair<std::string, std::vector<int64_t>>> shapes = {
      {"token_embd.weight", {1536, 151936}},
      {"output.weight", {1536, 151936}},
      {"blk.0.attn_q.weight", {1536, 1536}},
      {"blk.0.attn_k.weight", {1536, 256}},
      {"blk.27.attn_v.weight", {1536, 256}},
      {"blk.0.attn_q.bias", {1536}},
      {"blk.0.attn_k.bias", {256}},
      {"blk.0.attn_output.weight", {1536, 1536}},
      {"blk.0.ffn_gate.weight", {1536, 8960}},
      {"blk.0.ffn_up.weight", {1536, 8960}},
      {"blk.27.ffn_down.weight", {8960, 1536}},
      {"output_norm.weight", {1536}},
  };
  for (const auto& [name, dims] : shapes) {
    const GgufTensorInfo* t = g->find_tensor(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(t->dims, dims) << name;
  }
  // The tensor data ends exactly at the end of the file (nothing missing, nothing appended).
  const uint8_t* end = nullptr;
  for (const auto& t : g->tensors()) end = std::max(end, t.data + t.n_bytes);
  EXPECT_EQ(end, g->mapping()->data() + g->mapping()->size());
  EXPECT_EQ(g->mapping()->size(), 1117320768u);
}

}  // namespace
}  // namespace fkv
