// The x16 (16-row repacked) layouts of quant/repack.h: the layout round-trips, the scalar twin is
// the documented float order (restated here from the row layout), the VNNI kernel gives the
// scalar twin's bits for every batch size (the AVX2 kernel too, q4_0 / q4_1), and matmul /
// matmul_rows on repacked weights give each row the bits of its one-row product, whatever n, tile
// and thread count, near the f64 twin.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "kernels/dispatch.h"
#include "kernels/matmul.h"
#include "matmul_rows_check.h"
#include "quant/quant.h"
#include "quant/quant_dot.h"
#include "quant/repack.h"

namespace fkv {
namespace {

const DType kX16Types[] = {DType::kQ4_0, DType::kQ4_1, DType::kQ8_0,
                           DType::kQ4_K, DType::kQ5_K, DType::kQ6_K};

bool k_quant(DType t) { return t == DType::kQ4_K || t == DType::kQ5_K || t == DType::kQ6_K; }
// Elements per block: the x16 layouts need cols to be a multiple of it.
int64_t block_elems(DType t) { return k_quant(t) ? 256 : 32; }
// The vector variants with a kernel for t: AVX2 has none for q8_0 (its codes overflow
// vpmaddubsw's pairs; the loader keeps its rows there).
bool has_variant(DType t, QDotIsa isa) { return !(isa == QDotIsa::kAvx2 && t == DType::kQ8_0); }

float f16_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

std::vector<float> random_floats(std::mt19937& rng, size_t n) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& f : v) f = u(rng);
  return v;
}

std::vector<uint8_t> quantize_x(DType t, const std::vector<float>& x, int64_t nx, int64_t n) {
  const size_t stride = vec_dot_row_bytes(t, n);
  std::vector<uint8_t> xq(stride * static_cast<size_t>(nx));
  for (int64_t i = 0; i < nx; ++i)
    quantize_row_for_dot(t, x.data() + i * n, xq.data() + i * stride, n);
  return xq;
}

// The documented order, from the row-layout bytes: per block the exact integer sum, then
// acc = fma(isum, d_w * d_x, acc); q4_1's m_w * s_x summed apart and added at the end.
float restated_dot(DType t, const uint8_t* row, const uint8_t* xrow, int64_t n) {
  volatile float acc = 0.0f, msum = 0.0f;  // volatile: one rounding per step, as written
  const size_t wb = dtype_row_bytes(t, 32), xb = vec_dot_row_bytes(t, 32);
  const size_t xcodes = t == DType::kQ4_1 ? 4 : 2;
  for (int64_t b = 0; b < n / 32; ++b) {
    const uint8_t* w = row + b * wb;
    const uint8_t* x = xrow + b * xb;
    int32_t isum = 0;
    for (int e = 0; e < 32; ++e) {
      int code;
      if (t == DType::kQ8_0) {
        code = static_cast<int8_t>(w[2 + e]);
      } else {
        const uint8_t q = w[(t == DType::kQ4_1 ? 4 : 2) + e % 16];
        code = e < 16 ? (q & 15) : (q >> 4);
        if (t == DType::kQ4_0) code -= 8;
      }
      isum += code * static_cast<int8_t>(x[xcodes + e]);
    }
    const float s = f16_at(w) * f16_at(x);
    acc = std::fma(static_cast<float>(isum), s, acc);
    if (t == DType::kQ4_1) {
      const float m = f16_at(w + 2) * f16_at(x + 2);
      msum = msum + m;
    }
  }
  return t == DType::kQ4_1 ? acc + msum : acc;
}

