// Dequantisation: bit-exact against goldens from the gguf package's NumPy dequantisers
// (tools/scripts/make_quant_goldens.py), and the dispatched (SIMD) path bit-exact against scalar.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "quant/quant.h"

namespace fkv {
namespace {

std::vector<uint8_t> from_hex(const std::string& s) {
  std::vector<uint8_t> out(s.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) out[i] = std::stoi(s.substr(2 * i, 2), nullptr, 16);
  return out;
}

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

nlohmann::json load_goldens() {
  const std::string path = std::string(FKV_SOURCE_DIR) + "/tests/data/goldens/quant_dequant.json";
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  return nlohmann::json::parse(in);
}

const std::vector<DType> kAllTypes = {DType::kF32,  DType::kF16,  DType::kBF16, DType::kQ4_0,
                                      DType::kQ4_1, DType::kQ5_0, DType::kQ5_1, DType::kQ8_0,
                                      DType::kQ2_K, DType::kQ3_K, DType::kQ4_K, DType::kQ5_K,
                                      DType::kQ6_K};

// Compares a dequantised row with the expected f32 bit patterns; reports the first mismatches.
void expect_bits_equal(const std::vector<float>& got, const std::vector<float>& want,
                       const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (bits(got[i]) != bits(want[i]) && ++bad <= 5) {
      ADD_FAILURE() << what << ": element " << i << " got " << got[i] << " (0x" << std::hex
                    << bits(got[i]) << ") want " << want[i] << " (0x" << bits(want[i]) << ")"
                    << std::dec;
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << got.size() << " elements differ";
}

TEST(Quant, GoldensCoverEveryType) {
  const auto doc = load_goldens();
  std::vector<DType> seen;
  for (const auto& c : doc["cases"]) seen.push_back(static_cast<DType>(c["type_id"].get<int>()));
  for (DType t : kAllTypes) {
    EXPECT_TRUE(can_dequantize(t)) << dtype_name(t);
    EXPECT_NE(std::find(seen.begin(), seen.end(), t), seen.end()) << dtype_name(t);
  }
  EXPECT_FALSE(can_dequantize(DType::kQ8_K));
  EXPECT_FALSE(can_dequantize(DType::kI32));
}

// Both the dispatched path and the scalar path, each over the whole row and block by block.
TEST(Quant, BitExactAgainstGgufPackage) {
  const auto doc = load_goldens();
  std::printf("dequantize_row dispatches to: %s\n", dequantize_isa());
  for (const auto& c : doc["cases"]) {
    const DType t = static_cast<DType>(c["type_id"].get<int>());
    const std::string name = c["type"].get<std::string>();
    ASSERT_STREQ(dtype_name(t), name.c_str());
    const int64_t n = c["n"].get<int64_t>();
    const std::vector<uint8_t> raw = from_hex(c["bytes_hex"].get<std::string>());
    const std::vector<uint8_t> want_bytes = from_hex(c["expected_f32_le_hex"].get<std::string>());
    ASSERT_EQ(raw.size(), dtype_row_bytes(t, n)) << name;
    ASSERT_EQ(want_bytes.size(), static_cast<size_t>(n) * 4) << name;
    std::vector<float> want(n);
    std::memcpy(want.data(), want_bytes.data(), want_bytes.size());

    std::vector<float> got(n, -1.f);
    dequantize_row(t, raw.data(), got.data(), n);
    expect_bits_equal(got, want, name + " dispatched");
    std::vector<float> got_scalar(n, -1.f);
    dequantize_row_scalar(t, raw.data(), got_scalar.data(), n);
    expect_bits_equal(got_scalar, want, name + " scalar");

    const auto info = dtype_info(t).value();
    const int64_t per = info.block_elems == 1 ? 8 : info.block_elems;  // plain types: 8 at a time
    std::vector<float> blockwise(n, -1.f);
    for (int64_t e = 0; e < n; e += per) {
      dequantize_row(t, raw.data() + dtype_row_bytes(t, e), blockwise.data() + e, per);
    }
    expect_bits_equal(blockwise, want, name + " block by block");
  }
}

// Random blocks (random bit patterns in scale fields too, including NaN/inf) over long rows:
// the dispatched path must equal scalar bit for bit, whatever the ISA.
TEST(Quant, DispatchedEqualsScalarOnRandomRows) {
  std::mt19937_64 rng(7);
  for (DType t : kAllTypes) {
    const auto info = dtype_info(t).value();
    for (int64_t blocks : {1, 2, 3, 7, 33}) {
      const int64_t n = blocks * (info.block_elems == 1 ? 37 : info.block_elems);
      std::vector<uint8_t> raw(dtype_row_bytes(t, n) + 64);
      for (auto& b : raw) b = static_cast<uint8_t>(rng());
      for (int offset : {0, 1}) {  // rows are not always aligned in the file
        std::vector<float> a(n + 1, 0.f), s(n + 1, 0.f);
        a[n] = s[n] = 12345.f;  // guard: nothing written past n
        dequantize_row(t, raw.data() + offset, a.data(), n);
        dequantize_row_scalar(t, raw.data() + offset, s.data(), n);
        EXPECT_EQ(a[n], 12345.f) << dtype_name(t);
        EXPECT_EQ(s[n], 12345.f) << dtype_name(t);
        a.resize(n);
        s.resize(n);
        expect_bits_equal(a, s, std::string(dtype_name(t)) + " n=" + std::to_string(n));
      }
    }
  }
}

TEST(Quant, KnownValues) {
  // q8_0: d = 0.5 (f16 0x3800), qs = -128, 0, 1, 127, ...
  uint8_t q8[34] = {0x00, 0x38};
  q8[2] = 0x80;
  q8[3] = 0;
  q8[4] = 1;
  q8[5] = 127;
  float y[32];
  dequantize_row(DType::kQ8_0, q8, y, 32);
  EXPECT_EQ(y[0], -64.f);
  EXPECT_EQ(y[1], 0.f);
  EXPECT_EQ(y[2], 0.5f);
  EXPECT_EQ(y[3], 63.5f);
  // q4_0: d = 1, qs[0] = 0xF0 -> element 0 = 0 - 8, element 16 = 15 - 8.
  uint8_t q4[18] = {0x00, 0x3c, 0xf0};
  dequantize_row(DType::kQ4_0, q4, y, 32);
  EXPECT_EQ(y[0], -8.f);
  EXPECT_EQ(y[16], 7.f);
  EXPECT_EQ(y[1], -8.f);
  // bf16 / f16
  const uint16_t h[2] = {0x3f80, 0xc000};
  dequantize_row(DType::kBF16, h, y, 2);
  EXPECT_EQ(y[0], 1.f);
  EXPECT_EQ(y[1], -2.f);
  const uint16_t f[2] = {0x3c00, 0x0001};
  dequantize_row(DType::kF16, f, y, 2);
  EXPECT_EQ(y[0], 1.f);
  EXPECT_EQ(y[1], std::ldexp(1.f, -24));
}

}  // namespace
}  // namespace fkv
