// matmul throughput per kernel variant on SmolLM2-135M shapes (hidden 576, intermediate 1536,
// vocab 49152), for decode (n = 1) and prefill (n = 128) batches. Reported as GFLOP/s
// (2 * n * rows * cols per call) over CPU time. Thread count: FKV_BENCH_THREADS (default 1, so
// the variants' ratios are per core); above 1 the rates use wall time instead.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "kernels/dispatch.h"
#include "kernels/matmul.h"
#include "quant/quant.h"

namespace fkv {
namespace {

struct BenchWeight {
  std::vector<uint8_t> bytes;
  WeightMatrix w;
};

BenchWeight make_weight(DType t, int64_t rows, int64_t cols) {
  BenchWeight bw;
  const size_t row_bytes = dtype_row_bytes(t, cols);
  bw.bytes.resize(row_bytes * static_cast<size_t>(rows));
  std::mt19937 rng(42);
  std::uniform_real_distribution<float> d(-0.1f, 0.1f);
  if (t == DType::kF32 || t == DType::kF16 || t == DType::kBF16) {
    for (int64_t i = 0; i < rows * cols; ++i) {
      const float v = d(rng);
      if (t == DType::kF32) {
        std::memcpy(bw.bytes.data() + 4 * i, &v, 4);
      } else {
        const uint16_t h = t == DType::kF16 ? f32_to_f16(v) : f32_to_bf16(v);
        std::memcpy(bw.bytes.data() + 2 * i, &h, 2);
      }
    }
  } else {
    // Random quant codes; rewrite the leading f16 scale (and min) of each block so values stay
    // moderate (q4_0/q4_1/q5_x/q8_0 start with d [, m]).
    for (auto& b : bw.bytes) b = static_cast<uint8_t>(rng());
    const auto info = *dtype_info(t);
    const uint16_t scale = f32_to_f16(0.01f), minv = f32_to_f16(-0.05f);
    for (size_t off = 0; off + info.block_bytes <= bw.bytes.size(); off += info.block_bytes) {
      std::memcpy(bw.bytes.data() + off, &scale, 2);
      if (t == DType::kQ4_1 || t == DType::kQ5_1) std::memcpy(bw.bytes.data() + off + 2, &minv, 2);
    }
  }
  bw.w.dtype = t;
  bw.w.data = bw.bytes.data();
  bw.w.rows = rows;
  bw.w.cols = cols;
  bw.w.row_bytes = row_bytes;
  bw.w.name = "bench";
  return bw;
}

int bench_threads() {
  const char* env = std::getenv("FKV_BENCH_THREADS");
  return env ? std::atoi(env) : 1;
}

void bm_matmul(benchmark::State& state, Isa isa, DType t, int64_t rows, int64_t cols, int64_t n) {
  const KernelTable* k = kernel_table(isa);
  if (k == nullptr) {
    state.SkipWithError("variant not supported on this CPU");
    return;
  }
  if (!(t == DType::kF32 || t == DType::kF16 || t == DType::kBF16) && !can_dequantize(t)) {
    state.SkipWithError("dequantize_row does not support this dtype");
    return;
  }
  set_num_threads(bench_threads());
  const BenchWeight bw = make_weight(t, rows, cols);
  std::vector<float> x(static_cast<size_t>(n * cols)), y(static_cast<size_t>(n * rows));
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> d(-1.f, 1.f);
  for (auto& v : x) v = d(rng);
  for (auto _ : state) {
    matmul_with(*k, x.data(), n, cols, bw.w, y.data(), rows);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOPs"] = benchmark::Counter(2.0 * static_cast<double>(n * rows * cols) * 1e-9,
                                                benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GBps_w"] = benchmark::Counter(static_cast<double>(bw.bytes.size()) * 1e-9,
                                                benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(k->name) + " " + dtype_name(t));
}

void register_all() {
  const bool wall = bench_threads() > 1;
  struct Shape {
    const char* name;
    int64_t rows, cols;
  };
  const Shape shapes[] = {{"up_1536x576", 1536, 576}, {"down_576x1536", 576, 1536}};
  const Isa isas[] = {Isa::kScalar, Isa::kAvx2, Isa::kAvx512};
  const char* isa_names[] = {"scalar", "avx2", "avx512"};
  for (DType t : {DType::kF32, DType::kBF16, DType::kF16, DType::kQ4_1, DType::kQ8_0}) {
    for (const Shape& s : shapes) {
      for (int64_t n : {1, 128}) {
        for (int i = 0; i < 3; ++i) {
          const std::string name = std::string("matmul/") + dtype_name(t) + "/" + s.name + "/n" +
                                   std::to_string(n) + "/" + isa_names[i];
          auto* b =
              benchmark::RegisterBenchmark(name.c_str(), bm_matmul, isas[i], t, s.rows, s.cols, n);
          b->Unit(benchmark::kMicrosecond);
          if (wall) b->UseRealTime();
        }
      }
    }
    // The LM head at decode: 49152 x 576, the largest single weight read per token.
    for (int i = 0; i < 3; ++i) {
      const std::string name =
          std::string("matmul/") + dtype_name(t) + "/lmhead_49152x576/n1/" + isa_names[i];
      auto* b = benchmark::RegisterBenchmark(name.c_str(), bm_matmul, isas[i], t, 49152, 576, 1);
      b->Unit(benchmark::kMicrosecond);
      if (wall) b->UseRealTime();
    }
  }
}

}  // namespace
}  // namespace fkv

int main(int argc, char** argv) {
  fkv::register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
