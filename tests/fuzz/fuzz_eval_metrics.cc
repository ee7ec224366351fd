// libFuzzer target: arbitrary bytes as (prediction, reference) through every metric and jieba's
// segmentation (when its dictionary is installed): no crash, scores in [0, 1].
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "eval/jieba.h"
#include "eval/metrics.h"
#include "eval/text.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fkv::eval;
  std::string_view all(reinterpret_cast<const char*>(data), size);
  const size_t cut = all.find('\x01');
  const std::string_view pred = all.substr(0, cut);
  const std::string_view truth =
      cut == std::string_view::npos ? std::string_view() : all.substr(cut + 1);
  static const Jieba* jb = [] {
    auto j = shared_jieba();
    return j.has_value() ? *j : nullptr;
  }();
  std::vector<double> s = {qa_f1_score(pred, truth),
                           rouge_score(pred, truth),
                           code_sim_score(pred, truth),
                           count_score(pred, truth),
                           classification_score(pred, truth, {std::string(truth), "a", "ab"}),
                           string_match_all(pred, {std::string(truth)}),
                           needle_score(pred, truth)};
  if (auto r = retrieval_score(pred, truth); r.has_value()) s.push_back(*r);
  if (auto r = retrieval_zh_score(pred, truth); r.has_value()) s.push_back(*r);
  if (jb != nullptr && size < 4096) {
    s.push_back(qa_f1_zh_score(pred, truth, *jb));
    s.push_back(rouge_zh_score(pred, truth, *jb));
    std::string joined;
    for (const std::string& w : jb->cut(pred)) joined += w;
    // Segmentation only splits: the tokens join to the (UTF-8-repaired) input.
    if (joined != u32_to_utf8(utf8_to_u32(pred))) std::abort();
  }
  (void)normalize_answer(pred);
  (void)normalize_zh_answer(pred);
  for (double v : s)
    if (!(v >= 0.0 && v <= 1.0 + 1e-9)) std::abort();
  return 0;
}
