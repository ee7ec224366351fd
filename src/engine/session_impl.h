// Internal to the engine module: the state behind a Session and the per-layer steps prefill and
// decode are made of, shared by engine.cc (one sequence) and any multi-sequence step.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>

#include "engine/engine.h"
#include "kernels/attention.h"
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
#pragma omp parallel for schedule(static) if (static_cast <int64_t>(n) * dim > (1 << 16))
  for (int r = 0; r < n; ++r) {
    rms_norm_row(x + static_cast<int64_t>(r) * dim, w.data(), dim, eps,
                 y + static_cast<int64_t>(r) * dim);
  }
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

  // Scratch, sized on demand and reused.
  std::vector<float> xn, q, k, v, att, proj, gate, up;

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

  // Q/K/V of n rows of xn, with biases, per-head q/k norms (Qwen3) and RoPE at `pos`.
  void qkv(const LayerWeights& L, int n, std::span<const int32_t> pos) {
    const ModelConfig& c = model.config();
    const int64_t q_dim = static_cast<int64_t>(c.n_heads) * c.head_dim;
    const int64_t kv_dim = static_cast<int64_t>(c.n_kv_heads) * c.head_dim;
    q.resize(n * q_dim);
    k.resize(n * kv_dim);
    v.resize(n * kv_dim);
    matmul(xn.data(), n, c.d_model, L.wq, q.data(), q_dim);
    matmul(xn.data(), n, c.d_model, L.wk, k.data(), kv_dim);
    matmul(xn.data(), n, c.d_model, L.wv, v.data(), kv_dim);
    const std::vector<float>& inv_freq = model.rope_inv_freq();
#pragma omp parallel for schedule(static) if (n * q_dim > (1 << 16))
    for (int r = 0; r < n; ++r) {
      float* qr = q.data() + r * q_dim;
      float* kr = k.data() + r * kv_dim;
      float* vr = v.data() + r * kv_dim;
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
      rope_row(qr, c.n_heads, c.head_dim, c.rot_dim, pos[r], inv_freq.data(), c.rope_style);
      rope_row(kr, c.n_kv_heads, c.head_dim, c.rot_dim, pos[r], inv_freq.data(), c.rope_style);
    }
  }

  // x += Wo . att ; x += MLP(norm(x)), for n rows.
  void attn_out_and_mlp(const LayerWeights& L, int n, std::vector<float>& x) {
    const ModelConfig& c = model.config();
    const int64_t q_dim = static_cast<int64_t>(c.n_heads) * c.head_dim;
    const int d = c.d_model;
    proj.resize(static_cast<size_t>(n) * d);
    matmul(att.data(), n, q_dim, L.wo, proj.data(), d);
    add_inplace(x.data(), proj.data(), static_cast<int64_t>(n) * d);
    xn.resize(static_cast<size_t>(n) * d);
    rms_norm_rows(x.data(), n, d, L.ffn_norm, c.rms_eps, xn.data());
    gate.resize(static_cast<size_t>(n) * c.d_ff);
    up.resize(static_cast<size_t>(n) * c.d_ff);
    matmul(xn.data(), n, d, L.w_gate, gate.data(), c.d_ff);
    matmul(xn.data(), n, d, L.w_up, up.data(), c.d_ff);
    silu_mul(gate.data(), up.data(), static_cast<int64_t>(n) * c.d_ff);
    matmul(gate.data(), n, c.d_ff, L.w_down, proj.data(), d);
    add_inplace(x.data(), proj.data(), static_cast<int64_t>(n) * d);
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
      xn.resize(static_cast<size_t>(n) * d);
      rms_norm_rows(rows.x.data(), n, d, L.attn_norm, c.rms_eps, xn.data());
      qkv(L, n, rows.pos);
      att.resize(static_cast<size_t>(n) * c.n_heads * c.head_dim);
      // Causal by original position (and the sliding window, when the model has one).
      const int64_t q_dim = static_cast<int64_t>(c.n_heads) * c.head_dim;
      attention_prefill(attention_shape(c, scale()), q.data(), q_dim, k.data(), v.data(),
                        static_cast<int64_t>(c.n_kv_heads) * c.head_dim, rows.pos.data(), n,
                        att.data(), q_dim);
      const LayerView lv = make_view(il, n_prompt, rows);
      if (po.prompt_select != nullptr && il == po.stop_layer) {
        po.prompt_select->clear();
        policy.select_prompt(lv, *po.prompt_select);
        return Status::ok();
      }
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

  Status prefill(std::span<const int32_t> tokens, std::vector<float>& logits, bool all_logits) {
    if (prefilled) return Status::error("session already holds a prompt; start a new session");
    FKV_RETURN_IF_ERROR(check_tokens(tokens));
    const ModelConfig& c = model.config();
    const int n_prompt = static_cast<int>(tokens.size());
    const double t0 = now_s();
    kv.reset(c.n_layers, c.n_kv_heads, c.head_dim);
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
    }
    const ModelConfig& c = model.config();
    const int n_prompt = static_cast<int>(tokens.size());
    const double t0 = now_s();
    for (Impl* b : all) {
      b->kv.reset(c.n_layers, c.n_kv_heads, c.head_dim);
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
    KeepLists keep;
    // Per-KV-head cache views for the attention kernel ([n_kv_heads] each).
    std::vector<const float*> head_k(c.n_kv_heads), head_v(c.n_kv_heads);
    std::vector<const int32_t*> head_pos(c.n_kv_heads);
    std::vector<int> head_len(c.n_kv_heads);
    for (int il = 0; il < c.n_layers; ++il) {
      const LayerWeights& L = model.layer(il);
      xn.resize(d);
      rms_norm_rows(x.data(), 1, d, L.attn_norm, c.rms_eps, xn.data());
      qkv(L, 1, pos_arr);
      LayerKv& lkv = kv.layer(il);
      lkv.append(k.data(), v.data(), p);
      att.resize(static_cast<size_t>(c.n_heads) * hd);
      for (int g = 0; g < c.n_kv_heads; ++g) {
        const HeadKv& head = lkv.head(g);
        head_k[g] = head.k();
        head_v[g] = head.v();
        head_pos[g] = head.pos();
        head_len[g] = head.len();
      }
      attention_decode(attention_shape(c, scale()), q.data(), head_k.data(), head_v.data(),
                       head_pos.data(), head_len.data(), p, att.data());
      DecodeView dv;
      dv.il = il;
      dv.model = &info;
      dv.pos = p;
      dv.step = timing.n_decoded;
      dv.q = q.data();
      dv.scale = scale();
      for (int h = 0; h < c.n_kv_heads; ++h) {
        const HeadKv& head = lkv.head(h);
        dv.heads.push_back({head.len(), head.k(), head.v(), head.pos()});
      }
      keep.clear();
      if (policy.on_decode(dv, keep)) lkv.retain(keep, opts.max_new_tokens);
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
