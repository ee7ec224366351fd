// fastkv's metrics against the official Python packages (rouge, fuzzywuzzy/difflib, jieba and
// LongBench's metrics.py semantics): goldens made by tools/scripts/make_metric_goldens.py.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/file_io.h"
#include "eval/jieba.h"
#include "eval/metrics.h"
#include "eval/text.h"

namespace {
using namespace fkv::eval;

const std::string kGoldens =
    std::string(FKV_SOURCE_DIR) + "/tests/data/goldens/eval/metric_goldens.json";

nlohmann::json load_goldens() {
  auto text = fkv::read_text_file(kGoldens, "metric goldens", false);
  EXPECT_TRUE(text.has_value()) << text.error();
  return nlohmann::json::parse(*text);
}

const Jieba& jieba() {
  auto j = shared_jieba();
  if (!j) {
    ADD_FAILURE() << j.error();
    std::abort();
  }
  return **j;
}

TEST(EvalMetrics, AllGoldensAgree) {
  const auto g = load_goldens();
  int checked = 0;
  for (const auto& c : g["cases"]) {
    const std::string m = c["metric"];
    SCOPED_TRACE(c.dump());
    if (m == "jieba_cut") {
      EXPECT_EQ(jieba().cut(c["text"].get<std::string>()),
                c["expected_tokens"].get<std::vector<std::string>>());
      ++checked;
      continue;
    }
    double got = 0;
    const double expected = c["expected"];
    if (m == "string_match_all") {
      got = string_match_all(c["prediction"].get<std::string>(),
                             c["references"].get<std::vector<std::string>>());
    } else {
      const std::string p = c["prediction"], t = c["ground_truth"];
      if (m == "qa_f1")
        got = qa_f1_score(p, t);
      else if (m == "qa_f1_zh")
        got = qa_f1_zh_score(p, t, jieba());
      else if (m == "rouge")
        got = rouge_score(p, t);
      else if (m == "rouge_zh")
        got = rouge_zh_score(p, t, jieba());
      else if (m == "code_sim") {
        got = code_sim_score(p, t);
        EXPECT_EQ(fuzz_ratio(p, t), c["expected_fuzz_ratio"].get<int>());
      } else if (m == "classification")
        got = classification_score(p, t, c["all_classes"].get<std::vector<std::string>>());
      else if (m == "count")
        got = count_score(p, t);
      else if (m == "retrieval")
        got = retrieval_score(p, t).value();
      else if (m == "retrieval_zh")
        got = retrieval_zh_score(p, t).value();
      else if (m == "needle")
        got = needle_score(p, t);
      else
        FAIL() << "unknown metric in goldens: " << m;
    }
    EXPECT_NEAR(got, expected, 1e-9);
    ++checked;
  }
  EXPECT_GT(checked, 100);
}

TEST(EvalMetrics, NormalizeAnswer) {
  EXPECT_EQ(normalize_answer("The  Cat, an apple & THE theatre!"), "cat apple theatre");
  EXPECT_EQ(normalize_zh_answer("厦门 大学。ABC！"), "厦门大学abc");
}

TEST(EvalMetrics, ScoreSampleTakesMaxAndFirstLine) {
  auto s = score_sample(Metric::kQaF1, "Paris\nLondon", {"London", "Paris"}, {}, true, nullptr);
  ASSERT_TRUE(s.has_value());
  EXPECT_DOUBLE_EQ(*s, 1.0);
  auto t = score_sample(Metric::kQaF1, "\n\nLondon\nParis", {"Paris"}, {}, true, nullptr);
  EXPECT_DOUBLE_EQ(*t, 0.0);
  auto z = score_sample(Metric::kQaF1Zh, "x", {"x"}, {}, false, nullptr);
  EXPECT_FALSE(z.has_value());
}

TEST(EvalMetrics, RetrievalWithoutParagraphIdIsAnError) {
  auto r = retrieval_score("Paragraph 1", "no id here");
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().find("no id here"), std::string::npos) << r.error();
}

TEST(EvalMetrics, MissingJiebaDictionaryIsAClearError) {
  auto j = Jieba::load("/nonexistent/jieba");
  ASSERT_FALSE(j.has_value());
  EXPECT_NE(j.error().find("/nonexistent/jieba/dict.txt"), std::string::npos) << j.error();
  EXPECT_NE(j.error().find("python3-jieba"), std::string::npos) << j.error();
}

TEST(EvalText, Utf8RoundTripAndInvalidBytes) {
  EXPECT_EQ(u32_to_utf8(utf8_to_u32("a中\u00e9")), "a中\u00e9");
  EXPECT_EQ(utf8_to_u32("\xff"), std::u32string(1, U'\uFFFD'));
  EXPECT_EQ(utf8_to_u32("\xe4\xb8"), std::u32string(2, U'\uFFFD'));
}

}  // namespace
