// CPU features for the kernels' runtime dispatch (one place for the checks).
#pragma once

namespace fkv {

// F16C, read by cpuid (leaf 1, ECX bit 29): clang 14's __builtin_cpu_supports rejects "f16c".
bool cpu_has_f16c();
// AVX2 + FMA + F16C, all usable (__builtin_cpu_supports also checks the OS saves YMM state).
bool cpu_has_avx2_fma_f16c();

}  // namespace fkv
