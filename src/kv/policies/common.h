// Internals shared by the policy files: option parsing/validation and the factory declarations
// the registry (src/kv/registry.cc) lists. Not part of the public interface.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"
#include "kv/policy.h"
#include "kv/scoring.h"

namespace fkv::kvp {

// Spec defaults (FASTKV.md §3, §4).
inline constexpr int kDefaultWindow = 8;
inline constexpr int kDefaultKernel = 7;
inline constexpr double kDefaultRetainRate = 0.1;
inline constexpr double kDefaultTspRate = 0.2;
inline constexpr int kDefaultConstantBudget = 512;
inline constexpr int kDefaultConstantTspLen = 2048;
inline constexpr int kPyramidBeta = 20;
inline constexpr double kAdaKvAlpha = 0.2;
inline constexpr int kStreamingSinks = 4;
inline constexpr int kGemFilterKernel = 5;

// A cache budget given either as a share of the rows (rate) or as a row count.
struct Budget {
  bool is_count = false;
  int count = 0;
  double rate = 0.0;
  int of(int n) const;  // count, or floor(n * rate)
};

// Window-score settings (W, K, pooling) after validation.
struct WindowOpts {
  int window = kDefaultWindow;
  int kernel = kDefaultKernel;
  Pooling pooling = Pooling::kMax;
};

Status check_rate(const std::string& method, const char* flag, std::optional<double> v);
Expected<WindowOpts> parse_window(const PolicyOptions& o);
// kv_budget / retain_rate (exclusive); the count must exceed `min_count` (the protected rows).
Expected<Budget> parse_budget(const PolicyOptions& o, int min_count, const char* min_what);
Status check_layer(const std::string& method, const char* flag, int layer,
                   const PolicyModelInfo& model);

using Factory = Expected<std::unique_ptr<KvPolicy>> (*)(const PolicyOptions&,
                                                        const PolicyModelInfo&);
Expected<std::unique_ptr<KvPolicy>> make_fullkv(const PolicyOptions&, const PolicyModelInfo&);
Expected<std::unique_ptr<KvPolicy>> make_fastkv(const PolicyOptions&, const PolicyModelInfo&);
Expected<std::unique_ptr<KvPolicy>> make_snapkv(const PolicyOptions&, const PolicyModelInfo&);
Expected<std::unique_ptr<KvPolicy>> make_pyramidkv(const PolicyOptions&, const PolicyModelInfo&);
Expected<std::unique_ptr<KvPolicy>> make_adakv(const PolicyOptions&, const PolicyModelInfo&);
Expected<std::unique_ptr<KvPolicy>> make_streamingllm(const PolicyOptions&, const PolicyModelInfo&);
Expected<std::unique_ptr<KvPolicy>> make_h2o(const PolicyOptions&, const PolicyModelInfo&);
Expected<std::unique_ptr<KvPolicy>> make_gemfilter(const PolicyOptions&, const PolicyModelInfo&);
Expected<std::unique_ptr<KvPolicy>> make_pyramidinfer(const PolicyOptions&, const PolicyModelInfo&);

}  // namespace fkv::kvp
