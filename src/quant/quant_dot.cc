// Scalar activation quantisers and block dot products, restating ggml's reference / generic C with
// the same f32 operations in the same order (contraction into FMA would change them, hence the
// pragma), plus the runtime dispatch to the AVX2 file.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "quant/quant_dot.h"

#include <cmath>
#include <cstdlib>
#include <cstring>

#include "core/check.h"
#include "core/cpu.h"

namespace fkv {

namespace qdot_detail {
// Defined in quant_dot_avx2.cc: nullptr when that file has no kernel for `t` or was built without
// AVX2.
QDotFn avx2_kernel(DType t);
bool avx2_compiled();
// Vector twins of quantize_row_q8_{0,1}_x86 (same bytes); only called when avx2_usable().
void avx2_quantize_q8_0_x86(const float* x, void* y, int64_t n);
void avx2_quantize_q8_1_x86(const float* x, void* y, int64_t n);
// The same from quant_dot_avx512.cc (AVX512-VL + VNNI).
QDotFn avx512_kernel(DType t);
bool avx512_compiled();
}  // namespace qdot_detail

namespace {

constexpr int kQK = 32;
constexpr int kQKK = 256;
constexpr size_t kQ80Bytes = 34;
constexpr size_t kQ81Bytes = 36;
constexpr size_t kQ8KBytes = 4 + kQKK + 2 * kQKK / 16;

inline float load_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}
inline void store_f16(uint8_t* p, float f) {
  const uint16_t h = f32_to_f16(f);
  std::memcpy(p, &h, 2);
}

// max(|x[0..n)|) accumulated as ggml's MAX(amax, fabsf(v)).
inline float block_amax(const float* x, int n) {
  float amax = 0.0f;
  for (int j = 0; j < n; ++j) {
    const float v = std::fabs(x[j]);
    amax = amax > v ? amax : v;
  }
  return amax;
}

// ggml's nearest_int: round half to even through the 1.5 * 2^23 trick (|v| < 2^22).
inline int nearest_int(float v) {
  const float t = v + 12582912.0f;
  int32_t i;
  std::memcpy(&i, &t, 4);
  return (i & 0x007fffff) - 0x00400000;
}

// ---- scalar dots (ggml's *_generic) ----------------------------------------------------------

// Exact integer dot of a block of 32 weight codes (already decoded to ints) with 32 i8.
inline int block_isum(const int* wq, const int8_t* yq) {
  int s0 = 0, s1 = 0;
  for (int j = 0; j < 16; ++j) {
    s0 += wq[j] * yq[j];
    s1 += wq[j + 16] * yq[j + 16];
  }
  return s0 + s1;
}

float dot_q4_0(const uint8_t* w, const uint8_t* y, int64_t nb) {
  float sumf = 0.0f;
  int q[kQK];
  for (int64_t b = 0; b < nb; ++b, w += 18, y += kQ80Bytes) {
    for (int j = 0; j < 16; ++j) {
      q[j] = (w[2 + j] & 0x0f) - 8;
      q[j + 16] = (w[2 + j] >> 4) - 8;
    }
    const int sumi = block_isum(q, reinterpret_cast<const int8_t*>(y + 2));
    sumf += static_cast<float>(sumi) * load_f16(w) * load_f16(y);
  }
  return sumf;
}

float dot_q4_1(const uint8_t* w, const uint8_t* y, int64_t nb) {
  float sumf = 0.0f;
  int q[kQK];
  for (int64_t b = 0; b < nb; ++b, w += 20, y += kQ81Bytes) {
    for (int j = 0; j < 16; ++j) {
      q[j] = w[4 + j] & 0x0f;
      q[j + 16] = w[4 + j] >> 4;
    }
    const int sumi = block_isum(q, reinterpret_cast<const int8_t*>(y + 4));
    sumf +=
        (load_f16(w) * load_f16(y)) * static_cast<float>(sumi) + load_f16(w + 2) * load_f16(y + 2);
  }
  return sumf;
}

// q5 codes: low nibble | bit j (j + 16 for the high half) of qh as bit 4.
inline void q5_codes(const uint8_t* qs, uint32_t qh, int bias, int* q) {
  for (int j = 0; j < 16; ++j) {
    q[j] = ((qs[j] & 0x0f) | static_cast<int>(((qh >> j) & 1u) << 4)) - bias;
    q[j + 16] = ((qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4)) - bias;
  }
}

float dot_q5_0(const uint8_t* w, const uint8_t* y, int64_t nb) {
  float sumf = 0.0f;
  int q[kQK];
  for (int64_t b = 0; b < nb; ++b, w += 22, y += kQ80Bytes) {
    uint32_t qh;
    std::memcpy(&qh, w + 2, 4);
    q5_codes(w + 6, qh, 16, q);
    const int sumi = block_isum(q, reinterpret_cast<const int8_t*>(y + 2));
    sumf += (load_f16(w) * load_f16(y)) * static_cast<float>(sumi);
  }
  return sumf;
}

float dot_q5_1(const uint8_t* w, const uint8_t* y, int64_t nb) {
  float sumf = 0.0f;
  int q[kQK];
  for (int64_t b = 0; b < nb; ++b, w += 24, y += kQ81Bytes) {
    uint32_t qh;
    std::memcpy(&qh, w + 4, 4);
    q5_codes(w + 8, qh, 0, q);
    const int sumi = block_isum(q, reinterpret_cast<const int8_t*>(y + 4));
    sumf +=
        (load_f16(w) * load_f16(y)) * static_cast<float>(sumi) + load_f16(w + 2) * load_f16(y + 2);
  }
  return sumf;
}

float dot_q8_0(const uint8_t* w, const uint8_t* y, int64_t nb) {
  float sumf = 0.0f;
  for (int64_t b = 0; b < nb; ++b, w += 34, y += kQ80Bytes) {
    const auto* wq = reinterpret_cast<const int8_t*>(w + 2);
    const auto* yq = reinterpret_cast<const int8_t*>(y + 2);
    int sumi = 0;
    for (int j = 0; j < kQK; ++j) sumi += wq[j] * yq[j];
    sumf += static_cast<float>(sumi) * (load_f16(w) * load_f16(y));
  }
  return sumf;
}

// ---- k-quants x q8_K (ggml's *_K_q8_K_generic) ------------------------------------------------
// Each super-block's codes are decoded to a[256] with a 16-element group scale sc[16]; the exact
// i32 sums aux32[l] = sum over elements e = l (mod 8) of sc[e / 16] * q8[e] * a[e] feed eight f32
// lane sums (sums[l] += d * aux32[l]); the q*_K mins come off sumf as dmin * sum(bsums * mins); the
// lanes are added to sumf at the very end. q2_K has its own, simpler order (see dot_q2_k).

// Six-bit scale j (< 8) and min of q4_K / q5_K's 12-byte scale block.
inline void k_scale_min(const uint8_t* s, int j, int* sc, int* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
    *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

inline float q8k_d(const uint8_t* y) {
  float d;
  std::memcpy(&d, y, 4);
  return d;
}
inline int q8k_bsum(const uint8_t* y, int g) {
  int16_t v;
  std::memcpy(&v, y + 4 + kQKK + 2 * g, 2);
  return v;
}

// Decoders: a[256] codes, sc[16] group scales, *mins_dot = sum_g bsums[g] * min[g] (0 if none).
void decode_q3_k(const uint8_t* b, const uint8_t*, int* a, int* sc, int* mins_dot) {
  const uint8_t* hm = b;
  const uint8_t* qs = b + 32;
  const uint8_t* scb = b + 96;
  for (int g = 0; g < 16; ++g) {
    const int lo = (scb[g % 8] >> (g < 8 ? 0 : 4)) & 0x0f;
    const int hi = (scb[8 + g % 4] >> (2 * (g / 4))) & 3;
    sc[g] = (lo | (hi << 4)) - 32;
  }
  for (int e = 0; e < kQKK; ++e) {
    const int h = e / 128, s = (e % 128) / 32, l = e % 32;
    a[e] = ((qs[32 * h + l] >> (2 * s)) & 3) - (((hm[l] >> (e / 32)) & 1) ? 0 : 4);
  }
  *mins_dot = 0;
}

void decode_q4_k(const uint8_t* b, const uint8_t* y, int* a, int* sc, int* mins_dot) {
  const uint8_t* qs = b + 16;
  int md = 0;
  for (int j = 0; j < 8; ++j) {
    int s, m;
    k_scale_min(b + 4, j, &s, &m);
    sc[2 * j] = sc[2 * j + 1] = s;
    md += (q8k_bsum(y, 2 * j) + q8k_bsum(y, 2 * j + 1)) * m;
    for (int l = 0; l < 32; ++l) a[32 * j + l] = (qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 0x0f;
  }
  *mins_dot = md;
}

void decode_q5_k(const uint8_t* b, const uint8_t* y, int* a, int* sc, int* mins_dot) {
  const uint8_t* qh = b + 16;
  const uint8_t* qs = b + 48;
  int md = 0;
  for (int j = 0; j < 8; ++j) {
    int s, m;
    k_scale_min(b + 4, j, &s, &m);
    sc[2 * j] = sc[2 * j + 1] = s;
    md += (q8k_bsum(y, 2 * j) + q8k_bsum(y, 2 * j + 1)) * m;
    for (int l = 0; l < 32; ++l) {
      a[32 * j + l] = ((qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 0x0f) | (((qh[l] >> j) & 1) << 4);
    }
  }
  *mins_dot = md;
}

void decode_q6_k(const uint8_t* b, const uint8_t*, int* a, int* sc, int* mins_dot) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  for (int g = 0; g < 16; ++g) sc[g] = static_cast<int8_t>(b[192 + g]);
  for (int e = 0; e < kQKK; ++e) {
    const int h = e / 128, r = e % 128;
    const int lo = (ql[64 * h + r % 64] >> (4 * (r / 64))) & 0x0f;
    const int hi = (qh[32 * h + r % 32] >> (2 * (r / 32))) & 3;
    a[e] = (lo | (hi << 4)) - 32;
  }
  *mins_dot = 0;
}

using KDecode = void (*)(const uint8_t* b, const uint8_t* y, int* a, int* sc, int* mins_dot);

template <KDecode kDecode, int kBlockBytes, int kDOff, int kDminOff>
float dot_k(const uint8_t* w, const uint8_t* y, int64_t nb) {
  float sums[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  float sumf = 0.0f;
  int a[kQKK], sc[16];
  for (int64_t b = 0; b < nb; ++b, w += kBlockBytes, y += kQ8KBytes) {
    int mins_dot;
    kDecode(w, y, a, sc, &mins_dot);
    const auto* q8 = reinterpret_cast<const int8_t*>(y + 4);
    int32_t aux32[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int e = 0; e < kQKK; ++e) aux32[e % 8] += sc[e / 16] * (q8[e] * a[e]);
    const float d = load_f16(w + kDOff) * q8k_d(y);
    for (int l = 0; l < 8; ++l) sums[l] += d * static_cast<float>(aux32[l]);
    if (kDminOff >= 0) {
      const float dmin = load_f16(w + kDminOff) * q8k_d(y);
      sumf -= dmin * static_cast<float>(mins_dot);
    }
  }
  for (int l = 0; l < 8; ++l) sumf += sums[l];
  return sumf;
}

// q2_K: sumf += (y.d * d) * isum - (y.d * dmin) * summs per super-block, isum over 16-element
// groups with the low-nibble scales, summs = sum_g bsums[g] * (scales[g] >> 4).
float dot_q2_k(const uint8_t* w, const uint8_t* y, int64_t nb) {
  float sumf = 0.0f;
  for (int64_t b = 0; b < nb; ++b, w += 84, y += kQ8KBytes) {
    const uint8_t* scb = w;
    const uint8_t* qs = w + 16;
    const auto* q8 = reinterpret_cast<const int8_t*>(y + 4);
    int summs = 0;
    for (int g = 0; g < 16; ++g) summs += q8k_bsum(y, g) * (scb[g] >> 4);
    const float dall = q8k_d(y) * load_f16(w + 80);
    const float dmin = q8k_d(y) * load_f16(w + 82);
    int isum = 0;
    for (int g = 0; g < 16; ++g) {
      int isuml = 0;
      for (int k = 0; k < 16; ++k) {
        const int e = 16 * g + k;
        const int h = e / 128, s = (e % 128) / 32, l = e % 32;
        isuml += q8[e] * ((qs[32 * h + l] >> (2 * s)) & 3);
      }
      isum += (scb[g] & 0x0f) * isuml;
    }
    sumf += dall * static_cast<float>(isum) - dmin * static_cast<float>(summs);
  }
  return sumf;
}

using RowDot = float (*)(const uint8_t* w, const uint8_t* y, int64_t nb);

template <RowDot kDot, int kBlock>
void rows_scalar(const uint8_t* w, size_t w_stride, int64_t nr, const uint8_t* xq, size_t xq_stride,
                 int64_t nx, int64_t n, float* y, int64_t y_stride) {
  const int64_t nb = n / kBlock;
  for (int64_t i = 0; i < nx; ++i) {
    for (int64_t r = 0; r < nr; ++r) {
      y[i * y_stride + r] = kDot(w + r * w_stride, xq + i * xq_stride, nb);
    }
  }
}

QDotFn scalar_kernel(DType t) {
  switch (t) {
    case DType::kQ4_0:
      return rows_scalar<dot_q4_0, kQK>;
    case DType::kQ4_1:
      return rows_scalar<dot_q4_1, kQK>;
    case DType::kQ5_0:
      return rows_scalar<dot_q5_0, kQK>;
    case DType::kQ5_1:
      return rows_scalar<dot_q5_1, kQK>;
    case DType::kQ8_0:
      return rows_scalar<dot_q8_0, kQK>;
    case DType::kQ2_K:
      return rows_scalar<dot_q2_k, kQKK>;
    case DType::kQ3_K:
      return rows_scalar<dot_k<decode_q3_k, 110, 108, -1>, kQKK>;
    case DType::kQ4_K:
      return rows_scalar<dot_k<decode_q4_k, 144, 0, 2>, kQKK>;
    case DType::kQ5_K:
      return rows_scalar<dot_k<decode_q5_k, 176, 0, 2>, kQKK>;
    case DType::kQ6_K:
      return rows_scalar<dot_k<decode_q6_k, 210, 208, -1>, kQKK>;
    default:
      return nullptr;
  }
}

bool avx2_usable() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool ok = qdot_detail::avx2_compiled() && cpu_has_avx2_fma_f16c();
  return ok;
#else
  return false;
#endif
}

bool avx512_usable() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool ok = avx2_usable() && qdot_detail::avx512_compiled() &&
                         __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                         __builtin_cpu_supports("avx512vnni");
  return ok;
#else
  return false;
#endif
}

}  // namespace

// ---- activation quantisers (ggml's quantize_row_*_ref) ------------------------------------------

void quantize_row_q8_0_ref(const float* x, void* vy, int64_t n) {
  FKV_CHECK(n % kQK == 0, "quantize_row_q8_0: %lld is not a multiple of 32",
            static_cast<long long>(n));
  auto* y = static_cast<uint8_t*>(vy);
  for (int64_t b = 0; b < n / kQK; ++b, x += kQK, y += kQ80Bytes) {
    const float d = block_amax(x, kQK) / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    store_f16(y, d);
    auto* qs = reinterpret_cast<int8_t*>(y + 2);
    for (int j = 0; j < kQK; ++j) qs[j] = static_cast<int8_t>(std::round(x[j] * id));
  }
}

void quantize_row_q8_1_ref(const float* x, void* vy, int64_t n) {
  FKV_CHECK(n % kQK == 0, "quantize_row_q8_1: %lld is not a multiple of 32",
            static_cast<long long>(n));
  auto* y = static_cast<uint8_t*>(vy);
  for (int64_t b = 0; b < n / kQK; ++b, x += kQK, y += kQ81Bytes) {
    const float d = block_amax(x, kQK) / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    store_f16(y, d);
    auto* qs = reinterpret_cast<int8_t*>(y + 4);
    int sum = 0;
    for (int j = 0; j < kQK; ++j) {
      qs[j] = static_cast<int8_t>(std::round(x[j] * id));
      sum += qs[j];
    }
    // s = d * sum(qs) with the unrounded f32 d, rounded to f16 once.
    store_f16(y + 2, static_cast<float>(sum) * d);
  }
}

// ggml-cpu's x86 (AVX/AVX2) quantize_row_q8_0 / q8_1: id = 127 / amax instead of 1 / d, and
// round half to even (vroundps) instead of roundf.
void quantize_row_q8_0_x86(const float* x, void* vy, int64_t n) {
  FKV_CHECK(n % kQK == 0, "quantize_row_q8_0: %lld is not a multiple of 32",
            static_cast<long long>(n));
  auto* y = static_cast<uint8_t*>(vy);
  for (int64_t b = 0; b < n / kQK; ++b, x += kQK, y += kQ80Bytes) {
    const float amax = block_amax(x, kQK);
    const float d = amax / 127.0f;
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    store_f16(y, d);
    auto* qs = reinterpret_cast<int8_t*>(y + 2);
    for (int j = 0; j < kQK; ++j) qs[j] = static_cast<int8_t>(std::nearbyint(x[j] * id));
  }
}

void quantize_row_q8_1_x86(const float* x, void* vy, int64_t n) {
  FKV_CHECK(n % kQK == 0, "quantize_row_q8_1: %lld is not a multiple of 32",
            static_cast<long long>(n));
  auto* y = static_cast<uint8_t*>(vy);
  for (int64_t b = 0; b < n / kQK; ++b, x += kQK, y += kQ81Bytes) {
    const float amax = block_amax(x, kQK);
    const float d = amax / 127.0f;
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    store_f16(y, d);
    auto* qs = reinterpret_cast<int8_t*>(y + 4);
    int sum = 0;
    for (int j = 0; j < kQK; ++j) {
      qs[j] = static_cast<int8_t>(std::nearbyint(x[j] * id));
      sum += qs[j];
    }
    store_f16(y + 2, d * static_cast<float>(sum));
  }
}

void quantize_row_q8_K_ref(const float* x, void* vy, int64_t n) {
  FKV_CHECK(n % kQKK == 0, "quantize_row_q8_K: %lld is not a multiple of 256",
            static_cast<long long>(n));
  auto* y = static_cast<uint8_t*>(vy);
  for (int64_t b = 0; b < n / kQKK; ++b, x += kQKK, y += kQ8KBytes) {
    auto* qs = reinterpret_cast<int8_t*>(y + 4);
    float max = 0.0f, amax = 0.0f;
    for (int j = 0; j < kQKK; ++j) {
      const float ax = std::fabs(x[j]);
      if (ax > amax) {
        amax = ax;
        max = x[j];
      }
    }
    if (amax == 0.0f) {
      std::memset(y, 0, kQ8KBytes);
      continue;
    }
    // Scaling by the signed extreme maps it to exactly -127.
    const float iscale = -127.0f / max;
    for (int j = 0; j < kQKK; ++j) {
      const int v = nearest_int(iscale * x[j]);
      qs[j] = static_cast<int8_t>(v < 127 ? v : 127);
    }
    for (int g = 0; g < kQKK / 16; ++g) {
      int sum = 0;
      for (int j = 0; j < 16; ++j) sum += qs[16 * g + j];
      const int16_t s16 = static_cast<int16_t>(sum);
      std::memcpy(y + 4 + kQKK + 2 * g, &s16, 2);
    }
    const float d = 1.0f / iscale;
    std::memcpy(y, &d, 4);
  }
}

DType vec_dot_type(DType t) {
  switch (t) {
    case DType::kQ4_0:
    case DType::kQ5_0:
    case DType::kQ8_0:
      return DType::kQ8_0;
    case DType::kQ4_1:
    case DType::kQ5_1:
      return DType::kQ8_1;
    case DType::kQ2_K:
    case DType::kQ3_K:
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K:
      return DType::kQ8_K;
    default:
      return DType::kF32;
  }
}

bool has_quant_dot(DType t) { return vec_dot_type(t) != DType::kF32; }

size_t vec_dot_row_bytes(DType t, int64_t n) {
  switch (vec_dot_type(t)) {
    case DType::kQ8_0:
      return static_cast<size_t>(n / kQK) * kQ80Bytes;
    case DType::kQ8_1:
      return static_cast<size_t>(n / kQK) * kQ81Bytes;
    case DType::kQ8_K:
      return static_cast<size_t>(n / kQKK) * kQ8KBytes;
    default:
      return 0;
  }
}

void quantize_row_for_dot(DType t, const float* x, void* y, int64_t n) {
  // Default: what llama.cpp's CPU backend runs on x86 (measured closer to its logits, see
  // docs/KERNELS.md); FKV_Q8_ROUND=ref selects ggml's portable reference rounding.
  static const bool x86 = [] {
    const char* e = std::getenv("FKV_Q8_ROUND");
    return e == nullptr || std::strcmp(e, "ref") != 0;
  }();
  switch (vec_dot_type(t)) {
    case DType::kQ8_0:
      if (!x86) {
        quantize_row_q8_0_ref(x, y, n);
      } else if (avx2_usable() && n % kQK == 0) {
        qdot_detail::avx2_quantize_q8_0_x86(x, y, n);
      } else {
        quantize_row_q8_0_x86(x, y, n);
      }
      return;
    case DType::kQ8_1:
      if (!x86) {
        quantize_row_q8_1_ref(x, y, n);
      } else if (avx2_usable() && n % kQK == 0) {
        qdot_detail::avx2_quantize_q8_1_x86(x, y, n);
      } else {
        quantize_row_q8_1_x86(x, y, n);
      }
      return;
    case DType::kQ8_K:
      quantize_row_q8_K_ref(x, y, n);
      return;
    default:
      FKV_CHECK(false, "quantize_row_for_dot: no quantised dot for %s", dtype_name(t));
  }
}

bool quant_dot_isa_supported(QDotIsa isa) {
  switch (isa) {
    case QDotIsa::kScalar:
      return true;
    case QDotIsa::kAvx2:
      return avx2_usable();
    case QDotIsa::kAvx512:
      return avx512_usable();
  }
  return false;
}

QDotIsa quant_dot_best_isa() {
  static const QDotIsa best = [] {
    const char* env = std::getenv("FKV_ISA");
    if (env != nullptr && std::strcmp(env, "scalar") == 0) return QDotIsa::kScalar;
    const bool cap_avx2 = env != nullptr && std::strcmp(env, "avx2") == 0;
    if (!cap_avx2 && avx512_usable()) return QDotIsa::kAvx512;
    return avx2_usable() ? QDotIsa::kAvx2 : QDotIsa::kScalar;
  }();
  return best;
}

const char* quant_dot_isa_name(QDotIsa isa) {
  switch (isa) {
    case QDotIsa::kAvx2:
      return "avx2";
    case QDotIsa::kAvx512:
      return "avx512vnni";
    default:
      return "scalar";
  }
}

QDotFn quant_dot_fn(DType t, QDotIsa isa) {
  if (!quant_dot_isa_supported(isa)) return nullptr;
  switch (isa) {
    case QDotIsa::kAvx2:
      return qdot_detail::avx2_kernel(t);
    case QDotIsa::kAvx512:
      return qdot_detail::avx512_kernel(t);
    default:
      return scalar_kernel(t);
  }
}

bool quant_dot_has_paired_prefill(DType t, QDotIsa isa) {
  if (isa != QDotIsa::kAvx512 || !quant_dot_isa_supported(isa)) return false;
  switch (t) {
    case DType::kQ4_0:
    case DType::kQ4_1:
    case DType::kQ5_0:
    case DType::kQ5_1:
    case DType::kQ8_0:
      return true;
    default:
      return false;
  }
}

float vec_dot_quant(DType t, const void* w_row, const void* xq, int64_t n) {
  QDotFn f = quant_dot_fn(t, quant_dot_best_isa());
  if (f == nullptr) f = scalar_kernel(t);
  FKV_CHECK(f != nullptr, "vec_dot_quant: no quantised dot for %s", dtype_name(t));
  const int block = dtype_info(t)->block_elems;
  FKV_CHECK(n % block == 0, "vec_dot_quant: %lld is not a multiple of %d",
            static_cast<long long>(n), block);
  float out = 0.0f;
  f(static_cast<const uint8_t*>(w_row), 0, 1, static_cast<const uint8_t*>(xq), 0, 1, n, &out, 1);
  return out;
}

}  // namespace fkv
