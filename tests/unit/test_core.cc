#include <gtest/gtest.h>

#include <cmath>

#include "core/dtype.h"
#include "core/mmap_file.h"
#include "core/status.h"

namespace fkv {
namespace {

TEST(Status, ExpectedCarriesErrorMessage) {
  Expected<int> e = Status::error("bad thing 'x'");
  EXPECT_FALSE(e.has_value());
  EXPECT_EQ(e.error(), "bad thing 'x'");
  Expected<int> v = 3;
  EXPECT_EQ(v.value(), 3);
}

TEST(Dtype, HalfConversionsRoundTripEveryF16) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    EXPECT_EQ(f32_to_f16(f), h) << "h=" << h;
  }
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // rounds to inf
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.5f)), 1.5f);
  EXPECT_EQ(f32_to_bf16(1.00390625f), 0x3f80);  // tie -> even
}

TEST(Dtype, RowBytes) {
  EXPECT_EQ(dtype_row_bytes(DType::kQ4_0, 64), 36u);
  EXPECT_EQ(dtype_row_bytes(DType::kQ6_K, 512), 420u);
  EXPECT_EQ(dtype_row_bytes(DType::kBF16, 10), 20u);
}

TEST(MappedFile, MissingFileNamesPath) {
  auto f = MappedFile::open("/nonexistent/model.safetensors");
  ASSERT_FALSE(f.has_value());
  EXPECT_NE(f.error().find("/nonexistent/model.safetensors"), std::string::npos);
}

}  // namespace
}  // namespace fkv
