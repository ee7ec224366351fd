// fastkv eval end to end on the tiny stories260K model: each family through the CLI, the output
// files, resume, shards + merge equal to one unsharded run, and clear errors for bad input.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;

const std::string kCli = FKV_CLI_PATH;
const std::string kShared = FKV_SHARED_DIR;
const std::string kSource = FKV_SOURCE_DIR;
const std::string kStories = kShared + "/models/stories260K/stories260K.gguf";

struct CliResult {
  int code = -1;
  std::string err;
};

CliResult cli(const std::string& args) {
  const std::string err_file = (fs::temp_directory_path() / "fkv_eval_cli_err.txt").string();
  const std::string cmd = kCli + " " + args + " >/dev/null 2>" + err_file;
  CliResult r;
  const int st = std::system(cmd.c_str());
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  std::ifstream f(err_file);
  std::stringstream ss;
  ss << f.rdbuf();
  r.err = ss.str();
  return r;
}

std::string slurp(const std::string& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::vector<json> rows_of(const std::string& dir) {
  std::vector<json> out;
  std::ifstream f(dir + "/predictions.jsonl");
  std::string line;
  while (std::getline(f, line))
    if (!line.empty()) out.push_back(json::parse(line));
  return out;
}

std::string fresh_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("fkv_eval_" + name);
  fs::remove_all(d);
  return d.string();
}

const std::string kNeedleArgs =
    "eval needle --model " + kStories +
    " --chat off --lengths 256 --depths 0,50,100 --threads 1 --no-plots";
const std::string kRulerArgs =
    "eval ruler --model " + kStories +
    " --chat off --lengths 480 --tasks niah_single_1,niah_multikey_2,vt,fwe "
    "--samples 2 --max-new-tokens 8 --threads 2 --parallel 2 --no-plots";

TEST(EvalCli, NeedleWritesRowsScoresSummary) {
  const std::string out = fresh_dir("needle");
  CliResult r = cli(kNeedleArgs +
                    " --methods 'fullkv;snapkv;streamingllm;fastkv:tsp_layer=2,tsp_rate=0.5' "
                    "--retain-rates 0.2,0.5 --out " +
                    out);
  ASSERT_EQ(r.code, 0) << r.err;
  const auto rows = rows_of(out);
  // 3 depths x (fullkv + 2 rates x 3 methods).
  ASSERT_EQ(rows.size(), 3u * 7u);
  for (const json& row : rows) {
    for (const char* k :
         {"task", "id", "method", "prediction", "answers", "all_classes", "score", "prompt_tokens",
          "prefill_s", "decode_s", "kv_bytes", "length", "depth"}) {
      EXPECT_TRUE(row.contains(k)) << k << " in " << row.dump();
    }
    EXPECT_GE(row["score"].get<double>(), 0.0);
    EXPECT_LE(row["score"].get<double>(), 1.0);
    EXPECT_LE(row["prompt_tokens"].get<int>(), 256);
    EXPECT_GE(row["prompt_tokens"].get<int>(), 240);
    const std::string m = row["method"];
    if (m == "fullkv") {
      EXPECT_EQ(row["kv_bytes"], row["full_kv_bytes"]);
    } else {
      EXPECT_LT(row["kv_bytes"].get<double>(), row["full_kv_bytes"].get<double>()) << m;
    }
  }
  const json scores = json::parse(slurp(out + "/scores.json"));
  ASSERT_EQ(scores.size(), 7u);
  EXPECT_TRUE(scores.contains("snapkv:retain_rate=0.2"));
  EXPECT_TRUE(scores.contains("fastkv:tsp_layer=2,tsp_rate=0.5,retain_rate=0.5"));
  EXPECT_TRUE(scores["fullkv"].contains("needle_256"));
  const std::string md = slurp(out + "/summary.md");
  EXPECT_NE(md.find("| needle_256 |"), std::string::npos) << md;
  EXPECT_NE(md.find("KV share"), std::string::npos);
  EXPECT_NE(md.find("**average**"), std::string::npos);
}

