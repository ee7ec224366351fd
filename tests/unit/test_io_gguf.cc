// GGUF reader: the real stories260K file, and hand-built corrupt images that must give an error
// naming the problem (never a crash; the fuzzer covers the rest).
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "io/gguf.h"

namespace fkv {
namespace {

const std::string kStories = std::string(FKV_SHARED_DIR) + "/models/stories260K/stories260K.gguf";

// Little-endian GGUF image builder for tests.
class Builder {
 public:
  template <class T>
  Builder& put(T v) {
    const size_t at = buf.size();
    buf.resize(at + sizeof(T));
    std::memcpy(buf.data() + at, &v, sizeof(T));
    return *this;
  }
  Builder& str(const std::string& s) {
    put<uint64_t>(s.size());
    buf.insert(buf.end(), s.begin(), s.end());
    return *this;
  }
  Builder& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    put<uint32_t>(0x46554747u).put<uint32_t>(version).put<uint64_t>(n_tensors).put<uint64_t>(n_kv);
    return *this;
  }
  Builder& kv_u32(const std::string& k, uint32_t v) { return str(k).put<uint32_t>(4).put(v); }
  Builder& kv_str(const std::string& k, const std::string& v) {
    return str(k).put<uint32_t>(8).str(v);
  }
  Builder& tensor(const std::string& name, std::vector<int64_t> dims, uint32_t type,
                  uint64_t offset) {
    str(name).put<uint32_t>(static_cast<uint32_t>(dims.size()));
    for (int64_t d : dims) put<int64_t>(d);
    return put<uint32_t>(type).put<uint64_t>(offset);
  }
  Builder& pad(size_t alignment) {
    while (buf.size() % alignment != 0) buf.push_back(0);
    return *this;
  }
  Builder& zeros(size_t n) {
    buf.resize(buf.size() + n, 0);
    return *this;
  }
  Status parse(const std::string& name = "test.gguf") const {
    return parse_gguf_bytes(buf.data(), buf.size(), name);
  }
  std::vector<uint8_t> buf;
};

// A small valid image: every metadata type, two tensors, alignment 64.
Builder valid_image() {
  Builder b;
  b.header(2, 16);
  b.kv_u32("general.alignment", 64);
  b.kv_str("general.architecture", "llama");
  b.str("u8").put<uint32_t>(0).put<uint8_t>(200);
  b.str("i8").put<uint32_t>(1).put<int8_t>(-5);
  b.str("u16").put<uint32_t>(2).put<uint16_t>(60000);
  b.str("i16").put<uint32_t>(3).put<int16_t>(-30000);
  b.str("i32").put<uint32_t>(5).put<int32_t>(-7);
  b.str("f32").put<uint32_t>(6).put<float>(0.5f);
  b.str("bool").put<uint32_t>(7).put<uint8_t>(1);
  b.str("u64").put<uint32_t>(10).put<uint64_t>(~uint64_t{0});
  b.str("i64").put<uint32_t>(11).put<int64_t>(-1234567890123LL);
  b.str("f64").put<uint32_t>(12).put<double>(2.25);
  b.str("strs").put<uint32_t>(9).put<uint32_t>(8).put<uint64_t>(3).str("a").str("").str("ccc");
  b.str("ints").put<uint32_t>(9).put<uint32_t>(5).put<uint64_t>(2).put<int32_t>(-1).put<int32_t>(9);
  b.str("floats").put<uint32_t>(9).put<uint32_t>(6).put<uint64_t>(2).put<float>(1.5f).put<float>(
      -2.f);
  b.str("empty").put<uint32_t>(9).put<uint32_t>(8).put<uint64_t>(0);
  b.tensor("a.weight", {32, 2}, 2 /*q4_0*/, 0);  // 2 blocks * 18 bytes = 36
  b.tensor("b.weight", {3}, 0 /*f32*/, 64);      // 12 bytes
  b.pad(64);
  b.zeros(64 + 12);
  return b;
}

TEST(Gguf, Stories260KParses) {
  auto g = GgufFile::open(kStories);
  ASSERT_TRUE(g.has_value()) << g.error();
  EXPECT_EQ(g->version(), 3u);
  EXPECT_EQ(g->alignment(), 32u);
  EXPECT_EQ(g->metadata().size(), 19u);
  EXPECT_EQ(g->get_string("general.architecture").value(), "llama");
  EXPECT_EQ(g->get_int("llama.block_count").value(), 5);
  EXPECT_EQ(g->get_int("llama.embedding_length").value(), 64);
  EXPECT_EQ(g->get_int("llama.feed_forward_length").value(), 172);
  EXPECT_EQ(g->get_int("llama.attention.head_count").value(), 8);
  EXPECT_EQ(g->get_int("llama.attention.head_count_kv").value(), 4);
  EXPECT_EQ(g->get_int("tokenizer.ggml.seperator_token_id").value(), 4294967295LL);
  EXPECT_FLOAT_EQ(
      static_cast<float>(g->get_float("llama.attention.layer_norm_rms_epsilon").value()), 1e-5f);
  auto tokens = g->get_string_array("tokenizer.ggml.tokens");
  ASSERT_TRUE(tokens.has_value()) << tokens.error();
  ASSERT_EQ(tokens->size(), 512u);
  EXPECT_EQ((*tokens)[0], "<unk>");
  EXPECT_EQ((*tokens)[1], "<s>");
  EXPECT_EQ((*tokens)[2], "</s>");
  EXPECT_EQ(g->get_float_array("tokenizer.ggml.scores")->size(), 512u);
  auto types = g->get_int_array("tokenizer.ggml.token_type");
  ASSERT_TRUE(types.has_value());
  EXPECT_EQ((*types)[0], 2);
  EXPECT_EQ((*types)[1], 3);

  EXPECT_EQ(g->tensors().size(), 48u);
  const GgufTensorInfo* emb = g->find_tensor("token_embd.weight");
  ASSERT_NE(emb, nullptr);
  EXPECT_EQ(emb->dtype, DType::kF32);
  EXPECT_EQ(emb->dims, (std::vector<int64_t>{64, 512}));
  EXPECT_EQ(emb->n_bytes, 131072u);
  EXPECT_EQ(emb->data, g->mapping()->data() + 14176);  // from the gguf package's data_offset
  const GgufTensorInfo* q = g->find_tensor("blk.0.attn_q.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->dims, (std::vector<int64_t>{64, 64}));
  EXPECT_EQ(q->n_elements(), 4096);
  EXPECT_EQ(q->data, g->mapping()->data() + 276576);
  const GgufTensorInfo* k = g->find_tensor("blk.0.attn_k.weight");
  ASSERT_NE(k, nullptr);
  EXPECT_EQ(k->dims, (std::vector<int64_t>{64, 32}));
  EXPECT_EQ(g->find_tensor("output_norm.weight")->dims, (std::vector<int64_t>{64}));
  EXPECT_EQ(g->find_tensor("blk.4.ffn_down.weight")->dims, (std::vector<int64_t>{172, 64}));
  EXPECT_EQ(g->find_tensor("nope"), nullptr);
  for (const auto& t : g->tensors()) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % 32, 0u) << t.name;
  }
}

