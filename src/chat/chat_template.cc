#include "chat/chat_template.h"

#include "chat/jinja.h"

namespace fkv {

Expected<std::string> render_chat_template(const std::string& source,
                                           const std::vector<ChatMessage>& messages,
                                           const ChatRenderOptions& opts) {
  // The variables transformers' apply_chat_template passes: tools/documents default to None.
  nlohmann::ordered_json ctx = nlohmann::ordered_json::object();
  nlohmann::ordered_json msgs = nlohmann::ordered_json::array();
  for (const ChatMessage& m : messages) {
    nlohmann::ordered_json j = nlohmann::ordered_json::object();
    j["role"] = m.role;
    j["content"] = m.content;
    msgs.push_back(std::move(j));
  }
  ctx["messages"] = std::move(msgs);
  ctx["tools"] = nullptr;
  ctx["documents"] = nullptr;
  ctx["add_generation_prompt"] = opts.add_generation_prompt;
  ctx["bos_token"] = opts.bos_token;
  ctx["eos_token"] = opts.eos_token;
  if (!opts.extra_context.is_null()) {
    if (!opts.extra_context.is_object()) {
      return Status::error("chat template: extra_context must be a JSON object");
    }
    for (auto it = opts.extra_context.begin(); it != opts.extra_context.end(); ++it) {
      ctx[it.key()] = nlohmann::ordered_json::parse(it->dump());
    }
  }
  return render_jinja(source, ctx);
}

}  // namespace fkv
