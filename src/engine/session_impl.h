// Internal to the engine module: the state behind a Session and the per-layer steps prefill and
// decode are made of, shared by engine.cc (one sequence) and any multi-sequence step.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <optional>

#include "core/thread_pool.h"
#include "engine/engine.h"
#include "kernels/attention.h"
#include "kernels/dispatch.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "kv/kv_cache.h"

namespace fkv {
namespace engine_detail {

inline double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Rows a prefill step carries: hidden states x [n_rows, d_model] and their original positions.
struct Rows {
  std::vector<float> x;      // [n_rows, d_model]
  std::vector<int32_t> pos;  // [n_rows] ascending original positions
  int n() const { return static_cast<int>(pos.size()); }
};

inline AttentionShape attention_shape(const ModelConfig& c, float scale) {
  AttentionShape s;
  s.n_heads = c.n_heads;
  s.n_kv_heads = c.n_kv_heads;
  s.head_dim = c.head_dim;
  s.scale = scale;
  s.sliding_window = c.sliding_window;
  return s;
}

inline void rms_norm_rows(const float* x, int n, int dim, const std::vector<float>& w, float eps,
                          float* y) {
  parallel_for(n, [&](int64_t r) { rms_norm_row(x + r * dim, w.data(), dim, eps, y + r * dim); },
               {.max_threads = static_cast<int64_t>(n) * dim > (1 << 16) ? 0 : 1});
}

}  // namespace engine_detail

using engine_detail::attention_shape;
using engine_detail::now_s;
using engine_detail::rms_norm_rows;
using engine_detail::Rows;

struct Session::Impl {
  const Model& model;
  KvPolicy& policy;
  SessionOptions opts;
  PolicyModelInfo info;
  KvCache kv;
  SelectionRecord selection;
  Timing timing;
  bool prefilled = false;
  // Called after each layer's attention in a prefill pass that applies the policy, with the rows
  // that entered the layer (SteppedPrefill pauses there). Never touches the computation.
  std::function<void(int n_rows)> prefill_layer_hook;
  // Thrown by poll_interrupt() when opts.interrupted says so; caught at the Session API, which
  // then refuses further calls (the cache is half-written).
  struct Interrupted {};
  bool was_interrupted = false;
  void poll_interrupt() const {
    if (opts.interrupted && opts.interrupted()) throw Interrupted{};
  }
  // poll_interrupt for a kernel's between-parts callback; empty when nothing can interrupt.
  std::function<void()> interrupt_poll() const {
    if (!opts.interrupted) return {};
    return [this] { poll_interrupt(); };
  }

  // Scratch, sized on demand and reused.
  std::vector<float> xn, q, k, v, att, proj, gate, up;
  std::vector<std::vector<float>> decode_k_f32, decode_v_f32;  // [n_kv_heads][len * head_dim]
  // decode_layer_attention's per-head cache views ([n_kv_heads] each) and keep lists.
  std::vector<const void*> head_k_view, head_v_view;
  std::vector<const int32_t*> head_pos_view;
  std::vector<int> head_len_view;
  KeepLists decode_keep;

  Impl(const Model& m, KvPolicy& p, const SessionOptions& o)
      : model(m), policy(p), opts(o), info(m.policy_info()) {}

  float scale() const { return 1.0f / std::sqrt(static_cast<float>(model.config().head_dim)); }

  void embed(std::span<const int32_t> tokens, std::vector<float>& x) {
    const int d = model.config().d_model;
    x.resize(tokens.size() * static_cast<size_t>(d));
    for (size_t i = 0; i < tokens.size(); ++i) {
      weight_row_to_f32(model.tok_embd(), tokens[i], x.data() + i * d);
    }
  }

