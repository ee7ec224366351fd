// SentencePiece ModelProto (minimal protobuf reader) and GGUF tokenizer.ggml.* -> TokenizerImpl.
#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/file_io.h"
#include "core/utf8.h"
#include "io/gguf.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_impl.h"

namespace fkv {
namespace {

const char* const kSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's visible space

// SentencePiece piece types (also GGUF token_type).
enum PieceType {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6
};

// Llama-2 / llama.cpp SPM pipeline: "▁" prepended to every text segment, spaces -> "▁",
// BPE by piece score, byte fallback; decode reverses it and strips the first leading space.
void spm_pipeline(TokenizerImpl& m, bool add_dummy_prefix, bool remove_extra_ws) {
  m.mode = TokenizerImpl::MergeMode::kScores;
  m.byte_fallback = true;
  if (remove_extra_ws) m.normalizers.push_back({NormKind::kCollapseSpaces, "", "", nullptr});
  if (add_dummy_prefix) m.normalizers.push_back({NormKind::kPrepend, kSpace, "", nullptr});
  m.normalizers.push_back({NormKind::kReplace, " ", kSpace, nullptr});
  m.has_decoder = true;
  m.decoders.push_back({DecKind::kReplace, kSpace, " "});
  m.decoders.push_back({DecKind::kByteFallback, "", ""});
  m.decoders.push_back({DecKind::kFuse, "", ""});
  if (add_dummy_prefix) {
    DecStep s{DecKind::kStrip, " ", ""};
    s.start = 1;
    m.decoders.push_back(s);
  }
}

void add_typed_tokens(TokenizerImpl& m, const std::vector<int>& types) {
  m.mergeable.assign(m.tokens.size(), 1);
  for (size_t id = 0; id < m.tokens.size(); ++id) {
    int t = id < types.size() ? types[id] : kNormal;
    if (t != kNormal && t != kUserDefined) m.mergeable[id] = 0;
    if (t == kUnknown && m.unk_id < 0) m.unk_id = static_cast<int32_t>(id);
    // Control and user-defined pieces are matched in text before BPE, like HF added tokens.
    if (t == kControl || t == kUserDefined || t == kUnknown) {
      AddedToken a;
      a.id = static_cast<int32_t>(id);
      a.content = m.tokens[id];
      a.special = t != kUserDefined;
      m.added.push_back(std::move(a));
    }
  }
}

// --- protobuf wire format ----------------------------------------------------------------------
struct Reader {
  const uint8_t* p;
  const uint8_t* end;
  bool ok = true;
  bool done() const { return p >= end || !ok; }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p >= end) {
        ok = false;
        return 0;
      }
      uint8_t b = *p++;
      v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    ok = false;
    return 0;
  }
  std::string_view bytes() {
    uint64_t n = varint();
    if (!ok || n > static_cast<uint64_t>(end - p)) {
      ok = false;
      return {};
    }
    std::string_view s(reinterpret_cast<const char*>(p), n);
    p += n;
    return s;
  }
  uint32_t fixed32() {
    if (end - p < 4) {
      ok = false;
      return 0;
    }
    uint32_t v;
    memcpy(&v, p, 4);
    p += 4;
    return v;
  }
  void skip(int wire) {
    switch (wire) {
      case 0:
        varint();
        break;
      case 1:
        if (end - p < 8)
          ok = false;
        else
          p += 8;
        break;
      case 2:
        bytes();
        break;
      case 5:
        fixed32();
        break;
      default:
        ok = false;
    }
  }
};

Reader sub(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()),
          reinterpret_cast<const uint8_t*>(s.data()) + s.size()};
}

}  // namespace

