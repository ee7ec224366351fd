#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "core/dtype.h"
#include "core/mmap_file.h"
#include "core/status.h"
#include "core/utf8.h"

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

// Issue 21: bytes from a file quoted in a message: printable ASCII and well-formed UTF-8 stay,
// everything else is \xNN, so no raw byte reaches the terminal.
TEST(EscapeForMessage, NonPrintableAndInvalidUtf8BecomeHexEscapes) {
  EXPECT_EQ(escape_for_message("llama"), "llama");
  EXPECT_EQ(escape_for_message("a\"b\\c"), "a\\\"b\\\\c");
  EXPECT_EQ(escape_for_message("t\tn\nr\r"), "t\\tn\\nr\\r");
  EXPECT_EQ(escape_for_message(std::string("\x00\x1b[31m\x7f", 7)), "\\x00\\x1b[31m\\x7f");
  EXPECT_EQ(escape_for_message("\xff\xfe"), "\\xff\\xfe");
  EXPECT_EQ(escape_for_message("caf\xc3\xa9 \xe4\xb8\xad"), "caf\xc3\xa9 \xe4\xb8\xad");
  EXPECT_EQ(escape_for_message("\xe4\xb8"), "\\xe4\\xb8");                    // cut sequence
  EXPECT_EQ(escape_for_message("\xc0\xaf"), "\\xc0\\xaf");                    // overlong '/'
  EXPECT_EQ(escape_for_message("\xed\xa0\x80"), "\\xed\\xa0\\x80");           // surrogate
  EXPECT_EQ(escape_for_message("\xf4\x90\x80\x80"), "\\xf4\\x90\\x80\\x80");  // > U+10FFFF
  EXPECT_EQ(escape_for_message("\xc2\x85"), "\\xc2\\x85");                    // C1 control (NEL)
  EXPECT_EQ(escape_for_message("\xf0\x9f\x98\x80"), "\xf0\x9f\x98\x80");      // U+1F600
  EXPECT_EQ(escape_for_message(std::string(300, 'x'), 4), "xxxx... (300 bytes)");
  EXPECT_EQ(escape_for_message("ab\xe4\xb8\xad", 3), "ab\\xe4... (5 bytes)");  // cut mid-char
}

}  // namespace
}  // namespace fkv
