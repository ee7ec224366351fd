// tokenizer.json (+ tokenizer_config.json) -> TokenizerImpl.
#include <nlohmann/json.hpp>

#include "core/file_io.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_impl.h"

namespace fkv {
namespace {

using nlohmann::json;

// A directory, an unreadable or an empty path says so, instead of "invalid JSON".
Expected<std::string> read_file(const std::string& path) {
  return read_text_file(path, "tokenizer file", /*allow_empty=*/false);
}

std::string type_of(const json& j) {
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) return "";
  return j["type"].get<std::string>();
}

bool get_bool(const json& j, const char* key, bool def) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_boolean()) return def;
  return j[key].get<bool>();
}

std::string get_str(const json& j, const char* key, const std::string& def = "") {
  if (!j.is_object() || !j.contains(key) || !j[key].is_string()) return def;
  return j[key].get<std::string>();
}

// HF pattern: {"String": literal} or {"Regex": pattern}.
Expected<std::shared_ptr<Regex>> pattern_regex(const json& p, const std::string& where) {
  if (p.is_object() && p.contains("Regex") && p["Regex"].is_string())
    return Regex::compile(p["Regex"].get<std::string>());
  if (p.is_object() && p.contains("String") && p["String"].is_string())
    return Regex::compile(regex_escape(p["String"].get<std::string>()));
  return Status::error(
      strfmt("%s.pattern: expected {\"String\":..} or {\"Regex\":..}", where.c_str()));
}

Expected<PrependScheme> prepend_scheme(const json& j, const std::string& where) {
  std::string s = get_str(j, "prepend_scheme", "");
  if (s.empty())
    return get_bool(j, "add_prefix_space", true) ? PrependScheme::kAlways : PrependScheme::kNever;
  if (s == "always") return PrependScheme::kAlways;
  if (s == "first") return PrependScheme::kFirst;
  if (s == "never") return PrependScheme::kNever;
  return Status::error(strfmt("%s.prepend_scheme: unknown value \"%s\"", where.c_str(), s.c_str()));
}

Status parse_normalizer(const json& j, const std::string& where, std::vector<NormStep>& out) {
  if (j.is_null()) return Status::ok();
  std::string t = type_of(j);
  if (t == "Sequence") {
    if (!j.contains("normalizers") || !j["normalizers"].is_array())
      return Status::error(strfmt("%s.normalizers: expected an array", where.c_str()));
    int k = 0;
    for (const json& n : j["normalizers"])
      FKV_RETURN_IF_ERROR(
          parse_normalizer(n, strfmt("%s.normalizers[%d]", where.c_str(), k++), out));
    return Status::ok();
  }
  NormStep s{};
  if (t == "Prepend") {
    s.kind = NormKind::kPrepend;
    s.a = get_str(j, "prepend");
  } else if (t == "Replace") {
    s.kind = NormKind::kReplace;
    s.b = get_str(j, "content");
    const json& p = j.contains("pattern") ? j["pattern"] : json();
    if (p.is_object() && p.contains("String") && p["String"].is_string()) {
      s.a = p["String"].get<std::string>();
    } else {
      auto re = pattern_regex(p, where);
      if (!re) return re.status();
      s.re = *re;
    }
  } else if (t == "NFC" || t == "NFKC") {
    s.kind = NormKind::kNfc;
  } else if (t == "Lowercase") {
    s.kind = NormKind::kLowercase;
  } else if (t == "Strip") {
    s.kind = NormKind::kStrip;
    s.left = get_bool(j, "strip_left", true);
    s.right = get_bool(j, "strip_right", true);
  } else {
    return Status::error(
        strfmt("%s.type: unsupported normalizer \"%s\"", where.c_str(), t.c_str()));
  }
  out.push_back(std::move(s));
  return Status::ok();
}

