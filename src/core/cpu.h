// CPU features for the kernels' runtime dispatch (one place for the checks).
#pragma once

namespace fkv {

// F16C, read by cpuid (leaf 1, ECX bit 29): clang 14's __builtin_cpu_supports rejects "f16c".
bool cpu_has_f16c();
// AVX2 + FMA + F16C, all usable (__builtin_cpu_supports also checks the OS saves YMM state).
bool cpu_has_avx2_fma_f16c();
// AVX512_BF16 (vdpbf16ps, vcvtne2ps2bf16), read by cpuid (leaf 7 subleaf 1, EAX bit 5). Only
// meaningful together with the AVX-512 checks (which also cover the OS's ZMM state).
bool cpu_has_avx512_bf16();

}  // namespace fkv
