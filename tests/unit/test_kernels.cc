// Every kernel variant the CPU supports against double-precision references (and the scalar twin).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "kernels/dispatch.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "quant/quant.h"
#include "quant/quant_dot.h"

namespace fkv {
namespace {

std::vector<const KernelTable*> supported_tables() {
  std::vector<const KernelTable*> out;
  for (int i = 0; i < kNumIsas; ++i) {
    if (const KernelTable* k = kernel_table(static_cast<Isa>(i))) out.push_back(k);
  }
  return out;
}

std::vector<float> random_vec(std::mt19937& rng, int64_t n, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = d(rng);
  return v;
}

// Lengths that hit every vector tail: 0..300 and a few long ones.
std::vector<int64_t> lengths() {
  std::vector<int64_t> n;
  for (int64_t i = 0; i <= 300; ++i) n.push_back(i);
  for (int64_t i : {511, 576, 1000, 1536, 4099}) n.push_back(i);
  return n;
}

TEST(Kernels, ReportsVariants) {
  std::string names;
  for (const KernelTable* k : supported_tables()) names += std::string(k->name) + " ";
  std::printf("supported kernel variants: %s; active: %s\n", names.c_str(), kernel_isa_name());
  EXPECT_NE(kernel_table(Isa::kScalar), nullptr);
}

// |got - ref| relative to sum |a_i b_i| (the condition-free scale of a dot product).
TEST(Kernels, DotMatchesDoubleReference) {
  std::mt19937 rng(1);
  for (const KernelTable* k : supported_tables()) {
    for (int64_t n : lengths()) {
      auto a = random_vec(rng, n, -1, 1), b = random_vec(rng, n, -1, 1);
      double ref = 0, mag = 0;
      for (int64_t i = 0; i < n; ++i) {
        ref += static_cast<double>(a[i]) * b[i];
        mag += std::fabs(static_cast<double>(a[i]) * b[i]);
      }
      const float got = k->dot(a.data(), b.data(), n);
      EXPECT_LE(std::fabs(got - ref), 1e-5 * std::max(mag, 1e-30)) << k->name << " n=" << n;
      // Positive data: plain relative error.
      for (auto& x : a) x = std::fabs(x);
      for (auto& x : b) x = std::fabs(x);
      ref = 0;
      for (int64_t i = 0; i < n; ++i) ref += static_cast<double>(a[i]) * b[i];
      EXPECT_LE(std::fabs(k->dot(a.data(), b.data(), n) - ref), 1e-5 * std::fabs(ref))
          << k->name << " n=" << n;
    }
  }
}

TEST(Kernels, AxpyAddSiluMatchDoubleReference) {
  std::mt19937 rng(2);
  for (const KernelTable* k : supported_tables()) {
    for (int64_t n : lengths()) {
      const auto x = random_vec(rng, n, -3, 3), y0 = random_vec(rng, n, -3, 3);
      const float alpha = 0.731f;
      auto y = y0;
      k->axpy(alpha, x.data(), y.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        const double ref = y0[i] + static_cast<double>(alpha) * x[i];
        const double mag = std::fabs(y0[i]) + std::fabs(static_cast<double>(alpha) * x[i]);
        ASSERT_LE(std::fabs(y[i] - ref), 1e-5 * mag) << k->name << " axpy n=" << n << " i=" << i;
      }
      y = y0;
      k->add_inplace(y.data(), x.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        const double ref = static_cast<double>(y0[i]) + x[i];
        ASSERT_LE(std::fabs(y[i] - ref), 1e-5 * (std::fabs(y0[i]) + std::fabs(x[i])))
            << k->name << " add n=" << n << " i=" << i;
      }
      auto gate = random_vec(rng, n, -20, 20);
      const auto gate0 = gate;
      k->silu_mul(gate.data(), x.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        const double g = gate0[i];
        const double ref = g / (1.0 + std::exp(-g)) * x[i];
        ASSERT_LE(std::fabs(gate[i] - ref), 1e-5 * std::fabs(ref) + 1e-30)
            << k->name << " silu n=" << n << " g=" << g;
      }
    }
    // Saturation: huge |g| must not produce NaN.
    float g[4] = {-200.f, 200.f, -88.f, 89.f};
    const float up[4] = {1.f, 1.f, 1.f, 1.f};
    k->silu_mul(g, up, 4);
    EXPECT_NEAR(g[0], 0.0f, 1e-30f) << k->name;
    EXPECT_FLOAT_EQ(g[1], 200.f) << k->name;
    EXPECT_NEAR(g[2], 0.0f, 1e-30f) << k->name;
    EXPECT_FLOAT_EQ(g[3], 89.f) << k->name;
  }
}

TEST(Kernels, RmsNormMatchesDoubleReference) {
  std::mt19937 rng(3);
  for (const KernelTable* k : supported_tables()) {
    for (int64_t n : lengths()) {
      if (n == 0) continue;
      const auto x = random_vec(rng, n, -4, 4), w = random_vec(rng, n, 0.5f, 1.5f);
      std::vector<float> y(static_cast<size_t>(n));
      const float eps = 1e-5f;
      k->rms_norm_row(x.data(), w.data(), n, eps, y.data());
      double ss = 0;
      for (float v : x) ss += static_cast<double>(v) * v;
      const double scale = 1.0 / std::sqrt(ss / static_cast<double>(n) + eps);
      for (int64_t i = 0; i < n; ++i) {
        const double ref = x[i] * scale * w[i];
        ASSERT_LE(std::fabs(y[i] - ref), 1e-5 * std::fabs(ref) + 1e-30)
            << k->name << " n=" << n << " i=" << i;
      }
      // In place (y == x) is how the model calls it.
      auto xx = x;
      k->rms_norm_row(xx.data(), w.data(), n, eps, xx.data());
      EXPECT_EQ(0, std::memcmp(xx.data(), y.data(), y.size() * sizeof(float))) << k->name;
    }
  }
}

TEST(Kernels, SoftmaxMatchesDoubleReferenceAndSumsToOne) {
  std::mt19937 rng(4);
  for (const KernelTable* k : supported_tables()) {
    for (int64_t n : lengths()) {
      if (n == 0) continue;
      for (float spread : {1.0f, 30.0f, 200.0f}) {
        const auto x0 = random_vec(rng, n, -spread, spread);
        auto x = x0;
        k->softmax_inplace(x.data(), n);
        const double mx = *std::max_element(x0.begin(), x0.end());
        double z = 0;
        for (float v : x0) z += std::exp(static_cast<double>(v) - mx);
        double sum = 0;
        for (int64_t i = 0; i < n; ++i) {
          const double ref = std::exp(static_cast<double>(x0[i]) - mx) / z;
          ASSERT_LE(std::fabs(x[i] - ref), 1e-6) << k->name << " n=" << n << " i=" << i;
          sum += x[i];
        }
        EXPECT_LE(std::fabs(sum - 1.0), 1e-6) << k->name << " n=" << n;
      }
    }
    // -inf entries (masked scores) get exactly zero.
    float m[5] = {0.5f, -INFINITY, 1.5f, -INFINITY, -1.0f};
    k->softmax_inplace(m, 5);
    EXPECT_EQ(m[1], 0.0f);
    EXPECT_EQ(m[3], 0.0f);
    EXPECT_NEAR(m[0] + m[2] + m[4], 1.0, 1e-6);
  }
}

// Double-precision RoPE with the angle rounded to float as HF computes it (float pos * inv_freq).
void rope_reference(std::vector<double>& x, int n_heads, int head_dim, int rot_dim, int32_t pos,
                    const std::vector<float>& inv_freq, RopeStyle style) {
  const int half = rot_dim / 2;
  for (int h = 0; h < n_heads; ++h) {
    for (int i = 0; i < half; ++i) {
      const double angle = static_cast<double>(static_cast<float>(pos) * inv_freq[i]);
      const int i0 = h * head_dim + (style == RopeStyle::kNeox ? i : 2 * i);
      const int i1 = h * head_dim + (style == RopeStyle::kNeox ? i + half : 2 * i + 1);
      const double a = x[i0], b = x[i1];
      x[i0] = a * std::cos(angle) - b * std::sin(angle);
      x[i1] = b * std::cos(angle) + a * std::sin(angle);
    }
  }
}

TEST(Kernels, RopeMatchesDoubleReferenceBothStyles) {
  std::mt19937 rng(5);
  struct Shape {
    int n_heads, head_dim, rot_dim;
  };
  const Shape shapes[] = {{3, 64, 64}, {2, 64, 32}, {1, 8, 8},  {2, 128, 128},
                          {4, 80, 40}, {1, 6, 2},   {5, 96, 96}};
  const int32_t positions[] = {0, 1, 2, 7, 255, 1000, 4095, 32767, 65535, 99999, 100000};
  for (const KernelTable* k : supported_tables()) {
    for (const Shape& s : shapes) {
      std::vector<float> inv_freq(static_cast<size_t>(s.rot_dim / 2));
      for (int i = 0; i < s.rot_dim / 2; ++i) {
        inv_freq[i] =
            static_cast<float>(1.0 / std::pow(10000.0, static_cast<double>(2 * i) / s.rot_dim));
      }
      for (RopeStyle style : {RopeStyle::kNeox, RopeStyle::kInterleaved}) {
        for (int32_t pos : positions) {
          const auto x0 = random_vec(rng, int64_t{s.n_heads} * s.head_dim, -2, 2);
          auto x = x0;
          rope_row_with(*k, x.data(), s.n_heads, s.head_dim, s.rot_dim, pos, inv_freq.data(),
                        style);
          std::vector<double> ref(x0.begin(), x0.end());
          rope_reference(ref, s.n_heads, s.head_dim, s.rot_dim, pos, inv_freq, style);
          for (size_t i = 0; i < x.size(); ++i) {
            ASSERT_LE(std::fabs(x[i] - ref[i]), 1e-5)
                << k->name << " style=" << static_cast<int>(style) << " pos=" << pos
                << " heads=" << s.n_heads << " hd=" << s.head_dim << " rot=" << s.rot_dim
                << " i=" << i;
          }
        }
      }
    }
  }
}

TEST(Kernels, RopeStylesPairTheDocumentedDims) {
  // One head of 4 dims, pos 1, inv_freq {pi/2, 0}: the rotation by 90 degrees pairs dims
  // (0, 2) for neox and (0, 1) for interleaved.
  const float inv_freq[2] = {static_cast<float>(M_PI / 2), 0.0f};
  float neox[4] = {1, 2, 3, 4};
  rope_row(neox, 1, 4, 4, 1, inv_freq, RopeStyle::kNeox);
  EXPECT_NEAR(neox[0], -3, 1e-6);
  EXPECT_NEAR(neox[2], 1, 1e-6);
  EXPECT_NEAR(neox[1], 2, 1e-6);
  EXPECT_NEAR(neox[3], 4, 1e-6);
  float inter[4] = {1, 2, 3, 4};
  rope_row(inter, 1, 4, 4, 1, inv_freq, RopeStyle::kInterleaved);
  EXPECT_NEAR(inter[0], -2, 1e-6);
  EXPECT_NEAR(inter[1], 1, 1e-6);
  EXPECT_NEAR(inter[2], 3, 1e-6);
  EXPECT_NEAR(inter[3], 4, 1e-6);
}

// rope_qk_row shares one cos / sin table between q and k: bit for bit two rope_row calls.
TEST(Kernels, RopeQkRowEqualsTwoRopeRows) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  for (RopeStyle style : {RopeStyle::kNeox, RopeStyle::kInterleaved}) {
    for (int rot_dim : {32, 64}) {
      std::vector<float> inv_freq(static_cast<size_t>(rot_dim / 2));
      for (size_t i = 0; i < inv_freq.size(); ++i) {
        inv_freq[i] = static_cast<float>(std::pow(10000.0, -2.0 * i / rot_dim));
      }
      for (int32_t pos : {0, 1, 777, 131071}) {
        std::vector<float> q(9 * 64), k(3 * 64);
        for (float& x : q) x = u(rng);
        for (float& x : k) x = u(rng);
        std::vector<float> q2 = q, k2 = k;
        rope_qk_row(q.data(), 9, k.data(), 3, 64, rot_dim, pos, inv_freq.data(), style);
        rope_row(q2.data(), 9, 64, rot_dim, pos, inv_freq.data(), style);
        rope_row(k2.data(), 3, 64, rot_dim, pos, inv_freq.data(), style);
        EXPECT_EQ(0, std::memcmp(q.data(), q2.data(), q.size() * sizeof(float))) << pos;
        EXPECT_EQ(0, std::memcmp(k.data(), k2.data(), k.size() * sizeof(float))) << pos;
      }
    }
  }
}

// ---- matmul ----

struct TestWeight {
  std::vector<uint8_t> bytes;
  std::vector<float> values;  // exact f32 values of the stored weights [rows, cols]
  WeightMatrix w;
};

// Random weights of a plain dtype; row_bytes gets `pad` extra bytes to exercise the stride.
TestWeight make_plain_weight(std::mt19937& rng, DType t, int64_t rows, int64_t cols, size_t pad) {
  TestWeight tw;
  const size_t esz = t == DType::kF32 ? 4 : 2;
  const size_t row_bytes = esz * static_cast<size_t>(cols) + pad;
  tw.bytes.assign(row_bytes * static_cast<size_t>(rows) + 64, 0xEE);
  tw.values.resize(static_cast<size_t>(rows * cols));
  std::uniform_real_distribution<float> d(-1, 1);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      float v = d(rng);
      uint8_t* p = tw.bytes.data() + r * row_bytes + esz * c;
      if (t == DType::kF32) {
        std::memcpy(p, &v, 4);
      } else {
        const uint16_t h = t == DType::kF16 ? f32_to_f16(v) : f32_to_bf16(v);
        std::memcpy(p, &h, 2);
        v = t == DType::kF16 ? f16_to_f32(h) : bf16_to_f32(h);
      }
      tw.values[r * cols + c] = v;
    }
  }
  tw.w.dtype = t;
  tw.w.data = tw.bytes.data();
  tw.w.rows = rows;
  tw.w.cols = cols;
  tw.w.row_bytes = row_bytes;
  tw.w.name = "test";
  return tw;
}

