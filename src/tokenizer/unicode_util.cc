// UTF-8 and GPT-2 byte-level helpers, and the PCRE2 wrapper.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "core/utf8.h"
#include "tokenizer/tokenizer_impl.h"

namespace fkv {

const char* const kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char* const kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

size_t utf8_len(unsigned char c) {
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) return 2;
  if ((c & 0xF0) == 0xE0) return 3;
  if ((c & 0xF8) == 0xF0) return 4;
  return 1;
}

// Decodes one code point at s[i]; false (and i advanced by 1) on invalid UTF-8.
bool next_codepoint(std::string_view s, size_t& i, uint32_t& cp) {
  unsigned char c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) {
    cp = c;
    ++i;
    return true;
  }
  size_t n = 0;
  uint32_t min = 0;
  if ((c & 0xE0) == 0xC0) {
    n = 2, cp = c & 0x1F, min = 0x80;
  } else if ((c & 0xF0) == 0xE0) {
    n = 3, cp = c & 0x0F, min = 0x800;
  } else if ((c & 0xF8) == 0xF0) {
    n = 4, cp = c & 0x07, min = 0x10000;
  } else {
    ++i;
    return false;
  }
  if (i + n > s.size()) {
    ++i;
    return false;
  }
  for (size_t k = 1; k < n; ++k) {
    unsigned char d = static_cast<unsigned char>(s[i + k]);
    if ((d & 0xC0) != 0x80) {
      ++i;
      return false;
    }
    cp = (cp << 6) | (d & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
    ++i;
    return false;
  }
  i += n;
  return true;
}

// Length of the longest prefix that is complete valid UTF-8. When !final, an incomplete but so
// far valid sequence at the end is left out; an invalid byte stops the prefix either way.
size_t utf8_valid_prefix(std::string_view s, bool final) {
  size_t i = 0;
  while (i < s.size()) {
    size_t j = i;
    uint32_t cp;
    if (!next_codepoint(s, j, cp)) return i;
    i = j;
  }
  return i;
}

std::string utf8_sanitize(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    size_t j = i;
    uint32_t cp;
    if (next_codepoint(s, j, cp)) {
      out.append(s.substr(i, j - i));
    } else {
      out.append("\xEF\xBF\xBD");
    }
    i = j;
  }
  return out;
}

static std::string encode_cp(uint32_t cp) {
  std::string o;
  append_utf8(cp, o);
  return o;
}

// GPT-2 maps printable bytes to themselves and the rest to U+0100.. in byte order, so every
// byte has a visible, whitespace-free character.
static std::array<uint32_t, 256> byte_cps() {
  std::array<uint32_t, 256> cps{};
  int n = 0;
  for (int b = 0; b < 256; ++b) {
    bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
    cps[b] = printable ? b : 256 + n++;
  }
  return cps;
}

const std::array<std::string, 256>& byte_to_unicode() {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    auto cps = byte_cps();
    for (int b = 0; b < 256; ++b) t[b] = encode_cp(cps[b]);
    return t;
  }();
  return table;
}

int byte_level_char_to_byte(uint32_t cp) {
  static const std::unordered_map<uint32_t, int> inv = [] {
    std::unordered_map<uint32_t, int> m;
    auto cps = byte_cps();
    for (int b = 0; b < 256; ++b) m[cps[b]] = b;
    return m;
  }();
  auto it = inv.find(cp);
  return it == inv.end() ? -1 : it->second;
}

std::string regex_escape(std::string_view lit) {
  std::string o;
  for (char c : lit) {
    if (std::string_view("\\^$.|?*+()[]{}-/#").find(c) != std::string_view::npos) o += '\\';
    o += c;
  }
  return o;
}

Expected<std::shared_ptr<Regex>> Regex::compile(const std::string& pattern) {
  int err = 0;
  PCRE2_SIZE off = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP, &err, &off, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(err, buf, sizeof(buf));
    return Status::error(strfmt("regex \"%s\": %s at offset %zu", pattern.c_str(),
                                reinterpret_cast<char*>(buf), static_cast<size_t>(off)));
  }
  std::shared_ptr<Regex> re(new Regex());
  re->code_ = code;
  re->jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  return re;
}

Regex::~Regex() {
  if (code_ != nullptr) pcre2_code_free(static_cast<pcre2_code*>(code_));
}

std::vector<std::pair<size_t, size_t>> Regex::find_all(std::string_view text) const {
  std::vector<std::pair<size_t, size_t>> out;
  auto* code = static_cast<pcre2_code*>(code_);
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code, nullptr);
  auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  while (pos <= text.size()) {
    // Input was sanitized to valid UTF-8 by the caller.
    int rc = jit_
                 ? pcre2_jit_match(code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, md, nullptr)
                 : pcre2_match(code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc < 0) break;
    PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    size_t b = ov[0], e = ov[1];
    if (e > b) {
      out.emplace_back(b, e);
      pos = e;
    } else {
      // Empty match: step over one code point.
      pos = b + (b < text.size() ? utf8_len(static_cast<unsigned char>(text[b])) : 1);
    }
  }
  pcre2_match_data_free(md);
  return out;
}

}  // namespace fkv
