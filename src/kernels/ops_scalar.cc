// Scalar twins: the portable fallback and the oracle every ISA variant is tested against.
#include <cmath>
#include <cstring>

#include "core/check.h"
#include "core/dtype.h"
#include "kernels/dispatch.h"

namespace fkv {
namespace scalar {

float dot(const float* a, const float* b, int64_t n) {
  double acc = 0.0;  // double: the scalar twin doubles as the tests' oracle
  for (int64_t i = 0; i < n; ++i) acc += static_cast<double>(a[i]) * b[i];
  return static_cast<float>(acc);
}

void axpy(float alpha, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

void rms_norm_row(const float* x, const float* w, int64_t dim, float eps, float* y) {
  double ss = 0.0;
  for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float scale = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(dim) + eps));
  for (int64_t i = 0; i < dim; ++i) y[i] = x[i] * scale * w[i];
}

void silu_mul(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    gate[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void add_inplace(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

void softmax_inplace(float* x, int64_t n) {
  if (n <= 0) return;
  float mx = x[0];
  for (int64_t i = 1; i < n; ++i) mx = x[i] > mx ? x[i] : mx;
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void rope_row(float* x, int n_heads, int head_dim, int rot_dim, int32_t pos, const float* inv_freq,
              RopeStyle style) {
  rope_row_with(scalar_kernel_table(), x, n_heads, head_dim, rot_dim, pos, inv_freq, style);
}

}  // namespace scalar

namespace {

void rope_rotate_scalar(float* x, int n_heads, int head_dim, int rot_dim, const float* cos_t,
                        const float* sin_t, RopeStyle style) {
  const int half = rot_dim / 2;
  for (int h = 0; h < n_heads; ++h) {
    float* xh = x + static_cast<int64_t>(h) * head_dim;
    for (int i = 0; i < half; ++i) {
      float* p0 = style == RopeStyle::kNeox ? xh + i : xh + 2 * i;
      float* p1 = style == RopeStyle::kNeox ? xh + i + half : xh + 2 * i + 1;
      const float x0 = *p0, x1 = *p1;
      *p0 = x0 * cos_t[i] - x1 * sin_t[i];
      *p1 = x1 * cos_t[i] + x0 * sin_t[i];
    }
  }
}

void gemm_f32_scalar(const float* x, int64_t n, int64_t x_stride, const float* w, int64_t nr,
                     int64_t w_stride, int64_t cols, float* y, int64_t y_stride) {
  for (int64_t r = 0; r < nr; ++r) {
    const float* wr = w + r * w_stride;
    for (int64_t i = 0; i < n; ++i) {
      const float* xi = x + i * x_stride;
      float acc = 0.0f;
      for (int64_t c = 0; c < cols; ++c) acc += xi[c] * wr[c];
      y[i * y_stride + r] = acc;
    }
  }
}

void gemv_f32_scalar(const float* x, const uint8_t* w, size_t row_bytes, int64_t nr, int64_t cols,
                     float* y) {
  for (int64_t r = 0; r < nr; ++r) {
    const float* wr = reinterpret_cast<const float*>(w + static_cast<size_t>(r) * row_bytes);
    float acc = 0.0f;
    for (int64_t c = 0; c < cols; ++c) acc += x[c] * wr[c];
    y[r] = acc;
  }
}

void gemv_f16_scalar(const float* x, const uint8_t* w, size_t row_bytes, int64_t nr, int64_t cols,
                     float* y) {
  for (int64_t r = 0; r < nr; ++r) {
    const uint8_t* wr = w + static_cast<size_t>(r) * row_bytes;
    float acc = 0.0f;
    for (int64_t c = 0; c < cols; ++c) {
      uint16_t h;
      std::memcpy(&h, wr + 2 * c, 2);
      acc += x[c] * f16_to_f32(h);
    }
    y[r] = acc;
  }
}

void gemv_bf16_scalar(const float* x, const uint8_t* w, size_t row_bytes, int64_t nr, int64_t cols,
                      float* y) {
  for (int64_t r = 0; r < nr; ++r) {
    const uint8_t* wr = w + static_cast<size_t>(r) * row_bytes;
    float acc = 0.0f;
    for (int64_t c = 0; c < cols; ++c) {
      uint16_t h;
      std::memcpy(&h, wr + 2 * c, 2);
      acc += x[c] * bf16_to_f32(h);
    }
    y[r] = acc;
  }
}

void f16_row_to_f32_scalar(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(src[i]);
}

void bf16_row_to_f32_scalar(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(src[i]);
}

void f32_row_to_f16_scalar(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_f16(src[i]);
}

}  // namespace

const KernelTable& scalar_kernel_table() {
  static const KernelTable table = {
      "scalar",
      scalar::dot,
      scalar::axpy,
      scalar::rms_norm_row,
      scalar::silu_mul,
      scalar::add_inplace,
      scalar::softmax_inplace,
      rope_rotate_scalar,
      gemm_f32_scalar,
      gemv_f32_scalar,
      gemv_f16_scalar,
      gemv_bf16_scalar,
      f16_row_to_f32_scalar,
      bf16_row_to_f32_scalar,
      f32_row_to_f16_scalar,
      nullptr,
      // No bf16-dot form (the avx512+bf16dot table adds it).
      nullptr,
      nullptr,
      nullptr,
  };
  return table;
}

}  // namespace fkv