Expected<SplitBehavior> split_behavior(const std::string& b, const std::string& where) {
  if (b == "Removed") return SplitBehavior::kRemoved;
  if (b == "Isolated") return SplitBehavior::kIsolated;
  if (b == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (b == "Contiguous") return SplitBehavior::kContiguous;
  return Status::error(strfmt("%s.behavior: unknown value \"%s\"", where.c_str(), b.c_str()));
}

Status add_split(std::vector<PreStep>& out, const std::string& pattern, SplitBehavior b,
                 bool invert) {
  auto re = Regex::compile(pattern);
  if (!re) return re.status();
  PreStep s{};
  s.kind = PreKind::kSplit;
  s.re = *re;
  s.behavior = b;
  s.invert = invert;
  out.push_back(std::move(s));
  return Status::ok();
}

Status parse_pre(const json& j, const std::string& where, std::vector<PreStep>& out) {
  if (j.is_null()) return Status::ok();
  std::string t = type_of(j);
  if (t == "Sequence") {
    if (!j.contains("pretokenizers") || !j["pretokenizers"].is_array())
      return Status::error(strfmt("%s.pretokenizers: expected an array", where.c_str()));
    int k = 0;
    for (const json& n : j["pretokenizers"])
      FKV_RETURN_IF_ERROR(parse_pre(n, strfmt("%s.pretokenizers[%d]", where.c_str(), k++), out));
    return Status::ok();
  }
  if (t == "Split") {
    auto re = pattern_regex(j.contains("pattern") ? j["pattern"] : json(), where);
    if (!re) return re.status();
    auto b = split_behavior(get_str(j, "behavior", "Isolated"), where);
    if (!b) return b.status();
    PreStep s{};
    s.kind = PreKind::kSplit;
    s.re = *re;
    s.behavior = *b;
    s.invert = get_bool(j, "invert", false);
    out.push_back(std::move(s));
    return Status::ok();
  }
  if (t == "ByteLevel") {
    PreStep s{};
    s.kind = PreKind::kByteLevel;
    s.add_prefix_space = get_bool(j, "add_prefix_space", true);
    if (get_bool(j, "use_regex", true)) {
      auto re = Regex::compile(kGpt2Regex);
      if (!re) return re.status();
      s.re = *re;
    }
    out.push_back(std::move(s));
    return Status::ok();
  }
  if (t == "Metaspace") {
    PreStep s{};
    s.kind = PreKind::kMetaspace;
    s.replacement = get_str(j, "replacement", "\xE2\x96\x81");
    if (s.replacement.empty())
      return Status::error(strfmt("%s.replacement: must not be empty", where.c_str()));
    auto ps = prepend_scheme(j, where);
    if (!ps) return ps.status();
    s.prepend = *ps;
    s.split = get_bool(j, "split", true);
    out.push_back(std::move(s));
    return Status::ok();
  }
  if (t == "Digits")
    return add_split(out, get_bool(j, "individual_digits", false) ? R"(\p{N})" : R"(\p{N}+)",
                     SplitBehavior::kIsolated, false);
  if (t == "Whitespace") return add_split(out, R"(\w+|[^\w\s]+)", SplitBehavior::kRemoved, true);
  if (t == "WhitespaceSplit") return add_split(out, R"(\s+)", SplitBehavior::kRemoved, false);
  if (t == "Punctuation") return add_split(out, R"(\p{P})", SplitBehavior::kIsolated, false);
  return Status::error(
      strfmt("%s.type: unsupported pre_tokenizer \"%s\"", where.c_str(), t.c_str()));
}

Status parse_decoder(const json& j, const std::string& where, std::vector<DecStep>& out) {
  if (j.is_null()) return Status::ok();
  std::string t = type_of(j);
  if (t == "Sequence") {
    if (!j.contains("decoders") || !j["decoders"].is_array())
      return Status::error(strfmt("%s.decoders: expected an array", where.c_str()));
    int k = 0;
    for (const json& n : j["decoders"])
      FKV_RETURN_IF_ERROR(parse_decoder(n, strfmt("%s.decoders[%d]", where.c_str(), k++), out));
    return Status::ok();
  }
  DecStep s{};
  if (t == "ByteLevel") {
    s.kind = DecKind::kByteLevel;
  } else if (t == "Replace") {
    s.kind = DecKind::kReplace;
    const json& p = j.contains("pattern") ? j["pattern"] : json();
    if (!(p.is_object() && p.contains("String") && p["String"].is_string()))
      return Status::error(
          strfmt("%s.pattern: only {\"String\": ...} is supported", where.c_str()));
    s.a = p["String"].get<std::string>();
    s.b = get_str(j, "content");
  } else if (t == "ByteFallback") {
    s.kind = DecKind::kByteFallback;
  } else if (t == "Fuse") {
    s.kind = DecKind::kFuse;
  } else if (t == "Strip") {
    s.kind = DecKind::kStrip;
    s.a = get_str(j, "content", " ");
    s.start = j.contains("start") && j["start"].is_number_integer() ? j["start"].get<int>() : 0;
    s.stop = j.contains("stop") && j["stop"].is_number_integer() ? j["stop"].get<int>() : 0;
  } else if (t == "Metaspace") {
    s.kind = DecKind::kMetaspace;
    s.a = get_str(j, "replacement", "\xE2\x96\x81");
    auto ps = prepend_scheme(j, where);
    if (!ps) return ps.status();
    s.prepend = *ps;
  } else {
    return Status::error(strfmt("%s.type: unsupported decoder \"%s\"", where.c_str(), t.c_str()));
  }
  out.push_back(std::move(s));
  return Status::ok();
}

Status parse_post(const json& j, const std::string& where, TokenizerImpl& m) {
  if (j.is_null()) return Status::ok();
  std::string t = type_of(j);
  if (t == "ByteLevel") return Status::ok();  // offsets only
  if (t == "Sequence") {
    if (!j.contains("processors") || !j["processors"].is_array())
      return Status::error(strfmt("%s.processors: expected an array", where.c_str()));
    int k = 0;
    for (const json& n : j["processors"])
      FKV_RETURN_IF_ERROR(parse_post(n, strfmt("%s.processors[%d]", where.c_str(), k++), m));
    return Status::ok();
  }
  if (t == "TemplateProcessing") {
    if (!j.contains("single") || !j["single"].is_array())
      return Status::error(strfmt("%s.single: expected an array", where.c_str()));
    const json& sp = j.contains("special_tokens") ? j["special_tokens"] : json::object();
    bool after = false;
    for (const json& item : j["single"]) {
      if (item.contains("Sequence")) {
        after = true;
        continue;
      }
      if (!item.contains("SpecialToken") || !item["SpecialToken"].contains("id"))
        return Status::error(
            strfmt("%s.single: item is neither Sequence nor SpecialToken", where.c_str()));
      std::string name = item["SpecialToken"]["id"].get<std::string>();
      if (!sp.contains(name) || !sp[name].contains("ids") || !sp[name]["ids"].is_array())
        return Status::error(
            strfmt("%s.special_tokens: missing \"%s\"", where.c_str(), name.c_str()));
      for (const json& id : sp[name]["ids"])
        (after ? m.suffix_ids : m.prefix_ids).push_back(id.get<int32_t>());
    }
    return Status::ok();
  }
  if (t == "RobertaProcessing" || t == "BertProcessing") {
    if (!j.contains("cls") || !j.contains("sep"))
      return Status::error(strfmt("%s: missing cls/sep", where.c_str()));
    m.prefix_ids.push_back(j["cls"][1].get<int32_t>());
    m.suffix_ids.push_back(j["sep"][1].get<int32_t>());
    return Status::ok();
  }
  return Status::error(
      strfmt("%s.type: unsupported post_processor \"%s\"", where.c_str(), t.c_str()));
}

std::string token_content(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string())
    return v["content"].get<std::string>();
  return "";
}

