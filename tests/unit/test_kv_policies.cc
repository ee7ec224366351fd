// Property tests of the KV policies on synthetic LayerViews (random post-RoPE Q/K): kept rows are
// the highest-scoring ones, protected rows are always kept, ties go to the lower position, budgets
// follow the spec formulas, and option validation gives clear errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "kv/budget.h"
#include "kv/policy.h"
#include "kv/scoring.h"
#include "kv/topk.h"

namespace fkv {
namespace {

// Owns the Q/K buffers behind a LayerView.
struct SynthLayer {
  PolicyModelInfo info;
  std::vector<float> q, k;  // q: [n, H*d], k: [n, Hkv*d]
  std::vector<int32_t> pos;
  LayerView lv;

  SynthLayer(int n, uint32_t seed, int n_layers = 4, int H = 8, int Hkv = 2, int d = 16,
             float q_gain = 1.0f, int il = 0, int n_prompt = -1) {
    info.n_layers = n_layers;
    info.n_heads = H;
    info.n_kv_heads = Hkv;
    info.head_dim = d;
    info.model_name = "synthetic";
    std::mt19937 rng(seed);  // engine only; the values need not be portable, only deterministic
    auto uni = [&] {
      return static_cast<float>(static_cast<double>(rng()) / 4294967296.0 * 2 - 1);
    };
    q.resize(static_cast<size_t>(n) * H * d);
    k.resize(static_cast<size_t>(n) * Hkv * d);
    for (float& x : q) x = uni() * q_gain;
    for (float& x : k) x = uni();
    pos.resize(n);
    std::iota(pos.begin(), pos.end(), 0);
    lv.il = il;
    lv.model = &info;
    lv.n_prompt = n_prompt < 0 ? n : n_prompt;
    lv.n_rows = n;
    lv.pos = pos;
    lv.q = q.data();
    lv.q_stride = H * d;
    lv.k = k.data();
    lv.k_stride = Hkv * d;
    lv.scale = 1.0f / std::sqrt(static_cast<float>(d));
  }
};

std::unique_ptr<KvPolicy> make(const PolicyOptions& o, const PolicyModelInfo& info) {
  auto p = make_policy(o, info);
  EXPECT_TRUE(p.has_value()) << p.error();
  return p.has_value() ? std::move(p.value()) : nullptr;
}

PolicyOptions opts(const std::string& method) {
  PolicyOptions o;
  o.method = method;
  return o;
}

// Naive double-precision restatement of spec §2 steps 1-6 (no shared code with scoring.cc).
std::vector<double> naive_window_scores(const SynthLayer& s, int W, int K, bool max_pool) {
  const int n = s.lv.n_rows, H = s.info.n_heads, Hkv = s.info.n_kv_heads, d = s.info.head_dim;
  const int G = H / Hkv, m = n - W;
  std::vector<double> out(static_cast<size_t>(Hkv) * m, 0.0);
  for (int h = 0; h < H; ++h) {
    std::vector<double> col(m, 0.0);
    for (int i = 0; i < W; ++i) {
      const int r = m + i;
      std::vector<double> l(r + 1);
      double mx = -1e300, sum = 0;
      for (int j = 0; j <= r; ++j) {
        double acc = 0;
        for (int t = 0; t < d; ++t)
          acc += static_cast<double>(s.q[static_cast<size_t>(r) * H * d + h * d + t]) *
                 s.k[static_cast<size_t>(j) * Hkv * d + (h / G) * d + t];
        l[j] = acc / std::sqrt(static_cast<double>(d));
        mx = std::max(mx, l[j]);
      }
      for (int j = 0; j <= r; ++j) sum += std::exp(l[j] - mx);
      for (int j = 0; j < m; ++j) col[j] += std::exp(l[j] - mx) / sum;
    }
    for (int j = 0; j < m; ++j) {
      double v = max_pool ? -1e300 : 0.0;
      for (int t = j - K / 2; t <= j + K / 2; ++t) {
        if (t < 0 || t >= m) continue;
        v = max_pool ? std::max(v, col[t]) : v + col[t];
      }
      out[static_cast<size_t>(h / G) * m + j] += max_pool ? v : v / K;
    }
  }
  return out;
}

// Checks the "kept = highest scores" property for one head: every kept non-protected row scores
// >= every dropped row, equal scores resolved towards lower rows.
void expect_top_rows(std::span<const int32_t> kept, const float* s, int m, int expect_k,
                     const std::string& what) {
  std::vector<int32_t> sel;
  for (int32_t r : kept)
    if (r < m) sel.push_back(r);
  EXPECT_EQ(static_cast<int>(sel.size()), expect_k) << what;
  std::vector<char> in(m, 0);
  for (int32_t r : sel) in[r] = 1;
  for (int32_t a : sel)
    for (int b = 0; b < m; ++b) {
      if (in[b]) continue;
      EXPECT_GE(s[a], s[b]) << what << ": kept row " << a << " scores below dropped row " << b;
      if (s[a] == s[b]) {
        EXPECT_LT(a, b) << what << ": tie must go to the lower row";
      }
    }
}

void expect_ascending_unique(std::span<const int32_t> rows, int n) {
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_GE(rows[i], 0);
    EXPECT_LT(rows[i], n);
    if (i > 0) {
      EXPECT_LT(rows[i - 1], rows[i]);
    }
  }
}

TEST(KvScoring, WindowScoreMatchesNaive) {
  for (bool mx : {true, false}) {
    SynthLayer s(53, 7, 4, 8, 2, 16, 3.0f);
    std::vector<float> got;
    window_scores(s.lv, 8, 7, mx ? Pooling::kMax : Pooling::kAvg, got);
    const auto want = naive_window_scores(s, 8, 7, mx);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-5 * (1 + want[i]));
  }
}