// y_ref[i, r] in double from exact weight values.
std::vector<double> matmul_reference(const std::vector<float>& x, int64_t n, int64_t x_stride,
                                     const std::vector<float>& wv, int64_t rows, int64_t cols) {
  std::vector<double> y(static_cast<size_t>(n * rows));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t r = 0; r < rows; ++r) {
      double acc = 0;
      for (int64_t c = 0; c < cols; ++c) {
        acc += static_cast<double>(x[i * x_stride + c]) * wv[r * cols + c];
      }
      y[i * rows + r] = acc;
    }
  }
  return y;
}

double nmse(const std::vector<float>& y, int64_t y_stride, const std::vector<double>& ref,
            int64_t n, int64_t rows) {
  double err = 0, pow = 0;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t r = 0; r < rows; ++r) {
      const double d = y[i * y_stride + r] - ref[i * rows + r];
      err += d * d;
      pow += ref[i * rows + r] * ref[i * rows + r];
    }
  }
  return pow > 0 ? err / pow : err;
}

// Runs matmul_with(k) at 1 and 2 threads; checks bitwise equality and returns the result.
std::vector<float> run_matmul(const KernelTable& k, const std::vector<float>& x, int64_t n,
                              int64_t x_stride, const WeightMatrix& w, int64_t y_stride) {
  std::vector<float> y1(static_cast<size_t>(std::max<int64_t>(n, 1) * y_stride), -7.0f);
  std::vector<float> y2 = y1;
  set_num_threads(1);
  matmul_with(k, x.data(), n, x_stride, w, y1.data(), y_stride);
  set_num_threads(2);
  matmul_with(k, x.data(), n, x_stride, w, y2.data(), y_stride);
  set_num_threads(0);
  EXPECT_EQ(0, std::memcmp(y1.data(), y2.data(), y1.size() * sizeof(float)))
      << k.name << " thread count changed the result for " << w.rows << "x" << w.cols << " n=" << n;
  // Padding between rows of y is untouched.
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t r = w.rows; r < y_stride; ++r) EXPECT_EQ(y1[i * y_stride + r], -7.0f);
  }
  return y1;
}