Status parse_model(const json& model, TokenizerImpl& m) {
  if (!model.is_object()) return Status::error("tokenizer.json: missing \"model\" section");
  std::string type = type_of(model);
  if (type.empty() && model.contains("merges")) type = "BPE";
  if (type != "BPE")
    return Status::error(
        strfmt("tokenizer.json: unsupported model.type \"%s\" (only BPE)", type.c_str()));
  if (!model.contains("vocab") || !model["vocab"].is_object())
    return Status::error("tokenizer.json: model.vocab: expected an object of token -> id");
  const json& vocab = model["vocab"];
  int64_t max_id = -1;
  // Ids are dense in practice; a bound keeps a hostile file from allocating gigabytes.
  const auto id_limit = static_cast<int64_t>(vocab.size()) + (1 << 20);
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 ||
        it.value().get<int64_t>() >= id_limit)
      return Status::error(strfmt("tokenizer.json: model.vocab[\"%s\"]: bad id", it.key().c_str()));
    max_id = std::max<int64_t>(max_id, it.value().get<int64_t>());
  }
  m.tokens.assign(max_id + 1, std::string());
  m.vocab.reserve(vocab.size());
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    int32_t id = it.value().get<int32_t>();
    m.tokens[id] = it.key();
    m.vocab[it.key()] = id;
  }
  if (!get_str(model, "continuing_subword_prefix").empty() ||
      !get_str(model, "end_of_word_suffix").empty())
    return Status::error(
        "tokenizer.json: model.continuing_subword_prefix/end_of_word_suffix are not supported");
  m.byte_fallback = get_bool(model, "byte_fallback", false);
  m.fuse_unk = get_bool(model, "fuse_unk", false);
  m.ignore_merges = get_bool(model, "ignore_merges", false);
  std::string unk = get_str(model, "unk_token");
  if (!unk.empty()) {
    auto it = m.vocab.find(unk);
    if (it != m.vocab.end()) m.unk_id = it->second;
  }
  if (!model.contains("merges") || !model["merges"].is_array())
    return Status::error("tokenizer.json: model.merges: expected an array");
  const json& merges = model["merges"];
  m.merges.reserve(merges.size());
  int32_t rank = 0;
  for (const json& mg : merges) {
    std::string a, b;
    if (mg.is_string()) {
      const std::string& s = mg.get_ref<const std::string&>();
      size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        return Status::error(
            strfmt("tokenizer.json: model.merges[%d]: \"%s\" is not \"a b\"", rank, s.c_str()));
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (mg.is_array() && mg.size() == 2 && mg[0].is_string() && mg[1].is_string()) {
      a = mg[0].get<std::string>();
      b = mg[1].get<std::string>();
    } else {
      return Status::error(
          strfmt("tokenizer.json: model.merges[%d]: expected \"a b\" or [a, b]", rank));
    }
    auto ia = m.vocab.find(a), ib = m.vocab.find(b), ic = m.vocab.find(a + b);
    if (ia == m.vocab.end() || ib == m.vocab.end() || ic == m.vocab.end())
      return Status::error(strfmt("tokenizer.json: model.merges[%d]: \"%s\" + \"%s\" not in vocab",
                                  rank, a.c_str(), b.c_str()));
    uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(ia->second)) << 32) |
                   static_cast<uint32_t>(ib->second);
    m.merges.emplace(key, std::make_pair(rank, ic->second));  // first (lowest rank) wins
    ++rank;
  }
  return Status::ok();
}

