// fastkv's metrics against the official Python packages (rouge, fuzzywuzzy/difflib, jieba and
// LongBench's metrics.py semantics): goldens made by tools/scripts/make_metric_goldens.py.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/file_io.h"
#include "eval/jieba.h"
#include "eval/longbench.h"
#include "eval/metrics.h"
#include "eval/samples.h"
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

// LongBench rows as read_longbench_files sees them: (line number, text) of one file.
JsonlFile longbench_file(const std::string& path, std::vector<std::pair<int, std::string>> lines) {
  JsonlFile f;
  f.path = path;
  f.stem = "hotpotqa";
  f.lines = std::move(lines);
  return f;
}

std::string longbench_error(const std::vector<JsonlFile>& files) {
  auto r = read_longbench_files(files, {}, 0);
  return r.has_value() ? std::string("(read without error)") : r.error();
}

// Issue 21: a field that is present with the wrong type says so, with what it holds (it used to
// say "missing string field").
TEST(EvalLongBench, FieldOfWrongTypeSaysWhatItHoldsNotMissing) {
  const std::string good =
      R"("input": "q", "context": "c", "answers": ["a"], "all_classes": null, "_id": "x")";
  struct Case {
    std::string row;
    std::string message;
  };
  const std::vector<Case> cases = {
      {R"({"context": 5, "input": "q", "answers": ["a"]})",
       "lb.jsonl:3: field 'context' must be a string, got 5"},
      {R"({"context": "c", "input": null, "answers": ["a"]})",
       "lb.jsonl:3: field 'input' must be a string, got null"},
      {R"({"input": "q", "answers": ["a"]})", "lb.jsonl:3: missing field 'context' (a string)"},
      {R"({"context": "c", "input": "q", "answers": "a"})",
       "lb.jsonl:3: field 'answers' must be a non-empty array of strings, got \"a\""},
      {R"({"context": "c", "input": "q", "answers": []})",
       "lb.jsonl:3: field 'answers' must be a non-empty array of strings, got []"},
      {R"({"context": "c", "input": "q"})",
       "lb.jsonl:3: missing field 'answers' (a non-empty array of strings)"},
      {R"({"context": "c", "input": "q", "answers": ["a", 7]})",
       "lb.jsonl:3: field 'answers' item 1 must be a string, got 7"},
      {R"({"context": "c", "input": "q", "answers": ["a"], "all_classes": "x"})",
       "lb.jsonl:3: field 'all_classes' must be an array of strings or null, got \"x\""},
      {R"({"context": "c", "input": "q", "answers": ["a"], "all_classes": ["x", {}]})",
       "lb.jsonl:3: field 'all_classes' item 1 must be a string, got {}"},
      {R"({"context": "c", "input": "q", "answers": ["a"], "_id": 12})",
       "lb.jsonl:3: field '_id' must be a string, got 12"},
      {R"({"context": "c", "input": "q", "answers": ["a"], "dataset": ["hotpotqa"]})",
       "lb.jsonl:3: field 'dataset' must be a string, got [\"hotpotqa\"]"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(longbench_error({longbench_file("lb.jsonl", {{3, c.row}})}), c.message) << c.row;
  }
  // A long value is cut in the message.
  const std::string err = longbench_error(
      {longbench_file("lb.jsonl", {{1, R"({"context": [")" + std::string(5000, 'x') +
                                           R"("], "input": "q", "answers": ["a"]})"}})});
  EXPECT_NE(err.find("field 'context' must be a string, got [\"xxx"), std::string::npos) << err;
  EXPECT_LT(err.size(), 200u) << err;
  // The official files' null all_classes and a string _id are fine.
  auto ok = read_longbench_files({longbench_file("lb.jsonl", {{1, "{" + good + "}"}})}, {}, 0);
  ASSERT_TRUE(ok.has_value()) << ok.error();
  EXPECT_EQ(ok->at(0).id, "x");
}

// Issue 21: results and resume are keyed by task + _id, so two rows of a task with one _id are
// refused, naming the file, both lines and the id (they used to pass, and resume skipped one).
TEST(EvalLongBench, DuplicateIdInATaskIsRejectedNamingBothLines) {
  auto row = [](const std::string& id, const std::string& dataset) {
    return R"({"input": "q", "context": "c", "answers": ["a"], "_id": ")" + id +
           R"(", "dataset": ")" + dataset + R"("})";
  };
  EXPECT_EQ(longbench_error({longbench_file("lb.jsonl", {{1, row("a1", "hotpotqa")},
                                                         {2, row("b2", "hotpotqa")},
                                                         {4, row("a1", "hotpotqa")}})}),
            "lb.jsonl:4: duplicate _id 'a1' in task 'hotpotqa' (first at lb.jsonl:1); each row "
            "of a task needs its own _id");
  // Across two files of one task too.
  EXPECT_EQ(longbench_error({longbench_file("one.jsonl", {{7, row("z", "hotpotqa")}}),
                             longbench_file("two.jsonl", {{2, row("z", "hotpotqa")}})}),
            "two.jsonl:2: duplicate _id 'z' in task 'hotpotqa' (first at one.jsonl:7); each row "
            "of a task needs its own _id");
  // Rows past --samples are checked as well: the file is wrong whatever is taken from it.
  auto limited = read_longbench_files(
      {longbench_file("lb.jsonl", {{1, row("a1", "hotpotqa")}, {2, row("a1", "hotpotqa")}})}, {},
      1);
  ASSERT_FALSE(limited.has_value());
  EXPECT_NE(limited.error().find("lb.jsonl:2: duplicate _id 'a1'"), std::string::npos)
      << limited.error();
  // One id in two tasks, and rows without _id (numbered per task), are fine.
  auto ok = read_longbench_files(
      {longbench_file("lb.jsonl", {{1, row("a1", "hotpotqa")},
                                   {2, row("a1", "musique")},
                                   {3, R"({"input": "q", "context": "c", "answers": ["a"]})"},
                                   {4, R"({"input": "q", "context": "c", "answers": ["a"]})"}})},
      {}, 0);
  ASSERT_TRUE(ok.has_value()) << ok.error();
  ASSERT_EQ(ok->size(), 4u);
  EXPECT_EQ(ok->at(2).id, "1");  // the file's third and fourth hotpotqa rows (stem hotpotqa)
  EXPECT_EQ(ok->at(3).id, "2");
}

TEST(EvalText, Utf8RoundTripAndInvalidBytes) {
  EXPECT_EQ(u32_to_utf8(utf8_to_u32("a中\u00e9")), "a中\u00e9");
  EXPECT_EQ(utf8_to_u32("\xff"), std::u32string(1, U'\uFFFD'));
  EXPECT_EQ(utf8_to_u32("\xe4\xb8"), std::u32string(2, U'\uFFFD'));
}

}  // namespace
