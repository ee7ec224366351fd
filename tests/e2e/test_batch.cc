// The multi-sequence step (engine/batch.h) against the one-sequence engine, bit for bit:
//  - decode_batch of B sessions (B = 1, 3, 9: across matmul's n = 1 and n = 8 switches) gives every
//    session the logits, cache positions and bytes that Session::decode gives it alone, for
//    fullkv, fastkv, snapkv, pyramidinfer (decode-time compaction) and more, on HF fixtures (llama,
//    qwen2 biases, qwen3 q/k norms), stories260K GGUF and SmolLM2-135M Q4_1 (when fetched);
//  - SteppedPrefill in small pieces equals one Session::prefill (logits, selection, cache, and 40
//    decode steps of the batched step after it, past PyramidInfer's decode-time compaction), and a
//    cancelled one unwinds cleanly;
//  - worst_case_kv_bytes bounds the bytes every method really holds after prefill + decode.
#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "engine/app.h"
#include "engine/batch.h"
#include "engine/engine.h"
#include "kv/method_spec.h"
#include "model/model.h"
#include "model/synthetic.h"
#include "quant/repack.h"

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

std::vector<int32_t> tokens(int n, int seed, int vocab) {
  std::vector<int32_t> t(n);
  uint32_t s = static_cast<uint32_t>(seed) * 2654435761u + 7;
  for (int i = 0; i < n; ++i) {
    s = s * 1664525u + 1013904223u;
    t[i] = static_cast<int32_t>((s >> 8) % static_cast<uint32_t>(vocab));
  }
  return t;
}

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;  // fewer cases: the release pass of tools/test.sh runs them all
#else
constexpr bool kSanitized = false;
#endif

std::vector<std::string> model_paths() {
  std::vector<std::string> out;
  const fs::path models = fs::path(FKV_SOURCE_DIR) / "tests/data/models";
  for (const char* m : {"tiny-llama-fastkv", "tiny-qwen2", "tiny-qwen3"}) {
    if (kSanitized && std::string(m) != "tiny-qwen3") continue;  // biases + q/k norms
    out.push_back((models / m).string());
  }
  const fs::path stories = fs::path(FKV_SHARED_DIR) / "models/stories260K/stories260K.gguf";
  if (fs::exists(stories)) out.push_back(stories.string());
  const fs::path smollm = fs::path(model_cache_dir()) / "SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!kSanitized && fs::exists(smollm)) out.push_back(smollm.string());
  return out;
}

const char* const kSpecs[] = {"fullkv",
                              "fastkv:retain_rate=0.25,tsp_rate=0.3",
                              "snapkv:retain_rate=0.2",
                              "pyramidinfer:retain_rate=0.5",
                              "h2o:retain_rate=0.3",
                              "gemfilter:kv_budget=32",
                              "keydiff:retain_rate=0.2"};

struct Seq {
  std::unique_ptr<KvPolicy> policy;
  std::unique_ptr<Session> session;
  std::vector<float> logits;
};

// B sequences with prompts of different lengths (so their positions differ), all prefilled.
std::vector<Seq> make_seqs(const Model& m, const std::string& spec, int B, int steps, int seed,
                           int base_len = 40, int len_step = 13) {
  std::vector<Seq> seqs(B);
  for (int b = 0; b < B; ++b) {
    seqs[b].policy = policy_for(m, spec);
    SessionOptions so;
    so.max_new_tokens = steps + 1;
    seqs[b].session = std::make_unique<Session>(m, *seqs[b].policy, so);
    const auto prompt = tokens(base_len + len_step * b, seed + b, m.config().n_vocab);
    EXPECT_TRUE(seqs[b].session->prefill(prompt, seqs[b].logits));
  }
  return seqs;
}

