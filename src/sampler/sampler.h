// Token sampler: greedy / temperature / top-k / top-p with a portable, seeded RNG.
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "core/status.h"

namespace fkv {

struct SamplerConfig {
  float temperature = 0.0f;  // 0 => greedy
  int top_k = 0;             // 0 => off
  float top_p = 1.0f;        // 1 => off
  uint64_t seed = 0;
};

// Rejects temperature < 0 (or non-finite), top_p outside (0, 1], top_k < 0.
Status validate_sampler_config(const SamplerConfig& config);

// splitmix64: tiny, full-period, and defined by integer arithmetic only, so a seed gives the
// same stream on every platform (unlike <random> distributions).
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next();
  // Uniform double in [0, 1): the top 53 bits scaled by 2^-53.
  double next_double();

 private:
  uint64_t state_;
};

// One candidate after filtering: token id and its renormalized probability.
struct TokenProb {
  int32_t id;
  double prob;
};

// The distribution sample() draws from when temperature > 0: candidates in descending
// probability (ties -> lower id first), after temperature, top-k, softmax and top-p, renormalized
// to sum to 1. Exposed for tests.
std::vector<TokenProb> sampler_distribution(std::span<const float> logits,
                                            const SamplerConfig& config);

// Index of the largest logit; ties -> lowest id (NaNs never win unless logits[0] is one).
int32_t argmax_token(std::span<const float> logits);
// Its scalar twin: the defining loop (tests).
int32_t argmax_token_scalar(std::span<const float> logits);

class Sampler {
 public:
  // config must pass validate_sampler_config (checked).
  explicit Sampler(const SamplerConfig& config);
  int32_t sample(std::span<const float> logits);
  const SamplerConfig& config() const { return config_; }

 private:
  SamplerConfig config_;
  SplitMix64 rng_;
};

}  // namespace fkv