TEST(Matmul, PlainDtypesAllVariantsOddSizes) {
  std::mt19937 rng(6);
  const int64_t col_sizes[] = {1, 2, 7, 8, 15, 16, 17, 31, 33, 63, 65, 100, 129, 257, 300};
  const int64_t row_sizes[] = {1, 3, 16, 37, 70};
  int cases = 0;
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (int64_t cols : col_sizes) {
      for (int64_t rows : row_sizes) {
        const auto tw = make_plain_weight(rng, t, rows, cols, (rows + cols) % 3 == 0 ? 0 : 8);
        for (int64_t n : {1, 3, 17, 45}) {
          const int64_t x_stride = cols + (n % 2);
          const int64_t y_stride = rows + 3;
          const auto x = random_vec(rng, n * x_stride, -1, 1);
          const auto ref = matmul_reference(x, n, x_stride, tw.values, rows, cols);
          std::vector<float> ys(static_cast<size_t>(n * y_stride));
          matmul_scalar(x.data(), n, x_stride, tw.w, ys.data(), y_stride);
          EXPECT_LE(nmse(ys, y_stride, ref, n, rows), 1e-7) << "matmul_scalar";
          for (const KernelTable* k : supported_tables()) {
            const auto y = run_matmul(*k, x, n, x_stride, tw.w, y_stride);
            EXPECT_LE(nmse(y, y_stride, ref, n, rows), 1e-7)
                << k->name << " " << dtype_name(t) << " " << rows << "x" << cols << " n=" << n;
            ++cases;
          }
        }
      }
    }
  }
  EXPECT_GT(cases, 0);
}