TEST(Batch, DecodeBatchEqualsDecodeAloneBitForBit) {
  for (const std::string& path : model_paths()) {
    auto model = Model::load(path);
    ASSERT_TRUE(model) << model.error();
    const Model& m = **model;
    const bool big = m.config().n_layers > 8;  // SmolLM2: fewer cases, same switches
    for (const char* spec : kSpecs) {
      // SmolLM2 (the Q4_1 8-bit-activation path): fullkv, fastkv, snapkv, pyramidinfer; the tiny
      // models run every spec.
      const std::string sp(spec);
      if (big &&
          (sp.rfind("h2o", 0) == 0 || sp.rfind("gemfilter", 0) == 0 || sp.rfind("keydiff", 0) == 0))
        continue;
      for (int B : {1, 3, 9}) {
        if (kSanitized && B == 3) continue;
        if (big && B != 9) continue;
        SCOPED_TRACE(path + " " + spec + " B=" + std::to_string(B));
        const int steps = big ? 2 : 6;
        const int base = big ? 20 : 40, len_step = big ? 2 : 13;
        auto alone = make_seqs(m, spec, B, steps, 5, base, len_step);
        auto batched = make_seqs(m, spec, B, steps, 5, base, len_step);
        for (int step = 0; step < steps; ++step) {
          std::vector<BatchItem> items;
          for (int b = 0; b < B; ++b) {
            // Tokens differ per sequence and step (greedy would repeat for random prompts).
            const int32_t tok = tokens(1, 100 * step + b, m.config().n_vocab)[0];
            ASSERT_TRUE(alone[b].session->decode(tok, alone[b].logits));
            items.push_back({batched[b].session.get(), tok, &batched[b].logits});
          }
          ASSERT_TRUE(decode_batch(items));
          for (int b = 0; b < B; ++b) {
            ASSERT_EQ(alone[b].logits, batched[b].logits) << "sequence " << b << " step " << step;
            ASSERT_EQ(alone[b].session->next_pos(), batched[b].session->next_pos());
            ASSERT_EQ(alone[b].session->cache_positions(), batched[b].session->cache_positions());
            ASSERT_EQ(alone[b].session->kv_bytes(), batched[b].session->kv_bytes());
            ASSERT_EQ(alone[b].session->timing().n_decoded, batched[b].session->timing().n_decoded);
          }
        }
      }
    }
  }
}

// Synthetic q4_0 / q8_0 weights: where the VNNI kernels run the loader repacks every layer matrix
// and the (tied) LM head into the x16 layout, the embedding keeps its rows; decode_batch still
// gives every sequence the bits of its own decode.
TEST(Batch, RepackedWeightsDecodeBatchEqualsDecodeAlone) {
  auto cfg = synthetic_config("llama-3.2-1b");
  ASSERT_TRUE(cfg) << cfg.error();
  ModelConfig c = *cfg;
  c.n_layers = 2;
  c.d_model = 64;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 16;
  c.rot_dim = 16;
  c.d_ff = 96;
  c.n_vocab = 272;
  c.n_ctx = 512;
  c.eos_token_ids = {1};
  c.bos_token_id = 0;
  for (DType t : {DType::kQ4_0, DType::kQ8_0}) {
    auto model = Model::synthetic(c, t, 3);
    ASSERT_TRUE(model) << model.error();
    const Model& m = **model;
    const WeightLayout want = x16_repack_enabled(t) ? WeightLayout::kX16 : WeightLayout::kRows;
    const LayerWeights& L = m.layer(1);
    for (const WeightMatrix* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) {
      EXPECT_EQ(w->layout, want) << w->name;
    }
    EXPECT_EQ(m.lm_head().layout, want);
    EXPECT_EQ(m.tok_embd().layout, WeightLayout::kRows);
    for (const char* spec : {"fullkv", "fastkv:retain_rate=0.25,tsp_rate=0.3"}) {
      SCOPED_TRACE(std::string(dtype_name(t)) + " " + spec);
      const int B = 9, steps = 3;
      auto alone = make_seqs(m, spec, B, steps, 8);
      auto batched = make_seqs(m, spec, B, steps, 8);
      for (int step = 0; step < steps; ++step) {
        std::vector<BatchItem> items;
        for (int b = 0; b < B; ++b) {
          const int32_t tok = tokens(1, 31 * step + b, c.n_vocab)[0];
          ASSERT_TRUE(alone[b].session->decode(tok, alone[b].logits));
          items.push_back({batched[b].session.get(), tok, &batched[b].logits});
        }
        ASSERT_TRUE(decode_batch(items));
        for (int b = 0; b < B; ++b) {
          ASSERT_EQ(alone[b].logits, batched[b].logits) << "sequence " << b << " step " << step;
        }
      }
    }
  }
}

