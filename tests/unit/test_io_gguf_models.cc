// Real pretrained GGUF files fetched by tools/scripts/fetch_models.py (skipped when absent, so CI
// without the model passes). Expected values come from the gguf Python package's GGUFReader.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <map>
#include <string>

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

}  // namespace
}  // namespace fkv