  // Rows per chunk of the linear parts: opts.ubatch rounded up to whole GEMM x panels, so every
  // row takes the same kernel path (and gets the same bits) as in one unchunked product.
  int64_t chunk_rows() const {
    const int64_t ub = std::max(1, opts.ubatch);
    return (ub + kXPanel - 1) / kXPanel * kXPanel;
  }
  // Calls f(r0, nr) over [0, n) in chunks of chunk_rows(); a remainder shorter than one panel
  // joins the last chunk (a product of few rows would switch kernels, e.g. to 8-bit dots).
  template <class F>
  void for_each_chunk(int n, F&& f) const {
    const int64_t step = chunk_rows();
    for (int64_t r0 = 0; r0 < n;) {
      poll_interrupt();
      int64_t nr = std::min<int64_t>(step, n - r0);
      if (n - (r0 + nr) < kXPanel) nr = n - r0;
      f(static_cast<int>(r0), static_cast<int>(nr));
      r0 += nr;
    }
  }

  // Q/K/V of n rows of xn, with biases, per-head q/k norms (Qwen3) and RoPE at `pos`.
  void qkv(const LayerWeights& L, int n, std::span<const int32_t> pos) {
    const ModelConfig& c = model.config();
    q.resize(static_cast<size_t>(n) * c.n_heads * c.head_dim);
    k.resize(static_cast<size_t>(n) * c.n_kv_heads * c.head_dim);
    v.resize(static_cast<size_t>(n) * c.n_kv_heads * c.head_dim);
    qkv_rows(L, xn.data(), 0, n, pos);
  }

  // Prefill: Q/K/V of all n rows of x [n, d_model] in chunks (attn_norm applied per chunk into
  // xn, which stays [chunk, d_model]); q, k, v hold every row for attention and the policy.
  void qkv_chunked(const LayerWeights& L, const std::vector<float>& x, int n,
                   std::span<const int32_t> pos) {
    const ModelConfig& c = model.config();
    const int d = c.d_model;
    q.resize(static_cast<size_t>(n) * c.n_heads * c.head_dim);
    k.resize(static_cast<size_t>(n) * c.n_kv_heads * c.head_dim);
    v.resize(static_cast<size_t>(n) * c.n_kv_heads * c.head_dim);
    for_each_chunk(n, [&](int r0, int nr) {
      xn.resize(static_cast<size_t>(nr) * d);
      rms_norm_rows(x.data() + static_cast<int64_t>(r0) * d, nr, d, L.attn_norm, c.rms_eps,
                    xn.data());
      qkv_rows(L, xn.data(), r0, nr, pos.subspan(r0, nr));
    });
  }

  // The per-row part of Q/K/V after the projections, in place: biases, per-head q/k norms
  // (Qwen3), RoPE at position p. qr [n_heads * head_dim], kr and vr [n_kv_heads * head_dim].
  void finish_qkv_row(const LayerWeights& L, float* qr, float* kr, float* vr, int32_t p) const {
    const ModelConfig& c = model.config();
    const int64_t q_dim = static_cast<int64_t>(c.n_heads) * c.head_dim;
    const int64_t kv_dim = static_cast<int64_t>(c.n_kv_heads) * c.head_dim;
    if (!L.bq.empty()) {
      add_inplace(qr, L.bq.data(), q_dim);
      add_inplace(kr, L.bk.data(), kv_dim);
      add_inplace(vr, L.bv.data(), kv_dim);
    }
    if (!L.q_norm.empty()) {
      for (int h = 0; h < c.n_heads; ++h) {
        rms_norm_row(qr + h * c.head_dim, L.q_norm.data(), c.head_dim, c.rms_eps,
                     qr + h * c.head_dim);
      }
      for (int h = 0; h < c.n_kv_heads; ++h) {
        rms_norm_row(kr + h * c.head_dim, L.k_norm.data(), c.head_dim, c.rms_eps,
                     kr + h * c.head_dim);
      }
    }
    const std::vector<float>& inv_freq = model.rope_inv_freq();
    rope_qk_row(qr, c.n_heads, kr, c.n_kv_heads, c.head_dim, c.rot_dim, p, inv_freq.data(),
                c.rope_style);
  }

