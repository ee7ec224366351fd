#include "sampler/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace fkv {

Status validate_sampler_config(const SamplerConfig& config) {
  if (!std::isfinite(config.temperature) || config.temperature < 0.0f) {
    return Status::error(
        strfmt("sampler: temperature must be a finite value >= 0 (0 = greedy), got %g",
               static_cast<double>(config.temperature)));
  }
  if (!(config.top_p > 0.0f && config.top_p <= 1.0f)) {
    return Status::error(
        strfmt("sampler: top_p must be in (0, 1], got %g", static_cast<double>(config.top_p)));
  }
  if (config.top_k < 0) {
    return Status::error(strfmt("sampler: top_k must be >= 0 (0 = off), got %d", config.top_k));
  }
  return Status::ok();
}

uint64_t SplitMix64::next() {
  state_ += 0x9E3779B97F4A7C15ull;
  uint64_t z = state_;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

double SplitMix64::next_double() {
  // 53 random bits -> exactly representable multiples of 2^-53 in [0, 1).
  return static_cast<double>(next() >> 11) * 0x1.0p-53;
}

int32_t argmax_token_scalar(std::span<const float> logits) {
  FKV_CHECK(!logits.empty(), "argmax over empty logits");
  size_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i) {
    if (logits[i] > logits[best]) best = i;  // strict: ties keep the lower id
  }
  return static_cast<int32_t>(best);
}

// The scalar definition's answer in two vector passes (SSE2, the x86-64 baseline): the largest
// value that loop can reach (NaNs never win, so it is the max over the non-NaN logits, seeded with
// logits[0]; a NaN logits[0] wins by default), then its first index (== treats -0 and +0 alike, as
// the strict > keeps the first zero). Greedy serving ran the scalar loop once per stream per step:
// 34.5 us for 49152 logits, ~3.5 % of an 8-stream SmolLM2 step.
int32_t argmax_token(std::span<const float> logits) {
#if defined(__SSE2__)
  FKV_CHECK(!logits.empty(), "argmax over empty logits");
  const float* x = logits.data();
  const size_t n = logits.size();
  if (std::isnan(x[0])) return 0;
  __m128 m4 = _mm_set1_ps(x[0]);
  size_t i = 0;
  // maxps(v, m) returns m when v is NaN: NaNs drop out as in the scalar loop.
  for (; i + 4 <= n; i += 4) m4 = _mm_max_ps(_mm_loadu_ps(x + i), m4);
  alignas(16) float lanes[4];
  _mm_store_ps(lanes, m4);
  float m = std::max(std::max(lanes[0], lanes[1]), std::max(lanes[2], lanes[3]));
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  const __m128 target = _mm_set1_ps(m);
  i = 0;
  for (; i + 4 <= n; i += 4) {
    const int hit = _mm_movemask_ps(_mm_cmpeq_ps(_mm_loadu_ps(x + i), target));
    if (hit != 0) return static_cast<int32_t>(i + static_cast<size_t>(__builtin_ctz(hit)));
  }
  for (; i < n; ++i) {
    if (x[i] == m) return static_cast<int32_t>(i);
  }
  return 0;  // unreachable: m is one of the logits
#else
  return argmax_token_scalar(logits);
#endif
}

std::vector<TokenProb> sampler_distribution(std::span<const float> logits,
                                            const SamplerConfig& config) {
  FKV_CHECK(!logits.empty(), "sampling from empty logits");
  FKV_CHECK(config.temperature > 0.0f, "sampler_distribution needs temperature > 0, got %g",
            static_cast<double>(config.temperature));
  const size_t n = logits.size();
  const double inv_t = 1.0 / static_cast<double>(config.temperature);
  std::vector<int32_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  // Descending logit, ties -> lower id; the same order as descending probability.
  auto higher = [&](int32_t a, int32_t b) {
    if (logits[a] != logits[b]) return logits[a] > logits[b];
    return a < b;
  };
  size_t keep = n;
  if (config.top_k > 0 && static_cast<size_t>(config.top_k) < n) {
    keep = static_cast<size_t>(config.top_k);
    std::partial_sort(order.begin(), order.begin() + keep, order.end(), higher);
  } else {
    std::sort(order.begin(), order.end(), higher);
  }
  order.resize(keep);

  // Softmax over the kept logits (scaled by 1/T), in double, max-subtracted.
  const double max_scaled = static_cast<double>(logits[order[0]]) * inv_t;
  std::vector<TokenProb> dist(keep);
  double total = 0.0;
  for (size_t i = 0; i < keep; ++i) {
    const double e = std::exp(static_cast<double>(logits[order[i]]) * inv_t - max_scaled);
    dist[i] = {order[i], e};
    total += e;
  }
  for (auto& tp : dist) tp.prob /= total;

  // Top-p: the smallest prefix whose mass reaches top_p (at least one token).
  if (config.top_p < 1.0f) {
    const double p = static_cast<double>(config.top_p);
    double mass = 0.0;
    size_t cut = 0;
    while (cut < dist.size()) {
      mass += dist[cut].prob;
      ++cut;
      if (mass >= p) break;
    }
    dist.resize(cut);
    for (auto& tp : dist) tp.prob /= mass;
  }
  return dist;
}

Sampler::Sampler(const SamplerConfig& config) : config_(config), rng_(config.seed) {
  const Status st = validate_sampler_config(config);
  FKV_CHECK(st.is_ok(), "%s", st.message().c_str());
}

int32_t Sampler::sample(std::span<const float> logits) {
  if (config_.temperature == 0.0f) return argmax_token(logits);
  const std::vector<TokenProb> dist = sampler_distribution(logits, config_);
  const double u = rng_.next_double();
  // Inverse CDF; the last candidate absorbs any rounding shortfall of the cumulative sum.
  double cum = 0.0;
  for (size_t i = 0; i + 1 < dist.size(); ++i) {
    cum += dist[i].prob;
    if (u < cum) return dist[i].id;
  }
  return dist.back().id;
}

}  // namespace fkv
