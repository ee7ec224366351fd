// fastkv eval: needle / RULER / LongBench accuracy of KV methods on one model, and merge of
// shard folders. The work is in src/eval (samples, metrics, runner); this file reads flags.
#include <signal.h>
#include <sys/stat.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/file_io.h"
#include "core/parse_number.h"
#include "engine/app.h"
#include "eval/jieba.h"
#include "eval/longbench.h"
#include "eval/needle.h"
#include "eval/ruler.h"
#include "eval/runner.h"
#include "eval/samples.h"

#ifndef FKV_PLOT_SCRIPT
#define FKV_PLOT_SCRIPT "tools/scripts/plot_eval.py"
#endif

namespace fkv::cli {

namespace {
// Set by SIGINT / SIGTERM during a run (a lock-free atomic store is async-signal-safe).
std::atomic<bool> g_eval_interrupt{false};
void on_eval_signal(int) { g_eval_interrupt.store(true); }
}  // namespace
namespace {

using eval::Family;

const std::vector<ArgSpec>& eval_specs() {
  static const std::vector<ArgSpec> specs = {
      {"model", ArgKind::kString, "model folder (HF layout), .gguf file, or a known short name"},
      {"methods", ArgKind::kString,
       "method specs separated by ';' (default fullkv), e.g. "
       "\"fullkv;fastkv:tsp_rate=0.2,retain_rate=0.1;snapkv:retain_rate=0.1\""},
      {"retain-rates", ArgKind::kString,
       "sweep: run every method that takes retain_rate (and sets no budget) at each rate, e.g. "
       "0.05,0.1,0.2,0.5"},
      {"data", ArgKind::kString,
       "needle: haystack folder of *.txt; ruler: RULER jsonl file or folder (default: generate); "
       "longbench: jsonl file or folder (default ../shared/data/<family> when it exists)"},
      {"haystack", ArgKind::kString,
       "ruler: essay folder for the generator (default: the needle data)"},
      {"tasks", ArgKind::kString,
       "comma-separated tasks (ruler: default all 11; longbench: all in --data)"},
      {"lengths", ArgKind::kString,
       "needle/ruler prompt lengths in model tokens, e.g. 2048,4K,8K (needle default 2K,4K,8K; "
       "ruler 4K)"},
      {"depths", ArgKind::kString, "needle depths in percent (default 0,25,50,75,100)"},
      {"samples", ArgKind::kInt,
       "first N samples of each task (ruler generates N, default 10; longbench default all)"},
      {"max-length", ArgKind::kInt,
       "longbench: middle-truncate prompts to N tokens (always within the model's context)"},
      {"protocol", ArgKind::kString,
       "joint (context + question prefilled, then compressed; default) | context-first "
       "(context compressed alone, question appended with Session::extend)"},
      {"seed", ArgKind::kInt, "ruler generator seed (default 0)"},
      {"threads", ArgKind::kInt, "total worker threads (default: all cores)"},
      {"parallel", ArgKind::kInt,
       "sessions run at once, splitting --threads (default: as cores and memory allow)"},
      {"out", ArgKind::kString, "output folder (created; a rerun resumes it)"},
      {"shard", ArgKind::kString, "i/n: run only samples i, i+n, i+2n, ... (0 <= i < n)"},
      {"needle", ArgKind::kString, "needle: the sentence to hide (default: the spec's)"},
      {"question", ArgKind::kString, "needle: the question (default: the spec's)"},
      {"answer", ArgKind::kString,
       "needle: the expected answer scored against (default: the spec's)"},
      {"max-new-tokens", ArgKind::kInt,
       "override the answer budget (default: needle 30, ruler 64, longbench per task)"},
      {"chat", ArgKind::kString,
       "on (default: the chat template where the protocol applies it) | off (plain prompts)"},
      {"chat-template", ArgKind::kString, "Jinja chat template file instead of the model's"},
      {"jieba-dir", ArgKind::kString,
       "jieba package folder with dict.txt (default $FASTKV_JIEBA_DIR or the Debian path)"},
      {"no-plots", ArgKind::kFlag, "skip the PNG plots (tools/scripts/plot_eval.py)"},
      {"no-share-prefill", ArgKind::kFlag,
       "run every method's own prefill (default: fullkv, snapkv, pyramidkv, adakv, streamingllm "
       "and h2o share one prompt pass per sample; results are identical, bit for bit)"},
  };
  return specs;
}

std::vector<std::string> split_list(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find(sep, start);
    if (end == std::string::npos) end = s.size();
    std::string piece = s.substr(start, end - start);
    piece.erase(0, piece.find_first_not_of(" \t"));
    piece.erase(piece.find_last_not_of(" \t") + 1);
    if (!piece.empty()) out.push_back(piece);
    start = end + 1;
  }
  return out;
}

// "2048,4K,8k" -> tokens.
Expected<std::vector<int>> parse_lengths(const std::string& text) {
  std::vector<int> out;
  for (std::string p : split_list(text, ',')) {
    int64_t mul = 1;
    if (!p.empty() && (p.back() == 'K' || p.back() == 'k')) {
      mul = 1024;
      p.pop_back();
    }
    auto v = parse_int_in_range(p, "--lengths", 1, (1 << 24) / mul);
    if (!v) return Status::error(v.error() + " (in --lengths '" + text + "')");
    out.push_back(static_cast<int>(*v * mul));
  }
  if (out.empty()) return Status::error("--lengths '" + text + "': no length");
  return out;
}

Expected<std::vector<double>> parse_doubles(const std::string& text, const std::string& flag,
                                            double lo, double hi) {
  std::vector<double> out;
  for (const std::string& p : split_list(text, ',')) {
    auto v = parse_double_in_range(p, flag, lo, hi);
    if (!v) return v.status();
    out.push_back(*v);
  }
  if (out.empty()) return Status::error(flag + " '" + text + "': no value");
  return out;
}

Status parse_shard(const std::string& text, int& index, int& count) {
  const size_t slash = text.find('/');
  if (slash == std::string::npos)
    return Status::error("--shard '" + text + "': expected i/n, e.g. 0/4");
  auto n = parse_int_in_range(text.substr(slash + 1), "--shard n", 1, 1 << 20);
  if (!n) return Status::error(n.error() + " (in --shard '" + text + "')");
  auto i = parse_int_in_range(text.substr(0, slash), "--shard i", 0, *n - 1);
  if (!i)
    return Status::error(i.error() + " (in --shard '" + text + "': i must be in 0.." +
                         std::to_string(*n - 1) + ")");
  index = static_cast<int>(*i);
  count = static_cast<int>(*n);
  return Status::ok();
}

bool is_dir(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// $FASTKV_DATA_DIR/<sub>, ../shared/data/<sub>, shared/data/<sub>: the first that exists.
std::string default_data_dir(const std::string& sub) {
  std::vector<std::string> c;
  if (const char* env = std::getenv("FASTKV_DATA_DIR"); env && *env)
    c.push_back(std::string(env) + "/" + sub);
  c.push_back("../shared/data/" + sub);
  c.push_back("shared/data/" + sub);
  for (const auto& d : c)
    if (is_dir(d)) return d;
  return "";
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char ch : s) out += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return out + "'";
}

// The plots come from tools/scripts/plot_eval.py (matplotlib). Missing Python or matplotlib is
// reported with the command to run later; it does not fail the evaluation.
void make_plots(const std::string& dir) {
  const char* env_script = std::getenv("FASTKV_EVAL_PLOT_SCRIPT");
  const std::string script = env_script && *env_script ? env_script : FKV_PLOT_SCRIPT;
  std::vector<std::string> pythons;
  if (const char* p = std::getenv("FASTKV_PYTHON"); p && *p) pythons.push_back(p);
  pythons.push_back("python3");
  pythons.push_back("/usr/bin/python3");
  for (const std::string& py : pythons) {
    const std::string probe = shell_quote(py) + " -c 'import matplotlib' >/dev/null 2>&1";
    if (std::system(probe.c_str()) != 0) continue;
    const std::string cmd = shell_quote(py) + " " + shell_quote(script) + " " + shell_quote(dir);
    if (std::system(cmd.c_str()) == 0) return;
    std::fprintf(stderr, "[eval] warning: plotting failed; rerun: %s\n", cmd.c_str());
    return;
  }
  std::fprintf(stderr,
               "[eval] warning: no python3 with matplotlib (apt-get install python3-matplotlib); "
               "plots skipped; make them later with: python3 %s %s\n",
               script.c_str(), dir.c_str());
}

int cmd_eval_merge(const std::vector<std::string>& args) {
  const char* usage =
      "usage: fastkv eval merge DIR... --out DIR [--no-plots]\n\n"
      "Joins the shard folders of one run (--shard i/n) into one folder with predictions.jsonl,\n"
      "scores.json, summary.md and plots, as one unsharded run would have written them.";
  static const std::vector<ArgSpec> specs = {
      {"out", ArgKind::kString, "output folder"},
      {"no-plots", ArgKind::kFlag, "skip the PNG plots"},
  };
  if (wants_help(args)) {
    print_help(usage, specs);
    return 0;
  }
  std::vector<std::string> dirs, flags;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i].rfind("--", 0) == 0) {
      flags.push_back(args[i]);
      if (args[i] == "--out" && i + 1 < args.size()) flags.push_back(args[++i]);
    } else {
      dirs.push_back(args[i]);
    }
  }
  auto pa = parse_args(flags, specs, "eval merge");
  if (!pa) return fail(pa.status());
  if (!pa->has("out")) return fail(Status::error("eval merge: missing --out DIR"));
  const std::string out = pa->str("out");
  std::error_code ec;
  std::filesystem::create_directories(out, ec);
  if (ec)
    return fail(Status::error("eval merge: cannot create --out " + out + ": " + ec.message()));
  if (auto st = eval::merge_runs(dirs, out); !st) return fail(st);
  std::fprintf(stderr, "[eval] merged %zu folders into %s\n", dirs.size(), out.c_str());
  if (!pa->has("no-plots")) make_plots(out);
  return 0;
}

}  // namespace

