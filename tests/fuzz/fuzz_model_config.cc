// libFuzzer target: arbitrary bytes as config.json + generation_config.json (split at the first
// NUL byte). A parsed config must have passed validation: every field in range.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "model/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string all(reinterpret_cast<const char*>(data), size);
  const size_t nul = all.find('\0');
  const std::string config = all.substr(0, nul);
  auto c = fkv::parse_hf_config(config, "config.json");
  if (!c.has_value()) return 0;
  if (c->n_layers <= 0 || c->n_heads <= 0 || c->n_kv_heads <= 0 || c->head_dim <= 0 ||
      c->n_vocab <= 0 || c->n_ctx <= 0 || !(c->rms_eps > 0) || c->n_heads % c->n_kv_heads != 0) {
    std::abort();  // validation let an impossible shape through
  }
  if (nul != std::string::npos) {
    fkv::ModelConfig g = *c;
    if (fkv::apply_generation_config(all.substr(nul + 1), "generation_config.json", g).is_ok()) {
      for (int id : g.eos_token_ids)
        if (id < 0 || id >= g.n_vocab) std::abort();
    }
  }
  (void)fkv::rope_inv_freq(*c);
  return 0;
}
