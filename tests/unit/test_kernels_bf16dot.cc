// The avx512+bf16dot kernels (vdpbf16ps, bf16 activations) against their scalar twin
// matmul_bf16dot_scalar, on sizes that hit every tail: n not a multiple of the 32-row panel, odd
// cols and cols not a multiple of 32, rows not a multiple of the 12- and 4-row register blocks or
// of the 24-row tile. Skipped where the CPU lacks AVX512_BF16 (the dispatch and rounding-twin
// tests run everywhere).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "kernels/dispatch.h"
#include "kernels/matmul.h"
#include "quant/quant_dot.h"

namespace fkv {
namespace {

constexpr uint16_t kBf16NaN = 0x7fc0;

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

struct Bf16Weight {
  std::vector<uint8_t> bytes;
  WeightMatrix w;
};

// Values U(-1, 1); the row_pad halves past cols in each row are NaN, so a kernel that reads past
// the row's end (or into the next row's first element for odd cols) shows up as NaN.
Bf16Weight make_weight(std::mt19937& rng, int64_t rows, int64_t cols, int64_t row_pad) {
  Bf16Weight b;
  const int64_t stride = cols + row_pad;
  b.bytes.resize(static_cast<size_t>(rows * stride * 2));
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < stride; ++c) {
      const uint16_t h = c < cols ? f32_to_bf16(u(rng)) : kBf16NaN;
      std::memcpy(b.bytes.data() + 2 * (r * stride + c), &h, 2);
    }
  }
  b.w.dtype = DType::kBF16;
  b.w.data = b.bytes.data();
  b.w.rows = rows;
  b.w.cols = cols;
  b.w.row_bytes = static_cast<size_t>(stride * 2);
  b.w.name = "bf16dot";
  return b;
}

// How far the kernels may be from the twin. The twin and the kernels multiply the same bf16
// values (x rounded by the same rule, weight denormals as zero), and a product of two bf16
// values (8 significant bits each) is exact in f32, so they differ only in how the products are
// summed: the twin in double, the kernels in f32 chains of at most cols products plus the 2-way
// accumulator add and 4-level horizontal sum. For m terms summed in f32 in any order,
// |fl(sum) - sum| <= gamma(m) * sum |p_i| with gamma(m) = m u / (1 - m u), u = 2^-24 (Higham,
// Accuracy and Stability of Numerical Algorithms, 2nd ed., eq. 4.4); each f32 addition may also
// flush a denormal (< 2^-126) to zero; the twin's own double sum rounded once to f32 adds
// u * |ref|.
double tolerance(int64_t cols, double mag, double ref) {
  const double u = std::ldexp(1.0, -24);
  const double m = static_cast<double>(cols + 8);
  return m * u / (1.0 - m * u) * mag + m * std::ldexp(1.0, -126) + u * std::fabs(ref);
}

// sum_c |bf16(x_c) * w_c|, the condition-free scale of each output.
std::vector<double> magnitudes(const std::vector<float>& x, int64_t n, int64_t x_stride,
                               const WeightMatrix& w) {
  std::vector<double> mag(static_cast<size_t>(n * w.rows));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t r = 0; r < w.rows; ++r) {
      double s = 0;
      for (int64_t c = 0; c < w.cols; ++c) {
        uint16_t h;
        std::memcpy(&h, w.row(r) + 2 * c, 2);
        s += std::fabs(static_cast<double>(bf16_to_f32(round_to_bf16_dot(x[i * x_stride + c]))) *
                       bf16_to_f32(h));
      }
      mag[i * w.rows + r] = s;
    }
  return mag;
}

