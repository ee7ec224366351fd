// from_gguf with a gpt2-style (byte-level BPE) vocabulary: a GGUF is written from the Qwen3
// tokenizer.json (tokens, merges, token types, pre = "qwen2") and must reproduce the HF
// `tokenizers` goldens of tests/data/goldens/tokenizer_qwen3.json exactly.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/gguf.h"
#include "tokenizer/tokenizer.h"

namespace fkv {
namespace {

using nlohmann::json;

json read_json(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return json::parse(ss.str());
}

// Minimal GGUF v3 writer: metadata only, no tensors.
class GgufWriter {
 public:
  void str(const std::string& key, const std::string& v) {
    put_key(key, 8);
    put_str(v);
  }
  void u32(const std::string& key, uint32_t v) {
    put_key(key, 4);
    put(v);
  }
  void boolean(const std::string& key, bool v) {
    put_key(key, 7);
    put(static_cast<uint8_t>(v));
  }
  void str_array(const std::string& key, const std::vector<std::string>& v) {
    put_key(key, 9);
    put(uint32_t{8});
    put(uint64_t{v.size()});
    for (const auto& s : v) put_str(s);
  }
  void i32_array(const std::string& key, const std::vector<int32_t>& v) {
    put_key(key, 9);
    put(uint32_t{5});
    put(uint64_t{v.size()});
    for (int32_t x : v) put(x);
  }
  void write(const std::string& path) {
    std::string out("GGUF", 4);
    auto app = [&](auto v) { out.append(reinterpret_cast<const char*>(&v), sizeof(v)); };
    app(uint32_t{3});
    app(uint64_t{0});
    app(n_kv_);
    out += body_;
    while (out.size() % 32) out += '\0';
    std::ofstream(path, std::ios::binary) << out;
  }

