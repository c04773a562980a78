// AVX-512 single-precision GEMM for the model's products (see docs/PERFORMANCE.md).
//
// Three paths, all row-major C = alpha op(A) op(B) + beta C:
// - packed (BLIS-style, block loops in packed.c), for training and scoring: op(B) is copied into
//   k-major panels of NR columns; a 12 x 32 register-blocked micro-kernel broadcasts op(A) from
//   its 12-row panels in place (only a last partial panel is copied). A block of A and the tiles
//   of C come from memory in a training step's products (the activations outgrow L2 and L3), so
//   the first pass over a block prefetches its A rows and each tile its C lines.
// - small-M, B transposed (M <= 32 rows, e.g. a forward pass over a few short sequences):
//   computes C^T = W A^T with W = B's rows broadcast straight from memory and only the tiny A^T
//   packed, so the weights are read once and never copied (packing them for one product would
//   cost as much as the product).
// - decode (suder_decode_gemm, driven from packed.c): a sampling step's few rows against weights
//   the sampler packed once for all its steps, into the packed path's panels at full depth: the
//   packed micro-kernel (12 x 32 tiles, and 8-, 4-, 2- and 1-row ones) with no copy at all, the
//   weights read as one contiguous run and C stored untransposed; more rows run the packed path
//   over the same panels.
// sgemm_avx2.c has the same three paths with 256-bit vectors; the entry points pick the active one.
#include "CKernels.h"
#include "simd.h"

#if defined(__x86_64__)

enum {
    MR = 12,       // packed micro-tile rows: 12 x 2 accumulators + 2 B vectors of the 32 zmm
    NR = 32,       // packed micro-tile columns: two zmm
    AHEAD = 64,    // small-M path: prefetch distance along the weight rows, in floats
    PACKED_AHEAD = 64,  // packed path, first pass over a block of A: prefetch distance along k
};

// tile(i, j) = sum_p A(i, p) B(p, j) for i < rows, j < 16 nv, where A(i, p) = a[i ars + p acs] is
// broadcast and row p of B is nv vectors at b + p bs. Callers pass constant rows and nv, so the
// loops unroll and the rows x nv accumulators stay in registers. `ahead` and `bAhead`: prefetch
// distances in steps for A and for B (0: none).
INLINE AVX512 void tileProductFetching(int rows, int nv, long kc, const float *a, long ars, long acs,
                                       const float *b, long bs, float *tile, long ahead, long bAhead) {
    __m512 acc[24][2];
#pragma clang loop unroll(full)
    for (int i = 0; i < rows; i++)
#pragma clang loop unroll(full)
        for (int v = 0; v < nv; v++) acc[i][v] = _mm512_setzero_ps();
    for (long p = 0; p < kc; p++) {
        if (ahead) prefetchTileA(p, kc, rows, a, ars, acs, ahead);
        if (bAhead)
#pragma clang loop unroll(full)
            for (int v = 0; v < nv; v++) _mm_prefetch((const char *)(b + (p + bAhead) * bs + 16 * v), _MM_HINT_T0);
        __m512 bv[2];
#pragma clang loop unroll(full)
        for (int v = 0; v < nv; v++) bv[v] = _mm512_loadu_ps(b + p * bs + 16 * v);
#pragma clang loop unroll(full)
        for (int i = 0; i < rows; i++) {
            __m512 ai = _mm512_set1_ps(a[i * ars + p * acs]);
#pragma clang loop unroll(full)
            for (int v = 0; v < nv; v++) acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
        }
    }
#pragma clang loop unroll(full)
    for (int i = 0; i < rows; i++)
#pragma clang loop unroll(full)
        for (int v = 0; v < nv; v++) _mm512_store_ps(tile + (i * nv + v) * 16, acc[i][v]);
}

INLINE AVX512 void tileProduct(int rows, int nv, long kc, const float *a, long ars, long acs,
                               const float *b, long bs, float *tile, long ahead) {
    tileProductFetching(rows, nv, kc, a, ars, acs, b, bs, tile, ahead, 0);
}