TEST(Batch, MixedMethodsInOneStep) {
  auto model =
      Model::load((fs::path(FKV_SOURCE_DIR) / "tests/data/models/tiny-llama-fastkv").string());
  ASSERT_TRUE(model) << model.error();
  const Model& m = **model;
  std::vector<Seq> alone, batched;
  for (const char* spec : kSpecs) {
    auto a = make_seqs(m, spec, 1, 4, 9);
    auto b = make_seqs(m, spec, 1, 4, 9);
    alone.push_back(std::move(a[0]));
    batched.push_back(std::move(b[0]));
  }
  for (int step = 0; step < 4; ++step) {
    std::vector<BatchItem> items;
    for (size_t i = 0; i < alone.size(); ++i) {
      const int32_t tok = tokens(1, 7 * step + static_cast<int>(i), m.config().n_vocab)[0];
      ASSERT_TRUE(alone[i].session->decode(tok, alone[i].logits));
      items.push_back({batched[i].session.get(), tok, &batched[i].logits});
    }
    ASSERT_TRUE(decode_batch(items));
    for (size_t i = 0; i < alone.size(); ++i)
      ASSERT_EQ(alone[i].logits, batched[i].logits) << kSpecs[i];
  }
}

TEST(Batch, DecodeBatchRejectsBadItemsAndChangesNothing) {
  auto model = Model::load((fs::path(FKV_SOURCE_DIR) / "tests/data/models/tiny-llama").string());
  ASSERT_TRUE(model) << model.error();
  const Model& m = **model;
  auto seqs = make_seqs(m, "fullkv", 2, 2, 3);
  const int32_t pos0 = seqs[0].session->next_pos();
  std::vector<BatchItem> bad = {{seqs[0].session.get(), 1, &seqs[0].logits},
                                {seqs[1].session.get(), m.config().n_vocab, &seqs[1].logits}};
  auto st = decode_batch(bad);
  ASSERT_FALSE(st);
  EXPECT_NE(st.message().find("item 1"), std::string::npos) << st.message();
  EXPECT_EQ(seqs[0].session->next_pos(), pos0);
  std::vector<BatchItem> twice = {{seqs[0].session.get(), 1, &seqs[0].logits},
                                  {seqs[0].session.get(), 2, &seqs[0].logits}};
  EXPECT_FALSE(decode_batch(twice));
  auto policy = policy_for(m, "fullkv");
  Session fresh(m, *policy);
  std::vector<float> lg;
  std::vector<BatchItem> unprefilled = {{&fresh, 1, &lg}};
  EXPECT_FALSE(decode_batch(unprefilled));
}

TEST(Batch, SteppedPrefillEqualsOnePrefill) {
  for (const std::string& path : model_paths()) {
    auto model = Model::load(path);
    ASSERT_TRUE(model) << model.error();
    const Model& m = **model;
    const auto prompt = tokens(150, 11, m.config().n_vocab);
    for (const char* spec :
         {"fullkv", "fastkv:retain_rate=0.25,tsp_rate=0.3", "snapkv:retain_rate=0.2",
          "gemfilter:kv_budget=32", "pyramidinfer:retain_rate=0.5"}) {
      if (m.config().n_layers > 8 && std::string(spec) != "fastkv:retain_rate=0.25,tsp_rate=0.3") {
        continue;  // SmolLM2: one method (TSP) is enough on top of the tiny models
      }
      SCOPED_TRACE(path + " " + spec);
      SessionOptions so;
      so.max_new_tokens = 40;
      auto pa = policy_for(m, spec);
      Session a(m, *pa, so);
      std::vector<float> la;
      ASSERT_TRUE(a.prefill(prompt, la));
      SteppedPrefill sp(/*rows_per_piece=*/100);
      auto pb = policy_for(m, spec);
      Session b(m, *pb, so);
      sp.start(b, prompt);
      int guard = 0;
      while (!sp.run_piece()) ASSERT_LT(++guard, 10000);
      ASSERT_TRUE(sp.status()) << sp.status().message();
      // 150 rows per layer > 100: one layer per piece until TSP / PyramidInfer shrink the rows.
      EXPECT_GE(sp.pieces(), std::string(spec) == "fullkv" ? m.config().n_layers : 2);
      EXPECT_EQ(la, sp.logits());
      EXPECT_EQ(a.selection().to_json(), b.selection().to_json());
      EXPECT_EQ(a.cache_positions(), b.cache_positions());
      // Decoding continues identically in the server's batched step, past the decode-time hooks
      // (PyramidInfer compacts its cache every few steps and reads the cached K/V then).
      std::vector<float> da, db;
      for (int step = 0; step < 40; ++step) {
        const int32_t token = 5 + step % 7;
        ASSERT_TRUE(a.decode(token, da));
        std::vector<BatchItem> item = {{&b, token, &db}};
        ASSERT_TRUE(decode_batch(item));
        ASSERT_EQ(da, db) << "step " << step;
      }
      EXPECT_EQ(a.cache_positions(), b.cache_positions());
    }
  }
}

