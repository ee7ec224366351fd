// The AVX2 quantised dots with AVX512-VNNI lane sums (vpdpbusd on 256-bit vectors, AVX512-VL):
// one instruction instead of vpmaddubsw + vpmaddwd, the same exact i32 lanes, so the results are
// bit-identical to the AVX2 kernels. Built with the AVX-512 flags (CMake glob on *_avx512.cc) plus
// VNNI enabled here; only called after a runtime check.
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512vnni"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC target("avx512vnni")
#endif

// GCC 12 flags its own AVX-512 intrinsic headers (_mm512_undefined_*) under -Wall.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#define FKV_QDOT_VNNI 1
#include "quant/quant_dot_avx2.cc"  // NOLINT(build/include): the kernels, instantiated for VNNI

#if defined(__clang__)
#pragma clang attribute pop
#endif
