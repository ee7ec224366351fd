#include "eval/runner.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include "core/file_io.h"
#include "engine/app.h"
#include "engine/engine.h"
#include "kernels/matmul.h"
#include "kv/method_spec.h"

namespace fkv::eval {

using ojson = nlohmann::ordered_json;

Expected<std::vector<MethodRun>> expand_methods(const std::string& methods,
                                                const std::vector<double>& retain_rates) {
  std::vector<MethodRun> out;
  std::set<std::string> seen;
  size_t start = 0;
  while (start <= methods.size()) {
    size_t end = methods.find(';', start);
    if (end == std::string::npos) end = methods.size();
    std::string spec = methods.substr(start, end - start);
    start = end + 1;
    spec.erase(0, spec.find_first_not_of(" \t"));
    spec.erase(spec.find_last_not_of(" \t") + 1);
    if (spec.empty()) {
      if (end == methods.size()) break;
      return Status::error("--methods '" + methods + "': empty method between ';'");
    }
    auto opts = parse_method_spec(spec);
    if (!opts) return Status::error("--methods: " + opts.error());
    std::vector<PolicyOptions> variants = {*opts};
    const std::string canonical = format_method_spec(*opts);
    auto keys = method_options(opts->method);
    if (!keys) return keys.status();
    const bool takes_rate = std::any_of(keys->begin(), keys->end(), [](const MethodOptionInfo& k) {
      return std::string(k.key) == "retain_rate";
    });
    const bool sets_budget = canonical.find("retain_rate=") != std::string::npos ||
                             canonical.find("kv_budget=") != std::string::npos;
    if (!retain_rates.empty() && takes_rate && !sets_budget) {
      variants.clear();
      for (double r : retain_rates) {
        PolicyOptions v = *opts;
        char text[32];
        std::snprintf(text, sizeof text, "%.17g", r);
        if (auto st = set_method_option(v, "retain_rate", text); !st)
          return Status::error("--retain-rates: " + st.message());
        variants.push_back(v);
      }
    }
    for (const PolicyOptions& v : variants) {
      MethodRun m{format_method_spec(v), v};
      if (seen.insert(m.spec).second) out.push_back(std::move(m));
    }
    if (end == methods.size()) break;
  }
  if (out.empty()) return Status::error("--methods: no method given");
  return out;
}

Expected<Protocol> parse_protocol(const std::string& s) {
  if (s == "joint") return Protocol::kJoint;
  if (s == "context-first") return Protocol::kContextFirst;
  return Status::error("--protocol '" + s + "': expected joint or context-first");
}
const char* protocol_name(Protocol p) { return p == Protocol::kJoint ? "joint" : "context-first"; }

namespace {

// Methods whose prompt pass is the full forward (they differ only in what they cache):
// Session::prefill_shared runs their prefill once per sample.
bool shares_prefill(const std::string& method) { return shares_prompt_pass(method); }

std::string row_key(const std::string& task, const std::string& id, const std::string& method,
                    const std::string& protocol) {
  return task + '\x1f' + id + '\x1f' + method + '\x1f' + protocol;
}
std::string row_key(const ojson& r) {
  return row_key(r.value("task", ""), r.value("id", ""), r.value("method", ""),
                 r.value("protocol", ""));
}

void sort_rows(std::vector<ojson>& rows) {
  std::stable_sort(rows.begin(), rows.end(), [](const ojson& a, const ojson& b) {
    const int sa = a.value("sample_index", 0), sb = b.value("sample_index", 0);
    if (sa != sb) return sa < sb;
    return a.value("method_index", 0) < b.value("method_index", 0);
  });
}

std::string rows_text(const std::vector<ojson>& rows) {
  std::string out;
  for (const ojson& r : rows) {
    out += r.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    out += '\n';
  }
  return out;
}

std::string fmt_duration(double s) {
  if (!(s >= 0) || s > 1e7) return "--";
  const int t = static_cast<int>(s + 0.5);
  if (t >= 3600) return strfmt("%dh%02dm", t / 3600, (t / 60) % 60);
  if (t >= 60) return strfmt("%dm%02ds", t / 60, t % 60);
  return strfmt("%ds", t);
}

// Bytes one session needs at most for `tokens` prompt tokens (caches, activations, scores).
double session_bytes_estimate(const ModelConfig& c, int tokens) {
  const double per_token = 4.0 * (2.0 * c.n_layers * c.n_kv_heads * c.head_dim + 8.0 * c.d_model +
                                  3.0 * c.d_ff + c.n_heads * 64.0);
  return per_token * tokens + 4.0 * c.n_vocab * 4 + 64e6;
}

double available_memory_bytes() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  double kb = 0;
  std::string unit;
  while (f >> key >> kb >> unit) {
    if (key == "MemAvailable:") return kb * 1024.0;
  }
  return 4e9;
}

int argmax(const std::vector<float>& v) {
  int best = 0;
  for (int i = 1; i < static_cast<int>(v.size()); ++i)
    if (v[static_cast<size_t>(i)] > v[static_cast<size_t>(best)]) best = i;
  return best;
}

}  // namespace

