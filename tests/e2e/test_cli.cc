// The fastkv CLI as a user runs it: output on stdout, timing on stderr, clear errors and non-zero
// exits for bad input.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "cli_run.h"

namespace {
namespace fs = std::filesystem;

const std::string kCli = FKV_CLI_PATH;
const std::string kShared = FKV_SHARED_DIR;
const std::string kSource = FKV_SOURCE_DIR;
const std::string kStories = kShared + "/models/stories260K/stories260K.gguf";

using fkv_test::CliRun;
CliRun run(const std::string& args) { return fkv_test::run_cli(kCli, args); }

TEST(Cli, GenerateStreamsTextAndPrintsTiming) {
  CliRun r = run("generate --model " + kStories + " --prompt '' --max-new-tokens 20");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("Once upon a time, there was a little girl named Lily.", 0), 0u) << r.out;
  EXPECT_NE(r.err.find("prompt_tokens=1"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("decode="), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("kv_bytes"), std::string::npos) << r.err;
}

TEST(Cli, SeededSamplingIsReproducible) {
  const std::string args = "generate --model " + kStories +
                           " --prompt 'Once upon' --max-new-tokens 30 --temperature 0.9 "
                           "--top-k 40 --top-p 0.95 --seed 42 --threads 1";
  CliRun a = run(args);
  CliRun b = run(args);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  CliRun c = run("generate --model " + kStories +
                 " --prompt 'Once upon' --max-new-tokens 30 --temperature 0.9 --seed 43");
  EXPECT_NE(a.out, c.out);
}

TEST(Cli, TokenizePrintsJsonArrayOnLastLine) {
  CliRun r = run("tokenize --model " + kStories + " --text 'Once upon a time' --decode");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string last = r.out.substr(0, r.out.size() - 1);
  last = last.substr(last.rfind('\n') + 1);
  auto ids = nlohmann::json::parse(last);
  ASSERT_TRUE(ids.is_array());
  EXPECT_EQ(ids[0], 1);  // BOS
  EXPECT_GT(ids.size(), 2u);
}

TEST(Cli, HelpForEveryCommand) {
  for (const char* c : {"--help", "generate --help", "tokenize --help"}) {
    CliRun r = run(c);
    EXPECT_EQ(r.exit_code, 0) << c;
    EXPECT_NE(r.out.find("usage"), std::string::npos) << c << ": " << r.out;
  }
}

TEST(Cli, BadInputGivesOneClearErrorAndNonZeroExit) {
  struct Case {
    std::string args;
    std::string must_mention;
  };
  const std::vector<Case> cases = {
      {"frobnicate", "unknown command 'frobnicate'"},
      {"generate --model " + kStories + " --prompt hi --bogus 3", "--bogus"},
      {"generate --model " + kStories + " --prompt hi --max-new-tokens abc", "abc"},
      {"generate --model " + kStories + " --prompt hi --temperature -1", "temperature"},
      {"generate --model " + kStories + " --prompt hi --top-p 1.5", "top"},
      {"generate --model /nonexistent/m.gguf --prompt hi", "/nonexistent/m.gguf"},
      {"generate --model " + kStories, "--prompt"},
      {"generate --model " + kStories + " --prompt-file /nonexistent/p.txt", "/nonexistent/p.txt"},
      {"generate --model " + kStories + " --prompt hi --method magic", "magic"},
      {"generate --model " + kStories + " --prompt hi --method fastkv --tsp-layer 99", "99"},
      {"generate --model " + kStories + " --prompt hi --method snapkv --retain-rate 1.5", "1.5"},
      {"generate --model " + kStories + " --prompt hi --chat", "chat template"},
      {"generate --model " + kStories + " --prompt hi --threads 0", "--threads"},
      {"generate --model no-such-model-name --prompt hi", "no-such-model-name"},
      {"tokenize --text hi", "--model or --tokenizer"},
      {"tokenize --tokenizer /nonexistent/tokenizer.json --text hi", "/nonexistent/tokenizer.json"},
  };
  for (const auto& c : cases) {
    CliRun r = run(c.args);
    EXPECT_NE(r.exit_code, 0) << c.args;
    EXPECT_NE(r.err.find(c.must_mention), std::string::npos) << c.args << "\nstderr: " << r.err;
    EXPECT_EQ(r.err.find("internal check failed"), std::string::npos) << c.args;
  }
}

TEST(Cli, PromptLongerThanContextIsRejected) {
  const fs::path f = fs::temp_directory_path() / "fkv_long_prompt.txt";
  {
    std::ofstream out(f);
    for (int i = 0; i < 2000; ++i) out << "Once upon a time there was a girl. ";
  }
  CliRun r = run("generate --model " + kStories + " --prompt-file " + f.string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("context length"), std::string::npos) << r.err;
  fs::remove(f);
}

TEST(Cli, DumpSelectionWritesTheSchema) {
  const fs::path f = fs::temp_directory_path() / "fkv_sel.json";
  CliRun r = run("generate --model " + kStories +
                 " --prompt 'Once upon a time there was a little dog who liked to run in the park "
                 "with his friends every day' --max-new-tokens 4 --method snapkv --kv-budget 12 "
                 "--dump-selection " +
                 f.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(std::ifstream(f));
  EXPECT_EQ(j["method"], "snapkv");
  EXPECT_GT(j["n_prompt"].get<int>(), 12);
  ASSERT_EQ(j["layers"].size(), 5u);
  for (const auto& l : j["layers"]) {
    for (const auto& head : l["kept"]) EXPECT_EQ(head.size(), 12u);
  }
  EXPECT_TRUE(j["tsp"].is_null());
  fs::remove(f);
}

}  // namespace