TEST(KvScoring, AccumulatedAttentionMatchesNaive) {
  SynthLayer s(41, 3, 4, 4, 2, 8, 2.0f);
  std::vector<float> got;
  accumulated_attention(s.lv, got);
  const int n = 41, H = 4, d = 8, G = 2;
  for (int h = 0; h < H; ++h) {
    std::vector<double> col(n, 0.0);
    for (int i = 0; i < n; ++i) {
      std::vector<double> l(i + 1);
      double mx = -1e300, sum = 0;
      for (int j = 0; j <= i; ++j) {
        double acc = 0;
        for (int t = 0; t < d; ++t)
          acc += double(s.q[i * H * d + h * d + t]) * s.k[j * 2 * d + (h / G) * d + t];
        l[j] = acc / std::sqrt(double(d));
        mx = std::max(mx, l[j]);
      }
      for (int j = 0; j <= i; ++j) sum += std::exp(l[j] - mx);
      for (int j = 0; j <= i; ++j) col[j] += std::exp(l[j] - mx) / sum;
    }
    for (int j = 0; j < n; ++j) EXPECT_NEAR(got[h * n + j], col[j], 1e-5 * (1 + col[j]));
  }
}

TEST(KvScoring, PoolingPaddingRules) {
  const std::vector<float> in = {1, 5, 2, 0, 0, 9};
  std::vector<float> out(in.size());
  pool1d(in, 3, Pooling::kMax, out);
  EXPECT_EQ(out, (std::vector<float>{5, 5, 5, 2, 9, 9}));
  pool1d(in, 3, Pooling::kAvg, out);  // zero padding counted: edges divide by 3 too
  EXPECT_FLOAT_EQ(out[0], 6.0f / 3);
  EXPECT_FLOAT_EQ(out[5], 9.0f / 3);
  EXPECT_FLOAT_EQ(out[2], 7.0f / 3);
}

TEST(KvTopK, TiesGoToLowerPositionAndOutputAscends) {
  const std::vector<float> s = {1, 3, 3, 2, 3, 0, 3};
  std::vector<int32_t> out;
  top_k(s, 2, out);
  EXPECT_EQ(out, (std::vector<int32_t>{1, 2}));
  top_k(s, 5, out);
  EXPECT_EQ(out, (std::vector<int32_t>{1, 2, 3, 4, 6}));
  top_k(s, 99, out);
  EXPECT_EQ(out.size(), s.size());
  top_k(s, 0, out);
  EXPECT_TRUE(out.empty());
}

