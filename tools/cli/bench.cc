// fastkv bench: llama-bench-style measurement. Every list flag takes comma-separated values (and
// may be repeated); the cartesian product of the lists runs, each row with warm-up runs and -r
// recorded repetitions on a fresh session; the table goes to stdout (or --out-file), progress to
// stderr.
#include "engine/bench.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/file_io.h"
#include "core/parse_number.h"
#include "engine/app.h"
#include "kernels/dispatch.h"
#include "kv/method_spec.h"
#include "model/synthetic.h"

#ifndef FKV_SOURCE_DIR
#define FKV_SOURCE_DIR "."
#endif

namespace fkv::cli {
namespace {

// List flags: short alias, long name, help. Values accumulate over repeats.
struct ListFlag {
  const char* alias;
  const char* name;
  const char* help;
};
const std::vector<ListFlag>& list_flags() {
  static const std::vector<ListFlag> flags = {
      {"-p", "n-prompt", "prompt lengths of prefill rows (default 512; 0 with -d)"},
      {"-n", "n-gen", "decoded tokens per row (default 128)"},
      {"-d", "n-depth",
       "context depths of decode-only rows (default 0: none); the cache is filled (untimed) by "
       "a prefill or, with --fill random, by random K/V through the method's own selection"},
      {"-m", "method",
       "KV method specs NAME[:key=value,...] (repeat -m, or list with commas: "
       "fullkv,fastkv:tsp_rate=0.2,retain_rate=0.1); default fullkv"},
      {"-t", "threads", "thread counts (default: all cores)"},
      {"-kv", "kv-dtype", "KV cache dtypes f16 | bf16 | f32 (default f16)"},
      {"-ub", "ubatch", "prefill chunk rows through the linear layers (default 512)"},
      {"-b", "batch",
       "sequences decoded together in one batched step, as `fastkv serve` runs them (default 1); "
       "each is prefilled (or filled) on its own first; decode ms are per step, tok/s count "
       "every sequence"},
  };
  return flags;
}

const std::vector<ArgSpec>& bench_specs() {
  static const std::vector<ArgSpec> specs = {
      {"model", ArgKind::kString, "model folder (HF layout), .gguf file, or a known short name"},
      {"synthetic", ArgKind::kString,
       "random weights of a real shape made in memory: llama-3.2-1b | llama-3.1-8b | "
       "qwen2.5-0.5b (instead of --model)"},
      {"synthetic-dtype", ArgKind::kString,
       "weights of --synthetic: bf16 (default) | f16 | f32 | q4_0 | q8_0 | q4_k_m (llama.cpp's "
       "Q4_K_M mix)"},
      {"weights-seed", ArgKind::kInt, "seed of the synthetic weights (default 0)"},
      {"repetitions", ArgKind::kInt, "recorded runs per row, -r (default 3)"},
      {"warmup", ArgKind::kInt, "unrecorded runs before each row (default 1)"},
      {"fill", ArgKind::kString,
       "how -d rows fill the cache: prefill (default, as llama-bench) | random"},
      {"seed", ArgKind::kInt, "seed of the random token ids (default 0)"},
      {"output", ArgKind::kString, "output format, -o: md (default) | json | csv"},
      {"out-file", ArgKind::kString, "write the table to this file instead of stdout"},
      {"plot", ArgKind::kString,
       "also write a PNG of latency against prompt length per method (python3 + matplotlib: "
       "tools/scripts/plot_bench.py)"},
      {"quiet", ArgKind::kFlag, "no progress lines on stderr"},
      {"int8-peak", ArgKind::kFlag,
       "measure the x16 kernels' int8 multiply-add peak (vpdpbusd zmm, or vpmaddubsw ymm on "
       "AVX2) with each -t thread count, in int8 TOPS: the bound of quantised prefill"},
      {"bandwidth", ArgKind::kFlag,
       "measure memory read bandwidth with each -t thread count (1 GiB buffer, best and median "
       "of 5 passes) instead of a model: the bound of a decode step"},
  };
  return specs;
}

std::vector<ArgSpec> all_specs_for_help() {
  std::vector<ArgSpec> all;
  for (const ListFlag& f : list_flags()) all.push_back({f.name, ArgKind::kString, f.help});
  for (const ArgSpec& s : bench_specs()) all.push_back(s);
  return all;
}

// Splits argv into list flags (by long name, values in order) and the rest for parse_args.
// Short aliases of the single-valued flags: -r, -o.
Status split_args(const std::vector<std::string>& args,
                  std::map<std::string, std::vector<std::string>>& lists,
                  std::vector<std::string>& rest) {
  for (size_t i = 0; i < args.size(); ++i) {
    std::string a = args[i];
    if (a == "-r") a = "--repetitions";
    if (a == "-o") a = "--output";
    const ListFlag* lf = nullptr;
    std::optional<std::string> inline_value;
    for (const ListFlag& f : list_flags()) {
      const std::string long_name = std::string("--") + f.name;
      if (a == f.alias || a == long_name) lf = &f;
      if (a.rfind(long_name + "=", 0) == 0) {
        lf = &f;
        inline_value = a.substr(long_name.size() + 1);
      }
    }
    if (lf == nullptr) {
      if (a.size() > 1 && a[0] == '-' && a[1] != '-') {
        return Status::error(
            strfmt("bench: unknown option '%s' (see fastkv bench --help)", a.c_str()));
      }
      rest.push_back(a);
      continue;
    }
    if (!inline_value) {
      if (i + 1 >= args.size()) {
        return Status::error(strfmt("bench: option '%s' needs a value", a.c_str()));
      }
      inline_value = args[++i];
    }
    lists[lf->name].push_back(*inline_value);
  }
  return Status::ok();
}

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const size_t comma = s.find(',', start);
    out.push_back(s.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

Expected<std::vector<int>> int_list(const std::map<std::string, std::vector<std::string>>& lists,
                                    const char* name, const char* alias, std::vector<int> def,
                                    int lo, int hi) {
  auto it = lists.find(name);
  if (it == lists.end()) return def;
  std::vector<int> out;
  for (const std::string& value : it->second) {
    for (const std::string& item : split_commas(value)) {
      auto v = parse_int_in_range(item, strfmt("%s (--%s)", alias, name), lo, hi);
      if (!v) return v.status();
      out.push_back(static_cast<int>(*v));
    }
  }
  return out;
}

// "fullkv,fastkv:tsp_rate=0.2,retain_rate=0.1" -> two specs: a segment with ':' or without '='
// starts a new spec, the others are options of the one before.
Expected<std::vector<PolicyOptions>> method_list(
    const std::map<std::string, std::vector<std::string>>& lists) {
  auto it = lists.find("method");
  if (it == lists.end()) return std::vector<PolicyOptions>{PolicyOptions()};
  std::vector<PolicyOptions> out;
  for (const std::string& value : it->second) {
    std::vector<std::string> specs;
    for (const std::string& seg : split_commas(value)) {
      const bool starts_spec =
          seg.find(':') != std::string::npos || seg.find('=') == std::string::npos || specs.empty();
      if (starts_spec) {
        specs.push_back(seg);
      } else {
        specs.back() += "," + seg;
      }
    }
    for (const std::string& spec : specs) {
      auto po = parse_method_spec(spec);
      if (!po) return Status::error(strfmt("-m '%s': %s", spec.c_str(), po.error().c_str()));
      out.push_back(*po);
    }
  }
  return out;
}

// Weights' dtype for the row label: the dtype of the big matrices, "mixed" when they differ.
std::string model_dtype_of(const Model& m) {
  const LayerWeights& L = m.layer(0);
  const DType d = L.wq.dtype;
  for (const WeightMatrix* w : {&L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) {
    if (w->dtype != d) return "mixed";
  }
  return dtype_name(d);
}

// The kernel variant that runs: "avx512+bf16dot" only where its vdpbf16ps kernels are used (bf16
// weights), else the ISA's plain name.
std::string kernels_in_use(const Model& m) {
  const KernelTable& k = active_kernels();
  if (m.layer(0).wq.layout == WeightLayout::kX16) {
    std::string name = k.name;
    name += "+x16";  // (operator+ on a literal trips GCC 12's -Wrestrict)
    return name;
  }
  if (k.gemm_bf16dot == nullptr) return k.name;
  const LayerWeights& L = m.layer(0);
  for (const WeightMatrix* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) {
    if (w->dtype == DType::kBF16) return k.name;
  }
  return kernel_table(active_isa())->name;
}

std::string plot_script_path() {
  if (const char* p = std::getenv("FASTKV_PLOT_SCRIPT"); p != nullptr && *p != '\0') return p;
  return std::string(FKV_SOURCE_DIR) + "/tools/scripts/plot_bench.py";
}

// Renders the JSON rows to PNG bytes with the plot script (which prints the PNG on stdout), then
// writes them atomically like every other output.
Status write_plot(const std::string& json_text, const std::string& path) {
  char tmpl[] = "/tmp/fastkv-bench-XXXXXX";
  const int fd = ::mkstemp(tmpl);
  if (fd < 0) return Status::error("--plot: cannot create a temporary file in /tmp");
  const std::string tmp = tmpl;
  const bool wrote =
      ::write(fd, json_text.data(), json_text.size()) == static_cast<ssize_t>(json_text.size());
  ::close(fd);
  if (!wrote) {
    std::remove(tmp.c_str());
    return Status::error("--plot: cannot write the temporary JSON for the plot script");
  }
  const std::string script = plot_script_path();
  const std::string cmd = "python3 '" + script + "' '" + tmp + "'";
  std::FILE* pipe = ::popen(cmd.c_str(), "r");
  if (pipe == nullptr) {
    std::remove(tmp.c_str());
    return Status::error("--plot: cannot run python3");
  }
  std::string png;
  char buf[1 << 16];
  size_t got;
  while ((got = std::fread(buf, 1, sizeof buf, pipe)) > 0) png.append(buf, got);
  const int rc = ::pclose(pipe);
  std::remove(tmp.c_str());
  if (rc != 0 || png.size() < 8 || png.compare(1, 3, "PNG") != 0) {
    return Status::error(
        strfmt("--plot: %s failed (exit status %d); it needs python3 with matplotlib "
               "(pip install matplotlib); the table itself was written",
               script.c_str(), rc));
  }
  return write_file_atomic(path, png, "--plot");
}

}  // namespace

int cmd_bench(const std::vector<std::string>& args) {
  const char* usage =
      "usage: fastkv bench (--model PATH | --synthetic SHAPE [--synthetic-dtype T])\n"
      "         [-p LIST] [-n LIST] [-d LIST] [-b LIST] [-m SPEC ...] [-t LIST] [-kv LIST] [-ub "
      "LIST]\n"
      "         [-r N] [--warmup N] [--fill prefill|random] [-o md|json|csv] [--out-file FILE]\n"
      "         [--plot FILE.png]\n\n"
      "Times every combination of the lists (llama-bench style): prefill rows (-p N) report\n"
      "time to first token and prefill tok/s, then -n decode steps; decode-only rows (-d N,\n"
      "with -p 0) fill a cache of depth N untimed and time -n decode steps. Tokens are random\n"
      "ids. Each row: mean and std over -r runs of prefill s, prefill tok/s, decode ms/token,\n"
      "end-to-end s, KV bytes and peak RSS (weights included).\n\n"
      "example: fastkv bench --synthetic llama-3.2-1b -p 4096,8192 -n 32 -m fullkv\n"
      "           -m fastkv:tsp_rate=0.2,retain_rate=0.1 -t 2 -r 3 -o json";
  if (wants_help(args)) {
    print_help(usage, all_specs_for_help());
    return 0;
  }
  std::map<std::string, std::vector<std::string>> lists;
  std::vector<std::string> rest;
  if (auto st = split_args(args, lists, rest); !st) return fail(st);
  auto pa = parse_args(rest, bench_specs(), "bench");
  if (!pa) return fail(pa.status());
  if (pa->has("bandwidth") || pa->has("int8-peak")) {
    if (pa->has("model") || pa->has("synthetic")) {
      return fail(Status::error("bench: --bandwidth / --int8-peak take no --model or --synthetic"));
    }
    const int all_cores = static_cast<int>(std::max(1l, ::sysconf(_SC_NPROCESSORS_ONLN)));
    auto threads = int_list(lists, "threads", "-t", {all_cores}, 1, 1024);
    if (!threads) return fail(threads.status());
    for (int t : *threads) {
      if (pa->has("int8-peak")) {
        const Int8Peak p = probe_int8_peak(t, 3);
        std::printf("int8 peak: %.2f TOPS (%s, %d threads, best of 3)\n", p.best_tops, p.isa,
                    p.threads);
      }
      if (!pa->has("bandwidth")) continue;
      const BandwidthProbe b = probe_read_bandwidth(size_t{1} << 30, t, 5);
      std::printf(
          "read bandwidth: %.1f GB/s best, %.1f GB/s median (%d threads, %zu MiB, %d "
          "passes)\n",
          b.best_gbs, b.median_gbs, b.threads, b.bytes >> 20, b.reps);
    }
    return 0;
  }
  if (pa->has("model") == pa->has("synthetic")) {
    return fail(Status::error("bench: give exactly one of --model PATH or --synthetic SHAPE"));
  }
  if (pa->has("synthetic-dtype") && !pa->has("synthetic")) {
    return fail(Status::error("bench: --synthetic-dtype needs --synthetic"));
  }
  const std::string format = pa->str("output", "md");
  if (format != "md" && format != "json" && format != "csv") {
    return fail(Status::error(
        strfmt("bench: -o/--output must be md, json or csv, got '%s'", format.c_str())));
  }
  const std::string fill_name = pa->str("fill", "prefill");
  if (fill_name != "prefill" && fill_name != "random") {
    return fail(Status::error(
        strfmt("bench: --fill must be prefill or random, got '%s'", fill_name.c_str())));
  }
  auto reps = get_int(*pa, "repetitions", 3, 1, 1000);
  if (!reps) return fail(reps.status());
  auto warmup = get_int(*pa, "warmup", 1, 0, 100);
  if (!warmup) return fail(warmup.status());
  auto seed = get_int(*pa, "seed", 0, 0, (1ll << 62));
  if (!seed) return fail(seed.status());
  auto weights_seed = get_int(*pa, "weights-seed", 0, 0, (1ll << 62));
  if (!weights_seed) return fail(weights_seed.status());
  // Output paths are checked before any work starts.
  if (pa->has("out-file")) {
    if (auto st = check_output_path(pa->str("out-file"), "--out-file"); !st) return fail(st);
  }
  if (pa->has("plot")) {
    if (auto st = check_output_path(pa->str("plot"), "--plot"); !st) return fail(st);
  }

  const bool depth_given = lists.count("n-depth") != 0;
  auto prompts = int_list(lists, "n-prompt", "-p", {depth_given ? 0 : 512}, 0, 1 << 24);
  if (!prompts) return fail(prompts.status());
  auto gens = int_list(lists, "n-gen", "-n", {128}, 0, 1 << 24);
  if (!gens) return fail(gens.status());
  auto depths = int_list(lists, "n-depth", "-d", {0}, 0, 1 << 24);
  if (!depths) return fail(depths.status());
  const int all_cores = static_cast<int>(std::max(1l, ::sysconf(_SC_NPROCESSORS_ONLN)));
  auto threads = int_list(lists, "threads", "-t", {all_cores}, 1, 1024);
  if (!threads) return fail(threads.status());
  auto ubatches = int_list(lists, "ubatch", "-ub", {512}, 1, 1 << 20);
  if (!ubatches) return fail(ubatches.status());
  auto batches = int_list(lists, "batch", "-b", {1}, 1, kMaxBenchBatch);
  if (!batches) return fail(batches.status());
  auto methods = method_list(lists);
  if (!methods) return fail(methods.status());
  std::vector<DType> kv_dtypes;
  if (auto it = lists.find("kv-dtype"); it != lists.end()) {
    for (const std::string& v : it->second) {
      for (const std::string& item : split_commas(v)) {
        auto d = parse_kv_dtype(item);
        if (!d) return fail(Status::error("-kv (--kv-dtype): " + d.error()));
        kv_dtypes.push_back(*d);
      }
    }
  } else {
    kv_dtypes.push_back(SessionOptions().kv_dtype);
  }

  // Model.
  std::unique_ptr<Model> model;
  BenchContext ctx;
  ctx.warmup = static_cast<int>(*warmup);
  if (pa->has("synthetic")) {
    auto cfg = synthetic_config(pa->str("synthetic"));
    if (!cfg) return fail(Status::error("--synthetic: " + cfg.error()));
    auto dtype = synthetic_weight_dtype(pa->str("synthetic-dtype", "bf16"));
    if (!dtype) return fail(Status::error("--synthetic-dtype: " + dtype.error()));
    if (!pa->has("quiet")) {
      std::fprintf(stderr, "[bench] making synthetic %s weights (%s)\n",
                   pa->str("synthetic").c_str(), pa->str("synthetic-dtype", "bf16").c_str());
    }
    auto m = Model::synthetic(*cfg, *dtype, static_cast<uint64_t>(*weights_seed));
    if (!m) return fail(m.status());
    model = std::move(m.value());
    ctx.model = "synthetic:" + pa->str("synthetic");
    ctx.synthetic = true;
  } else {
    auto path = resolve_model_path(pa->str("model"));
    if (!path) return fail(path.status());
    auto m = Model::load(*path);
    if (!m) return fail(m.status());
    model = std::move(m.value());
    ctx.model = *path;
  }
  ctx.model_dtype = model_dtype_of(*model);
  ctx.isa = kernels_in_use(*model);
  ctx.pool_wait = pool_wait_description();
  ctx.weight_bytes = model->weight_bytes();
  ctx.config = model->config();

  // Every row is checked (and its method made against the model) before the first one runs.
  std::vector<BenchCase> cases;
  for (const PolicyOptions& m : *methods) {
    auto policy = make_policy(m, model->policy_info());
    if (!policy) {
      return fail(Status::error(
          strfmt("-m '%s': %s", format_method_spec(m).c_str(), policy.error().c_str())));
    }
    for (int p : *prompts)
      for (int n : *gens)
        for (int d : *depths)
          for (int t : *threads)
            for (DType kv : kv_dtypes)
              for (int ub : *ubatches)
                for (int nb : *batches) {
                  BenchCase c;
                  c.method = m;
                  c.prompt_tokens = p;
                  c.gen_tokens = n;
                  c.depth = d;
                  c.fill = fill_name == "random" ? BenchFill::kRandom : BenchFill::kPrefill;
                  c.threads = t;
                  c.kv_dtype = kv;
                  c.ubatch = ub;
                  c.batch = nb;
                  if (auto st = validate_bench_case(c, model->config()); !st) return fail(st);
                  cases.push_back(c);
                }
  }

  std::vector<BenchRow> rows;
  const int total_runs = static_cast<int>(*warmup + *reps);
  for (size_t ci = 0; ci < cases.size(); ++ci) {
    const BenchCase& c = cases[ci];
    BenchRow row;
    row.bench_case = c;
    for (int run = 0; run < total_runs; ++run) {
      const bool warm = run < *warmup;
      if (!pa->has("quiet")) {
        std::fprintf(stderr,
                     "[bench] row %zu/%zu %s p=%d n=%d d=%d b=%d t=%d kv=%s ub=%d: %s %d/%d\n",
                     ci + 1, cases.size(), format_method_spec(c.method).c_str(), c.prompt_tokens,
                     c.gen_tokens, c.depth, c.batch, c.threads, dtype_name(c.kv_dtype), c.ubatch,
                     warm ? "warm-up" : "run", warm ? run + 1 : static_cast<int>(run - *warmup + 1),
                     warm ? static_cast<int>(*warmup) : static_cast<int>(*reps));
      }
      auto s = run_bench_once(*model, c, static_cast<uint64_t>(*seed));
      if (!s) return fail(s.status());
      if (!warm) row.samples.push_back(*s);
    }
    rows.push_back(std::move(row));
  }

  const std::string json_text = bench_to_json(rows, ctx);
  const std::string text = format == "json"  ? json_text
                           : format == "csv" ? bench_to_csv(rows, ctx)
                                             : bench_to_markdown(rows, ctx);
  if (pa->has("out-file")) {
    if (auto st = write_file_atomic(pa->str("out-file"), text, "--out-file"); !st) return fail(st);
  } else {
    std::fwrite(text.data(), 1, text.size(), stdout);
    if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
      return fail(Status::error("cannot write the bench table to stdout"));
    }
  }
  if (pa->has("plot")) {
    if (auto st = write_plot(json_text, pa->str("plot")); !st) return fail(st);
  }
  return 0;
}

}  // namespace fkv::cli
