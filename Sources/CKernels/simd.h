#ifndef SUDER_CKERNELS_SIMD_H
#define SUDER_CKERNELS_SIMD_H
// Shared by the kernel files. Only functions marked AVX512 or AVX2 use those instructions; the
// binary stays baseline x86-64 and the entry points check suder_activeKernels before calling them.
#include <stdbool.h>
#include "CKernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f,fma")))
#define AVX2 __attribute__((target("avx2,fma")))
#define INLINE static inline __attribute__((always_inline))

/// The path the entry points run (suder_kernels_select), the best the CPU has unless forced.
extern SuderKernels suder_activeKernels;

/// Packed-path blocking, from the caches read at load time (cpu.c): kc = depth of a packed block
/// per 32 packed columns' worth of L1 (scaled by the path's panel width), mc = rows of A per block.
typedef struct { long kc512, mc512, kc256, mc256; } Blocking;
extern Blocking suder_blocking;

// Lanes 0..<min(left, 16) of a 16-float vector.
INLINE __mmask16 tailMask(long left) { return left >= 16 ? 0xFFFF : (__mmask16)((1u << left) - 1); }

static inline long minLong(long x, long y) { return x < y ? x : y; }

// This thread's packing buffer `which`, 64-byte aligned, at least `count` floats; NULL if out of
// memory. One set per thread (freed when the thread ends), grown on demand and reused, so products
// in the step loops do not allocate once the buffers have their size.
enum { PACKED_B, PACKED_A, SMALL_AT, BUFFERS };
float *suder_packingBuffer(int which, long count);

// Copies op(A)(0..<rows, 0..<kc), rows < mr, into one k-major panel of mr rows, zero past `rows`.
// Inlined into each path's target-specific caller, which compiles it with that path's vectors.
INLINE void packAPanel(long mr, bool trans, const float *a, long lda, long rows, long kc, float *ap) {
    for (long p = 0; p < kc; p++)
        for (long i = 0; i < mr; i++)
            ap[p * mr + i] = i >= rows ? 0 : trans ? a[p * lda + i] : a[i * lda + p];
}

// Copies op(B)(0..<kc, 0..<cols) into panels of nr columns, k-major, zero past `cols`.
INLINE void packBPanels(long nr, bool trans, const float *b, long ldb, long kc, long cols, float *bp) {
    for (long jr = 0; jr < cols; jr += nr, bp += nr * kc) {
        long width = minLong(nr, cols - jr);
        if (trans) {
            for (long j = 0; j < width; j++)
                for (long p = 0; p < kc; p++) bp[p * nr + j] = b[(jr + j) * ldb + p];
        } else {
            for (long p = 0; p < kc; p++)
                for (long j = 0; j < width; j++) bp[p * nr + j] = b[p * ldb + jr + j];
        }
        for (long p = 0; p < kc; p++)
            for (long j = width; j < nr; j++) bp[p * nr + j] = 0;
    }
}

// Depth of each of the equal blocks k is split into, at most kcMax (so K = 512 with kcMax 256 runs
// as 2 x 256 rather than 256 + 256 + a sliver).
static inline long equalDepth(long k, long kcMax) {
    long blocks = (k + kcMax - 1) / kcMax;
    return (k + blocks - 1) / blocks;
}

// The AVX2 path (sgemm_avx2.c, exp.c, attention.c).
bool suder_sgemmAVX2(bool transA, bool transB, long m, long n, long k, float alpha, const float *a, long lda,
                     const float *b, long ldb, float beta, float *c, long ldc, int threads);
float suder_exponentials8(float *out, const float *x, long count, float shift, float scale);
float suder_exponentials16(float *out, const float *x, long count, float shift, float scale);
#endif

#endif
