// Session::prefill_shared: one forward pass filling the caches of several methods equals each
// method's own prefill bit for bit (logits, kept positions, selection, KV bytes) and the decode
// steps after it; methods that cannot share a pass are refused.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "kv/method_spec.h"
#include "model/model.h"

namespace fkv {
namespace {
namespace fs = std::filesystem;

std::unique_ptr<KvPolicy> policy_for(const Model& m, const std::string& spec) {
  auto po = parse_method_spec(spec);
  EXPECT_TRUE(po) << po.error();
  auto p = make_policy(*po, m.policy_info());
  EXPECT_TRUE(p) << spec << ": " << p.error();
  return std::move(p.value());
}

std::vector<int32_t> tokens(int n, int vocab) {
  std::vector<int32_t> t(n);
  uint32_t s = 12345;
  for (int i = 0; i < n; ++i) {
    s = s * 1664525u + 1013904223u;
    t[i] = static_cast<int32_t>((s >> 8) % static_cast<uint32_t>(vocab));
  }
  return t;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

int argmax(const std::vector<float>& v) {
  return static_cast<int>(std::max_element(v.begin(), v.end()) - v.begin());
}

void check_model(const std::string& path, int n_prompt) {
  auto model = Model::load(path);
  ASSERT_TRUE(model) << model.error();
  const Model& m = **model;
  const std::vector<std::string> specs = {"fullkv",
                                          "snapkv:retain_rate=0.2",
                                          "snapkv:retain_rate=0.5",
                                          "pyramidkv:retain_rate=0.2",
                                          "adakv:retain_rate=0.2",
                                          "streamingllm:retain_rate=0.2",
                                          "h2o:retain_rate=0.2"};
  const std::vector<int32_t> prompt = tokens(n_prompt, m.config().n_vocab);
  SessionOptions so;
  so.max_new_tokens = 8;
  std::vector<std::unique_ptr<KvPolicy>> shared_policies;
  std::vector<std::unique_ptr<Session>> shared;
  std::vector<Session*> ptrs;
  for (const std::string& s : specs) {
    shared_policies.push_back(policy_for(m, s));
    shared.push_back(std::make_unique<Session>(m, *shared_policies.back(), so));
    ptrs.push_back(shared.back().get());
  }
  std::vector<float> shared_logits;
  ASSERT_TRUE(Session::prefill_shared(ptrs, prompt, shared_logits));
  for (size_t i = 0; i < specs.size(); ++i) {
    SCOPED_TRACE(specs[i]);
    auto pol = policy_for(m, specs[i]);
    Session alone(m, *pol, so);
    std::vector<float> a, b = shared_logits;
    ASSERT_TRUE(alone.prefill(prompt, a));
    EXPECT_TRUE(same_bits(a, b));
    EXPECT_EQ(alone.cache_positions(), shared[i]->cache_positions());
    EXPECT_EQ(alone.selection().to_json(), shared[i]->selection().to_json());
    EXPECT_EQ(alone.kv_bytes(), shared[i]->kv_bytes());
    EXPECT_EQ(alone.next_pos(), shared[i]->next_pos());
    for (int step = 0; step < 6; ++step) {
      const int tok = argmax(a);
      ASSERT_TRUE(alone.decode(tok, a));
      ASSERT_TRUE(shared[i]->decode(tok, b));
      EXPECT_TRUE(same_bits(a, b)) << "decode step " << step;
    }
  }
  if (specs.size() > 1) {
    const double full = static_cast<double>(shared[0]->kv_bytes());
    EXPECT_LT(static_cast<double>(shared[1]->kv_bytes()), full);  // the branches differ
  }
}

TEST(SharedPrefill, EqualsEachMethodAloneOnStories) {
  check_model(std::string(FKV_SHARED_DIR) + "/models/stories260K/stories260K.gguf", 300);
}

TEST(SharedPrefill, EqualsEachMethodAloneOnGqaModel) {
  check_model((fs::path(FKV_SOURCE_DIR) / "tests/data/models/tiny-llama-fastkv").string(), 200);
}

TEST(SharedPrefill, RefusesMethodsThatCannotShare) {
  auto model = Model::load(std::string(FKV_SHARED_DIR) + "/models/stories260K/stories260K.gguf");
  ASSERT_TRUE(model) << model.error();
  const Model& m = **model;
  const std::vector<int32_t> prompt = tokens(200, m.config().n_vocab);
  for (const char* spec : {"fastkv:tsp_layer=2", "gemfilter:filter_layer=2", "pyramidinfer"}) {
    auto full = policy_for(m, "fullkv");
    auto other = policy_for(m, spec);
    Session a(m, *full), b(m, *other);
    Session* both[2] = {&a, &b};
    std::vector<float> logits;
    Status st = Session::prefill_shared(both, prompt, logits);
    EXPECT_FALSE(st) << spec;
    EXPECT_NE(st.message().find("cannot share"), std::string::npos) << st.message();
  }
  auto p = policy_for(m, "fullkv");
  Session a(m, *p);
  Session* twice[2] = {&a, &a};
  std::vector<float> logits;
  EXPECT_FALSE(Session::prefill_shared(twice, prompt, logits));
}

}  // namespace
}  // namespace fkv
