// Text -> number at full width, then range-checked: the one place front-ends and spec parsers
// turn user text into numbers. Messages name `what` (a flag, key or field) and quote the text as
// the user typed it, never a narrowed value.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/status.h"

namespace fkv {

// A base-10 integer in [lo, hi] (no sign for unsigned use: see parse_uint64).
Expected<int64_t> parse_int_in_range(std::string_view text, const std::string& what, int64_t lo,
                                     int64_t hi);
// A base-10 unsigned 64-bit integer (0 .. 18446744073709551615); a leading '-' is an error.
Expected<uint64_t> parse_uint64(std::string_view text, const std::string& what);
// A finite number (decimal or exponent form) in [lo, hi].
Expected<double> parse_double_in_range(std::string_view text, const std::string& what, double lo,
                                       double hi);

}  // namespace fkv