// The k-quant order (repack.h), from ggml's row layout: per superblock the exact integer total of
// the sub-blocks' scaled sums (q6_K: codes - 32 through x's sub-block sums), one fma with
// d_w * d_x; q4_K's mins the same way with dmin_w * d_x into their own sum, subtracted at the end.
float restated_dot_k(DType t, const uint8_t* row, const uint8_t* xrow, int64_t n) {
  volatile float acc = 0.0f, macc = 0.0f;
  for (int64_t b = 0; b < n / 256; ++b) {
    const uint8_t* w = row + b * (t == DType::kQ4_K ? 144 : t == DType::kQ5_K ? 176 : 210);
    const uint8_t* x = xrow + b * 292;
    float dx;
    std::memcpy(&dx, x, 4);
    const int8_t* xs = reinterpret_cast<const int8_t*>(x + 4);
    int16_t bs[16];
    std::memcpy(bs, x + 260, sizeof(bs));
    int32_t isum = 0, msum = 0;
    if (t == DType::kQ4_K || t == DType::kQ5_K) {
      const uint8_t* s = w + 4;
      const uint8_t* qs = w + (t == DType::kQ4_K ? 16 : 48);
      for (int j = 0; j < 8; ++j) {
        const int sc = j < 4 ? s[j] & 63 : (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
        const int m = j < 4 ? s[j + 4] & 63 : (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
        int32_t sub = 0;
        for (int l = 0; l < 32; ++l) {
          int q = (qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 15;
          if (t == DType::kQ5_K) q |= ((w[16 + l] >> j) & 1) << 4;  // ggml's u1 / u2 bits
          sub += q * xs[32 * j + l];
        }
        isum += sc * sub;
        msum += m * (bs[2 * j] + bs[2 * j + 1]);
      }
      acc = std::fma(static_cast<float>(isum), f16_at(w) * dx, acc);
      macc = std::fma(static_cast<float>(msum), f16_at(w + 2) * dx, macc);
    } else {
      int32_t sub[16] = {};
      for (int e = 0; e < 256; ++e) {
        const int h = e / 128, k = (e % 128) / 32, l = e % 32;
        const int q = ((w[64 * h + 32 * (k % 2) + l] >> (4 * (k / 2))) & 15) |
                      (((w[128 + 32 * h + l] >> (2 * k)) & 3) << 4);
        sub[e / 16] += q * xs[e];
      }
      for (int j = 0; j < 16; ++j) {
        isum += static_cast<int8_t>(w[192 + j]) * (sub[j] - 32 * bs[j]);
      }
      acc = std::fma(static_cast<float>(isum), f16_at(w + 208) * dx, acc);
    }
  }
  return t == DType::kQ6_K ? acc : acc - macc;
}

float restated(DType t, const uint8_t* row, const uint8_t* xrow, int64_t n) {
  return k_quant(t) ? restated_dot_k(t, row, xrow, n) : restated_dot(t, row, xrow, n);
}

TEST(Repack, LayoutRoundTripsAndInPlaceEqualsACopy) {
  std::mt19937 rng(5);
  for (DType t : kX16Types) {
    const int64_t rows = 48, cols = 3 * block_elems(t);
    EXPECT_TRUE(x16_shape_ok(t, rows, cols));
    EXPECT_FALSE(x16_shape_ok(t, 40, cols)) << "rows must be a multiple of 16";
    EXPECT_FALSE(x16_shape_ok(t, rows, cols + block_elems(t) / 2))
        << "cols must be a multiple of the block";
    const auto bytes = test::random_weight_bytes(rng, t, rows, cols);
    std::vector<uint8_t> packed(bytes.size());
    repack_x16(t, bytes.data(), packed.data(), rows, cols);
    EXPECT_NE(0, std::memcmp(packed.data(), bytes.data(), bytes.size())) << dtype_name(t);
    std::vector<uint8_t> in_place = bytes;
    repack_x16(t, in_place.data(), in_place.data(), rows, cols);
    EXPECT_EQ(0, std::memcmp(in_place.data(), packed.data(), bytes.size())) << dtype_name(t);
    const size_t rb = dtype_row_bytes(t, cols);
    std::vector<uint8_t> row(rb);
    for (int64_t r = 0; r < rows; ++r) {
      x16_row(t, packed.data(), cols, r, row.data());
      ASSERT_EQ(0, std::memcmp(row.data(), bytes.data() + r * rb, rb)) << dtype_name(t) << " " << r;
    }
  }
  EXPECT_FALSE(x16_type(DType::kQ5_0));
  EXPECT_FALSE(x16_type(DType::kQ2_K));
  EXPECT_EQ(x16_dot_fn(DType::kQ2_K, QDotIsa::kScalar), nullptr);
}

// Scalar twin == the restated order bit for bit; every variant == the scalar twin bit for bit, for
// batches that cover each register form (8 / 4 x rows per pass, 2, 1; q4_1 4 / 2 / 1), for one
// group alone and for the whole matrix; all near the row-layout kernels.
TEST(Repack, EveryVariantGivesTheScalarTwinsBits) {
  std::mt19937 rng(11);
  std::vector<QDotIsa> isas = {QDotIsa::kScalar};
  if (x16_dot_fn(DType::kQ4_0, QDotIsa::kAvx2) != nullptr) isas.push_back(QDotIsa::kAvx2);
  if (x16_dot_fn(DType::kQ4_0, QDotIsa::kAvx512) != nullptr) isas.push_back(QDotIsa::kAvx512);
  // AVX2 has no q8_0 kernel (its codes overflow vpmaddubsw's pairs): the loader keeps q8_0 rows.
  EXPECT_EQ(x16_dot_fn(DType::kQ8_0, QDotIsa::kAvx2), nullptr);
  if (quant_dot_best_isa() == QDotIsa::kAvx2) {
    EXPECT_FALSE(x16_repack_enabled(DType::kQ8_0));
  }
  for (DType t : kX16Types) {
    for (int64_t n : {block_elems(t), 18 * block_elems(t)}) {
      const int64_t rows = 48;
      const auto bytes = test::random_weight_bytes(rng, t, rows, n);
      const size_t rb = dtype_row_bytes(t, n);
      std::vector<uint8_t> packed(bytes.size());
      repack_x16(t, bytes.data(), packed.data(), rows, n);
      const int64_t nx = 15;
      const auto x = random_floats(rng, static_cast<size_t>(nx * n));
      const auto xq = quantize_x(t, x, nx, n);
      const size_t xs = vec_dot_row_bytes(t, n);
      std::vector<float> want(static_cast<size_t>(nx * rows));
      x16_dot_fn(t, QDotIsa::kScalar)(packed.data(), rb, rows, xq.data(), xs, nx, n, want.data(),
                                      rows);
      std::vector<float> near(static_cast<size_t>(nx * rows));
      quant_dot_fn(t, QDotIsa::kScalar)(bytes.data(), rb, rows, xq.data(), xs, nx, n, near.data(),
                                        rows);
      for (int64_t i = 0; i < nx; ++i) {
        for (int64_t r = 0; r < rows; ++r) {
          const float restated_r = restated(t, bytes.data() + r * rb, xq.data() + i * xs, n);
          const float got = want[i * rows + r];
          ASSERT_EQ(0, std::memcmp(&restated_r, &got, 4))
              << dtype_name(t) << " n=" << n << " i=" << i << " r=" << r;
          EXPECT_NEAR(got, near[i * rows + r], 1e-4f * (1.0f + std::fabs(got))) << dtype_name(t);
        }
      }
      for (QDotIsa isa : isas) {
        const QDotFn f = x16_dot_fn(t, isa);
        if (!has_variant(t, isa)) {
          EXPECT_EQ(f, nullptr) << dtype_name(t);
          continue;
        }
        ASSERT_NE(f, nullptr);
        for (int64_t batch : {1, 2, 3, 4, 5, 7, 8, 9, 12, 15}) {
          SCOPED_TRACE(testing::Message() << dtype_name(t) << " " << quant_dot_isa_name(isa)
                                          << " n=" << n << " batch=" << batch);
          std::vector<float> got(static_cast<size_t>(batch * rows), -5.0f);
          f(packed.data(), rb, rows, xq.data(), xs, batch, n, got.data(), rows);
          for (int64_t i = 0; i < batch; ++i) {
            ASSERT_EQ(0, std::memcmp(got.data() + i * rows, want.data() + i * rows, rows * 4))
                << "x row " << i;
          }
          // The middle group alone, x rows from the 3rd on.
          if (batch >= 3) {
            std::vector<float> mid(static_cast<size_t>((batch - 2) * 16));
            f(packed.data() + 16 * rb, rb, 16, xq.data() + 2 * xs, xs, batch - 2, n, mid.data(),
              16);
            for (int64_t i = 0; i < batch - 2; ++i) {
              ASSERT_EQ(0, std::memcmp(mid.data() + i * 16, want.data() + (i + 2) * rows + 16, 64));
            }
          }
        }
      }
    }
  }
}

// The integer sums at their bounds: every nibble 15 (q4_0 / q4_1) or every code -128 / 127 (q8_0)
// against x rows of all +1 and all -1 (codes +-127), where the AVX2 kernel's i16 sums of 8 words
// reach +-30480 and the VNNI kernel's starts their largest; every variant gives the scalar twin's
// bits.
TEST(Repack, ExtremeCodesGiveTheScalarTwinsBits) {
  std::mt19937 rng(23);
  for (DType t : kX16Types) {
    const int64_t rows = 32, n = 512;
    const size_t rb = dtype_row_bytes(t, n), blk = dtype_row_bytes(t, block_elems(t));
    // The bytes of a block the fill covers: the codes (and the k-quants' sub-block scales and
    // mins: q4_K all 63 at 0xFF, q6_K -1 / -128 / 127), not the f16 block scales.
    const size_t from = t == DType::kQ4_1                        ? 4
                        : t == DType::kQ4_K || t == DType::kQ5_K ? 4
                        : t == DType::kQ6_K                      ? 0
                                                                 : 2;
    const size_t to = t == DType::kQ6_K ? 208 : blk;
    for (uint8_t fill : {uint8_t{0xFF}, uint8_t{0x80}, uint8_t{0x7F}, uint8_t{0x00}}) {
      auto bytes = test::random_weight_bytes(rng, t, rows, n);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t b = 0; b < n / block_elems(t); ++b) {
          std::memset(bytes.data() + r * rb + b * blk + from, fill, to - from);
        }
      }
      std::vector<uint8_t> packed(bytes.size());
      repack_x16(t, bytes.data(), packed.data(), rows, n);
      const int64_t nx = 9;
      std::vector<float> x(static_cast<size_t>(nx * n));
      for (int64_t i = 0; i < nx; ++i) {
        for (int64_t e = 0; e < n; ++e)
          x[i * n + e] = (i % 3 == 0) ? 1.0f : (i % 3 == 1 ? -1.0f : (e % 2 ? 1.0f : -1.0f));
      }
      const auto xq = quantize_x(t, x, nx, n);
      const size_t xs = vec_dot_row_bytes(t, n);
      std::vector<float> want(static_cast<size_t>(nx * rows));
      x16_dot_fn(t, QDotIsa::kScalar)(packed.data(), rb, rows, xq.data(), xs, nx, n, want.data(),
                                      rows);
      for (int64_t i = 0; i < nx; ++i) {
        for (int64_t r = 0; r < rows; ++r) {
          const float restated_r = restated(t, bytes.data() + r * rb, xq.data() + i * xs, n);
          ASSERT_EQ(0, std::memcmp(&restated_r, &want[i * rows + r], 4)) << dtype_name(t);
        }
      }
      for (QDotIsa isa : {QDotIsa::kAvx2, QDotIsa::kAvx512}) {
        const QDotFn f = x16_dot_fn(t, isa);
        if (f == nullptr) continue;
        for (int64_t batch : {1, 2, 4, 8, 9}) {
          std::vector<float> got(static_cast<size_t>(batch * rows), -5.0f);
          f(packed.data(), rb, rows, xq.data(), xs, batch, n, got.data(), rows);
          ASSERT_EQ(0, std::memcmp(got.data(), want.data(), got.size() * 4))
              << dtype_name(t) << " " << quant_dot_isa_name(isa) << " fill " << int{fill}
              << " batch " << batch;
        }
      }
    }
  }
}

// matmul and matmul_rows on repacked weights, every kernel table: each row has the bits of the
// one-row product for every n (decode and prefill tiles) and thread count; weight_row_to_f32 and
// the f64 twin read the repacked rows as the row layout's.
TEST(Repack, MatmulOnRepackedWeights) {
  std::mt19937 rng(17);
  for (DType t : kX16Types) {
    // 7 groups: a partial last tile of 96 rows.
    const int64_t rows = 112, cols = k_quant(t) ? 512 : 96;
    const auto bytes = test::random_weight_bytes(rng, t, rows, cols);
    std::vector<uint8_t> packed(bytes.size());
    repack_x16(t, bytes.data(), packed.data(), rows, cols);
    WeightMatrix w_rows;
    w_rows.dtype = t;
    w_rows.data = bytes.data();
    w_rows.rows = rows;
    w_rows.cols = cols;
    w_rows.row_bytes = dtype_row_bytes(t, cols);
    w_rows.name = "rows";
    WeightMatrix w = w_rows;
    w.data = packed.data();
    w.layout = WeightLayout::kX16;
    w.name = "x16";
    std::vector<float> a(static_cast<size_t>(cols)), b(static_cast<size_t>(cols));
    for (int64_t r : {int64_t{0}, int64_t{17}, rows - 1}) {
      weight_row_to_f32(w, r, a.data());
      weight_row_to_f32(w_rows, r, b.data());
      ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * 4)) << dtype_name(t) << " " << r;
    }
    std::vector<const KernelTable*> tables;
    for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
      if (const KernelTable* k = kernel_table(isa)) tables.push_back(k);
    }
    for (int64_t n : {1, 5, 8, 12, 33}) {
      const int64_t x_stride = cols + 3, y_stride = rows + 5;
      const auto x = random_floats(rng, static_cast<size_t>(n * x_stride));
      std::vector<float> ref(static_cast<size_t>(n * y_stride)), ref_rows = ref;
      matmul_scalar(x.data(), n, x_stride, w, ref.data(), y_stride);
      matmul_scalar(x.data(), n, x_stride, w_rows, ref_rows.data(), y_stride);
      ASSERT_EQ(0, std::memcmp(ref.data(), ref_rows.data(), ref.size() * 4)) << dtype_name(t);
      for (const KernelTable* k : tables) {
        SCOPED_TRACE(testing::Message() << dtype_name(t) << " " << k->name << " n=" << n);
        std::vector<float> full(static_cast<size_t>(n * y_stride), -7.0f);
        std::vector<float> rows1 = full, rows2 = full;
        set_num_threads(1);
        matmul_with(*k, x.data(), n, x_stride, w, full.data(), y_stride);
        matmul_rows_with(*k, x.data(), n, x_stride, w, rows1.data(), y_stride);
        set_num_threads(2);
        matmul_rows_with(*k, x.data(), n, x_stride, w, rows2.data(), y_stride);
        set_num_threads(0);
        EXPECT_EQ(0, std::memcmp(full.data(), rows1.data(), full.size() * 4));
        EXPECT_EQ(0, std::memcmp(rows1.data(), rows2.data(), rows1.size() * 4));
        double err = 0, pow = 0;
        for (int64_t i = 0; i < n; ++i) {
          std::vector<float> alone(static_cast<size_t>(rows));
          matmul_with(*k, x.data() + i * x_stride, 1, x_stride, w, alone.data(), rows);
          ASSERT_EQ(0, std::memcmp(alone.data(), full.data() + i * y_stride, rows * 4)) << i;
          for (int64_t r = rows; r < y_stride; ++r) EXPECT_EQ(full[i * y_stride + r], -7.0f);
          for (int64_t r = 0; r < rows; ++r) {
            const double d = full[i * y_stride + r] - ref[i * y_stride + r];
            err += d * d;
            pow += static_cast<double>(ref[i * y_stride + r]) * ref[i * y_stride + r];
          }
        }
        EXPECT_LT(err / pow, 1e-3);  // 8-bit activations vs the f64 twin
      }
    }
  }
}