TEST(Matmul, LargeEnoughToRunInParallel) {
  std::mt19937 rng(7);
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (int64_t n : {1, 3, 17, 64, 77}) {
      const int64_t rows = 301, cols = 300;
      const auto tw = make_plain_weight(rng, t, rows, cols, 0);
      const auto x = random_vec(rng, n * cols, -1, 1);
      const auto ref = matmul_reference(x, n, cols, tw.values, rows, cols);
      for (const KernelTable* k : supported_tables()) {
        const auto y = run_matmul(*k, x, n, cols, tw.w, rows);
        EXPECT_LE(nmse(y, rows, ref, n, rows), 1e-7) << k->name << " " << dtype_name(t);
      }
      // The public entry point agrees with the active variant bitwise.
      std::vector<float> y(static_cast<size_t>(n * rows));
      matmul(x.data(), n, cols, tw.w, y.data(), rows);
      const auto ya = run_matmul(active_kernels(), x, n, cols, tw.w, rows);
      EXPECT_EQ(0, std::memcmp(y.data(), ya.data(), y.size() * sizeof(float)));
    }
  }
}

TEST(Matmul, WeightRowToF32IsExact) {
  std::mt19937 rng(8);
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16}) {
    const auto tw = make_plain_weight(rng, t, 5, 77, 4);
    std::vector<float> row(77);
    for (int64_t r = 0; r < 5; ++r) {
      weight_row_to_f32(tw.w, r, row.data());
      EXPECT_EQ(0, std::memcmp(row.data(), tw.values.data() + r * 77, 77 * sizeof(float)));
    }
  }
  // Every f16 / bf16 bit pattern through each variant's row converter.
  std::vector<uint16_t> all(65536);
  for (uint32_t i = 0; i < 65536; ++i) all[i] = static_cast<uint16_t>(i);
  std::vector<float> got(65536);
  for (const KernelTable* k : supported_tables()) {
    k->f16_row_to_f32(all.data(), got.data(), 65536);
    for (uint32_t i = 0; i < 65536; ++i) {
      const float e = f16_to_f32(all[i]);
      ASSERT_TRUE(std::memcmp(&e, &got[i], 4) == 0 || (std::isnan(e) && std::isnan(got[i])))
          << k->name << " f16 " << i;
    }
    k->bf16_row_to_f32(all.data(), got.data(), 65535);
    for (uint32_t i = 0; i < 65535; ++i) {
      const float e = bf16_to_f32(all[i]);
      ASSERT_EQ(0, std::memcmp(&e, &got[i], 4)) << k->name << " bf16 " << i;
    }
  }
}

