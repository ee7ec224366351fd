// fastkv-fidelity: how far each KV method's next-token distributions drift from full KV.
//
// For each prompt length: full KV generates `--gen` tokens greedily; every method then prefills the
// same prompt and is teacher-forced along that continuation. Per step we compare the method's
// next-token distribution with full KV's: top-1 agreement and KL(full || method). We also report
// KV bytes after prefill and prefill time, all measured in the same run.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "chat/chat_template.h"
#include "core/file_io.h"
#include "core/mmap_file.h"
#include "core/parse_number.h"
#include "engine/app.h"
#include "engine/engine.h"
#include "kernels/matmul.h"
#include "kv/policy.h"
#include "sampler/sampler.h"

namespace {
namespace fs = std::filesystem;
using fkv::Status;
using fkv::strfmt;

struct Options {
  std::string model;
  std::vector<int> lengths = {1024};
  std::vector<double> rates = {0.1, 0.2, 0.5};
  std::vector<std::string> methods = {"fastkv",       "snapkv", "pyramidkv", "adakv",
                                      "streamingllm", "h2o",    "gemfilter", "pyramidinfer"};
  int gen = 64;
  std::string source = "essays";  // "essays" (chat prompt over the needle haystack) | "self"
  std::string essays_dir;
  std::string out;  // markdown section, appended
  int threads = 0;
};

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep)) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

int fail(const std::string& msg) {
  std::fprintf(stderr, "fastkv-fidelity: error: %s\n", msg.c_str());
  return 1;
}

// log-softmax of logits, in double for a stable KL.
std::vector<double> log_softmax(const std::vector<float>& logits) {
  double mx = -INFINITY;
  for (float v : logits) mx = std::max(mx, static_cast<double>(v));
  double sum = 0;
  for (float v : logits) sum += std::exp(v - mx);
  const double lse = mx + std::log(sum);
  std::vector<double> out(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) out[i] = logits[i] - lse;
  return out;
}

double kl(const std::vector<double>& logp, const std::vector<double>& logq) {
  double s = 0;
  for (size_t i = 0; i < logp.size(); ++i) {
    const double p = std::exp(logp[i]);
    if (p > 0) s += p * (logp[i] - logq[i]);
  }
  return std::max(0.0, s);
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

fkv::Expected<std::string> haystack(const std::string& dir) {
  std::vector<fs::path> files;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.path().extension() == ".txt") files.push_back(e.path());
  }
  if (files.empty()) return Status::error(strfmt("no .txt essays in '%s'", dir.c_str()));
  std::sort(files.begin(), files.end());
  std::string text;
  for (const auto& f : files) {
    auto t = fkv::read_text_file(f.string());
    if (!t) return t.status();
    text += *t + "\n\n";
  }
  return text;
}

// A prompt of exactly n tokens: the model's chat template around an essay excerpt and a question
// (essays), or the model's own sampled text from BOS (self).
fkv::Expected<std::vector<int32_t>> build_prompt(const Options& o, const fkv::Model& model,
                                                 const fkv::Tokenizer& tok, int n) {
  if (o.source == "self") {
    fkv::PolicyOptions po;
    auto policy = fkv::make_policy(po, model.policy_info());
    if (!policy) return policy.status();
    fkv::SessionOptions so;
    so.max_new_tokens = n;
    fkv::Session s(model, **policy, so);
    fkv::GenerationRequest req;
    req.prompt = {tok.bos_id() >= 0 ? tok.bos_id() : 0};
    req.max_new_tokens = n - 1;
    req.sampler.temperature = 1.0f;
    req.sampler.seed = 7;
    auto r = fkv::generate(s, req, nullptr);
    if (!r) return r.status();
    std::vector<int32_t> ids = req.prompt;
    ids.insert(ids.end(), r->tokens.begin(), r->tokens.end());
    if (static_cast<int>(ids.size()) != n) {
      return Status::error(
          strfmt("self-generated prompt has %zu tokens, wanted %d", ids.size(), n));
    }
    return ids;
  }
  auto hay = haystack(o.essays_dir);
  if (!hay) return hay.status();
  const std::string marker = "\x01CONTEXT\x01";
  std::string head = marker, tail;
  if (!tok.chat_template().empty()) {
    fkv::ChatRenderOptions ro;
    ro.bos_token = tok.bos_token();
    ro.eos_token = tok.eos_token();
    auto r = fkv::render_chat_template(
        tok.chat_template(),
        {{"user",
          marker + "\n\nQuestion: What is the main point of the essays above? Answer briefly."}},
        ro);
    if (!r) return r.status();
    head = *r;
  }
  const size_t at = head.find(marker);
  tail = head.substr(at + marker.size());
  head = head.substr(0, at);
  std::vector<int32_t> ids = tok.encode(head, /*add_special_tokens=*/tok.chat_template().empty());
  const std::vector<int32_t> tail_ids = tok.encode(tail, false);
  const std::vector<int32_t> body = tok.encode(*hay, false);
  const int need = n - static_cast<int>(ids.size() + tail_ids.size());
  if (need <= 0 || need > static_cast<int>(body.size())) {
    return Status::error(strfmt("cannot build a %d-token prompt from the haystack", n));
  }
  ids.insert(ids.end(), body.begin(), body.begin() + need);
  ids.insert(ids.end(), tail_ids.begin(), tail_ids.end());
  return ids;
}