TEST(KvPolicies, WindowFamilyKeepsHighestScores) {
  for (const char* method : {"snapkv", "fastkv", "pyramidkv"}) {
    for (uint32_t seed : {1u, 2u, 3u}) {
      SynthLayer s(97, seed, 4, 8, 2, 16, 4.0f, /*il=*/1);
      PolicyOptions o = opts(method);
      o.retain_rate = 0.25;
      auto p = make(o, s.info);
      p->begin_prefill(s.info, 97);
      KeepLists keep;
      ASSERT_TRUE(p->select_kv(s.lv, keep)) << method;
      std::vector<float> sc;
      window_scores(s.lv, 8, 7, Pooling::kMax, sc);
      const int m = 97 - 8;
      int C = floor_mul(97, 0.25);
      if (std::string(method) == "pyramidkv") C = pyramid_capacity(C, 8, 20, 4, 1);
      ASSERT_EQ(keep.n_heads(), 2);
      for (int g = 0; g < 2; ++g) {
        auto rows = keep.head(g);
        expect_ascending_unique(rows, 97);
        for (int r = m; r < 97; ++r)
          EXPECT_TRUE(std::binary_search(rows.begin(), rows.end(), r)) << "window row " << r;
        expect_top_rows(rows, sc.data() + g * m, m, C - 8, method);
      }
    }
  }
}

TEST(KvPolicies, EqualScoresKeepLowerPositions) {
  // q = 0: every softmax row is uniform, so every column below the window scores the same.
  SynthLayer s(60, 5);
  std::fill(s.q.begin(), s.q.end(), 0.0f);
  for (const char* method : {"snapkv", "h2o", "adakv", "fastkv"}) {
    PolicyOptions o = opts(method);
    o.kv_budget = 20;
    auto p = make(o, s.info);
    p->begin_prefill(s.info, 60);
    KeepLists keep;
    ASSERT_TRUE(p->select_kv(s.lv, keep));
    for (int g = 0; g < 2; ++g) {
      auto rows = keep.head(g);
      std::vector<int32_t> got(rows.begin(), rows.end());
      if (std::string(method) == "h2o") {
        // H2O column sums decrease with j (later columns are seen by fewer rows): keep the first.
        std::vector<int32_t> want;
        for (int r = 0; r < 12; ++r) want.push_back(r);
        for (int r = 52; r < 60; ++r) want.push_back(r);
        EXPECT_EQ(got, want) << method;
      } else if (std::string(method) == "adakv") {
        EXPECT_EQ(got.front(), 0) << method;
      } else {
        std::vector<int32_t> want;
        for (int r = 0; r < 12; ++r) want.push_back(r);
        for (int r = 52; r < 60; ++r) want.push_back(r);
        EXPECT_EQ(got, want) << method;
      }
    }
  }
}

TEST(KvPolicies, BudgetAtOrAboveRowsKeepsEverything) {
  SynthLayer s(50, 9);
  for (const char* method :
       {"snapkv", "fastkv", "pyramidkv", "adakv", "streamingllm", "h2o", "fullkv", "keydiff"}) {
    for (int budget : {50, 51, 500}) {
      PolicyOptions o = opts(method);
      if (std::string(method) != "fullkv") o.kv_budget = budget;
      auto p = make(o, s.info);
      p->begin_prefill(s.info, 50);
      KeepLists keep;
      if (p->select_kv(s.lv, keep)) {
        for (int g = 0; g < keep.n_heads(); ++g) EXPECT_EQ(keep.head(g).size(), 50u) << method;
      }
    }
  }
  // retain_rate 1 keeps everything too.
  PolicyOptions o = opts("snapkv");
  o.retain_rate = 1.0;
  KeepLists keep;
  EXPECT_FALSE(make(o, s.info)->select_kv(s.lv, keep));
}

TEST(KvPolicies, ShortPromptGuardsKeepEverything) {
  for (int n : {1, 5, 8, 9, 79}) {  // r=0.1: C = floor(0.1 n) <= 8 = W
    SynthLayer s(n, 11);
    for (const char* method : {"snapkv", "fastkv", "pyramidkv", "adakv", "h2o"}) {
      auto p = make(opts(method), s.info);
      p->begin_prefill(s.info, n);
      KeepLists keep;
      std::vector<int32_t> rows;
      EXPECT_FALSE(p->select_kv(s.lv, keep)) << method << " n=" << n;
      EXPECT_FALSE(p->select_rows(s.lv, rows)) << method << " n=" << n;
    }
  }
}

