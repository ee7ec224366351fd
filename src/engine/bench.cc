#include "engine/bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>

#include "core/memory_usage.h"
#include "engine/batch.h"
#include "kernels/matmul.h"
#include "kv/method_spec.h"
#include "quant/repack.h"

namespace fkv {
namespace {

using json = nlohmann::ordered_json;

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::vector<int32_t> random_tokens(int n, int n_vocab, uint64_t seed) {
  std::vector<int32_t> out(n);
  uint64_t s = seed * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull;
  for (int i = 0; i < n; ++i) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    out[i] = static_cast<int32_t>((s >> 11) % static_cast<uint64_t>(n_vocab));
  }
  return out;
}

// Derived per-sample figures, in one place for every writer.
struct RowStats {
  BenchStat prefill_s, prefill_tps, decode_ms, decode_tps, e2e_s, kv_bytes, kv_after_prefill,
      peak_rss;
};
RowStats row_stats(const BenchRow& r) {
  std::vector<double> pre, pre_tps, dec_ms, dec_tps, e2e, kv, kvp, rss;
  const BenchCase& c = r.bench_case;
  for (const BenchSample& s : r.samples) {
    pre.push_back(s.prefill_s);
    // A batch's tok/s counts every sequence's tokens; its decode ms are per step (one token for
    // each sequence).
    pre_tps.push_back(s.prefill_s > 0 ? double(c.batch) * c.prompt_tokens / s.prefill_s : 0.0);
    dec_ms.push_back(c.gen_tokens > 0 ? 1000.0 * s.decode_s / c.gen_tokens : 0.0);
    dec_tps.push_back(s.decode_s > 0 ? double(c.batch) * c.gen_tokens / s.decode_s : 0.0);
    e2e.push_back(s.prefill_s + s.decode_s);
    kv.push_back(static_cast<double>(s.kv_bytes));
    kvp.push_back(static_cast<double>(s.kv_bytes_after_prefill));
    rss.push_back(static_cast<double>(s.peak_rss_bytes));
  }
  return {bench_stat(pre), bench_stat(pre_tps), bench_stat(dec_ms), bench_stat(dec_tps),
          bench_stat(e2e), bench_stat(kv),      bench_stat(kvp),    bench_stat(rss)};
}

json method_options_json(const PolicyOptions& o) {
  json j = json::object();
  if (o.tsp_layer) j["tsp_layer"] = *o.tsp_layer;
  if (o.tsp_rate) j["tsp_rate"] = *o.tsp_rate;
  if (o.tsp_len) j["tsp_len"] = *o.tsp_len;
  if (o.retain_rate) j["retain_rate"] = *o.retain_rate;
  if (o.kv_budget) j["kv_budget"] = *o.kv_budget;
  if (o.window) j["window"] = *o.window;
  if (o.kernel) j["kernel"] = *o.kernel;
  if (o.pooling) j["pooling"] = *o.pooling;
  if (o.mode) j["mode"] = *o.mode;
  if (o.filter_layer) j["filter_layer"] = *o.filter_layer;
  if (o.per_query_head) j["per_query_head"] = true;
  return j;
}

const char* fill_of(const BenchCase& c) { return c.depth > 0 ? bench_fill_name(c.fill) : "none"; }

}  // namespace

const char* bench_fill_name(BenchFill f) { return f == BenchFill::kRandom ? "random" : "prefill"; }

Expected<DType> parse_kv_dtype(const std::string& name) {
  if (name == "f32") return DType::kF32;
  if (name == "f16") return DType::kF16;
  if (name == "bf16") return DType::kBF16;
  return Status::error(strfmt("KV dtype '%s' is not one of f16, bf16, f32", name.c_str()));
}

BenchStat bench_stat(const std::vector<double>& v) {
  BenchStat s;
  if (v.empty()) return s;
  double sum = 0;
  for (double x : v) sum += x;
  s.mean = sum / static_cast<double>(v.size());
  double ss = 0;
  for (double x : v) ss += (x - s.mean) * (x - s.mean);
  s.std = v.size() > 1 ? std::sqrt(ss / static_cast<double>(v.size() - 1)) : 0.0;
  s.min = *std::min_element(v.begin(), v.end());
  s.max = *std::max_element(v.begin(), v.end());
  return s;
}