TEST(Gguf, GetterErrorsNameKeyFileAndType) {
  auto g = GgufFile::open(kStories);
  ASSERT_TRUE(g.has_value()) << g.error();
  auto missing = g->get_int("llama.nonexistent");
  ASSERT_FALSE(missing.has_value());
  EXPECT_NE(missing.error().find("llama.nonexistent"), std::string::npos);
  EXPECT_NE(missing.error().find("stories260K.gguf"), std::string::npos);
  auto wrong = g->get_int("general.architecture");
  ASSERT_FALSE(wrong.has_value());
  EXPECT_NE(wrong.error().find("string"), std::string::npos) << wrong.error();
  EXPECT_FALSE(g->get_string_array("tokenizer.ggml.scores").has_value());
  EXPECT_FALSE(g->get_string("llama.block_count").has_value());
}

TEST(Gguf, MissingFile) {
  auto g = GgufFile::open("/nonexistent/x.gguf");
  ASSERT_FALSE(g.has_value());
  EXPECT_NE(g.error().find("/nonexistent/x.gguf"), std::string::npos);
}

TEST(Gguf, ValidImageAllTypes) {
  Builder b = valid_image();
  ASSERT_TRUE(b.parse().is_ok()) << b.parse().message();
  // Go through a real file too so the typed getters can be exercised.
  const std::string path = ::testing::TempDir() + "/fkv_valid.gguf";
  FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  std::fwrite(b.buf.data(), 1, b.buf.size(), f);
  std::fclose(f);
  auto g = GgufFile::open(path);
  ASSERT_TRUE(g.has_value()) << g.error();
  EXPECT_EQ(g->alignment(), 64u);
  EXPECT_EQ(g->get_int("u8").value(), 200);
  EXPECT_EQ(g->get_int("i8").value(), -5);
  EXPECT_EQ(g->get_int("u16").value(), 60000);
  EXPECT_EQ(g->get_int("i16").value(), -30000);
  EXPECT_EQ(g->get_int("i32").value(), -7);
  EXPECT_EQ(g->get_float("f32").value(), 0.5);
  EXPECT_EQ(g->get_int("bool").value(), 1);
  EXPECT_EQ(g->get_int("u64").value(), -1);  // bit-cast
  EXPECT_EQ(g->get_float("u64").value(), 18446744073709551615.0);
  EXPECT_EQ(g->get_int("i64").value(), -1234567890123LL);
  EXPECT_EQ(g->get_float("f64").value(), 2.25);
  EXPECT_EQ(g->get_float("i32").value(), -7.0);
  EXPECT_EQ(g->get_string_array("strs").value(), (std::vector<std::string>{"a", "", "ccc"}));
  EXPECT_EQ(g->get_int_array("ints").value(), (std::vector<int64_t>{-1, 9}));
  EXPECT_EQ(g->get_float_array("floats").value(), (std::vector<double>{1.5, -2.0}));
  EXPECT_EQ(g->get_float_array("ints").value(), (std::vector<double>{-1.0, 9.0}));
  EXPECT_TRUE(g->get_string_array("empty")->empty());
  EXPECT_FALSE(g->get_int("f32").has_value());
  EXPECT_FALSE(g->get_int_array("floats").has_value());
  const GgufTensorInfo* a = g->find_tensor("a.weight");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->dtype, DType::kQ4_0);
  EXPECT_EQ(a->n_bytes, 36u);
  EXPECT_EQ(a->n_elements(), 64);
  const GgufTensorInfo* bt = g->find_tensor("b.weight");
  ASSERT_NE(bt, nullptr);
  EXPECT_EQ(bt->data - a->data, 64);
  EXPECT_EQ(static_cast<size_t>(bt->data + 12 - g->mapping()->data()), b.buf.size());
  std::remove(path.c_str());
}

