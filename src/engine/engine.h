// The engine: a loaded model (immutable, shareable) and sessions (KV cache + scratch + timing)
// that run prefill and decode under a KV-compression policy.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"
#include "kv/policy.h"
#include "model/model.h"

namespace fkv {

// What prefill kept, as original prompt positions (ascending) — the --dump-selection record.
struct SelectionRecord {
  struct Layer {
    int layer = 0;
    int n_in = 0;                            // rows that entered this layer
    std::vector<std::vector<int32_t>> kept;  // [n_kv_heads][kept positions]
  };
  struct Tsp {
    int layer = 0;
    std::vector<int32_t> positions;
  };
  std::string method;
  int n_prompt = 0;
  std::vector<Layer> layers;
  std::optional<Tsp> tsp;
  std::string to_json() const;
};

struct Timing {
  int n_prompt = 0;
  int n_decoded = 0;
  double prefill_s = 0;
  double decode_s = 0;
  size_t kv_bytes_after_prefill = 0;
};

struct SessionOptions {
  int max_new_tokens = 256;  // decode rows reserved per head
  // Prefill rows per chunk through the linear parts (Q/K/V, Wo, MLP) of a layer; attention
  // always sees the whole prefix. Bounds scratch to O(ubatch x d_ff).
  int ubatch = 512;
  // Element type of the cached K/V rows: f16 (default, as llama.cpp), bf16 or f32. Prefill
  // attention and every policy's prefill scoring use the f32 rows before they are stored, so the
  // kept sets do not depend on it.
  DType kv_dtype = DType::kF16;
  // Polled between prompt chunks and layers of a prefill and between the tokens of extend (on the
  // calling thread, outside parallel regions): when it returns true the call stops within one
  // chunk or layer and returns an error saying so, and the session refuses every later call (its
  // cache is half-written). Ctrl-C in the Python module, SIGINT in eval.
  std::function<bool()> interrupted;
};

class Session {
 public:
  Session(const Model& model, KvPolicy& policy, const SessionOptions& opts = {});
  ~Session();
  // Runs the prompt (positions 0..N-1) through the model under the policy.
  // logits: [n_vocab] of the last prompt position.
  Status prefill(std::span<const int32_t> tokens, std::vector<float>& logits);
  // Appends one token at position next_pos() (= N + step) and returns its next-token logits.
  Status decode(int32_t token, std::vector<float>& logits);
  // Appends tokens at positions next_pos() .. next_pos() + k - 1 to the (possibly compressed)
  // cache, as k decode steps would: the context-first protocol's question, a chat's next turn, a
  // server's chunked prompt. logits: [n_vocab] after the last token. Needs a prefill first.
  Status extend(std::span<const int32_t> tokens, std::vector<float>& logits);
  // Bench decode rows at a context depth without the prefill's cost: random post-RoPE Q/K/V of
  // `depth` rows per layer go through the policy's own selection (select_kv, select_rows,
  // GemFilter's select_prompt), so each layer keeps as many rows as a prefill of that length
  // would. Positions 0..depth-1; next_pos() = depth (GemFilter: its kept count). Timing is not
  // touched. Replaces prefill (one or the other per session).
  Status fill_random(int depth, uint64_t seed);
  // Prefills one prompt into several sessions of one model with a single forward pass, for
  // methods whose prompt pass is the full forward and differ only in what they cache (fullkv,
  // snapkv, pyramidkv, adakv, streamingllm, h2o): every session ends with exactly the cache,
  // selection and logits its own prefill() gives (logits: [n_vocab], the same for all). Methods
  // that propagate a subset of rows (fastkv, pyramidinfer) or re-prefill (gemfilter) are refused.
  static Status prefill_shared(std::span<Session* const> sessions, std::span<const int32_t> tokens,
                               std::vector<float>& logits);
  // Full-prompt logits for every position (no compression; test/oracle helper).
  Status prefill_all_logits(std::span<const int32_t> tokens, std::vector<float>& logits);

  int32_t next_pos() const;
  size_t kv_bytes() const;  // sum of kept rows (K+V) over layers and heads
  const SelectionRecord& selection() const;
  // Original positions each layer's KV heads hold now ([n_layers][n_kv_heads][len], ascending);
  // after decode/extend this includes the appended tokens (GemFilter: positions of its pass).
  std::vector<std::vector<std::vector<int32_t>>> cache_positions() const;
  const Timing& timing() const;

 private:
  friend struct BatchAccess;  // engine/batch.cc: the multi-sequence step works on Impl directly
  struct Impl;
  // Runs f() for the sessions `all`, turning an interruption into an error (engine.cc).
  template <class F>
  static Status guard_interrupt(std::span<Impl* const> all, F&& f);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fkv