TEST(EvalCli, RulerJointAndContextFirst) {
  for (const char* protocol : {"joint", "context-first"}) {
    const std::string out = fresh_dir(std::string("ruler_") + protocol);
    CliResult r = cli(kRulerArgs + " --methods 'fullkv;snapkv:retain_rate=0.3' --protocol " +
                      protocol + " --out " + out);
    ASSERT_EQ(r.code, 0) << r.err;
    const auto rows = rows_of(out);
    ASSERT_EQ(rows.size(), 4u * 2u * 2u);
    for (const json& row : rows) {
      EXPECT_EQ(row["metric"], "string_match_all");
      EXPECT_EQ(row["protocol"], protocol);
      EXPECT_LT(row["context_tokens"].get<int>(), row["prompt_tokens"].get<int>());
    }
    // The generated data sits beside the results, in RULER's format.
    EXPECT_TRUE(fs::exists(out + "/ruler_data/vt_480.jsonl"));
    const json first =
        json::parse(slurp(out + "/ruler_data/vt_480.jsonl")
                        .substr(0, slurp(out + "/ruler_data/vt_480.jsonl").find('\n')));
    EXPECT_TRUE(first.contains("index") && first.contains("input") && first.contains("outputs") &&
                first.contains("length"));
    EXPECT_NE(r.err.find("ETA"), std::string::npos) << r.err;
  }
}

TEST(EvalCli, LongBenchThreeFilesWithChatTemplateAndTruncation) {
  const std::string out = fresh_dir("longbench");
  CliResult r =
      cli("eval longbench --model " + kStories + " --chat-template " + kSource +
          "/tests/data/chat_templates/chatml_smollm2.jinja --samples 1 --max-length 300 "
          "--max-new-tokens 8 --methods 'fullkv;fastkv:tsp_layer=2' --threads 2 --no-plots --out " +
          out);
  ASSERT_EQ(r.code, 0) << r.err;
  const auto rows = rows_of(out);
  ASSERT_EQ(rows.size(), 3u * 2u);
  std::set<std::string> metrics;
  for (const json& row : rows) {
    metrics.insert(row["metric"].get<std::string>());
    EXPECT_TRUE(row["truncated"].get<bool>());
    // English: 300 tokens of user text + the template (its system prompt, markers spelled out in
    // this tiny vocabulary). The Chinese files re-encode differently in a 512-token byte
    // vocabulary.
    if (row["task"] == "multi_news") {
      EXPECT_LE(row["prompt_tokens"].get<int>(), 300 + 128);
    }
  }
  EXPECT_EQ(metrics, (std::set<std::string>{"rouge", "qa_f1_zh", "retrieval_zh"}));
  const json scores = json::parse(slurp(out + "/scores.json"));
  EXPECT_TRUE(scores["fullkv"].contains("multifieldqa_zh"));
}

TEST(EvalCli, ResumeSkipsFinishedRows) {
  const std::string out = fresh_dir("resume");
  const std::string args = kNeedleArgs + " --methods 'fullkv;snapkv:retain_rate=0.2' --out " + out;
  ASSERT_EQ(cli(args).code, 0);
  const std::string before = slurp(out + "/predictions.jsonl");
  // Drop the last 4 rows: a rerun runs exactly those and keeps the rest.
  auto rows = rows_of(out);
  ASSERT_EQ(rows.size(), 6u);
  {
    std::ofstream f(out + "/predictions.jsonl");
    for (size_t i = 0; i < 2; ++i) f << rows[i].dump() << "\n";
  }
  CliResult r = cli(args);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("resuming: 2 of 6 rows"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("6 rows (4 run, 2 resumed)"), std::string::npos) << r.err;
  auto again = rows_of(out);
  ASSERT_EQ(again.size(), 6u);
  EXPECT_EQ(again[0], rows[0]);  // untouched, timings included
  EXPECT_EQ(again[1], rows[1]);
  // A complete folder runs nothing.
  CliResult r2 = cli(args);
  ASSERT_EQ(r2.code, 0) << r2.err;
  EXPECT_NE(r2.err.find("(0 run, 6 resumed)"), std::string::npos) << r2.err;
  EXPECT_EQ(rows_of(out), again);
  (void)before;
}