Expected<Tokenizer> Tokenizer::from_sentencepiece_model_bytes(std::string_view bytes,
                                                              const std::string& name) {
  auto m = std::make_unique<TokenizerImpl>();
  std::vector<int> types;
  int model_type = 1;  // UNIGRAM is the proto default
  bool add_dummy_prefix = true, remove_extra_ws = true;
  int64_t unk_id = 0, bos_id = 1, eos_id = 2;
  Reader r = sub(bytes);
  while (!r.done()) {
    uint64_t key = r.varint();
    int field = static_cast<int>(key >> 3), wire = static_cast<int>(key & 7);
    if (field == 1 && wire == 2) {  // SentencePiece
      Reader p = sub(r.bytes());
      std::string piece;
      float score = 0;
      int type = kNormal;
      while (!p.done()) {
        uint64_t k = p.varint();
        int f = static_cast<int>(k >> 3), w = static_cast<int>(k & 7);
        if (f == 1 && w == 2) {
          piece = std::string(p.bytes());
        } else if (f == 2 && w == 5) {
          uint32_t u = p.fixed32();
          memcpy(&score, &u, 4);
        } else if (f == 3 && w == 0) {
          type = static_cast<int>(p.varint());
        } else {
          p.skip(w);
        }
      }
      if (!p.ok)
        return Status::error(strfmt("%s: corrupt piece %zu", name.c_str(), m->tokens.size()));
      m->vocab.emplace(piece, static_cast<int32_t>(m->tokens.size()));
      m->tokens.push_back(std::move(piece));
      m->scores.push_back(score);
      types.push_back(type);
    } else if (field == 2 && wire == 2) {  // TrainerSpec
      Reader t = sub(r.bytes());
      while (!t.done()) {
        uint64_t k = t.varint();
        int f = static_cast<int>(k >> 3), w = static_cast<int>(k & 7);
        if (w != 0) {
          t.skip(w);
          continue;
        }
        int64_t v = static_cast<int64_t>(t.varint());
        if (f == 3) model_type = static_cast<int>(v);
        if (f == 40) unk_id = static_cast<int32_t>(v);
        if (f == 41) bos_id = static_cast<int32_t>(v);
        if (f == 42) eos_id = static_cast<int32_t>(v);
      }
      if (!t.ok) return Status::error(strfmt("%s: corrupt trainer_spec", name.c_str()));
    } else if (field == 3 && wire == 2) {  // NormalizerSpec
      Reader n = sub(r.bytes());
      while (!n.done()) {
        uint64_t k = n.varint();
        int f = static_cast<int>(k >> 3), w = static_cast<int>(k & 7);
        if (w != 0) {
          n.skip(w);
          continue;
        }
        uint64_t v = n.varint();
        if (f == 3) add_dummy_prefix = v != 0;
        if (f == 4) remove_extra_ws = v != 0;
      }
      if (!n.ok) return Status::error(strfmt("%s: corrupt normalizer_spec", name.c_str()));
    } else {
      r.skip(wire);
    }
  }
  if (!r.ok)
    return Status::error(strfmt("%s: not a SentencePiece model (bad protobuf)", name.c_str()));
  if (m->tokens.empty()) return Status::error(strfmt("%s: no pieces", name.c_str()));
  if (model_type != 2)
    return Status::error(strfmt("%s: trainer_spec.model_type %d unsupported (only BPE = 2)",
                                name.c_str(), model_type));
  spm_pipeline(*m, add_dummy_prefix, remove_extra_ws);
  auto n = static_cast<int64_t>(m->tokens.size());
  m->unk_id = unk_id >= 0 && unk_id < n ? static_cast<int32_t>(unk_id) : -1;
  add_typed_tokens(*m, types);
  m->bos_id = bos_id >= 0 && bos_id < n ? static_cast<int32_t>(bos_id) : -1;
  m->eos_id = eos_id >= 0 && eos_id < n ? static_cast<int32_t>(eos_id) : -1;
  if (m->bos_id >= 0) {
    m->bos_token = m->tokens[m->bos_id];
    m->prefix_ids.push_back(m->bos_id);  // LlamaTokenizer: add_bos_token = true
  }
  if (m->eos_id >= 0) m->eos_token = m->tokens[m->eos_id];
  FKV_RETURN_IF_ERROR(m->finalize());
  m->set_eog_defaults();
  return TokenizerBuilder::make(std::move(m));
}

Expected<Tokenizer> Tokenizer::from_sentencepiece_model(const std::string& path) {
  auto bytes = read_text_file(path, "tokenizer.model", /*allow_empty=*/false);
  if (!bytes) return bytes.status();
  return from_sentencepiece_model_bytes(*bytes, path);
}