TEST(KvPolicies, AdaKvHeadsDifferAndSumToLayerBudget) {
  SynthLayer s(120, 21, 4, 8, 2, 16, 1.0f);
  // Make KV head 0 sharply peaked (large keys on a few rows) and head 1 diffuse.
  for (int j = 0; j < 120; j += 17)
    for (int t = 0; t < 16; ++t) s.k[j * 32 + t] *= 8.0f;
  PolicyOptions o = opts("adakv");
  o.kv_budget = 40;
  auto p = make(o, s.info);
  KeepLists keep;
  ASSERT_TRUE(p->select_kv(s.lv, keep));
  const int per_head = 40 - 8;
  const size_t a = keep.head(0).size(), b = keep.head(1).size();
  EXPECT_NE(a, b);
  EXPECT_EQ(a + b, static_cast<size_t>(2 * 40));  // B = Hkv*(C-W) plus the window per head
  for (int g = 0; g < 2; ++g) {
    EXPECT_GE(keep.head(g).size(), static_cast<size_t>(8 + std::floor(0.2 * per_head)));
    expect_ascending_unique(keep.head(g), 120);
  }
  // The per-head counts follow the layer-wide top-B, mixed with the floor.
  std::vector<float> sc;
  window_scores(s.lv, 8, 7, Pooling::kMax, sc);
  const auto caps = adakv_caps(sc, 2, 112, per_head, 0.2);
  EXPECT_EQ(static_cast<size_t>(caps[0] + 8), a);
  EXPECT_EQ(static_cast<size_t>(caps[1] + 8), b);
  for (int g = 0; g < 2; ++g)
    expect_top_rows(keep.head(g), sc.data() + g * 112, 112, caps[g], "adakv");
}

TEST(KvBudget, AdaKvCapsSumExactly) {
  std::mt19937 rng(4);
  for (int trial = 0; trial < 50; ++trial) {
    const int Hkv = 1 + trial % 5, m = 30 + trial, per = 1 + trial % 20;
    std::vector<float> s(static_cast<size_t>(Hkv) * m);
    for (float& x : s) x = static_cast<float>(rng() % 1000) / 7.0f;
    const auto caps = adakv_caps(s, Hkv, m, per, 0.2);
    EXPECT_EQ(std::accumulate(caps.begin(), caps.end(), 0), Hkv * per);
    for (int c : caps) {
      EXPECT_LE(c, m);
      EXPECT_GE(c, static_cast<int>(std::floor(0.2 * per)));
    }
  }
}

TEST(KvPolicies, PyramidKvLayerBudgetsFollowFormula) {
  // C=40, W=8, beta=20, L=4: min = 32/20 = 1, max = 64-1 = 63, C_l = 8 + 63 - l*62/3.
  const int want[4] = {71, 51, 30, 9};
  for (int il = 0; il < 4; ++il) {
    EXPECT_EQ(pyramid_capacity(40, 8, 20, 4, il), want[il]);
    SynthLayer s(100, 30 + il, 4, 8, 2, 16, 1.0f, il);
    PolicyOptions o = opts("pyramidkv");
    o.kv_budget = 40;
    KeepLists keep;
    ASSERT_TRUE(make(o, s.info)->select_kv(s.lv, keep));
    for (int g = 0; g < 2; ++g) EXPECT_EQ(static_cast<int>(keep.head(g).size()), want[il]);
  }
  EXPECT_EQ(pyramid_capacity(40, 8, 20, 1, 0), 40);
}

TEST(KvPolicies, StreamingKeepsSinksAndRecent) {
  SynthLayer s(64, 1);
  PolicyOptions o = opts("streamingllm");
  o.kv_budget = 20;
  KeepLists keep;
  ASSERT_TRUE(make(o, s.info)->select_kv(s.lv, keep));
  std::vector<int32_t> want = {0, 1, 2, 3};
  for (int r = 48; r < 64; ++r) want.push_back(r);
  for (int g = 0; g < 2; ++g)
    EXPECT_EQ(std::vector<int32_t>(keep.head(g).begin(), keep.head(g).end()), want);
}