Status load(std::string_view tok_json, std::string_view cfg_json, TokenizerImpl& m) {
  json j = json::parse(tok_json.begin(), tok_json.end(), nullptr, false);
  if (j.is_discarded()) return Status::error("tokenizer.json: invalid JSON");
  if (!j.is_object()) return Status::error("tokenizer.json: top level is not an object");
  if (!j.contains("model")) return Status::error("tokenizer.json: missing \"model\" section");
  FKV_RETURN_IF_ERROR(parse_model(j["model"], m));
  if (j.contains("added_tokens")) {
    if (!j["added_tokens"].is_array())
      return Status::error("tokenizer.json: added_tokens: expected an array");
    int k = 0;
    for (const json& t : j["added_tokens"]) {
      if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer() ||
          !t.contains("content") || !t["content"].is_string() || t["id"].get<int64_t>() < 0 ||
          t["id"].get<int64_t>() >= static_cast<int64_t>(m.tokens.size()) + (1 << 20))
        return Status::error(
            strfmt("tokenizer.json: added_tokens[%d]: needs integer id and string content", k));
      AddedToken a;
      a.id = t["id"].get<int32_t>();
      a.content = t["content"].get<std::string>();
      a.special = get_bool(t, "special", false);
      a.lstrip = get_bool(t, "lstrip", false);
      a.rstrip = get_bool(t, "rstrip", false);
      a.normalized = get_bool(t, "normalized", !a.special);
      a.single_word = get_bool(t, "single_word", false);
      m.added.push_back(std::move(a));
      ++k;
    }
  }
  FKV_RETURN_IF_ERROR(
      parse_normalizer(j.value("normalizer", json()), "tokenizer.json: normalizer", m.normalizers));
  FKV_RETURN_IF_ERROR(
      parse_pre(j.value("pre_tokenizer", json()), "tokenizer.json: pre_tokenizer", m.pre));
  m.has_decoder = j.contains("decoder") && !j["decoder"].is_null();
  FKV_RETURN_IF_ERROR(
      parse_decoder(j.value("decoder", json()), "tokenizer.json: decoder", m.decoders));
  FKV_RETURN_IF_ERROR(
      parse_post(j.value("post_processor", json()), "tokenizer.json: post_processor", m));
  FKV_RETURN_IF_ERROR(m.finalize());
  for (int32_t id : m.prefix_ids)
    if (id < 0 || id >= static_cast<int32_t>(m.tokens.size()))
      return Status::error(strfmt("tokenizer.json: post_processor: token id %d out of range", id));
  for (int32_t id : m.suffix_ids)
    if (id < 0 || id >= static_cast<int32_t>(m.tokens.size()))
      return Status::error(strfmt("tokenizer.json: post_processor: token id %d out of range", id));

  // BOS/EOS: tokenizer_config.json names them; otherwise the post-processor's template.
  json cfg;
  if (!cfg_json.empty()) {
    cfg = json::parse(cfg_json.begin(), cfg_json.end(), nullptr, false);
    if (cfg.is_discarded() || !cfg.is_object())
      return Status::error("tokenizer_config.json: invalid JSON");
  }
  auto lookup = [&](const std::string& s) -> int32_t {
    auto it = m.vocab.find(s);
    return it == m.vocab.end() ? -1 : it->second;
  };
  if (cfg.is_object()) {
    if (cfg.contains("bos_token")) m.bos_token = token_content(cfg["bos_token"]);
    if (cfg.contains("eos_token")) m.eos_token = token_content(cfg["eos_token"]);
    if (cfg.contains("chat_template")) {
      const json& ct = cfg["chat_template"];
      if (ct.is_string()) {
        m.chat_template = ct.get<std::string>();
      } else if (ct.is_array()) {
        for (const json& e : ct)
          if (e.is_object() && get_str(e, "name") == "default")
            m.chat_template = get_str(e, "template");
      }
    }
    m.bos_id = m.bos_token.empty() ? -1 : lookup(m.bos_token);
    m.eos_id = m.eos_token.empty() ? -1 : lookup(m.eos_token);
    // transformers rebuilds the post-processor from add_bos/eos_token only for these classes.
    std::string cls = get_str(cfg, "tokenizer_class");
    if (cls == "LlamaTokenizer" || cls == "LlamaTokenizerFast" || cls == "GemmaTokenizer" ||
        cls == "GemmaTokenizerFast") {
      bool add_bos = get_bool(cfg, "add_bos_token", true),
           add_eos = get_bool(cfg, "add_eos_token", false);
      m.prefix_ids.clear();
      m.suffix_ids.clear();
      if (add_bos && m.bos_id >= 0) m.prefix_ids.push_back(m.bos_id);
      if (add_eos && m.eos_id >= 0) m.suffix_ids.push_back(m.eos_id);
    }
  } else {
    if (!m.prefix_ids.empty()) m.bos_id = m.prefix_ids[0];
    if (!m.suffix_ids.empty()) m.eos_id = m.suffix_ids.back();
    for (const char* e : {"</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>"})
      if (m.eos_id < 0) m.eos_id = lookup(e);
    for (const char* b : {"<s>", "<|begin_of_text|>", "<bos>"})
      if (m.bos_id < 0) m.bos_id = lookup(b);
    if (m.bos_id >= 0) m.bos_token = m.tokens[m.bos_id];
    if (m.eos_id >= 0) m.eos_token = m.tokens[m.eos_id];
  }
  m.set_eog_defaults();
  return Status::ok();
}

}  // namespace

Expected<Tokenizer> Tokenizer::from_hf_json_string(std::string_view tokenizer_json,
                                                   std::string_view tokenizer_config_json) {
  auto m = std::make_unique<TokenizerImpl>();
  try {
    Status st = load(tokenizer_json, tokenizer_config_json, *m);
    if (!st) return st;
  } catch (const std::exception& e) {
    // A field of an unexpected JSON type deep inside the file.
    return Status::error(strfmt("tokenizer.json: %s", e.what()));
  }
  return TokenizerBuilder::make(std::move(m));
}

Expected<Tokenizer> Tokenizer::from_hf_json(const std::string& tokenizer_json_path,
                                            const std::string& tokenizer_config_path) {
  auto tj = read_file(tokenizer_json_path);
  if (!tj) return tj.status();
  std::string cfg;
  if (!tokenizer_config_path.empty()) {
    auto c = read_file(tokenizer_config_path);
    if (!c) return c.status();
    cfg = std::move(*c);
  }
  auto t = from_hf_json_string(*tj, cfg);
  if (!t) return Status::error(strfmt("%s: %s", tokenizer_json_path.c_str(), t.error().c_str()));
  return t;
}

}  // namespace fkv
