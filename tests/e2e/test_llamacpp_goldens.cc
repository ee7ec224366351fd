// fastkv against llama.cpp on the real GGUF models (tools/scripts/make_llamacpp_goldens.py):
// tokenizer ids, the top-1 token at every prompt position, last-position logits and 128-token
// greedy continuations of SmolLM2-135M-Instruct (Q4_1) and stories260K (f32); for
// Qwen2.5-Coder-1.5B-Instruct (Q4_K_M, when fetched) the top-1 / top-5 at every position and
// 32-token greedy continuations.
//
// Near-tie rule. If every logit of ours is within `tol` of llama.cpp's, then where our argmax a
// differs from llama.cpp's b, (llama[b] - llama[a]) + (ours[a] - ours[b]) <= 2 * tol. The golden
// holds llama.cpp's top-2 gap `margin` <= llama[b] - llama[a], so a top-1 disagreement (or the
// first diverging greedy token) passes only when margin + (ours[a] - ours[b]) <= 2 * tol; a larger
// gap is a bug. After a greedy near tie the two continuations are different texts, so the
// comparison stops there. Because that bound alone is loose for a Q4_1 model (tol is ~1 logit),
// the share of agreeing positions must also stay above a floor measured on the goldens.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/app.h"
#include "engine/engine.h"
#include "kv/policy.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace fkv {
namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;

const fs::path kSource = FKV_SOURCE_DIR;
const fs::path kShared = FKV_SHARED_DIR;

// Per model: max |our logit - llama.cpp's| at the last position, and the least share of prompt
// positions whose top-1 must agree. Measured on the committed goldens (figures and reasons:
// docs/MODELS.md, "Verified against llama.cpp").
struct Tolerance {
  double logit;
  double min_top1_agreement;
};
// SmolLM2 Q4_1: llama.cpp rounds activations to q8_1 (q8_0 for the Q8_0 LM head) before every
// dot product. The model amplifies any rounding change: fastkv with f32 activations, with
// ggml-style q8 activations, or with either q8 rounding rule lands 0.48-0.80 away from llama.cpp
// (logits up to ~30) and agrees on 95.8-98% of top-1 tokens. Bounds: ~2x and ~1.5 points below.
constexpr Tolerance kSmolTol = {1.5, 0.94};
// Qwen2.5-Coder-1.5B Q4_K_M: both sides quantise activations to q8_K the same way (the integer
// products are equal), only float order differs, and the model amplifies it: llama.cpp against
// its own goldens with its one-token kernels (n_batch = 1) agrees on 97.22 % of top-1 tokens and
// keeps 6 of 7 greedy continuations; fastkv's x16 path 96.53 %, every disagreement a near tie
// (llama.cpp margin + our gap at most 0.571 seen, against a bound of 2 x 0.5)
// (docs/MODELS.md). Floor and tie bound below.
constexpr Tolerance kQwenTol = {0.5, 0.96};
// stories260K is f32 on both sides; only summation order differs (5.5e-5 seen).
constexpr Tolerance kStoriesTol = {2e-4, 1.0};

json load_golden(const std::string& name) {
  std::ifstream in(kSource / "tests/data/goldens" / name);
  EXPECT_TRUE(in.good()) << "missing golden " << name;
  if (!in.good()) return json();
  return json::parse(in);
}

std::unique_ptr<KvPolicy> full_policy(const Model& m) {
  PolicyOptions po;
  po.method = "fullkv";
  auto p = make_policy(po, m.policy_info());
  EXPECT_TRUE(p.has_value()) << p.error();
  return std::move(p.value());
}

// First index of the maximum (numpy.argmax's tie rule) and the gap to the runner-up.
std::pair<int32_t, float> top2(const float* row, int n) {
  int32_t best = 0;
  for (int i = 1; i < n; ++i)
    if (row[i] > row[best]) best = i;
  float second = -INFINITY;
  for (int i = 0; i < n; ++i)
    if (i != best) second = std::max(second, row[i]);
  return {best, row[best] - second};
}

