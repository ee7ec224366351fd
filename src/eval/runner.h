// Runs an evaluation: every sample x every method (x every retain rate of a sweep) under one
// protocol, in parallel sessions over one shared Model, with resume, shards, a progress bar, and
// the outputs predictions.jsonl / scores.json / summary.md / run.json (all written atomically).
#pragma once

#include <atomic>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/status.h"
#include "eval/jieba.h"
#include "eval/samples.h"
#include "kv/policy.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace fkv::eval {

struct MethodRun {
  std::string spec;  // canonical spec string (format_method_spec), the row's "method"
  PolicyOptions opts;
};
// "a;b;c" specs through the one method-spec parser; with retain_rates, every method that takes
// retain_rate and does not set it runs once per rate. Duplicates (same canonical spec) collapse.
Expected<std::vector<MethodRun>> expand_methods(const std::string& methods,
                                                const std::vector<double>& retain_rates);

enum class Protocol { kJoint, kContextFirst };
Expected<Protocol> parse_protocol(const std::string& s);
const char* protocol_name(Protocol p);

struct RunConfig {
  Family family = Family::kNeedle;
  Protocol protocol = Protocol::kJoint;
  std::vector<MethodRun> methods;
  std::string out_dir;
  int shard_index = 0, shard_count = 1;
  int threads = 0;   // total kernel threads (0: all cores)
  int parallel = 0;  // sessions at once (0: as cores and memory allow)
  PromptBuildOptions prompt;
  bool share_prefill = true;     // one prompt pass per sample for the full-forward methods
  const Jieba* jieba = nullptr;  // needed by the Chinese metrics
  nlohmann::ordered_json meta;   // what run.json records about the run (model, data...)
  // Set (say, by a SIGINT handler) to stop: rows in flight are dropped within one prompt chunk,
  // layer or token, every finished row is already on disk, and run_eval returns an error whose
  // message starts with kInterruptedPrefix.
  const std::atomic<bool>* interrupt = nullptr;
};

// Start of run_eval's error message when RunConfig::interrupt stopped it; the finished row count
// follows ("interrupted after N rows").
inline constexpr const char* kInterruptedPrefix = "interrupted after ";

struct RunSummary {
  int rows_total = 0;    // rows of this shard
  int rows_skipped = 0;  // found in predictions.jsonl (resume)
  int rows_run = 0;
};

// `samples` is the whole (unsharded) sample list in its canonical order.
Expected<RunSummary> run_eval(const Model& model, const Tokenizer& tok,
                              const std::vector<EvalSample>& samples, const RunConfig& cfg);

// predictions.jsonl rows of a run folder (empty when there is none); errors name file and line.
Expected<std::vector<nlohmann::ordered_json>> read_predictions(const std::string& dir);
// scores.json + summary.md from rows (rows sorted by sample_index, method_index).
Status write_reports(const std::string& dir, const nlohmann::ordered_json& meta,
                     std::vector<nlohmann::ordered_json> rows);
// Joins shard folders into out_dir (checks they are shards of one run and all are present).
Status merge_runs(const std::vector<std::string>& dirs, const std::string& out_dir);

}  // namespace fkv::eval