// KeyDiff: per KV head, the C keys least like the mean unit key (naive double restatement of
// -cos(key, anchor)); every kept row scores >= every dropped one, ties to the lower position, and
// a rate whose floor is 0 keeps everything.
TEST(KvPolicies, KeyDiffKeepsKeysFarthestFromTheAnchor) {
  SynthLayer s(90, 17);
  const int n = 90, d = s.info.head_dim, Hkv = s.info.n_kv_heads;
  PolicyOptions o = opts("keydiff");
  o.kv_budget = 25;
  KeepLists keep;
  ASSERT_TRUE(make(o, s.info)->select_kv(s.lv, keep));
  for (int g = 0; g < Hkv; ++g) {
    std::vector<double> anchor(d, 0.0);
    auto key = [&](int r) { return s.k.data() + (static_cast<size_t>(r) * Hkv + g) * d; };
    auto length = [&](const float* x) {
      double t = 0;
      for (int e = 0; e < d; ++e) t += double{x[e]} * x[e];
      return std::sqrt(t);
    };
    for (int r = 0; r < n; ++r)
      for (int e = 0; e < d; ++e) anchor[e] += key(r)[e] / length(key(r)) / n;
    double anchor_len = 0;
    for (double a : anchor) anchor_len += a * a;
    anchor_len = std::sqrt(anchor_len);
    std::vector<float> score(n);
    for (int r = 0; r < n; ++r) {
      double dot = 0;
      for (int e = 0; e < d; ++e) dot += key(r)[e] * anchor[e];
      score[r] = static_cast<float>(-dot / (length(key(r)) * anchor_len));
    }
    expect_ascending_unique(keep.head(g), n);
    expect_top_rows(keep.head(g), score.data(), n, 25, "keydiff");
  }
  // A repeated key (every row the same) ties everywhere: the first C rows.
  SynthLayer same(40, 3);
  for (int r = 1; r < 40; ++r)
    std::copy(same.k.begin(), same.k.begin() + Hkv * d, same.k.begin() + r * Hkv * d);
  o.kv_budget = 10;
  ASSERT_TRUE(make(o, same.info)->select_kv(same.lv, keep));
  for (int g = 0; g < Hkv; ++g) {
    std::vector<int32_t> first(10);
    std::iota(first.begin(), first.end(), 0);
    EXPECT_EQ(std::vector<int32_t>(keep.head(g).begin(), keep.head(g).end()), first);
  }
  // retain_rate 0.1 of 9 rows: C = 0 keeps everything (a cache cannot be empty).
  SynthLayer tiny(9, 5);
  EXPECT_FALSE(make(opts("keydiff"), tiny.info)->select_kv(tiny.lv, keep));
}

TEST(KvPolicies, H2oKeepsHeavyHitters) {
  SynthLayer s(70, 13, 4, 8, 2, 16, 4.0f);
  PolicyOptions o = opts("h2o");
  o.kv_budget = 24;
  KeepLists keep;
  ASSERT_TRUE(make(o, s.info)->select_kv(s.lv, keep));
  std::vector<float> acc;
  accumulated_attention(s.lv, acc);
  const int m = 62;
  std::vector<float> cols(8 * m), skv(2 * m);
  for (int h = 0; h < 8; ++h) std::copy_n(acc.data() + h * 70, m, cols.data() + h * m);
  gqa_sum(cols.data(), 8, 2, m, skv.data());
  for (int g = 0; g < 2; ++g) {
    for (int r = m; r < 70; ++r)
      EXPECT_TRUE(std::binary_search(keep.head(g).begin(), keep.head(g).end(), r));
    expect_top_rows(keep.head(g), skv.data() + g * m, m, 16, "h2o");
  }
}

