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

// The matmul variants: the three ISAs, then avx512+bf16dot (bf16 weights only).
constexpr int kMatmulVariants = 4;
const char* const kMatmulVariantNames[kMatmulVariants] = {"scalar", "avx2", "avx512", "avx512bf16"};
const KernelTable* matmul_variant(int i) {
  return i < kNumIsas ? kernel_table(static_cast<Isa>(i)) : bf16dot_kernel_table();
}

void bm_matmul(benchmark::State& state, int variant, DType t, int64_t rows, int64_t cols,
               int64_t n) {
  const KernelTable* k = matmul_variant(variant);
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
  for (DType t : {DType::kF32, DType::kBF16, DType::kF16, DType::kQ4_1, DType::kQ8_0}) {
    // The bf16-dot variant differs from avx512 only on bf16 weights.
    const int variants = t == DType::kBF16 ? kMatmulVariants : kNumIsas;
    for (const Shape& s : shapes) {
      for (int64_t n : {1, 128}) {
        for (int i = 0; i < variants; ++i) {
          const std::string name = std::string("matmul/") + dtype_name(t) + "/" + s.name + "/n" +
                                   std::to_string(n) + "/" + kMatmulVariantNames[i];
          auto* b = benchmark::RegisterBenchmark(name.c_str(), bm_matmul, i, t, s.rows, s.cols, n);
          b->Unit(benchmark::kMicrosecond);
          if (wall) b->UseRealTime();
        }
      }
    }
    // The LM head at decode: 49152 x 576, the largest single weight read per token.
    for (int i = 0; i < variants; ++i) {
      const std::string name =
          std::string("matmul/") + dtype_name(t) + "/lmhead_49152x576/n1/" + kMatmulVariantNames[i];
      auto* b = benchmark::RegisterBenchmark(name.c_str(), bm_matmul, i, t, 49152, 576, 1);
      b->Unit(benchmark::kMicrosecond);
      if (wall) b->UseRealTime();
    }
  }
  // Llama-3.2-1B's MLP in bf16 (the synthetic bench model): the f32 path against vdpbf16ps, at
  // decode, around the bf16-dot panel switch (n = 16) and at prefill sizes.
  const Shape llama[] = {{"llama1b_up_8192x2048", 8192, 2048},
                         {"llama1b_down_2048x8192", 2048, 8192}};
  for (const Shape& s : llama) {
    for (int64_t n : {1, 4, 8, 15, 16, 32, 128, 512}) {
      for (int i = 2; i < kMatmulVariants; ++i) {
        const std::string name = std::string("matmul/bf16/") + s.name + "/n" + std::to_string(n) +
                                 "/" + kMatmulVariantNames[i];
        auto* b = benchmark::RegisterBenchmark(name.c_str(), bm_matmul, i, DType::kBF16, s.rows,
                                               s.cols, n);
        b->Unit(benchmark::kMillisecond);
        if (wall) b->UseRealTime();
      }
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

// ---- attention: the engine's per-row dot/softmax/axpy loop ("naive") vs the tiled kernel ----
// SmolLM2-135M heads (9 query / 3 KV, head_dim 64) over n = 1024 and 4096 prefill rows; rates
// are causal attention GFLOP/s (2 * 2 * n * (n + 1) / 2 * heads * hd per call). Registered from a
// static initializer so this block stays self-contained.
#include "kernels/attention.h"

namespace fkv {
namespace {

struct AttnBenchData {
  AttentionShape s;
  std::vector<float> q, k, v, out;
  std::vector<int32_t> pos;
  AttnBenchData(int n) {
    s.n_heads = 9;
    s.n_kv_heads = 3;
    s.head_dim = 64;
    s.scale = 0.125f;
    q.resize(static_cast<size_t>(n) * 9 * 64);
    k.resize(static_cast<size_t>(n) * 3 * 64);
    v.resize(k.size());
    out.resize(q.size());
    std::mt19937 rng(5);
    std::uniform_real_distribution<float> d(-1.f, 1.f);
    for (auto* x : {&q, &k, &v}) {
      for (auto& e : *x) e = d(rng);
    }
    for (int i = 0; i < n; ++i) pos.push_back(i);
  }
};

// The loop src/engine/engine.cc ran before the tiled kernel, on one variant's dot/axpy/softmax.
void naive_attention(const KernelTable& kt, const AttnBenchData& b, int n, std::vector<float>& sc,
                     float* out) {
  const int hd = b.s.head_dim, group = b.s.n_heads / b.s.n_kv_heads;
  const int64_t q_stride = static_cast<int64_t>(b.s.n_heads) * hd;
  const int64_t kv_stride = static_cast<int64_t>(b.s.n_kv_heads) * hd;
  for (int h = 0; h < b.s.n_heads; ++h) {
    for (int r = 0; r < n; ++r) {
      const int g = h / group;
      const float* qr = b.q.data() + r * q_stride + static_cast<int64_t>(h) * hd;
      const int len = r + 1;
      for (int j = 0; j < len; ++j) {
        sc[j] =
            kt.dot(qr, b.k.data() + j * kv_stride + static_cast<int64_t>(g) * hd, hd) * b.s.scale;
      }
      kt.softmax_inplace(sc.data(), len);
      float* o = out + r * q_stride + static_cast<int64_t>(h) * hd;
      std::fill(o, o + hd, 0.0f);
      for (int j = 0; j < len; ++j) {
        kt.axpy(sc[j], b.v.data() + j * kv_stride + static_cast<int64_t>(g) * hd, o, hd);
      }
    }
  }
}

void bm_attention(benchmark::State& state, Isa isa, bool tiled, int n) {
  const KernelTable* kt = kernel_table(isa);
  const AttentionKernels* ak = attention_kernels(isa);
  if (kt == nullptr || ak == nullptr) {
    state.SkipWithError("variant not supported on this CPU");
    return;
  }
  set_num_threads(bench_threads());
  AttnBenchData b(n);
  std::vector<float> sc(static_cast<size_t>(n));
  const int64_t stride_q = static_cast<int64_t>(b.s.n_heads) * b.s.head_dim;
  const int64_t stride_kv = static_cast<int64_t>(b.s.n_kv_heads) * b.s.head_dim;
  for (auto _ : state) {
    if (tiled) {
      attention_prefill_with(*ak, b.s, b.q.data(), stride_q, b.k.data(), b.v.data(), stride_kv,
                             b.pos.data(), n, b.out.data(), stride_q);
    } else {
      naive_attention(*kt, b, n, sc, b.out.data());
    }
    benchmark::DoNotOptimize(b.out.data());
    benchmark::ClobberMemory();
  }
  const double flops = 2.0 * 2.0 * n * (n + 1.0) / 2.0 * b.s.n_heads * b.s.head_dim;
  state.counters["GFLOPs"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(tiled ? "tiled " : "naive ") + kt->name);
}

struct AttentionBenchRegistrar {
  AttentionBenchRegistrar() {
    const bool wall = bench_threads() > 1;
    const Isa isas[] = {Isa::kScalar, Isa::kAvx2, Isa::kAvx512};
    const char* isa_names[] = {"scalar", "avx2", "avx512"};
    for (int n : {1024, 4096}) {
      for (bool tiled : {false, true}) {
        for (int i = 0; i < 3; ++i) {
          if (!tiled && i == 0 && n > 1024) continue;  // scalar naive at 4K: seconds per call
          const std::string name = std::string("attention/prefill/n") + std::to_string(n) + "/" +
                                   (tiled ? "tiled/" : "naive/") + isa_names[i];
          auto* bm = benchmark::RegisterBenchmark(name.c_str(), bm_attention, isas[i], tiled, n);
          bm->Unit(benchmark::kMillisecond);
          if (wall) bm->UseRealTime();
        }
      }
    }
  }
};
const AttentionBenchRegistrar g_attention_bench_registrar;

}  // namespace
}  // namespace fkv
