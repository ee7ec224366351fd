// Issue 11: the four causes of bad input that used to pass silently, each fixed at its root and
// checked here through the CLI as a user meets them.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "cli_run.h"

namespace {
namespace fs = std::filesystem;
using fkv_test::CliRun;

const std::string kCli = FKV_CLI_PATH;
const std::string kStories = std::string(FKV_SHARED_DIR) + "/models/stories260K/stories260K.gguf";
const std::string kTinyLlama = std::string(FKV_SOURCE_DIR) + "/tests/data/models/tiny-llama";

CliRun run(const std::string& args) { return fkv_test::run_cli(kCli, args); }

std::string gen(const std::string& extra) {
  return "generate --model " + kStories + " --prompt 'Once' --max-new-tokens 3 " + extra;
}

// One clear line on stderr that mentions `needle`, non-zero exit, nothing generated.
void expect_clear_error(const std::string& args, const std::string& needle) {
  SCOPED_TRACE(args);
  const CliRun r = run(args);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("fastkv: error: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
  EXPECT_EQ(r.out, "") << "nothing may be generated before an input error";
}

struct ScratchDir {
  fs::path path;
  ScratchDir() {
    path = fs::temp_directory_path() / ("fkv_hardening_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~ScratchDir() { fs::remove_all(path); }
  std::string str(const std::string& name) const { return (path / name).string(); }
};

// Cause 1: a directory (or an empty file where content is needed) is named as such.
TEST(CliHardening, DirectoriesAndEmptyFilesAreNamed) {
  ScratchDir dir;
  const std::string d = dir.path.string();
  std::ofstream(dir.str("empty.jinja")).close();
  expect_clear_error("generate --model " + kStories + " --prompt-file " + d, "is a directory");
  expect_clear_error("tokenize --model " + kStories + " --file " + d, "is a directory");
  expect_clear_error(gen("--chat --chat-template " + d), "is a directory");
  expect_clear_error(gen("--chat --chat-template " + dir.str("empty.jinja")), "is empty");
  expect_clear_error("tokenize --tokenizer " + d + " --text hi", "is a directory");
  expect_clear_error("tokenize --tokenizer " + dir.str("nope.json") + " --text hi",
                     "No such file or directory");
  expect_clear_error("generate --model " + kStories + " --prompt-file " + dir.str("nope.txt"),
                     "No such file or directory");
}

// Cause 2: numbers are parsed at full width and range-checked before narrowing; messages quote
// the typed value.
TEST(CliHardening, NumbersAreCheckedAtFullWidth) {
  const std::string base = "generate --model " + kStories + " --prompt 'Once' ";
  expect_clear_error(base + "--max-new-tokens 4294967297", "got '4294967297'");
  expect_clear_error(base + "--max-new-tokens 1000000000000", "got '1000000000000'");
  expect_clear_error(base + "--max-new-tokens -1", "got '-1'");
  expect_clear_error(gen("--top-k 4294967291"), "got '4294967291'");
  expect_clear_error(gen("--seed -1"), "got '-1'");
  expect_clear_error(gen("--seed 18446744073709551616"), "got '18446744073709551616'");
  expect_clear_error(gen("--threads 4294967297"), "got '4294967297'");
  expect_clear_error(gen("--top-p 1.5"), "got '1.5'");
  expect_clear_error(gen("--temperature nan"), "got 'nan'");
  expect_clear_error(gen("--method snapkv --window 4294967304"), "got '4294967304'");
  expect_clear_error(gen("--method 'snapkv:window=4294967304'"), "got '4294967304'");
  // The whole uint64 range is a valid seed, and it is reproducible.
  const CliRun a = run(gen("--seed 18446744073709551615 --temperature 0.8"));
  const CliRun b = run(gen("--seed 18446744073709551615 --temperature 0.8"));
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
}

// Issue 21: --top-p states one range, (0, 1], for every value outside it (1.5 used to say
// "[0, 1]" while 0 was refused as outside "(0, 1]").
TEST(CliHardening, TopPOutOfRangeSaysTheHalfOpenRange) {
  for (const char* v : {"1.5", "0", "-0.25", "1.0000001"}) {
    expect_clear_error(gen(std::string("--top-p ") + v),
                       std::string("--top-p must be in (0, 1], got '") + v + "'");
  }
  expect_clear_error(gen("--top-p abc"), "--top-p expects a finite number, got 'abc'");
  for (const char* v : {"1", "0.5", "1e-3"}) {
    const CliRun r = run(gen(std::string("--temperature 0.8 --top-p ") + v));
    EXPECT_EQ(r.exit_code, 0) << v << ": " << r.err;
  }
}

// Cause 3: invalid model values in config.json are errors naming the field (the CLI path of the
// unit tests in test_model_loading.cc and test_tokenizer_gguf.cc).
TEST(CliHardening, InvalidModelValuesNameTheField) {
  ScratchDir dir;
  const fs::path model = dir.path / "model";
  fs::copy(kTinyLlama, model, fs::copy_options::recursive);
  const std::string original = [&] {
    std::ifstream in(model / "config.json");
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }();
  auto with = [&](const char* key, nlohmann::json value) {
    nlohmann::json j = nlohmann::json::parse(original);
    j[key] = value;
    std::ofstream(model / "config.json", std::ios::trunc) << j.dump();
  };
  const std::string args = "generate --model " + model.string() + " --prompt hi --max-new-tokens 2";
  with("num_hidden_layers", 2.5);
  expect_clear_error(args, "num_hidden_layers");
  with("rms_norm_eps", -1);
  expect_clear_error(args, "rms_norm_eps");
  with("vocab_size", 1e12);
  expect_clear_error(args, "vocab_size");
}

// Cause 4: every output file goes through one atomic writer; its destination is checked before
// the work starts, and a failure is reported with the OS reason and a non-zero exit.
TEST(CliHardening, OutputFilesAreCheckedFirstAndWrittenAtomically) {
  ScratchDir dir;
  expect_clear_error(gen("--dump-selection /dev/full"), "/dev/full");
  expect_clear_error(gen("--dump-selection /proc/version"), "/proc/version");
  expect_clear_error(gen("--dump-selection " + dir.str("no/such/folder/kept.json")),
                     "does not exist");
  expect_clear_error(gen("--dump-selection " + dir.path.string()), "is a directory");
  // A good dump replaces the previous file whole; a failing one leaves it in place.
  const std::string good = dir.str("kept.json");
  std::ofstream(good) << "previous";
  CliRun r = run(gen("--dump-selection " + good));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ifstream in(good);
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  ASSERT_FALSE(j.is_discarded());
  EXPECT_EQ(j["n_prompt"], 2);
  if (::geteuid() != 0) {  // root can write anywhere: a read-only folder proves nothing then
    std::ofstream(good, std::ios::trunc) << "previous";
    fs::permissions(dir.path, fs::perms::owner_read | fs::perms::owner_exec);
    r = run(gen("--dump-selection " + good));
    fs::permissions(dir.path, fs::perms::owner_all);
    EXPECT_NE(r.exit_code, 0);
    std::ifstream again(good);
    EXPECT_EQ(std::string(std::istreambuf_iterator<char>(again), {}), "previous");
  }
  for (const auto& e : fs::directory_iterator(dir.path)) {
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos)
        << "temporary file left behind: " << e.path();
  }
}

}  // namespace
