#include "engine/engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>

#include "engine/session_impl.h"

namespace fkv {

std::string SelectionRecord::to_json() const {
  nlohmann::json j;
  j["method"] = method;
  j["n_prompt"] = n_prompt;
  j["layers"] = nlohmann::json::array();
  for (const auto& l : layers) {
    j["layers"].push_back({{"layer", l.layer}, {"n_in", l.n_in}, {"kept", l.kept}});
  }
  if (tsp) {
    j["tsp"] = {{"layer", tsp->layer}, {"positions", tsp->positions}};
  } else {
    j["tsp"] = nullptr;
  }
  return j.dump();
}

// An interruption (SessionOptions::interrupted) ends f() with an error and leaves each session of
// `all` refusing later calls.
template <class F>
Status Session::guard_interrupt(std::span<Impl* const> all, F&& f) {
  for (const Impl* s : all) {
    if (s->was_interrupted) {
      return Status::error(
          "this session was interrupted during an earlier call and its cache is incomplete; start "
          "a new session");
    }
  }
  try {
    return f();
  } catch (const Impl::Interrupted&) {
    for (Impl* s : all) s->was_interrupted = true;
    return Status::error("interrupted");
  }
}

Session::Session(const Model& model, KvPolicy& policy, const SessionOptions& opts)
    : impl_(std::make_unique<Impl>(model, policy, opts)) {}
Session::~Session() = default;

Status Session::prefill(std::span<const int32_t> tokens, std::vector<float>& logits) {
  Impl* const self[1] = {impl_.get()};
  return guard_interrupt(self, [&] { return impl_->prefill(tokens, logits, false); });
}
Status Session::prefill_shared(std::span<Session* const> sessions, std::span<const int32_t> tokens,
                               std::vector<float>& logits) {
  if (sessions.empty()) return Status::error("prefill_shared: no sessions");
  std::vector<Impl*> all, others;
  for (size_t i = 0; i < sessions.size(); ++i) {
    all.push_back(sessions[i]->impl_.get());
    if (i > 0) others.push_back(sessions[i]->impl_.get());
  }
  return guard_interrupt(
      all, [&] { return sessions[0]->impl_->prefill_shared(tokens, others, logits); });
}
Status Session::prefill_all_logits(std::span<const int32_t> tokens, std::vector<float>& logits) {
  Impl* const self[1] = {impl_.get()};
  return guard_interrupt(self, [&] { return impl_->prefill(tokens, logits, true); });
}
Status Session::decode(int32_t token, std::vector<float>& logits) {
  Impl* const self[1] = {impl_.get()};
  return guard_interrupt(self, [&] { return impl_->decode(token, logits); });
}
Status Session::extend(std::span<const int32_t> tokens, std::vector<float>& logits) {
  if (tokens.empty()) return Status::error("extend: no tokens given");
  if (!impl_->prefilled) return Status::error("extend before prefill");
  const ModelConfig& c = impl_->model.config();
  const long long end = static_cast<long long>(next_pos()) + static_cast<long long>(tokens.size());
  if (end > c.n_ctx) {
    return Status::error(
        strfmt("extending by %zu tokens at position %d exceeds the model's "
               "context length %d",
               tokens.size(), next_pos(), c.n_ctx));
  }
  // Checked up front so that a bad id leaves the cache as it was.
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= c.n_vocab) {
      return Status::error(
          strfmt("token id %d at extend position %zu is outside the vocabulary "
                 "[0, %d)",
                 tokens[i], i, c.n_vocab));
    }
  }
  Impl* const self[1] = {impl_.get()};
  return guard_interrupt(self, [&] {
    for (int32_t t : tokens) {
      impl_->poll_interrupt();
      FKV_RETURN_IF_ERROR(impl_->decode(t, logits));
    }
    return Status::ok();
  });
}
Status Session::fill_random(int depth, uint64_t seed) {
  Impl& s = *impl_;
  if (s.prefilled) return Status::error("session already holds a prompt; start a new session");
  const ModelConfig& c = s.model.config();
  if (depth < 1) return Status::error(strfmt("fill depth %d must be at least 1", depth));
  if (static_cast<long long>(depth) + s.opts.max_new_tokens > c.n_ctx) {
    return Status::error(strfmt("fill depth %d + %d new tokens exceeds the model's context %d",
                                depth, s.opts.max_new_tokens, c.n_ctx));
  }
  const int64_t q_dim = static_cast<int64_t>(c.n_heads) * c.head_dim;
  const int64_t kv_dim = static_cast<int64_t>(c.n_kv_heads) * c.head_dim;
  uint64_t state = seed * 0x9e3779b97f4a7c15ull + 1;
  // Values of unit scale, like post-RoPE keys; xorshift keeps 16K x 2048 floats a layer cheap.
  auto randomize = [&](std::vector<float>& buf, int64_t count) {
    buf.resize(count);
    for (int64_t i = 0; i < count; ++i) {
      state ^= state << 13;
      state ^= state >> 7;
      state ^= state << 17;
      buf[i] = static_cast<float>(static_cast<int64_t>(state >> 40) - (1ll << 23)) / (1 << 23);
    }
  };
  FKV_RETURN_IF_ERROR(s.check_kv_dtype());
  s.kv.reset(c.n_layers, c.n_kv_heads, c.head_dim, s.opts.kv_dtype);
  s.selection = SelectionRecord();
  s.selection.method = s.policy.name();
  s.selection.n_prompt = depth;
  s.policy.begin_prefill(s.info, depth);
  Rows rows;
  rows.pos.resize(depth);
  for (int i = 0; i < depth; ++i) rows.pos[i] = i;
  int32_t next_pos = depth;
  if (auto fl = s.policy.filter_layer()) {
    if (*fl < 0 || *fl >= c.n_layers) {
      return Status::error(strfmt("filter layer %d is out of range [0, %d)", *fl, c.n_layers));
    }
    randomize(s.q, depth * q_dim);
    randomize(s.k, depth * kv_dim);
    std::vector<int32_t> keep_tokens;
    s.policy.select_prompt(s.make_view(*fl, depth, rows), keep_tokens);
    if (keep_tokens.empty()) {
      return Status::error(strfmt("policy %s selected no prompt tokens", s.policy.name().c_str()));
    }
    // GemFilter's second pass renumbers the kept tokens 0..k-1.
    rows.pos.resize(keep_tokens.size());
    for (size_t i = 0; i < keep_tokens.size(); ++i) rows.pos[i] = static_cast<int32_t>(i);
    next_pos = static_cast<int32_t>(keep_tokens.size());
  }
  KeepLists keep;
  std::vector<int32_t> sel_rows;
  for (int il = 0; il < c.n_layers; ++il) {
    const int n = rows.n();
    randomize(s.q, n * q_dim);
    randomize(s.k, n * kv_dim);
    randomize(s.v, n * kv_dim);
    const LayerView lv = s.make_view(il, depth, rows);
    keep.clear();
    const bool compress = s.policy.select_kv(lv, keep);
    if (compress && keep.n_heads() != c.n_kv_heads) {
      return Status::error(strfmt("policy %s returned keep lists for %d heads at layer %d",
                                  s.policy.name().c_str(), keep.n_heads(), il));
    }
    s.kv.layer(il).write_prefill(s.k.data(), s.v.data(), kv_dim, rows.pos,
                                 compress ? &keep : nullptr, s.opts.max_new_tokens);
    SelectionRecord::Layer rec;
    rec.layer = il;
    rec.n_in = n;
    s.selection.layers.push_back(std::move(rec));
    sel_rows.clear();
    if (il + 1 < c.n_layers && s.policy.select_rows(lv, sel_rows)) {
      std::vector<int32_t> next(sel_rows.size());
      for (size_t i = 0; i < sel_rows.size(); ++i) {
        if (sel_rows[i] < 0 || sel_rows[i] >= n) {
          return Status::error(strfmt("policy %s selected invalid row %d at layer %d",
                                      s.policy.name().c_str(), sel_rows[i], il));
        }
        next[i] = rows.pos[sel_rows[i]];
      }
      rows.pos = std::move(next);
    }
  }
  s.kv.set_next_pos(next_pos);
  s.prefilled = true;
  s.timing = Timing();
  s.timing.n_prompt = depth;
  s.timing.kv_bytes_after_prefill = s.kv.bytes();
  return Status::ok();
}

std::vector<std::vector<std::vector<int32_t>>> Session::cache_positions() const {
  std::vector<std::vector<std::vector<int32_t>>> out;
  if (!impl_->prefilled) return out;
  const ModelConfig& c = impl_->model.config();
  out.resize(c.n_layers);
  for (int il = 0; il < c.n_layers; ++il) {
    for (int h = 0; h < c.n_kv_heads; ++h) {
      const HeadKv& head = impl_->kv.layer(il).head(h);
      out[il].emplace_back(head.pos(), head.pos() + head.len());
    }
  }
  return out;
}
int32_t Session::next_pos() const { return impl_->kv.next_pos(); }
size_t Session::kv_bytes() const { return impl_->kv.bytes(); }
const SelectionRecord& Session::selection() const { return impl_->selection; }
const Timing& Session::timing() const { return impl_->timing; }

}  // namespace fkv