// Every proper prefix of a valid image fails cleanly (the last tensor ends at the end of file).
TEST(Gguf, TruncatedAtEveryOffset) {
  Builder b = valid_image();
  for (size_t n = 0; n < b.buf.size(); ++n) {
    Status s = parse_gguf_bytes(b.buf.data(), n, "trunc.gguf");
    EXPECT_FALSE(s.is_ok()) << "prefix " << n;
    EXPECT_NE(s.message().find("trunc.gguf"), std::string::npos) << s.message();
  }
}

TEST(Gguf, Stories260KTruncated) {
  auto file = MappedFile::open(kStories);
  ASSERT_TRUE(file.has_value());
  const uint8_t* d = file.value()->data();
  const size_t size = file.value()->size();
  // Header region (every offset up to the first tensor's data) plus a stride through the data.
  for (size_t n = 0; n < size; n += (n < 14200 ? 1 : 4099)) {
    Status s = parse_gguf_bytes(d, n, "stories-trunc");
    EXPECT_FALSE(s.is_ok()) << "prefix " << n;
  }
  EXPECT_TRUE(parse_gguf_bytes(d, size, "stories").is_ok());
}

// Checks that the image fails and the message contains every needle.
void expect_error(const Builder& b, std::vector<std::string> needles) {
  Status s = b.parse("corrupt.gguf");
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("corrupt.gguf"), std::string::npos) << s.message();
  for (const auto& n : needles) EXPECT_NE(s.message().find(n), std::string::npos) << s.message();
}

TEST(Gguf, BadMagicAndVersion) {
  Builder b = valid_image();
  b.buf[0] = 'X';
  expect_error(b, {"magic"});
  for (uint32_t v : {0u, 1u, 4u, 0x03000000u}) {
    Builder c = valid_image();
    std::memcpy(c.buf.data() + 4, &v, 4);
    expect_error(c, {"version"});
  }
  Builder v2 = valid_image();
  v2.buf[4] = 2;
  EXPECT_TRUE(v2.parse().is_ok());
}

TEST(Gguf, HugeCounts) {
  expect_error(Builder().header(0, ~uint64_t{0}), {"kv count"});
  expect_error(Builder().header(uint64_t{1} << 60, 0), {"tensor count"});
  Builder s;
  s.header(0, 1).str("k").put<uint32_t>(8).put<uint64_t>(~uint64_t{0});
  expect_error(s, {"'k'", "string length"});
  Builder key;
  key.header(0, 1).put<uint64_t>(uint64_t{1} << 62).zeros(16);
  expect_error(key, {"key #0", "string length"});
  Builder arr;
  arr.header(0, 1).str("arr").put<uint32_t>(9).put<uint32_t>(8).put<uint64_t>(uint64_t{1} << 61);
  expect_error(arr, {"'arr'", "array"});
  Builder arr32;
  arr32.header(0, 1).str("a").put<uint32_t>(9).put<uint32_t>(4).put<uint64_t>(1000).zeros(3996);
  expect_error(arr32, {"'a'"});
  Builder strs;  // count fits, but the third string's length runs off the end
  strs.header(0, 1).str("s").put<uint32_t>(9).put<uint32_t>(8).put<uint64_t>(3).str("x").str("y");
  strs.put<uint64_t>(100).zeros(10);
  expect_error(strs, {"'s'[2]", "string length"});
}

