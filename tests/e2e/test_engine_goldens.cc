// End-to-end goldens: next-token logits and greedy continuations of the tiny HF fixtures agree
// with HF transformers (tools/scripts/make_model_goldens.py), and stories260K's greedy text equals
// llama2.c's documented output.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/app.h"
#include "engine/engine.h"
#include "kernels/dispatch.h"
#include "kv/policy.h"
#include "model/model.h"
#include "sampler/sampler.h"

namespace fkv {
namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;

// The goldens are HF transformers in float32 with the bf16 weights upcast exactly, so the bf16
// fixtures (tiny-llama3, tiny-qwen3) are compared on the exact f32 matmul: the default bf16-dot
// kernels (avx512+bf16dot) round activations to bf16 as llama.cpp does, which moves these logits by
// up to ~1% of their range, past the 1e-4 agreement this test proves. Read once at the first
// matmul, so it is set before any test runs.
const bool kExactF32Matmul = [] { return ::setenv("FKV_BF16_DOT", "0", 1) == 0; }();

const fs::path kSource = FKV_SOURCE_DIR;
const fs::path kShared = FKV_SHARED_DIR;

std::unique_ptr<KvPolicy> full_policy(const Model& m) {
  PolicyOptions po;
  po.method = "fullkv";
  auto p = make_policy(po, m.policy_info());
  EXPECT_TRUE(p.has_value()) << p.error();
  return std::move(p.value());
}

// Relative agreement: max |ours - ref| <= tol * max(1, max |ref|).
void expect_logits_close(const std::vector<float>& ours, const json& ref, double tol,
                         const std::string& what) {
  ASSERT_EQ(ours.size(), ref.size()) << what;
  double max_ref = 1.0, max_diff = 0.0;
  for (size_t i = 0; i < ours.size(); ++i) {
    const double r = ref[i].get<double>();
    max_ref = std::max(max_ref, std::abs(r));
    max_diff = std::max(max_diff, std::abs(ours[i] - r));
  }
  EXPECT_LE(max_diff, tol * max_ref)
      << what << ": max abs diff " << max_diff << " (max |ref| " << max_ref << ")";
}

std::vector<fs::path> golden_files() {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(kSource / "tests/data/goldens")) {
    const std::string name = e.path().filename().string();
    if (name.rfind("model_", 0) == 0 && e.path().extension() == ".json") out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

TEST(ModelGoldens, EveryGoldenFileMatchesTransformers) {
  ASSERT_TRUE(kExactF32Matmul);
  ASSERT_EQ(active_kernels().gemm_bf16dot, nullptr) << active_kernels().name;
  const auto files = golden_files();
  ASSERT_FALSE(files.empty()) << "no tests/data/goldens/model_*.json";
  for (const fs::path& f : files) {
    SCOPED_TRACE(f.string());
    std::ifstream in(f);
    const json g = json::parse(in);
    const fs::path model_dir = kSource / "tests/data/models" / g["model"].get<std::string>();
    auto model = Model::load(model_dir.string());
    ASSERT_TRUE(model.has_value()) << model.error();
    // Next-token logits of the last prompt position, prompts of several lengths.
    for (const json& c : g["cases"]) {
      const std::vector<int32_t> prompt = c["prompt"].get<std::vector<int32_t>>();
      auto policy = full_policy(**model);
      SessionOptions so;
      so.max_new_tokens = 1;
      Session s(**model, *policy, so);
      std::vector<float> logits;
      ASSERT_TRUE(s.prefill(prompt, logits).is_ok());
      expect_logits_close(logits, c["last_logits"], 1e-4,
                          "prompt of " + std::to_string(prompt.size()) + " tokens");
    }
    // Every position's logits, where the golden has them.
    if (g.contains("all_logits")) {
      const std::vector<int32_t> prompt = g["all_logits"]["prompt"].get<std::vector<int32_t>>();
      auto policy = full_policy(**model);
      Session s(**model, *policy, {});
      std::vector<float> logits;
      ASSERT_TRUE(s.prefill_all_logits(prompt, logits).is_ok());
      const json& rows = g["all_logits"]["logits"];
      const size_t n_vocab = (*model)->config().n_vocab;
      ASSERT_EQ(rows.size(), prompt.size());
      for (size_t r = 0; r < rows.size(); ++r) {
        std::vector<float> row(logits.begin() + r * n_vocab, logits.begin() + (r + 1) * n_vocab);
        expect_logits_close(row, rows[r], 1e-4, "position " + std::to_string(r));
      }
    }
    // Greedy continuation, token for token.
    const std::vector<int32_t> prompt = g["greedy"]["prompt"].get<std::vector<int32_t>>();
    const std::vector<int32_t> expected = g["greedy"]["tokens"].get<std::vector<int32_t>>();
    auto policy = full_policy(**model);
    SessionOptions so;
    so.max_new_tokens = static_cast<int>(expected.size());
    Session s(**model, *policy, so);
    GenerationRequest req;
    req.prompt = prompt;
    req.max_new_tokens = static_cast<int>(expected.size());
    auto res = generate(s, req, nullptr);
    ASSERT_TRUE(res.has_value()) << res.error();
    EXPECT_EQ(res->tokens, expected);
  }
}

TEST(Stories260K, GreedyTextEqualsLlama2cReference) {
  const fs::path gguf = kShared / "models/stories260K/stories260K.gguf";
  auto model = Model::load(gguf.string());
  ASSERT_TRUE(model.has_value()) << model.error();
  auto tok = load_tokenizer_for(**model);
  ASSERT_TRUE(tok.has_value()) << tok.error();
  std::ifstream in(kSource / "tests/data/goldens/stories260k_greedy.txt");
  std::string expected((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!expected.empty() && expected.back() == '\n') expected.pop_back();
  // llama2.c: `./run stories260K.bin -z tok512.bin -t 0.0`, 256 steps from BOS print 256 tokens.
  auto policy = full_policy(**model);
  SessionOptions so;
  so.max_new_tokens = 256;
  Session s(**model, *policy, so);
  GenerationRequest req;
  req.prompt = {tok->bos_id()};
  req.max_new_tokens = 256;
  auto res = generate(s, req, nullptr);
  ASSERT_TRUE(res.has_value()) << res.error();
  ASSERT_EQ(res->tokens.size(), 256u);
  std::string text = tok->decode(res->tokens, /*skip_special_tokens=*/true);
  while (!text.empty() && text.front() == ' ') text.erase(text.begin());
  EXPECT_EQ(text, expected);
}

TEST(Engine, DecodePositionsFollowThePromptWhateverIsDropped) {
  const fs::path gguf = kShared / "models/stories260K/stories260K.gguf";
  auto model = Model::load(gguf.string());
  ASSERT_TRUE(model.has_value()) << model.error();
  const ModelConfig& c = (*model)->config();
  PolicyOptions po;
  po.method = "streamingllm";
  po.kv_budget = 16;
  auto policy = make_policy(po, (*model)->policy_info());
  ASSERT_TRUE(policy.has_value()) << policy.error();
  Session s(**model, **policy, {});
  std::vector<int32_t> prompt(100);
  for (int i = 0; i < 100; ++i) prompt[i] = 3 + (i * 37) % 500;
  std::vector<float> logits;
  ASSERT_TRUE(s.prefill(prompt, logits).is_ok());
  EXPECT_EQ(s.next_pos(), 100);
  EXPECT_LT(s.kv_bytes(), s.timing().n_prompt * static_cast<size_t>(c.n_layers) * c.n_kv_heads *
                              c.head_dim * 2 * sizeof(float));
  ASSERT_TRUE(s.decode(5, logits).is_ok());
  EXPECT_EQ(s.next_pos(), 101);
}

TEST(Engine, RejectsPromptsBeyondContextAndBadTokenIds) {
  const fs::path gguf = kShared / "models/stories260K/stories260K.gguf";
  auto model = Model::load(gguf.string());
  ASSERT_TRUE(model.has_value()) << model.error();
  auto policy = full_policy(**model);
  const int n_ctx = (*model)->config().n_ctx;
  {
    Session s(**model, *policy, {});
    std::vector<int32_t> prompt(n_ctx + 1, 5);
    std::vector<float> logits;
    Status st = s.prefill(prompt, logits);
    ASSERT_FALSE(st.is_ok());
    EXPECT_NE(st.message().find("context length"), std::string::npos) << st.message();
  }
  {
    Session s(**model, *policy, {});
    std::vector<int32_t> prompt = {1, 99999};
    std::vector<float> logits;
    Status st = s.prefill(prompt, logits);
    ASSERT_FALSE(st.is_ok());
    EXPECT_NE(st.message().find("99999"), std::string::npos) << st.message();
  }
}

}  // namespace
}  // namespace fkv