  // Q/K/V of rows [r0, r0 + n) from their normed input xin [n, d_model] into q, k, v (sized).
  void qkv_rows(const LayerWeights& L, const float* xin, int r0, int n,
                std::span<const int32_t> pos) {
    const ModelConfig& c = model.config();
    const int64_t q_dim = static_cast<int64_t>(c.n_heads) * c.head_dim;
    const int64_t kv_dim = static_cast<int64_t>(c.n_kv_heads) * c.head_dim;
    float* q0 = q.data() + r0 * q_dim;
    float* k0 = k.data() + r0 * kv_dim;
    float* v0 = v.data() + r0 * kv_dim;
    const MatmulOut qkv[] = {{&L.wq, q0, q_dim}, {&L.wk, k0, kv_dim}, {&L.wv, v0, kv_dim}};
    matmul_shared_x(xin, n, c.d_model, qkv);
    parallel_for(n,
                 [&](int64_t r) {
                   finish_qkv_row(L, q0 + r * q_dim, k0 + r * kv_dim, v0 + r * kv_dim, pos[r]);
                 },
                 {.max_threads = n * q_dim > (1 << 16) ? 0 : 1});
  }

  // x += Wo . att ; x += MLP(norm(x)), for n rows, in chunks of chunk_rows() rows so the
  // scratch (proj, xn [chunk, d_model], gate, up [chunk, d_ff]) does not grow with n.
  void attn_out_and_mlp(const LayerWeights& L, int n, std::vector<float>& x) {
    for_each_chunk(n, [&](int r0, int nr) { attn_out_and_mlp_rows(L, r0, nr, x); });
  }
  void attn_out_and_mlp_rows(const LayerWeights& L, int r0, int n, std::vector<float>& x) {
    const ModelConfig& c = model.config();
    const int64_t q_dim = static_cast<int64_t>(c.n_heads) * c.head_dim;
    const int d = c.d_model;
    float* xr = x.data() + static_cast<int64_t>(r0) * d;
    proj.resize(static_cast<size_t>(n) * d);
    matmul(att.data() + r0 * q_dim, n, q_dim, L.wo, proj.data(), d);
    add_inplace(xr, proj.data(), static_cast<int64_t>(n) * d);
    xn.resize(static_cast<size_t>(n) * d);
    rms_norm_rows(xr, n, d, L.ffn_norm, c.rms_eps, xn.data());
    gate.resize(static_cast<size_t>(n) * c.d_ff);
    up.resize(static_cast<size_t>(n) * c.d_ff);
    const MatmulOut gate_up[] = {{&L.w_gate, gate.data(), c.d_ff}, {&L.w_up, up.data(), c.d_ff}};
    matmul_shared_x(xn.data(), n, d, gate_up);
    silu_mul(gate.data(), up.data(), static_cast<int64_t>(n) * c.d_ff);
    matmul(gate.data(), n, c.d_ff, L.w_down, proj.data(), d);
    add_inplace(xr, proj.data(), static_cast<int64_t>(n) * d);
  }

  // Final norm + lm_head for rows [r0, r0 + n) of x; logits [n, n_vocab].
  void logits_of(const std::vector<float>& x, int r0, int n, std::vector<float>& logits) {
    const ModelConfig& c = model.config();
    const int d = c.d_model;
    std::vector<float> normed(static_cast<size_t>(n) * d);
    rms_norm_rows(x.data() + static_cast<int64_t>(r0) * d, n, d, model.out_norm(), c.rms_eps,
                  normed.data());
    logits.resize(static_cast<size_t>(n) * c.n_vocab);
    matmul(normed.data(), n, d, model.lm_head(), logits.data(), c.n_vocab);
  }

  struct PassOptions {
    bool apply_policy = true;
    int stop_layer = -1;  // GemFilter pass 1: stop after this layer
    std::vector<int32_t>* prompt_select = nullptr;
    const std::vector<int32_t>* orig_pos = nullptr;  // maps pass positions to prompt positions
    bool all_logits = false;
  };

  LayerView make_view(int il, int n_prompt, const Rows& rows) const {
    const ModelConfig& c = model.config();
    LayerView lv;
    lv.il = il;
    lv.model = &info;
    lv.n_prompt = n_prompt;
    lv.n_rows = rows.n();
    lv.pos = rows.pos;
    lv.q = q.data();
    lv.q_stride = static_cast<int64_t>(c.n_heads) * c.head_dim;
    lv.k = k.data();
    lv.k_stride = static_cast<int64_t>(c.n_kv_heads) * c.head_dim;
    lv.scale = scale();
    return lv;
  }

