// AVX2 + FMA single-precision GEMM: the three paths of sgemm.c with 8-float vectors and 16 registers.
// - packed: 6 x 16 micro-tile (12 accumulators, 2 B vectors, 1 broadcast), op(A) broadcast in place.
// - small-M, B transposed: C^T = W A^T with A^T packed 8, 16 or 32 wide (m <= 8, 16, 32) and
//   12, 6 or 3 weight rows per tile (12 accumulators each). The transposes at either end move
//   m x k and m x n floats against the 2 m n k flops of the product, so they stay scalar.
// - decode: the packed micro-kernel's 6 x 16 tiles (and 4-, 2- and 1-row ones) over weights packed
//   once (decodeTile; packed.c drives it).
#include "CKernels.h"
#include "simd.h"

#if defined(__x86_64__)

enum {
    MR = 6,        // packed micro-tile rows
    NR = 16,       // packed micro-tile columns: two ymm
    AHEAD = 64,    // small-M path: prefetch distance along the weight rows, in floats
    PACKED_AHEAD = 64,  // packed path, first pass over a block of A: prefetch distance along k
};

// tile(i, j) = sum_p A(i, p) B(p, j) for i < rows, j < 8 nv; as tileProductFetching in sgemm.c
// (B's rows here are at most 64 bytes, one prefetch a step).
INLINE AVX2 void tileProductFetching(int rows, int nv, long kc, const float *a, long ars, long acs,
                                     const float *b, long bs, float *tile, long ahead, long bAhead) {
    __m256 acc[12][4];
#pragma clang loop unroll(full)
    for (int i = 0; i < rows; i++)
#pragma clang loop unroll(full)
        for (int v = 0; v < nv; v++) acc[i][v] = _mm256_setzero_ps();
    for (long p = 0; p < kc; p++) {
        if (ahead) prefetchTileA(p, kc, rows, a, ars, acs, ahead);
        if (bAhead) _mm_prefetch((const char *)(b + (p + bAhead) * bs), _MM_HINT_T0);
        __m256 bv[4];
#pragma clang loop unroll(full)
        for (int v = 0; v < nv; v++) bv[v] = _mm256_loadu_ps(b + p * bs + 8 * v);
#pragma clang loop unroll(full)
        for (int i = 0; i < rows; i++) {
            __m256 ai = _mm256_broadcast_ss(a + i * ars + p * acs);
#pragma clang loop unroll(full)
            for (int v = 0; v < nv; v++) acc[i][v] = _mm256_fmadd_ps(ai, bv[v], acc[i][v]);
        }
    }
#pragma clang loop unroll(full)
    for (int i = 0; i < rows; i++)
#pragma clang loop unroll(full)
        for (int v = 0; v < nv; v++) _mm256_store_ps(tile + (i * nv + v) * 8, acc[i][v]);
}

INLINE AVX2 void tileProduct(int rows, int nv, long kc, const float *a, long ars, long acs,
                             const float *b, long bs, float *tile, long ahead) {
    tileProductFetching(rows, nv, kc, a, ars, acs, b, bs, tile, ahead, 0);
}

// C(i, j) = alpha tile(i, j) + beta C(i, j) for i < rows, j < cols (a 16-wide tile); C is not read
// when beta = 0. Whole vectors in registers, a last partial one element by element, rounded alike
// (beta C fused onto the scaled tile).
static AVX2 void storeTile(const float *tile, long rows, long cols, float alpha, float beta, float *c, long ldc) {
    const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    for (long i = 0; i < rows; i++) {
        float *ci = c + i * ldc;
        const float *ti = tile + i * NR;
        long j = 0;
        for (; j + 8 <= cols; j += 8) {
            __m256 t = _mm256_mul_ps(va, _mm256_load_ps(ti + j));
            if (beta != 0) t = _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci + j), t);
            _mm256_storeu_ps(ci + j, t);
        }
        for (; j < cols; j++) ci[j] = beta != 0 ? __builtin_fmaf(beta, ci[j], alpha * ti[j]) : alpha * ti[j];
    }
}

// The packed path's micro-kernel: 6 x 16 tiles (packed.c runs the block loops).
static AVX2 void tileRowMajor(long kc, const float *a, long lda, const float *bp, float *tile, bool fetch) {
    if (fetch) tileProduct(MR, 2, kc, a, lda, 1, bp, NR, tile, PACKED_AHEAD);
    else tileProduct(MR, 2, kc, a, lda, 1, bp, NR, tile, 0);
}

