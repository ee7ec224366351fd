// libFuzzer target: arbitrary bytes as tokenizer.json; a loaded tokenizer must encode/decode.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view js(reinterpret_cast<const char*>(data), size);
  auto tok = fkv::Tokenizer::from_hf_json_string(js);
  if (!tok.has_value()) return 0;
  const char* text = "Hello, wörld! 123 <s> <|eot_id|>  \n\t\xF0\x9F\x98\x80 \xFF";
  auto ids = tok->encode(text, true);
  std::string out = tok->decode(ids, false);
  out += tok->decode(ids, true);
  fkv::StreamDecoder sd(*tok);
  for (int32_t id : ids) out += sd.push(id);
  out += sd.flush();
  (void)tok->token_bytes(0);
  (void)tok->token_to_id("a");
  return out.size() == static_cast<size_t>(-1);
}
