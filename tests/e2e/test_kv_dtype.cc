// The KV cache dtype (SessionOptions::kv_dtype) changes what decode reads, never what prefill
// keeps: policies score the f32 post-RoPE keys before they are stored, so every method's kept
// sets and the prefill logits are bit-identical for f32, f16 and bf16 caches; kv_bytes counts the
// stored element size; decode stays within the half format's rounding of the f32 cache.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "engine/engine.h"
#include "kv/method_spec.h"

namespace {

const std::string kSource = FKV_SOURCE_DIR;

TEST(KvDtype, KeptSetsAndPrefillLogitsDoNotDependOnIt) {
  auto model = fkv::Model::load(kSource + "/tests/data/models/tiny-llama-fastkv");
  ASSERT_TRUE(model) << model.error();
  const fkv::ModelConfig& c = (*model)->config();
  std::vector<int32_t> tokens(150);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = (i * 131 + 7) % c.n_vocab;
  for (const std::string& name : fkv::policy_names()) {
    fkv::PolicyOptions po;
    po.method = name;
    std::string sel_f32;
    std::vector<float> logits_f32, decode_f32;
    size_t rows_f32 = 0;
    for (fkv::DType dt : {fkv::DType::kF32, fkv::DType::kF16, fkv::DType::kBF16}) {
      auto policy = fkv::make_policy(po, (*model)->policy_info());
      ASSERT_TRUE(policy) << policy.error();
      fkv::SessionOptions so;
      so.max_new_tokens = 20;
      so.kv_dtype = dt;
      fkv::Session s(**model, **policy, so);
      std::vector<float> logits;
      ASSERT_TRUE(s.prefill(tokens, logits)) << name;
      size_t rows = 0;
      for (const auto& layer : s.cache_positions())
        for (const auto& head : layer) rows += head.size();
      const size_t elem = dt == fkv::DType::kF32 ? 4 : 2;
      EXPECT_EQ(s.kv_bytes(), rows * c.head_dim * 2 * elem) << name << " " << fkv::dtype_name(dt);
      // 17 decode steps: PyramidInfer compacts at step 15, reading the (widened) cache.
      std::vector<float> dec;
      for (int step = 0; step < 17; ++step) ASSERT_TRUE(s.decode(tokens[step], dec)) << name;
      if (dt == fkv::DType::kF32) {
        sel_f32 = s.selection().to_json();
        logits_f32 = logits;
        decode_f32 = dec;
        rows_f32 = rows;
        continue;
      }
      EXPECT_EQ(s.selection().to_json(), sel_f32) << name << " " << fkv::dtype_name(dt);
      EXPECT_EQ(rows, rows_f32) << name;
      ASSERT_EQ(logits.size(), logits_f32.size());
      EXPECT_EQ(std::memcmp(logits.data(), logits_f32.data(), logits.size() * sizeof(float)), 0)
          << name << " " << fkv::dtype_name(dt);
      double diff = 0, mag = 0;
      for (size_t i = 0; i < dec.size(); ++i) {
        diff = std::max(diff, std::fabs(static_cast<double>(dec[i]) - decode_f32[i]));
        mag = std::max(mag, std::fabs(static_cast<double>(decode_f32[i])));
      }
      EXPECT_LE(diff, (dt == fkv::DType::kF16 ? 1e-2 : 5e-2) * mag)
          << name << " " << fkv::dtype_name(dt);
    }
  }
}

TEST(KvDtype, UnsupportedDtypeIsAnError) {
  auto model = fkv::Model::load(kSource + "/tests/data/models/tiny-llama");
  ASSERT_TRUE(model) << model.error();
  auto policy = fkv::make_policy(fkv::PolicyOptions(), (*model)->policy_info());
  fkv::SessionOptions so;
  so.kv_dtype = fkv::DType::kQ4_0;
  fkv::Session s(**model, **policy, so);
  std::vector<float> logits;
  auto st = s.prefill(std::vector<int32_t>{1, 2, 3}, logits);
  ASSERT_FALSE(st);
  EXPECT_NE(st.message().find("q4_0"), std::string::npos) << st.message();
}

}  // namespace