// C(i, j) = alpha tile(i, j) + beta C(i, j) for i < rows, j < cols; C is not read when beta = 0.
INLINE AVX512 void storeTile(const float *tile, int nv, long rows, long cols, float alpha, float beta,
                             float *c, long ldc) {
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    for (long i = 0; i < rows; i++) {
        for (int v = 0; v < nv && 16 * v < cols; v++) {
            __mmask16 mask = tailMask(cols - 16 * v);
            float *cp = c + i * ldc + 16 * v;
            __m512 t = _mm512_mul_ps(va, _mm512_load_ps(tile + (i * nv + v) * 16));
            if (beta != 0) t = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mask, cp), t);
            _mm512_mask_storeu_ps(cp, mask, t);
        }
    }
}

// The packed path's micro-kernel: 12 x 32 tiles (packed.c runs the block loops).
static AVX512 void tileRowMajor(long kc, const float *a, long lda, const float *bp, float *tile, bool fetch) {
    if (fetch) tileProduct(MR, 2, kc, a, lda, 1, bp, NR, tile, PACKED_AHEAD);
    else tileProduct(MR, 2, kc, a, lda, 1, bp, NR, tile, 0);
}

static AVX512 void tileTransposed(long kc, const float *a, long lda, const float *bp, float *tile, bool fetch) {
    if (fetch) tileProduct(MR, 2, kc, a, 1, lda, bp, NR, tile, PACKED_AHEAD);
    else tileProduct(MR, 2, kc, a, 1, lda, bp, NR, tile, 0);
}

static AVX512 void tilePacked(long kc, const float *ap, const float *bp, float *tile) {
    tileProduct(MR, 2, kc, ap, 1, MR, bp, NR, tile, 0);
}

static AVX512 void storePackedTile(const float *tile, long rows, long cols, float alpha, float beta, float *c, long ldc) {
    storeTile(tile, 2, rows, cols, alpha, beta, c, ldc);
}

// Tile of C^T: `rows` rows of W (rows of B) against A^T packed `16 nv` wide. The shapes are
// constants at each call, as tileProduct wants: 24 x 1 or 12 x 2 accumulators, or one row.
static AVX512 void weightRowsTile(int nv, int rows, long k, const float *w, long ldw, const float *at,
                                  float *tile) {
    if (nv == 1) {
        if (rows == 24) tileProduct(24, 1, k, w, ldw, 1, at, 16, tile, AHEAD);
        else tileProduct(1, 1, k, w, ldw, 1, at, 16, tile, AHEAD);
    } else {
        if (rows == 12) tileProduct(12, 2, k, w, ldw, 1, at, 32, tile, AHEAD);
        else tileProduct(1, 2, k, w, ldw, 1, at, 32, tile, AHEAD);
    }
}

// Transposes the 16 x 16 block r[0..15] in registers: interleave pairs of rows, then pairs of
// pairs (r[4i + e] then holds rows 4i..4i+3 of columns e, 4 + e, 8 + e, 12 + e, one per 128-bit
// lane), then gather the lanes in two rounds of 128-bit shuffles.
INLINE AVX512 void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        __m512d lo = _mm512_castps_pd(t[4 * i]), hi = _mm512_castps_pd(t[4 * i + 1]);
        __m512d lo2 = _mm512_castps_pd(t[4 * i + 2]), hi2 = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(lo, lo2));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(lo, lo2));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(hi, hi2));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(hi, hi2));
    }
    for (int e = 0; e < 4; e++) {
        t[e] = _mm512_shuffle_f32x4(r[e], r[4 + e], 0x88);
        t[4 + e] = _mm512_shuffle_f32x4(r[e], r[4 + e], 0xdd);
        t[8 + e] = _mm512_shuffle_f32x4(r[8 + e], r[12 + e], 0x88);
        t[12 + e] = _mm512_shuffle_f32x4(r[8 + e], r[12 + e], 0xdd);
    }
    for (int e = 0; e < 4; e++) {
        r[e] = _mm512_shuffle_f32x4(t[e], t[8 + e], 0x88);
        r[8 + e] = _mm512_shuffle_f32x4(t[e], t[8 + e], 0xdd);
        r[4 + e] = _mm512_shuffle_f32x4(t[4 + e], t[12 + e], 0x88);
        r[12 + e] = _mm512_shuffle_f32x4(t[4 + e], t[12 + e], 0xdd);
    }
}

