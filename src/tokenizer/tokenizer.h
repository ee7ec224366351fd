// Tokenizer: HF tokenizer.json (byte-level BPE, SentencePiece-style BPE), SentencePiece
// tokenizer.model and GGUF tokenizer.ggml.* metadata, all mapped onto one pipeline that mirrors
// HF `tokenizers`: added-token split -> normalizer -> pre-tokenizer -> BPE -> post-processor.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace fkv {

class GgufFile;
struct TokenizerImpl;

class Tokenizer {
 public:
  // tokenizer.json (+ optional tokenizer_config.json for bos/eos/add_bos_token/chat template).
  static Expected<Tokenizer> from_hf_json(const std::string& tokenizer_json_path,
                                          const std::string& tokenizer_config_path = "");
  static Expected<Tokenizer> from_hf_json_string(std::string_view tokenizer_json,
                                                 std::string_view tokenizer_config_json = "");
  // SentencePiece ModelProto (Llama-2 tokenizer.model). Behaves like HF LlamaTokenizerFast
  // (non-legacy): <s>/</s>/<unk> are split out of text, BOS added.
  static Expected<Tokenizer> from_sentencepiece_model(const std::string& tokenizer_model_path);
  static Expected<Tokenizer> from_sentencepiece_model_bytes(std::string_view bytes,
                                                            const std::string& name = "<memory>");
  // tokenizer.ggml.* metadata: model "llama" (SPM, scores) or "gpt2" (byte-level BPE + merges).
  static Expected<Tokenizer> from_gguf(const GgufFile& gguf);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = true) const;
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;
  // Raw bytes one token contributes to the output (may be partial UTF-8). Special/added tokens
  // give their content. Out-of-range ids give "".
  std::string token_bytes(int32_t id) const;
  // The vocabulary string of a token (e.g. "Ġhello", "▁the", "<0x0A>").
  const std::string& id_to_token(int32_t id) const;
  int32_t vocab_size() const;
  std::optional<int32_t> token_to_id(std::string_view token) const;
  int32_t bos_id() const;
  int32_t eos_id() const;
  const std::string& bos_token() const;
  const std::string& eos_token() const;
  bool add_bos() const;  // whether encode(..., true) prepends BOS
  bool is_special(int32_t id) const;
  bool is_end_of_generation(int32_t id) const;
  const std::vector<int32_t>& end_of_generation_ids() const;
  const std::string& chat_template() const;
  // Whether decode() strips one leading space from the first token (SentencePiece style); the
  // stream decoder needs it to match decode().
  bool strips_leading_space() const;

 private:
  Tokenizer();
  std::unique_ptr<TokenizerImpl> impl_;
  friend struct TokenizerBuilder;
};

// Streaming decoder: push ids one at a time; returns only complete UTF-8; flush() the rest.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok, bool skip_special_tokens = false);
  std::string push(int32_t id);
  std::string flush();

 private:
  const Tokenizer& tok_;
  bool skip_special_;
  bool first_ = true;
  std::string pending_;
};

}  // namespace fkv