TEST(Batch, SteppedPrefillCancelsMidway) {
  auto model = Model::load((fs::path(FKV_SOURCE_DIR) / "tests/data/models/tiny-llama").string());
  ASSERT_TRUE(model) << model.error();
  const Model& m = **model;
  const auto prompt = tokens(64, 2, m.config().n_vocab);
  for (int pieces : {0, 1, 2}) {
    auto policy = policy_for(m, "snapkv:retain_rate=0.2");
    Session s(m, *policy);
    auto sp = std::make_unique<SteppedPrefill>(1);
    sp->start(s, prompt);
    for (int i = 0; i < pieces; ++i) EXPECT_FALSE(sp->run_piece());
    sp.reset();  // joins the paused worker, which unwinds out of Session::prefill
  }
  // A prompt over the context is an error status, not a hang.
  auto policy = policy_for(m, "fullkv");
  Session s(m, *policy);
  SteppedPrefill sp(8);
  sp.start(s, tokens(m.config().n_ctx + 1, 3, m.config().n_vocab));
  EXPECT_TRUE(sp.run_piece());
  EXPECT_FALSE(sp.status());
}

TEST(Batch, WorstCaseKvBytesBoundsEveryMethod) {
  for (const std::string& path : model_paths()) {
    auto model = Model::load(path);
    ASSERT_TRUE(model) << model.error();
    const Model& m = **model;
    if (m.config().n_layers > 8) continue;  // the tiny models cover the formulas
    for (int n : {12, 60, 200}) {
      if (kSanitized && n == 60) continue;
      for (const char* spec :
           {"fullkv", "fastkv", "fastkv:retain_rate=0.3,tsp_rate=0.5", "fastkv:mode=constant",
            "fastkv:kv_budget=20,tsp_len=40", "snapkv", "snapkv:kv_budget=30", "pyramidkv",
            "pyramidkv:retain_rate=0.3", "adakv:retain_rate=0.2", "streamingllm:kv_budget=24",
            "h2o:retain_rate=0.3", "gemfilter", "gemfilter:kv_budget=32",
            "pyramidinfer:retain_rate=0.5", "snapkv:kv_budget=20,per_query_head=true", "keydiff",
            "keydiff:kv_budget=30"}) {
        SCOPED_TRACE(path + " " + spec + " n=" + std::to_string(n));
        const int steps = 5;
        auto po = parse_method_spec(spec);
        ASSERT_TRUE(po);
        auto policy = policy_for(m, spec);
        SessionOptions so;
        so.max_new_tokens = steps;
        Session s(m, *policy, so);
        std::vector<float> lg;
        ASSERT_TRUE(s.prefill(tokens(n, n, m.config().n_vocab), lg));
        size_t peak = s.kv_bytes();
        for (int i = 0; i < steps; ++i) {
          ASSERT_TRUE(s.decode(3 + i, lg));
          peak = std::max(peak, s.kv_bytes());
        }
        const size_t bound = worst_case_kv_bytes(*po, m.config(), n, steps);
        EXPECT_GE(bound, peak);
        // And it is a bound, not the fullkv size, for a compressing method at a long prompt.
        if (n == 200 && std::string(spec) != "fullkv" &&
            std::string(spec).rfind("pyramidinfer", 0) != 0 &&
            std::string(spec) != "fastkv:mode=constant") {
          EXPECT_LT(bound, worst_case_kv_bytes(PolicyOptions{}, m.config(), n, steps));
        }
      }
    }
  }
}

}  // namespace
}  // namespace fkv
