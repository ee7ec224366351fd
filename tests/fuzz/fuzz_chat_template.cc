// libFuzzer target: arbitrary bytes as a Jinja chat template (before the first NUL byte) and a
// message text (after it). Parsing and rendering must return text or a Status, never crash.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "chat/chat_template.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string all(reinterpret_cast<const char*>(data), size);
  const size_t nul = all.find('\0');
  const std::string source = all.substr(0, nul);
  const std::string content = nul == std::string::npos ? "Hello" : all.substr(nul + 1);
  const std::vector<fkv::ChatMessage> messages = {
      {"system", "You are helpful."}, {"user", content}, {"assistant", "Hi!"}, {"user", content}};
  fkv::ChatRenderOptions opts;
  opts.bos_token = "<s>";
  opts.eos_token = "</s>";
  auto out = fkv::render_chat_template(source, messages, opts);
  opts.add_generation_prompt = false;
  auto again = fkv::render_chat_template(source, messages, opts);
  return (out.has_value() && again.has_value() && out->size() == static_cast<size_t>(-1)) ? 1 : 0;
}