// Bit patterns whose rounding vcvtne2ps2bf16 fixes (checked on a Zen 5 against the instruction):
// ties go to even, denormals become signed zero, NaN stays a quiet NaN, overflow gives Inf.
struct RoundCase {
  uint32_t in;
  uint16_t out;
};
const RoundCase kRoundCases[] = {
    {0x00000001, 0x0000}, {0x007fffff, 0x0000}, {0x80000001, 0x8000}, {0x807fffff, 0x8000},
    {0x00800000, 0x0080}, {0x0080ffff, 0x0081}, {0x3f808000, 0x3f80}, {0x3f818000, 0x3f82},
    {0x3f808001, 0x3f81}, {0x3f7fffff, 0x3f80}, {0x7f7fffff, 0x7f80}, {0x7f800000, 0x7f80},
    {0xff800000, 0xff80}, {0x7fc00001, 0x7fc0}, {0x7f800001, 0x7fc0}, {0x00000000, 0x0000},
};

TEST(Bf16Dot, RoundingTwinFollowsTheInstructionsRules) {
  for (const RoundCase& c : kRoundCases) {
    EXPECT_EQ(round_to_bf16_dot(float_of(c.in)), c.out) << std::hex << c.in;
  }
}

TEST(Bf16Dot, DispatchHonoursTheSwitches) {
  const KernelTable* bf = bf16dot_kernel_table();
  const KernelTable* avx512 = kernel_table(Isa::kAvx512);
  if (bf != nullptr) {
    EXPECT_STREQ(bf->name, "avx512+bf16dot");
    EXPECT_EQ(&pick_kernels_for(nullptr, nullptr), bf);
    EXPECT_EQ(&pick_kernels_for("avx512bf16", nullptr), bf);
    EXPECT_EQ(&pick_kernels_for(nullptr, "1"), bf);
  } else {
    // Without AVX512_BF16 nothing picks the bf16-dot kernels, whatever the variables say.
    EXPECT_EQ(pick_kernels_for(nullptr, nullptr).gemm_bf16dot, nullptr);
    EXPECT_EQ(pick_kernels_for("avx512bf16", "1").gemm_bf16dot, nullptr);
  }
  // FKV_BF16_DOT=0 and FKV_ISA=avx512 give the exact f32 kernels.
  if (avx512 != nullptr) {
    EXPECT_EQ(&pick_kernels_for(nullptr, "0"), avx512);
    EXPECT_EQ(&pick_kernels_for("avx512", nullptr), avx512);
    EXPECT_EQ(&pick_kernels_for("avx512bf16", "0"), avx512);
  }
  if (const KernelTable* avx2 = kernel_table(Isa::kAvx2)) {
    EXPECT_EQ(&pick_kernels_for("avx2", nullptr), avx2);
  }
  EXPECT_EQ(&pick_kernels_for("scalar", nullptr), &scalar_kernel_table());
  for (const KernelTable* k : {&pick_kernels_for(nullptr, "0"), &scalar_kernel_table()}) {
    EXPECT_EQ(k->gemm_bf16dot, nullptr);
    EXPECT_EQ(k->gemv_bf16dot, nullptr);
  }
}

TEST(Bf16Dot, RoundRowMatchesTheTwinWithZeroPadding) {
  const KernelTable* k = bf16dot_kernel_table();
  if (k == nullptr) GTEST_SKIP() << "CPU lacks AVX512_BF16";
  std::mt19937 rng(5);
  std::uniform_int_distribution<uint32_t> any_bits;
  for (int64_t cols : {1, 2, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100}) {
    std::vector<float> x(static_cast<size_t>(cols));
    for (int64_t c = 0; c < cols; ++c) {
      // Special patterns, then random bits (every exponent, denormals and NaNs included).
      x[c] = float_of(c < 16 ? kRoundCases[c].in : any_bits(rng));
    }
    const int64_t padded = (cols + 31) / 32 * 32;
    std::vector<uint16_t> xb(static_cast<size_t>(padded), 0x1234);
    k->round_row_bf16(x.data(), cols, xb.data());
    for (int64_t c = 0; c < padded; ++c) {
      const uint16_t want = c < cols ? round_to_bf16_dot(x[c]) : 0;
      ASSERT_EQ(xb[c], want) << "cols=" << cols << " c=" << c << " x bits " << std::hex
                             << (c < cols ? bits_of(x[c]) : 0);
    }
  }
}