std::string show(const std::vector<int32_t>& ids) {
  std::string s = "[";
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i > 0) s += ',';
    s += std::to_string(ids[i]);
  }
  s += ']';
  return s;
}

// Token ids from our tokenizer equal llama.cpp's. fastkv, like HF tokenizers, always splits
// special-token strings out of the text; `add_special_tokens` only adds the vocabulary's
// default prefix (BOS where the GGUF asks for it). That is llama.cpp's special=true with
// add_bos = add_special_tokens. llama.cpp's special=false (specials read as plain text) has no
// fastkv counterpart; those ids are in the golden for reference only.
// `llamacpp_differs`: corpus texts where llama.cpp departs from the model's own tokenizer.json
// (what Hugging Face tokenizers, and fastkv, do), with the reason; they are skipped, saying so.
void check_tokenizer(const Tokenizer& tok, const json& g,
                     const std::map<std::string, std::string>& llamacpp_differs = {}) {
  int n = 0;
  for (const json& c : g["tokenizer"]) {
    const std::string text = c["text"].get<std::string>();
    if (auto it = llamacpp_differs.find(text); it != llamacpp_differs.end()) {
      std::printf("[llama.cpp] tokenizer: \"%s\" not compared: %s\n", text.c_str(),
                  it->second.c_str());
      continue;
    }
    SCOPED_TRACE("text: \"" + text + "\"");
    const auto want = c["ids_special"].get<std::vector<int32_t>>();
    const auto want_bos = c["ids_special_bos"].get<std::vector<int32_t>>();
    const auto got = tok.encode(text, /*add_special_tokens=*/false);
    const auto got_bos = tok.encode(text, /*add_special_tokens=*/true);
    EXPECT_EQ(got, want) << "ours " << show(got) << " llama.cpp " << show(want);
    EXPECT_EQ(got_bos, want_bos) << "ours " << show(got_bos) << " llama.cpp " << show(want_bos);
    ++n;
  }
  // Prompt texts (essays, chat prompt, stories), encoded the way the prompts were made.
  for (const json& p : g["prompts"]) {
    const auto want = p["ids"].get<std::vector<int32_t>>();
    const auto got = tok.encode(p["text"].get<std::string>(), true);
    EXPECT_EQ(got, want) << "prompt " << p["name"].get<std::string>();
    ++n;
  }
  std::printf("[llama.cpp] tokenizer: %d texts compared\n", n);
}

// Whether a disagreement between our argmax `ours_best` and llama.cpp's `ref_best` (whose top-2
// gap is `ref_margin`) is a near tie under the rule at the top of the file.
bool near_tie(const float* row, int32_t ours_best, int32_t ref_best, float ref_margin, double tol) {
  return ref_margin + (row[ours_best] - row[ref_best]) <= 2 * tol;
}

