#include "engine/app.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>

#include "core/thread_pool.h"

namespace fkv {
namespace fs = std::filesystem;

namespace {
// Short names -> file name in the model cache (fetched by tools/scripts/fetch_models.py).
const std::map<std::string, std::string>& model_table() {
  static const std::map<std::string, std::string> table = {
      {"smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf"},
      {"qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"},
  };
  return table;
}
}  // namespace

Status check_engine_environment() {
  const Expected<int> spin = pool_spin_us_from_env();
  return spin ? Status::ok() : Status::error(spin.error());
}

std::string model_cache_dir() {
  if (const char* dir = std::getenv("FASTKV_MODEL_DIR"); dir != nullptr && *dir != '\0') return dir;
  const char* home = std::getenv("HOME");
  return (fs::path(home ? home : ".") / ".cache" / "fastkv" / "models").string();
}

std::vector<std::string> known_model_names() {
  std::vector<std::string> names;
  for (const auto& [name, file] : model_table()) names.push_back(name);
  return names;
}

Expected<std::string> resolve_model_path(const std::string& name) {
  std::error_code ec;
  if (fs::exists(name, ec)) return name;
  auto it = model_table().find(name);
  if (it == model_table().end()) {
    std::string known;
    for (const auto& n : known_model_names()) known += (known.empty() ? "" : ", ") + n;
    return Status::error(
        strfmt("model '%s' is neither an existing path nor a known model name (%s)", name.c_str(),
               known.c_str()));
  }
  const std::string path = (fs::path(model_cache_dir()) / it->second).string();
  if (!fs::exists(path, ec)) {
    return Status::error(
        strfmt("model '%s' is not in the model cache (%s); fetch it with: python3 "
               "tools/scripts/fetch_models.py %s",
               name.c_str(), path.c_str(), name.c_str()));
  }
  return path;
}

Expected<Tokenizer> load_tokenizer_for(const Model& model) {
  if (model.is_gguf()) return Tokenizer::from_gguf(*model.gguf());
  const fs::path dir(model.path());
  if (fs::exists(dir / "tokenizer.json")) {
    const fs::path cfg = dir / "tokenizer_config.json";
    return Tokenizer::from_hf_json((dir / "tokenizer.json").string(),
                                   fs::exists(cfg) ? cfg.string() : std::string());
  }
  if (fs::exists(dir / "tokenizer.model")) {
    return Tokenizer::from_sentencepiece_model((dir / "tokenizer.model").string());
  }
  return Status::error(
      strfmt("%s: no tokenizer.json or tokenizer.model next to the model", model.path().c_str()));
}

Expected<std::string> render_chat(const Tokenizer& tok, const std::vector<ChatMessage>& messages,
                                  const std::string& template_override,
                                  bool add_generation_prompt) {
  const std::string tmpl = template_override.empty() ? tok.chat_template() : template_override;
  if (tmpl.empty()) {
    return Status::error(
        "the model has no chat template; give one (generate: --chat-template FILE)");
  }
  ChatRenderOptions ro;
  ro.add_generation_prompt = add_generation_prompt;
  ro.bos_token = tok.bos_token();
  ro.eos_token = tok.eos_token();
  auto rendered = render_chat_template(tmpl, messages, ro);
  if (!rendered) return Status::error("chat template: " + rendered.error());
  return std::move(rendered.value());
}

Expected<std::vector<int32_t>> encode_prompt(const Tokenizer& tok, const std::string& text,
                                             const PromptOptions& opts) {
  std::vector<int32_t> ids;
  if (opts.chat) {
    std::vector<ChatMessage> msgs;
    if (!opts.system.empty()) msgs.push_back({"system", opts.system});
    msgs.push_back({"user", text});
    auto rendered = render_chat(tok, msgs, opts.chat_template);
    if (!rendered) return rendered.status();
    ids = tok.encode(*rendered, /*add_special_tokens=*/false);
  } else {
    ids = tok.encode(text, /*add_special_tokens=*/true);
  }
  if (ids.empty()) {
    if (tok.bos_id() < 0) return Status::error("the prompt encodes to no tokens");
    ids.push_back(tok.bos_id());
  }
  return ids;
}

std::vector<int32_t> stop_ids_for(const Tokenizer& tok, const ModelConfig& config) {
  std::vector<int32_t> ids;
  for (int32_t id : tok.end_of_generation_ids()) ids.push_back(id);
  for (int id : config.eos_token_ids)
    if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
  return ids;
}

Expected<GenerationResult> generate(Session& session, const GenerationRequest& req,
                                    const std::function<bool(int32_t)>& on_token) {
  FKV_RETURN_IF_ERROR(validate_sampler_config(req.sampler));
  Sampler sampler(req.sampler);
  GenerationResult result;
  std::vector<float> logits;
  FKV_RETURN_IF_ERROR(session.prefill(req.prompt, logits));
  for (int step = 0; step < req.max_new_tokens; ++step) {
    const int32_t token = sampler.sample(logits);
    if (std::find(req.stop_ids.begin(), req.stop_ids.end(), token) != req.stop_ids.end()) {
      result.stopped_on_eos = true;
      break;
    }
    result.tokens.push_back(token);
    if (on_token && !on_token(token)) break;
    if (step + 1 == req.max_new_tokens) break;  // no logits needed after the last token
    FKV_RETURN_IF_ERROR(session.decode(token, logits));
  }
  return result;
}

}  // namespace fkv
