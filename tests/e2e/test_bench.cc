// fastkv bench as a user runs it (md / json / csv with every field, clear errors for bad flags),
// the synthetic models it runs on, and the random cache fill of its decode-only rows. No timing
// is asserted: speed lives in the bench's own output.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "core/thread_pool.h"
#include "engine/bench.h"
#include "engine/engine.h"
#include "kv/method_spec.h"
#include "model/synthetic.h"

namespace {
namespace fs = std::filesystem;

const std::string kCli = FKV_CLI_PATH;
const std::string kShared = FKV_SHARED_DIR;
const std::string kSource = FKV_SOURCE_DIR;
const std::string kStories = kShared + "/models/stories260K/stories260K.gguf";
const std::string kTinyFastkv = kSource + "/tests/data/models/tiny-llama-fastkv";

struct CliRun {
  int exit_code = -1;
  std::string out, err;
};

CliRun run(const std::string& args, const std::string& env = "") {
  const fs::path err_file =
      fs::temp_directory_path() / ("fkv_bench_err_" + std::to_string(::getpid()));
  const std::string cmd = env + " '" + kCli + "' bench " + args + " 2>" + err_file.string();
  CliRun r;
  FILE* p = popen(cmd.c_str(), "r");
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream in(err_file);
  r.err.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  fs::remove(err_file);
  return r;
}

const char* kRowFields[] = {"method",
                            "method_options",
                            "prompt_tokens",
                            "gen_tokens",
                            "depth",
                            "threads",
                            "kv_dtype",
                            "prefill_s",
                            "prefill_s_std",
                            "prefill_tok_per_s",
                            "prefill_tok_per_s_std",
                            "decode_ms_per_token",
                            "decode_ms_per_token_std",
                            "e2e_s",
                            "e2e_s_std",
                            "kv_bytes",
                            "kv_bytes_std",
                            "peak_rss_bytes",
                            "peak_rss_bytes_std",
                            "ubatch",
                            "samples"};

TEST(Bench, JsonRowsHaveEveryFieldForTheCartesianProduct) {
  CliRun r = run("--model " + kStories +
                 " -p 16,32 -n 3 -m fullkv -m fastkv:tsp_rate=0.5,retain_rate=0.5 -t 1 -r 2 "
                 "--warmup 0 -o json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto rows = nlohmann::json::parse(r.out);
  ASSERT_TRUE(rows.is_array());
  ASSERT_EQ(rows.size(), 4u);  // 2 methods x 2 prompt lengths
  for (const auto& row : rows) {
    for (const char* f : kRowFields) EXPECT_TRUE(row.contains(f)) << f << " in " << row.dump();
    EXPECT_EQ(row["gen_tokens"], 3);
    EXPECT_EQ(row["depth"], 0);
    EXPECT_EQ(row["threads"], 1);
    EXPECT_EQ(row["samples"].size(), 2u);
    EXPECT_GT(row["kv_bytes"].get<double>(), 0);
    EXPECT_GT(row["prefill_s"].get<double>(), 0);
  }
  EXPECT_EQ(rows[0]["method"], "fullkv");
  EXPECT_EQ(rows[2]["method"], "fastkv");
  EXPECT_EQ(rows[2]["method_options"]["tsp_rate"], 0.5);
  EXPECT_EQ(rows[2]["method_spec"], "fastkv:tsp_rate=0.5,retain_rate=0.5");
  // fullkv keeps every row of the prompt and the decoded tokens: K+V, f16 by default, every layer
  // and head. stories260K: 5 layers, 4 KV heads, head_dim 8.
  EXPECT_EQ(rows[1]["kv_dtype"], "f16");
  EXPECT_EQ(rows[1]["kv_bytes"].get<double>(), (32 + 3) * 5 * 4 * 8 * 2 * 2);
  // Progress lines name each run.
  EXPECT_NE(r.err.find("[bench] row 4/4"), std::string::npos) << r.err;
}

TEST(Bench, MarkdownAndCsvHaveOneLinePerRow) {
  CliRun md = run("--model " + kStories + " -p 8 -n 2 -m fullkv,snapkv -r 1 --quiet");
  ASSERT_EQ(md.exit_code, 0) << md.err;
  EXPECT_NE(md.out.find("| method | p | n | d |"), std::string::npos) << md.out;
  EXPECT_NE(md.out.find("| fullkv | 8 | 2 | 0 |"), std::string::npos) << md.out;
  EXPECT_NE(md.out.find("| snapkv | 8 | 2 | 0 |"), std::string::npos) << md.out;
  EXPECT_TRUE(md.err.empty()) << md.err;
  CliRun csv = run("--model " + kStories + " -p 8 -n 2 -d 0 -m fullkv -r 1 -o csv --quiet");
  ASSERT_EQ(csv.exit_code, 0) << csv.err;
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < csv.out.size()) {
    const size_t nl = csv.out.find('\n', start);
    lines.push_back(csv.out.substr(start, nl - start));
    start = nl + 1;
  }
  ASSERT_EQ(lines.size(), 2u) << csv.out;
  EXPECT_EQ(
      lines[0].rfind("model,model_dtype,method,method_spec,prompt_tokens,gen_tokens,depth", 0), 0u);
  for (const char* f : {"prefill_s", "decode_ms_per_token", "kv_bytes", "peak_rss_bytes"}) {
    EXPECT_NE(lines[0].find(f), std::string::npos) << f;
  }
  // Same number of fields in header and row (the spec is quoted).
  auto count = [](const std::string& s) { return std::count(s.begin(), s.end(), ','); };
  EXPECT_EQ(count(lines[0]), count(lines[1])) << csv.out;
}

TEST(Bench, DecodeOnlyRowsAndOutputFile) {
  const fs::path out = fs::temp_directory_path() / ("fkv_bench_" + std::to_string(::getpid()));
  CliRun r = run("--model " + kStories +
                 " -d 24 -n 2 -m fullkv,h2o -kv f32 --fill random -r 1 -o json "
                 "--quiet --out-file " +
                 out.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(r.out.empty());
  std::ifstream in(out);
  auto rows = nlohmann::json::parse(in);
  fs::remove(out);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0]["prompt_tokens"], 0);
  EXPECT_EQ(rows[0]["depth"], 24);
  EXPECT_EQ(rows[0]["fill"], "random");
  EXPECT_EQ(rows[0]["prefill_s"], 0.0);
  EXPECT_EQ(rows[0]["kv_dtype"], "f32");
  EXPECT_EQ(rows[0]["kv_bytes"].get<double>(), (24 + 2) * 5 * 4 * 8 * 2 * 4);
}