// matmul_shared_x / matmul_rows_shared_x: several outputs of one x (x16 of one type and width: one
// region over all their tiles; anything else: one call each) give each output the bits of its own
// matmul / matmul_rows call, for decode and prefill tile sizes and 1 or 2 threads.
TEST(Repack, SharedXEqualsOneCallPerOutput) {
  std::mt19937 rng(23);
  int64_t cols = 96;
  struct Weight {
    std::vector<uint8_t> bytes;
    WeightMatrix w;
  };
  auto make = [&](DType t, int64_t rows, bool repacked) {
    Weight m;
    m.bytes = test::random_weight_bytes(rng, t, rows, cols);
    if (repacked) repack_x16(t, m.bytes.data(), m.bytes.data(), rows, cols);
    m.w.dtype = t;
    m.w.layout = repacked ? WeightLayout::kX16 : WeightLayout::kRows;
    m.w.rows = rows;
    m.w.cols = cols;
    m.w.row_bytes = dtype_row_bytes(t, cols);
    m.w.name = "w" + std::to_string(rows);
    return m;
  };
  for (DType t : kX16Types) {
    cols = k_quant(t) ? 512 : 96;
    std::vector<Weight> ws;
    ws.push_back(make(t, 112, true));  // 7 groups: partial tiles at both tile sizes
    ws.push_back(make(t, 48, true));
    ws.push_back(make(t, 32, true));
    ws.push_back(make(t, 32, false));  // row layout: the mixed list falls back
    for (Weight& m : ws) m.w.data = m.bytes.data();
    for (const bool mixed : {false, true}) {
      const size_t count = mixed ? 4 : 3;
      for (int64_t n : {1, 3, 8, 12}) {
        for (int threads : {1, 2}) {
          SCOPED_TRACE(testing::Message() << dtype_name(t) << " n=" << n << " mixed=" << mixed
                                          << " threads=" << threads);
          const int64_t x_stride = cols + 5;
          const auto x = random_floats(rng, static_cast<size_t>(n * x_stride));
          for (const bool rows_form : {false, true}) {
            std::vector<std::vector<float>> got(count), want(count);
            std::vector<MatmulOut> outs;
            for (size_t o = 0; o < count; ++o) {
              const int64_t y_stride = ws[o].w.rows + 3;
              got[o].assign(static_cast<size_t>(n * y_stride), -3.0f);
              want[o] = got[o];
              outs.push_back({&ws[o].w, got[o].data(), y_stride});
            }
            set_num_threads(threads);
            if (rows_form) {
              matmul_rows_shared_x(x.data(), n, x_stride, outs);
            } else {
              matmul_shared_x(x.data(), n, x_stride, outs);
            }
            for (size_t o = 0; o < count; ++o) {
              if (rows_form) {
                matmul_rows(x.data(), n, x_stride, ws[o].w, want[o].data(), outs[o].y_stride);
              } else {
                matmul(x.data(), n, x_stride, ws[o].w, want[o].data(), outs[o].y_stride);
              }
              EXPECT_EQ(0, std::memcmp(got[o].data(), want[o].data(), got[o].size() * 4))
                  << "output " << o << (rows_form ? " (rows)" : "");
            }
            set_num_threads(0);
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace fkv