  // One prompt pass. `branches` are the sessions whose caches this pass fills (default: this
  // one). With several, the forward runs once here and every branch's policy selects its own
  // rows from the same layer view, so each cache equals the one its own pass would build; only
  // policies that never propagate a subset of rows (no TSP / PyramidInfer) can share a pass.
  Status run_pass(std::span<const int32_t> tokens, std::vector<int32_t> positions, int n_prompt,
                  const PassOptions& po, std::vector<float>& logits,
                  std::span<Impl* const> branches = {}) {
    const ModelConfig& c = model.config();
    const int d = c.d_model;
    Impl* const self_branch[1] = {this};
    if (branches.empty()) branches = self_branch;
    Rows rows;
    embed(tokens, rows.x);
    rows.pos = std::move(positions);
    auto to_prompt = [&](int32_t p) { return po.orig_pos ? (*po.orig_pos)[p] : p; };
    KeepLists keep;
    std::vector<int32_t> sel_rows;
    for (int il = 0; il < c.n_layers; ++il) {
      const LayerWeights& L = model.layer(il);
      const int n = rows.n();
      qkv_chunked(L, rows.x, n, rows.pos);
      poll_interrupt();
      att.resize(static_cast<size_t>(n) * c.n_heads * c.head_dim);
      // Causal by original position (and the sliding window, when the model has one).
      const int64_t q_dim = static_cast<int64_t>(c.n_heads) * c.head_dim;
      attention_prefill(attention_shape(c, scale()), q.data(), q_dim, k.data(), v.data(),
                        static_cast<int64_t>(c.n_kv_heads) * c.head_dim, rows.pos.data(), n,
                        att.data(), q_dim, interrupt_poll());
      const LayerView lv = make_view(il, n_prompt, rows);
      if (po.prompt_select != nullptr && il == po.stop_layer) {
        po.prompt_select->clear();
        policy.select_prompt(lv, *po.prompt_select);
        return Status::ok();
      }
      poll_interrupt();
      if (po.apply_policy && prefill_layer_hook) prefill_layer_hook(n);
      for (Impl* b : branches) {
        LayerView blv = lv;
        blv.model = &b->info;
        keep.clear();
        const bool compress = po.apply_policy && b->policy.select_kv(blv, keep);
        if (compress) {
          if (keep.n_heads() != c.n_kv_heads) {
            return Status::error(
                strfmt("policy %s returned keep lists for %d heads at layer %d, model "
                       "has %d KV heads",
                       b->policy.name().c_str(), keep.n_heads(), il, c.n_kv_heads));
          }
        }
        b->kv.layer(il).write_prefill(k.data(), v.data(),
                                      static_cast<int64_t>(c.n_kv_heads) * c.head_dim, rows.pos,
                                      compress ? &keep : nullptr, b->opts.max_new_tokens);
        SelectionRecord::Layer rec;
        rec.layer = il;
        rec.n_in = n;
        for (int h = 0; h < c.n_kv_heads; ++h) {
          const HeadKv& head = b->kv.layer(il).head(h);
          std::vector<int32_t> kept(head.len());
          for (int i = 0; i < head.len(); ++i) kept[i] = to_prompt(head.pos()[i]);
          rec.kept.push_back(std::move(kept));
        }
        b->selection.layers.push_back(std::move(rec));
      }
      if (branches.size() > 1 && po.apply_policy && il + 1 < c.n_layers) {
        for (Impl* b : branches) {
          sel_rows.clear();
          if (b->policy.select_rows(lv, sel_rows)) {
            return Status::error(
                strfmt("policy %s propagates a subset of rows at layer %d and "
                       "cannot share a prompt pass",
                       b->policy.name().c_str(), il));
          }
        }
      }
      attn_out_and_mlp(L, n, rows.x);
      sel_rows.clear();
      if (branches.size() == 1 && po.apply_policy && il + 1 < c.n_layers &&
          policy.select_rows(lv, sel_rows)) {
        if (sel_rows.empty() || sel_rows.back() != n - 1) {
          return Status::error(strfmt("policy %s must propagate the last row at layer %d",
                                      policy.name().c_str(), il));
        }
        for (size_t i = 0; i < sel_rows.size(); ++i) {
          if (sel_rows[i] < 0 || sel_rows[i] >= n || (i > 0 && sel_rows[i] <= sel_rows[i - 1])) {
            return Status::error(strfmt("policy %s selected invalid row %d at layer %d",
                                        policy.name().c_str(), sel_rows[i], il));
          }
        }
        Rows next;
        next.x.resize(sel_rows.size() * static_cast<size_t>(d));
        next.pos.resize(sel_rows.size());
        for (size_t i = 0; i < sel_rows.size(); ++i) {
          std::copy_n(rows.x.data() + static_cast<int64_t>(sel_rows[i]) * d, d,
                      next.x.data() + i * d);
          next.pos[i] = rows.pos[sel_rows[i]];
        }
        if (!selection.tsp) {
          SelectionRecord::Tsp tsp;
          tsp.layer = il;
          for (int32_t p : next.pos) tsp.positions.push_back(to_prompt(p));
          selection.tsp = std::move(tsp);
        }
        rows = std::move(next);
      }
    }
    if (po.all_logits) {
      logits_of(rows.x, 0, rows.n(), logits);
    } else {
      logits_of(rows.x, rows.n() - 1, 1, logits);
    }
    return Status::ok();
  }