// --plot runs tools/scripts/plot_bench.py (needs python3 + matplotlib) and writes a PNG.
TEST(Bench, PlotWritesAPng) {
  if (std::system("python3 -c 'import matplotlib' 2>/dev/null") != 0) {
    GTEST_SKIP() << "python3 matplotlib is not installed (pip install matplotlib)";
  }
  const fs::path png =
      fs::temp_directory_path() / ("fkv_bench_plot_" + std::to_string(::getpid()) + ".png");
  CliRun r = run("--model " + kStories + " -p 8,16 -n 2 -m fullkv,snapkv -r 1 --quiet --plot " +
                 png.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ifstream in(png, std::ios::binary);
  std::string head(8, '\0');
  in.read(head.data(), 8);
  fs::remove(png);
  EXPECT_EQ(head.substr(1, 3), "PNG");
  // A plot script that fails is an error, with the table still printed.
  CliRun bad = run("--model " + kStories + " -p 8 -n 1 -r 1 --quiet --plot " + png.string(),
                   "FASTKV_PLOT_SCRIPT=/nonexistent.py");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("--plot"), std::string::npos) << bad.err;
  EXPECT_NE(bad.out.find("| fullkv |"), std::string::npos);
  EXPECT_FALSE(fs::exists(png));
}

// The read-bandwidth probe: one line per thread count, a positive figure.
TEST(Bench, BandwidthProbePrintsOneLinePerThreadCount) {
  CliRun r = run("--bandwidth -t 1,2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::istringstream lines(r.out);
  std::string line;
  int n = 0;
  while (std::getline(lines, line)) {
    ASSERT_EQ(line.rfind("read bandwidth: ", 0), 0u) << line;
    EXPECT_GT(std::stod(line.substr(16)), 0.0) << line;
    EXPECT_NE(line.find(n == 0 ? "(1 threads" : "(2 threads"), std::string::npos) << line;
    ++n;
  }
  EXPECT_EQ(n, 2) << r.out;
}

// The int8 peak probe: one line naming the kernel instruction's ISA, positive where there is one.
TEST(Bench, Int8PeakProbePrintsTheInstructionsRate) {
  CliRun r = run("--int8-peak -t 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(r.out.rfind("int8 peak: ", 0), 0u) << r.out;
  if (r.out.find("scalar") == std::string::npos) EXPECT_GT(std::stod(r.out.substr(11)), 0.0);
}

TEST(Bench, BadFlagsGiveClearErrors) {
  struct Case {
    std::string args, message;
  };
  const std::vector<Case> cases = {
      {"-p 8", "exactly one of --model PATH or --synthetic SHAPE"},
      {"--bandwidth --model " + kStories, "--bandwidth / --int8-peak take no --model"},
      {"--bandwidth -t 0", "-t (--threads)"},
      {"--model " + kStories + " -p 8,x", "-p (--n-prompt)"},
      {"--model " + kStories + " -p -3", "-p (--n-prompt)"},
      {"--model " + kStories + " -p 8 -d 16", "-d rows are decode-only"},
      {"--model " + kStories + " -p 0", "nothing to run"},
      {"--model " + kStories + " -d 8 -n 0", "needs -n > 0"},
      {"--model " + kStories + " -p 8 -m nosuch", "-m 'nosuch'"},
      {"--model " + kStories + " -p 8 -m fastkv:tsp_rate=7", "tsp_rate"},
      {"--model " + kStories + " -p 8 -o xml", "md, json or csv"},
      {"--model " + kStories + " -p 8 -kv f8", "f16, bf16, f32"},
      {"--model " + kStories + " -p 8 -r 0", "--repetitions"},
      {"--model " + kStories + " -p 8 -x 3", "unknown option '-x'"},
      {"--model " + kStories + " -p 8 --fill maybe", "--fill must be prefill or random"},
      {"--model " + kStories + " -p 100000", "context"},
      {"--model " + kStories + " -p 8 --out-file /nonexistent-dir/x.json", "--out-file"},
      {"--model " + kStories + " -p 8 --plot /nonexistent-dir/x.png", "--plot"},
      {"--synthetic llama-9b", "unknown synthetic model 'llama-9b'"},
      {"--synthetic qwen2.5-0.5b --synthetic-dtype q2_k", "q2_k"},
      {"--model " + kStories + " --synthetic-dtype bf16", "--synthetic-dtype needs --synthetic"},
      {"--model " + kStories + " -p", "needs a value"},
  };
  for (const Case& c : cases) {
    CliRun r = run("--quiet " + c.args);
    EXPECT_NE(r.exit_code, 0) << c.args;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << c.args << " -> " << r.err;
    EXPECT_NE(r.err.find("fastkv: error:"), std::string::npos) << r.err;
  }
}

// Every row says how the pool's idle workers wait; FASTKV_POOL_SPIN_US sets it and a bad value is
// a clean start-up error naming the variable.
TEST(Bench, PoolWaitIsReportedAndItsSettingChecked) {
  const std::string args = "--model " + kStories + " -p 8 -n 1 -r 1 --warmup 0 -o json --quiet";
  auto wait_of = [&](const std::string& env) {
    CliRun r = run(args, env);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return nlohmann::json::parse(r.out)[0]["pool_wait"].get<std::string>();
  };
  EXPECT_EQ(wait_of("env -u FASTKV_POOL_SPIN_US"),
            "pool spin=" + std::to_string(fkv::kDefaultPoolSpinUs) + "us, none while contended");
  EXPECT_EQ(wait_of("env FASTKV_POOL_SPIN_US=250"), "pool spin=250us, none while contended");
  EXPECT_EQ(wait_of("env FASTKV_POOL_SPIN_US=0"), "pool spin=0us (sleep at once)");
  for (const char* bad : {"abc", "-1", "2000000", ""}) {
    CliRun r = run(args, std::string("env FASTKV_POOL_SPIN_US=") + bad);
    EXPECT_EQ(r.exit_code, 2) << bad;
    EXPECT_NE(r.err.find("FASTKV_POOL_SPIN_US"), std::string::npos) << bad << " -> " << r.err;
  }
}

// A decode-only row's random fill keeps, layer by layer, as many rows as a real prefill of the
// same length under the same method, so its decode reads a cache of the right size.
TEST(Bench, RandomFillKeepsWhatAPrefillKeeps) {
  auto model = fkv::Model::load(kTinyFastkv);
  ASSERT_TRUE(model) << model.error();
  const int depth = 96;
  std::vector<int32_t> tokens(depth);
  for (int i = 0; i < depth; ++i) tokens[i] = (i * 37 + 11) % (*model)->config().n_vocab;
  for (const std::string& name : fkv::policy_names()) {
    fkv::PolicyOptions po;
    po.method = name;
    auto keys = fkv::method_options(name);
    ASSERT_TRUE(keys) << name;
    for (const auto& k : *keys) {
      if (std::string(k.key) == "kv_budget") po.kv_budget = 24;
    }
    for (const auto& k : *keys) {
      if (std::string(k.key) == "retain_rate" && !po.kv_budget) po.retain_rate = 0.3;
    }
    auto pa = fkv::make_policy(po, (*model)->policy_info());
    auto pb = fkv::make_policy(po, (*model)->policy_info());
    ASSERT_TRUE(pa && pb) << name << ": " << (pa ? pb.error() : pa.error());
    fkv::SessionOptions so;
    so.max_new_tokens = 4;
    fkv::Session real(**model, **pa, so), filled(**model, **pb, so);
    std::vector<float> logits;
    ASSERT_TRUE(real.prefill(tokens, logits)) << name;
    ASSERT_TRUE(filled.fill_random(depth, 7)) << name;
    EXPECT_EQ(real.next_pos(), filled.next_pos()) << name;
    EXPECT_EQ(real.kv_bytes(), filled.kv_bytes()) << name;
    auto a = real.cache_positions(), b = filled.cache_positions();
    ASSERT_EQ(a.size(), b.size());
    for (size_t il = 0; il < a.size(); ++il) {
      size_t rows_a = 0, rows_b = 0;
      for (const auto& h : a[il]) rows_a += h.size();
      for (const auto& h : b[il]) rows_b += h.size();
      EXPECT_EQ(rows_a, rows_b) << name << " layer " << il;
    }
    // Decode runs on the filled cache at the next position.
    ASSERT_TRUE(filled.decode(3, logits)) << name;
    EXPECT_EQ(filled.next_pos(), real.next_pos() + 1);
  }
}

TEST(Bench, SyntheticModelsHaveRealShapesAndFiniteLogits) {
  auto cfg = fkv::synthetic_config("llama-3.2-1b");
  ASSERT_TRUE(cfg);
  EXPECT_EQ(cfg->n_layers, 16);
  EXPECT_EQ(cfg->d_model, 2048);
  EXPECT_EQ(cfg->n_kv_heads, 8);
  EXPECT_EQ(cfg->d_ff, 8192);
  EXPECT_EQ(cfg->n_vocab, 128256);
  auto cfg8 = fkv::synthetic_config("llama-3.1-8b");
  ASSERT_TRUE(cfg8);
  EXPECT_EQ(cfg8->head_dim, 128);
  EXPECT_EQ(cfg8->d_ff, 14336);
  EXPECT_FALSE(cfg8->tie_embeddings);
  // A small shape end to end in every dtype: same seed, same weights; logits finite.
  auto q = fkv::synthetic_config("qwen2.5-0.5b");
  ASSERT_TRUE(q);
  fkv::ModelConfig small = *q;
  small.n_layers = 2;
  small.n_vocab = 512;
  small.bos_token_id = 1;  // special ids must lie inside the shrunk vocabulary
  small.eos_token_ids = {2};
  for (const char* dt : {"f32", "f16", "bf16", "q4_0", "q8_0"}) {
    auto dtype = fkv::synthetic_weight_dtype(dt);
    ASSERT_TRUE(dtype);
    auto m1 = fkv::Model::synthetic(small, *dtype, 5);
    auto m2 = fkv::Model::synthetic(small, *dtype, 5);
    ASSERT_TRUE(m1 && m2) << dt;
    const fkv::WeightMatrix& w1 = (*m1)->layer(1).w_down;
    const fkv::WeightMatrix& w2 = (*m2)->layer(1).w_down;
    ASSERT_EQ(w1.dtype, *dtype);
    EXPECT_EQ(std::memcmp(w1.data, w2.data, w1.row_bytes * w1.rows), 0) << dt;
    auto policy = fkv::make_policy(fkv::PolicyOptions(), (*m1)->policy_info());
    fkv::Session s(**m1, **policy);
    std::vector<float> logits;
    ASSERT_TRUE(s.prefill(std::vector<int32_t>{1, 2, 3, 4, 5}, logits));
    ASSERT_EQ(logits.size(), 512u);
    for (float x : logits) ASSERT_TRUE(std::isfinite(x)) << dt;
  }
  EXPECT_FALSE(fkv::synthetic_weight_dtype("q4_1"));
  // q4_k_m: llama.cpp's Q4_K_M mix by role (widths must be multiples of 256: a 1B-like shape).
  auto l = fkv::synthetic_config("llama-3.2-1b");
  ASSERT_TRUE(l);
  fkv::ModelConfig kshape = *l;
  kshape.n_layers = 8;
  kshape.d_model = 256;
  kshape.n_heads = 4;
  kshape.n_kv_heads = 2;
  kshape.head_dim = 64;
  kshape.rot_dim = 64;
  kshape.d_ff = 512;
  kshape.n_vocab = 512;
  kshape.bos_token_id = 1;
  kshape.eos_token_ids = {2};
  auto km = fkv::synthetic_weight_dtype("q4_k_m");
  ASSERT_TRUE(km);
  auto m = fkv::Model::synthetic(kshape, *km, 5);
  ASSERT_TRUE(m) << m.error();
  // use_more_bits(i, 8): layers 0 and 7, and 3 and 6 (every third after the first eighth).
  for (int il = 0; il < 8; ++il) {
    const bool more = il == 0 || il == 7 || il == 3 || il == 6;
    const fkv::DType want = more ? fkv::DType::kQ6_K : fkv::DType::kQ4_K;
    EXPECT_EQ((*m)->layer(il).wv.dtype, want) << il;
    EXPECT_EQ((*m)->layer(il).w_down.dtype, want) << il;
    EXPECT_EQ((*m)->layer(il).wq.dtype, fkv::DType::kQ4_K) << il;
    EXPECT_EQ((*m)->layer(il).w_gate.dtype, fkv::DType::kQ4_K) << il;
  }
  EXPECT_EQ((*m)->lm_head().dtype, fkv::DType::kQ6_K);  // tied: the embedding is the output
  auto policy = fkv::make_policy(fkv::PolicyOptions(), (*m)->policy_info());
  fkv::Session s(**m, **policy);
  std::vector<float> logits;
  ASSERT_TRUE(s.prefill(std::vector<int32_t>{1, 2, 3, 4, 5}, logits));
  for (float x : logits) ASSERT_TRUE(std::isfinite(x));
  auto bad = fkv::Model::synthetic(small, *km, 5);  // 896 wide
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().find("divisible by 256"), std::string::npos) << bad.error();
}

}  // namespace

