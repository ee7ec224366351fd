// Prefill GEMM: fastkv's matmul (f32 and bf16 weights, x packed in panels of 32 rows, 24-row
// weight tiles) against OpenBLAS's cblas_sgemm on the same f32 data, at Llama-3.2-1B prefill
// shapes. Prints GFLOP/s (2 n rows cols / best wall time of the repetitions) and the max relative
// difference of the results. Built with -DFKV_BUILD_BENCH=ON when CMake finds OpenBLAS
// (libopenblas-dev); usage: gemm_vs_openblas [threads] [n] [reps].
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "kernels/matmul.h"

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

template <class F>
double best_of(int reps, F&& f) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const double t0 = now_s();
    f();
    best = std::min(best, now_s() - t0);
  }
  return best;
}

double max_rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double err = 0, mag = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    err = std::max(err, std::fabs(static_cast<double>(a[i]) - b[i]));
    mag = std::max(mag, std::fabs(static_cast<double>(b[i])));
  }
  return mag > 0 ? err / mag : err;
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  const int n = argc > 2 ? std::atoi(argv[2]) : 512;
  const int reps = argc > 3 ? std::atoi(argv[3]) : 3;
  fkv::set_num_threads(threads);
  openblas_set_num_threads(threads);
  struct Shape {
    const char* name;
    int rows, cols;
  };
  // Llama-3.2-1B: d_model 2048, d_ff 8192, q 2048, kv 512.
  const Shape shapes[] = {{"wq / wo 2048x2048", 2048, 2048},
                          {"wk 512x2048", 512, 2048},
                          {"gate / up 8192x2048", 8192, 2048},
                          {"down 2048x8192", 2048, 8192}};
  std::printf("n = %d x rows, %d threads, best of %d\n\n", n, threads, reps);
  std::printf(
      "| weight | fastkv f32 GFLOP/s | fastkv bf16 GFLOP/s | OpenBLAS sgemm GFLOP/s | "
      "max rel diff |\n|---|---:|---:|---:|---:|\n");
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (const Shape& s : shapes) {
    std::vector<float> x(static_cast<size_t>(n) * s.cols), w(static_cast<size_t>(s.rows) * s.cols);
    for (float& v : x) v = dist(rng);
    std::vector<uint16_t> wb(w.size());
    for (size_t i = 0; i < w.size(); ++i) {
      // bf16-representable values, so the f32 and bf16 paths multiply the same numbers.
      wb[i] = fkv::f32_to_bf16(dist(rng) * 0.05f);
      w[i] = fkv::bf16_to_f32(wb[i]);
    }
    fkv::WeightMatrix wf{fkv::DType::kF32,
                         reinterpret_cast<const uint8_t*>(w.data()),
                         s.rows,
                         s.cols,
                         static_cast<size_t>(s.cols) * 4,
                         "w_f32"};
    fkv::WeightMatrix wbf{fkv::DType::kBF16,
                          reinterpret_cast<const uint8_t*>(wb.data()),
                          s.rows,
                          s.cols,
                          static_cast<size_t>(s.cols) * 2,
                          "w_bf16"};
    std::vector<float> y_f32(static_cast<size_t>(n) * s.rows), y_bf16(y_f32.size()),
        y_blas(y_f32.size());
    const double flops = 2.0 * n * s.rows * s.cols;
    const double t_f32 =
        best_of(reps, [&] { fkv::matmul(x.data(), n, s.cols, wf, y_f32.data(), s.rows); });
    const double t_bf16 =
        best_of(reps, [&] { fkv::matmul(x.data(), n, s.cols, wbf, y_bf16.data(), s.rows); });
    // y [n, rows] = x [n, cols] . w^T (w stored [rows, cols] row-major, as fastkv's weights).
    const double t_blas = best_of(reps, [&] {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, s.rows, s.cols, 1.0f, x.data(),
                  s.cols, w.data(), s.cols, 0.0f, y_blas.data(), s.rows);
    });
    std::printf("| %s | %.1f | %.1f | %.1f | %.1e |\n", s.name, flops / t_f32 / 1e9,
                flops / t_bf16 / 1e9, flops / t_blas / 1e9,
                std::max(max_rel_diff(y_f32, y_blas), max_rel_diff(y_bf16, y_blas)));
  }
  return 0;
}
