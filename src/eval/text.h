// Python-`str` semantics the official metric scripts rely on, over Unicode code points: UTF-8
// <-> code points, str.split() whitespace, str.lower(), the `\d` and `\w` classes of Python's `re`
// and string.punctuation. The metrics are defined by those Python behaviours, so they live here
// once instead of being approximated per metric.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace fkv::eval {

// Invalid UTF-8 bytes decode to U+FFFD (Python's errors="replace").
std::u32string utf8_to_u32(std::string_view s);
std::string u32_to_utf8(std::u32string_view s);

// str.isspace() as str.split() uses it.
bool py_isspace(char32_t c);
// str.lower() for one code point (ASCII, Latin-1, Latin Extended-A/B pairs, Greek, Cyrillic,
// Armenian, full-width Latin); other scripts have no case and map to themselves.
char32_t py_lower(char32_t c);
std::u32string py_lower(std::u32string_view s);
// re's `\d` in a str pattern: Unicode decimal digits (category Nd).
bool py_isdecimal(char32_t c);
// re's `\w` in a str pattern: letters, digits and '_' (non-ASCII: everything that is not
// whitespace, punctuation or a symbol of the common blocks).
bool py_isword(char32_t c);
// string.punctuation (ASCII).
bool is_ascii_punct(char32_t c);

// str.split() with no argument: runs of whitespace separate, no empty pieces.
std::vector<std::u32string> py_split(std::u32string_view s);
// str.split(sep) with a one-character separator: keeps empty pieces.
std::vector<std::u32string> py_split_on(std::u32string_view s, char32_t sep);
// re.findall(r"\d+", s)
std::vector<std::u32string> find_digit_runs(std::u32string_view s);

}  // namespace fkv::eval