// The packed path's transposing copy of B (PackedKernel.packTransposedB): 16 x 16 blocks of B
// (rows of B = columns of the panel) transposed in registers, masked at the depth's end.
static AVX512 void packTransposedB(const float *b, long ldb, long kc, long cols, float *bp) {
    for (long jr = 0; jr < cols; jr += NR, bp += NR * kc)
        for (long j0 = 0; j0 < NR; j0 += 16)
            for (long p0 = 0; p0 < kc; p0 += 16) {
                const __mmask16 depth = tailMask(kc - p0);
                __m512 r[16];
                for (long j = 0; j < 16; j++) {
                    if (jr + j0 + j >= cols) {
                        r[j] = _mm512_setzero_ps();
                        continue;
                    }
                    _mm_prefetch((const char *)(b + (jr + j0 + j) * ldb + p0 + 64), _MM_HINT_T0);
                    r[j] = _mm512_maskz_loadu_ps(depth, b + (jr + j0 + j) * ldb + p0);
                }
                transpose16(r);
                for (long e = 0; e < 16 && p0 + e < kc; e++) _mm512_store_ps(bp + (p0 + e) * NR + j0, r[e]);
            }
}

// C(j, i) = alpha tile(i, j) + beta C(j, i) for firstRow <= i < rows, j < cols: the tile is C^T,
// transposed back 16 x 16 at a time.
static AVX512 void storeTransposedTile(const float *tile, int width, long firstRow, long rows, long cols,
                                       float alpha, float beta, float *c, long ldc) {
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    for (long i0 = 0; i0 < rows; i0 += 16) {
        __mmask16 lanes = tailMask(rows - i0);
        if (firstRow > i0) lanes &= (__mmask16)~tailMask(firstRow - i0);
        if (!lanes) continue;
        for (long j0 = 0; j0 < cols && j0 < width; j0 += 16) {
            __m512 r[16];
            for (long i = 0; i < 16; i++)
                r[i] = i0 + i < rows ? _mm512_load_ps(tile + (i0 + i) * width + j0) : _mm512_setzero_ps();
            transpose16(r);
            for (long j = 0; j < 16 && j0 + j < cols; j++) {
                float *cp = c + (j0 + j) * ldc + i0;
                __m512 t = _mm512_mul_ps(va, r[j]);
                if (beta != 0) t = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(lanes, cp), t);
                _mm512_mask_storeu_ps(cp, lanes, t);
            }
        }
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

static AVX512 void weightRowsItem(void *context, long item) {
    const WeightRows *p = context;
    const int nv = p->m <= 16 ? 1 : 2, width = 16 * nv, rows = nv == 1 ? 24 : 12;
    const ItemRange range = itemRange(item, p->items, p->n, rows);
    const long k = p->k, ldw = p->ldw, m = p->m, end = range.start + range.count;
    const float *w = p->w;
    float *c = p->c;
    float tile[24 * 16] __attribute__((aligned(64)));
    long n0 = range.start;
    for (; n0 + rows <= end; n0 += rows) {
        weightRowsTile(nv, rows, k, w + n0 * ldw, ldw, p->at, tile);
        storeTransposedTile(tile, width, 0, rows, m, p->alpha, p->beta, c + n0, p->ldc);
    }
    if (n0 < end && range.count >= rows) {
        // Last partial tile: recompute the full tile ending here, store only the rows not yet stored.
        long start = end - rows;
        weightRowsTile(nv, rows, k, w + start * ldw, ldw, p->at, tile);
        storeTransposedTile(tile, width, n0 - start, rows, m, p->alpha, p->beta, c + start, p->ldc);
    } else {
        for (; n0 < end; n0++) {
            weightRowsTile(nv, 1, k, w + n0 * ldw, ldw, p->at, tile);
            storeTransposedTile(tile, width, 0, 1, m, p->alpha, p->beta, c + n0, p->ldc);
        }
    }
}

static AVX512 bool smallRowsGemm(int threads, long m, long n, long k, float alpha, const float *a, long lda,
                                 const float *w, long ldw, float beta, float *c, long ldc) {
    const int nv = m <= 16 ? 1 : 2, width = 16 * nv, rows = nv == 1 ? 24 : 12;
    float *at = suder_packingBuffer(SMALL_AT, k * width);
    if (!at) return false;
    // at(p, j) = A(j, p), zero for j >= m, by 16 x 16 blocks.
    for (int v = 0; v < nv; v++)
        for (long p0 = 0; p0 < k; p0 += 16) {
            __m512 r[16];
            for (long j = 0; j < 16; j++)
                r[j] = 16 * v + j < m ? _mm512_maskz_loadu_ps(tailMask(k - p0), a + (16 * v + j) * lda + p0)
                                      : _mm512_setzero_ps();
            transpose16(r);
            for (long e = 0; e < 16 && p0 + e < k; e++) _mm512_store_ps(at + (p0 + e) * width + 16 * v, r[e]);
        }
    WeightRows product = {m, n, k, ldw, ldc, parallelItems(threads, (n + rows - 1) / rows, (double)m * n * k),
                          alpha, beta, w, at, c};
    return suder_parallel(threads, product.items, NULL, weightRowsItem, &product);
}

// The decode product's tile (PackedKernel.decodeTile): 12, 8, 4, 2 or 1 rows, constant shapes
// as tileProduct wants.
static AVX512 void decodeTile(long rows, long k, const float *a, long lda, const float *bp, float *tile, long ahead) {
    const long steps = ahead / NR;  // a step reads NR floats of the panel
    switch (rows) {
        case 12: tileProductFetching(12, 2, k, a, lda, 1, bp, NR, tile, 0, steps); break;
        case 8: tileProductFetching(8, 2, k, a, lda, 1, bp, NR, tile, 0, steps); break;
        case 4: tileProductFetching(4, 2, k, a, lda, 1, bp, NR, tile, 0, steps); break;
        case 2: tileProductFetching(2, 2, k, a, lda, 1, bp, NR, tile, 0, steps); break;
        default: tileProductFetching(1, 2, k, a, lda, 1, bp, NR, tile, 0, steps); break;
    }
}

static PackedKernel packedKernel(void) {
    return (PackedKernel){MR, NR, KC512, suder_blocking.mc512, tileRowMajor, tileTransposed,
                          tilePacked, storePackedTile, packTransposedB, decodeTile};
}

// The active path's micro-kernel; false on the BLAS path.
static bool activeKernel(PackedKernel *kernel) {
    if (suder_activeKernels == SUDER_KERNELS_AVX2) *kernel = suder_packedKernelAVX2();
    else if (suder_activeKernels == SUDER_KERNELS_AVX512) *kernel = packedKernel();
    else return false;
    return true;
}

long suder_decode_packed_floats(long n, long k) {
    PackedKernel kernel;
    return activeKernel(&kernel) ? (n + kernel.nr - 1) / kernel.nr * kernel.nr * k : 0;
}

void suder_decode_pack(const float *w, long n, long k, float *packed) {
    PackedKernel kernel;
    if (activeKernel(&kernel)) kernel.packTransposedB(w, k, k, n, packed);
}

bool suder_decode_gemm(long m, long n, long k, float alpha, const float *a, long lda, const float *packed,
                       float beta, float *c, long ldc, int threads) {
    PackedKernel kernel;
    if (!activeKernel(&kernel) || m <= 0 || n <= 0 || k <= 0) return false;
    return suder_decodeGemm(&kernel, threads, m, n, k, alpha, a, lda, packed, beta, c, ldc);
}

bool suder_sgemm(bool transA, bool transB, long m, long n, long k, float alpha,
                 const float *a, long lda, const float *b, long ldb, float beta, float *c, long ldc,
                 int threads) {
    if (suder_activeKernels == SUDER_KERNELS_AVX2)
        return suder_sgemmAVX2(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, threads);
    if (suder_activeKernels != SUDER_KERNELS_AVX512 || m <= 0 || n <= 0 || k <= 0) return false;
    if (!transA && transB && m <= SMALL_M) return smallRowsGemm(threads, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    const PackedKernel kernel = packedKernel();
    return suder_packedGemm(&kernel, threads, transA, transB, m, n, k, alpha, a, lda, b, ldb, NULL, beta, c, ldc);
}

#else  // other architectures: OpenBLAS does every product

bool suder_sgemm(bool transA, bool transB, long m, long n, long k, float alpha,
                 const float *a, long lda, const float *b, long ldb, float beta, float *c, long ldc,
                 int threads) {
    return false;
}

long suder_decode_packed_floats(long n, long k) { return 0; }

void suder_decode_pack(const float *w, long n, long k, float *packed) {}

bool suder_decode_gemm(long m, long n, long k, float alpha, const float *a, long lda, const float *packed,
                       float beta, float *c, long ldc, int threads) {
    return false;
}

#endif
