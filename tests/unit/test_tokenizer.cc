// Tokenizer tests: exact ids/decodes against goldens from HF tokenizers / sentencepiece
// (tools/scripts/make_tokenizer_goldens.py), streaming, bad input, speed.
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/gguf.h"
#include "tokenizer/tokenizer.h"

namespace fkv {
namespace {

using nlohmann::json;

std::string shared(const std::string& rel) { return std::string(FKV_SHARED_DIR) + "/" + rel; }

json load_golden(const std::string& name) {
  std::ifstream f(std::string(FKV_SOURCE_DIR) + "/tests/data/goldens/" + name);
  EXPECT_TRUE(f.good()) << name;
  std::stringstream ss;
  ss << f.rdbuf();
  return json::parse(ss.str());
}

bool valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = s[i];
    size_t n = c < 0x80             ? 1
               : (c & 0xE0) == 0xC0 ? 2
               : (c & 0xF0) == 0xE0 ? 3
               : (c & 0xF8) == 0xF0 ? 4
                                    : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    i += n;
  }
  return true;
}

Tokenizer load_for(const json& g) {
  std::string kind = g["kind"];
  if (kind == "hf_json") {
    auto t = Tokenizer::from_hf_json(shared(g["tokenizer"]), shared(g["config"]));
    EXPECT_TRUE(t.has_value()) << t.error();
    return std::move(t).value();
  }
  if (kind == "hf_json_inline") {
    auto t = Tokenizer::from_hf_json_string(g["tokenizer_json"].get<std::string>());
    EXPECT_TRUE(t.has_value()) << t.error();
    return std::move(t).value();
  }
  if (kind == "sentencepiece") {
    auto t = Tokenizer::from_sentencepiece_model(shared(g["tokenizer"]));
    EXPECT_TRUE(t.has_value()) << t.error();
    return std::move(t).value();
  }
  auto f = GgufFile::open(shared(g["tokenizer"]));
  EXPECT_TRUE(f.has_value()) << f.error();
  auto t = Tokenizer::from_gguf(*f);
  EXPECT_TRUE(t.has_value()) << t.error();
  return std::move(t).value();
}

void check_golden(const std::string& file) {
  json g = load_golden(file);
  Tokenizer tok = load_for(g);
  int n = 0;
  for (const json& c : g["cases"]) {
    std::string text = c["text"];
    auto ids = c["ids"].get<std::vector<int32_t>>();
    auto ids_sp = c["ids_special"].get<std::vector<int32_t>>();
    std::string label = file + " case " + std::to_string(n++) + ": \"" + text.substr(0, 40) + "\"";
    EXPECT_EQ(tok.encode(text, false), ids) << label;
    EXPECT_EQ(tok.encode(text, true), ids_sp) << label;
    if (c.contains("decoded")) {
      EXPECT_EQ(tok.decode(ids_sp, false), c["decoded"].get<std::string>()) << label;
    }
    if (c.contains("decoded_skip")) {
      std::string want = c["decoded_skip"];
      EXPECT_EQ(tok.decode(ids_sp, true), want) << label;
      // Streaming gives the same text, and only ever complete UTF-8.
      StreamDecoder sd(tok, true);
      std::string streamed;
      for (int32_t id : ids_sp) {
        std::string piece = sd.push(id);
        EXPECT_TRUE(valid_utf8(piece)) << label;
        streamed += piece;
      }
      streamed += sd.flush();
      EXPECT_EQ(streamed, want) << label;
    }
  }
  EXPECT_GT(n, 20);
}

TEST(TokenizerGolden, Llama3) { check_golden("tokenizer_llama3.json"); }
TEST(TokenizerGolden, Qwen3) { check_golden("tokenizer_qwen3.json"); }
TEST(TokenizerGolden, Llama2SentencePiece) { check_golden("tokenizer_llama2_spm.json"); }
TEST(TokenizerGolden, Stories260KGguf) { check_golden("tokenizer_stories260K_gguf.json"); }
TEST(TokenizerGolden, TinySpmLegacyJson) { check_golden("tokenizer_tiny_spm_legacy.json"); }
TEST(TokenizerGolden, TinySpmMetaspaceJson) { check_golden("tokenizer_tiny_spm_metaspace.json"); }

TEST(Tokenizer, Llama3Metadata) {
  auto t = Tokenizer::from_hf_json(shared("tokenizers/llama3/tokenizer.json"),
                                   shared("tokenizers/llama3/tokenizer_config.json"));
  ASSERT_TRUE(t.has_value()) << t.error();
  EXPECT_EQ(t->bos_token(), "<|begin_of_text|>");
  EXPECT_EQ(t->bos_id(), 128000);
  EXPECT_EQ(t->eos_id(), 128001);
  EXPECT_TRUE(t->is_end_of_generation(*t->token_to_id("<|eot_id|>")));
  EXPECT_TRUE(t->is_end_of_generation(128001));
  EXPECT_FALSE(t->is_end_of_generation(128000));
  EXPECT_FALSE(t->chat_template().empty());
  EXPECT_EQ(t->vocab_size(), 128256);
}

