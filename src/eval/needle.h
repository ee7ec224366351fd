// Needle in a haystack (spec section 5): the Paul Graham essays as haystack, a needle sentence
// inserted at a sentence boundary at each depth, prompts of each length in the model's tokens.
#pragma once

#include <string>
#include <vector>

#include "core/status.h"
#include "eval/samples.h"
#include "tokenizer/tokenizer.h"

namespace fkv::eval {

inline constexpr const char* kDefaultNeedle =
    "The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny "
    "day.";
inline constexpr const char* kDefaultNeedleQuestion =
    "What is the best thing to do in San Francisco?";
inline constexpr const char* kDefaultNeedleAnswer =
    "eat a sandwich and sit in Dolores Park on a sunny day";

struct NeedleOptions {
  std::string haystack_dir;  // *.txt files, concatenated in name order
  std::string needle = kDefaultNeedle;
  std::string question = kDefaultNeedleQuestion;
  std::string answer = kDefaultNeedleAnswer;
  std::vector<int> lengths;    // prompt tokens (as the model's tokenizer and template count)
  std::vector<double> depths;  // percent, 0..100
  int max_new_tokens = 30;
};

// All *.txt files below `dir`, sorted by path, concatenated.
Expected<std::string> read_haystack(const std::string& dir);

// One sample per (length, depth); each prompt is at most `length` tokens (within a few tokens
// below it: the haystack is cut on token boundaries, then the needle moves to a sentence end).
Expected<std::vector<EvalSample>> make_needle_samples(const Tokenizer& tok,
                                                      const NeedleOptions& opts,
                                                      const PromptBuildOptions& popts);

}  // namespace fkv::eval