// Ctrl-C (SIGINT) or SIGTERM in the middle of a run: every finished row is on disk (each one is
// written before the next starts), the file is valid JSONL, the message says how many rows and how
// to resume, and the same command then resumes exactly where it stopped.
TEST(EvalCli, InterruptKeepsEveryFinishedRowAndSaysHowToResume) {
  for (int sig : {SIGINT, SIGTERM}) {
    SCOPED_TRACE(sig == SIGINT ? "SIGINT" : "SIGTERM");
    const std::string out = fresh_dir("interrupt");
    std::string depths;
    for (int d = 0; d <= 100; ++d) depths += (d ? "," : "") + std::to_string(d);
    const std::string args = "eval needle --model " + kStories +
                             " --chat off --lengths 480 --threads 1 --no-plots --depths " + depths +
                             " --methods 'fullkv;snapkv;h2o' --retain-rates 0.2,0.5";
    const std::string err_file =
        (fs::temp_directory_path() / "fkv_eval_interrupt_err.txt").string();
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      const std::string cmd =
          "exec " + kCli + " " + args + " --out " + out + " >/dev/null 2>" + err_file;
      execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    // Wait for a few finished rows (at most 60 s), then interrupt.
    size_t seen = 0;
    for (int i = 0; i < 6000 && seen < 3; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      if (fs::exists(out + "/predictions.jsonl")) seen = rows_of(out).size();
    }
    ASSERT_GE(seen, 3u) << slurp(err_file);
    ASSERT_EQ(kill(pid, sig), 0);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    const std::string err = slurp(err_file);
    ASSERT_TRUE(WIFEXITED(status)) << err;
    EXPECT_EQ(WEXITSTATUS(status), 130) << err;
    const size_t at = err.find("interrupted after ");
    ASSERT_NE(at, std::string::npos) << err;
    EXPECT_NE(err.find("rows; rerun the same command to resume"), std::string::npos) << err;
    const int n = std::stoi(err.substr(at + std::string("interrupted after ").size()));
    const auto rows = rows_of(out);  // parses every line: valid JSONL
    EXPECT_EQ(rows.size(), static_cast<size_t>(n)) << err;
    EXPECT_GE(rows.size(), seen);
    EXPECT_LT(rows.size(), 505u) << "the run ended before the signal";
    // The same command resumes from there (once is enough).
    if (sig == SIGINT) {
      CliResult again = cli(args + " --out " + out);
      ASSERT_EQ(again.code, 0) << again.err;
      const std::string resumed = "resuming: " + std::to_string(rows.size()) + " of 505 rows";
      EXPECT_NE(again.err.find(resumed), std::string::npos) << again.err;
      EXPECT_EQ(rows_of(out).size(), 505u);
    }
  }
}

json without_timing(json row) {
  row.erase("prefill_s");
  row.erase("decode_s");
  return row;
}

TEST(EvalCli, ShardMergeEqualsUnshardedRun) {
  const std::string whole = fresh_dir("whole"), s0 = fresh_dir("s0"), s1 = fresh_dir("s1"),
                    s2 = fresh_dir("s2"), merged = fresh_dir("merged");
  const std::string args = kRulerArgs + " --methods 'fullkv;streamingllm:retain_rate=0.3'";
  ASSERT_EQ(cli(args + " --out " + whole).code, 0);
  ASSERT_EQ(cli(args + " --shard 0/3 --out " + s0).code, 0);
  ASSERT_EQ(cli(args + " --shard 1/3 --out " + s1).code, 0);
  // A merge with a shard missing is refused.
  CliResult partial = cli("eval merge " + s0 + " " + s1 + " --out " + merged + " --no-plots");
  EXPECT_NE(partial.code, 0);
  EXPECT_NE(partial.err.find("missing shard(s) 2/3"), std::string::npos) << partial.err;
  ASSERT_EQ(cli(args + " --shard 2/3 --out " + s2).code, 0);
  EXPECT_LT(rows_of(s0).size(), rows_of(whole).size());
  CliResult m = cli("eval merge " + s0 + " " + s1 + " " + s2 + " --out " + merged + " --no-plots");
  ASSERT_EQ(m.code, 0) << m.err;
  EXPECT_EQ(slurp(merged + "/scores.json"), slurp(whole + "/scores.json"));
  const auto a = rows_of(whole), b = rows_of(merged);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(without_timing(a[i]), without_timing(b[i])) << i;
  // Merging a shard twice is refused.
  CliResult dup = cli("eval merge " + s0 + " " + s0 + " --out " + fresh_dir("dup") + " --no-plots");
  EXPECT_NE(dup.code, 0);
  EXPECT_NE(dup.err.find("given twice"), std::string::npos) << dup.err;
}

TEST(EvalCli, SharedPrefillGivesTheRowsOfSeparatePrefills) {
  for (const char* protocol : {"joint", "context-first"}) {
    const std::string shared = fresh_dir(std::string("shared_") + protocol);
    const std::string separate = fresh_dir(std::string("separate_") + protocol);
    const std::string args = kNeedleArgs + " --protocol " + protocol +
                             " --methods 'fullkv;snapkv;adakv;pyramidkv;streamingllm;h2o;fastkv:"
                             "tsp_layer=2' --retain-rates 0.2";
    ASSERT_EQ(cli(args + " --out " + shared).code, 0);
    ASSERT_EQ(cli(args + " --no-share-prefill --out " + separate).code, 0);
    const auto a = rows_of(shared), b = rows_of(separate);
    ASSERT_EQ(a.size(), 3u * 7u);
    ASSERT_EQ(a.size(), b.size());
    int shared_rows = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      shared_rows += a[i]["shared_prefill"].get<bool>() ? 1 : 0;
      EXPECT_FALSE(b[i]["shared_prefill"].get<bool>());
      json x = without_timing(a[i]), y = without_timing(b[i]);
      x.erase("shared_prefill");
      y.erase("shared_prefill");
      EXPECT_EQ(x, y) << i;
    }
    EXPECT_EQ(shared_rows, 3 * 6);  // all but fastkv
    EXPECT_EQ(slurp(shared + "/scores.json"), slurp(separate + "/scores.json"));
  }
}