int cmd_eval(const std::vector<std::string>& args) {
  const char* usage =
      "usage: fastkv eval needle|ruler|longbench --model PATH --out DIR [--methods \"a;b;c\"]\n"
      "         [--retain-rates 0.05,0.1,0.2,0.5] [--data PATH] [--tasks a,b] [--lengths 2K,4K]\n"
      "         [--depths 0,50,100] [--samples N] [--max-length TOKENS]\n"
      "         [--protocol joint|context-first] [--seed S] [--threads N] [--shard i/n]\n"
      "       fastkv eval merge DIR... --out DIR\n\n"
      "Writes DIR/predictions.jsonl (one row per sample x method), scores.json\n"
      "({method: {task: score x 100}}), summary.md and PNG plots. A rerun into the same DIR\n"
      "skips finished rows.";
  if (!args.empty() && args[0] == "merge") {
    return cmd_eval_merge(std::vector<std::string>(args.begin() + 1, args.end()));
  }
  if (args.empty() || args[0].rfind("--", 0) == 0) {
    if (wants_help(args)) {
      print_help(usage, eval_specs());
      return 0;
    }
    return fail(Status::error("eval: give the benchmark first: needle, ruler, longbench or merge"));
  }
  auto family = eval::parse_family(args[0]);
  if (!family) return fail(Status::error("eval: " + family.error() + " (or merge)"));
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  if (wants_help(rest)) {
    print_help(usage, eval_specs());
    return 0;
  }
  const std::string cmd = std::string("eval ") + args[0];
  auto pa = parse_args(rest, eval_specs(), cmd);
  if (!pa) return fail(pa.status());
  if (!pa->has("model")) return fail(Status::error(cmd + ": missing --model PATH"));
  if (!pa->has("out")) return fail(Status::error(cmd + ": missing --out DIR"));
  const Family fam = *family;
  const std::string fam_name = eval::family_name(fam);
  auto only_for = [&](const char* flag, std::initializer_list<Family> fams) -> Status {
    if (!pa->has(flag)) return Status::ok();
    for (Family f : fams)
      if (f == fam) return Status::ok();
    return Status::error(strfmt("--%s does not apply to eval %s", flag, fam_name.c_str()));
  };
  for (auto st : {only_for("depths", {Family::kNeedle}), only_for("needle", {Family::kNeedle}),
                  only_for("question", {Family::kNeedle}), only_for("answer", {Family::kNeedle}),
                  only_for("lengths", {Family::kNeedle, Family::kRuler}),
                  only_for("haystack", {Family::kRuler}), only_for("seed", {Family::kRuler}),
                  only_for("tasks", {Family::kRuler, Family::kLongBench}),
                  only_for("samples", {Family::kRuler, Family::kLongBench}),
                  only_for("max-length", {Family::kLongBench})}) {
    if (!st) return fail(st);
  }

  eval::RunConfig rc;
  rc.family = fam;
  auto protocol = eval::parse_protocol(pa->str("protocol", "joint"));
  if (!protocol) return fail(protocol.status());
  rc.protocol = *protocol;
  std::vector<double> rates;
  if (pa->has("retain-rates")) {
    auto r = parse_doubles(pa->str("retain-rates"), "--retain-rates", 1e-6, 1.0);
    if (!r) return fail(r.status());
    rates = *r;
  }
  auto methods = eval::expand_methods(pa->str("methods", "fullkv"), rates);
  if (!methods) return fail(methods.status());
  rc.methods = *methods;
  if (pa->has("shard")) {
    if (auto st = parse_shard(pa->str("shard"), rc.shard_index, rc.shard_count); !st)
      return fail(st);
  }
  auto threads = get_int(*pa, "threads", 0, 1, 1024);
  if (!threads) return fail(threads.status());
  rc.threads = static_cast<int>(*threads);
  auto parallel = get_int(*pa, "parallel", 0, 1, 1024);
  if (!parallel) return fail(parallel.status());
  rc.parallel = static_cast<int>(*parallel);
  auto samples = get_int(*pa, "samples", 0, 1, 1 << 24);
  if (!samples) return fail(samples.status());
  auto max_new = get_int(*pa, "max-new-tokens", 0, 1, 1 << 16);
  if (!max_new) return fail(max_new.status());
  auto max_length = get_int(*pa, "max-length", 0, 16, 1 << 24);
  if (!max_length) return fail(max_length.status());
  uint64_t seed = 0;
  if (pa->has("seed")) {
    auto s = parse_uint64(pa->str("seed"), "--seed");
    if (!s) return fail(s.status());
    seed = *s;
  }
  const std::string chat_mode = pa->str("chat", "on");
  if (chat_mode != "on" && chat_mode != "off") {
    return fail(Status::error("--chat '" + chat_mode + "': expected on or off"));
  }
  rc.prompt.chat = chat_mode == "on";
  rc.share_prefill = !pa->has("no-share-prefill");
  if (pa->has("chat-template")) {
    auto t = read_text_file(pa->str("chat-template"), "--chat-template", false);
    if (!t) return fail(t.status());
    rc.prompt.chat_template = *t;
  }
  const std::string out = pa->str("out");
  {
    std::error_code ec;
    std::filesystem::create_directories(out, ec);
    if (ec || !is_dir(out))
      return fail(Status::error("--out " + out + ": cannot create the folder" +
                                (ec ? ": " + ec.message() : "")));
  }
  if (auto st = check_output_path(out + "/predictions.jsonl", "--out"); !st) return fail(st);

  // Data paths before the model loads (bad input fails fast).
  std::string data = pa->str("data");
  if (data.empty() && fam != Family::kRuler) {
    data = default_data_dir(fam == Family::kNeedle ? "needle" : "longbench");
    if (data.empty()) {
      return fail(Status::error(cmd + ": no --data given and no ../shared/data/" + fam_name +
                                " folder (set --data PATH or FASTKV_DATA_DIR)"));
    }
  }
  for (const char* flag : {"data", "haystack"}) {
    std::error_code ec;
    if (pa->has(flag) && !std::filesystem::exists(pa->str(flag), ec)) {
      return fail(
          Status::error(strfmt("--%s %s: no such file or folder", flag, pa->str(flag).c_str())));
    }
  }
  std::vector<std::string> tasks = split_list(pa->str("tasks"), ',');
  if (auto st = apply_threads(*pa); !st) return fail(st);

  auto path = resolve_model_path(pa->str("model"));
  if (!path) return fail(path.status());
  auto model = Model::load(*path);
  if (!model) return fail(model.status());
  auto tok = load_tokenizer_for(**model);
  if (!tok) return fail(tok.status());
  const ModelConfig& mc = (*model)->config();
  rc.prompt.context_limit = mc.n_ctx;
  if (rc.prompt.chat && rc.prompt.chat_template.empty() && tok->chat_template().empty()) {
    return fail(Status::error(*path +
                              " has no chat template; the protocol wraps prompts in one: "
                              "give --chat-template FILE, or --chat off for plain prompts"));
  }

  std::vector<eval::EvalSample> all;

  nlohmann::ordered_json meta;
  meta["model"] = *path;
  meta["chat"] = chat_mode;
  if (fam == Family::kNeedle) {
    eval::NeedleOptions no;
    no.haystack_dir = data;
    if (pa->has("needle")) no.needle = pa->str("needle");
    if (pa->has("question")) no.question = pa->str("question");
    if (pa->has("answer")) no.answer = pa->str("answer");
    auto lengths = parse_lengths(pa->str("lengths", "2048,4096,8192"));
    if (!lengths) return fail(lengths.status());
    no.lengths = *lengths;
    auto depths = parse_doubles(pa->str("depths", "0,25,50,75,100"), "--depths", 0, 100);
    if (!depths) return fail(depths.status());
    no.depths = *depths;
    if (*max_new > 0) no.max_new_tokens = static_cast<int>(*max_new);
    for (int L : no.lengths) {
      if (L + no.max_new_tokens > mc.n_ctx) {
        return fail(
            Status::error(strfmt("--lengths %d + %d new tokens exceed the model's %d-token "
                                 "context",
                                 L, no.max_new_tokens, mc.n_ctx)));
      }
    }
    auto s = eval::make_needle_samples(*tok, no, rc.prompt);
    if (!s) return fail(s.status());
    all = std::move(s.value());
    meta["data"] = "needle:" + data + "|" + no.needle + "|" + no.question + "|" + no.answer;
    meta["lengths"] = no.lengths;
    meta["depths"] = no.depths;
  } else if (fam == Family::kRuler) {
    const int ruler_new = *max_new > 0 ? static_cast<int>(*max_new) : 64;
    for (const std::string& t : tasks) {
      const auto& known = eval::ruler_tasks();
      if (std::find(known.begin(), known.end(), t) == known.end()) {
        std::string names;
        for (const auto& k : known) names += (names.empty() ? "" : ", ") + k;
        return fail(
            Status::error("--tasks: unknown RULER task '" + t + "' (tasks: " + names + ")"));
      }
    }
    if (!data.empty()) {
      if (pa->has("lengths"))
        return fail(
            Status::error("--lengths applies when RULER data is generated, not with --data"));
      auto files = eval::read_jsonl_inputs(data);
      if (!files) return fail(files.status());
      auto s = eval::read_ruler_files(*files, tasks, static_cast<int>(*samples), ruler_new);
      if (!s) return fail(s.status());
      all = std::move(s.value());
      meta["data"] = "ruler:" + data;
    } else {
      std::string hay_dir = pa->str("haystack", default_data_dir("needle"));
      if (hay_dir.empty()) {
        return fail(
            Status::error("eval ruler: the generator needs the essay haystack: give "
                          "--haystack DIR (*.txt) or --data RULER.jsonl"));
      }
      auto essays = eval::read_haystack(hay_dir);
      if (!essays) return fail(essays.status());
      auto lengths = parse_lengths(pa->str("lengths", "4096"));
      if (!lengths) return fail(lengths.status());
      if (tasks.empty()) tasks = eval::ruler_tasks();
      const int n = *samples > 0 ? static_cast<int>(*samples) : 10;
      std::error_code ec;
      std::filesystem::create_directories(out + "/ruler_data", ec);
      for (int L : *lengths) {
        for (const std::string& t : tasks) {
          auto rows = eval::generate_ruler_task(*tok, t, L, n, seed, *essays);
          if (!rows) return fail(rows.status());
          std::string jsonl;
          for (const auto& r : *rows) jsonl += eval::ruler_row_json(r) + "\n";
          // The generated data, in RULER's format, beside the results (reproducible input).
          if (auto st =
                  write_file_atomic(strfmt("%s/ruler_data/%s_%d.jsonl", out.c_str(), t.c_str(), L),
                                    jsonl, "generated RULER data");
              !st)
            return fail(st);
          auto s = eval::ruler_samples(t, L, *rows, ruler_new);
          all.insert(all.end(), s.begin(), s.end());
        }
      }
      meta["data"] = strfmt("ruler-generated:seed=%llu,samples=%d|",
                            static_cast<unsigned long long>(seed), n) +
                     hay_dir;
      meta["lengths"] = *lengths;
    }
    meta["tasks"] = tasks;
  } else {
    auto files = eval::read_jsonl_inputs(data);
    if (!files) return fail(files.status());
    for (const std::string& t : tasks) {
      if (eval::find_longbench_task(t) == nullptr) {
        return fail(Status::error("--tasks: unknown LongBench task '" + t + "'"));
      }
    }
    auto s = eval::read_longbench_files(*files, tasks, static_cast<int>(*samples));
    if (!s) return fail(s.status());
    all = std::move(s.value());
    if (*max_new > 0)
      for (auto& x : all) x.max_new_tokens = static_cast<int>(*max_new);
    rc.prompt.max_prompt_tokens = static_cast<int>(*max_length);
    meta["data"] = "longbench:" + data;
    meta["max_length"] = *max_length;
  }
  if (!tasks.empty()) {
    for (const std::string& t : tasks) {
      bool found = false;
      for (const auto& s : all) found = found || s.task == t;
      if (!found) return fail(Status::error("--tasks: no samples of task '" + t + "' in " + data));
    }
  }
  bool needs_jieba = false;
  for (const auto& s : all) needs_jieba = needs_jieba || eval::metric_needs_jieba(s.metric);
  if (needs_jieba) {
    auto jb = eval::shared_jieba(pa->str("jieba-dir"));
    if (!jb) return fail(jb.status());
    rc.jieba = *jb;
  }
  meta["samples"] = *samples;
  rc.meta = meta;
  rc.out_dir = out;
  // SIGINT / SIGTERM stop the run between rows (rows in flight are dropped within a chunk, layer
  // or token); a second signal ends the process at once, which loses nothing already written.
  rc.interrupt = &g_eval_interrupt;
  struct sigaction sa {};
  sa.sa_handler = on_eval_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESETHAND;
  struct sigaction old_int {
  }, old_term{};
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  auto result = eval::run_eval(**model, *tok, all, rc);
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  if (!result && result.error().rfind(eval::kInterruptedPrefix, 0) == 0) {
    std::fprintf(stderr, "\n[eval] %s; rerun the same command to resume (%s/predictions.jsonl)\n",
                 result.error().c_str(), out.c_str());
    return 130;
  }
  if (!result) return fail(result.status());
  std::fprintf(
      stderr,
      "[eval] %s: %d rows (%d run, %d resumed) -> %s/{predictions.jsonl,scores.json,summary.md}\n",
      fam_name.c_str(), result->rows_total, result->rows_run, result->rows_skipped, out.c_str());
  if (!pa->has("no-plots")) make_plots(out);
  return 0;
}

}  // namespace fkv::cli
