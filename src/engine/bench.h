// The measurement behind `fastkv bench` (and any front-end that wants its rows): one row = one
// method x prompt length x generated tokens x depth x threads x KV dtype x ubatch, run `reps`
// times after `warmup` unrecorded runs, each on a fresh Session; plus the md / json / csv writers.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/status.h"
#include "engine/engine.h"
#include "kv/policy.h"
#include "model/model.h"

namespace fkv {

inline constexpr int kMaxBenchBatch = 256;  // sequences of one batched row

enum class BenchFill { kPrefill, kRandom };  // how a decode-only row (depth > 0) fills its cache

struct BenchCase {
  PolicyOptions method;
  int prompt_tokens = 0;  // > 0: a prefill row (timed); then depth must be 0
  int gen_tokens = 0;     // decode steps, timed
  int depth = 0;          // > 0: a decode-only row at this context depth (fill untimed)
  BenchFill fill = BenchFill::kPrefill;
  int threads = 1;
  DType kv_dtype = DType::kF32;
  int ubatch = 512;
  // Sequences decoded together (decode_batch, as `fastkv serve` steps them): each is prefilled
  // (or filled) on its own session, one after another, then every decode step runs all of them
  // in one batched forward pass. Figures: prefill_s is all B prefills, decode times are per step.
  int batch = 1;
};

// One run of a case.
struct BenchSample {
  double prefill_s = 0;  // time to first token (prefill + logits); 0 for decode-only rows
  double decode_s = 0;   // all decode steps
  size_t kv_bytes_after_prefill = 0;
  size_t kv_bytes = 0;              // at the end of the run
  size_t peak_rss_bytes = 0;        // process peak during the run (weights included)
  double fill_s = 0;                // decode-only rows: time to fill the cache (not in any figure)
  std::vector<int> rows_per_layer;  // hidden-state rows each layer's prefill (or fill) ran on
  int tsp_layer = -1;               // layer after which only TSP rows went on (-1: none)
};

struct BenchStat {
  double mean = 0;
  double std = 0;  // sample standard deviation (n - 1); 0 for one sample
  double min = 0;
  double max = 0;
};
BenchStat bench_stat(const std::vector<double>& values);

struct BenchRow {
  BenchCase bench_case;
  std::vector<BenchSample> samples;  // the recorded repetitions
};

// What the writers print about the run besides the rows.
struct BenchContext {
  std::string model;        // path or "synthetic:<name>"
  std::string model_dtype;  // weights' dtype ("q4_1", "bf16", "mixed")
  bool synthetic = false;
  int warmup = 1;
  std::string isa;        // kernels in use
  std::string pool_wait;  // how idle pool workers wait (core/thread_pool.h pool_wait_description)
  size_t weight_bytes = 0;
  ModelConfig config;  // shapes, for the FLOP / bytes bounds of docs/PERFORMANCE.md
};

// Checks a case against the model (lengths within n_ctx, exactly one of prompt/depth, batch >= 1).
Status validate_bench_case(const BenchCase& c, const ModelConfig& config);
// Runs the case once. Tokens are uniform random ids (seeded), as llama-bench does; sequence b of a
// batch uses its own ids (seed + b).
Expected<BenchSample> run_bench_once(const Model& model, const BenchCase& c, uint64_t seed);

std::string bench_to_json(const std::vector<BenchRow>& rows, const BenchContext& ctx);
std::string bench_to_csv(const std::vector<BenchRow>& rows, const BenchContext& ctx);
std::string bench_to_markdown(const std::vector<BenchRow>& rows, const BenchContext& ctx);

const char* bench_fill_name(BenchFill f);
// "f32" | "f16" | "bf16" -> the KV dtype; error names the value.
Expected<DType> parse_kv_dtype(const std::string& name);

// Memory read bandwidth as decode sees it: `threads` threads of the engine's pool each sum their
// share of a `bytes` buffer (far larger than the caches), best and median GB/s over `reps` passes
// after one untimed pass. The physical bound of a decode step: (weight + KV bytes) / this.
struct BandwidthProbe {
  double best_gbs = 0, median_gbs = 0;
  size_t bytes = 0;
  int threads = 0, reps = 0;
};
BandwidthProbe probe_read_bandwidth(size_t bytes, int threads, int reps);

// The int8 multiply-add peak of the best x16 kernel instruction on `threads` threads (each runs
// the same loop): best of `reps` timed runs, in int8 ops/s (2 per multiply-add). isa names it.
struct Int8Peak {
  double best_tops = 0;
  const char* isa = "";
  int threads = 0;
};
Int8Peak probe_int8_peak(int threads, int reps);

}  // namespace fkv