Expected<std::vector<ojson>> read_predictions(const std::string& dir) {
  const std::string path = dir + "/predictions.jsonl";
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::vector<ojson>{};
  auto text = read_text_file(path, "predictions.jsonl");
  if (!text) return text.status();
  std::vector<ojson> rows;
  size_t start = 0;
  int lineno = 0;
  while (start < text->size()) {
    size_t end = text->find('\n', start);
    if (end == std::string::npos) end = text->size();
    ++lineno;
    const std::string line = text->substr(start, end - start);
    start = end + 1;
    if (line.empty()) continue;
    ojson r = ojson::parse(line, nullptr, false);
    if (r.is_discarded() || !r.is_object() || !r.contains("task") || !r.contains("method")) {
      return Status::error(
          strfmt("%s:%d: not a prediction row (the file is written atomically, "
                 "so it was edited; fix or remove the line)",
                 path.c_str(), lineno));
    }
    rows.push_back(std::move(r));
  }
  return rows;
}

Status write_reports(const std::string& dir, const ojson& meta, std::vector<ojson> rows) {
  sort_rows(rows);
  // method -> task -> (sum, n); order of first appearance.
  std::vector<std::string> methods, tasks;
  std::map<std::string, std::map<std::string, std::pair<double, int>>> acc;
  std::map<std::string, std::pair<double, int>> kv_share, prefill;
  for (const ojson& r : rows) {
    const std::string m = r.value("method", ""), t = r.value("task", "");
    if (std::find(methods.begin(), methods.end(), m) == methods.end()) methods.push_back(m);
    if (std::find(tasks.begin(), tasks.end(), t) == tasks.end()) tasks.push_back(t);
    auto& a = acc[m][t];
    a.first += r.value("score", 0.0);
    a.second += 1;
    const double full = r.value("full_kv_bytes", 0.0);
    if (full > 0) {
      kv_share[m].first += r.value("kv_bytes", 0.0) / full;
      kv_share[m].second += 1;
    }
    prefill[m].first += r.value("prefill_s", 0.0);
    prefill[m].second += 1;
  }
  std::sort(methods.begin(), methods.end(), [&](const std::string& a, const std::string& b) {
    auto idx = [&](const std::string& m) {
      for (const ojson& r : rows)
        if (r.value("method", "") == m) return r.value("method_index", 0);
      return 0;
    };
    return idx(a) < idx(b);
  });
  auto round2 = [](double x) { return std::round(x * 100.0) / 100.0; };
  ojson scores = ojson::object();
  for (const std::string& m : methods) {
    ojson per = ojson::object();
    for (const std::string& t : tasks) {
      auto it = acc[m].find(t);
      if (it != acc[m].end()) per[t] = round2(100.0 * it->second.first / it->second.second);
    }
    scores[m] = per;
  }
  FKV_RETURN_IF_ERROR(
      write_file_atomic(dir + "/scores.json", scores.dump(2) + "\n", "scores.json"));

  std::string md = "# fastkv eval: " + meta.value("family", std::string("?")) + "\n\n";
  md += "- model: `" + meta.value("model", std::string("?")) + "`\n";
  md += "- protocol: " + meta.value("protocol", std::string("?")) + "\n";
  md += strfmt("- rows: %zu (samples x methods)\n", rows.size());
  std::string sharing;
  for (const std::string& m : policy_names())
    if (shares_prompt_pass(m)) sharing += (sharing.empty() ? "" : ", ") + m;
  md +=
      "- score: the task's official metric x 100, mean over samples; KV share: kept KV bytes "
      "after the prompt / full-cache bytes, mean over samples; prefill s: rows that shared a "
      "prompt pass (" +
      sharing + ") all show that one pass (per-method speed: the bench tool)\n\n";
  md += "| task |";
  for (const std::string& m : methods) md += " `" + m + "` |";
  md += "\n|---|";
  for (size_t i = 0; i < methods.size(); ++i) md += "---:|";
  md += "\n";
  for (const std::string& t : tasks) {
    md += "| " + t + " |";
    for (const std::string& m : methods) {
      auto it = acc[m].find(t);
      md += it == acc[m].end() ? " - |"
                               : strfmt(" %.2f |", 100.0 * it->second.first / it->second.second);
    }
    md += "\n";
  }
  md += "| **average** |";
  for (const std::string& m : methods) {
    double sum = 0;
    int n = 0;
    for (const auto& [t, a] : acc[m]) {
      sum += 100.0 * a.first / a.second;
      ++n;
    }
    md += n ? strfmt(" **%.2f** |", sum / n) : " - |";
  }
  md += "\n| KV share |";
  for (const std::string& m : methods) {
    const auto& k = kv_share[m];
    md += k.second ? strfmt(" %.1f%% |", 100.0 * k.first / k.second) : " - |";
  }
  md += "\n| prefill s (mean) |";
  for (const std::string& m : methods) {
    const auto& p = prefill[m];
    md += p.second ? strfmt(" %.3f |", p.first / p.second) : " - |";
  }
  md += "\n";
  return write_file_atomic(dir + "/summary.md", md, "summary.md");
}

