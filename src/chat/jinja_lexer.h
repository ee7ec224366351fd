// Jinja lexer: splits a template into text and tag tokens, applying trim_blocks, lstrip_blocks
// and the {%- -%} / {{- -}} / {#- -#} whitespace control the way jinja2's lexer does.
#pragma once

#include <string>
#include <vector>

namespace fkv::jinja {

enum class Tok {
  kText,
  kVarBegin,
  kVarEnd,
  kBlockBegin,
  kBlockEnd,
  kName,
  kString,
  kInt,
  kFloat,
  kOp,
  kEof
};

struct Token {
  Tok type;
  std::string text;  // text payload, identifier, unescaped string literal, number or operator
  int line = 1;
  int col = 1;
};

// Throws JinjaError("line L, col C: ...") on malformed input.
std::vector<Token> lex_template(const std::string& source);

}  // namespace fkv::jinja
