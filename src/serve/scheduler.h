// The engine side of `fastkv serve`: one scheduler thread owns the model and every sequence; HTTP
// threads only submit jobs and read their token events. Each loop iteration is one engine step:
// a batched decode of every running sequence (engine/batch.h decode_batch), then one piece of at
// most one prefill (SteppedPrefill), so streams keep flowing while a new prompt is read.
// Admission is by KV memory: a job starts when its worst-case cache (after compression) fits in
// what the running ones have reserved; otherwise it waits in a bounded FIFO queue.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/batch.h"
#include "engine/engine.h"
#include "kv/policy.h"
#include "model/model.h"
#include "sampler/sampler.h"

namespace fkv::serve {

struct TokenEvent {
  int32_t id = 0;
  float logprob = 0;                           // log-softmax of the raw logits (when asked)
  std::vector<std::pair<int32_t, float>> top;  // top_logprobs alternatives, best first
};

// One request, shared by its HTTP thread and the scheduler. Inputs are set before submit and not
// changed after; the rest is guarded by mu.
struct Job {
  std::vector<int32_t> prompt;
  int max_tokens = 16;
  SamplerConfig sampler;
  std::vector<int32_t> stop_ids;
  PolicyOptions method;
  std::string method_spec;   // canonical spec, for usage
  int top_logprobs = -1;     // -1: no logprobs; else how many alternatives per token
  size_t reserve_bytes = 0;  // worst_case_kv_bytes at submit

  std::mutex mu;
  std::condition_variable cv;
  std::deque<TokenEvent> events;
  bool finished = false;
  std::string finish_reason;  // "stop" | "length" | "cancelled"
  std::string error;          // engine error (the HTTP side reports it)
  int completion_tokens = 0;
  double queue_s = 0, prefill_s = 0, decode_s = 0;
  size_t kv_bytes_after_prefill = 0, kv_bytes = 0;
  double submitted_at = 0;

  // Set by the HTTP side (client gone, stop string seen): the scheduler drops the sequence and
  // frees its memory at its next step.
  std::atomic<bool> cancelled{false};
};

struct SchedulerOptions {
  int parallel = 4;        // sequences admitted at once (prefilling + decoding)
  int queue = 64;          // jobs waiting for admission at most
  size_t kv_memory = 0;    // bound on the reserved cache bytes of all admitted sequences
  int prefill_rows = 512;  // SteppedPrefill rows_per_piece
  int threads = 0;         // kernel threads of the scheduler thread (0: the default)
};

struct SchedulerMetrics {
  uint64_t jobs_done = 0, jobs_cancelled = 0, jobs_failed = 0;
  uint64_t prompt_tokens = 0, generated_tokens = 0, decode_steps = 0, prefill_pieces = 0;
  double prefill_s = 0, decode_s = 0;
  double recent_decode_tps = 0;  // generated tokens / step time over the last few seconds
  size_t queue_depth = 0, running = 0, prefilling = 0;
  size_t kv_bytes_in_use = 0, kv_bytes_reserved = 0;
  int last_batch = 0;
};

class Scheduler {
 public:
  enum class Submit { kQueued, kQueueFull, kStopping };
  Scheduler(const Model& model, const SchedulerOptions& opts);
  ~Scheduler();
  Submit submit(const std::shared_ptr<Job>& job);
  // Stops admitting new jobs; queued and running ones finish, then run() returns.
  void stop();
  bool stopping() const { return stopping_.load(); }
  void run();  // the scheduler loop (its own thread)
  SchedulerMetrics metrics() const;

 private:
  struct Active;
  void admit_locked();
  void finish(Active& a, const std::string& reason, const std::string& error = "");
  bool emit(Active& a, int32_t token);  // false when the sequence ended
  void after_prefill(std::unique_ptr<Active> a);
  void drop_cancelled();

  const Model& model_;
  SchedulerOptions opts_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> waiting_;
  std::atomic<bool> stopping_{false};
  // Scheduler thread only (metrics read under mu_):
  std::vector<std::unique_ptr<Active>> prefilling_;
  std::vector<std::unique_ptr<Active>> decoding_;
  size_t reserved_ = 0;
  SchedulerMetrics m_;
  std::deque<std::pair<double, int>> recent_;  // (step end time, tokens) for recent_decode_tps
  std::deque<double> recent_dt_;
};

}  // namespace fkv::serve