static AVX2 void tileTransposed(long kc, const float *a, long lda, const float *bp, float *tile, bool fetch) {
    if (fetch) tileProduct(MR, 2, kc, a, 1, lda, bp, NR, tile, PACKED_AHEAD);
    else tileProduct(MR, 2, kc, a, 1, lda, bp, NR, tile, 0);
}

static AVX2 void tilePacked(long kc, const float *ap, const float *bp, float *tile) {
    tileProduct(MR, 2, kc, ap, 1, MR, bp, NR, tile, 0);
}

// Transposes the 8 x 8 block r[0..7] in registers: interleave pairs of rows, gather fours within
// each 128-bit half, then swap the halves.
INLINE AVX2 void transpose8(__m256 r[8]) {
    __m256 t[8], u[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; i++) {
        u[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xee);
        u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xee);
    }
    for (int e = 0; e < 4; e++) {
        r[e] = _mm256_permute2f128_ps(u[e], u[4 + e], 0x20);
        r[4 + e] = _mm256_permute2f128_ps(u[e], u[4 + e], 0x31);
    }
}

// The packed path's transposing copy of B (PackedKernel.packTransposedB): 8 x 8 blocks transposed
// in registers, the depth's last few steps element by element.
static AVX2 void packTransposedB(const float *b, long ldb, long kc, long cols, float *bp) {
    for (long jr = 0; jr < cols; jr += NR, bp += NR * kc)
        for (long j0 = 0; j0 < NR; j0 += 8) {
            long p0 = 0;
            for (; p0 + 8 <= kc; p0 += 8) {
                __m256 r[8];
                for (long j = 0; j < 8; j++) {
                    if (jr + j0 + j >= cols) {
                        r[j] = _mm256_setzero_ps();
                        continue;
                    }
                    _mm_prefetch((const char *)(b + (jr + j0 + j) * ldb + p0 + 64), _MM_HINT_T0);
                    r[j] = _mm256_loadu_ps(b + (jr + j0 + j) * ldb + p0);
                }
                transpose8(r);
                for (long e = 0; e < 8; e++) _mm256_store_ps(bp + (p0 + e) * NR + j0, r[e]);
            }
            for (; p0 < kc; p0++)
                for (long j = 0; j < 8; j++) bp[p0 * NR + j0 + j] = jr + j0 + j < cols ? b[(jr + j0 + j) * ldb + p0] : 0;
        }
}

// Tile of C^T: `rows` rows of W against A^T packed 8 nv wide; full tiles are 12 x 1, 6 x 2 or 3 x 4
// accumulators (constant shapes, as tileProduct wants), or one row.
static AVX2 void weightRowsTile(int nv, bool full, long k, const float *w, long ldw, const float *at, float *tile) {
    switch (nv) {
        case 1: full ? tileProduct(12, 1, k, w, ldw, 1, at, 8, tile, AHEAD) : tileProduct(1, 1, k, w, ldw, 1, at, 8, tile, AHEAD); break;
        case 2: full ? tileProduct(6, 2, k, w, ldw, 1, at, 16, tile, AHEAD) : tileProduct(1, 2, k, w, ldw, 1, at, 16, tile, AHEAD); break;
        default: full ? tileProduct(3, 4, k, w, ldw, 1, at, 32, tile, AHEAD) : tileProduct(1, 4, k, w, ldw, 1, at, 32, tile, AHEAD); break;
    }
}

// C(j, i) = alpha tile(i, j) + beta C(j, i) for firstRow <= i < rows, j < cols, rounded as storeTile
// rounds it (beta C fused onto the scaled tile), so the decode product's tiles match.
static AVX2 void storeTransposedTile(const float *tile, long width, long firstRow, long rows, long cols,
                                     float alpha, float beta, float *c, long ldc) {
    for (long j = 0; j < cols; j++)
        for (long i = firstRow; i < rows; i++) {
            float *cp = c + j * ldc + i;
            *cp = beta != 0 ? __builtin_fmaf(beta, *cp, alpha * tile[i * width + j]) : alpha * tile[i * width + j];
        }
}