// --- GGUF ---------------------------------------------------------------------------------------
Expected<Tokenizer> Tokenizer::from_gguf(const GgufFile& gguf) {
  const std::string& path = gguf.path();
  auto model = gguf.get_string("tokenizer.ggml.model");
  if (!model) return model.status();
  auto toks = gguf.get_string_array("tokenizer.ggml.tokens");
  if (!toks) return toks.status();
  auto m = std::make_unique<TokenizerImpl>();
  m->tokens = std::move(*toks);
  auto n = static_cast<int64_t>(m->tokens.size());
  m->vocab.reserve(m->tokens.size());
  for (size_t i = 0; i < m->tokens.size(); ++i)
    m->vocab.emplace(m->tokens[i], static_cast<int32_t>(i));
  std::vector<int> types;
  if (gguf.has("tokenizer.ggml.token_type")) {
    auto tt = gguf.get_int_array("tokenizer.ggml.token_type");
    if (!tt) return tt.status();
    if (static_cast<int64_t>(tt->size()) != n)
      return Status::error(strfmt("%s: tokenizer.ggml.token_type has %zu entries, tokens has %lld",
                                  path.c_str(), tt->size(), static_cast<long long>(n)));
    for (int64_t t : *tt) types.push_back(static_cast<int>(t));
  }
  // A special-token id the file names must exist: silently dropping BOS changes every output.
  Status id_error = Status::ok();
  auto opt_id = [&](const char* key) -> int32_t {
    if (!gguf.has(key)) return -1;
    auto v = gguf.get_int(key);
    if (!v) {
      if (id_error) id_error = Status::error(strfmt("%s: %s", path.c_str(), v.error().c_str()));
      return -1;
    }
    if (*v < 0 || *v >= n) {
      if (id_error) {
        id_error =
            Status::error(strfmt("%s: %s = %lld is outside the vocabulary [0, %lld)", path.c_str(),
                                 key, static_cast<long long>(*v), static_cast<long long>(n)));
      }
      return -1;
    }
    return static_cast<int32_t>(*v);
  };
  bool add_bos_default;
  if (*model == "llama") {
    auto sc = gguf.get_float_array("tokenizer.ggml.scores");
    if (!sc) return sc.status();
    if (static_cast<int64_t>(sc->size()) != n)
      return Status::error(strfmt("%s: tokenizer.ggml.scores has %zu entries, tokens has %lld",
                                  path.c_str(), sc->size(), static_cast<long long>(n)));
    for (double s : *sc) m->scores.push_back(static_cast<float>(s));
    bool prefix = true;
    if (gguf.has("tokenizer.ggml.add_space_prefix")) {
      auto v = gguf.get_int("tokenizer.ggml.add_space_prefix");
      if (v) prefix = *v != 0;
    }
    spm_pipeline(*m, prefix, false);
    m->unk_id = opt_id("tokenizer.ggml.unknown_token_id");
    add_typed_tokens(*m, types);
    add_bos_default = true;
  } else if (*model == "gpt2") {
    auto merges = gguf.get_string_array("tokenizer.ggml.merges");
    if (!merges) return merges.status();
    int32_t rank = 0;
    for (const std::string& mg : *merges) {
      size_t sp = mg.find(' ');
      auto ia = m->vocab.find(mg.substr(0, sp == std::string::npos ? 0 : sp));
      auto ib = sp == std::string::npos ? m->vocab.end() : m->vocab.find(mg.substr(sp + 1));
      auto ic = sp == std::string::npos ? m->vocab.end()
                                        : m->vocab.find(mg.substr(0, sp) + mg.substr(sp + 1));
      if (ia == m->vocab.end() || ib == m->vocab.end() || ic == m->vocab.end())
        return Status::error(strfmt("%s: tokenizer.ggml.merges[%d] \"%s\" not in vocab",
                                    path.c_str(), rank, escape_for_message(mg).c_str()));
      uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(ia->second)) << 32) |
                     static_cast<uint32_t>(ib->second);
      m->merges.emplace(key, std::make_pair(rank++, ic->second));
    }
    std::string pre = "default";
    if (gguf.has("tokenizer.ggml.pre")) {
      auto p = gguf.get_string("tokenizer.ggml.pre");
      if (p) pre = *p;
    }
    // llama.cpp's table of pre-tokenizer regexes, for the names we know.
    std::vector<std::string> regexes;
    if (pre == "llama3" || pre == "llama-bpe" || pre == "llama-v3" || pre == "smaug-bpe") {
      regexes = {kLlama3Regex};
    } else if (pre == "qwen2" || pre == "deepseek-r1-qwen") {
      regexes = {kQwen2Regex};
      // Qwen2/3's tokenizer.json normalizes to NFC (llama.cpp skips it); follow the HF model.
      m->normalizers.push_back({NormKind::kNfc, "", "", nullptr});
    } else if (pre == "smollm" || pre == "starcoder" || pre == "refact" || pre == "command-r" ||
               pre == "codeshell" || pre == "exaone" || pre == "minerva-7b") {
      regexes = {R"(\p{N})",
                 R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)"};
    } else if (pre == "gpt-2" || pre == "default" || pre == "gpt2" || pre == "phi-2" ||
               pre == "jina-es" || pre == "jina-de" || pre == "olmo" || pre == "mpt") {
      regexes = {kGpt2Regex};
    } else {
      return Status::error(strfmt("%s: tokenizer.ggml.pre \"%s\" is not a known pre-tokenizer",
                                  path.c_str(), escape_for_message(pre).c_str()));
    }
    for (const std::string& rx : regexes) {
      auto re = Regex::compile(rx);
      if (!re) return re.status();
      PreStep s{};
      s.kind = PreKind::kSplit;
      s.re = *re;
      s.behavior = SplitBehavior::kIsolated;
      m->pre.push_back(std::move(s));
    }
    PreStep bl{};
    bl.kind = PreKind::kByteLevel;
    m->pre.push_back(std::move(bl));
    m->has_decoder = true;
    m->decoders.push_back({DecKind::kByteLevel, "", ""});
    for (size_t id = 0; id < types.size(); ++id) {
      if (types[id] == kControl || types[id] == kUserDefined) {
        AddedToken a;
        a.id = static_cast<int32_t>(id);
        a.content = m->tokens[id];
        a.special = types[id] == kControl;
        m->added.push_back(std::move(a));
      }
    }
    add_bos_default = false;
  } else {
    return Status::error(
        strfmt("%s: tokenizer.ggml.model \"%s\" is not supported (expected \"llama\" or \"gpt2\")",
               path.c_str(), escape_for_message(*model).c_str()));
  }
  m->bos_id = opt_id("tokenizer.ggml.bos_token_id");
  m->eos_id = opt_id("tokenizer.ggml.eos_token_id");
  if (!id_error) return id_error;
  bool add_bos = add_bos_default;
  if (gguf.has("tokenizer.ggml.add_bos_token")) {
    auto v = gguf.get_int("tokenizer.ggml.add_bos_token");
    if (v) add_bos = *v != 0;
  }
  if (add_bos && m->bos_id >= 0) m->prefix_ids.push_back(m->bos_id);
  if (gguf.has("tokenizer.ggml.add_eos_token")) {
    auto v = gguf.get_int("tokenizer.ggml.add_eos_token");
    if (v && *v != 0 && m->eos_id >= 0) m->suffix_ids.push_back(m->eos_id);
  }
  if (gguf.has("tokenizer.chat_template")) {
    auto ct = gguf.get_string("tokenizer.chat_template");
    if (ct) m->chat_template = *ct;
  }
  FKV_RETURN_IF_ERROR(m->finalize());
  if (m->bos_id >= 0) m->bos_token = m->tokens[m->bos_id];
  if (m->eos_id >= 0) m->eos_token = m->tokens[m->eos_id];
  m->set_eog_defaults();
  for (const char* key : {"tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"}) {
    int32_t id = opt_id(key);
    if (id >= 0 && !std::count(m->eog_ids.begin(), m->eog_ids.end(), id)) m->eog_ids.push_back(id);
  }
  if (!id_error) return id_error;
  return TokenizerBuilder::make(std::move(m));
}

}  // namespace fkv
