// Chunked prefill (SessionOptions::ubatch) gives the same bits as one chunk: every row takes the
// same kernel path whatever the chunking, so logits, kept sets and TSP rows do not change.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <filesystem>

#include "engine/app.h"
#include "engine/engine.h"
#include "kernels/ops.h"
#include "kv/method_spec.h"

namespace {
namespace fs = std::filesystem;

const std::string kSource = FKV_SOURCE_DIR;

struct Run {
  std::vector<float> logits;
  std::string selection;
};

Run run(const fkv::Model& model, const std::string& spec, int ubatch,
        const std::vector<int32_t>& tokens, bool all_logits) {
  auto po = fkv::parse_method_spec(spec);
  EXPECT_TRUE(po) << po.error();
  auto policy = fkv::make_policy(*po, model.policy_info());
  EXPECT_TRUE(policy) << policy.error();
  fkv::SessionOptions so;
  so.max_new_tokens = 2;
  so.ubatch = ubatch;
  fkv::Session s(model, **policy, so);
  Run r;
  auto st = all_logits ? s.prefill_all_logits(tokens, r.logits) : s.prefill(tokens, r.logits);
  EXPECT_TRUE(st) << st.message();
  if (!all_logits) {
    EXPECT_TRUE(s.decode(tokens[0], r.logits));  // decode reads the chunked prefill's cache
    r.selection = s.selection().to_json();
  }
  return r;
}

void expect_same_for_every_ubatch(const fkv::Model& model, int n) {
  std::vector<int32_t> tokens(n);
  for (int i = 0; i < n; ++i) tokens[i] = (i * 7919 + 13) % model.config().n_vocab;
  const Run whole = run(model, "fullkv", 1 << 20, tokens, true);
  const Run whole_fastkv =
      run(model, "fastkv:tsp_rate=0.3,retain_rate=0.2,tsp_layer=1", 1 << 20, tokens, false);
  for (int ub : {1, 32, 64, 100, 160}) {
    const Run chunked = run(model, "fullkv", ub, tokens, true);
    ASSERT_EQ(chunked.logits.size(), whole.logits.size());
    EXPECT_EQ(std::memcmp(chunked.logits.data(), whole.logits.data(),
                          whole.logits.size() * sizeof(float)),
              0)
        << model.path() << " ubatch " << ub;
    const Run fk = run(model, "fastkv:tsp_rate=0.3,retain_rate=0.2,tsp_layer=1", ub, tokens, false);
    EXPECT_EQ(fk.selection, whole_fastkv.selection) << model.path() << " ubatch " << ub;
    EXPECT_EQ(
        std::memcmp(fk.logits.data(), whole_fastkv.logits.data(), fk.logits.size() * sizeof(float)),
        0)
        << model.path() << " ubatch " << ub;
  }
}

TEST(ChunkedPrefill, SameBitsAsOneChunkOnF32Weights) {
  for (const char* name : {"tiny-llama", "tiny-qwen2"}) {
    auto model = fkv::Model::load(kSource + "/tests/data/models/" + name);
    ASSERT_TRUE(model) << model.error();
    expect_same_for_every_ubatch(**model, 203);
  }
}

TEST(ChunkedPrefill, SameBitsAsOneChunkOnBf16Weights) {
  // tiny-llama3 (bf16) on the default kernels: avx512+bf16dot where the CPU has AVX512_BF16, whose
  // x panels of >= 8 rows and shorter last panels (by the 1-row kernel) must not depend on the
  // chunking either: 195 rows end in a 3-row panel, 203 in an 11-row one.
  std::printf("kernels: %s\n", fkv::kernel_isa_name());
  auto model = fkv::Model::load(kSource + "/tests/data/models/tiny-llama3");
  ASSERT_TRUE(model) << model.error();
  for (int n : {195, 203}) expect_same_for_every_ubatch(**model, n);
}

TEST(ChunkedPrefill, SameBitsAsOneChunkOnQuantizedWeights) {
  // SmolLM2 Q4_1: quantized tiles, x panels and the 8-bit dot path for few rows.
  auto path = fkv::resolve_model_path("smollm2-135m-instruct");
  ASSERT_TRUE(path.has_value() && fs::exists(*path))
      << "fetch it with: python3 tools/scripts/fetch_models.py smollm2-135m-instruct";
  auto model = fkv::Model::load(*path);
  ASSERT_TRUE(model) << model.error();
  expect_same_for_every_ubatch(**model, 203);
}

}  // namespace