Status validate_bench_case(const BenchCase& c, const ModelConfig& cfg) {
  if (c.prompt_tokens < 0 || c.gen_tokens < 0 || c.depth < 0) {
    return Status::error("bench: lengths must not be negative");
  }
  if (c.prompt_tokens > 0 && c.depth > 0) {
    return Status::error(
        strfmt("bench: a row has -p %d and -d %d; -d rows are decode-only (give -p 0 with -d)",
               c.prompt_tokens, c.depth));
  }
  if (c.prompt_tokens == 0 && c.depth == 0) {
    return Status::error("bench: a row has -p 0 and -d 0: nothing to run (give -p N or -d N)");
  }
  if (c.depth > 0 && c.gen_tokens == 0) {
    return Status::error(strfmt("bench: a decode-only row (-d %d) needs -n > 0", c.depth));
  }
  const long long need = static_cast<long long>(c.prompt_tokens) + c.depth + c.gen_tokens;
  if (need > cfg.n_ctx) {
    return Status::error(
        strfmt("bench: -p %d -d %d -n %d needs %lld positions, the model's context is %d",
               c.prompt_tokens, c.depth, c.gen_tokens, need, cfg.n_ctx));
  }
  if (c.threads < 1) return Status::error("bench: threads must be at least 1");
  if (c.ubatch < 1) return Status::error("bench: ubatch must be at least 1");
  if (c.batch < 1 || c.batch > kMaxBenchBatch) {
    return Status::error(strfmt("bench: batch %d is outside [1, %d]", c.batch, kMaxBenchBatch));
  }
  return Status::ok();
}

Expected<BenchSample> run_bench_once(const Model& model, const BenchCase& c, uint64_t seed) {
  const ModelConfig& cfg = model.config();
  FKV_RETURN_IF_ERROR(validate_bench_case(c, cfg));
  set_num_threads(c.threads);
  const bool peak_is_per_run = reset_peak_rss();
  BenchSample out;
  SessionOptions so;
  so.max_new_tokens = std::max(c.gen_tokens, 1);
  so.ubatch = c.ubatch;
  so.kv_dtype = c.kv_dtype;
  // One policy per sequence: a policy holds per-prompt state.
  std::vector<std::unique_ptr<KvPolicy>> policies;
  std::vector<std::unique_ptr<Session>> sessions;
  std::vector<std::vector<float>> logits(c.batch);
  for (int b = 0; b < c.batch; ++b) {
    auto policy = make_policy(c.method, model.policy_info());
    if (!policy) return policy.status();
    policies.push_back(std::move(*policy));
    sessions.push_back(std::make_unique<Session>(model, *policies.back(), so));
    Session& session = *sessions.back();
    const uint64_t seq_seed = seed + static_cast<uint64_t>(b);
    if (c.depth > 0) {
      const double t0 = now_s();
      if (c.fill == BenchFill::kRandom) {
        FKV_RETURN_IF_ERROR(session.fill_random(c.depth, seq_seed));
      } else {
        FKV_RETURN_IF_ERROR(
            session.prefill(random_tokens(c.depth, cfg.n_vocab, seq_seed), logits[b]));
      }
      out.fill_s += now_s() - t0;
    } else {
      const std::vector<int32_t> tokens = random_tokens(c.prompt_tokens, cfg.n_vocab, seq_seed);
      FKV_RETURN_IF_ERROR(session.prefill(tokens, logits[b]));
      out.prefill_s += session.timing().prefill_s;
    }
    out.kv_bytes_after_prefill += session.kv_bytes();
  }
  const Session& first = *sessions.front();
  for (const auto& layer : first.selection().layers) out.rows_per_layer.push_back(layer.n_in);
  if (first.selection().tsp) out.tsp_layer = first.selection().tsp->layer;
  // [batch][gen_tokens] decoded ids; sequence 0's are those of a one-sequence row.
  std::vector<std::vector<int32_t>> gen(c.batch);
  for (int b = 0; b < c.batch; ++b) {
    gen[b] = random_tokens(c.gen_tokens, cfg.n_vocab, seed + 1 + 7919ull * b);
  }
  const double t0 = now_s();
  if (c.batch == 1) {
    for (int32_t t : gen[0]) FKV_RETURN_IF_ERROR(sessions[0]->decode(t, logits[0]));
  } else {
    std::vector<BatchItem> items(c.batch);
    for (int step = 0; step < c.gen_tokens; ++step) {
      for (int b = 0; b < c.batch; ++b) items[b] = {sessions[b].get(), gen[b][step], &logits[b]};
      FKV_RETURN_IF_ERROR(decode_batch(items));
    }
  }
  out.decode_s = now_s() - t0;
  for (const auto& session : sessions) out.kv_bytes += session->kv_bytes();
  out.peak_rss_bytes = peak_is_per_run ? peak_rss_bytes() : 0;
  return out;
}

