// Several sequences as the unit of an engine step (what `fastkv serve` runs):
//  - decode_batch: one token for every sequence in ONE forward pass. The matmuls run over the B
//    rows together (every weight tile read once per step for all of them); RoPE, the cache append,
//    attention and the policy's on_decode run per row on that sequence's own compressed cache.
//    Each row is computed exactly as Session::decode computes it (matmul_rows), so a sequence's
//    logits are bit-identical whether it decodes alone or with any others.
//  - SteppedPrefill: a session's prefill cut into pieces at layer boundaries, so a scheduler can
//    interleave a new prompt with decode steps. The pieces are the very calls Session::prefill
//    makes (it runs Session::prefill itself, paused between layers), so the cache, the selection
//    and the logits are those of one uninterrupted prefill, for every method.
//  - worst_case_kv_bytes: the most cache bytes a request can hold (after compression), for
//    admission by memory.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "core/status.h"
#include "engine/engine.h"
#include "kv/policy.h"
#include "model/model.h"

namespace fkv {

struct BatchItem {
  Session* session = nullptr;            // prefilled; distinct sessions on the same model
  int32_t token = 0;                     // decoded at position session->next_pos()
  std::vector<float>* logits = nullptr;  // out: [n_vocab] next-token logits
};

// One decode step for every item (positions: each session's next_pos()). Checks every item first
// (same model, distinct prefilled sessions, token ids, context room); on an error nothing is
// changed. Each session's timing counts the step's wall time as its decode time.
Status decode_batch(std::span<const BatchItem> items);

// Runs session.prefill(tokens) in pieces: each run_piece() call resumes it and returns after at
// least `rows_per_piece` row-layers (rows entering a layer, summed over the layers run) or when
// the prefill ends. So one piece costs at most max(rows_per_piece row-layers, one layer over the
// whole prompt): a prompt of n <= rows_per_piece tokens runs ceil(rows_per_piece / n) layers per
// piece; a longer prompt runs one layer per piece (a layer cannot be split without changing bits).
// The session runs under its own policy: the pause points are the prefill pass's layer boundaries
// (a session hook), not a policy wrapper. Only one of caller and prefill runs at any time.
class SteppedPrefill {
 public:
  explicit SteppedPrefill(int rows_per_piece);
  ~SteppedPrefill();  // cancels an unfinished prefill and joins its thread
  SteppedPrefill(const SteppedPrefill&) = delete;
  SteppedPrefill& operator=(const SteppedPrefill&) = delete;

  // Starts the prefill of `tokens` on `session` (copied); call once. Nothing runs until run_piece.
  void start(Session& session, std::vector<int32_t> tokens);
  // Runs one piece; true when the prefill has ended (then status() and logits() are final).
  bool run_piece();
  bool done() const { return done_; }
  const Status& status() const { return status_; }
  std::vector<float>& logits() { return logits_; }
  int pieces() const { return pieces_; }

 private:
  void worker_main(Session* session);
  void yield_to_caller();  // worker side; throws to unwind when cancelled

  int rows_per_piece_;
  std::vector<int32_t> tokens_;
  std::vector<float> logits_;
  Status status_ = Status::ok();
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool worker_turn_ = false;
  bool cancelled_ = false;
  bool done_ = false;
  bool started_ = false;
  int pieces_ = 0;
  int64_t rows_in_piece_ = 0;
  int threads_ = 0;  // the creating thread's kernel thread count
};

// Bytes the cache of one request can reach: kept prompt rows per head (max_kept_prompt_rows, which
// each method states in its own file: fullkv and pyramidinfer keep up to the whole prompt, the
// budgeted methods at most their budget, pyramidkv at most twice it, snapkv per query head the
// union of its heads' choices, and all of them the whole prompt when the budget does not exceed
// the rows they protect) plus max_new_tokens decode rows, over every layer and KV head, K and V in
// the cache dtype.
size_t worst_case_kv_bytes(const PolicyOptions& opts, const ModelConfig& config, int n_prompt,
                           int max_new_tokens, DType kv_dtype = SessionOptions().kv_dtype);
// Bytes one decode row adds over all layers and KV heads (K and V) in the cache dtype.
size_t kv_bytes_per_row(const ModelConfig& config, DType kv_dtype = SessionOptions().kv_dtype);

}  // namespace fkv
