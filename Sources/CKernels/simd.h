#ifndef SUDER_CKERNELS_SIMD_H
#define SUDER_CKERNELS_SIMD_H
// Shared by the kernel files. Only functions marked AVX512 use AVX-512 instructions; the binary
// stays baseline x86-64 and the entry points check suder_cpuHasAVX512 before calling them.
#include <stdbool.h>

#if defined(__x86_64__)
#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f,fma")))
#define INLINE static inline __attribute__((always_inline))

extern bool suder_cpuHasAVX512;

// Lanes 0..<min(left, 16) of a 16-float vector.
INLINE __mmask16 tailMask(long left) { return left >= 16 ? 0xFFFF : (__mmask16)((1u << left) - 1); }
#endif

#endif