// C = alpha A W^T + beta C for m <= SMALL_M rows of A (W = B, n x k, row-major); items are
// ranges of W's rows (whole tiles), all reading the one packed A^T.
typedef struct {
    long m, n, k, ldw, ldc, items;
    float alpha, beta;
    const float *w, *at;
    float *c;
} WeightRows;

static AVX2 void weightRowsItem(void *context, long item) {
    const WeightRows *p = context;
    const int nv = p->m <= 8 ? 1 : p->m <= 16 ? 2 : 4;
    const long width = 8 * nv, rows = 12 / nv;
    const ItemRange range = itemRange(item, p->items, p->n, rows);
    const long k = p->k, ldw = p->ldw, m = p->m, end = range.start + range.count;
    const float *w = p->w;
    float *c = p->c;
    float tile[12 * 8] __attribute__((aligned(32)));
    long n0 = range.start;
    for (; n0 + rows <= end; n0 += rows) {
        weightRowsTile(nv, true, k, w + n0 * ldw, ldw, p->at, tile);
        storeTransposedTile(tile, width, 0, rows, m, p->alpha, p->beta, c + n0, p->ldc);
    }
    if (n0 < end && range.count >= rows) {
        // Last partial tile: recompute the full tile ending here, store only the rows not yet stored.
        long start = end - rows;
        weightRowsTile(nv, true, k, w + start * ldw, ldw, p->at, tile);
        storeTransposedTile(tile, width, n0 - start, rows, m, p->alpha, p->beta, c + start, p->ldc);
    } else {
        for (; n0 < end; n0++) {
            weightRowsTile(nv, false, k, w + n0 * ldw, ldw, p->at, tile);
            storeTransposedTile(tile, width, 0, 1, m, p->alpha, p->beta, c + n0, p->ldc);
        }
    }
}

static AVX2 bool smallRowsGemm(int threads, long m, long n, long k, float alpha, const float *a, long lda,
                               const float *w, long ldw, float beta, float *c, long ldc) {
    const int nv = m <= 8 ? 1 : m <= 16 ? 2 : 4;
    const long width = 8 * nv, rows = 12 / nv;
    float *at = suder_packingBuffer(SMALL_AT, k * width);
    if (!at) return false;
    for (long p = 0; p < k; p++)
        for (long j = 0; j < width; j++) at[p * width + j] = j < m ? a[j * lda + p] : 0;
    WeightRows product = {m, n, k, ldw, ldc, parallelItems(threads, (n + rows - 1) / rows, (double)m * n * k),
                          alpha, beta, w, at, c};
    return suder_parallel(threads, product.items, NULL, weightRowsItem, &product);
}

// The decode product's tile (PackedKernel.decodeTile): 6, 4, 2 or 1 rows, constant shapes as
// tileProduct wants.
static AVX2 void decodeTile(long rows, long k, const float *a, long lda, const float *bp, float *tile, long ahead) {
    const long steps = ahead / NR;  // a step reads NR floats of the panel
    switch (rows) {
        case 6: tileProductFetching(6, 2, k, a, lda, 1, bp, NR, tile, 0, steps); break;
        case 4: tileProductFetching(4, 2, k, a, lda, 1, bp, NR, tile, 0, steps); break;
        case 2: tileProductFetching(2, 2, k, a, lda, 1, bp, NR, tile, 0, steps); break;
        default: tileProductFetching(1, 2, k, a, lda, 1, bp, NR, tile, 0, steps); break;
    }
}

PackedKernel suder_packedKernelAVX2(void) {
    return (PackedKernel){MR, NR, KC256, suder_blocking.mc256, tileRowMajor, tileTransposed,
                          tilePacked, storeTile, packTransposedB, decodeTile};
}

bool suder_sgemmAVX2(bool transA, bool transB, long m, long n, long k, float alpha, const float *a, long lda,
                     const float *b, long ldb, float beta, float *c, long ldc, int threads) {
    if (m <= 0 || n <= 0 || k <= 0) return false;
    if (!transA && transB && m <= SMALL_M) return smallRowsGemm(threads, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    const PackedKernel kernel = suder_packedKernelAVX2();
    return suder_packedGemm(&kernel, threads, transA, transB, m, n, k, alpha, a, lda, b, ldb, NULL, beta, c, ldc);
}

#endif