TEST(Bf16Dot, PanelsHoldRoundedPairs) {
  const KernelTable* k = bf16dot_kernel_table();
  if (k == nullptr) GTEST_SKIP() << "CPU lacks AVX512_BF16";
  std::mt19937 rng(6);
  std::uniform_real_distribution<float> u(-3.0f, 3.0f);
  for (int64_t n : {1, 31, 32, 45}) {
    for (int64_t cols : {1, 6, 33}) {
      const int64_t x_stride = cols + 2;
      std::vector<float> x(static_cast<size_t>(n * x_stride));
      for (auto& v : x) v = u(rng);
      const int64_t pairs = bf16_pairs(cols), panels = (n + kXPanel - 1) / kXPanel;
      std::vector<uint32_t> xp(static_cast<size_t>(panels * pairs * kXPanel), 0xdeadbeef);
      pack_x_bf16_panels(*k, x.data(), n, x_stride, cols, xp.data());
      for (int64_t i = 0; i < panels * kXPanel; ++i) {
        for (int64_t q = 0; q < pairs; ++q) {
          auto half = [&](int64_t c) -> uint32_t {
            return i < n && c < cols ? round_to_bf16_dot(x[i * x_stride + c]) : 0;
          };
          const uint32_t want = half(2 * q) | half(2 * q + 1) << 16;
          ASSERT_EQ(xp[(i / kXPanel) * pairs * kXPanel + q * kXPanel + i % kXPanel], want)
              << "n=" << n << " cols=" << cols << " i=" << i << " q=" << q;
        }
      }
    }
  }
}

TEST(Bf16Dot, MatmulMatchesTheScalarTwin) {
  const KernelTable* k = bf16dot_kernel_table();
  if (k == nullptr) GTEST_SKIP() << "CPU lacks AVX512_BF16";
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  double worst = 0;  // largest |got - ref| / tolerance seen, for the log
  // n: 1 (decode), below the 8-row panel switch, half panels (<= 16 rows), one short of / over a
  // full panel, several panels with a half, a short (by gemv) and a full last one.
  for (int64_t n : {1, 2, 7, 8, 15, 16, 17, 31, 32, 33, 39, 48, 64, 70}) {
    for (int64_t cols : {1, 2, 3, 31, 33, 64, 95, 130}) {
      for (int64_t rows : {1, 3, 13, 25, 61}) {
        SCOPED_TRACE(testing::Message() << "n=" << n << " cols=" << cols << " rows=" << rows);
        const Bf16Weight bw = make_weight(rng, rows, cols, cols % 2 == 0 ? 0 : 3);
        const int64_t x_stride = cols + 5, y_stride = rows + 3;
        std::vector<float> x(static_cast<size_t>(n * x_stride));
        for (auto& v : x) v = u(rng);
        std::vector<float> ref(static_cast<size_t>(n * y_stride), -5.0f);
        matmul_bf16dot_scalar(x.data(), n, x_stride, bw.w, ref.data(), y_stride);
        const auto mag = magnitudes(x, n, x_stride, bw.w);
        std::vector<float> got(static_cast<size_t>(n * y_stride), -7.0f), got2 = got;
        set_num_threads(1);
        matmul_with(*k, x.data(), n, x_stride, bw.w, got.data(), y_stride);
        set_num_threads(2);
        matmul_with(*k, x.data(), n, x_stride, bw.w, got2.data(), y_stride);
        set_num_threads(0);
        ASSERT_EQ(0, std::memcmp(got.data(), got2.data(), got.size() * 4)) << "thread count";
        for (int64_t i = 0; i < n; ++i) {
          for (int64_t r = 0; r < rows; ++r) {
            const double g = got[i * y_stride + r], want = ref[i * y_stride + r];
            const double tol = tolerance(cols, mag[i * rows + r], want);
            ASSERT_LE(std::fabs(g - want), tol) << "i=" << i << " r=" << r << " got " << g;
            worst = std::max(worst, std::fabs(g - want) / tol);
          }
          for (int64_t r = rows; r < y_stride; ++r) ASSERT_EQ(got[i * y_stride + r], -7.0f);
        }
        // Rows of a last partial panel under 8 rows are the one-row (decode) product, bit for bit.
        if (n > 1 && n % kXPanel < 8) {
          for (int64_t i = n / kXPanel * kXPanel; i < n; ++i) {
            std::vector<float> alone(static_cast<size_t>(rows));
            matmul_with(*k, x.data() + i * x_stride, 1, x_stride, bw.w, alone.data(), rows);
            ASSERT_EQ(0, std::memcmp(alone.data(), got.data() + i * y_stride, rows * 4));
          }
        }
      }
    }
  }
  std::printf("worst |got - twin| / tolerance: %.3f\n", worst);
}

