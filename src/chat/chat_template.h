// Chat templates: render a conversation with a Hugging Face Jinja chat template, as
// transformers' apply_chat_template(tokenize=False) does.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/status.h"

namespace fkv {

struct ChatMessage {
  std::string role;
  std::string content;
};

struct ChatRenderOptions {
  bool add_generation_prompt = true;
  std::string bos_token;
  std::string eos_token;
  // Extra template variables, e.g. {"enable_thinking": false}. Overrides the defaults above.
  nlohmann::json extra_context;
};

// Renders `source` (a Jinja chat template) with messages, add_generation_prompt, bos_token,
// eos_token, tools = none, documents = none and extra_context. Errors (syntax error with
// line/col, unsupported construct named, raise_exception message) come back as a Status.
Expected<std::string> render_chat_template(const std::string& source,
                                           const std::vector<ChatMessage>& messages,
                                           const ChatRenderOptions& opts);

}  // namespace fkv
