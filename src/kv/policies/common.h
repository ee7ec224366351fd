// Internals shared by the policy files: option parsing/validation and the factory declarations
// the registry (src/kv/registry.cc) lists. Not part of the public interface.
#pragma once

#include <cstdint>
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

// Which PolicyOptions fields a method reads (MethodInfo::options); the registry refuses the others.
enum Opt : unsigned {
  kTspLayer = 1u << 0,
  kTspRate = 1u << 1,
  kTspLen = 1u << 2,
  kRetainRate = 1u << 3,
  kKvBudget = 1u << 4,
  kWindow = 1u << 5,
  kKernel = 1u << 6,
  kPooling = 1u << 7,
  kMode = 1u << 8,
  kFilterLayer = 1u << 9,
  kPerQueryHead = 1u << 10,
};
inline constexpr unsigned kBudgetOpts = kRetainRate | kKvBudget;
inline constexpr unsigned kWindowScoreOpts = kBudgetOpts | kWindow | kKernel | kPooling;

// The most rows a layer's cache holds per KV head on average (its rows summed over the KV heads,
// divided by their number) for a prompt of n_prompt tokens, before any decoded token; may exceed
// n_prompt (callers clamp). What admission control reserves (worst_case_kv_bytes).
using MaxRowsFn = int64_t (*)(const PolicyOptions& opts, const PolicyModelInfo& model,
                              int n_prompt);

// What the engine and every front-end know of a method: each policy file defines one, and the
// registry (registry.cc) lists them. Adding a method is its file plus one registry row.
struct MethodInfo {
  const char* name;         // the spec name, e.g. "snapkv"
  Factory make;             // validates the options against the model, builds the policy
  unsigned options;         // Opt bits
  MaxRowsFn max_rows;       // see MaxRowsFn
  bool shares_prompt_pass;  // its prompt pass is the full forward and only the cache differs, so
                            // an eval sample runs that pass once for all such methods
};

extern const MethodInfo kFullKvInfo;
extern const MethodInfo kFastKvInfo;
extern const MethodInfo kSnapKvInfo;
extern const MethodInfo kPyramidKvInfo;
extern const MethodInfo kAdaKvInfo;
extern const MethodInfo kStreamingLlmInfo;
extern const MethodInfo kH2oInfo;
extern const MethodInfo kGemFilterInfo;
extern const MethodInfo kPyramidInferInfo;
extern const MethodInfo kKeyDiffInfo;

// The budget of the options as a row count: kv_budget, or floor(n * retain_rate) (default rate
// kDefaultRetainRate), as Budget::of computes it once parsed.
int64_t budget_rows(const PolicyOptions& o, int n);
// max_rows of a method that keeps `budget_rows` rows when it exceeds `protected_rows` and every row
// otherwise (its guard).
int64_t budget_or_all(const PolicyOptions& o, int n_prompt, int64_t protected_rows);
// MaxRowsFn of the methods that keep every prompt row (fullkv; pyramidinfer, whose decode
// compaction only shrinks), and of those that keep C rows per KV head on average when C exceeds
// the window (adakv's heads share Hkv * C; h2o).
int64_t keeps_every_row(const PolicyOptions& o, const PolicyModelInfo& model, int n_prompt);
int64_t window_budget_rows(const PolicyOptions& o, const PolicyModelInfo& model, int n_prompt);

}  // namespace fkv::kvp