// Each variant's f32 -> f16 row converter against core's f32_to_f16, bit for bit: every f16 value
// and the midpoints between neighbours (the ties of round to nearest even), the overflow edge,
// f16 subnormals and underflow, infinities, NaNs with payloads (-> sign | 0x7e00), 2M random bit
// patterns; row lengths 1-40 (vector tails) and chunks holding one NaN among finite values.
TEST(Kernels, F32RowToF16MatchesCoreConversion) {
  std::vector<float> in;
  for (uint32_t h = 0; h < 65536; ++h) {
    const float v = f16_to_f32(static_cast<uint16_t>(h));
    in.push_back(v);
    if (std::isfinite(v) && (h & 0x7fff) != 0x7bff) {
      in.push_back(static_cast<float>(
          0.5 * (static_cast<double>(v) + f16_to_f32(static_cast<uint16_t>(h + 1)))));
    }
  }
  for (float v :
       {65504.0f, 65519.99f, 65520.0f, 65536.0f, 5.96e-8f, 2.98e-8f, 2.99e-8f, 1e-40f, -0.0f,
        std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity()}) {
    in.push_back(v);
    in.push_back(-v);
  }
  std::mt19937 rng(12);
  for (uint32_t bits : {0x7f800001u, 0xffc00000u, 0x7fffffffu, 0x7fa00000u}) {
    float v;
    std::memcpy(&v, &bits, 4);
    in.push_back(v);
  }
  for (int i = 0; i < 2000000; ++i) {
    const uint32_t bits = static_cast<uint32_t>(rng());
    float v;
    std::memcpy(&v, &bits, 4);
    in.push_back(v);
  }
  std::vector<uint16_t> want(in.size());
  for (size_t i = 0; i < in.size(); ++i) want[i] = f32_to_f16(in[i]);
  for (const KernelTable* k : supported_tables()) {
    std::vector<uint16_t> got(in.size(), 0xdead);
    k->f32_row_to_f16(in.data(), got.data(), static_cast<int64_t>(in.size()));
    for (size_t i = 0; i < in.size(); ++i) {
      ASSERT_EQ(want[i], got[i]) << k->name << " input " << in[i] << " at " << i;
    }
    for (int n = 1; n <= 40; ++n) {
      std::vector<float> row(in.begin() + 1000, in.begin() + 1000 + n);
      if (n > 3) row[n / 2] = std::numeric_limits<float>::quiet_NaN();
      std::vector<uint16_t> g(static_cast<size_t>(n) + 1, 0xbeef);
      k->f32_row_to_f16(row.data(), g.data(), n);
      for (int i = 0; i < n; ++i) ASSERT_EQ(f32_to_f16(row[i]), g[i]) << k->name << " n=" << n;
      ASSERT_EQ(g[n], 0xbeef) << k->name << " wrote past n=" << n;
    }
  }
}

