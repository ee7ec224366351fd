// matmul on weights with a quantised dot (quant/quant_dot.h): every output element is exactly
// vec_dot(weight row, quantised x row) (so the new path is the one taken), it stays within the
// activation-quantisation error bound of the f32-dequantised product, and it is bitwise the same
// for 1 and 2 threads, n = 1 and n > 1. (k-quants, and every type on AVX2, use it for n < 8
// only, by default.)
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "kernels/dispatch.h"
#include "kernels/matmul.h"
#include "quant/quant.h"
#include "quant/quant_dot.h"

namespace fkv {
namespace {

// Random codes with moderate f16 scales (d, and the min where the type has one).
std::vector<uint8_t> random_weights(std::mt19937& rng, DType t, int64_t rows, int64_t cols) {
  const auto info = *dtype_info(t);
  std::vector<uint8_t> bytes(dtype_row_bytes(t, cols) * static_cast<size_t>(rows));
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> u(0.001f, 0.05f);
  for (auto& b : bytes) b = static_cast<uint8_t>(byte(rng));
  int d_off = 0, m_off = -1;
  switch (t) {
    case DType::kQ4_1:
    case DType::kQ5_1:
    case DType::kQ4_K:
    case DType::kQ5_K:
      m_off = 2;
      break;
    case DType::kQ2_K:
      d_off = 80;
      m_off = 82;
      break;
    case DType::kQ3_K:
      d_off = 108;
      break;
    case DType::kQ6_K:
      d_off = 208;
      break;
    default:
      break;
  }
  const bool k = vec_dot_type(t) == DType::kQ8_K;
  for (size_t off = 0; off < bytes.size(); off += info.block_bytes) {
    const uint16_t d = f32_to_f16((k ? 0.05f : 1.0f) * u(rng));
    std::memcpy(bytes.data() + off + d_off, &d, 2);
    if (m_off >= 0) {
      const uint16_t m = f32_to_f16(k ? 0.05f * u(rng) : -8.0f * u(rng));
      std::memcpy(bytes.data() + off + m_off, &m, 2);
    }
  }
  return bytes;
}

std::vector<float> random_x(std::mt19937& rng, int64_t n) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = 2.0f * u(rng) * u(rng);
  return x;
}

std::vector<const KernelTable*> tables() {
  std::vector<const KernelTable*> out;
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
    if (const KernelTable* k = kernel_table(isa)) out.push_back(k);
  }
  return out;
}