void check_prompt(const Model& model, const json& p, const Tolerance& t) {
  const double tol = t.logit;
  const std::string name = p["name"].get<std::string>();
  SCOPED_TRACE("prompt " + name);
  const auto ids = p["ids"].get<std::vector<int32_t>>();
  const auto top1 = p["top1"].get<std::vector<int32_t>>();
  const auto margin = p["margin"].get<std::vector<float>>();
  const auto greedy = p["greedy"].get<std::vector<int32_t>>();
  const auto gmargin = p["greedy_margin"].get<std::vector<float>>();
  const int n_vocab = model.config().n_vocab;
  ASSERT_EQ(top1.size(), ids.size());

  auto policy = full_policy(model);
  SessionOptions so;
  so.max_new_tokens = static_cast<int>(greedy.size());
  // The goldens were made with llama.cpp's KV cache in f32 (make_llamacpp_goldens.py), so ours is
  // f32 too: with the default f16 cache stories260K's story_500 hits a greedy near tie 0.0054
  // wide at step 29, outside its f32 tolerance.
  so.kv_dtype = DType::kF32;
  Session s(model, *policy, so);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<float> logits;  // [n_tokens, n_vocab]
  ASSERT_TRUE(s.prefill_all_logits(ids, logits).is_ok());
  ASSERT_EQ(logits.size(), ids.size() * static_cast<size_t>(n_vocab));
  const double t_prefill =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  // Top-1 at every position.
  int agree = 0;
  for (size_t r = 0; r < ids.size(); ++r) {
    const float* row = logits.data() + r * n_vocab;
    const int32_t best = top2(row, n_vocab).first;
    if (best == top1[r]) {
      ++agree;
      continue;
    }
    const float our_gap = row[best] - row[top1[r]];
    if (std::getenv("FKV_LLAMACPP_VERBOSE") != nullptr) {
      std::printf(
          "[llama.cpp] %s: position %zu top-1 ours %d llama.cpp %d, llama.cpp margin "
          "%.4g, our gap %.4g\n",
          name.c_str(), r, best, top1[r], margin[r], our_gap);
    }
    EXPECT_TRUE(near_tie(row, best, top1[r], margin[r], tol))
        << "position " << r << ": top-1 differs (ours " << best << ", llama.cpp " << top1[r]
        << ") beyond a near tie: llama.cpp margin " << margin[r] << " + our gap " << our_gap
        << " > " << 2 * tol;
  }
  EXPECT_GE(static_cast<double>(agree) / ids.size(), t.min_top1_agreement)
      << "top-1 agreement " << agree << "/" << ids.size();

  // Last-position logits.
  double max_diff = -1;
  if (p.contains("last_logits")) {
    const auto ref = p["last_logits"].get<std::vector<float>>();
    ASSERT_EQ(ref.size(), static_cast<size_t>(n_vocab));
    const float* last = logits.data() + (ids.size() - 1) * n_vocab;
    max_diff = 0;
    for (int i = 0; i < n_vocab; ++i)
      max_diff = std::max(max_diff, static_cast<double>(std::abs(last[i] - ref[i])));
    EXPECT_LE(max_diff, tol) << "last-position logits";
  }

  // Greedy continuation: argmax of our logits, fed back through our KV cache.
  std::vector<float> next(logits.end() - n_vocab, logits.end());
  logits.clear();
  logits.shrink_to_fit();
  size_t same = 0;
  bool tie_break = false;
  for (size_t step = 0; step < greedy.size(); ++step) {
    const int32_t tok = top2(next.data(), n_vocab).first;
    if (tok != greedy[step]) {
      const float our_gap = next[tok] - next[greedy[step]];
      std::printf(
          "[llama.cpp] %s: greedy step %zu ours %d llama.cpp %d, llama.cpp margin %.4g, "
          "our gap %.4g\n",
          name.c_str(), step, tok, greedy[step], gmargin[step], our_gap);
      EXPECT_TRUE(near_tie(next.data(), tok, greedy[step], gmargin[step], tol))
          << "greedy token " << step << " differs (ours " << tok << ", llama.cpp " << greedy[step]
          << ") beyond a near tie: llama.cpp margin " << gmargin[step] << " + our gap " << our_gap;
      tie_break = true;
      break;
    }
    ++same;
    if (step + 1 < greedy.size()) {
      ASSERT_TRUE(s.decode(tok, next).is_ok());
    }
  }
  const double t_all = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf(
      "[llama.cpp] %s: %zu tokens, top-1 agreement %d/%zu (%.2f%%), last-logit max |diff| "
      "%s, greedy %s; prefill %.1fs, total %.1fs\n",
      name.c_str(), ids.size(), agree, ids.size(), 100.0 * agree / ids.size(),
      max_diff < 0 ? "n/a" : std::to_string(max_diff).c_str(),
      (std::to_string(same) + "/" + std::to_string(greedy.size()) + " identical" +
       (tie_break ? " (then a near tie)" : ""))
          .c_str(),
      t_prefill, t_all);
}

