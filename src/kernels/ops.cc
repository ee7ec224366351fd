// Dispatch: picks the best kernel variant once, and the unqualified kernels that forward to it.
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "core/check.h"
#include "core/cpu.h"
#include "kernels/dispatch.h"

namespace fkv {

namespace {
bool isa_supported_uncached(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return true;
#if defined(__x86_64__)
    case Isa::kAvx2:
      return cpu_has_avx2_fma_f16c();
    case Isa::kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("fma") && cpu_has_f16c();
#endif
    default:
      return false;
  }
}
}  // namespace

// Asked on every attention call (ops_table_for): cpuid traps to the hypervisor in a VM (~1 us),
// so the answers are computed once.
bool isa_supported(Isa isa) {
  static const auto supported = [] {
    std::array<bool, kNumIsas> s{};
    for (int i = 0; i < kNumIsas; ++i) s[i] = isa_supported_uncached(static_cast<Isa>(i));
    return s;
  }();
  const int i = static_cast<int>(isa);
  return i >= 0 && i < kNumIsas && supported[i];
}

const KernelTable* kernel_table(Isa isa) {
  if (!isa_supported(isa)) return nullptr;
  switch (isa) {
    case Isa::kScalar:
      return &scalar_kernel_table();
#if defined(__x86_64__)
    case Isa::kAvx2:
      return &avx2_kernel_table();
    case Isa::kAvx512:
      return &avx512_kernel_table();
#endif
    default:
      return nullptr;
  }
}

const KernelTable* bf16dot_kernel_table() {
#if defined(__x86_64__)
  static const bool ok = isa_supported(Isa::kAvx512) && cpu_has_avx512_bf16();
  if (ok) return &avx512bf16_kernel_table();
#endif
  return nullptr;
}

const KernelTable& pick_kernels_for(const char* isa_env, const char* bf16_dot_env) {
  // FKV_ISA caps the choice (e.g. to compare variants end to end); unknown values are ignored.
  // "avx512" means the exact f32 kernels; the bf16-dot ones need no FKV_ISA or "avx512bf16", and
  // FKV_BF16_DOT=0 turns them off whatever FKV_ISA says.
  int cap = kNumIsas - 1;
  bool bf16_dot = true;
  if (isa_env != nullptr) {
    if (std::strcmp(isa_env, "scalar") == 0) cap = 0;
    if (std::strcmp(isa_env, "avx2") == 0) cap = 1;
    if (std::strcmp(isa_env, "avx512") == 0) bf16_dot = false;
  }
  if (bf16_dot_env != nullptr && std::strcmp(bf16_dot_env, "0") == 0) bf16_dot = false;
  if (bf16_dot && cap == kNumIsas - 1) {
    if (const KernelTable* k = bf16dot_kernel_table()) return *k;
  }
  for (int i = cap; i > 0; --i) {
    if (const KernelTable* k = kernel_table(static_cast<Isa>(i))) return *k;
  }
  return scalar_kernel_table();
}

const KernelTable& active_kernels() {
  static const KernelTable* const k =
      &pick_kernels_for(std::getenv("FKV_ISA"), std::getenv("FKV_BF16_DOT"));
  return *k;
}

Isa active_isa() {
  const KernelTable* k = &active_kernels();
  if (k == bf16dot_kernel_table()) return Isa::kAvx512;
  for (int i = kNumIsas - 1; i > 0; --i) {
    if (k == kernel_table(static_cast<Isa>(i))) return static_cast<Isa>(i);
  }
  return Isa::kScalar;
}

const char* kernel_isa_name() { return active_kernels().name; }

float dot(const float* a, const float* b, int64_t n) { return active_kernels().dot(a, b, n); }
void axpy(float alpha, const float* x, float* y, int64_t n) {
  active_kernels().axpy(alpha, x, y, n);
}
void rms_norm_row(const float* x, const float* w, int64_t dim, float eps, float* y) {
  active_kernels().rms_norm_row(x, w, dim, eps, y);
}
void silu_mul(float* gate, const float* up, int64_t n) { active_kernels().silu_mul(gate, up, n); }
void add_inplace(float* y, const float* x, int64_t n) { active_kernels().add_inplace(y, x, n); }
void softmax_inplace(float* x, int64_t n) { active_kernels().softmax_inplace(x, n); }

namespace {

constexpr int kMaxRopeHalf = 1024;

// cos / sin [rot_dim / 2] of one position. The angle is rounded to float like HF's
// (pos * inv_freq) in f32; cos/sin are then taken in double so large positions lose nothing
// further.
void rope_tables(int head_dim, int rot_dim, int32_t pos, const float* inv_freq, float* cos_t,
                 float* sin_t) {
  FKV_CHECK(rot_dim % 2 == 0 && rot_dim <= head_dim && rot_dim / 2 <= kMaxRopeHalf,
            "rope: rot_dim %d must be even, <= head_dim %d and <= %d", rot_dim, head_dim,
            2 * kMaxRopeHalf);
  const float fpos = static_cast<float>(pos);
  for (int i = 0; i < rot_dim / 2; ++i) {
    const double angle = static_cast<double>(fpos * inv_freq[i]);
    cos_t[i] = static_cast<float>(std::cos(angle));
    sin_t[i] = static_cast<float>(std::sin(angle));
  }
}

}  // namespace

void rope_row_with(const KernelTable& k, float* x, int n_heads, int head_dim, int rot_dim,
                   int32_t pos, const float* inv_freq, RopeStyle style) {
  float cos_t[kMaxRopeHalf];
  float sin_t[kMaxRopeHalf];
  rope_tables(head_dim, rot_dim, pos, inv_freq, cos_t, sin_t);
  k.rope_rotate(x, n_heads, head_dim, rot_dim, cos_t, sin_t, style);
}

void rope_qk_row(float* q, int n_q_heads, float* k, int n_kv_heads, int head_dim, int rot_dim,
                 int32_t pos, const float* inv_freq, RopeStyle style) {
  float cos_t[kMaxRopeHalf];
  float sin_t[kMaxRopeHalf];
  rope_tables(head_dim, rot_dim, pos, inv_freq, cos_t, sin_t);
  const KernelTable& kern = active_kernels();
  kern.rope_rotate(q, n_q_heads, head_dim, rot_dim, cos_t, sin_t, style);
  kern.rope_rotate(k, n_kv_heads, head_dim, rot_dim, cos_t, sin_t, style);
}

void rope_row(float* x, int n_heads, int head_dim, int rot_dim, int32_t pos, const float* inv_freq,
              RopeStyle style) {
  rope_row_with(active_kernels(), x, n_heads, head_dim, rot_dim, pos, inv_freq, style);
}

}  // namespace fkv