TEST(EvalCli, PlotsAreWrittenWhenMatplotlibIsThere) {
  if (std::system("python3 -c 'import matplotlib' >/dev/null 2>&1") != 0 &&
      std::system("/usr/bin/python3 -c 'import matplotlib' >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "no python3 with matplotlib";
  }
  const std::string out = fresh_dir("plots");
  std::string args = kNeedleArgs;
  args.replace(args.find(" --no-plots"), 11, "");
  CliResult r = cli(args + " --methods 'fullkv;snapkv:retain_rate=0.2' --out " + out);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(fs::exists(out + "/needle_heatmap_fullkv.png")) << r.err;
  EXPECT_TRUE(fs::exists(out + "/needle_heatmap_snapkv_retain_rate=0.2.png")) << r.err;
  EXPECT_TRUE(fs::exists(out + "/accuracy_vs_kv.png")) << r.err;
}

TEST(EvalCli, HelpForEvalAndMerge) {
  for (const char* args : {"eval --help", "eval needle --help", "eval merge --help"}) {
    CliResult r = cli(std::string(args) + " 2>&1");
    EXPECT_EQ(r.code, 0) << args;
  }
}

TEST(EvalCli, BadInputsGiveClearErrors) {
  const std::string out = fresh_dir("bad");
  const std::string m = " --model " + kStories + " --chat off --out " + out;
  struct Case {
    std::string args, expect;
  };
  const std::vector<Case> cases = {
      {"eval haystack" + m, "unknown benchmark family 'haystack'"},
      {"eval", "give the benchmark first"},
      {"eval ruler" + m + " --tasks niah_single_9", "unknown RULER task 'niah_single_9'"},
      {"eval longbench" + m + " --tasks hotpotqa", "no samples of --tasks hotpotqa"},
      {"eval longbench" + m + " --tasks nosuchtask", "unknown LongBench task 'nosuchtask'"},
      {"eval needle" + m + " --methods 'fullkv;snapkv:retain_rate=abc'", "abc"},
      {"eval needle" + m + " --methods 'nosuch'", "nosuch"},
      {"eval needle" + m + " --shard 3/2", "--shard"},
      {"eval needle" + m + " --shard x", "expected i/n"},
      {"eval needle" + m + " --data /nonexistent/haystack", "/nonexistent/haystack"},
      {"eval longbench" + m + " --data /nonexistent/lb.jsonl", "/nonexistent/lb.jsonl"},
      {"eval needle" + m + " --protocol sideways", "sideways"},
      {"eval needle" + m + " --depths 150", "--depths"},
      {"eval needle" + m + " --lengths 100000", "context"},
      {"eval needle" + m + " --samples 3", "--samples does not apply to eval needle"},
      {"eval needle --model " + kStories + " --out " + out, "no chat template"},
      {"eval needle --model " + kStories + " --chat off", "missing --out"},
      {"eval merge /nonexistent/shard --out " + out, "/nonexistent/shard"},
  };
  for (const Case& c : cases) {
    CliResult r = cli(c.args);
    EXPECT_NE(r.code, 0) << c.args;
    EXPECT_NE(r.err.find(c.expect), std::string::npos) << c.args << "\n" << r.err;
    EXPECT_EQ(r.err.find("Segmentation"), std::string::npos) << c.args;
  }
  // A malformed data row names its file and line.
  const std::string bad_jsonl = (fs::temp_directory_path() / "fkv_eval_bad.jsonl").string();
  {
    std::ofstream f(bad_jsonl);
    f << R"({"input": "q", "context": "c", "answers": ["a"], "dataset": "hotpotqa"})"
      << "\n";
    f << "{not json\n";
  }
  CliResult r = cli("eval longbench" + m + " --data " + bad_jsonl);
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find(bad_jsonl + ":2: not a JSON object"), std::string::npos) << r.err;
  // Resuming into a folder of another run is refused.
  const std::string other = fresh_dir("other");
  ASSERT_EQ(cli(kNeedleArgs + " --out " + other).code, 0);
  CliResult r2 = cli(kNeedleArgs + " --protocol context-first --out " + other);
  EXPECT_NE(r2.code, 0);
  EXPECT_NE(r2.err.find("holds another run"), std::string::npos) << r2.err;
}

}  // namespace
