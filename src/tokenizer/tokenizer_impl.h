// Internal representation shared by the loaders (HF JSON, SentencePiece, GGUF) and the pipeline.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/status.h"
#include "tokenizer/tokenizer.h"

namespace fkv {

// PCRE2 regex (UTF + UCP), compiled once; matching is thread-safe (match data per call).
class Regex {
 public:
  static Expected<std::shared_ptr<Regex>> compile(const std::string& pattern);
  // Non-overlapping matches [begin, end) in byte offsets; empty matches are skipped.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;
  ~Regex();

 private:
  Regex() = default;
  void* code_ = nullptr;  // pcre2_code_8*
  bool jit_ = false;
};

std::string regex_escape(std::string_view literal);

enum class NormKind { kPrepend, kReplace, kNfc, kLowercase, kStrip, kCollapseSpaces };
struct NormStep {
  NormKind kind;
  std::string a, b;  // Prepend: a; Replace: a -> b (literal when re is null)
  std::shared_ptr<Regex> re;
  bool left = false, right = false;  // Strip
};

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };
enum class PrependScheme { kAlways, kFirst, kNever };
enum class PreKind { kSplit, kByteLevel, kMetaspace };
struct PreStep {
  PreKind kind;
  std::shared_ptr<Regex> re;  // Split; ByteLevel with use_regex
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
  bool add_prefix_space = false;  // ByteLevel
  std::string replacement;        // Metaspace
  PrependScheme prepend = PrependScheme::kAlways;
  bool split = true;  // Metaspace
};

enum class DecKind { kByteLevel, kReplace, kByteFallback, kFuse, kStrip, kMetaspace };
struct DecStep {
  DecKind kind;
  std::string a, b;  // Replace a -> b; Strip content a; Metaspace replacement a
  int start = 0, stop = 0;
  PrependScheme prepend = PrependScheme::kAlways;
};

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false, lstrip = false, rstrip = false, normalized = false, single_word = false;
  std::string pattern;  // what is matched: content, or normalize(content) when `normalized`
};

struct AddedIndex {
  std::vector<const AddedToken*> raw, norm;  // matched before / after normalization
  std::array<std::vector<const AddedToken*>, 256> raw_first, norm_first;  // longest first
};

struct TokenizerImpl {
  // Vocabulary (model vocab + added tokens).
  std::vector<std::string> tokens;         // id -> token string
  std::vector<std::string> decode_tokens;  // what decode() starts from (see finalize())
  std::unordered_map<std::string, int32_t> vocab;

  // BPE model. kRanks: HF merges (pair of ids -> rank, result). kScores: SentencePiece, the
  // merged string must be in the vocab and the highest score wins.
  enum class MergeMode { kRanks, kScores } mode = MergeMode::kRanks;
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges;
  std::vector<float> scores;
  std::vector<uint8_t> mergeable;  // kScores: piece may be produced by a merge
  bool byte_fallback = false;
  int32_t unk_id = -1;
  bool fuse_unk = false;
  bool ignore_merges = false;
  std::array<int32_t, 256> byte_ids{};  // <0xXX> ids or -1

  std::vector<NormStep> normalizers;
  std::vector<PreStep> pre;
  std::vector<DecStep> decoders;
  bool has_decoder = false;
  std::vector<AddedToken> added;
  std::vector<uint8_t> special;  // id -> special added token
  AddedIndex added_index;        // points into `added`; built by finalize()

  std::vector<int32_t> prefix_ids, suffix_ids;  // post-processor (single sequence)

  int32_t bos_id = -1, eos_id = -1;
  std::string bos_token, eos_token, chat_template;
  std::vector<int32_t> eog_ids;
  std::vector<std::string> raw_bytes;  // id -> bytes (token_bytes)
  bool strip_leading_space = false;
  // SentencePiece-style text (no pre-tokenizer, spaces as U+2581) may be cut before each "▁"
  // that follows another character when no vocab piece spans such a cut; this enables caching.
  bool split_at_metaspace = false;

  // Word cache for BPE (pre-token -> ids).
  mutable std::mutex cache_mu;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache;

  // Derived tables; call after the loader filled the fields above.
  Status finalize();
  void bpe_word(std::string_view word, std::vector<int32_t>& out) const;
  std::string normalize(std::string_view s) const;
  void pre_tokenize(std::string_view s, bool first_segment, std::vector<std::string>& out) const;
  std::string decode(std::span<const int32_t> ids, bool skip_special) const;
  void set_eog_defaults();
};

// Builders used by the loaders (defined in tokenizer.cc).
struct TokenizerBuilder {
  static Tokenizer make(std::unique_ptr<TokenizerImpl> impl);
};

// UTF-8 helpers.
size_t utf8_len(unsigned char lead);                       // 1..4, 1 for invalid leads
size_t utf8_valid_prefix(std::string_view s, bool final);  // bytes of complete valid UTF-8
std::string utf8_sanitize(std::string_view s);             // invalid bytes -> U+FFFD
const std::array<std::string, 256>& byte_to_unicode();     // GPT-2 byte-level alphabet
int byte_level_char_to_byte(uint32_t cp);                  // -1 if not in the alphabet
bool next_codepoint(std::string_view s, size_t& i, uint32_t& cp);
std::string nfc(std::string_view s);  // Unicode NFC

// Known pre-tokenizer regexes (GGUF tokenizer.ggml.pre and ByteLevel use_regex).
extern const char* const kGpt2Regex;
extern const char* const kLlama3Regex;
extern const char* const kQwen2Regex;

}  // namespace fkv