 private:
  template <class T>
  void put(T v) {
    body_.append(reinterpret_cast<const char*>(&v), sizeof(v));
  }
  void put_str(const std::string& s) {
    put(uint64_t{s.size()});
    body_ += s;
  }
  void put_key(const std::string& k, uint32_t type) {
    put_str(k);
    put(type);
    ++n_kv_;
  }
  std::string body_;
  uint64_t n_kv_ = 0;
};

TEST(TokenizerGguf, Gpt2StyleMatchesHfGoldens) {
  std::string dir = std::string(FKV_SHARED_DIR) + "/tokenizers/qwen3/";
  json tj = read_json(dir + "tokenizer.json");
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  for (auto it = tj["model"]["vocab"].begin(); it != tj["model"]["vocab"].end(); ++it) {
    size_t id = it.value().get<size_t>();
    if (id >= tokens.size()) tokens.resize(id + 1), types.resize(id + 1, 1);
    tokens[id] = it.key();
  }
  for (const json& a : tj["added_tokens"]) {
    size_t id = a["id"].get<size_t>();
    if (id >= tokens.size()) tokens.resize(id + 1), types.resize(id + 1, 1);
    tokens[id] = a["content"].get<std::string>();
    types[id] = a["special"].get<bool>() ? 3 : 4;  // control / user-defined
  }
  std::vector<std::string> merges;
  for (const json& m : tj["model"]["merges"])
    merges.push_back(m.is_string() ? m.get<std::string>()
                                   : m[0].get<std::string>() + " " + m[1].get<std::string>());
  GgufWriter w;
  w.str("general.architecture", "qwen3");
  w.str("tokenizer.ggml.model", "gpt2");
  w.str("tokenizer.ggml.pre", "qwen2");
  w.str_array("tokenizer.ggml.tokens", tokens);
  w.i32_array("tokenizer.ggml.token_type", types);
  w.str_array("tokenizer.ggml.merges", merges);
  w.u32("tokenizer.ggml.eos_token_id", 151645);
  w.u32("tokenizer.ggml.bos_token_id", 151643);
  w.boolean("tokenizer.ggml.add_bos_token", false);
  w.str("tokenizer.chat_template", "{{ messages }}");
  std::string path = testing::TempDir() + "fkv_tok_qwen3_vocab.gguf";
  w.write(path);

  auto f = GgufFile::open(path);
  ASSERT_TRUE(f.has_value()) << f.error();
  auto tok = Tokenizer::from_gguf(*f);
  ASSERT_TRUE(tok.has_value()) << tok.error();
  EXPECT_EQ(tok->eos_id(), 151645);
  EXPECT_EQ(tok->chat_template(), "{{ messages }}");
  EXPECT_TRUE(tok->is_end_of_generation(151645));
  EXPECT_FALSE(tok->add_bos());

  json g = read_json(std::string(FKV_SOURCE_DIR) + "/tests/data/goldens/tokenizer_qwen3.json");
  int n = 0;
  for (const json& c : g["cases"]) {
    std::string text = c["text"];
    EXPECT_EQ(tok->encode(text, false), c["ids"].get<std::vector<int32_t>>()) << text;
    EXPECT_EQ(tok->encode(text, true), c["ids_special"].get<std::vector<int32_t>>()) << text;
    EXPECT_EQ(tok->decode(c["ids_special"].get<std::vector<int32_t>>(), true),
              c["decoded_skip"].get<std::string>());
    ++n;
  }
  EXPECT_GT(n, 20);
  std::remove(path.c_str());

  // Unknown pre-tokenizer names are an error naming the key and the value.
  GgufWriter bad;
  bad.str("tokenizer.ggml.model", "gpt2");
  bad.str("tokenizer.ggml.pre", "mystery");
  bad.str_array("tokenizer.ggml.tokens", {"a", "b", "ab"});
  bad.str_array("tokenizer.ggml.merges", {"a b"});
  bad.write(path);
  auto fb = GgufFile::open(path);
  ASSERT_TRUE(fb.has_value()) << fb.error();
  auto tb = Tokenizer::from_gguf(*fb);
  ASSERT_FALSE(tb.has_value());
  EXPECT_NE(tb.error().find("tokenizer.ggml.pre"), std::string::npos) << tb.error();
  EXPECT_NE(tb.error().find("mystery"), std::string::npos) << tb.error();
  std::remove(path.c_str());
}

// Issue 11, cause 3: a special-token id outside the vocabulary is an error naming the key (it
// used to drop BOS silently).
TEST(GgufTokenizer, SpecialTokenIdOutsideVocabularyIsAnError) {
  const std::string src = std::string(FKV_SHARED_DIR) + "/models/stories260K/stories260K.gguf";
  std::ifstream in(src, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (const char* key : {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"}) {
    std::string patched = bytes;
    const size_t at = patched.find(key);
    ASSERT_NE(at, std::string::npos) << key;
    const size_t type_at = at + std::strlen(key);
    uint32_t type = 0;
    std::memcpy(&type, patched.data() + type_at, 4);
    ASSERT_EQ(type, 4u) << key << ": expected a uint32 value";  // GGUF_TYPE_UINT32
    const uint32_t bad = 999999;
    std::memcpy(patched.data() + type_at + 4, &bad, 4);
    const std::string path = ::testing::TempDir() + "fkv_bad_special_id.gguf";
    std::ofstream(path, std::ios::binary) << patched;
    auto f = GgufFile::open(path);
    ASSERT_TRUE(f) << f.error();
    auto t = Tokenizer::from_gguf(*f);
    ASSERT_FALSE(t) << key;
    EXPECT_NE(t.error().find(key), std::string::npos) << t.error();
    EXPECT_NE(t.error().find("999999"), std::string::npos) << t.error();
    EXPECT_NE(t.error().find("outside the vocabulary"), std::string::npos) << t.error();
    std::remove(path.c_str());
  }
}

// Issue 21: string values from a corrupted file are quoted with their non-printable and
// non-UTF-8 bytes escaped as \xNN (the raw bytes used to reach the terminal).
TEST(GgufTokenizer, CorruptedModelNameIsEscapedInTheError) {
  const std::string path = ::testing::TempDir() + "fkv_bad_model_name.gguf";
  auto error_for = [&](const std::string& model, const std::string& pre,
                       const std::vector<std::string>& merges) {
    GgufWriter w;
    w.str("tokenizer.ggml.model", model);
    w.str("tokenizer.ggml.pre", pre);
    w.str_array("tokenizer.ggml.tokens", {"a", "b", "ab"});
    w.str_array("tokenizer.ggml.merges", merges);
    w.write(path);
    auto f = GgufFile::open(path);
    EXPECT_TRUE(f.has_value()) << f.error();
    if (!f) return std::string();
    auto t = Tokenizer::from_gguf(*f);
    return t.has_value() ? std::string("(loaded without error)") : t.error();
  };
  EXPECT_EQ(error_for(std::string("ll\xff\x01m\"a\n", 8), "default", {"a b"}),
            path +
                ": tokenizer.ggml.model \"ll\\xff\\x01m\\\"a\\n\" is not supported (expected "
                "\"llama\" or \"gpt2\")");
  EXPECT_EQ(error_for("gpt2", "qw\xe4\xb8", {"a b"}),  // a cut UTF-8 sequence
            path + ": tokenizer.ggml.pre \"qw\\xe4\\xb8\" is not a known pre-tokenizer");
  EXPECT_EQ(error_for("gpt2", "default", {"a \x80z"}),
            path + ": tokenizer.ggml.merges[0] \"a \\x80z\" not in vocab");
  // Printable UTF-8 stays readable.
  EXPECT_EQ(error_for("ламa", "default", {"a b"}),
            path +
                ": tokenizer.ggml.model \"ламa\" is not supported (expected \"llama\" or "
                "\"gpt2\")");
  std::remove(path.c_str());
}

}  // namespace
}  // namespace fkv
