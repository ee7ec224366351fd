// UTF-8 encoding of one code point (shared by the tokenizer, NFC and the template lexer), and the
// escaping of bytes from files for error messages.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace fkv {

// Appends the UTF-8 bytes of `cp` (callers pass valid scalar values, <= 0x10FFFF).
inline void append_utf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Bytes from a file or a request (a GGUF string value, a key name) made safe to print in a
// message: printable ASCII and well-formed printable UTF-8 stay as they are; a backslash or a
// double quote gets a backslash; \n, \r, \t are written so; every other byte (controls, DEL,
// C1 controls, bytes that are not well-formed UTF-8) becomes \xNN. Past `max_bytes` input bytes
// the rest is cut and "... (N bytes)" says how long the value was.
inline std::string escape_for_message(std::string_view s, size_t max_bytes = 200) {
  std::string out;
  const size_t n = s.size() < max_bytes ? s.size() : max_bytes;
  auto hex = [&](unsigned char b) {
    char buf[5];
    std::snprintf(buf, sizeof(buf), "\\x%02x", b);
    out += buf;
  };
  size_t i = 0;
  while (i < n) {
    const auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
      if (b == '\\' || b == '"') {
        out += '\\';
        out += static_cast<char>(b);
      } else if (b == '\n') {
        out += "\\n";
      } else if (b == '\r') {
        out += "\\r";
      } else if (b == '\t') {
        out += "\\t";
      } else if (b < 0x20 || b == 0x7F) {
        hex(b);
      } else {
        out += static_cast<char>(b);
      }
      ++i;
      continue;
    }
    // A well-formed sequence (no overlongs, no surrogates, <= U+10FFFF) that fits before the cut.
    size_t len = 0;
    uint32_t cp = 0;
    if (b >= 0xC2 && b <= 0xDF) {
      len = 2, cp = b & 0x1F;
    } else if (b >= 0xE0 && b <= 0xEF) {
      len = 3, cp = b & 0x0F;
    } else if (b >= 0xF0 && b <= 0xF4) {
      len = 4, cp = b & 0x07;
    }
    bool ok = len > 0 && i + len <= n;
    for (size_t k = 1; ok && k < len; ++k) {
      const auto c = static_cast<unsigned char>(s[i + k]);
      ok = (c & 0xC0) == 0x80;
      cp = (cp << 6) | (c & 0x3F);
    }
    ok = ok && !(len == 3 && cp < 0x800) && !(len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) &&
         !(cp >= 0xD800 && cp <= 0xDFFF) && !(cp >= 0x80 && cp <= 0x9F);  // C1 controls
    if (!ok) {
      hex(b);
      ++i;
      continue;
    }
    out.append(s.substr(i, len));
    i += len;
  }
  if (s.size() > n) out += "... (" + std::to_string(s.size()) + " bytes)";
  return out;
}

}  // namespace fkv
