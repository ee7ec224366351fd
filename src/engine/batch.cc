#include "engine/batch.h"

#include <algorithm>
#include <cmath>

#include "engine/session_impl.h"
#include "kv/budget.h"

namespace fkv {

struct BatchAccess {
  using Impl = Session::Impl;
  static Impl& impl(Session& s) { return *s.impl_; }
};
using SeqImpl = BatchAccess::Impl;

namespace {

// Scratch of one batched step, reused across steps by the calling thread.
struct BatchScratch {
  std::vector<float> x, xn, q, k, v, att, proj, gate, up, logits;
};

BatchScratch& batch_scratch() {
  thread_local BatchScratch s;
  return s;
}

}  // namespace

Status decode_batch(std::span<const BatchItem> items) {
  if (items.empty()) return Status::ok();
  const int B = static_cast<int>(items.size());
  std::vector<SeqImpl*> seq(B);
  for (int b = 0; b < B; ++b) {
    if (items[b].session == nullptr || items[b].logits == nullptr) {
      return Status::error(strfmt("decode_batch: item %d has no session or logits", b));
    }
    seq[b] = &BatchAccess::impl(*items[b].session);
  }
  const Model& model = seq[0]->model;
  const ModelConfig& c = model.config();
  for (int b = 0; b < B; ++b) {
    const SeqImpl& s = *seq[b];
    if (&s.model != &model) return Status::error("decode_batch: sessions of different models");
    for (int o = 0; o < b; ++o) {
      if (seq[o] == seq[b])
        return Status::error(strfmt("decode_batch: item %d repeats item %d", b, o));
    }
    if (!s.prefilled)
      return Status::error(strfmt("decode_batch: item %d: decode before prefill", b));
    if (items[b].token < 0 || items[b].token >= c.n_vocab) {
      return Status::error(
          strfmt("decode_batch: item %d: token id %d is outside the vocabulary [0, %d)", b,
                 items[b].token, c.n_vocab));
    }
    if (s.kv.next_pos() >= c.n_ctx) {
      return Status::error(
          strfmt("decode_batch: item %d: position %d reaches the model's context length %d", b,
                 s.kv.next_pos(), c.n_ctx));
    }
  }
  const double t0 = now_s();
  const int d = c.d_model;
  const int hd = c.head_dim;
  const int64_t q_dim = static_cast<int64_t>(c.n_heads) * hd;
  const int64_t kv_dim = static_cast<int64_t>(c.n_kv_heads) * hd;
  std::vector<int32_t> pos(B);  // [B] position of each row: that sequence's prompt length + step
  for (int b = 0; b < B; ++b) pos[b] = seq[b]->kv.next_pos();

  BatchScratch& S = batch_scratch();
  S.x.resize(static_cast<size_t>(B) * d);  // [B, d_model]
  for (int b = 0; b < B; ++b)
    weight_row_to_f32(model.tok_embd(), items[b].token, S.x.data() + b * d);
  S.xn.resize(static_cast<size_t>(B) * d);      // [B, d_model]
  S.q.resize(static_cast<size_t>(B) * q_dim);   // [B, n_heads * head_dim]
  S.k.resize(static_cast<size_t>(B) * kv_dim);  // [B, n_kv_heads * head_dim]
  S.v.resize(static_cast<size_t>(B) * kv_dim);
  S.att.resize(static_cast<size_t>(B) * q_dim);  // [B, n_heads * head_dim]
  S.proj.resize(static_cast<size_t>(B) * d);
  S.gate.resize(static_cast<size_t>(B) * c.d_ff);  // [B, d_ff]
  S.up.resize(static_cast<size_t>(B) * c.d_ff);
  std::vector<std::pair<int64_t, int>> order(B);  // [B] (-cache bytes of the layer, item)
  std::vector<bool> reads_cache(B);  // [B] whether each policy reads its decode cache this step
  for (int b = 0; b < B; ++b)
    reads_cache[b] = seq[b]->policy.reads_decode_cache(seq[b]->timing.n_decoded);
  for (int il = 0; il < c.n_layers; ++il) {
    const LayerWeights& L = model.layer(il);
    rms_norm_rows(S.x.data(), B, d, L.attn_norm, c.rms_eps, S.xn.data());
    const MatmulOut qkv[] = {
        {&L.wq, S.q.data(), q_dim}, {&L.wk, S.k.data(), kv_dim}, {&L.wv, S.v.data(), kv_dim}};
    matmul_rows_shared_x(S.xn.data(), B, d, qkv);
    // The same per-row steps as Session::decode (SeqImpl::qkv's biases, q/k norms and RoPE at
    // this row's position; then append, attention, decode-time policy), on each sequence's own
    // cache and policy. Sequences are independent, so they run one per task: a compressed cache
    // is too small for the kernel to split one sequence's attention over the threads (one core
    // sat idle), and inside a task the kernel runs inline with the very same splits and merge
    // order, hence the same bits. Longest caches first, so that the region ends on short tasks.
    for (int b = 0; b < B; ++b) order[b] = {-static_cast<int64_t>(seq[b]->kv.layer(il).bytes()), b};
    std::sort(order.begin(), order.end());
    parallel_for(B,
                 [&](int64_t i) {
                   const int b = order[i].second;
                   float* qb = S.q.data() + b * q_dim;
                   float* kb = S.k.data() + b * kv_dim;
                   float* vb = S.v.data() + b * kv_dim;
                   seq[b]->finish_qkv_row(L, qb, kb, vb, pos[b]);
                   seq[b]->decode_layer_attention(il, kb, vb, qb, pos[b], reads_cache[b],
                                                  S.att.data() + b * q_dim);
                 },
                 {.grain = 1});
    // SeqImpl::attn_out_and_mlp over the B rows (elementwise steps per row, as for one).
    matmul_rows(S.att.data(), B, q_dim, L.wo, S.proj.data(), d);
    for (int b = 0; b < B; ++b) add_inplace(S.x.data() + b * d, S.proj.data() + b * d, d);
    rms_norm_rows(S.x.data(), B, d, L.ffn_norm, c.rms_eps, S.xn.data());
    const MatmulOut gate_up[] = {{&L.w_gate, S.gate.data(), c.d_ff},
                                 {&L.w_up, S.up.data(), c.d_ff}};
    matmul_rows_shared_x(S.xn.data(), B, d, gate_up);
    parallel_for(B, [&](int64_t b) {
      silu_mul(S.gate.data() + b * c.d_ff, S.up.data() + b * c.d_ff, c.d_ff);
    });
    matmul_rows(S.gate.data(), B, c.d_ff, L.w_down, S.proj.data(), d);
    for (int b = 0; b < B; ++b) add_inplace(S.x.data() + b * d, S.proj.data() + b * d, d);
  }
  rms_norm_rows(S.x.data(), B, d, model.out_norm(), c.rms_eps, S.xn.data());
  S.logits.resize(static_cast<size_t>(B) * c.n_vocab);  // [B, n_vocab]
  matmul_rows(S.xn.data(), B, d, model.lm_head(), S.logits.data(), c.n_vocab);
  const double elapsed = now_s() - t0;
  for (int b = 0; b < B; ++b) {
    SeqImpl& s = *seq[b];
    items[b].logits->assign(S.logits.begin() + static_cast<int64_t>(b) * c.n_vocab,
                            S.logits.begin() + static_cast<int64_t>(b + 1) * c.n_vocab);
    s.kv.set_next_pos(pos[b] + 1);
    s.timing.n_decoded += 1;
    s.timing.decode_s += elapsed;
  }
  return Status::ok();
}

// ---- stepped prefill ----

namespace {
// Thrown through Session::prefill (from a policy hook, outside any parallel region) to abandon a
// cancelled prefill; the session is discarded afterwards.
struct PrefillCancelled {};
}  // namespace

SteppedPrefill::SteppedPrefill(int rows_per_piece) : rows_per_piece_(std::max(1, rows_per_piece)) {
  // Kernel thread counts are per thread: the worker takes the caller's.
  threads_ = num_threads();
}

SteppedPrefill::~SteppedPrefill() {
  if (thread_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      cancelled_ = true;
      worker_turn_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
}

void SteppedPrefill::start(Session& session, std::vector<int32_t> tokens) {
  FKV_CHECK(!started_, "SteppedPrefill::start called twice");
  started_ = true;
  tokens_ = std::move(tokens);
  // The session keeps its own policy; the prefill pauses at the pass's layer boundaries, so no
  // policy hook is wrapped or forwarded.
  BatchAccess::impl(session).prefill_layer_hook = [this](int n_rows) {
    rows_in_piece_ += n_rows;
    if (rows_in_piece_ >= rows_per_piece_) yield_to_caller();
  };
  thread_ = std::thread([this, s = &session] { worker_main(s); });
}

void SteppedPrefill::worker_main(Session* session) {
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return worker_turn_; });
    if (cancelled_) {
      BatchAccess::impl(*session).prefill_layer_hook = nullptr;
      done_ = true;
      worker_turn_ = false;
      cv_.notify_all();
      return;
    }
  }
  set_num_threads(threads_);
  Status st = Status::ok();
  try {
    st = session->prefill(tokens_, logits_);
  } catch (const PrefillCancelled&) {
    st = Status::error("prefill cancelled");
  }
  BatchAccess::impl(*session).prefill_layer_hook = nullptr;
  std::lock_guard<std::mutex> lock(mu_);
  status_ = st;
  done_ = true;
  worker_turn_ = false;
  cv_.notify_all();
}

