#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "io/safetensors.h"

namespace fkv {
namespace {
namespace fs = std::filesystem;

// Builds a safetensors image: 8-byte little-endian header length, JSON header, data.
std::string image(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

Status parse(const std::string& img, std::map<std::string, SafetensorsTensor>& out) {
  return parse_safetensors(reinterpret_cast<const uint8_t*>(img.data()), img.size(),
                           "t.safetensors", out);
}

TEST(Safetensors, ParsesTensorsAndMetadata) {
  std::string data(4 * 6 + 2 * 3, '\0');
  const std::string img = image(
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
      R"("b":{"dtype":"BF16","shape":[3],"data_offsets":[24,30]}})",
      data);
  std::map<std::string, SafetensorsTensor> t;
  ASSERT_TRUE(parse(img, t).is_ok());
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t["a"].shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(t["a"].dtype, DType::kF32);
  EXPECT_EQ(t["b"].dtype, DType::kBF16);
  EXPECT_EQ(t["b"].n_bytes, 6u);
}

struct BadCase {
  const char* what;
  std::string img;
  const char* must_mention;
};

TEST(Safetensors, RejectsMalformedFilesWithClearMessages) {
  const std::string ok_hdr = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  std::vector<BadCase> cases = {
      {"too short", std::string("abc"), "truncated"},
      {"header past end", image(ok_hdr, "").substr(0, 20), "header length"},
      {"not json", image("{nope", std::string(8, '\0')), "JSON"},
      {"data truncated", image(ok_hdr, std::string(4, '\0')), "out of range"},
      {"unknown dtype",
       image(R"({"w":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", std::string(2, '\0')),
       "F8_E4M3"},
      {"size mismatch",
       image(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0')),
       "need 12"},
      {"negative shape",
       image(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,8]}})", std::string(8, '\0')),
       "shape"},
      {"offsets reversed",
       image(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", std::string(8, '\0')),
       "out of range"},
      {"missing dtype", image(R"({"w":{"shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0')),
       "dtype"},
      {"huge shape",
       image(R"({"w":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,8]}})",
             std::string(8, '\0')),
       "large"},
  };
  for (const auto& c : cases) {
    std::map<std::string, SafetensorsTensor> t;
    Status st = parse(c.img, t);
    EXPECT_FALSE(st.is_ok()) << c.what;
    EXPECT_NE(st.message().find(c.must_mention), std::string::npos)
        << c.what << ": " << st.message();
    EXPECT_NE(st.message().find("t.safetensors"), std::string::npos) << c.what;
  }
}

TEST(Safetensors, TruncatedAtEveryByteNeverCrashes) {
  std::string data(8, '\1');
  const std::string img = image(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", data);
  for (size_t n = 0; n < img.size(); ++n) {
    std::map<std::string, SafetensorsTensor> t;
    EXPECT_FALSE(parse(img.substr(0, n), t).is_ok()) << "length " << n;
  }
}

TEST(Safetensors, ShardedArchiveNamesMissingTensorAndShard) {
  const fs::path dir = fs::temp_directory_path() / "fkv_test_sharded";
  fs::remove_all(dir);
  fs::create_directories(dir);
  auto write = [&](const std::string& name, const std::string& bytes) {
    std::ofstream(dir / name, std::ios::binary) << bytes;
  };
  write("a.safetensors",
        image(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", std::string(4, '\0')));
  write("b.safetensors",
        image(R"({"y":{"dtype":"F16","shape":[1],"data_offsets":[0,2]}})", std::string(2, '\0')));
  write("model.safetensors.index.json",
        R"({"weight_map":{"x":"a.safetensors","y":"b.safetensors"}})");
  auto ok = SafetensorsArchive::open(dir.string());
  ASSERT_TRUE(ok.has_value()) << ok.error();
  EXPECT_NE(ok->find("x"), nullptr);
  EXPECT_NE(ok->find("y"), nullptr);

  write("model.safetensors.index.json",
        R"({"weight_map":{"x":"a.safetensors","z":"b.safetensors"}})");
  auto missing = SafetensorsArchive::open(dir.string());
  ASSERT_FALSE(missing.has_value());
  EXPECT_NE(missing.error().find("'z'"), std::string::npos) << missing.error();

  write("model.safetensors.index.json", R"({"weight_map":{"x":"gone.safetensors"}})");
  auto gone = SafetensorsArchive::open(dir.string());
  ASSERT_FALSE(gone.has_value());
  EXPECT_NE(gone.error().find("gone.safetensors"), std::string::npos) << gone.error();

  write("model.safetensors.index.json", "{not json");
  auto bad = SafetensorsArchive::open(dir.string());
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.error().find("index.json"), std::string::npos) << bad.error();
  fs::remove_all(dir);
}

// Issue 21: an index whose weight_map (or one entry of it) has the wrong type says what it holds
// and what it must be (it used to say "missing object field"); header fields likewise.
TEST(Safetensors, FieldOfWrongTypeSaysWhatItHoldsNotMissing) {
  const fs::path dir = fs::temp_directory_path() / "fkv_test_index_types";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string index = (dir / "model.safetensors.index.json").string();
  auto open_error = [&](const std::string& text) {
    std::ofstream(index, std::ios::trunc) << text;
    auto a = SafetensorsArchive::open(dir.string());
    return a.has_value() ? std::string("(opened without error)") : a.error();
  };
  EXPECT_EQ(
      open_error(R"({"weight_map": 5})"),
      index + ": field 'weight_map' must be an object of tensor name -> shard file name, got 5");
  EXPECT_EQ(open_error(R"({"weight_map": ["a.safetensors"]})"),
            index +
                ": field 'weight_map' must be an object of tensor name -> shard file name, got "
                "[\"a.safetensors\"]");
  EXPECT_EQ(open_error(R"({"metadata": {}})"),
            index + ": missing field 'weight_map' (an object of tensor name -> shard file name)");
  EXPECT_EQ(open_error(R"({"weight_map": {"x": 3}})"),
            index + ": weight_map['x'] must be a shard file name (a string), got 3");
  EXPECT_EQ(open_error("[1, 2]"),
            index + ": must hold a JSON object with a 'weight_map', got [1,2]");
  fs::remove_all(dir);

  std::map<std::string, SafetensorsTensor> t;
  Status st = parse(
      image(R"({"w":{"dtype":5,"shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0')), t);
  EXPECT_EQ(st.message(), "t.safetensors: tensor 'w': field 'dtype' must be a string, got 5");
  st = parse(image(R"({"w":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", std::string(8, '\0')),
             t);
  EXPECT_EQ(st.message(),
            "t.safetensors: tensor 'w': field 'shape' must be an array of integers, got 2");
  st = parse(image(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", std::string(8, '\0')),
             t);
  EXPECT_EQ(st.message(),
            "t.safetensors: tensor 'w': field 'data_offsets' must be an array [begin, end], got "
            "[0]");
  st = parse(image(R"({"w":{"dtype":"F32","shape":[2]}})", std::string(8, '\0')), t);
  EXPECT_EQ(st.message(),
            "t.safetensors: tensor 'w': missing field 'data_offsets' (an array [begin, end])");
}

}  // namespace
}  // namespace fkv