  Status check_tokens(std::span<const int32_t> tokens) const {
    const ModelConfig& c = model.config();
    if (tokens.empty()) return Status::error("prompt is empty: at least one token is needed");
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (tokens[i] < 0 || tokens[i] >= c.n_vocab) {
        return Status::error(
            strfmt("token id %d at prompt position %zu is outside the vocabulary "
                   "[0, %d)",
                   tokens[i], i, c.n_vocab));
      }
    }
    const long long needed = static_cast<long long>(tokens.size()) + opts.max_new_tokens;
    if (needed > c.n_ctx) {
      return Status::error(
          strfmt("prompt of %zu tokens + %d new tokens exceeds the model's context "
                 "length %d",
                 tokens.size(), opts.max_new_tokens, c.n_ctx));
    }
    return Status::ok();
  }

  Status check_kv_dtype() const {
    if (!kv_dtype_supported(opts.kv_dtype)) {
      return Status::error(
          strfmt("KV cache dtype %s is not supported (f16, bf16, f32)", dtype_name(opts.kv_dtype)));
    }
    return Status::ok();
  }

  Status prefill(std::span<const int32_t> tokens, std::vector<float>& logits, bool all_logits) {
    if (prefilled) return Status::error("session already holds a prompt; start a new session");
    FKV_RETURN_IF_ERROR(check_kv_dtype());
    FKV_RETURN_IF_ERROR(check_tokens(tokens));
    const ModelConfig& c = model.config();
    const int n_prompt = static_cast<int>(tokens.size());
    const double t0 = now_s();
    kv.reset(c.n_layers, c.n_kv_heads, c.head_dim, opts.kv_dtype);
    selection = SelectionRecord();
    selection.method = policy.name();
    selection.n_prompt = n_prompt;
    policy.begin_prefill(info, n_prompt);
    std::vector<int32_t> positions(n_prompt);
    for (int i = 0; i < n_prompt; ++i) positions[i] = i;
    PassOptions po;
    po.all_logits = all_logits;
    int32_t next_pos = n_prompt;
    if (auto fl = all_logits ? std::optional<int>() : policy.filter_layer()) {
      if (*fl < 0 || *fl >= c.n_layers) {
        return Status::error(strfmt("filter layer %d is out of range [0, %d)", *fl, c.n_layers));
      }
      // GemFilter pass 1: layers [0, fl] on the whole prompt pick the tokens to keep.
      std::vector<int32_t> keep_tokens;
      PassOptions p1;
      p1.stop_layer = *fl;
      p1.prompt_select = &keep_tokens;
      std::vector<float> unused;
      FKV_RETURN_IF_ERROR(run_pass(tokens, positions, n_prompt, p1, unused));
      selection.layers.clear();
      for (size_t i = 0; i < keep_tokens.size(); ++i) {
        if (keep_tokens[i] < 0 || keep_tokens[i] >= n_prompt ||
            (i > 0 && keep_tokens[i] <= keep_tokens[i - 1])) {
          return Status::error(strfmt("policy %s selected invalid prompt token %d",
                                      policy.name().c_str(), keep_tokens[i]));
        }
      }
      if (keep_tokens.empty()) {
        return Status::error(strfmt("policy %s selected no prompt tokens", policy.name().c_str()));
      }
      // Pass 2: a fresh prefill of the selected tokens at positions 0..k-1.
      std::vector<int32_t> sub(keep_tokens.size());
      for (size_t i = 0; i < keep_tokens.size(); ++i) sub[i] = tokens[keep_tokens[i]];
      std::vector<int32_t> sub_pos(sub.size());
      for (size_t i = 0; i < sub.size(); ++i) sub_pos[i] = static_cast<int32_t>(i);
      po.orig_pos = &keep_tokens;
      FKV_RETURN_IF_ERROR(run_pass(sub, sub_pos, n_prompt, po, logits));
      next_pos = static_cast<int32_t>(sub.size());
    } else {
      po.apply_policy = !all_logits;
      FKV_RETURN_IF_ERROR(run_pass(tokens, positions, n_prompt, po, logits));
    }
    kv.set_next_pos(next_pos);
    prefilled = true;
    timing.n_prompt = n_prompt;
    timing.prefill_s = now_s() - t0;
    timing.kv_bytes_after_prefill = kv.bytes();
    return Status::ok();
  }