TEST(Gguf, BadMetadata) {
  Builder unk;
  unk.header(0, 1).str("k").put<uint32_t>(13).put<uint32_t>(0);
  expect_error(unk, {"'k'", "unknown value type 13"});
  Builder nested;
  nested.header(0, 1).str("n").put<uint32_t>(9).put<uint32_t>(9).put<uint64_t>(1);
  nested.put<uint32_t>(8).put<uint64_t>(0);
  expect_error(nested, {"'n'", "nested"});
  Builder dup;
  dup.header(0, 2).kv_u32("k", 1).kv_u32("k", 2);
  expect_error(dup, {"duplicate key 'k'"});
  Builder align3;
  align3.header(0, 1).kv_u32("general.alignment", 3);
  expect_error(align3, {"general.alignment", "power of two"});
  Builder align0;
  align0.header(0, 1).kv_u32("general.alignment", 0);
  expect_error(align0, {"general.alignment"});
  Builder align_str;
  align_str.header(0, 1).kv_str("general.alignment", "32");
  expect_error(align_str, {"general.alignment", "u32"});
  Builder b;
  b.header(0, 1).str("flag").put<uint32_t>(7).put<uint8_t>(7);
  expect_error(b, {"'flag'", "bool"});
}

// One tensor image with the given descriptor and `data_bytes` of data after the aligned header.
Builder one_tensor(std::vector<int64_t> dims, uint32_t type, uint64_t offset, size_t data_bytes,
                   const std::string& name = "t.weight") {
  Builder b;
  b.header(1, 0).tensor(name, std::move(dims), type, offset).pad(32).zeros(data_bytes);
  return b;
}

TEST(Gguf, BadTensors) {
  EXPECT_TRUE(one_tensor({8}, 0, 0, 32).parse().is_ok());
  expect_error(one_tensor({8}, 0, 32, 32), {"'t.weight'", "outside"});
  expect_error(one_tensor({8}, 0, 0, 31), {"'t.weight'", "outside"});
  expect_error(one_tensor({8}, 0, 16, 64), {"'t.weight'", "alignment"});
  expect_error(one_tensor({8}, 0, ~uint64_t{0} - 31, 64), {"'t.weight'"});
  expect_error(one_tensor({8}, 4, 0, 64), {"'t.weight'", "unknown ggml type 4"});
  expect_error(one_tensor({8}, 99, 0, 64), {"'t.weight'", "unknown ggml type 99"});
  expect_error(one_tensor({1, 1, 1, 1, 1}, 0, 0, 64), {"'t.weight'", "dimensions"});
  expect_error(one_tensor({-1}, 0, 0, 64), {"'t.weight'", "negative"});
  expect_error(one_tensor({int64_t{1} << 40, int64_t{1} << 40}, 0, 0, 64),
               {"'t.weight'", "overflow"});
  expect_error(one_tensor({int64_t{1} << 62}, 0, 0, 64), {"'t.weight'"});  // bytes overflow
  expect_error(one_tensor({int64_t{1} << 40}, 0, 0, 64), {"'t.weight'"});  // past the file
  expect_error(one_tensor({33}, 2, 0, 64), {"'t.weight'", "block"});
  Builder dup;
  dup.header(2, 0).tensor("x", {8}, 0, 0).tensor("x", {8}, 0, 32).pad(32).zeros(64);
  expect_error(dup, {"duplicate tensor 'x'"});
  // Zero-element tensors and scalars (no dims) are legal.
  EXPECT_TRUE(one_tensor({0, 4}, 0, 0, 0).parse().is_ok());
  EXPECT_TRUE(one_tensor({}, 0, 0, 4).parse().is_ok());
}

TEST(Gguf, NoTensorsNeedsNoDataSection) {
  Builder b;
  b.header(0, 1).kv_str("general.architecture", "llama");
  EXPECT_TRUE(b.parse().is_ok()) << b.parse().message();
}

// Flipping any single header byte must never crash (result may be ok or an error).
TEST(Gguf, SingleByteCorruptionsDoNotCrash) {
  const Builder base = valid_image();
  const size_t header_len = base.buf.size() - 64 - 12;
  for (size_t i = 0; i < header_len; ++i) {
    for (uint8_t x : {0x01, 0x80, 0xff}) {
      Builder b = base;
      b.buf[i] ^= x;
      (void)b.parse();
    }
  }
}

}  // namespace
}  // namespace fkv