void check_model(const Model& model, const json& g, const Tolerance& tol) {
  ASSERT_EQ(model.config().n_vocab, g["n_vocab"].get<int>());
  auto tok = load_tokenizer_for(model);
  ASSERT_TRUE(tok.has_value()) << tok.error();
  check_tokenizer(*tok, g);
  // FKV_LLAMACPP_PROMPTS=essay_200,chat_600 runs only those prompts (for diagnosis).
  const char* only = std::getenv("FKV_LLAMACPP_PROMPTS");
  for (const json& p : g["prompts"]) {
    const std::string name = p["name"].get<std::string>();
    if (only != nullptr &&
        ("," + std::string(only) + ",").find("," + name + ",") == std::string::npos)
      continue;
    check_prompt(model, p, tol);
  }
}

TEST(LlamaCppGoldens, SmolLM2Q4_1) {
  const json g = load_golden("llamacpp_smollm2-135m-instruct.json");
  ASSERT_FALSE(g.is_null());
  auto path = resolve_model_path("smollm2-135m-instruct");
  ASSERT_TRUE(path.has_value() && fs::exists(*path))
      << (path.has_value() ? "SmolLM2-135M-Instruct is missing at " + *path +
                                 "; fetch it with: python3 tools/scripts/fetch_models.py "
                                 "smollm2-135m-instruct"
                           : path.error());
  ASSERT_EQ(fs::path(*path).filename().string(), g["model_file"].get<std::string>());
  auto model = Model::load(*path);
  ASSERT_TRUE(model.has_value()) << model.error();
  check_model(**model, g, kSmolTol);
}

TEST(LlamaCppGoldens, Stories260K) {
  const json g = load_golden("llamacpp_stories260K.json");
  ASSERT_FALSE(g.is_null());
  auto model = Model::load((kShared / "models/stories260K/stories260K.gguf").string());
  ASSERT_TRUE(model.has_value()) << model.error();
  check_model(**model, g, kStoriesTol);
}