// -b B: B sequences, each prefilled on its own, then decoded together (decode_batch). KV bytes
// add up over the sequences, tok/s count all of them, decode ms are per step; bad values fail.
TEST(Bench, BatchedRowsDecodeSeveralSequencesTogether) {
  CliRun r =
      run("--model " + kStories + " -p 16 -n 3 -b 1,3 -m fullkv -kv f32 -r 1 -o json --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto rows = nlohmann::json::parse(r.out);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0]["batch"], 1);
  EXPECT_EQ(rows[1]["batch"], 3);
  const double one = rows[0]["kv_bytes"].get<double>();
  EXPECT_EQ(one, (16 + 3) * 5 * 4 * 8 * 2 * 4);
  EXPECT_EQ(rows[1]["kv_bytes"].get<double>(), 3 * one);
  EXPECT_EQ(rows[1]["kv_bytes_after_prefill"].get<double>(), 3 * 16 * 5 * 4 * 8 * 2 * 4);
  const auto& s = rows[1]["samples"][0];
  EXPECT_NEAR(rows[1]["decode_tok_per_s"].get<double>(), 3 * 3 / s["decode_s"].get<double>(),
              1e-6 * rows[1]["decode_tok_per_s"].get<double>());
  EXPECT_NEAR(rows[1]["decode_ms_per_token"].get<double>(), 1000 * s["decode_s"].get<double>() / 3,
              1e-9 + 1e-6 * rows[1]["decode_ms_per_token"].get<double>());
  EXPECT_NEAR(rows[1]["prefill_tok_per_s"].get<double>(), 3 * 16 / s["prefill_s"].get<double>(),
              1e-6 * rows[1]["prefill_tok_per_s"].get<double>());

  CliRun md = run("--model " + kStories + " -d 8 -n 2 -b 2 --fill random -r 1 --quiet");
  ASSERT_EQ(md.exit_code, 0) << md.err;
  EXPECT_NE(md.out.find("| b |"), std::string::npos) << md.out;

  for (const char* bad : {"-b 0", "-b 257", "-b two"}) {
    CliRun e = run("--model " + kStories + " -p 8 -n 1 " + std::string(bad) + " --quiet");
    EXPECT_NE(e.exit_code, 0) << bad;
    EXPECT_NE(e.err.find("-b"), std::string::npos) << bad << ": " << e.err;
  }
}
