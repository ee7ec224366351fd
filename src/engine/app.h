// What the front-ends (CLI, bench, fidelity) share: model lookup by path or short name, the
// tokenizer that belongs to a model, and the generation loop with streaming.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "chat/chat_template.h"
#include "core/status.h"
#include "engine/engine.h"
#include "model/model.h"
#include "sampler/sampler.h"
#include "tokenizer/tokenizer.h"

namespace fkv {

// Checks the process's settings that the engine reads lazily (FASTKV_POOL_SPIN_US, the thread
// pool's spin time): front-ends call it first thing so a bad value is a clean error at start-up.
Status check_engine_environment();

// Folder of fetched models: $FASTKV_MODEL_DIR, else ~/.cache/fastkv/models.
std::string model_cache_dir();
// A path is returned as is; a known short name ("smollm2-135m-instruct",
// "qwen2.5-coder-1.5b-instruct") resolves to its file. Errors say how to fetch a missing model.
Expected<std::string> resolve_model_path(const std::string& name_or_path);
std::vector<std::string> known_model_names();

// tokenizer.json (+ tokenizer_config.json) or tokenizer.model beside an HF model; the embedded
// tokenizer of a GGUF file.
Expected<Tokenizer> load_tokenizer_for(const Model& model);

// How a prompt text becomes token ids: as is (with BOS/special tokens), or as chat messages
// through the model's chat template (or `chat_template`, a template source that overrides it).
struct PromptOptions {
  bool chat = false;
  std::string system;         // system message with chat (empty: none)
  std::string chat_template;  // template source; empty: the model's own
};
// Renders messages through the template of `tok` (or `template_override`); errors name the
// template and the model when there is none.
Expected<std::string> render_chat(const Tokenizer& tok, const std::vector<ChatMessage>& messages,
                                  const std::string& template_override,
                                  bool add_generation_prompt = true);
// Ids of `text` under `opts`. With chat the template writes BOS itself (as apply_chat_template
// does), so no special tokens are added. An empty result starts from BOS when the tokenizer has
// one and is an error otherwise.
Expected<std::vector<int32_t>> encode_prompt(const Tokenizer& tok, const std::string& text,
                                             const PromptOptions& opts);
// End-of-generation ids: the tokenizer's and the config's eos ids.
std::vector<int32_t> stop_ids_for(const Tokenizer& tok, const ModelConfig& config);

struct GenerationRequest {
  std::vector<int32_t> prompt;
  int max_new_tokens = 128;
  SamplerConfig sampler;
  std::vector<int32_t> stop_ids;  // end-of-generation ids
};
struct GenerationResult {
  std::vector<int32_t> tokens;  // generated ids (the stop id is not included)
  bool stopped_on_eos = false;
};
// Prefill + decode loop. on_token is called as each token arrives; returning false stops.
Expected<GenerationResult> generate(Session& session, const GenerationRequest& req,
                                    const std::function<bool(int32_t)>& on_token);

}  // namespace fkv
