#include "chat/jinja_lexer.h"

#include <cctype>
#include <cstdint>
#include <cstring>

#include "chat/jinja_value.h"
#include "core/utf8.h"

namespace fkv::jinja {
namespace {

class Lexer {
 public:
  explicit Lexer(const std::string& src) {
    // jinja2 normalizes \r\n and \r to \n (newline_sequence) in text and string literals.
    src_.reserve(src.size());
    for (size_t k = 0; k < src.size(); ++k) {
      if (src[k] == '\r') {
        src_ += '\n';
        if (k + 1 < src.size() && src[k + 1] == '\n') ++k;
      } else {
        src_ += src[k];
      }
    }
    // jinja2 drops one trailing newline (keep_trailing_newline=False).
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();
  }

  std::vector<Token> run() {
    bool line_starting = true;
    while (pos_ < src_.size()) {
      const size_t tag = find_tag_start(pos_);
      std::string text = src_.substr(pos_, tag - pos_);
      const int text_line = line_, text_col = col_;
      if (tag < src_.size()) {
        const char kind = src_[tag + 1];  // '{', '%' or '#'
        const char mod = tag + 2 < src_.size() ? src_[tag + 2] : '\0';
        if (mod == '-') {
          rstrip_all(text);
        } else if (kind != '{' && mod != '+') {
          // lstrip_blocks: drop spaces/tabs between the line start and a block/comment tag.
          const size_t nl = text.rfind('\n');
          const size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
          if (l_pos > 0 || line_starting) {
            bool only_blank = true;
            for (size_t k = l_pos; k < text.size(); ++k) {
              if (text[k] != ' ' && text[k] != '\t') only_blank = false;
            }
            if (only_blank) text.resize(l_pos);
          }
        }
      }
      if (!text.empty()) out_.push_back({Tok::kText, text, text_line, text_col});
      advance_to(tag);
      if (pos_ >= src_.size()) break;
      const char kind = src_[pos_ + 1];
      const int tag_line = line_, tag_col = col_;
      advance_to(pos_ + 2);
      if (pos_ < src_.size() && (src_[pos_] == '-' || src_[pos_] == '+')) advance_to(pos_ + 1);
      if (kind == '%' && lex_raw(tag_line, tag_col, line_starting)) continue;
      if (kind == '#') {
        const size_t close = src_.find("#}", pos_);
        if (close == std::string::npos) fail(tag_line, tag_col, "missing end of comment tag");
        const bool strip = close > pos_ && src_[close - 1] == '-';
        advance_to(close + 2);
        line_starting = after_tag_end(strip, true);
        continue;
      }
      out_.push_back({kind == '{' ? Tok::kVarBegin : Tok::kBlockBegin, "", tag_line, tag_col});
      line_starting = lex_tag_body(kind == '{', tag_line, tag_col);
    }
    out_.push_back({Tok::kEof, "", line_, col_});
    return std::move(out_);
  }

 private:
  [[noreturn]] void fail(int line, int col, const std::string& msg) {
    throw JinjaError("line " + std::to_string(line) + ", col " + std::to_string(col) + ": " + msg);
  }

  size_t find_tag_start(size_t from) const {
    for (size_t k = from; k + 1 < src_.size(); ++k) {
      if (src_[k] == '{' && (src_[k + 1] == '{' || src_[k + 1] == '%' || src_[k + 1] == '#')) {
        return k;
      }
    }
    return src_.size();
  }

  void advance_to(size_t p) {
    for (; pos_ < p && pos_ < src_.size(); ++pos_) {
      if (src_[pos_] == '\n') {
        ++line_;
        col_ = 1;
      } else {
        ++col_;
      }
    }
  }

  static void rstrip_all(std::string& s) {
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  }

  // After a closing tag: `-` strips all following whitespace; block/comment tags drop one
  // newline (trim_blocks). Returns whether the consumed text ends a line (jinja2's
  // line_starting, which gates lstrip_blocks at the next tag).
  bool after_tag_end(bool strip, bool is_block) {
    const size_t start = pos_;
    if (strip) {
      size_t p = pos_;
      while (p < src_.size() && std::isspace(static_cast<unsigned char>(src_[p]))) ++p;
      advance_to(p);
    } else if (is_block && pos_ < src_.size() && src_[pos_] == '\n') {
      advance_to(pos_ + 1);
    }
    return pos_ > start && src_[pos_ - 1] == '\n';
  }