// A row's bits depend only on where it sits: in a whole panel, or a last partial panel of >= 8
// rows (the same chains, one vector per weight row when <= 16), it gets the panel bits whatever
// n is; in a last partial panel of < 8 rows, the 1-row product's. So prefill chunks of whole
// panels give the bits of one chunk.
TEST(Bf16Dot, RowBitsDependOnlyOnThePanelFill) {
  const KernelTable* k = bf16dot_kernel_table();
  if (k == nullptr) GTEST_SKIP() << "CPU lacks AVX512_BF16";
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const int64_t cols = 77, rows = 37, n_max = 64;
  const Bf16Weight bw = make_weight(rng, rows, cols, 1);
  std::vector<float> x(static_cast<size_t>(n_max * cols));
  for (auto& v : x) v = u(rng);
  std::vector<float> full(static_cast<size_t>(n_max * rows));
  matmul_with(*k, x.data(), n_max, cols, bw.w, full.data(), rows);
  for (int64_t n : {1, 3, 7, 8, 9, 16, 17, 32, 33, 39, 40, 48, 63}) {
    std::vector<float> part(static_cast<size_t>(n * rows));
    matmul_with(*k, x.data(), n, cols, bw.w, part.data(), rows);
    const int64_t whole = n / kXPanel * kXPanel;
    const bool tail_by_gemv = n - whole < 8;
    for (int64_t i = 0; i < n; ++i) {
      std::vector<float> want(full.begin() + i * rows, full.begin() + (i + 1) * rows);
      if (i >= whole && tail_by_gemv) {
        matmul_with(*k, x.data() + i * cols, 1, cols, bw.w, want.data(), rows);
      }
      ASSERT_EQ(0, std::memcmp(part.data() + i * rows, want.data(), rows * 4))
          << "n=" << n << " row " << i;
    }
  }
}

// Long rows: the bound grows with cols, so check it is still met (and not vacuous) where the f32
// chains are long, at a Llama-like width.
TEST(Bf16Dot, LongRowsMeetTheBound) {
  const KernelTable* k = bf16dot_kernel_table();
  if (k == nullptr) GTEST_SKIP() << "CPU lacks AVX512_BF16";
  std::mt19937 rng(8);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const int64_t cols = 2049, rows = 29;
  const Bf16Weight bw = make_weight(rng, rows, cols, 1);
  for (int64_t n : {1, 40}) {
    std::vector<float> x(static_cast<size_t>(n * cols));
    for (auto& v : x) v = u(rng);
    std::vector<float> ref(static_cast<size_t>(n * rows)), got(ref.size());
    matmul_bf16dot_scalar(x.data(), n, cols, bw.w, ref.data(), rows);
    matmul_with(*k, x.data(), n, cols, bw.w, got.data(), rows);
    const auto mag = magnitudes(x, n, cols, bw.w);
    double worst = 0;
    for (size_t e = 0; e < got.size(); ++e) {
      const double tol = tolerance(cols, mag[e], ref[e]);
      ASSERT_LE(std::fabs(got[e] - ref[e]), tol) << "element " << e;
      worst = std::max(worst, std::fabs(got[e] - ref[e]) / tol);
    }
    std::printf("n=%lld cols=%lld: worst |got - twin| / tolerance %.4f\n",
                static_cast<long long>(n), static_cast<long long>(cols), worst);
  }
}

