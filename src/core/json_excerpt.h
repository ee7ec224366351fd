// A JSON value as an error message quotes it ("must be a string, got 5"): compact, ASCII only
// (other characters as \uXXXX, so no raw bytes reach a terminal), cut after `max_chars`.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace fkv {

inline std::string json_excerpt(const nlohmann::json& v, size_t max_chars = 80) {
  std::string s = v.dump(-1, ' ', /*ensure_ascii=*/true, nlohmann::json::error_handler_t::replace);
  if (s.size() > max_chars) {
    s.resize(max_chars);
    s += "...";
  }
  return s;
}

}  // namespace fkv