struct Row {
  int length;
  std::string method;
  double rate;
  double top1;
  double mean_kl;
  size_t kv_bytes;
  double prefill_s;
};

}  // namespace

int main(int argc, char** argv) {
  if (fkv::Status st = fkv::check_engine_environment(); !st) {
    std::fprintf(stderr, "fastkv-fidelity: error: %s\n", st.message().c_str());
    return 2;
  }
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "fastkv-fidelity: error: %s needs a value\n", a.c_str());
        std::exit(1);
      }
      return argv[++i];
    };
    if (a == "--model")
      o.model = val();
    else if (a == "--lengths") {
      o.lengths.clear();
      for (auto& s : split(val(), ',')) {
        auto v = fkv::parse_int_in_range(s, "--lengths", 1, 1 << 24);
        if (!v) return fail(v.error());
        o.lengths.push_back(static_cast<int>(*v));
      }
    } else if (a == "--rates") {
      o.rates.clear();
      for (auto& s : split(val(), ',')) {
        auto v = fkv::parse_double_in_range(s, "--rates", 0.0, 1.0);
        if (!v) return fail(v.error());
        o.rates.push_back(*v);
      }
    } else if (a == "--methods")
      o.methods = split(val(), ',');
    else if (a == "--gen") {
      auto v = fkv::parse_int_in_range(val(), "--gen", 1, 1 << 20);
      if (!v) return fail(v.error());
      o.gen = static_cast<int>(*v);
    } else if (a == "--source")
      o.source = val();
    else if (a == "--essays")
      o.essays_dir = val();
    else if (a == "--out")
      o.out = val();
    else if (a == "--threads") {
      auto v = fkv::parse_int_in_range(val(), "--threads", 1, 1024);
      if (!v) return fail(v.error());
      o.threads = static_cast<int>(*v);
    } else if (a == "--help" || a == "-h") {
      std::printf(
          "usage: fastkv-fidelity --model PATH --out FILE.md [--lengths 1024,4096] [--rates "
          "0.1,0.2,0.5]\n         [--methods fastkv,snapkv,...] [--gen 64] [--source essays|self] "
          "[--essays DIR] [--threads N]\n");
      return 0;
    } else {
      return fail("unknown option '" + a + "'");
    }
  }
  if (o.model.empty() || o.out.empty()) return fail("--model and --out are required");
  if (o.source != "essays" && o.source != "self") return fail("--source must be essays or self");
  if (o.source == "essays" && o.essays_dir.empty()) return fail("--essays DIR is required");
  if (o.gen < 1) return fail("--gen must be >= 1");
  // The report is appended (one section per model), atomically: checked before the runs.
  if (auto st = fkv::check_output_path(o.out, "--out"); !st) return fail(st.message());
  if (o.threads > 0) fkv::set_num_threads(o.threads);

  auto path = fkv::resolve_model_path(o.model);
  if (!path) return fail(path.error());
  auto model = fkv::Model::load(*path);
  if (!model) return fail(model.error());
  auto tok = fkv::load_tokenizer_for(**model);
  if (!tok) return fail(tok.error());
  const fkv::PolicyModelInfo info = (*model)->policy_info();

  std::vector<Row> rows;
  for (int n : o.lengths) {
    auto prompt = build_prompt(o, **model, *tok, n);
    if (!prompt) return fail(prompt.error());
    // Full KV: the reference continuation and distributions.
    fkv::PolicyOptions full_opts;
    auto full = fkv::make_policy(full_opts, info);
    if (!full) return fail(full.error());
    fkv::SessionOptions so;
    so.max_new_tokens = o.gen;
    std::vector<std::vector<double>> ref_logp;
    std::vector<int32_t> ref_tokens;
    double full_prefill_s = 0;
    size_t full_kv = 0;
    {
      fkv::Session s(**model, **full, so);
      std::vector<float> logits;
      if (auto st = s.prefill(*prompt, logits); !st) return fail(st.message());
      full_prefill_s = s.timing().prefill_s;
      full_kv = s.timing().kv_bytes_after_prefill;
      for (int t = 0; t < o.gen; ++t) {
        ref_logp.push_back(log_softmax(logits));
        ref_tokens.push_back(fkv::argmax_token(logits));
        if (t + 1 < o.gen) {
          if (auto st = s.decode(ref_tokens.back(), logits); !st) return fail(st.message());
        }
      }
    }
    rows.push_back({n, "fullkv", 1.0, 1.0, 0.0, full_kv, full_prefill_s});
    std::fprintf(stderr, "[fidelity] n=%d fullkv prefill %.2fs kv %zu\n", n, full_prefill_s,
                 full_kv);
    for (const std::string& method : o.methods) {
      for (double rate : o.rates) {
        fkv::PolicyOptions po;
        po.method = method;
        po.retain_rate = rate;
        auto policy = fkv::make_policy(po, info);
        if (!policy) return fail(method + ": " + policy.error());
        fkv::Session s(**model, **policy, so);
        std::vector<float> logits;
        const double t0 = now_s();
        if (auto st = s.prefill(*prompt, logits); !st) return fail(st.message());
        (void)t0;
        int agree = 0;
        double kl_sum = 0;
        for (int t = 0; t < o.gen; ++t) {
          agree += fkv::argmax_token(logits) == ref_tokens[t] ? 1 : 0;
          kl_sum += kl(ref_logp[t], log_softmax(logits));
          if (t + 1 < o.gen) {
            if (auto st = s.decode(ref_tokens[t], logits); !st) return fail(st.message());
          }
        }
        rows.push_back({n, method, rate, static_cast<double>(agree) / o.gen, kl_sum / o.gen,
                        s.timing().kv_bytes_after_prefill, s.timing().prefill_s});
        std::fprintf(stderr, "[fidelity] n=%d %s r=%.2f top1 %.3f kl %.4f kv %zu prefill %.2fs\n",
                     n, method.c_str(), rate, rows.back().top1, rows.back().mean_kl,
                     rows.back().kv_bytes, rows.back().prefill_s);
      }
    }
  }

  std::ostringstream out;
  if (fs::exists(o.out)) {
    auto previous = fkv::read_text_file(o.out, "--out");
    if (!previous) return fail(previous.error());
    out << *previous;
  }
  out << "## " << fs::path(*path).filename().string() << "\n\n";
  out << "Prompts: "
      << (o.source == "self" ? "the model's own text, sampled from BOS (seed 7)"
                             : "chat template around Paul Graham essays + a question")
      << "; " << o.gen << " greedy full-KV tokens, teacher-forced for every method; threads "
      << fkv::num_threads() << ".\n\n";
  out << "| prompt tokens | method | retain rate | top-1 agreement | mean KL (nats) | KV bytes "
         "after prefill | KV vs full | prefill s | prefill speedup |\n";
  out << "|---:|---|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const Row& r : rows) {
    double full_s = 0;
    size_t full_b = 0;
    for (const Row& f : rows) {
      if (f.length == r.length && f.method == "fullkv") {
        full_s = f.prefill_s;
        full_b = f.kv_bytes;
      }
    }
    char line[512];
    std::snprintf(line, sizeof line,
                  "| %d | %s | %s | %.3f | %.4f | %zu | %.1f%% | %.3f | %.2fx |\n", r.length,
                  r.method.c_str(), r.method == "fullkv" ? "-" : strfmt("%.2f", r.rate).c_str(),
                  r.top1, r.mean_kl, r.kv_bytes, 100.0 * r.kv_bytes / std::max<size_t>(1, full_b),
                  r.prefill_s, r.prefill_s > 0 ? full_s / r.prefill_s : 0.0);
    out << line;
  }
  out << "\n";
  if (auto st = fkv::write_file_atomic(o.out, out.str(), "--out"); !st) return fail(st.message());
  return 0;
}