// Qwen2.5-Coder-1.5B-Instruct Q4_K_M (tools/scripts/fetch_models.py; skipped in CI and when not
// fetched). Over the 8 golden prompts (chat and raw, code and prose, one of ~3K tokens): every
// teacher-forced top-1 disagreement and every greedy divergence (within 32 tokens) is a near tie,
// and top-1 agreement stays above kQwenTol's floor; the top-5 overlap and the count of identical
// greedy continuations are reported. Our KV cache is f32 as llama.cpp's was for the goldens.
TEST(LlamaCppGoldens, Qwen25Coder1_5BQ4_K_M) {
  if (std::getenv("CI") != nullptr) GTEST_SKIP() << "CI runs the small models only";
  auto path = resolve_model_path("qwen2.5-coder-1.5b-instruct");
  if (!path.has_value() || !fs::exists(*path)) {
    GTEST_SKIP() << "Qwen2.5-Coder-1.5B-Instruct is not fetched (python3 "
                    "tools/scripts/fetch_models.py qwen2.5-coder-1.5b-instruct)";
  }
  const json g = load_golden("llamacpp_qwen2.5-coder-1.5b-instruct.json");
  ASSERT_FALSE(g.is_null());
  ASSERT_EQ(fs::path(*path).filename().string(), g["model_file"].get<std::string>());
  auto model = Model::load(*path);
  ASSERT_TRUE(model.has_value()) << model.error();
  const Model& m = **model;
  const int n_vocab = m.config().n_vocab;
  ASSERT_EQ(n_vocab, g["n_vocab"].get<int>());
  auto tok = load_tokenizer_for(m);
  ASSERT_TRUE(tok.has_value()) << tok.error();
  check_tokenizer(
      *tok, g,
      {{"<s> looks like BOS </s> and <unk> too",
        "llama.cpp's vocabulary loader turns \"</s>\" into a control token by name (its end-of-"
        "generation heuristic); in Qwen's tokenizer.json it is plain text"},
       {"e\xcc\x81 (decomposed) vs \xc3\xa9 (composed)",
        "Qwen's tokenizer.json normalises NFC (as Hugging Face tokenizers do); llama.cpp does not "
        "normalise"}});
  size_t positions = 0, agree = 0, top5_hits = 0, top5_total = 0;
  // The widest near tie behind a disagreement: llama.cpp's top-2 margin + our gap (the rule at the
  // top of the file).
  double widest_tie = 0;
  int greedy_equal = 0, prompts = 0;
  for (const json& p : g["prompts"]) {
    const std::string name = p["name"].get<std::string>();
    const auto ids = p["ids"].get<std::vector<int32_t>>();
    const auto top1 = p["top1"].get<std::vector<int32_t>>();
    const auto top5 = p["top5"].get<std::vector<std::vector<int32_t>>>();
    const auto greedy = p["greedy"].get<std::vector<int32_t>>();
    auto policy = full_policy(m);
    SessionOptions so;
    so.max_new_tokens = static_cast<int>(greedy.size());
    so.kv_dtype = DType::kF32;
    Session s(m, *policy, so);
    std::vector<float> logits;  // [n_tokens, n_vocab]
    ASSERT_TRUE(s.prefill_all_logits(ids, logits).is_ok()) << name;
    const auto margin = p["margin"].get<std::vector<float>>();
    int prompt_agree = 0;
    for (size_t r = 0; r < ids.size(); ++r) {
      const float* row = logits.data() + r * n_vocab;
      const int32_t best = top2(row, n_vocab).first;
      prompt_agree += best == top1[r];
      if (best != top1[r]) {
        widest_tie =
            std::max(widest_tie, static_cast<double>(margin[r] + row[best] - row[top1[r]]));
      }
      // Our top 5 against llama.cpp's (as sets).
      std::vector<int32_t> order(static_cast<size_t>(n_vocab));
      for (int i = 0; i < n_vocab; ++i) order[i] = i;
      std::partial_sort(order.begin(), order.begin() + 5, order.end(),
                        [&](int32_t a, int32_t b) { return row[a] > row[b]; });
      for (int k = 0; k < 5; ++k) {
        top5_hits += std::count(top5[r].begin(), top5[r].end(), order[k]);
      }
      top5_total += 5;
    }
    agree += prompt_agree;
    positions += ids.size();
    std::vector<float> next(logits.end() - n_vocab, logits.end());
    logits = {};
    const auto gmargin = p["greedy_margin"].get<std::vector<float>>();
    size_t same = 0;
    for (size_t step = 0; step < greedy.size(); ++step) {
      const int32_t t = top2(next.data(), n_vocab).first;
      if (t != greedy[step]) {
        std::printf(
            "[llama.cpp] %s: greedy step %zu ours %d llama.cpp %d, llama.cpp margin %.4g, "
            "our gap %.4g\n",
            name.c_str(), step, t, greedy[step], gmargin[step], next[t] - next[greedy[step]]);
        widest_tie =
            std::max(widest_tie, static_cast<double>(gmargin[step] + next[t] - next[greedy[step]]));
        break;
      }
      ++same;
      if (step + 1 < greedy.size()) ASSERT_TRUE(s.decode(t, next).is_ok());
    }
    greedy_equal += same == greedy.size();
    ++prompts;
    std::printf("[llama.cpp] %s: %zu tokens, top-1 %d/%zu, greedy %zu/%zu identical\n",
                name.c_str(), ids.size(), prompt_agree, ids.size(), same, greedy.size());
  }
  ASSERT_EQ(prompts, 8);
  const double top1_share = static_cast<double>(agree) / static_cast<double>(positions);
  std::printf(
      "[llama.cpp] qwen2.5-coder-1.5b: top-1 %.2f%%, top-5 overlap %.2f%%, greedy identical for "
      "%d/%d prompts, widest near tie %.3f\n",
      100.0 * top1_share, 100.0 * top5_hits / top5_total, greedy_equal, prompts, widest_tie);
  EXPECT_GE(top1_share, kQwenTol.min_top1_agreement);
  EXPECT_LE(widest_tie, 2 * kQwenTol.logit) << "a disagreement beyond a near tie";
}

}  // namespace
}  // namespace fkv