std::string bench_to_json(const std::vector<BenchRow>& rows, const BenchContext& ctx) {
  json out = json::array();
  for (const BenchRow& r : rows) {
    const BenchCase& c = r.bench_case;
    const RowStats st = row_stats(r);
    json j;
    j["model"] = ctx.model;
    j["model_dtype"] = ctx.model_dtype;
    j["synthetic"] = ctx.synthetic;
    j["isa"] = ctx.isa;
    j["pool_wait"] = ctx.pool_wait;
    j["method"] = c.method.method;
    j["method_spec"] = format_method_spec(c.method);
    j["method_options"] = method_options_json(c.method);
    j["prompt_tokens"] = c.prompt_tokens;
    j["gen_tokens"] = c.gen_tokens;
    j["depth"] = c.depth;
    j["fill"] = fill_of(c);
    j["threads"] = c.threads;
    j["kv_dtype"] = dtype_name(c.kv_dtype);
    j["ubatch"] = c.ubatch;
    j["batch"] = c.batch;
    j["reps"] = r.samples.size();
    j["warmup"] = ctx.warmup;
    auto put = [&](const char* name, const BenchStat& s) {
      j[name] = s.mean;
      j[std::string(name) + "_std"] = s.std;
    };
    put("prefill_s", st.prefill_s);
    put("prefill_tok_per_s", st.prefill_tps);
    put("decode_ms_per_token", st.decode_ms);
    put("decode_tok_per_s", st.decode_tps);
    put("e2e_s", st.e2e_s);
    put("kv_bytes", st.kv_bytes);
    put("kv_bytes_after_prefill", st.kv_after_prefill);
    put("peak_rss_bytes", st.peak_rss);
    json samples = json::array();
    for (const BenchSample& s : r.samples) {
      samples.push_back({{"prefill_s", s.prefill_s},
                         {"decode_s", s.decode_s},
                         {"fill_s", s.fill_s},
                         {"kv_bytes_after_prefill", s.kv_bytes_after_prefill},
                         {"kv_bytes", s.kv_bytes},
                         {"peak_rss_bytes", s.peak_rss_bytes}});
    }
    j["samples"] = std::move(samples);
    if (!r.samples.empty()) {
      j["rows_per_layer"] = r.samples.front().rows_per_layer;
      j["tsp_layer"] = r.samples.front().tsp_layer;
    }
    j["weight_bytes"] = ctx.weight_bytes;
    const ModelConfig& mc = ctx.config;
    j["model_shape"] = {{"n_layers", mc.n_layers}, {"d_model", mc.d_model},
                        {"n_heads", mc.n_heads},   {"n_kv_heads", mc.n_kv_heads},
                        {"head_dim", mc.head_dim}, {"d_ff", mc.d_ff},
                        {"n_vocab", mc.n_vocab},   {"n_ctx", mc.n_ctx}};
    out.push_back(std::move(j));
  }
  return out.dump(1) + "\n";
}

std::string bench_to_csv(const std::vector<BenchRow>& rows, const BenchContext& ctx) {
  std::string out =
      "model,model_dtype,method,method_spec,prompt_tokens,gen_tokens,depth,fill,threads,kv_dtype,"
      "ubatch,batch,reps,prefill_s,prefill_s_std,prefill_tok_per_s,prefill_tok_per_s_std,"
      "decode_ms_per_token,decode_ms_per_token_std,e2e_s,e2e_s_std,kv_bytes,kv_bytes_std,"
      "peak_rss_bytes,peak_rss_bytes_std\n";
  // Quoted fields: specs contain commas.
  auto quote = [](const std::string& s) {
    std::string q = "\"";
    for (char ch : s) q += ch == '"' ? std::string("\"\"") : std::string(1, ch);
    return q + "\"";
  };
  for (const BenchRow& r : rows) {
    const BenchCase& c = r.bench_case;
    const RowStats st = row_stats(r);
    out += strfmt(
        "%s,%s,%s,%s,%d,%d,%d,%s,%d,%s,%d,%d,%zu,%.6f,%.6f,%.3f,%.3f,%.4f,%.4f,%.6f,%.6f,"
        "%.0f,%.0f,%.0f,%.0f\n",
        quote(ctx.model).c_str(), ctx.model_dtype.c_str(), c.method.method.c_str(),
        quote(format_method_spec(c.method)).c_str(), c.prompt_tokens, c.gen_tokens, c.depth,
        fill_of(c), c.threads, dtype_name(c.kv_dtype), c.ubatch, c.batch, r.samples.size(),
        st.prefill_s.mean, st.prefill_s.std, st.prefill_tps.mean, st.prefill_tps.std,
        st.decode_ms.mean, st.decode_ms.std, st.e2e_s.mean, st.e2e_s.std, st.kv_bytes.mean,
        st.kv_bytes.std, st.peak_rss.mean, st.peak_rss.std);
  }
  return out;
}