TEST(KvPolicies, FastKvTspSelectsSharedTopRows) {
  const int N = 150;
  PolicyModelInfo info;
  info.n_layers = 6;
  info.n_heads = 8;
  info.n_kv_heads = 2;
  info.head_dim = 16;
  PolicyOptions o = opts("fastkv");
  o.tsp_layer = 2;
  auto p = make(o, info);
  p->begin_prefill(info, N);
  // Before and at the TSP layer: C = floor(150*0.1) = 15 rows per head.
  SynthLayer s(N, 77, 6, 8, 2, 16, 4.0f, /*il=*/2);
  KeepLists keep;
  ASSERT_TRUE(p->select_kv(s.lv, keep));
  EXPECT_EQ(keep.head(0).size(), 15u);
  std::vector<int32_t> rows;
  ASSERT_TRUE(p->select_rows(s.lv, rows));
  const int T = 30, m = N - 8;
  ASSERT_EQ(static_cast<int>(rows.size()), T);
  expect_ascending_unique(rows, N);
  EXPECT_EQ(rows.back(), N - 1);
  std::vector<float> sc;
  window_scores(s.lv, 8, 7, Pooling::kMax, sc);
  std::vector<float> g(m);
  for (int j = 0; j < m; ++j) g[j] = sc[j] + sc[m + j];
  expect_top_rows(rows, g.data(), m, T - 8, "tsp");
  // Other layers do not propagate.
  SynthLayer s1(N, 78, 6, 8, 2, 16, 1.0f, /*il=*/1);
  EXPECT_FALSE(p->select_rows(s1.lv, rows));
  // After TSP: n = T rows, capacity floor(30 * (0.1/0.2)) = 15.
  SynthLayer s3(T, 79, 6, 8, 2, 16, 1.0f, /*il=*/3, /*n_prompt=*/N);
  ASSERT_TRUE(p->select_kv(s3.lv, keep));
  EXPECT_EQ(keep.head(1).size(), 15u);
  EXPECT_FALSE(p->select_rows(s3.lv, rows));
}

TEST(KvPolicies, FastKvTspRateOneDisablesPropagation) {
  SynthLayer s(100, 5, 6, 8, 2, 16, 1.0f, 3);
  PolicyOptions o = opts("fastkv");
  o.tsp_rate = 1.0;
  auto p = make(o, s.info);
  p->begin_prefill(s.info, 100);
  std::vector<int32_t> rows;
  EXPECT_FALSE(p->select_rows(s.lv, rows));
  KeepLists keep;
  ASSERT_TRUE(p->select_kv(s.lv, keep));
  EXPECT_EQ(keep.head(0).size(), 10u);
  // Constant mode: no TSP when N <= T.
  PolicyOptions c = opts("fastkv");
  c.mode = "constant";
  c.kv_budget = 20;
  c.tsp_len = 100;
  auto pc = make(c, s.info);
  pc->begin_prefill(s.info, 100);
  EXPECT_FALSE(pc->select_rows(s.lv, rows));
  ASSERT_TRUE(pc->select_kv(s.lv, keep));
  EXPECT_EQ(keep.head(0).size(), 20u);
}

TEST(KvPolicies, SnapKvPerQueryHeadKeepsUnion) {
  SynthLayer s(90, 15, 4, 8, 2, 16, 4.0f);
  PolicyOptions o = opts("snapkv");
  o.kv_budget = 20;
  o.per_query_head = true;
  KeepLists keep;
  ASSERT_TRUE(make(o, s.info)->select_kv(s.lv, keep));
  std::vector<float> sq;
  window_scores_per_query_head(s.lv, 8, 7, Pooling::kMax, sq);
  const int m = 82;
  for (int g = 0; g < 2; ++g) {
    auto rows = keep.head(g);
    expect_ascending_unique(rows, 90);
    EXPECT_GE(rows.size(), 20u);
    EXPECT_LE(rows.size(), static_cast<size_t>(4 * 12 + 8));
    std::set<int32_t> uni;
    for (int h = g * 4; h < g * 4 + 4; ++h) {
      std::vector<int32_t> sel;
      top_k({sq.data() + h * m, static_cast<size_t>(m)}, 12, sel);
      uni.insert(sel.begin(), sel.end());
    }
    for (int r = m; r < 90; ++r) uni.insert(r);
    EXPECT_EQ(std::vector<int32_t>(uni.begin(), uni.end()),
              std::vector<int32_t>(rows.begin(), rows.end()));
  }
}

