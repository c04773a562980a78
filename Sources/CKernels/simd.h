#ifndef SUDER_CKERNELS_SIMD_H
#define SUDER_CKERNELS_SIMD_H
// Shared by the kernel files. Only functions marked AVX512 or AVX2 use those instructions; the
// binary stays baseline x86-64 and the entry points check suder_activeKernels before calling them.
#include <stdbool.h>
#include "CKernels.h"

// Items per thread of a split job: small enough that a thread slowed by other load on its core
// leaves its share to the others, large enough that items amortise their packing.
enum { ITEMS_PER_THREAD = 4 };

// How many items a job of `work` multiply-adds over `panels` panels splits into for `threads`
// threads: one (the whole job, on the calling thread) below suder_parallel_min_work.
static inline long parallelItems(int threads, long panels, double work) {
    if (threads <= 1 || work < suder_parallel_min_work) return 1;
    return panels < ITEMS_PER_THREAD * threads ? panels : ITEMS_PER_THREAD * threads;
}

// Item `item` of `items` over [0, extent): whole panels of `panel`, as many per item as can be,
// so item boundaries fall on the tile boundaries of the unsplit job.
typedef struct { long start, count; } ItemRange;
static inline ItemRange itemRange(long item, long items, long extent, long panel) {
    long panels = (extent + panel - 1) / panel, start = item * panels / items * panel;
    long end = (item + 1) * panels / items * panel;
    return (ItemRange){start, (end < extent ? end : extent) - start};
}

#if defined(__x86_64__)
#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f,fma")))
#define AVX2 __attribute__((target("avx2,fma")))
#define INLINE static inline __attribute__((always_inline))

/// The path the entry points run (suder_kernels_select), the best the CPU has unless forced.
extern SuderKernels suder_activeKernels;

/// Depth of a packed block per path. A deeper product adds its blocks' sums, so kc sets the rounding:
/// it is fixed, not read from the caches, so a run gives the same bits on every CPU with the path.
enum { KC512 = 256, KC256 = 512 };
/// Rows of A per packed block, from the L2 size they were planned for (suder_kernels_plan_blocking);
/// they change no bits.
typedef struct { long mc512, mc256, l2; } Blocking;
extern Blocking suder_blocking;

// Lanes 0..<min(left, 16) of a 16-float vector.
INLINE __mmask16 tailMask(long left) { return left >= 16 ? 0xFFFF : (__mmask16)((1u << left) - 1); }

static inline long minLong(long x, long y) { return x < y ? x : y; }

// The prefetch of A at step p of a tile product over kc steps (tileProduct in sgemm.c and
// sgemm_avx2.c), `ahead` steps ahead, running on into the next tile's rows near the end. A
// transposed A (rows adjacent, ars 1) reads a new row of its storage each step, so that row is
// fetched every step (its `rows` floats may straddle two lines); a row-major one reads its rows
// along k, a line every 16 steps. Callers pass constant rows, so the loop unrolls.
INLINE void prefetchTileA(long p, long kc, int rows, const float *a, long ars, long acs, long ahead) {
    const long q = p + ahead;
    if (ars == 1) {
        const float *row = q < kc ? a + q * acs : a + rows + (q - kc) * acs;
        _mm_prefetch((const char *)row, _MM_HINT_T0);
        _mm_prefetch((const char *)(row + rows - 1), _MM_HINT_T0);
    } else if (p % 16 == 0) {
#pragma clang loop unroll(full)
        for (int i = 0; i < rows; i++)
            _mm_prefetch((const char *)(q < kc ? a + i * ars + q * acs : a + (i + rows) * ars + (q - kc) * acs), _MM_HINT_T0);
    }
}

// The sum of x's 8 lanes.
INLINE AVX2 float sum8(__m256 x) {
    __m128 four = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    four = _mm_add_ps(four, _mm_movehl_ps(four, four));
    return _mm_cvtss_f32(_mm_add_ss(four, _mm_movehdup_ps(four)));
}

// This thread's scratch buffer `which` (packed.c: packed panels, the small-M path's A^T, the
// attention scores, the block of B a row-split product's threads share), 64-byte aligned, at
// least `count` floats; NULL if out of memory.
enum { PACKED_B, PACKED_A, SMALL_AT, SCORES, SHARED_B, BUFFERS };
float *suder_packingBuffer(int which, long count);

// One path's micro-kernel for the packed path's block loops, which both paths share (packed.c).
typedef struct {
    long mr, nr;  // micro-tile rows and columns (at most 12 x 32)
    long kc, mc;  // most depth (KC512 / KC256) and rows of A (suder_blocking) per block
    // tile (mr x nr, row-major, 64-byte aligned) = op(A) panel x packed B panel, op(A) broadcast
    // from a row-major panel in place (rows lda apart), from a transposed one in place (its rows
    // adjacent, k lda apart), or from a packed panel (k-major, mr floats per k). `fetch`: the
    // first pass over a block of A, which comes from memory, so the tile prefetches it.
    void (*tileRowMajor)(long kc, const float *a, long lda, const float *bp, float *tile, bool fetch);
    void (*tileTransposed)(long kc, const float *a, long lda, const float *bp, float *tile, bool fetch);
    void (*tilePacked)(long kc, const float *ap, const float *bp, float *tile);
    // C(i, j) = alpha tile(i, j) + beta C(i, j) for i < rows, j < cols; C is not read when beta = 0.
    void (*store)(const float *tile, long rows, long cols, float alpha, float beta, float *c, long ldc);
    // Packs op(B) = B^T (kc x cols, B's rows ldb apart) into panels of nr columns, k-major, zero
    // past `cols`: the transposing copy, by blocks transposed in registers, prefetching B's rows
    // (the weights, which do not stay cached through a training step).
    void (*packTransposedB)(const float *b, long ldb, long kc, long cols, float *bp);
    // The decode product's tile: `rows` (mr, or the largest of 8, 4, 2, 1 below it) rows of A against
    // one packed panel at full depth k, each element summed over k in order into one accumulator
    // as the small-M path sums it; prefetches the panel `ahead` floats on (0: none).
    void (*decodeTile)(long rows, long k, const float *a, long lda, const float *bp, float *tile, long ahead);
} PackedKernel;

// C = alpha op(A) op(B) + beta C through `kernel`'s micro-tiles, split over up to `threads`
// threads (parallelItems); false (C untouched) if out of memory. With `packedB` (op(B) = B^T
// already in the kernel's panels at full depth, suder_decode_pack) B is not read or copied, and C
// gets the same bits.
bool suder_packedGemm(const PackedKernel *kernel, int threads, bool transA, bool transB, long m, long n, long k,
                      float alpha, const float *a, long lda, const float *b, long ldb, const float *packedB, float beta,
                      float *c, long ldc);

// At most this many rows of A take the small-M path (and the decode product's tiles).
enum { SMALL_M = 32 };

// suder_decode_gemm through `kernel`: C = alpha A W^T + beta C over W in its panels at full depth.
bool suder_decodeGemm(const PackedKernel *kernel, int threads, long m, long n, long k, float alpha, const float *a,
                      long lda, const float *packed, float beta, float *c, long ldc);

// The AVX2 path (sgemm_avx2.c, exp.c, attention.c).
PackedKernel suder_packedKernelAVX2(void);
bool suder_sgemmAVX2(bool transA, bool transB, long m, long n, long k, float alpha, const float *a, long lda,
                     const float *b, long ldb, float beta, float *c, long ldc, int threads);
float suder_exponentials8(float *out, const float *x, long count, float shift, float scale);
float suder_exponentials16(float *out, const float *x, long count, float shift, float scale);
#endif

#endif
