// The RULER generator against RULER's own output (../shared/data/ruler/niah_multikey_3_4096.jsonl,
// made by RULER's prepare.py with the Llama-3 tokenizer): same jsonl fields, same line structure,
// same haystack size and `length`; plus reproducibility and every task at a small length.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <vector>

#include "core/file_io.h"
#include "eval/needle.h"
#include "eval/ruler.h"
#include "eval/samples.h"
#include "tokenizer/tokenizer.h"

namespace {
using namespace fkv;
using namespace fkv::eval;

const std::string kShared = FKV_SHARED_DIR;

const Tokenizer& llama3() {
  static Tokenizer tok = [] {
    auto t = Tokenizer::from_hf_json(kShared + "/tokenizers/llama3/tokenizer.json",
                                     kShared + "/tokenizers/llama3/tokenizer_config.json");
    if (!t) {
      ADD_FAILURE() << t.error();
      std::abort();
    }
    return std::move(t.value());
  }();
  return tok;
}

const std::string& essays() {
  static std::string e = read_haystack(kShared + "/data/needle/PaulGrahamEssays").value();
  return e;
}

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    size_t nl = s.find('\n', start);
    out.push_back(s.substr(start, nl == std::string::npos ? std::string::npos : nl - start));
    if (nl == std::string::npos) break;
    start = nl + 1;
  }
  return out;
}

TEST(EvalRuler, MultikeyThreeMatchesTheRealSample) {
  auto text = read_text_file(kShared + "/data/ruler/niah_multikey_3_4096.jsonl", "sample", false);
  ASSERT_TRUE(text.has_value()) << text.error();
  std::vector<nlohmann::json> real;
  for (const std::string& l : lines_of(*text))
    if (!l.empty()) real.push_back(nlohmann::json::parse(l));
  ASSERT_GT(real.size(), 10u);
  double real_len = 0;
  for (const auto& r : real) real_len += r["length"].get<double>();
  real_len /= static_cast<double>(real.size());

  auto rows = generate_ruler_task(llama3(), "niah_multikey_3", 4096, 8, 0, essays());
  ASSERT_TRUE(rows.has_value()) << rows.error();
  const std::regex uuid("[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}");
  const std::regex needle_line(
      "One of the special magic uuids for ([0-9a-f-]{36}) is: ([0-9a-f-]{36})\\.");
  const std::regex last_line(
      "What is the special magic uuid for ([0-9a-f-]{36}) mentioned in the provided text\\? The "
      "special magic uuid for ([0-9a-f-]{36}) mentioned in the provided text is");
  const auto real_lines = lines_of(real[0]["input"].get<std::string>());
  double gen_len = 0;
  for (const RulerRow& row : *rows) {
    const nlohmann::json j = nlohmann::json::parse(ruler_row_json(row));
    // Same fields, same types, same order as RULER writes them.
    std::vector<std::string> keys, real_keys;
    for (auto it = j.begin(); it != j.end(); ++it) keys.push_back(it.key());
    for (auto it = real[0].begin(); it != real[0].end(); ++it) real_keys.push_back(it.key());
    std::sort(keys.begin(), keys.end());
    std::sort(real_keys.begin(), real_keys.end());
    EXPECT_EQ(keys, real_keys);
    EXPECT_TRUE(j["index"].is_number_integer());
    EXPECT_TRUE(j["length"].is_number_integer());
    ASSERT_EQ(j["outputs"].size(), 1u);
    const auto lines = lines_of(row.input);
    EXPECT_EQ(lines.size(), real_lines.size());  // header + 50 haystack + 1 needle + question
    EXPECT_EQ(lines.front(), real_lines.front());
    std::smatch m;
    for (size_t i = 1; i + 1 < lines.size(); ++i) {
      ASSERT_TRUE(std::regex_match(lines[i], m, needle_line)) << lines[i];
      EXPECT_TRUE(std::regex_match(m[1].str(), uuid));
      EXPECT_TRUE(std::regex_match(m[2].str(), uuid));
    }
    ASSERT_TRUE(std::regex_match(lines.back(), m, last_line)) << lines.back();
    EXPECT_EQ(m[1].str(), m[2].str());
    // The answer is the value of the queried key's needle, present exactly once.
    const std::string answer = j["outputs"][0];
    const std::string needle =
        "One of the special magic uuids for " + m[1].str() + " is: " + answer + ".";
    EXPECT_NE(row.input.find(needle), std::string::npos);
    EXPECT_EQ(row.input.find(answer), row.input.rfind(answer));
    // length = input tokens (no special tokens) + RULER's 128 tokens to generate.
    EXPECT_EQ(row.length, static_cast<int>(llama3().encode(row.input, false).size()) + 128);
    EXPECT_EQ(row.context + row.question + row.answer_prefix, row.input);
    gen_len += row.length;
  }
  gen_len /= static_cast<double>(rows->size());
  EXPECT_NEAR(gen_len, real_len, 0.02 * real_len)
      << "generated " << gen_len << " vs real " << real_len;
}