  // Matches `\s*word\s*` then a block end at `p`; returns the position after the end and sets
  // `strip` for `-%}` / `plus` for `+%}`, or npos.
  size_t match_tag_word(size_t p, const char* word, bool* strip, bool* plus) const {
    auto skip_ws = [&](size_t q) {
      while (q < src_.size() && std::isspace(static_cast<unsigned char>(src_[q]))) ++q;
      return q;
    };
    p = skip_ws(p);
    const size_t n = std::strlen(word);
    if (src_.compare(p, n, word) != 0) return std::string::npos;
    p += n;
    if (p < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[p])) || src_[p] == '_')) {
      return std::string::npos;
    }
    p = skip_ws(p);
    *strip = *plus = false;
    if (src_.compare(p, 2, "%}") == 0) return p + 2;
    if (src_.compare(p, 3, "-%}") == 0) {
      *strip = true;
      return p + 3;
    }
    if (src_.compare(p, 3, "+%}") == 0) {
      *plus = true;
      return p + 3;
    }
    return std::string::npos;
  }

  // {% raw %}...{% endraw %}: the body is emitted as text, untouched by the tag syntax.
  // pos_ is just after `{%` and its modifier. Returns false when this is not a raw tag.
  bool lex_raw(int tag_line, int tag_col, bool& line_starting) {
    bool strip = false, plus = false;
    const size_t body = match_tag_word(pos_, "raw", &strip, &plus);
    if (body == std::string::npos) return false;
    advance_to(body);
    // After `raw -%}` whitespace goes; trim_blocks does not apply to the raw opener.
    if (strip) {
      while (pos_ < src_.size() && std::isspace(static_cast<unsigned char>(src_[pos_]))) {
        advance_to(pos_ + 1);
      }
    }
    const bool raw_line_starting = pos_ > 0 && src_[pos_ - 1] == '\n';
    for (size_t k = src_.find("{%", pos_); k != std::string::npos; k = src_.find("{%", k + 1)) {
      size_t q = k + 2;
      const char mod = q < src_.size() ? src_[q] : '\0';
      if (mod == '-' || mod == '+') ++q;
      bool end_strip = false, end_plus = false;
      const size_t end = match_tag_word(q, "endraw", &end_strip, &end_plus);
      if (end == std::string::npos) continue;
      std::string text = src_.substr(pos_, k - pos_);
      if (mod == '-') {
        rstrip_all(text);
      } else if (mod != '+') {
        const size_t nl = text.rfind('\n');
        const size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
        if (l_pos > 0 || raw_line_starting) {
          bool only_blank = true;
          for (size_t i = l_pos; i < text.size(); ++i) {
            if (text[i] != ' ' && text[i] != '\t') only_blank = false;
          }
          if (only_blank) text.resize(l_pos);
        }
      }
      if (!text.empty()) out_.push_back({Tok::kText, text, line_, col_});
      advance_to(end);
      line_starting = end_plus ? false : after_tag_end(end_strip, true);
      return true;
    }
    fail(tag_line, tag_col, "missing {% endraw %} for {% raw %}");
  }

  bool lex_tag_body(bool is_var, int tag_line, int tag_col) {
    int depth = 0;
    while (true) {
      while (pos_ < src_.size() && std::isspace(static_cast<unsigned char>(src_[pos_]))) {
        advance_to(pos_ + 1);
      }
      if (pos_ >= src_.size()) {
        fail(tag_line, tag_col,
             is_var ? "unexpected end of template, expected '}}'"
                    : "unexpected end of template, expected '%}'");
      }
      const int line = line_, col = col_;
      if (depth == 0) {
        const char* close = is_var ? "}}" : "%}";
        bool strip = false;
        size_t len = 0;
        if (src_.compare(pos_, 2, close) == 0) {
          len = 2;
        } else if ((src_[pos_] == '-' || (!is_var && src_[pos_] == '+')) &&
                   src_.compare(pos_ + 1, 2, close) == 0) {
          strip = src_[pos_] == '-';
          len = 3;
          if (src_[pos_] == '+') {
            advance_to(pos_ + len);
            out_.push_back({is_var ? Tok::kVarEnd : Tok::kBlockEnd, "", line, col});
            return false;
          }
        }
        if (len) {
          advance_to(pos_ + len);
          out_.push_back({is_var ? Tok::kVarEnd : Tok::kBlockEnd, "", line, col});
          return after_tag_end(strip, !is_var);
        }
      }
      const char c = src_[pos_];
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t p = pos_;
        while (p < src_.size() &&
               (std::isalnum(static_cast<unsigned char>(src_[p])) || src_[p] == '_')) {
          ++p;
        }
        out_.push_back({Tok::kName, src_.substr(pos_, p - pos_), line, col});
        advance_to(p);
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        lex_number(line, col);
      } else if (c == '\'' || c == '"') {
        lex_string(line, col);
      } else {
        static const char* kTwo[] = {"//", "**", "==", "!=", "<=", ">="};
        std::string op;
        for (const char* t : kTwo) {
          if (src_.compare(pos_, 2, t) == 0) op = t;
        }
        if (op.empty()) {
          if (std::string("+-*/%~<>=()[]{},.:|").find(c) == std::string::npos) {
            fail(line, col, std::string("unexpected character '") + c + "'");
          }
          op = std::string(1, c);
        }
        if (op == "(" || op == "[" || op == "{") ++depth;
        if (op == ")" || op == "]" || op == "}") {
          if (depth == 0) fail(line, col, "unexpected '" + op + "'");
          --depth;
        }
        out_.push_back({Tok::kOp, op, line, col});
        advance_to(pos_ + op.size());
      }
    }
  }

  void lex_number(int line, int col) {
    size_t p = pos_;
    auto digits = [&] {
      while (p < src_.size() &&
             (std::isdigit(static_cast<unsigned char>(src_[p])) || src_[p] == '_'))
        ++p;
    };
    digits();
    bool is_float = false;
    if (p + 1 < src_.size() && src_[p] == '.' &&
        std::isdigit(static_cast<unsigned char>(src_[p + 1]))) {
      is_float = true;
      ++p;
      digits();
    }
    if (p < src_.size() && (src_[p] == 'e' || src_[p] == 'E')) {
      size_t q = p + 1;
      if (q < src_.size() && (src_[q] == '+' || src_[q] == '-')) ++q;
      if (q < src_.size() && std::isdigit(static_cast<unsigned char>(src_[q]))) {
        is_float = true;
        p = q;
        digits();
      }
    }
    std::string text;
    for (size_t k = pos_; k < p; ++k) {
      if (src_[k] != '_') text += src_[k];
    }
    out_.push_back({is_float ? Tok::kFloat : Tok::kInt, text, line, col});
    advance_to(p);
  }

  void lex_string(int line, int col) {
    const char quote = src_[pos_];
    size_t p = pos_ + 1;
    std::string value;
    while (true) {
      if (p >= src_.size()) fail(line, col, "unterminated string literal");
      const char c = src_[p];
      if (c == quote) break;
      if (c != '\\' || p + 1 >= src_.size()) {
        value += c;
        ++p;
        continue;
      }
      const char e = src_[p + 1];
      p += 2;
      switch (e) {
        case 'n':
          value += '\n';
          break;
        case 't':
          value += '\t';
          break;
        case 'r':
          value += '\r';
          break;
        case '0':
          value += '\0';
          break;
        case 'a':
          value += '\a';
          break;
        case 'b':
          value += '\b';
          break;
        case 'f':
          value += '\f';
          break;
        case 'v':
          value += '\v';
          break;
        case '\\':
          value += '\\';
          break;
        case '\'':
          value += '\'';
          break;
        case '"':
          value += '"';
          break;
        case '\n':
          break;  // line continuation
        case 'x':
        case 'u':
        case 'U': {
          const size_t n = e == 'x' ? 2 : (e == 'u' ? 4 : 8);
          if (p + n > src_.size()) fail(line, col, "truncated escape in string literal");
          uint32_t cp = 0;
          for (size_t k = 0; k < n; ++k) {
            const char h = src_[p + k];
            if (!std::isxdigit(static_cast<unsigned char>(h))) {
              fail(line, col, "bad escape in string literal");
            }
            cp = cp * 16 + static_cast<uint32_t>(std::isdigit(static_cast<unsigned char>(h))
                                                     ? h - '0'
                                                     : (std::tolower(h) - 'a' + 10));
          }
          p += n;
          append_utf8(cp, value);
          break;
        }
        default:
          value += '\\';
          value += e;
      }
    }
    out_.push_back({Tok::kString, value, line, col});
    advance_to(p + 1);
  }

  std::string src_;
  size_t pos_ = 0;
  int line_ = 1;
  int col_ = 1;
  std::vector<Token> out_;
};

}  // namespace

std::vector<Token> lex_template(const std::string& source) { return Lexer(source).run(); }

}  // namespace fkv::jinja