// The twin itself: rounding x to bf16 is the only change from the exact product, so its distance
// from matmul_scalar is that of a 2^-9 relative perturbation of x (and zero when x is already
// bf16).
TEST(Bf16Dot, TwinEqualsExactProductOnBf16Activations) {
  std::mt19937 rng(9);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const int64_t n = 3, cols = 37, rows = 5;
  const Bf16Weight bw = make_weight(rng, rows, cols, 0);
  std::vector<float> x(static_cast<size_t>(n * cols));
  for (auto& v : x) v = bf16_to_f32(f32_to_bf16(u(rng)));  // exactly representable
  std::vector<float> twin(static_cast<size_t>(n * rows)), exact(twin.size());
  matmul_bf16dot_scalar(x.data(), n, cols, bw.w, twin.data(), rows);
  matmul_scalar(x.data(), n, cols, bw.w, exact.data(), rows);
  EXPECT_EQ(0, std::memcmp(twin.data(), exact.data(), twin.size() * 4));
}

// Only bf16 weights take the bf16-dot kernels: every other dtype gives the avx512 table's bits.
TEST(Bf16Dot, OtherDtypesKeepTheAvx512Bits) {
  const KernelTable* k = bf16dot_kernel_table();
  if (k == nullptr) GTEST_SKIP() << "CPU lacks AVX512_BF16";
  const KernelTable* avx512 = kernel_table(Isa::kAvx512);
  ASSERT_NE(avx512, nullptr);
  std::mt19937 rng(10);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const int64_t rows = 30, cols = 64;
  for (DType t : {DType::kF32, DType::kF16, DType::kQ8_0}) {
    std::vector<float> wf(static_cast<size_t>(rows * cols));
    for (auto& v : wf) v = u(rng);
    std::vector<uint8_t> bytes(dtype_row_bytes(t, cols) * rows);
    for (int64_t r = 0; r < rows; ++r) {
      uint8_t* dst = bytes.data() + r * dtype_row_bytes(t, cols);
      const float* src = wf.data() + r * cols;
      if (t == DType::kF32) {
        std::memcpy(dst, src, cols * 4);
      } else if (t == DType::kF16) {
        for (int64_t c = 0; c < cols; ++c) {
          const uint16_t h = f32_to_f16(src[c]);
          std::memcpy(dst + 2 * c, &h, 2);
        }
      } else {
        quantize_row_q8_0_ref(src, dst, cols);  // a q8_0 weight row is q8_0 blocks
      }
    }
    WeightMatrix w;
    w.dtype = t;
    w.data = bytes.data();
    w.rows = rows;
    w.cols = cols;
    w.row_bytes = dtype_row_bytes(t, cols);
    w.name = "other";
    for (int64_t n : {1, 40}) {
      std::vector<float> x(static_cast<size_t>(n * cols));
      for (auto& v : x) v = u(rng);
      std::vector<float> a(static_cast<size_t>(n * rows)), b(a.size());
      matmul_with(*k, x.data(), n, cols, w, a.data(), rows);
      matmul_with(*avx512, x.data(), n, cols, w, b.data(), rows);
      EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * 4)) << dtype_name(t) << " n=" << n;
    }
  }
}

}  // namespace
}  // namespace fkv