std::string bench_to_markdown(const std::vector<BenchRow>& rows, const BenchContext& ctx) {
  std::string out = strfmt(
      "model: %s (%s), kernels: %s, thread pool: %s, warm-up %d, mean ± std; b: sequences "
      "decoded together (decode ms per step, tok/s over all of them)\n\n",
      ctx.model.c_str(), ctx.model_dtype.c_str(), ctx.isa.c_str(), ctx.pool_wait.c_str(),
      ctx.warmup);
  out +=
      "| method | p | n | d | b | t | kv | ub | prefill s | prefill tok/s | decode ms/tok | decode "
      "tok/s | e2e s "
      "| KV MiB | peak RSS MiB |\n"
      "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  const double mib = 1024.0 * 1024.0;
  for (const BenchRow& r : rows) {
    const BenchCase& c = r.bench_case;
    const RowStats st = row_stats(r);
    std::string depth = std::to_string(c.depth);
    if (c.depth > 0) depth += strfmt(" (%s)", bench_fill_name(c.fill));
    out += strfmt(
        "| %s | %d | %d | %s | %d | %d | %s | %d | %.3f ± %.3f | %.1f ± %.1f | %.2f ± %.2f | %.1f "
        "| %.3f ± "
        "%.3f | %.1f | %.0f ± %.0f |\n",
        format_method_spec(c.method).c_str(), c.prompt_tokens, c.gen_tokens, depth.c_str(), c.batch,
        c.threads, dtype_name(c.kv_dtype), c.ubatch, st.prefill_s.mean, st.prefill_s.std,
        st.prefill_tps.mean, st.prefill_tps.std, st.decode_ms.mean, st.decode_ms.std,
        st.decode_tps.mean, st.e2e_s.mean, st.e2e_s.std, st.kv_bytes.mean / mib,
        st.peak_rss.mean / mib, st.peak_rss.std / mib);
  }
  return out;
}

BandwidthProbe probe_read_bandwidth(size_t bytes, int threads, int reps) {
  BandwidthProbe r;
  r.threads = std::max(1, threads);
  r.reps = std::max(1, reps);
  const size_t words = std::max<size_t>(bytes / sizeof(uint64_t), 1 << 20);
  r.bytes = words * sizeof(uint64_t);
  std::vector<uint64_t> buf(words);
  for (size_t i = 0; i < words; ++i) buf[i] = i * 0x9e3779b97f4a7c15ull;  // faulted in, not zero
  const int saved = num_threads();
  set_num_threads(r.threads);
  const int64_t chunks = 256;  // equal shares, claimed by the pool's threads
  std::vector<uint64_t> sums(static_cast<size_t>(chunks));
  auto pass = [&] {
    const auto t0 = std::chrono::steady_clock::now();
    parallel_for(chunks, [&](int64_t c) {
      const size_t lo = words * static_cast<size_t>(c) / chunks;
      const size_t hi = words * static_cast<size_t>(c + 1) / chunks;
      uint64_t a = 0, b = 0, d = 0, e = 0;  // 4 chains: the loop is bound by loads, not adds
      size_t i = lo;
      for (; i + 4 <= hi; i += 4) {
        a += buf[i];
        b += buf[i + 1];
        d += buf[i + 2];
        e += buf[i + 3];
      }
      for (; i < hi; ++i) a += buf[i];
      sums[static_cast<size_t>(c)] = a + b + d + e;
    });
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  pass();
  std::vector<double> gbs;
  for (int k = 0; k < r.reps; ++k) gbs.push_back(static_cast<double>(r.bytes) / pass() / 1e9);
  set_num_threads(saved);
  std::sort(gbs.begin(), gbs.end());
  r.best_gbs = gbs.back();
  r.median_gbs = gbs[gbs.size() / 2];
  volatile uint64_t sink = 0;
  for (uint64_t v : sums) sink = sink + v;  // keeps the sums
  return r;
}

Int8Peak probe_int8_peak(int threads, int reps) {
  Int8Peak r;
  r.threads = std::max(1, threads);
  const QDotIsa isa = quant_dot_best_isa();
  r.isa = quant_dot_isa_name(isa);
  if (isa == QDotIsa::kScalar) return r;
  const int saved = num_threads();
  set_num_threads(r.threads);
  constexpr int64_t kIters = int64_t{1} << 24;
  std::vector<int64_t> macs(static_cast<size_t>(r.threads));
  for (int k = 0; k < std::max(1, reps) + 1; ++k) {  // the first run warms the clocks up
    const auto t0 = std::chrono::steady_clock::now();
    parallel_for(r.threads,
                 [&](int64_t t) { macs[static_cast<size_t>(t)] = int8_peak_loop(isa, kIters); },
                 {.grain = 1});
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    double total = 0;
    for (int64_t m : macs) total += static_cast<double>(m);
    if (k > 0) r.best_tops = std::max(r.best_tops, 2.0 * total / s / 1e12);
  }
  set_num_threads(saved);
  return r;
}

}  // namespace fkv
