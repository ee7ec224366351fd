// End-to-end KV-policy goldens: the engine's prefill selection (kept prompt positions per layer and
// KV head, TSP positions) on the tiny-llama-fastkv fixture must equal, exactly, what the
// independent NumPy reference (tools/scripts/kv_reference.py via make_kv_goldens.py) computed.
// Last-position logits are compared with a tolerance (f32 engine vs f64 reference).
// Plus invariants: a budget >= the prompt reproduces fullkv exactly, FastKV with tsp_rate 1 equals
// FastKV without TSP (and SnapKV), and decode positions continue at N + step.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "kv/policy.h"
#include "model/model.h"

namespace fkv {
namespace {

using json = nlohmann::json;

constexpr double kLogitTol = 5e-4;  // f32 engine vs f64 reference (observed <= 1e-4), |logit| <~ 15

const std::string kRoot = FKV_SOURCE_DIR;

const Model& fixture() {
  static std::unique_ptr<Model> model = [] {
    auto m = Model::load(kRoot + "/tests/data/models/tiny-llama-fastkv");
    FKV_CHECK(m.has_value(), "%s", m.error().c_str());
    return std::move(m.value());
  }();
  return *model;
}

PolicyModelInfo info_of(const Model& m) { return m.policy_info(); }

PolicyOptions options_from(const std::string& method, const json& j) {
  PolicyOptions o;
  o.method = method;
  if (j.contains("tsp_layer")) o.tsp_layer = j["tsp_layer"].get<int>();
  if (j.contains("tsp_rate")) o.tsp_rate = j["tsp_rate"].get<double>();
  if (j.contains("tsp_len")) o.tsp_len = j["tsp_len"].get<int>();
  if (j.contains("retain_rate")) o.retain_rate = j["retain_rate"].get<double>();
  if (j.contains("kv_budget")) o.kv_budget = j["kv_budget"].get<int>();
  if (j.contains("window")) o.window = j["window"].get<int>();
  if (j.contains("kernel")) o.kernel = j["kernel"].get<int>();
  if (j.contains("pooling")) o.pooling = j["pooling"].get<std::string>();
  if (j.contains("mode")) o.mode = j["mode"].get<std::string>();
  if (j.contains("filter_layer")) o.filter_layer = j["filter_layer"].get<int>();
  if (j.contains("per_query_head")) o.per_query_head = j["per_query_head"].get<bool>();
  return o;
}

struct PolicyRun {
  std::unique_ptr<KvPolicy> policy;
  std::unique_ptr<Session> session;
  std::vector<float> logits;
};

PolicyRun prefill(const PolicyOptions& o, const std::vector<int32_t>& prompt) {
  PolicyRun r;
  auto p = make_policy(o, info_of(fixture()));
  FKV_CHECK(p.has_value(), "%s", p.error().c_str());
  r.policy = std::move(p.value());
  SessionOptions so;
  so.max_new_tokens = 32;
  r.session = std::make_unique<Session>(fixture(), *r.policy, so);
  Status st = r.session->prefill(prompt, r.logits);
  FKV_CHECK(st.is_ok(), "%s", st.message().c_str());
  return r;
}

// Compares a SelectionRecord with a golden "selection"; returns "" when equal, else the first
// difference.
std::string diff_selection(const SelectionRecord& got, const json& want) {
  if (got.n_prompt != want["n_prompt"].get<int>()) return "n_prompt";
  if (got.method != want["method"].get<std::string>()) return "method " + got.method;
  const json& layers = want["layers"];
  if (got.layers.size() != layers.size())
    return strfmt("%zu layers recorded, golden has %zu", got.layers.size(), layers.size());
  for (size_t i = 0; i < layers.size(); ++i) {
    const auto& g = got.layers[i];
    if (g.layer != layers[i]["layer"].get<int>()) return strfmt("layer index at %zu", i);
    if (g.n_in != layers[i]["n_in"].get<int>())
      return strfmt("layer %zu: n_in %d, golden %d", i, g.n_in, layers[i]["n_in"].get<int>());
    const auto want_kept = layers[i]["kept"].get<std::vector<std::vector<int32_t>>>();
    if (g.kept.size() != want_kept.size()) return strfmt("layer %zu: head count", i);
    for (size_t h = 0; h < want_kept.size(); ++h) {
      if (g.kept[h] != want_kept[h]) {
        std::string s = strfmt("layer %zu head %zu: kept %zu rows, golden %zu; first diff at", i, h,
                               g.kept[h].size(), want_kept[h].size());
        for (size_t t = 0; t < std::min(g.kept[h].size(), want_kept[h].size()); ++t)
          if (g.kept[h][t] != want_kept[h][t]) {
            s += strfmt(" #%zu (%d vs %d)", t, g.kept[h][t], want_kept[h][t]);
            break;
          }
        return s;
      }
    }
  }
  const json& tsp = want["tsp"];
  if (tsp.is_null() != !got.tsp.has_value()) return "tsp presence";
  if (!tsp.is_null()) {
    if (got.tsp->layer != tsp["layer"].get<int>()) return "tsp layer";
    if (got.tsp->positions != tsp["positions"].get<std::vector<int32_t>>()) return "tsp positions";
  }
  return "";
}

class KvGoldens : public ::testing::TestWithParam<std::string> {};

TEST_P(KvGoldens, SelectionMatchesReference) {
  const std::string method = GetParam();
  std::ifstream f(kRoot + "/tests/data/goldens/kv_" + method + ".json");
  ASSERT_TRUE(f) << "missing golden for " << method;
  const json golden = json::parse(f);
  int agree = 0, total = 0;
  double worst_logit = 0;
  for (const json& c : golden["cases"]) {
    ++total;
    const auto prompt = c["prompt"].get<std::vector<int32_t>>();
    PolicyRun r = prefill(options_from(method, c["options"]), prompt);
    const std::string d = diff_selection(r.session->selection(), c["selection"]);
    EXPECT_EQ(d, "") << c["name"].get<std::string>()
                     << " (if the fixture was regenerated, rerun tools/scripts/make_kv_goldens.py)";
    if (d.empty()) ++agree;
    const auto want = c["logits"].get<std::vector<double>>();
    ASSERT_EQ(r.logits.size(), want.size());
    double worst = 0;
    for (size_t i = 0; i < want.size(); ++i)
      worst = std::max(worst, std::abs(r.logits[i] - want[i]));
    EXPECT_LE(worst, kLogitTol) << c["name"].get<std::string>();
    worst_logit = std::max(worst_logit, worst);
  }
  std::printf(
      "[kv goldens] %s: %d/%d cases identical to the NumPy reference; max |logit diff| "
      "%.2e\n",
      method.c_str(), agree, total, worst_logit);
}

// Every registered method: a method without a reference golden fails here.
INSTANTIATE_TEST_SUITE_P(Methods, KvGoldens, ::testing::ValuesIn(policy_names()));

std::vector<int32_t> prompt_of(int n, int seed) {
  std::vector<int32_t> p(n);
  uint32_t s = 2463534242u + seed;
  for (int& t : p) {  // xorshift32: portable
    s ^= s << 13;
    s ^= s >> 17;
    s ^= s << 5;
    t = 3 + static_cast<int>(s % 509);
  }
  return p;
}

// Greedy decode of `steps` tokens; returns every step's logits and checks positions.
std::vector<std::vector<float>> decode_steps(PolicyRun& r, int steps, int32_t first_pos) {
  std::vector<std::vector<float>> out;
  std::vector<float> logits = r.logits;
  for (int t = 0; t < steps; ++t) {
    EXPECT_EQ(r.session->next_pos(), first_pos + t);
    const int32_t tok =
        static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    Status st = r.session->decode(tok, logits);
    EXPECT_TRUE(st.is_ok()) << st.message();
    out.push_back(logits);
  }
  EXPECT_EQ(r.session->next_pos(), first_pos + steps);
  return out;
}

TEST(KvInvariants, BudgetAtLeastPromptReproducesFullKv) {
  const auto prompt = prompt_of(90, 1);
  PolicyRun full = prefill(options_from("fullkv", json::object()), prompt);
  const auto full_dec = decode_steps(full, 4, 90);
  const std::vector<std::pair<std::string, json>> configs = {
      {"snapkv", {{"kv_budget", 90}}},
      {"snapkv", {{"retain_rate", 1.0}}},
      {"fastkv", {{"kv_budget", 90}, {"tsp_len", 90}}},
      {"fastkv", {{"retain_rate", 1.0}, {"tsp_rate", 1.0}}},
      {"pyramidkv", {{"kv_budget", 200}}},
      {"adakv", {{"kv_budget", 90}}},
      {"streamingllm", {{"kv_budget", 95}}},
      {"h2o", {{"kv_budget", 90}}},
      {"gemfilter", {{"kv_budget", 90}}},
  };
  for (const auto& [method, o] : configs) {
    PolicyRun r = prefill(options_from(method, o), prompt);
    EXPECT_EQ(r.logits, full.logits) << method << " " << o.dump();
    for (const auto& l : r.session->selection().layers)
      for (const auto& kept : l.kept) EXPECT_EQ(kept.size(), 90u) << method;
    EXPECT_EQ(decode_steps(r, 4, 90), full_dec) << method << " " << o.dump();
  }
}

TEST(KvInvariants, FastKvTspRateOneEqualsNoTsp) {
  const auto prompt = prompt_of(120, 2);
  json base = {{"retain_rate", 0.2}};
  json rate_one = base;
  rate_one["tsp_rate"] = 1.0;
  json no_tsp = base;  // TSP at the last layer propagates nothing
  no_tsp["tsp_layer"] = static_cast<int>(fixture().config().n_layers) - 1;
  PolicyRun a = prefill(options_from("fastkv", rate_one), prompt);
  PolicyRun b = prefill(options_from("fastkv", no_tsp), prompt);
  PolicyRun s = prefill(options_from("snapkv", base), prompt);
  EXPECT_FALSE(a.session->selection().tsp.has_value());
  EXPECT_FALSE(b.session->selection().tsp.has_value());
  EXPECT_EQ(a.logits, b.logits);
  EXPECT_EQ(a.logits, s.logits);
  const auto& la = a.session->selection().layers;
  const auto& lb = b.session->selection().layers;
  const auto& ls = s.session->selection().layers;
  ASSERT_EQ(la.size(), lb.size());
  for (size_t i = 0; i < la.size(); ++i) {
    EXPECT_EQ(la[i].n_in, 120);
    EXPECT_EQ(la[i].kept, lb[i].kept) << "layer " << i;
    EXPECT_EQ(la[i].kept, ls[i].kept) << "layer " << i;
    for (const auto& kept : la[i].kept) EXPECT_EQ(kept.size(), 24u);
  }
  EXPECT_EQ(decode_steps(a, 3, 120), decode_steps(b, 3, 120));
}

TEST(KvInvariants, DecodePositionsContinueAfterPrompt) {
  const auto prompt = prompt_of(150, 3);
  for (const char* method : {"fastkv", "snapkv", "adakv", "h2o", "pyramidkv", "streamingllm",
                             "pyramidinfer", "keydiff"}) {
    PolicyRun r = prefill(options_from(method, json::object()), prompt);
    decode_steps(r, 20, 150);  // pyramidinfer compacts its decode block at step 15
  }
  // PyramidInfer: the 16th decoded token (step 15) appends one row per layer and head and then
  // drops 2 of the 16-row decode block (keeps floor(16*0.9) = 14).
  {
    PolicyRun r = prefill(options_from("pyramidinfer", json::object()), prompt);
    decode_steps(r, 14, 150);
    const auto b14 = static_cast<long long>(r.session->kv_bytes());
    decode_steps(r, 1, 164);
    const auto b15 = static_cast<long long>(r.session->kv_bytes());
    decode_steps(r, 1, 165);
    const auto b16 = static_cast<long long>(r.session->kv_bytes());
    EXPECT_GT(b15, b14);
    EXPECT_EQ(b16 - b15, -(b15 - b14));
  }
  // FastKV: TSP happened, yet decoding continues at the true position N.
  PolicyRun f = prefill(options_from("fastkv", json::object()), prompt);
  ASSERT_TRUE(f.session->selection().tsp.has_value());
  EXPECT_EQ(f.session->selection().tsp->positions.size(), 30u);
  // GemFilter re-prefills k tokens at positions 0..k-1; decoding continues at k.
  PolicyRun g = prefill(options_from("gemfilter", {{"retain_rate", 0.2}}), prompt);
  decode_steps(g, 5, 30);
}

}  // namespace
}  // namespace fkv