// Quantized weights: random blocks (re-drawn until every value is finite and moderate), compared
// against a double-precision product with the weights dequantized by dequantize_row.
TEST(Matmul, QuantizedWeightsThroughDequantizeRow) {
  const DType types[] = {DType::kQ4_0, DType::kQ4_1, DType::kQ5_0, DType::kQ5_1, DType::kQ8_0,
                         DType::kQ2_K, DType::kQ3_K, DType::kQ4_K, DType::kQ5_K, DType::kQ6_K};
  std::mt19937 rng(9);
  int tested = 0;
  std::string names;
  for (DType t : types) {
    if (!can_dequantize(t)) continue;
    names += std::string(dtype_name(t)) + " ";
    const auto info = *dtype_info(t);
    for (int64_t blocks : {1, 3}) {
      const int64_t cols = blocks * info.block_elems;
      const int64_t rows = 37;
      const size_t row_bytes = dtype_row_bytes(t, cols);
      std::vector<uint8_t> bytes(row_bytes * rows);
      std::vector<float> values(static_cast<size_t>(rows * cols));
      std::uniform_int_distribution<int> byte(0, 255);
      for (int64_t r = 0; r < rows; ++r) {
        for (int attempt = 0;; ++attempt) {
          ASSERT_LT(attempt, 10000) << dtype_name(t);
          for (size_t b = 0; b < row_bytes; ++b) bytes[r * row_bytes + b] = byte(rng);
          dequantize_row(t, bytes.data() + r * row_bytes, values.data() + r * cols, cols);
          bool ok = true;
          for (int64_t c = 0; c < cols; ++c) {
            const float v = values[r * cols + c];
            ok = ok && std::isfinite(v) && std::fabs(v) < 1e4f;
          }
          if (ok) break;
        }
      }
      WeightMatrix w;
      w.dtype = t;
      w.data = bytes.data();
      w.rows = rows;
      w.cols = cols;
      w.row_bytes = row_bytes;
      w.name = "quant";
      for (int64_t n : {1, 3, 17, 40}) {
        const auto x = random_vec(rng, n * cols, -1, 1);
        const auto ref = matmul_reference(x, n, cols, values, rows, cols);
        for (const KernelTable* k : supported_tables()) {
          const auto y = run_matmul(*k, x, n, cols, w, rows);
          // Per element against the magnitude sum |x||w| (rows have wildly different scales).
          for (int64_t i = 0; i < n; ++i) {
            for (int64_t r = 0; r < rows; ++r) {
              double mag = 0;
              for (int64_t c = 0; c < cols; ++c) {
                mag += std::fabs(static_cast<double>(x[i * cols + c]) * values[r * cols + c]);
              }
              // Products of fewer than 8 rows (or any, with the paired prefill form or under
              // FKV_QDOT=all) take the quantised dot, which rounds x to 8 bits per block as
              // llama.cpp does: add that error bound.
              const char* qdot_env = std::getenv("FKV_QDOT");
              const bool all = qdot_env != nullptr && std::string(qdot_env) == "all";
              const bool off = qdot_env != nullptr && std::string(qdot_env) == "0";
              QDotIsa isa = quant_dot_best_isa();
              if (k == &scalar_kernel_table()) isa = QDotIsa::kScalar;
              if (k == kernel_table(Isa::kAvx2) && isa == QDotIsa::kAvx512) isa = QDotIsa::kAvx2;
              const bool qd = has_quant_dot(t) && !off &&
                              (n < 8 || all || quant_dot_has_paired_prefill(t, isa));
              double act = 0;
              if (qd) {
                const int64_t blk = vec_dot_type(t) == DType::kQ8_K ? 256 : 32;
                for (int64_t b = 0; b < cols / blk; ++b) {
                  float amax = 0;
                  for (int64_t j = 0; j < blk; ++j) {
                    amax = std::max(amax, std::fabs(x[i * cols + b * blk + j]));
                  }
                  for (int64_t j = 0; j < blk; ++j) {
                    act += std::fabs(values[r * cols + b * blk + j]) * amax / 127.0 *
                           (0.5 + 1e-6 + 127.0 / 2048);
                  }
                }
              }
              ASSERT_LE(std::fabs(y[i * rows + r] - ref[i * rows + r]), 1e-5 * mag + act + 1e-30)
                  << k->name << " " << dtype_name(t) << " n=" << n << " r=" << r;
            }
          }
        }
        ++tested;
      }
    }
  }
  if (tested == 0) GTEST_SKIP() << "dequantize_row supports no quantized type yet";
  std::printf("quantized weight types tested: %s\n", names.c_str());
}

}  // namespace
}  // namespace fkv
