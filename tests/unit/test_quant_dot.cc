// Quantised dot products (quant/quant_dot.h):
//  - activation quantisers against a plain restatement of ggml's *_ref code (exact bytes),
//  - every SIMD kernel against its scalar twin (integer parts exact; float order differs, so within
//    kSimdTol of the sum of |block terms|), and independent of how rows are batched (bitwise),
//  - every kernel against a double-precision product of the dequantised operands.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "quant/quant.h"
#include "quant/quant_dot.h"

namespace fkv {
namespace {

// SIMD vs scalar: both sum the same exact block terms in f32 in different orders, so they differ
// by a few f32 roundings of partial sums: bound |a - b| <= kSimdTol * T, with
// T = sum over blocks of |d_w d_x| sum_j |q_w,j q_x,j| + |m_w s_x| (the magnitudes summed).
constexpr double kSimdTol = 1e-6;
// Kernel vs double product of the dequantised operands: the same, plus the f32 rounding of the
// dequantised weights inside dequantize_row.
constexpr double kDequantTol = 1e-6;

const DType kDotTypes[] = {DType::kQ4_0, DType::kQ4_1, DType::kQ5_0, DType::kQ5_1, DType::kQ8_0,
                           DType::kQ2_K, DType::kQ3_K, DType::kQ4_K, DType::kQ5_K, DType::kQ6_K};

bool is_k(DType t) { return vec_dot_type(t) == DType::kQ8_K; }

// Byte offsets of a block's f16 d and dmin (-1: none).
int d_offset(DType t) {
  switch (t) {
    case DType::kQ2_K:
      return 80;
    case DType::kQ3_K:
      return 108;
    case DType::kQ6_K:
      return 208;
    default:
      return 0;
  }
}
int dmin_offset(DType t) {
  switch (t) {
    case DType::kQ4_1:
    case DType::kQ5_1:
    case DType::kQ4_K:
    case DType::kQ5_K:
      return 2;
    case DType::kQ2_K:
      return 82;
    default:
      return -1;
  }
}

float load_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

std::vector<float> random_floats(std::mt19937& rng, int64_t n, float scale) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = scale * u(rng) * u(rng);  // heavier centre, like activations
  return x;
}

// Random weight rows: random codes, f16 scales (and mins) set to moderate values per block.
std::vector<uint8_t> random_weights(std::mt19937& rng, DType t, int64_t rows, int64_t cols) {
  const auto info = *dtype_info(t);
  std::vector<uint8_t> bytes(dtype_row_bytes(t, cols) * static_cast<size_t>(rows));
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> u(0.001f, 0.05f);
  for (auto& b : bytes) b = static_cast<uint8_t>(byte(rng));
  const float kscale = is_k(t) ? 0.05f : 1.0f;  // k-quant codes carry 6-bit scales on top
  for (size_t off = 0; off < bytes.size(); off += info.block_bytes) {
    const uint16_t d = f32_to_f16(kscale * u(rng));
    std::memcpy(bytes.data() + off + d_offset(t), &d, 2);
    if (dmin_offset(t) >= 0) {
      const float m = t == DType::kQ4_1 || t == DType::kQ5_1 ? -8.0f * u(rng) : kscale * u(rng);
      const uint16_t mh = f32_to_f16(m);
      std::memcpy(bytes.data() + off + dmin_offset(t), &mh, 2);
    }
  }
  return bytes;
}

// ---- (1) activation quantisers --------------------------------------------------------------

// Restatement of quantize_row_q8_{0,1}_ref for one block: d = amax / 127, id = 1 / d, q = roundf.
void restate_q8_block(const float* x, int8_t* q, float* d_out, int* sum_out) {
  float amax = 0.0f;
  for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  int sum = 0;
  for (int j = 0; j < 32; ++j) {
    q[j] = static_cast<int8_t>(std::lround(x[j] * id));  // half away from zero, like roundf
    sum += q[j];
  }
  *d_out = d;
  *sum_out = sum;
}

std::vector<std::vector<float>> quantiser_inputs() {
  std::mt19937 rng(1);
  std::vector<std::vector<float>> rows;
  rows.push_back(random_floats(rng, 512, 3.0f));
  rows.push_back(std::vector<float>(512, 0.0f));  // all-zero blocks: d = 0, q = 0
  // amax = 127 makes d = 1 and id = 1 exactly: x.5 ties must round away from zero (q8_0/q8_1)
  // and to even (q8_K's nearest_int, where the scale is -127 / max = -1).
  std::vector<float> ties(512);
  for (int i = 0; i < 512; ++i)
    ties[i] = (i % 32 == 0) ? 127.0f : static_cast<float>(i % 17) - 8.5f;
  rows.push_back(ties);
  std::vector<float> neg = random_floats(rng, 512, 1e-3f);
  neg[300] = -5.0f;  // q8_K: the signed extreme is negative
  rows.push_back(neg);
  return rows;
}

TEST(QuantDot, Q8_0MatchesRestatement) {
  for (const auto& x : quantiser_inputs()) {
    const int64_t n = static_cast<int64_t>(x.size());
    std::vector<uint8_t> y(static_cast<size_t>(n / 32) * 34);
    quantize_row_q8_0_ref(x.data(), y.data(), n);
    for (int64_t b = 0; b < n / 32; ++b) {
      int8_t q[32];
      float d;
      int sum;
      restate_q8_block(x.data() + 32 * b, q, &d, &sum);
      const uint8_t* blk = y.data() + 34 * b;
      EXPECT_EQ(f32_to_f16(d), blk[0] | (blk[1] << 8)) << "block " << b;
      EXPECT_EQ(0, std::memcmp(q, blk + 2, 32)) << "block " << b;
    }
  }
  // The ties row: 0.5 -> 1, -0.5 -> -1 (half away from zero).
  std::vector<float> x(32, 0.5f);
  x[0] = 127.0f;
  x[1] = -0.5f;
  x[2] = -2.5f;
  std::vector<uint8_t> y(34);
  quantize_row_q8_0_ref(x.data(), y.data(), 32);
  EXPECT_EQ(static_cast<int8_t>(y[2 + 3]), 1);
  EXPECT_EQ(static_cast<int8_t>(y[2 + 1]), -1);
  EXPECT_EQ(static_cast<int8_t>(y[2 + 2]), -3);
}

TEST(QuantDot, Q8_1MatchesRestatement) {
  for (const auto& x : quantiser_inputs()) {
    const int64_t n = static_cast<int64_t>(x.size());
    std::vector<uint8_t> y(static_cast<size_t>(n / 32) * 36);
    quantize_row_q8_1_ref(x.data(), y.data(), n);
    for (int64_t b = 0; b < n / 32; ++b) {
      int8_t q[32];
      float d;
      int sum;
      restate_q8_block(x.data() + 32 * b, q, &d, &sum);
      const uint8_t* blk = y.data() + 36 * b;
      EXPECT_EQ(f32_to_f16(d), blk[0] | (blk[1] << 8)) << "block " << b;
      // s is d (unrounded f32) times the integer sum, rounded to f16 once.
      EXPECT_EQ(f32_to_f16(static_cast<float>(sum) * d), blk[2] | (blk[3] << 8)) << "block " << b;
      EXPECT_EQ(0, std::memcmp(q, blk + 4, 32)) << "block " << b;
    }
  }
}

TEST(QuantDot, Q8_KMatchesRestatement) {
  for (const auto& x : quantiser_inputs()) {
    const int64_t n = static_cast<int64_t>(x.size());
    std::vector<uint8_t> y(static_cast<size_t>(n / 256) * 292);
    quantize_row_q8_K_ref(x.data(), y.data(), n);
    for (int64_t b = 0; b < n / 256; ++b) {
      const float* xb = x.data() + 256 * b;
      const uint8_t* blk = y.data() + 292 * b;
      float amax = 0.0f, max = 0.0f;
      for (int j = 0; j < 256; ++j) {
        if (std::fabs(xb[j]) > amax) {
          amax = std::fabs(xb[j]);
          max = xb[j];
        }
      }
      float d;
      std::memcpy(&d, blk, 4);
      std::vector<int8_t> q(256, 0);
      float want_d = 0.0f;
      if (amax != 0.0f) {
        const float iscale = -127.0f / max;
        for (int j = 0; j < 256; ++j) {
          // Round half to even (the default rounding mode), capped at 127.
          q[j] = static_cast<int8_t>(std::min(127L, std::lrint(iscale * xb[j])));
        }
        want_d = 1.0f / iscale;
      }
      EXPECT_EQ(0, std::memcmp(&want_d, &d, 4)) << "block " << b;
      EXPECT_EQ(0, std::memcmp(q.data(), blk + 4, 256)) << "block " << b;
      for (int g = 0; g < 16; ++g) {
        int sum = 0;
        for (int j = 0; j < 16; ++j) sum += q[16 * g + j];
        int16_t got;
        std::memcpy(&got, blk + 260 + 2 * g, 2);
        EXPECT_EQ(sum, got) << "block " << b << " group " << g;
      }
    }
  }
  // Ties: max = 127 -> iscale = -1; -(i % 17 - 8.5) at .5 rounds to even.
  std::vector<float> x(256, 0.0f);
  x[0] = 127.0f;
  x[1] = 2.5f;   // -2.5 -> -2
  x[2] = -3.5f;  //  3.5 ->  4
  std::vector<uint8_t> y(292);
  quantize_row_q8_K_ref(x.data(), y.data(), 256);
  EXPECT_EQ(static_cast<int8_t>(y[4 + 0]), -127);
  EXPECT_EQ(static_cast<int8_t>(y[4 + 1]), -2);
  EXPECT_EQ(static_cast<int8_t>(y[4 + 2]), 4);
}

// ggml-cpu's x86 quantize_row_q8_{0,1}: id = 127 / amax, round half to even, restated with the
// 1.5 * 2^23 trick instead of nearbyint.
void restate_q8_x86_block(const float* x, int8_t* q, float* d_out, int* sum_out) {
  float amax = 0.0f;
  for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
  int sum = 0;
  for (int j = 0; j < 32; ++j) {
    volatile float v = x[j] * id;
    volatile float r = (v + 12582912.0f) - 12582912.0f;
    q[j] = static_cast<int8_t>(r);
    sum += q[j];
  }
  *d_out = amax / 127.0f;
  *sum_out = sum;
}

TEST(QuantDot, X86RoundingMatchesRestatementAndIsTheDefault) {
  for (const auto& x : quantiser_inputs()) {
    const int64_t n = static_cast<int64_t>(x.size());
    std::vector<uint8_t> y0(static_cast<size_t>(n / 32) * 34), y1(static_cast<size_t>(n / 32) * 36);
    quantize_row_q8_0_x86(x.data(), y0.data(), n);
    quantize_row_q8_1_x86(x.data(), y1.data(), n);
    for (int64_t b = 0; b < n / 32; ++b) {
      int8_t q[32];
      float d;
      int sum;
      restate_q8_x86_block(x.data() + 32 * b, q, &d, &sum);
      const uint8_t* b0 = y0.data() + 34 * b;
      const uint8_t* b1 = y1.data() + 36 * b;
      EXPECT_EQ(f32_to_f16(d), b0[0] | (b0[1] << 8)) << "block " << b;
      EXPECT_EQ(0, std::memcmp(q, b0 + 2, 32)) << "block " << b;
      EXPECT_EQ(f32_to_f16(d), b1[0] | (b1[1] << 8)) << "block " << b;
      EXPECT_EQ(f32_to_f16(d * static_cast<float>(sum)), b1[2] | (b1[3] << 8)) << "block " << b;
      EXPECT_EQ(0, std::memcmp(q, b1 + 4, 32)) << "block " << b;
    }
    if (std::getenv("FKV_Q8_ROUND") == nullptr) {
      std::vector<uint8_t> d0(y0.size()), d1(y1.size());
      quantize_row_for_dot(DType::kQ8_0, x.data(), d0.data(), n);
      quantize_row_for_dot(DType::kQ4_1, x.data(), d1.data(), n);
      EXPECT_EQ(d0, y0);
      EXPECT_EQ(d1, y1);
    }
  }
  // The dispatched (vector) quantiser gives the scalar x86 bytes on many random rows.
  if (std::getenv("FKV_Q8_ROUND") == nullptr) {
    std::mt19937 rng(5);
    for (int rep = 0; rep < 200; ++rep) {
      const auto x = random_floats(rng, 1536, rep % 2 ? 300.0f : 1e-3f);
      std::vector<uint8_t> a0(48 * 34), b0(a0.size()), a1(48 * 36), b1(a1.size());
      quantize_row_q8_0_x86(x.data(), a0.data(), 1536);
      quantize_row_for_dot(DType::kQ4_0, x.data(), b0.data(), 1536);
      quantize_row_q8_1_x86(x.data(), a1.data(), 1536);
      quantize_row_for_dot(DType::kQ5_1, x.data(), b1.data(), 1536);
      ASSERT_EQ(a0, b0) << rep;
      ASSERT_EQ(a1, b1) << rep;
    }
  }
  // Ties at d = 1: half to even (2.5 -> 2, -3.5 -> -4), unlike the *_ref rounding.
  std::vector<float> x(32, 0.0f);
  x[0] = 127.0f;
  x[1] = 2.5f;
  x[2] = -3.5f;
  x[3] = 0.5f;
  std::vector<uint8_t> y(34);
  quantize_row_q8_0_x86(x.data(), y.data(), 32);
  EXPECT_EQ(static_cast<int8_t>(y[2 + 1]), 2);
  EXPECT_EQ(static_cast<int8_t>(y[2 + 2]), -4);
  EXPECT_EQ(static_cast<int8_t>(y[2 + 3]), 0);
}

// ---- (2) + (3) kernels -------------------------------------------------------------------------

// Dequantised activation row (d * q per element) and, for q8_1, the stored s per block.
void dequant_act(DType t, const uint8_t* xq, int64_t n, std::vector<double>* vals,
                 std::vector<double>* s) {
  vals->assign(static_cast<size_t>(n), 0.0);
  s->assign(static_cast<size_t>(n / 32), 0.0);
  if (is_k(t)) {
    for (int64_t b = 0; b < n / 256; ++b) {
      const uint8_t* blk = xq + 292 * b;
      float d;
      std::memcpy(&d, blk, 4);
      for (int j = 0; j < 256; ++j) (*vals)[256 * b + j] = d * static_cast<int8_t>(blk[4 + j]);
    }
    return;
  }
  const bool q81 = vec_dot_type(t) == DType::kQ8_1;
  const size_t bb = q81 ? 36 : 34;
  const size_t qoff = q81 ? 4 : 2;
  for (int64_t b = 0; b < n / 32; ++b) {
    const uint8_t* blk = xq + bb * b;
    const double d = load_f16(blk);
    if (q81) (*s)[b] = load_f16(blk + 2);
    for (int j = 0; j < 32; ++j) {
      (*vals)[32 * b + j] = d * static_cast<int8_t>(blk[qoff + j]);
    }
  }
}

// |min| subtracted from element e of a k-quant row (q2_K, q4_K, q5_K), else 0: the dequantised
// value d * sc * q - min may cancel, and its f32 rounding scales with the parts.
double k_min(DType t, const uint8_t* w, int64_t e) {
  const uint8_t* b = w + (e / 256) * dtype_info(t)->block_bytes;
  const int r = static_cast<int>(e % 256);
  if (t == DType::kQ2_K) return std::fabs(load_f16(b + 82) * (b[r / 16] >> 4));
  if (t == DType::kQ4_K || t == DType::kQ5_K) {
    const uint8_t* s = b + 4;
    const int j = r / 32;
    const int m = j < 4 ? (s[j + 4] & 63) : ((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    return std::fabs(load_f16(b + 2) * m);
  }
  return 0.0;
}

// Per block: the weight's (q*_1) f16 min m, else 0.
double block_m(DType t, const uint8_t* w, int64_t b) {
  return (t == DType::kQ4_1 || t == DType::kQ5_1) ? load_f16(w + b * dtype_info(t)->block_bytes + 2)
                                                  : 0.0;
}

struct Reference {
  double value;  // sum_j deq(w)_j * deq(x)_j in double (min terms with ggml's stored s)
  double terms;  // the magnitudes summed: sum_j (|d q_w| + |min|) |x_j| (+ |m_w s_x| per block)
};

Reference reference_dot(DType t, const uint8_t* w, const uint8_t* xq, int64_t n) {
  std::vector<float> wf(static_cast<size_t>(n));
  dequantize_row_scalar(t, w, wf.data(), n);
  std::vector<double> xv, s;
  dequant_act(t, xq, n, &xv, &s);
  Reference ref{0.0, 0.0};
  if (is_k(t)) {
    for (int64_t e = 0; e < n; ++e) {
      ref.value += wf[e] * xv[e];
      ref.terms += (std::fabs(wf[e]) + 2 * k_min(t, w, e)) * std::fabs(xv[e]);
    }
    return ref;
  }
  for (int64_t b = 0; b < n / 32; ++b) {
    const double m = block_m(t, w, b);
    double scaled = 0.0, abs_scaled = 0.0;
    for (int j = 0; j < 32; ++j) {
      const size_t e = static_cast<size_t>(32 * b + j);
      // (d q + m) x = d q x + m x: the m x part is replaced by ggml's m * s below.
      scaled += (static_cast<double>(wf[e]) - m) * xv[e];
      abs_scaled += std::fabs((static_cast<double>(wf[e]) - m) * xv[e]);
    }
    ref.value += scaled + m * s[b];
    ref.terms += abs_scaled + std::fabs(m * s[b]);
  }
  return ref;
}

std::vector<uint8_t> quantize_rows(DType t, const std::vector<float>& x, int64_t nx, int64_t n) {
  const size_t stride = vec_dot_row_bytes(t, n);
  std::vector<uint8_t> xq(stride * static_cast<size_t>(nx));
  for (int64_t i = 0; i < nx; ++i) {
    quantize_row_for_dot(t, x.data() + i * n, xq.data() + i * stride, n);
  }
  return xq;
}

TEST(QuantDot, KernelsMatchScalarAndDequantisedProduct) {
  std::mt19937 rng(7);
  std::vector<QDotIsa> isas = {QDotIsa::kScalar};
  if (quant_dot_isa_supported(QDotIsa::kAvx2)) isas.push_back(QDotIsa::kAvx2);
  if (quant_dot_isa_supported(QDotIsa::kAvx512)) isas.push_back(QDotIsa::kAvx512);
  std::string tested;
  for (DType t : kDotTypes) {
    ASSERT_TRUE(has_quant_dot(t)) << dtype_name(t);
    double worst_simd = 0.0, worst_ref = 0.0;  // observed error / T, for the log
    const std::vector<int64_t> lengths =
        is_k(t) ? std::vector<int64_t>{256, 512, 1536} : std::vector<int64_t>{32, 96, 256, 576};
    // x rows: 11 = one group of 8 (paired form) + 1 pair + 1; 14 = 8 + 3 pairs; 4 = 2 pairs (a
    // batched decode of 4 sequences). 19 weight rows: two groups of 8 (decode) + 3.
    for (const auto& [n, nx] : std::vector<std::pair<int64_t, int64_t>>{{lengths[0], 4},
                                                                        {lengths[1], 14},
                                                                        {lengths[1], 11},
                                                                        {lengths[2], 11},
                                                                        {lengths.back(), 11}}) {
      const int64_t rows = 19;
      const auto w = random_weights(rng, t, rows, n);
      const size_t wstride = dtype_row_bytes(t, n);
      const auto x = random_floats(rng, nx * n, 2.0f);
      const auto xq = quantize_rows(t, x, nx, n);
      const size_t xstride = vec_dot_row_bytes(t, n);
      std::vector<float> want(static_cast<size_t>(nx * rows));
      const QDotFn scalar = quant_dot_fn(t, QDotIsa::kScalar);
      ASSERT_NE(scalar, nullptr);
      scalar(w.data(), wstride, rows, xq.data(), xstride, nx, n, want.data(), rows);
      for (QDotIsa isa : isas) {
        const QDotFn f = quant_dot_fn(t, isa);
        ASSERT_NE(f, nullptr) << quant_dot_isa_name(isa) << " " << dtype_name(t);
        std::vector<float> got(static_cast<size_t>(nx * rows));
        f(w.data(), wstride, rows, xq.data(), xstride, nx, n, got.data(), rows);
        for (int64_t i = 0; i < nx; ++i) {
          for (int64_t r = 0; r < rows; ++r) {
            const float g = got[i * rows + r];
            const auto ref = reference_dot(t, w.data() + r * wstride, xq.data() + i * xstride, n);
            const std::string where = std::string(quant_dot_isa_name(isa)) + " " + dtype_name(t) +
                                      " n=" + std::to_string(n) + " i=" + std::to_string(i) +
                                      " r=" + std::to_string(r);
            ASSERT_LE(std::fabs(g - want[i * rows + r]), kSimdTol * ref.terms) << where;
            ASSERT_LE(std::fabs(g - ref.value), kDequantTol * ref.terms) << where;
            worst_simd = std::max(worst_simd, std::fabs(g - want[i * rows + r]) / ref.terms);
            worst_ref = std::max(worst_ref, std::fabs(g - ref.value) / ref.terms);
            // One row at a time gives the very same bits as the batched call.
            float one;
            f(w.data() + r * wstride, wstride, 1, xq.data() + i * xstride, xstride, 1, n, &one, 1);
            ASSERT_EQ(0, std::memcmp(&one, &g, 4)) << where;
          }
        }
        // Decode (one activation row, all weight rows: the grouped-row decode kernels) gives the
        // bits of the batched call too.
        for (int64_t i = 0; i < nx; ++i) {
          std::vector<float> dec(static_cast<size_t>(rows));
          f(w.data(), wstride, rows, xq.data() + i * xstride, xstride, 1, n, dec.data(), 1);
          ASSERT_EQ(0, std::memcmp(dec.data(), got.data() + i * rows, dec.size() * 4))
              << quant_dot_isa_name(isa) << " " << dtype_name(t) << " n=" << n << " i=" << i;
        }
        // The VNNI variant sums the same exact i32 lanes as AVX2: the very same bits.
        if (isa == QDotIsa::kAvx512) {
          std::vector<float> a2(got.size());
          quant_dot_fn(t, QDotIsa::kAvx2)(w.data(), wstride, rows, xq.data(), xstride, nx, n,
                                          a2.data(), rows);
          ASSERT_EQ(0, std::memcmp(a2.data(), got.data(), got.size() * 4)) << dtype_name(t);
        }
      }
    }
    std::printf("%s: max |simd - scalar| / T = %.2e, max |kernel - ref| / T = %.2e\n",
                dtype_name(t), worst_simd, worst_ref);
    tested += std::string(dtype_name(t)) + " ";
  }
  std::printf("quantised dots tested: %s(isas:", tested.c_str());
  for (QDotIsa isa : isas) std::printf(" %s", quant_dot_isa_name(isa));
  std::printf(")\n");
}

// The scalar kernel is ggml's generic C: for q4_1, sumf += (d_w d_x) sumi + m_w s_x in f32, block
// by block. Restated here in f32 with the integer sums computed independently.
TEST(QuantDot, ScalarQ4_1IsGgmlGenericOrder) {
  std::mt19937 rng(3);
  const int64_t n = 576;
  const auto w = random_weights(rng, DType::kQ4_1, 1, n);
  const auto x = random_floats(rng, n, 1.0f);
  const auto xq = quantize_rows(DType::kQ4_1, x, 1, n);
  volatile float sumf = 0.0f;  // volatile: one rounding per operation, no contraction
  for (int64_t b = 0; b < n / 32; ++b) {
    const uint8_t* wb = w.data() + 20 * b;
    const uint8_t* xb = xq.data() + 36 * b;
    int sumi = 0;
    for (int j = 0; j < 16; ++j) {
      sumi += (wb[4 + j] & 15) * static_cast<int8_t>(xb[4 + j]);
      sumi += (wb[4 + j] >> 4) * static_cast<int8_t>(xb[20 + j]);
    }
    volatile float dd = load_f16(wb) * load_f16(xb);
    volatile float t1 = dd * static_cast<float>(sumi);
    volatile float t2 = load_f16(wb + 2) * load_f16(xb + 2);
    volatile float term = t1 + t2;
    sumf = sumf + term;
  }
  float got;
  quant_dot_fn(DType::kQ4_1, QDotIsa::kScalar)(w.data(), 0, 1, xq.data(), 0, 1, n, &got, 1);
  const float want = sumf;
  EXPECT_EQ(0, std::memcmp(&got, &want, 4)) << got << " vs " << want;
}

TEST(QuantDot, TypesWithoutDotReportF32) {
  EXPECT_EQ(vec_dot_type(DType::kF32), DType::kF32);
  EXPECT_EQ(vec_dot_type(DType::kQ4_1), DType::kQ8_1);
  EXPECT_EQ(vec_dot_type(DType::kQ8_0), DType::kQ8_0);
  EXPECT_EQ(vec_dot_row_bytes(DType::kQ4_1, 576), 18u * 36u);
  EXPECT_EQ(vec_dot_row_bytes(DType::kQ4_0, 64), 2u * 34u);
}

}  // namespace
}  // namespace fkv