void SteppedPrefill::yield_to_caller() {
  std::unique_lock<std::mutex> lock(mu_);
  worker_turn_ = false;
  cv_.notify_all();
  cv_.wait(lock, [&] { return worker_turn_; });
  rows_in_piece_ = 0;
  if (cancelled_) throw PrefillCancelled{};
}

bool SteppedPrefill::run_piece() {
  FKV_CHECK(started_, "SteppedPrefill::run_piece before start");
  if (done_) return true;
  std::unique_lock<std::mutex> lock(mu_);
  rows_in_piece_ = 0;
  worker_turn_ = true;
  ++pieces_;
  cv_.notify_all();
  cv_.wait(lock, [&] { return !worker_turn_; });
  const bool finished = done_;
  lock.unlock();
  if (finished && thread_.joinable()) thread_.join();
  return finished;
}

// ---- admission bound ----

size_t kv_bytes_per_row(const ModelConfig& c, DType kv_dtype) {
  return static_cast<size_t>(c.n_layers) * c.n_kv_heads * 2 * dtype_row_bytes(kv_dtype, c.head_dim);
}

size_t worst_case_kv_bytes(const PolicyOptions& o, const ModelConfig& c, int n_prompt,
                           int max_new_tokens, DType kv_dtype) {
  const PolicyModelInfo model{c.model_name, c.n_layers, c.n_heads,
                              c.n_kv_heads, c.head_dim, c.n_ctx};
  const int64_t rows = max_kept_prompt_rows(o, model, n_prompt) + std::max(0, max_new_tokens);
  return static_cast<size_t>(rows) * kv_bytes_per_row(c, kv_dtype);
}

}  // namespace fkv