TEST(EvalRuler, SeededAndReproducible) {
  auto a = generate_ruler_task(llama3(), "niah_single_2", 1024, 2, 7, essays());
  auto b = generate_ruler_task(llama3(), "niah_single_2", 1024, 2, 7, essays());
  auto c = generate_ruler_task(llama3(), "niah_single_2", 1024, 2, 8, essays());
  ASSERT_TRUE(a.has_value() && b.has_value() && c.has_value());
  EXPECT_EQ(ruler_row_json((*a)[1]), ruler_row_json((*b)[1]));
  EXPECT_NE(ruler_row_json((*a)[1]), ruler_row_json((*c)[1]));
  EXPECT_NE(ruler_row_json((*a)[0]), ruler_row_json((*a)[1]));
}

TEST(EvalRuler, EveryTaskFitsItsLengthAndHoldsItsAnswers) {
  for (const std::string& task : ruler_tasks()) {
    SCOPED_TRACE(task);
    for (int length : {1024, 2048}) {
      auto rows = generate_ruler_task(llama3(), task, length, 2, 1, essays());
      ASSERT_TRUE(rows.has_value()) << rows.error();
      for (const RulerRow& r : *rows) {
        EXPECT_LE(r.length, length);
        EXPECT_GT(r.length, length / 2) << "haystack far below the requested length";
        ASSERT_FALSE(r.outputs.empty());
        for (const std::string& o : r.outputs) EXPECT_NE(r.context.find(o), std::string::npos) << o;
      }
    }
  }
}

TEST(EvalRuler, BadTaskAndTooShortLengthAreErrors) {
  auto bad = generate_ruler_task(llama3(), "niah_single_9", 4096, 1, 0, essays());
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.error().find("niah_single_9"), std::string::npos);
  auto tiny = generate_ruler_task(llama3(), "cwe", 100, 1, 0, essays());
  EXPECT_FALSE(tiny.has_value());
}

TEST(EvalRuler, ReadsRulerJsonlAndSplitsTheAnswerPrefix) {
  auto files = read_jsonl_inputs(kShared + "/data/ruler/niah_multikey_3_4096.jsonl");
  ASSERT_TRUE(files.has_value()) << files.error();
  auto s = read_ruler_files(*files, {}, 3, 64);
  ASSERT_TRUE(s.has_value()) << s.error();
  ASSERT_EQ(s->size(), 3u);
  EXPECT_EQ((*s)[0].task, "niah_multikey_3");
  EXPECT_EQ((*s)[0].answer_prefix,
            " The special magic uuid for 455ac762-7428-4656-b3ee-4d3b5a104129 mentioned in the "
            "provided text is");
  EXPECT_EQ((*s)[0].question.rfind("What is the special magic uuid", 0), 0u);
  EXPECT_EQ((*s)[0].answers, std::vector<std::string>{"1ee34dc4-3b04-4a8b-805b-fdc94e7ed827"});
}

// A field of the wrong type says what it holds, not that it is missing.
TEST(EvalRuler, FieldOfWrongTypeSaysWhatItHoldsNotMissing) {
  const std::string path = (std::filesystem::temp_directory_path() / "niah_single_1_64.jsonl");
  auto error_for = [&](const std::string& line) {
    std::ofstream(path, std::ios::trunc) << line << "\n";
    auto files = read_jsonl_inputs(path);
    if (!files) return files.error();
    auto s = read_ruler_files(*files, {}, 1, 64);
    return s.has_value() ? std::string("(read without error)") : s.error();
  };
  EXPECT_EQ(error_for(R"({"input": 5, "outputs": ["a"]})"),
            path + ":1: field 'input' must be a string, got 5");
  EXPECT_EQ(error_for(R"({"outputs": ["a"]})"), path + ":1: missing field 'input' (a string)");
  EXPECT_EQ(error_for(R"({"input": "q", "outputs": "a"})"),
            path + ":1: field 'outputs' must be a non-empty array of strings, got \"a\"");
  std::filesystem::remove(path);
}

}  // namespace