Expected<RunSummary> run_eval(const Model& model, const Tokenizer& tok,
                              const std::vector<EvalSample>& samples, const RunConfig& cfg) {
  const std::string dir = cfg.out_dir;
  FKV_RETURN_IF_ERROR(check_output_path(dir + "/predictions.jsonl", "--out predictions.jsonl"));
  const std::string protocol = protocol_name(cfg.protocol);
  const ModelConfig& mc = model.config();

  // run.json: a folder holds one run (family, protocol, model); resume only into the same.
  ojson meta = cfg.meta;
  meta["family"] = family_name(cfg.family);
  meta["protocol"] = protocol;
  meta["shard"] = strfmt("%d/%d", cfg.shard_index, cfg.shard_count);
  ojson mlist = ojson::array();
  for (const MethodRun& m : cfg.methods) mlist.push_back(m.spec);
  meta["methods"] = mlist;
  meta["n_samples"] = samples.size();
  const std::string meta_path = dir + "/run.json";
  std::error_code ec;
  if (std::filesystem::exists(meta_path, ec)) {
    auto old_text = read_text_file(meta_path, "run.json");
    if (!old_text) return old_text.status();
    ojson old = ojson::parse(*old_text, nullptr, false);
    if (old.is_discarded()) return Status::error(meta_path + ": not JSON");
    for (const char* k : {"family", "protocol", "model", "shard", "data"}) {
      if (old.value(k, ojson()) != meta.value(k, ojson())) {
        return Status::error(
            strfmt("--out %s holds another run (%s: %s here, %s requested); use "
                   "another --out folder",
                   dir.c_str(), k, old.value(k, ojson()).dump().c_str(),
                   meta.value(k, ojson()).dump().c_str()));
      }
    }
  }
  FKV_RETURN_IF_ERROR(write_file_atomic(meta_path, meta.dump(2) + "\n", "run.json"));

  auto existing = read_predictions(dir);
  if (!existing) return existing.status();
  std::vector<ojson> rows = std::move(existing.value());
  std::set<std::string> done;
  for (const ojson& r : rows) done.insert(row_key(r));

  // Rows of this shard (samples are dealt round-robin), minus finished rows, as jobs: the
  // methods of one sample that can share a prompt pass form one job, every other method its own.
  struct Job {
    int sample;
    std::vector<int> methods;
  };
  std::vector<Job> jobs;
  RunSummary summary;
  for (int s = 0; s < static_cast<int>(samples.size()); ++s) {
    if (s % cfg.shard_count != cfg.shard_index) continue;
    const EvalSample& smp = samples[static_cast<size_t>(s)];
    Job shared{s, {}};
    for (int m = 0; m < static_cast<int>(cfg.methods.size()); ++m) {
      ++summary.rows_total;
      const MethodRun& mr = cfg.methods[static_cast<size_t>(m)];
      if (done.count(row_key(smp.task, smp.id, mr.spec, protocol))) {
        ++summary.rows_skipped;
        continue;
      }
      if (cfg.share_prefill && shares_prefill(mr.opts.method)) {
        shared.methods.push_back(m);
      } else {
        jobs.push_back({s, {m}});
      }
    }
    if (!shared.methods.empty()) jobs.push_back(std::move(shared));
  }
  size_t n_rows = 0, max_group = 1;
  for (const Job& j : jobs) {
    n_rows += j.methods.size();
    max_group = std::max(max_group, j.methods.size());
  }
  for (const MethodRun& m : cfg.methods) {  // every method builds for this model, before work
    auto p = make_policy(m.opts, model.policy_info());
    if (!p) return Status::error("method '" + m.spec + "': " + p.error());
  }
  // Prompts of the samples that still have jobs.
  std::map<int, PromptTokens> prompts;
  int max_tokens = 0;
  for (const Job& j : jobs) {
    if (prompts.count(j.sample)) continue;
    auto p = build_prompt(tok, samples[static_cast<size_t>(j.sample)], cfg.prompt);
    if (!p) return p.status();
    max_tokens = std::max(max_tokens, static_cast<int>(p->ids.size()));
    prompts[j.sample] = std::move(p.value());
  }

  const int cores = std::max(1u, std::thread::hardware_concurrency());
  const int total_threads = cfg.threads > 0 ? cfg.threads : cores;
  int workers = cfg.parallel;
  if (workers <= 0) {
    // A shared job holds one cache per method (at most a full one each).
    const double full_cache =
        2.0 * mc.n_layers * mc.n_kv_heads * mc.head_dim * 4.0 * (max_tokens + 512);
    const double per = session_bytes_estimate(mc, std::max(1, max_tokens + 512)) +
                       static_cast<double>(max_group - 1) * full_cache;
    const int by_mem = std::max(1, static_cast<int>(available_memory_bytes() * 0.6 / per));
    workers = std::min(total_threads, by_mem);
  }
  workers = std::max(1, std::min<int>(workers, static_cast<int>(jobs.size())));
  const int kernel_threads = std::max(1, total_threads / workers);
  set_num_threads(kernel_threads);

  const std::vector<int32_t> stop_ids = stop_ids_for(tok, mc);
  const std::vector<int32_t> newline_ids = tok.encode("\n", false);
  // fullkv's bytes per prompt token in the sessions' cache dtype (the KV share's denominator).
  const double full_bytes_per_token =
      2.0 * mc.n_layers * mc.n_kv_heads *
      static_cast<double>(dtype_row_bytes(SessionOptions().kv_dtype, mc.head_dim));

  std::mutex mu;
  std::atomic<size_t> next{0};
  std::atomic<bool> stop{false};
  Status first_error = Status::ok();
  int finished = 0;
  auto t_start = std::chrono::steady_clock::now();
  const bool tty = ::isatty(2) != 0;
  auto flush = [&]() -> Status {  // callers hold mu
    sort_rows(rows);
    return write_file_atomic(dir + "/predictions.jsonl", rows_text(rows), "predictions.jsonl");
  };
  auto progress = [&](const ojson& row) {  // callers hold mu
    const double el =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    const double eta = finished > 0 ? el / finished * static_cast<double>(n_rows - finished) : -1;
    const int width = 24;
    const int fill =
        static_cast<int>(width * static_cast<double>(finished) / std::max<size_t>(1, n_rows));
    std::string bar(static_cast<size_t>(fill), '#');
    bar.resize(static_cast<size_t>(width), '.');
    std::fprintf(stderr, "%s[eval] [%s] %d/%zu rows  elapsed %s  ETA %s  | %s %s: %.2f%s",
                 tty ? "\r\033[K" : "", bar.c_str(), finished, n_rows, fmt_duration(el).c_str(),
                 fmt_duration(eta).c_str(), row.value("task", "").c_str(),
                 row.value("method", "").c_str(), row.value("score", 0.0), tty ? "" : "\n");
    std::fflush(stderr);
  };
  if (summary.rows_skipped > 0) {
    std::fprintf(stderr, "[eval] resuming: %d of %d rows already in %s/predictions.jsonl\n",
                 summary.rows_skipped, summary.rows_total, dir.c_str());
  }
  std::fprintf(stderr, "[eval] %zu rows to run: %d sessions at once x %d kernel threads\n", n_rows,
               workers, kernel_threads);

  using Clock = std::chrono::steady_clock;
  auto seconds = [](Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
  };
  auto worker = [&]() {
    set_num_threads(kernel_threads);  // this thread's pool
    while (!stop.load()) {
      const size_t ji = next.fetch_add(1);
      if (ji >= jobs.size()) return;
      const Job& job = jobs[ji];
      const EvalSample& s = samples[static_cast<size_t>(job.sample)];
      const PromptTokens& p = prompts.at(job.sample);
      std::string where = s.task + "/" + s.id + " [";
      for (size_t i = 0; i < job.methods.size(); ++i) {
        if (i) where += ';';
        where += cfg.methods[static_cast<size_t>(job.methods[i])].spec;
      }
      where += "]: ";
      auto fail = [&](const std::string& msg) {
        std::lock_guard<std::mutex> lock(mu);
        // A row stopped by the interrupt (or by another row's error) is dropped, not an error.
        const bool dropped = (cfg.interrupt != nullptr && cfg.interrupt->load()) || stop.load();
        if (first_error.is_ok() && !dropped) first_error = Status::error(where + msg);
        stop.store(true);
      };
      // One session per method of the job, over the shared model.
      std::vector<std::unique_ptr<KvPolicy>> policies;
      std::vector<std::unique_ptr<Session>> sessions;
      SessionOptions so;
      so.max_new_tokens = s.max_new_tokens;
      if (cfg.interrupt != nullptr) {
        so.interrupted = [&] { return cfg.interrupt->load() || stop.load(); };
      }
      auto interrupted = [&] { return cfg.interrupt != nullptr && cfg.interrupt->load(); };
      for (int mi : job.methods) {
        auto policy = make_policy(cfg.methods[static_cast<size_t>(mi)].opts, model.policy_info());
        if (!policy) return fail(policy.error());
        policies.push_back(std::move(policy.value()));
        sessions.push_back(std::make_unique<Session>(model, *policies.back(), so));
      }
      const std::span<const int32_t> ids(p.ids);
      const std::span<const int32_t> prefix =
          cfg.protocol == Protocol::kJoint ? ids
                                           : ids.subspan(0, static_cast<size_t>(p.context_len));
      std::vector<float> first_logits;
      const auto t0 = Clock::now();
      if (sessions.size() == 1) {
        if (auto st = sessions[0]->prefill(prefix, first_logits); !st) return fail(st.message());
      } else {
        std::vector<Session*> ptrs;
        for (auto& ss : sessions) ptrs.push_back(ss.get());
        if (auto st = Session::prefill_shared(ptrs, prefix, first_logits); !st)
          return fail(st.message());
      }
      const double prefill_s = seconds(t0, Clock::now());
      for (size_t bi = 0; bi < sessions.size() && !stop.load(); ++bi) {
        Session& session = *sessions[bi];
        const int method_index = job.methods[bi];
        const MethodRun& m = cfg.methods[static_cast<size_t>(method_index)];
        std::vector<float> logits = first_logits;
        const auto t1 = Clock::now();
        if (cfg.protocol == Protocol::kContextFirst) {
          if (auto st = session.extend(ids.subspan(static_cast<size_t>(p.context_len)), logits);
              !st)
            return fail(st.message());
        }
        const auto t2 = Clock::now();
        const size_t kv_bytes = session.kv_bytes();
        std::vector<int32_t> out;
        for (int step = 0; step < s.max_new_tokens; ++step) {
          if (interrupted() || stop.load()) return fail("interrupted");
          const int32_t next_tok = argmax(logits);
          bool is_stop = std::find(stop_ids.begin(), stop_ids.end(), next_tok) != stop_ids.end();
          if (s.stop_on_newline && !newline_ids.empty() && next_tok == newline_ids.back())
            is_stop = true;
          if (is_stop) break;
          out.push_back(next_tok);
          if (step + 1 == s.max_new_tokens) break;
          if (auto st = session.decode(next_tok, logits); !st) return fail(st.message());
        }
        const auto t3 = Clock::now();
        const std::string prediction = tok.decode(out, /*skip_special_tokens=*/true);
        auto score = score_sample(s.metric, prediction, s.answers, s.all_classes, s.first_line_only,
                                  cfg.jieba);
        if (!score) return fail(score.error());
        ojson row;
        row["task"] = s.task;
        row["id"] = s.id;
        row["method"] = m.spec;
        row["protocol"] = protocol;
        row["prediction"] = prediction;
        row["answers"] = s.answers;
        row["all_classes"] = s.all_classes.empty() ? ojson(nullptr) : ojson(s.all_classes);
        row["score"] = *score;
        row["metric"] = metric_name(s.metric);
        row["prompt_tokens"] = p.ids.size();
        row["context_tokens"] = p.context_len;
        row["truncated"] = p.truncated;
        row["new_tokens"] = out.size();
        // A shared prompt pass is timed once for all its methods.
        row["prefill_s"] = prefill_s + seconds(t1, t2);
        row["shared_prefill"] = sessions.size() > 1;
        row["decode_s"] = seconds(t2, t3);
        row["kv_bytes"] = kv_bytes;
        row["full_kv_bytes"] =
            static_cast<size_t>(full_bytes_per_token * static_cast<double>(p.ids.size()));
        if (s.length > 0) row["length"] = s.length;
        if (s.depth >= 0) row["depth"] = s.depth;
        row["sample_index"] = job.sample;
        row["method_index"] = method_index;
        std::lock_guard<std::mutex> lock(mu);
        rows.push_back(row);
        // Every finished row is on disk before the next one starts: an atomic rewrite of the
        // whole file (written, flushed, renamed over the old one), so a kill at any point leaves
        // either the old or the new file, each valid JSONL.
        if (auto st = flush(); !st) {
          if (first_error.is_ok()) first_error = st;
          stop.store(true);
          return;
        }
        ++finished;
        progress(row);
      }
    }
  };
  std::vector<std::thread> pool;
  for (int w = 0; w < workers; ++w) pool.emplace_back(worker);
  for (auto& t : pool) t.join();
  if (tty && n_rows > 0) std::fputc('\n', stderr);
  {
    std::lock_guard<std::mutex> lock(mu);
    if (!jobs.empty()) FKV_RETURN_IF_ERROR(flush());
  }
  if (!first_error) return first_error;
  if (cfg.interrupt != nullptr && cfg.interrupt->load()) {
    return Status::error(strfmt("%s%d rows", kInterruptedPrefix, finished));
  }
  summary.rows_run = finished;
  // Reports cover every row of the folder (earlier runs into it may have added methods).
  FKV_RETURN_IF_ERROR(write_reports(dir, meta, rows));
  return summary;
}

