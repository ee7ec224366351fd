#include "engine/engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>

#include "engine/session_impl.h"

#ifdef FKV_OPENMP
#include <omp.h>
#endif

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

Session::Session(const Model& model, KvPolicy& policy, const SessionOptions& opts)
    : impl_(std::make_unique<Impl>(model, policy, opts)) {}
Session::~Session() = default;

Status Session::prefill(std::span<const int32_t> tokens, std::vector<float>& logits) {
  return impl_->prefill(tokens, logits, false);
}
Status Session::prefill_shared(std::span<Session* const> sessions, std::span<const int32_t> tokens,
                               std::vector<float>& logits) {
  if (sessions.empty()) return Status::error("prefill_shared: no sessions");
  std::vector<Impl*> others;
  for (size_t i = 1; i < sessions.size(); ++i) others.push_back(sessions[i]->impl_.get());
  return sessions[0]->impl_->prefill_shared(tokens, others, logits);
}
Status Session::prefill_all_logits(std::span<const int32_t> tokens, std::vector<float>& logits) {
  return impl_->prefill(tokens, logits, true);
}
Status Session::decode(int32_t token, std::vector<float>& logits) {
  return impl_->decode(token, logits);
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
  for (int32_t t : tokens) FKV_RETURN_IF_ERROR(impl_->decode(t, logits));
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