TEST(MatmulQuantDot, UsesVecDotAndBoundsAgainstDequantisedProduct) {
  std::mt19937 rng(11);
  const DType types[] = {DType::kQ4_0, DType::kQ4_1, DType::kQ5_0, DType::kQ5_1, DType::kQ8_0,
                         DType::kQ2_K, DType::kQ3_K, DType::kQ4_K, DType::kQ5_K, DType::kQ6_K};
  for (DType t : types) {
    const bool k_quant = vec_dot_type(t) == DType::kQ8_K;
    const int64_t block = k_quant ? 256 : 32;             // activation block
    const int64_t rows = 50, cols = k_quant ? 512 : 576;  // 50: a partial tile of output rows
    const auto bytes = random_weights(rng, t, rows, cols);
    WeightMatrix w;
    w.dtype = t;
    w.data = bytes.data();
    w.rows = rows;
    w.cols = cols;
    w.row_bytes = dtype_row_bytes(t, cols);
    w.name = "qdot";
    std::vector<float> wf(static_cast<size_t>(rows * cols));
    for (int64_t r = 0; r < rows; ++r) dequantize_row(t, w.row(r), wf.data() + r * cols, cols);
    for (int64_t n : {1, 5, 37}) {
      const auto x = random_x(rng, n * cols);
      // The expected kernel per table: scalar table -> scalar twin, others -> best variant.
      for (const KernelTable* k : tables()) {
        std::vector<float> y(static_cast<size_t>(n * rows));
        matmul_with(*k, x.data(), n, cols, w, y.data(), rows);
        QDotIsa isa = quant_dot_best_isa();
        if (k == &scalar_kernel_table()) isa = QDotIsa::kScalar;
        if (k == kernel_table(Isa::kAvx2) && isa == QDotIsa::kAvx512) isa = QDotIsa::kAvx2;
        std::vector<uint8_t> xq(vec_dot_row_bytes(t, cols));
        for (int64_t i = 0; i < n; ++i) {
          quantize_row_for_dot(t, x.data() + i * cols, xq.data(), cols);
          for (int64_t r = 0; r < rows; ++r) {
            const std::string where = std::string(k->name) + " " + dtype_name(t) +
                                      " n=" + std::to_string(n) + " i=" + std::to_string(i) +
                                      " r=" + std::to_string(r);
            // The quantised dot serves n < 8, and every n where the variant has the paired
            // prefill form (or under FKV_QDOT=all).
            const char* mode = std::getenv("FKV_QDOT");
            const bool qdot_path = (mode == nullptr || std::strcmp(mode, "0") != 0) &&
                                   (n < 8 || std::strcmp(mode ? mode : "", "all") == 0 ||
                                    quant_dot_has_paired_prefill(t, isa));
            if (qdot_path) {
              float want;
              quant_dot_fn(t, isa)(w.row(r), 0, 1, xq.data(), 0, 1, cols, &want, 1);
              ASSERT_EQ(0, std::memcmp(&want, &y[i * rows + r], 4)) << where;
            }
            // Bound vs the f32-dequantised product: x rounds to d' * q with d = amax / 127 and
            // d' = f16(d) (q8_0, q8_1) or d to 1 ulp (q8_K), so |x - x'| <= d / 2 + |d - d'| * 127
            // <= d * (0.5 + 127 * 2^-11) per element (+1e-6: id = 127 / amax may be an ulp off
            // 1 / d); plus 1e-5 of sum |w x| for the float sums.
            double ref = 0.0, bound = 0.0, mag = 0.0;
            for (int64_t b = 0; b < cols / block; ++b) {
              float amax = 0.0f;
              for (int j = 0; j < block; ++j) {
                amax = std::max(amax, std::fabs(x[i * cols + block * b + j]));
              }
              const double d = amax / 127.0;
              for (int j = 0; j < block; ++j) {
                const int64_t c = block * b + j;
                const double wv = wf[r * cols + c], xv = x[i * cols + c];
                ref += wv * xv;
                mag += std::fabs(wv * xv);
                bound += std::fabs(wv) * d * (0.5 + 1e-6 + 127.0 / 2048.0);
              }
            }
            ASSERT_LE(std::fabs(y[i * rows + r] - ref), bound + 1e-5 * mag) << where;
          }
        }
      }
    }
  }
}

TEST(MatmulQuantDot, ThreadCountDoesNotChangeBits) {
  std::mt19937 rng(12);
  for (DType t : {DType::kQ4_1, DType::kQ8_0, DType::kQ5_0, DType::kQ4_K}) {
    const int64_t rows = 200, cols = t == DType::kQ4_K ? 512 : 576;
    const auto bytes = random_weights(rng, t, rows, cols);
    WeightMatrix w;
    w.dtype = t;
    w.data = bytes.data();
    w.rows = rows;
    w.cols = cols;
    w.row_bytes = dtype_row_bytes(t, cols);
    w.name = "qdot";
    for (int64_t n : {1, 3, 40}) {
      const auto x = random_x(rng, n * cols);
      std::vector<float> y1(static_cast<size_t>(n * rows)), y2(y1.size());
      set_num_threads(1);
      matmul(x.data(), n, cols, w, y1.data(), rows);
      set_num_threads(2);
      matmul(x.data(), n, cols, w, y2.data(), rows);
      set_num_threads(0);  // back to the default
      ASSERT_EQ(0, std::memcmp(y1.data(), y2.data(), y1.size() * 4)) << dtype_name(t) << " n=" << n;
    }
  }
}

}  // namespace
}  // namespace fkv