TEST(KvPolicies, GemFilterSelectsPrompt) {
  SynthLayer s(80, 17, 6, 8, 2, 16, 2.0f, 2);
  PolicyOptions o = opts("gemfilter");
  o.kv_budget = 16;
  auto p = make(o, s.info);
  ASSERT_TRUE(p->filter_layer().has_value());
  EXPECT_EQ(*p->filter_layer(), 2);  // round(13/32 * 6)
  std::vector<int32_t> keep_tokens;
  p->select_prompt(s.lv, keep_tokens);
  ASSERT_EQ(keep_tokens.size(), 16u);
  std::vector<float> raw, pooled(80);
  last_query_logit_sum(s.lv, raw);
  pool1d(raw, 5, Pooling::kAvg, pooled);
  expect_top_rows(keep_tokens, pooled.data(), 80, 16, "gemfilter");
  KeepLists kl;
  EXPECT_FALSE(p->select_kv(s.lv, kl));
  o.kv_budget = 80;
  make(o, s.info)->select_prompt(s.lv, keep_tokens);
  EXPECT_EQ(keep_tokens.size(), 80u);
}

TEST(KvPolicies, PyramidInferPropagatesWhatItCaches) {
  SynthLayer s(150, 19, 8, 8, 2, 16, 2.0f, /*il=*/4);
  auto p = make(opts("pyramidinfer"), s.info);
  p->begin_prefill(s.info, 150);
  KeepLists keep;
  std::vector<int32_t> rows;
  ASSERT_TRUE(p->select_kv(s.lv, keep));
  ASSERT_TRUE(p->select_rows(s.lv, rows));
  // ctx = 142, ratio = 0.8 * (cos(pi/2) + 1)/2 + 0.2 = 0.6 -> 85 context rows + 8 recent.
  EXPECT_EQ(rows.size(), 93u);
  EXPECT_EQ(std::vector<int32_t>(keep.head(0).begin(), keep.head(0).end()), rows);
  EXPECT_EQ(std::vector<int32_t>(keep.head(1).begin(), keep.head(1).end()), rows);
  for (int r = 0; r < 4; ++r) EXPECT_EQ(rows[r], r);  // sinks
  for (int r = 142; r < 150; ++r) EXPECT_TRUE(std::binary_search(rows.begin(), rows.end(), r));
  // Small contexts are left alone.
  SynthLayer small(72, 3, 8, 8, 2, 16, 1.0f, 4);
  EXPECT_FALSE(p->select_kv(small.lv, keep));
}

TEST(KvPolicies, PyramidInferCompressesDecodeBlocks) {
  PolicyModelInfo info;
  info.n_layers = 4;
  info.n_heads = 4;
  info.n_kv_heads = 2;
  info.head_dim = 8;
  auto p = make(opts("pyramidinfer"), info);
  const int prompt_rows = 10, len = prompt_rows + 16;
  std::vector<float> k(len * 8), v(len * 8), q(4 * 8);
  std::vector<int32_t> pos(len);
  std::mt19937 rng(1);
  for (float& x : k) x = static_cast<float>(rng() % 100) / 50.0f - 1.0f;
  for (float& x : q) x = static_cast<float>(rng() % 100) / 50.0f - 1.0f;
  for (int r = 0; r < len; ++r) pos[r] = r < prompt_rows ? r * 3 : 40 + (r - prompt_rows);
  DecodeView dv;
  dv.model = &info;
  dv.q = q.data();
  dv.scale = 1.0f / std::sqrt(8.0f);
  for (int g = 0; g < 2; ++g) dv.heads.push_back({len, k.data(), v.data(), pos.data()});
  KeepLists keep;
  dv.step = 14;
  dv.pos = 54;
  EXPECT_FALSE(p->on_decode(dv, keep));
  dv.step = 15;
  dv.pos = 55;
  ASSERT_TRUE(p->on_decode(dv, keep));
  for (int g = 0; g < 2; ++g) {
    auto rows = keep.head(g);
    EXPECT_EQ(static_cast<int>(rows.size()), prompt_rows + 14);
    expect_ascending_unique(rows, len);
    for (int r = 0; r < prompt_rows; ++r) EXPECT_EQ(rows[r], r);
  }
}

