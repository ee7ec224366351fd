// Stop strings over streamed text (the Python generate() and fastkv serve): text arrives in decoded
// pieces; a stop string may span pieces, so the tail that could still become one is held back
// until it cannot.
#pragma once

#include <algorithm>
#include <string>
#include <vector>

namespace fkv {

class StopStringMatcher {
 public:
  explicit StopStringMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {}

  // Adds a decoded piece; returns the text that can be released now. After a match, returns the
  // text before the stop string and matched() is true (the stop string itself is dropped).
  std::string push(const std::string& piece) {
    held_ += piece;
    if (stops_.empty()) return take(held_.size());
    size_t first = std::string::npos;
    for (const std::string& s : stops_) first = std::min(first, held_.find(s));
    if (first != std::string::npos) {
      matched_ = true;
      std::string out = held_.substr(0, first);
      held_.clear();
      return out;
    }
    // Longest suffix of held_ that is a proper prefix of some stop string stays held.
    size_t keep = 0;
    for (const std::string& s : stops_) {
      for (size_t n = std::min(s.size() - 1, held_.size()); n > keep; --n) {
        if (held_.compare(held_.size() - n, n, s, 0, n) == 0) {
          keep = n;
          break;
        }
      }
    }
    return take(held_.size() - keep);
  }
  // The held tail once no more text comes.
  std::string finish() { return take(held_.size()); }
  bool matched() const { return matched_; }

 private:
  std::string take(size_t n) {
    std::string out = held_.substr(0, n);
    held_.erase(0, n);
    return out;
  }
  std::vector<std::string> stops_;  // each non-empty
  std::string held_;
  bool matched_ = false;
};

}  // namespace fkv