Status merge_runs(const std::vector<std::string>& dirs, const std::string& out_dir) {
  if (dirs.empty()) return Status::error("eval merge: give the shard folders to join");
  FKV_RETURN_IF_ERROR(check_output_path(out_dir + "/predictions.jsonl", "--out predictions.jsonl"));
  ojson first_meta;
  std::set<int> shard_ids;
  int shard_count = -1;
  std::vector<ojson> rows;
  std::map<std::string, std::string> key_dir;
  for (const std::string& d : dirs) {
    auto text = read_text_file(d + "/run.json", "run.json of " + d);
    if (!text) return text.status();
    ojson meta = ojson::parse(*text, nullptr, false);
    if (meta.is_discarded() || !meta.is_object()) return Status::error(d + "/run.json: not JSON");
    if (first_meta.is_null()) {
      first_meta = meta;
    } else {
      for (const char* k : {"family", "protocol", "model", "methods", "data", "n_samples"}) {
        if (meta.value(k, ojson()) != first_meta.value(k, ojson())) {
          return Status::error(
              strfmt("eval merge: %s and %s are not shards of one run (%s differs)",
                     dirs[0].c_str(), d.c_str(), k));
        }
      }
    }
    int si = 0, sn = 0;
    const std::string shard = meta.value("shard", std::string("0/1"));
    if (std::sscanf(shard.c_str(), "%d/%d", &si, &sn) != 2 || sn < 1) {
      return Status::error(d + "/run.json: bad shard '" + shard + "'");
    }
    if (shard_count >= 0 && sn != shard_count) {
      return Status::error(strfmt("eval merge: %s is shard %s, others are of %d", d.c_str(),
                                  shard.c_str(), shard_count));
    }
    shard_count = sn;
    if (!shard_ids.insert(si).second) {
      return Status::error(strfmt("eval merge: shard %d/%d given twice", si, sn));
    }
    auto r = read_predictions(d);
    if (!r) return r.status();
    for (ojson& row : *r) {
      const std::string k = row_key(row);
      if (key_dir.count(k)) {
        return Status::error("eval merge: row " + row.value("task", "") + "/" +
                             row.value("id", "") + " [" + row.value("method", "") +
                             "] is in both " + key_dir[k] + " and " + d);
      }
      key_dir[k] = d;
      rows.push_back(std::move(row));
    }
  }
  std::string missing;
  for (int i = 0; i < shard_count; ++i)
    if (!shard_ids.count(i))
      missing += (missing.empty() ? "" : ", ") + strfmt("%d/%d", i, shard_count);
  if (!missing.empty()) return Status::error("eval merge: missing shard(s) " + missing);
  ojson meta = first_meta;
  meta["shard"] = "0/1";
  meta["merged_from"] = dirs;
  sort_rows(rows);
  FKV_RETURN_IF_ERROR(write_file_atomic(out_dir + "/run.json", meta.dump(2) + "\n", "run.json"));
  FKV_RETURN_IF_ERROR(
      write_file_atomic(out_dir + "/predictions.jsonl", rows_text(rows), "predictions.jsonl"));
  return write_reports(out_dir, meta, rows);
}

}  // namespace fkv::eval
