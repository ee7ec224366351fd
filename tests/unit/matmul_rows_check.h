// Shared by test_kernels_rows*.cc: matmul_rows_with(k) on n rows must give, row for row, the bits
// of matmul_with(k) on that row alone (the decode path), for every dtype, variant and n (across the
// n = 1 and n = 8 switches of matmul), thread counts 1 and 2; and stay near the scalar twin.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "kernels/dispatch.h"
#include "kernels/matmul.h"
#include "quant/quant.h"

namespace fkv::test {

// Random bytes with moderate f16 scales where the block keeps them (the scale offsets of each
// block layout; k-quant scales smaller so values stay O(1)).
inline std::vector<uint8_t> random_weight_bytes(std::mt19937& rng, DType t, int64_t rows,
                                                int64_t cols) {
  std::vector<uint8_t> bytes(dtype_row_bytes(t, cols) * static_cast<size_t>(rows));
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  if (t == DType::kF32 || t == DType::kF16 || t == DType::kBF16) {
    for (int64_t i = 0; i < rows * cols; ++i) {
      const float v = u(rng);
      if (t == DType::kF32) {
        std::memcpy(bytes.data() + i * 4, &v, 4);
      } else {
        const uint16_t h = t == DType::kF16 ? f32_to_f16(v) : f32_to_bf16(v);
        std::memcpy(bytes.data() + i * 2, &h, 2);
      }
    }
    return bytes;
  }
  std::uniform_int_distribution<int> byte(0, 255);
  for (auto& b : bytes) b = static_cast<uint8_t>(byte(rng));
  const auto info = *dtype_info(t);
  int d_off = 0, m_off = -1;
  bool k_quant = false;
  switch (t) {
    case DType::kQ4_1:
    case DType::kQ5_1:
      m_off = 2;
      break;
    case DType::kQ4_K:
    case DType::kQ5_K:
      m_off = 2;
      k_quant = true;
      break;
    case DType::kQ2_K:
      d_off = 80;
      m_off = 82;
      k_quant = true;
      break;
    case DType::kQ3_K:
      d_off = 108;
      k_quant = true;
      break;
    case DType::kQ6_K:
      d_off = 208;
      k_quant = true;
      break;
    default:
      break;
  }
  std::uniform_real_distribution<float> s(0.001f, 0.05f);
  for (size_t off = 0; off < bytes.size(); off += info.block_bytes) {
    const uint16_t d = f32_to_f16((k_quant ? 0.05f : 1.0f) * s(rng));
    std::memcpy(bytes.data() + off + d_off, &d, 2);
    if (m_off >= 0) {
      const uint16_t m = f32_to_f16(k_quant ? 0.05f * s(rng) : -8.0f * s(rng));
      std::memcpy(bytes.data() + off + m_off, &m, 2);
    }
  }
  return bytes;
}

inline void check_matmul_rows_all_types() {
  std::mt19937 rng(21);
  const DType types[] = {DType::kF32,  DType::kF16,  DType::kBF16, DType::kQ4_0, DType::kQ4_1,
                         DType::kQ5_0, DType::kQ5_1, DType::kQ8_0, DType::kQ2_K, DType::kQ3_K,
                         DType::kQ4_K, DType::kQ5_K, DType::kQ6_K};
  for (DType t : types) {
    const bool k_quant = dtype_info(t)->block_elems == 256;
    const int64_t rows = 61, cols = k_quant ? 512 : 96;  // 61: a partial tile of output rows
    const auto bytes = random_weight_bytes(rng, t, rows, cols);
    WeightMatrix w;
    w.dtype = t;
    w.data = bytes.data();
    w.rows = rows;
    w.cols = cols;
    w.row_bytes = dtype_row_bytes(t, cols);
    w.name = "rows";
    for (int64_t n : {2, 7, 8, 9, 33}) {
      const int64_t x_stride = cols + 3, y_stride = rows + 5;
      std::vector<float> x(static_cast<size_t>(n * x_stride));
      std::uniform_real_distribution<float> u(-1.0f, 1.0f);
      for (auto& v : x) v = u(rng);
      std::vector<double> ref(static_cast<size_t>(n * rows));
      {
        std::vector<float> y(static_cast<size_t>(n * y_stride));
        matmul_scalar(x.data(), n, x_stride, w, y.data(), y_stride);
        for (int64_t i = 0; i < n; ++i)
          for (int64_t r = 0; r < rows; ++r) ref[i * rows + r] = y[i * y_stride + r];
      }
      // Every variant the CPU runs, avx512+bf16dot included (its bf16 rows are rounded once per
      // call and must still match the one-row product bit for bit).
      std::vector<const KernelTable*> tables;
      for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
        if (const KernelTable* k = kernel_table(isa)) tables.push_back(k);
      }
      if (const KernelTable* k = bf16dot_kernel_table()) tables.push_back(k);
      for (const KernelTable* k : tables) {
        SCOPED_TRACE(testing::Message() << dtype_name(t) << " " << k->name << " n=" << n);
        std::vector<float> batched(static_cast<size_t>(n * y_stride), -7.0f);
        std::vector<float> batched2 = batched;
        set_num_threads(1);
        matmul_rows_with(*k, x.data(), n, x_stride, w, batched.data(), y_stride);
        set_num_threads(2);
        matmul_rows_with(*k, x.data(), n, x_stride, w, batched2.data(), y_stride);
        set_num_threads(0);
        EXPECT_EQ(0, std::memcmp(batched.data(), batched2.data(), batched.size() * 4));
        double err = 0, pow = 0;
        for (int64_t i = 0; i < n; ++i) {
          std::vector<float> alone(static_cast<size_t>(rows), -9.0f);
          matmul_with(*k, x.data() + i * x_stride, 1, x_stride, w, alone.data(), rows);
          ASSERT_EQ(0, std::memcmp(alone.data(), batched.data() + i * y_stride, rows * 4))
              << "row " << i << " differs from the one-row product";
          for (int64_t r = rows; r < y_stride; ++r) EXPECT_EQ(batched[i * y_stride + r], -7.0f);
          for (int64_t r = 0; r < rows; ++r) {
            const double dlt = batched[i * y_stride + r] - ref[i * rows + r];
            err += dlt * dlt;
            pow += ref[i * rows + r] * ref[i * rows + r];
          }
        }
        // The 8-bit (and bf16-dot's bf16) activation paths are within rounding error of the f32
        // twin.
        EXPECT_LT(err / pow, 1e-3);
      }
    }
  }
}

}  // namespace fkv::test