TEST(KvDefaults, PaperLayersForKnownModels) {
  PolicyModelInfo m;
  m.n_layers = 32;
  m.model_name = "meta-llama/Llama-3.1-8B-Instruct";
  EXPECT_EQ(default_tsp_layer(m), 15);
  EXPECT_EQ(default_filter_layer(m), 13);
  m.model_name = "mistralai/Ministral-8B-Instruct-2410";
  m.n_layers = 36;
  EXPECT_EQ(default_tsp_layer(m), 17);
  EXPECT_EQ(default_filter_layer(m), 17);
  m.model_name = "mistralai/Mistral-Nemo-Instruct-2407";
  m.n_layers = 40;
  EXPECT_EQ(default_tsp_layer(m), 19);
  EXPECT_EQ(default_filter_layer(m), 19);
  m.model_name = "tiny";
  m.n_layers = 6;
  EXPECT_EQ(default_tsp_layer(m), 3);
  EXPECT_EQ(default_filter_layer(m), 2);
  m.n_layers = 32;
  EXPECT_EQ(default_tsp_layer(m), 15);
  m.n_layers = 2;
  EXPECT_EQ(default_tsp_layer(m), 0);
  m.n_layers = 1;
  EXPECT_EQ(default_tsp_layer(m), 0);
}

std::string error_of(const PolicyOptions& o, const PolicyModelInfo& info) {
  auto p = make_policy(o, info);
  EXPECT_FALSE(p.has_value()) << o.method;
  return p.has_value() ? std::string() : p.error();
}

TEST(KvRegistry, ValidationMessages) {
  PolicyModelInfo info;
  info.n_layers = 6;
  info.n_heads = 8;
  info.n_kv_heads = 2;
  info.head_dim = 16;
  for (const std::string& name : policy_names()) EXPECT_TRUE(make_policy(opts(name), info));
  EXPECT_EQ(policy_names().size(), 10u);

  std::string e = error_of(opts("snapkv2"), info);
  EXPECT_NE(e.find("snapkv2"), std::string::npos) << e;
  for (const std::string& n : policy_names()) EXPECT_NE(e.find(n), std::string::npos) << e;

  PolicyOptions o = opts("fastkv");
  o.tsp_layer = 6;
  e = error_of(o, info);
  EXPECT_NE(e.find("tsp_layer 6"), std::string::npos) << e;
  EXPECT_NE(e.find("6 layers"), std::string::npos) << e;
  o.tsp_layer = -1;
  error_of(o, info);

  o = opts("gemfilter");
  o.filter_layer = 9;
  e = error_of(o, info);
  EXPECT_NE(e.find("filter_layer 9"), std::string::npos) << e;

  for (double bad : {0.0, -0.1, 1.5}) {
    o = opts("snapkv");
    o.retain_rate = bad;
    e = error_of(o, info);
    EXPECT_NE(e.find("(0, 1]"), std::string::npos) << e;
    o = opts("fastkv");
    o.tsp_rate = bad;
    e = error_of(o, info);
    EXPECT_NE(e.find("tsp_rate"), std::string::npos) << e;
  }

  o = opts("snapkv");
  o.kv_budget = 8;
  e = error_of(o, info);
  EXPECT_NE(e.find("window"), std::string::npos) << e;
  o = opts("streamingllm");
  o.kv_budget = 4;
  e = error_of(o, info);
  EXPECT_NE(e.find("sink"), std::string::npos) << e;
  o = opts("fastkv");
  o.tsp_len = 5;
  e = error_of(o, info);
  EXPECT_NE(e.find("tsp_len 5"), std::string::npos) << e;

  o = opts("snapkv");
  o.kernel = 4;
  EXPECT_NE(error_of(o, info).find("odd"), std::string::npos);
  o = opts("snapkv");
  o.pooling = "mean";
  EXPECT_NE(error_of(o, info).find("'mean'"), std::string::npos);
  o = opts("snapkv");
  o.tsp_rate = 0.2;
  EXPECT_NE(error_of(o, info).find("tsp_rate does not apply"), std::string::npos);
  o = opts("snapkv");
  o.kv_budget = 100;
  o.retain_rate = 0.1;
  EXPECT_NE(error_of(o, info).find("not both"), std::string::npos);
  o = opts("fastkv");
  o.mode = "constant";
  o.retain_rate = 0.1;
  EXPECT_NE(error_of(o, info).find("mode=constant"), std::string::npos);
  o = opts("fastkv");
  o.mode = "fixed";
  EXPECT_NE(error_of(o, info).find("'fixed'"), std::string::npos);
  o = opts("fullkv");
  o.window = 4;
  EXPECT_NE(error_of(o, info).find("window does not apply"), std::string::npos);
}

}  // namespace
}  // namespace fkv