  // prefill() of the same prompt for this session and `others` with one forward pass (run_pass
  // with several branches).
  Status prefill_shared(std::span<const int32_t> tokens, std::span<Impl* const> others,
                        std::vector<float>& logits) {
    std::vector<Impl*> all = {this};
    all.insert(all.end(), others.begin(), others.end());
    for (size_t i = 0; i < all.size(); ++i) {
      Impl* b = all[i];
      if (std::find(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(i), b) !=
          all.begin() + static_cast<std::ptrdiff_t>(i)) {
        return Status::error("prefill_shared: a session is listed twice");
      }
      if (&b->model != &model) return Status::error("prefill_shared: sessions of different models");
      if (b->prefilled) return Status::error("session already holds a prompt; start a new session");
      if (b->policy.filter_layer()) {
        return Status::error(
            strfmt("policy %s re-prefills selected tokens and cannot share a "
                   "prompt pass",
                   b->policy.name().c_str()));
      }
      FKV_RETURN_IF_ERROR(b->check_tokens(tokens));
      FKV_RETURN_IF_ERROR(b->check_kv_dtype());
    }
    const ModelConfig& c = model.config();
    const int n_prompt = static_cast<int>(tokens.size());
    const double t0 = now_s();
    for (Impl* b : all) {
      b->kv.reset(c.n_layers, c.n_kv_heads, c.head_dim, b->opts.kv_dtype);
      b->selection = SelectionRecord();
      b->selection.method = b->policy.name();
      b->selection.n_prompt = n_prompt;
      b->policy.begin_prefill(b->info, n_prompt);
    }
    std::vector<int32_t> positions(n_prompt);
    for (int i = 0; i < n_prompt; ++i) positions[i] = i;
    PassOptions po;
    FKV_RETURN_IF_ERROR(run_pass(tokens, positions, n_prompt, po, logits, all));
    const double elapsed = now_s() - t0;
    for (Impl* b : all) {
      b->kv.set_next_pos(n_prompt);
      b->prefilled = true;
      b->timing.n_prompt = n_prompt;
      b->timing.prefill_s = elapsed;
      b->timing.kv_bytes_after_prefill = b->kv.bytes();
    }
    return Status::ok();
  }

