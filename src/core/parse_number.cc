#include "core/parse_number.h"

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>

namespace fkv {
namespace {

// strtoll/strtod accept leading blanks; the user's text must be the number and nothing else.
bool has_outer_space(std::string_view t) {
  return !t.empty() && (std::isspace(static_cast<unsigned char>(t.front())) ||
                        std::isspace(static_cast<unsigned char>(t.back())));
}

}  // namespace

Expected<int64_t> parse_int_in_range(std::string_view text, const std::string& what, int64_t lo,
                                     int64_t hi) {
  const std::string s(text);
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || has_outer_space(s) || *end != '\0') {
    return Status::error(strfmt("%s expects an integer, got '%s'", what.c_str(), s.c_str()));
  }
  if (errno == ERANGE || v < lo || v > hi) {
    return Status::error(strfmt("%s must be in [%lld, %lld], got '%s'", what.c_str(),
                                static_cast<long long>(lo), static_cast<long long>(hi), s.c_str()));
  }
  return static_cast<int64_t>(v);
}

Expected<uint64_t> parse_uint64(std::string_view text, const std::string& what) {
  const std::string s(text);
  if (s.empty() || has_outer_space(s) || s[0] == '-' || s[0] == '+') {
    return Status::error(
        strfmt("%s expects a non-negative integer, got '%s'", what.c_str(), s.c_str()));
  }
  errno = 0;
  char* end = nullptr;
  const unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (*end != '\0') {
    return Status::error(
        strfmt("%s expects a non-negative integer, got '%s'", what.c_str(), s.c_str()));
  }
  if (errno == ERANGE) {
    return Status::error(
        strfmt("%s must be in [0, 18446744073709551615], got '%s'", what.c_str(), s.c_str()));
  }
  return static_cast<uint64_t>(v);
}

Expected<double> parse_double_in_range(std::string_view text, const std::string& what, double lo,
                                       double hi) {
  const std::string s(text);
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (s.empty() || has_outer_space(s) || *end != '\0' || !std::isfinite(v) || errno == ERANGE) {
    return Status::error(strfmt("%s expects a finite number, got '%s'", what.c_str(), s.c_str()));
  }
  if (v < lo || v > hi) {
    return Status::error(
        strfmt("%s must be in [%g, %g], got '%s'", what.c_str(), lo, hi, s.c_str()));
  }
  return v;
}

}  // namespace fkv