TEST(Tokenizer, Qwen3Metadata) {
  auto t = Tokenizer::from_hf_json(shared("tokenizers/qwen3/tokenizer.json"),
                                   shared("tokenizers/qwen3/tokenizer_config.json"));
  ASSERT_TRUE(t.has_value()) << t.error();
  EXPECT_EQ(t->bos_id(), -1);
  EXPECT_EQ(t->eos_token(), "<|im_end|>");
  EXPECT_TRUE(t->is_end_of_generation(*t->token_to_id("<|im_end|>")));
  EXPECT_TRUE(t->is_end_of_generation(*t->token_to_id("<|endoftext|>")));
  EXPECT_NE(t->chat_template().find("im_start"), std::string::npos);
}

TEST(Tokenizer, Stories260KMetadataAndStreaming) {
  auto f = GgufFile::open(shared("models/stories260K/stories260K.gguf"));
  ASSERT_TRUE(f.has_value()) << f.error();
  auto t = Tokenizer::from_gguf(*f);
  ASSERT_TRUE(t.has_value()) << t.error();
  EXPECT_EQ(t->vocab_size(), 512);
  EXPECT_EQ(t->bos_id(), 1);
  EXPECT_EQ(t->eos_id(), 2);
  EXPECT_TRUE(t->add_bos());
  EXPECT_EQ(t->token_bytes(*t->token_to_id("<0x0A>")), "\n");
  // A 4-byte emoji falls back to four byte tokens; nothing is emitted until the last one.
  auto ids = t->encode("\xF0\x9F\x98\x80", false);
  ASSERT_GE(ids.size(), 4u);
  StreamDecoder sd(*t);
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    std::string piece = sd.push(ids[i]);
    if (i + 1 < ids.size()) {
      EXPECT_TRUE(valid_utf8(piece));
    }
    if (i > 0 && i + 1 < ids.size()) {
      EXPECT_EQ(piece, "");
    }
    out += piece;
  }
  out += sd.flush();
  EXPECT_EQ(out, "\xF0\x9F\x98\x80");
  // A truncated sequence is flushed as U+FFFD, never as broken bytes.
  StreamDecoder sd2(*t);
  EXPECT_EQ(sd2.push(ids[ids.size() - 4]), "");
  EXPECT_EQ(sd2.flush(), "\xEF\xBF\xBD");
}

TEST(Tokenizer, ByteLevelRoundTripAndSpeed) {
  auto t = Tokenizer::from_hf_json(shared("tokenizers/llama3/tokenizer.json"));
  ASSERT_TRUE(t.has_value()) << t.error();
  std::string text;
  const char* parts[] = {"The quick brown fox ",
                         "jumps over 1234 lazy dogs. ",
                         "日本語 ",
                         "\xF0\x9F\x98\x80 ",
                         "  \n\t",
                         "naïve café "};
  for (int i = 0; text.size() < 100000; ++i) text += parts[i % 6] + std::to_string(i) + " ";
  auto t0 = std::chrono::steady_clock::now();
  auto ids = t->encode(text, false);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(t->decode(ids), text);
  std::printf("encode %zu bytes -> %zu ids in %.3f s\n", text.size(), ids.size(), s);
  EXPECT_LT(s, 2.0);
  // Streaming a byte-level tokenizer reproduces the text exactly.
  StreamDecoder sd(*t);
  std::string streamed;
  for (int32_t id : ids) streamed += sd.push(id);
  streamed += sd.flush();
  EXPECT_EQ(streamed, text);
  // Invalid UTF-8 input does not crash and encodes as U+FFFD.
  auto bad = t->encode(
      "a\xFF\xFE"
      "b",
      false);
  EXPECT_EQ(t->decode(bad),
            "a\xEF\xBF\xBD\xEF\xBF\xBD"
            "b");
}

// 100K characters of real prose (not repetitive, so the word cache helps little).
std::string essays_100k() {
  std::string text;
  for (const char* name : {"addiction.txt", "aord.txt", "apple.txt", "avg.txt", "before.txt",
                           "bias.txt", "boss.txt", "copy.txt", "corpdev.txt", "desres.txt"}) {
    std::ifstream f(shared("data/needle/PaulGrahamEssays/") + name);
    std::stringstream ss;
    ss << f.rdbuf();
    text += ss.str();
    if (text.size() >= 100000) break;
  }
  return text.substr(0, 100000);
}

TEST(Tokenizer, Speed100KProse) {
  std::string text = essays_100k();
  ASSERT_EQ(text.size(), 100000u);
  auto l3 = Tokenizer::from_hf_json(shared("tokenizers/llama3/tokenizer.json"));
  auto l2 = Tokenizer::from_sentencepiece_model(
      shared("tokenizers/llama2-sentencepiece/tokenizer.model"));
  ASSERT_TRUE(l3.has_value() && l2.has_value());
  for (const Tokenizer* t : {&*l3, &*l2}) {
    auto t0 = std::chrono::steady_clock::now();
    auto ids = t->encode(text, false);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("encode 100000 bytes of prose -> %zu ids in %.3f s (vocab %d)\n", ids.size(), s,
                t->vocab_size());
    EXPECT_LT(s, 1.0);
    EXPECT_EQ(t->decode(ids), text);
  }
}

