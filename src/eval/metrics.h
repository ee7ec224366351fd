// The official metrics of LongBench (metrics.py), RULER (string_match_all) and the needle test,
// re-implemented with the exact semantics of the Python originals (Python str operations, the
// `rouge` package's ROUGE-L, fuzzywuzzy's ratio on difflib's SequenceMatcher, jieba segmentation);
// tests/unit/test_eval_metrics.cc checks them against goldens computed with those packages.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "eval/jieba.h"

namespace fkv::eval {

// LongBench normalize_answer: lower, drop string.punctuation, drop the articles a/an/the as
// whole words, collapse whitespace.
std::string normalize_answer(std::string_view s);
// LongBench normalize_zh_answer: lower, drop ASCII and Chinese punctuation, drop all whitespace.
std::string normalize_zh_answer(std::string_view s);

double qa_f1_score(std::string_view prediction, std::string_view ground_truth);
double qa_f1_zh_score(std::string_view prediction, std::string_view ground_truth, const Jieba& jb);
// rouge (pltrdy) 1.0.1 Rouge().get_scores([pred], [gt], avg=True)["rouge-l"]["f"]; 0 where the
// package raises (a side with no sentence), as LongBench's try/except does.
double rouge_score(std::string_view prediction, std::string_view ground_truth);
double rouge_zh_score(std::string_view prediction, std::string_view ground_truth, const Jieba& jb);
// difflib.SequenceMatcher(None, a, b).ratio() over code points (autojunk on, no isjunk).
double sequence_matcher_ratio(std::u32string_view a, std::u32string_view b);
// fuzzywuzzy fuzz.ratio (pure-Python SequenceMatcher backend): 0..100, rounded half to even.
int fuzz_ratio(std::string_view a, std::string_view b);
// First line of the prediction that has no '`', '#' or '//', fuzz.ratio against the truth / 100.
double code_sim_score(std::string_view prediction, std::string_view ground_truth);
double classification_score(std::string_view prediction, std::string_view ground_truth,
                            const std::vector<std::string>& all_classes);
double count_score(std::string_view prediction, std::string_view ground_truth);
// The truth names "Paragraph N" (retrieval) / "段落N" (retrieval_zh); an error when it does not
// (the official script raises IndexError there).
Expected<double> retrieval_score(std::string_view prediction, std::string_view ground_truth);
Expected<double> retrieval_zh_score(std::string_view prediction, std::string_view ground_truth);

// RULER string_match_all for one sample: share of references found case-insensitively in the
// prediction (after RULER's postprocess: control characters become newlines, strip).
double string_match_all(std::string_view prediction, const std::vector<std::string>& references);
// Needle: share of the expected answer's words (lowercased, punctuation dropped) that occur among
// the response's words.
double needle_score(std::string_view prediction, std::string_view expected_answer);

enum class Metric {
  kQaF1,
  kQaF1Zh,
  kRouge,
  kRougeZh,
  kClassification,
  kRetrieval,
  kRetrievalZh,
  kCount,
  kCodeSim,
  kStringMatchAll,
  kNeedle,
};
const char* metric_name(Metric m);
bool metric_needs_jieba(Metric m);

// One sample's score in 0..1 as the official scorers give it: LongBench takes the max over the
// references (after cutting the prediction to its first line when first_line_only, as LongBench
// does for trec/triviaqa/samsum/lsht); RULER scores all references together; needle uses the
// first answer. `jb` may be null unless metric_needs_jieba(m).
Expected<double> score_sample(Metric m, std::string_view prediction,
                              const std::vector<std::string>& answers,
                              const std::vector<std::string>& all_classes, bool first_line_only,
                              const Jieba* jb);

}  // namespace fkv::eval