  // One decoded row of layer il for this sequence: appends its K/V ([n_kv_heads * head_dim]
  // each) at position p, attends q ([n_heads * head_dim]) over each head's cache into att
  // ([n_heads * head_dim]) and lets the policy compact the cache (PyramidInfer). Shared by
  // decode() and the multi-sequence step (batch.cc), so both compute a row identically.
  void decode_layer_attention(int il, const float* k_row, const float* v_row, const float* q_row,
                              int32_t p, bool policy_reads_cache, float* att_out) {
    const ModelConfig& c = model.config();
    const int hd = c.head_dim;
    LayerKv& lkv = kv.layer(il);
    lkv.append(k_row, v_row, p);
    // Per-KV-head cache views for the attention kernel ([n_kv_heads] each), in the cache dtype.
    head_k_view.resize(c.n_kv_heads);
    head_v_view.resize(c.n_kv_heads);
    head_pos_view.resize(c.n_kv_heads);
    head_len_view.resize(c.n_kv_heads);
    for (int g = 0; g < c.n_kv_heads; ++g) {
      const HeadKv& head = lkv.head(g);
      head_k_view[g] = head.k_data();
      head_v_view[g] = head.v_data();
      head_pos_view[g] = head.pos();
      head_len_view[g] = head.len();
    }
    attention_decode_kv(attention_shape(c, scale()), kv.dtype(), q_row, head_k_view.data(),
                        head_v_view.data(), head_pos_view.data(), head_len_view.data(), p, att_out);
    DecodeView dv;
    dv.il = il;
    dv.model = &info;
    dv.pos = p;
    dv.step = timing.n_decoded;
    dv.q = q_row;
    dv.scale = scale();
    if (policy_reads_cache && kv.dtype() != DType::kF32) {
      decode_k_f32.resize(c.n_kv_heads);
      decode_v_f32.resize(c.n_kv_heads);
    }
    for (int h = 0; h < c.n_kv_heads; ++h) {
      const HeadKv& head = lkv.head(h);
      const float* hk = nullptr;
      const float* hv = nullptr;
      if (policy_reads_cache) {
        if (kv.dtype() == DType::kF32) {
          hk = head.k();
          hv = head.v();
        } else {
          // The policy scores the widened (f16/bf16-rounded) rows the attention read.
          decode_k_f32[h].resize(static_cast<size_t>(head.len()) * hd);
          decode_v_f32[h].resize(static_cast<size_t>(head.len()) * hd);
          head.k_to_f32(hd, decode_k_f32[h].data());
          head.v_to_f32(hd, decode_v_f32[h].data());
          hk = decode_k_f32[h].data();
          hv = decode_v_f32[h].data();
        }
      }
      dv.heads.push_back({head.len(), hk, hv, head.pos()});
    }
    decode_keep.clear();
    if (policy.on_decode(dv, decode_keep)) lkv.retain(decode_keep, opts.max_new_tokens);
  }

  Status decode(int32_t token, std::vector<float>& logits) {
    if (!prefilled) return Status::error("decode before prefill");
    const ModelConfig& c = model.config();
    if (token < 0 || token >= c.n_vocab) {
      return Status::error(
          strfmt("token id %d is outside the vocabulary [0, %d)", token, c.n_vocab));
    }
    if (kv.next_pos() >= c.n_ctx) {
      return Status::error(
          strfmt("position %d reaches the model's context length %d", kv.next_pos(), c.n_ctx));
    }
    const double t0 = now_s();
    const int d = c.d_model;
    const int hd = c.head_dim;
    const int32_t p = kv.next_pos();
    std::vector<float> x;
    const int32_t tok[1] = {token};
    embed(tok, x);
    const int32_t pos_arr[1] = {p};
    const bool policy_reads_cache = policy.reads_decode_cache(timing.n_decoded);
    for (int il = 0; il < c.n_layers; ++il) {
      const LayerWeights& L = model.layer(il);
      xn.resize(d);
      rms_norm_rows(x.data(), 1, d, L.attn_norm, c.rms_eps, xn.data());
      qkv(L, 1, pos_arr);
      att.resize(static_cast<size_t>(c.n_heads) * hd);
      decode_layer_attention(il, k.data(), v.data(), q.data(), p, policy_reads_cache, att.data());
      attn_out_and_mlp(L, 1, x);
    }
    logits_of(x, 0, 1, logits);
    kv.set_next_pos(p + 1);
    timing.n_decoded += 1;
    timing.decode_s += now_s() - t0;
    return Status::ok();
  }
};

}  // namespace fkv