TEST(Tokenizer, BadInput) {
  auto e1 = Tokenizer::from_hf_json_string("{not json");
  ASSERT_FALSE(e1.has_value());
  EXPECT_NE(e1.error().find("invalid JSON"), std::string::npos) << e1.error();
  auto e2 = Tokenizer::from_hf_json_string(R"({"version":"1.0"})");
  ASSERT_FALSE(e2.has_value());
  EXPECT_NE(e2.error().find("model"), std::string::npos) << e2.error();
  auto e3 = Tokenizer::from_hf_json_string(R"({"model":{"type":"WordPiece","vocab":{}}})");
  ASSERT_FALSE(e3.has_value());
  EXPECT_NE(e3.error().find("model.type"), std::string::npos) << e3.error();
  EXPECT_NE(e3.error().find("WordPiece"), std::string::npos) << e3.error();
  auto e4 = Tokenizer::from_hf_json_string(
      R"({"model":{"type":"BPE","vocab":{"a":0,"b":1},"merges":["a b"]}})");
  ASSERT_FALSE(e4.has_value());
  EXPECT_NE(e4.error().find("merges[0]"), std::string::npos) << e4.error();
  auto e5 = Tokenizer::from_hf_json_string(
      R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"pre_tokenizer":{"type":"Nope"}})");
  ASSERT_FALSE(e5.has_value());
  EXPECT_NE(e5.error().find("pre_tokenizer"), std::string::npos) << e5.error();
  auto e6 = Tokenizer::from_hf_json_string(
      R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"pre_tokenizer":{"type":"Split","pattern":{"Regex":"("},"behavior":"Isolated"}})");
  ASSERT_FALSE(e6.has_value());
  EXPECT_NE(e6.error().find("regex"), std::string::npos) << e6.error();
  auto e7 = Tokenizer::from_hf_json_string(R"({"model":{"type":"BPE","vocab":[1,2],"merges":[]}})");
  ASSERT_FALSE(e7.has_value());
  EXPECT_NE(e7.error().find("model.vocab"), std::string::npos) << e7.error();
  auto e8 = Tokenizer::from_sentencepiece_model_bytes("\xff\xff\xff", "junk.model");
  ASSERT_FALSE(e8.has_value());
  EXPECT_NE(e8.error().find("junk.model"), std::string::npos) << e8.error();
  auto e9 = Tokenizer::from_hf_json("/nonexistent/tokenizer.json");
  ASSERT_FALSE(e9.has_value());
  EXPECT_NE(e9.error().find("/nonexistent/tokenizer.json"), std::string::npos);
}

// A small hand-written SentencePiece-style tokenizer.json (Llama-2/Mistral layout): merges as
// [a, b] pairs, Prepend+Replace normalizer, ByteFallback/Fuse/Strip decoder, TemplateProcessing.
TEST(Tokenizer, SpmStyleJsonWithPairMerges) {
  const char* js = R"({
    "added_tokens":[{"id":1,"content":"<s>","special":true,"normalized":false},
                    {"id":2,"content":"</s>","special":true,"normalized":false}],
    "normalizer":{"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"▁"},
                  {"type":"Replace","pattern":{"String":" "},"content":"▁"}]},
    "pre_tokenizer":null,
    "post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>","type_id":0}},
        {"Sequence":{"id":"A","type_id":0}}],"pair":[],"special_tokens":{"<s>":{"id":"<s>","ids":[1],"tokens":["<s>"]}}},
    "decoder":{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"String":"▁"},"content":" "},
        {"type":"ByteFallback"},{"type":"Fuse"},{"type":"Strip","content":" ","start":1,"stop":0}]},
    "model":{"type":"BPE","unk_token":"<unk>","byte_fallback":true,"fuse_unk":true,
      "vocab":{"<unk>":0,"<s>":1,"</s>":2,"<0xC3>":3,"<0xA9>":4,"▁":5,"h":6,"i":7,"▁h":8,"▁hi":9},
      "merges":[["▁","h"],["▁h","i"]]}})";
  auto t = Tokenizer::from_hf_json_string(js);
  ASSERT_TRUE(t.has_value()) << t.error();
  EXPECT_EQ(t->encode("hi hi"), (std::vector<int32_t>{1, 9, 9}));
  EXPECT_EQ(t->encode("hi\xC3\xA9", false), (std::vector<int32_t>{9, 3, 4}));
  EXPECT_EQ(t->encode("hi</s>", false), (std::vector<int32_t>{9, 2}));
  std::vector<int32_t> ids{1, 9, 9, 3, 4};
  EXPECT_EQ(t->decode(ids), "<s> hi hi\xC3\xA9");
  EXPECT_EQ(t->decode(ids, true), "hi hi\xC3\xA9");
  EXPECT_EQ(t->bos_id(), 1);
  EXPECT_EQ(t->eos_id(), 2);
}

}  // namespace
}  // namespace fkv
