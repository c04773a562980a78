// The packed path's block loops (BLIS-style), shared by the AVX-512 and AVX2 micro-kernels, and
// the packing buffers of both paths.
//
// op(B) is copied into k-major panels of nr columns, a block of kc x NC at a time; the micro-kernel
// broadcasts op(A) from its mr-row panels in place (a row-major A is contiguous along k, a
// transposed one along its rows) and only a last partial panel of a row block is copied, unless a
// transposed A's rows alias in the caches (packsBlocksOfA), which is packed by blocks. The
// packing loops are plain C: they move O(k n) floats against the O(m n k) flops of the product.
#include "CKernels.h"
#include "simd.h"

#if defined(__x86_64__)
#include <pthread.h>
#include <stdlib.h>

enum {
    NC = 2048,     // columns of B packed per block (kc x NC floats, up to 4 MB, live in L2 / L3)
    MAX_TILE = 12 * 32,
    DECODE_AHEAD = 6144,  // decode product: prefetch distance along the packed weights, in floats (24 KB)
};

// Packing buffers, one set per thread (freed when the thread ends), grown on demand and reused,
// so products in the step loops do not allocate once the buffers have their size.
static pthread_key_t buffersKey;
static pthread_once_t buffersOnce = PTHREAD_ONCE_INIT;
typedef struct { float *data[BUFFERS]; long count[BUFFERS]; } PackingBuffers;

static void freeBuffers(void *p) {
    PackingBuffers *buffers = p;
    for (int i = 0; i < BUFFERS; i++) free(buffers->data[i]);
    free(buffers);
}

static void createBuffersKey(void) { pthread_key_create(&buffersKey, freeBuffers); }

float *suder_packingBuffer(int which, long count) {
    pthread_once(&buffersOnce, createBuffersKey);
    PackingBuffers *buffers = pthread_getspecific(buffersKey);
    if (!buffers) {
        if (!(buffers = calloc(1, sizeof *buffers))) return NULL;
        pthread_setspecific(buffersKey, buffers);
    }
    if (buffers->count[which] < count) {
        free(buffers->data[which]);
        // aligned_alloc wants a multiple of the alignment
        buffers->data[which] = aligned_alloc(64, ((size_t)count * sizeof(float) + 63) & ~(size_t)63);
        buffers->count[which] = buffers->data[which] ? count : 0;
    }
    return buffers->data[which];
}

// Copies op(A)(0..<rows, 0..<kc), rows < mr, into one k-major panel of mr rows, zero past `rows`.
static void packAPanel(long mr, bool trans, const float *a, long lda, long rows, long kc, float *ap) {
    for (long p = 0; p < kc; p++)
        for (long i = 0; i < mr; i++)
            ap[p * mr + i] = i >= rows ? 0 : trans ? a[p * lda + i] : a[i * lda + p];
}

// Copies op(A)(0..<rows, 0..<kc) of a transposed A (its rows adjacent, k lda apart) into k-major
// panels of mr rows, kc mr floats each, zero past `rows`: one pass down A's k rows, each read once
// and fetched a few rows ahead.
static void packTransposedA(long mr, const float *a, long lda, long rows, long kc, float *ap) {
    for (long p = 0; p < kc; p++) {
        if (p + 4 < kc)
            for (long i = 0; i < rows + 15; i += 16) __builtin_prefetch(a + (p + 4) * lda + minLong(i, rows - 1));
        for (long ir = 0; ir < rows; ir += mr)
            for (long i = 0; i < mr; i++) ap[ir * kc + p * mr + i] = ir + i < rows ? a[p * lda + ir + i] : 0;
    }
}

// Copies op(B)(0..<kc, 0..<cols) into panels of nr columns, k-major, zero past `cols`.
static void packBPanels(const PackedKernel *kernel, bool trans, const float *b, long ldb, long kc, long cols, float *bp) {
    if (trans) {
        kernel->packTransposedB(b, ldb, kc, cols, bp);
        return;
    }
    const long nr = kernel->nr;
    for (long jr = 0; jr < cols; jr += nr, bp += nr * kc) {
        long width = minLong(nr, cols - jr);
        for (long p = 0; p < kc; p++) {
            // B's rows come from memory (the weight gradients' activations): the first panel's
            // pass fetches whole rows ahead, and later panels find them in cache.
            if (jr == 0)
                for (long j = 0; j < cols; j += 16) __builtin_prefetch(b + (p + 8) * ldb + j, 0, 3);
            for (long j = 0; j < width; j++) bp[p * nr + j] = b[p * ldb + jr + j];
            for (long j = width; j < nr; j++) bp[p * nr + j] = 0;
        }
    }
}

// A product split into items, ranges of whole panels of C's columns (splitColumns) or rows; each
// item runs the block loops on its range with the whole product's depth blocks, so every element
// sums the same terms in the same order whichever item (and thread) computes it.
typedef struct {
    const PackedKernel *kernel;
    bool transA, transB, splitColumns;
    long m, n, k, kcMax, items;
    float alpha, beta;
    const float *a, *b;
    long lda, ldb, ldc;
    float *c;
    const float *packedB;  // op(B) already in panels at full depth (suder_decode_pack), or NULL
} PackedProduct;

// The most columns of B an item packs at once: its panels (the widest item has the most), at
// most a block of NC.
static long packedWidth(const PackedProduct *p) {
    const long nr = p->kernel->nr, panels = (p->n + nr - 1) / nr;
    const long widest = p->splitColumns ? (panels + p->items - 1) / p->items : panels;
    return minLong(widest * nr, NC);
}

// Where op(B)(depth, column) lies in B.
static const float *opB(const PackedProduct *p, long depth, long column) {
    return p->transB ? p->b + column * p->ldb + depth : p->b + depth * p->ldb + column;
}

// A transposed A whose k rows lie a multiple of 2 KB apart (the gate-up gradient's 1,024 floats, a
// 512-wide model's activations) maps a block's rows onto a few cache sets, so the block would come
// from L3 again for every panel of B: such a block is packed whole instead, once (elsewhere packing
// costs more than it saves). The packed tiles sum in the same order.
static bool packsBlocksOfA(const PackedProduct *p) { return p->transA && p->lda % 512 == 0; }

// This thread's packed A buffer, room for a block of mc rows or for one panel.
static float *packedABuffer(const PackedProduct *p) {
    const long mr = p->kernel->mr;
    return suder_packingBuffer(PACKED_A, p->kcMax * (packsBlocksOfA(p) ? (p->kernel->mc + mr - 1) / mr * mr : mr));
}

static bool reservePackingBuffers(void *context) {
    const PackedProduct *p = context;
    return packedABuffer(p)
        && (p->packedB || suder_packingBuffer(PACKED_B, p->kcMax * packedWidth(p)));
}

// The tiles of one block of C: rows rowStart..<rowStart+m and columns columnStart+jc..<+nc of C at
// depth pc..<pc+kc, B's panels at `panels` (panelStride floats from one to the next). The calling
// thread's buffers were reserved by reservePackingBuffers or reserveAPacking: only looked up here.
static void blockTiles(const PackedProduct *p, long rowStart, long m, long columnStart, long jc, long nc, long pc,
                       long kc, const float *panels, long panelStride) {
    const PackedKernel *kernel = p->kernel;
    const long MR = kernel->mr, NR = kernel->nr, MC = kernel->mc, lda = p->lda, ldc = p->ldc;
    const bool transA = p->transA, packBlocks = packsBlocksOfA(p);
    const float *a = transA ? p->a + rowStart : p->a + rowStart * lda;
    float *c = p->c + rowStart * ldc + columnStart;
    float *ap = packedABuffer(p);
    float tile[MAX_TILE] __attribute__((aligned(64)));
    const float blockBeta = pc == 0 ? p->beta : 1;  // later depth blocks add to the first
    for (long ic = 0; ic < m; ic += MC) {
        long mc = minLong(MC, m - ic);
        long inPlace = packBlocks ? 0 : mc / MR * MR;
        if (packBlocks)
            packTransposedA(MR, a + pc * lda + ic, lda, mc, kc, ap);
        else if (inPlace < mc)
            packAPanel(MR, transA, transA ? a + pc * lda + ic + inPlace : a + (ic + inPlace) * lda + pc, lda,
                       mc - inPlace, kc, ap);
        for (long jr = 0; jr < nc; jr += NR)
            for (long ir = 0; ir < mc; ir += MR) {
                // The tile's lines of C, which it stores after kc steps: fetched now, a cold line
                // costs no wait at the store.
                float *ct = c + (ic + ir) * ldc + jc + jr;
                for (long i = 0; i < minLong(MR, mc - ir); i++)
                    for (long j = 0; j < minLong(NR, nc - jr); j += 16) __builtin_prefetch(ct + i * ldc + j, 1, 3);
                if (ir < inPlace && transA)
                    kernel->tileTransposed(kc, a + pc * lda + ic + ir, lda, panels + jr * panelStride, tile, jr == 0);
                else if (ir < inPlace)
                    kernel->tileRowMajor(kc, a + (ic + ir) * lda + pc, lda, panels + jr * panelStride, tile, jr == 0);
                else
                    kernel->tilePacked(kc, packBlocks ? ap + ir * kc : ap, panels + jr * panelStride, tile);
                kernel->store(tile, minLong(MR, mc - ir), minLong(NR, nc - jr), p->alpha, blockBeta, ct, ldc);
            }
    }
}

// An item of a product whose items pack their own B (or read it packed whole): its rows, or its
// columns, over every block.
static void packedItem(void *context, long item) {
    const PackedProduct *p = context;
    const PackedKernel *kernel = p->kernel;
    const long NR = kernel->nr, kcMax = p->kcMax, k = p->k;
    // This item's share of C, and the rows of op(A) / columns of op(B) it reads.
    const ItemRange range = itemRange(item, p->items, p->splitColumns ? p->n : p->m, p->splitColumns ? NR : kernel->mr);
    const long m = p->splitColumns ? p->m : range.count, n = p->splitColumns ? range.count : p->n;
    const long rowStart = p->splitColumns ? 0 : range.start, columnStart = p->splitColumns ? range.start : 0;
    float *bp = p->packedB ? NULL : suder_packingBuffer(PACKED_B, kcMax * packedWidth(p));
    for (long jc = 0; jc < n; jc += NC) {
        long nc = minLong(NC, n - jc);
        for (long pc = 0; pc < k; pc += kcMax) {
            long kc = minLong(kcMax, k - pc);
            // A panel of op(B) at depth pc: packed here (kc deep), or in place (k deep).
            if (p->packedB) {
                blockTiles(p, rowStart, m, columnStart, jc, nc, pc, kc, p->packedB + (columnStart + jc) * k + pc * NR, k);
            } else {
                packBPanels(kernel, p->transB, opB(p, pc, columnStart + jc), p->ldb, kc, nc, bp);
                blockTiles(p, rowStart, m, columnStart, jc, nc, pc, kc, bp, kc);
            }
        }
    }
}

// One block of B (columns jc..<jc+nc, depth pc..<pc+kc) of a product whose rows split over items:
// packed once into `panels`, its panels split over the threads, then every item's rows run over it.
typedef struct {
    const PackedProduct *product;
    long jc, nc, pc, kc, packItems;
    float *panels;
} SharedBlock;

static void packSharedPanels(void *context, long item) {
    const SharedBlock *s = context;
    const PackedProduct *p = s->product;
    const ItemRange range = itemRange(item, s->packItems, s->nc, p->kernel->nr);
    packBPanels(p->kernel, p->transB, opB(p, s->pc, s->jc + range.start), p->ldb, s->kc, range.count,
                s->panels + range.start * s->kc);
}

static bool reserveAPacking(void *context) {
    const SharedBlock *s = context;
    return packedABuffer(s->product) != NULL;
}

static void sharedBlockItem(void *context, long item) {
    const SharedBlock *s = context;
    const PackedProduct *p = s->product;
    const ItemRange range = itemRange(item, p->items, p->m, p->kernel->mr);
    blockTiles(p, range.start, range.count, 0, s->jc, s->nc, s->pc, s->kc, s->panels, s->kc);
}

bool suder_packedGemm(const PackedKernel *kernel, int threads, bool transA, bool transB, long m, long n, long k,
                      float alpha, const float *a, long lda, const float *b, long ldb, const float *packedB, float beta,
                      float *c, long ldc) {
    // Equal-depth blocks, so K = 512 with kc 256 runs as 2 x 256 rather than 256 + 256 + a sliver.
    const long blocks = (k + kernel->kc - 1) / kernel->kc;
    // Threads split the larger of m and n (whole micro-panels per item). Split columns, each item
    // packs only its own columns of B and reads A in place.
    const bool splitColumns = n > m;
    const long panels = splitColumns ? (n + kernel->nr - 1) / kernel->nr : (m + kernel->mr - 1) / kernel->mr;
    PackedProduct product = {kernel, transA, transB, splitColumns, m, n, k, (k + blocks - 1) / blocks,
                             parallelItems(threads, panels, (double)m * n * k), alpha, beta, a, b, lda, ldb, ldc, c,
                             packedB};
    if (product.items == 1 || splitColumns || packedB)
        return suder_parallel(threads, product.items, reservePackingBuffers, packedItem, &product);
    // Split rows, each item would pack all of B for itself (4 items a thread: 8 copies on 2
    // threads); instead each block of B is packed once, by all the threads, and then used by all.
    const long bPanels = (n + kernel->nr - 1) / kernel->nr;
    float *shared = suder_packingBuffer(SHARED_B, product.kcMax * packedWidth(&product));
    SharedBlock block = {&product, 0, 0, 0, 0, minLong(bPanels, product.items), shared};
    if (!shared || !reserveAPacking(&block)) return false;
    for (long jc = 0; jc < n; jc += NC)
        for (long pc = 0; pc < k; pc += product.kcMax) {
            block.jc = jc, block.nc = minLong(NC, n - jc), block.pc = pc, block.kc = minLong(product.kcMax, k - pc);
            // The calling thread's buffers are reserved, so neither job can fail.
            suder_parallel(threads, block.packItems, NULL, packSharedPanels, &block);
            suder_parallel(threads, product.items, reserveAPacking, sharedBlockItem, &block);
        }
    return true;
}

// The decode product's few rows against the weights packed once: items are ranges of panels. A
// panel's first tile reads it from L3 or memory, prefetching into the next panel (the panels lie
// back to back); its other tiles find it in L1.
typedef struct {
    const PackedKernel *kernel;
    long m, n, k, lda, ldc, items;
    float alpha, beta;
    const float *a, *packed;
    float *c;
} DecodeProduct;

static void decodeItem(void *context, long item) {
    const DecodeProduct *p = context;
    const PackedKernel *kernel = p->kernel;
    const long NR = kernel->nr;
    const ItemRange range = itemRange(item, p->items, p->n, NR);
    float tile[MAX_TILE] __attribute__((aligned(64)));
    for (long j0 = range.start; j0 < range.start + range.count; j0 += NR) {
        const float *panel = p->packed + j0 * p->k;
        for (long i0 = 0, rows; i0 < p->m; i0 += rows) {
            const long left = p->m - i0;
            rows = left >= kernel->mr ? kernel->mr : left >= 8 ? 8 : left >= 4 ? 4 : left >= 2 ? 2 : 1;
            kernel->decodeTile(rows, p->k, p->a + i0 * p->lda, p->lda, panel, tile, i0 == 0 ? DECODE_AHEAD : 0);
            kernel->store(tile, rows, minLong(NR, p->n - j0), p->alpha, p->beta, p->c + i0 * p->ldc + j0, p->ldc);
        }
    }
}

bool suder_decodeGemm(const PackedKernel *kernel, int threads, long m, long n, long k, float alpha, const float *a,
                      long lda, const float *packed, float beta, float *c, long ldc) {
    if (m > SMALL_M)
        return suder_packedGemm(kernel, threads, false, true, m, n, k, alpha, a, lda, NULL, k, packed, beta, c, ldc);
    const long panels = (n + kernel->nr - 1) / kernel->nr;
    DecodeProduct product = {kernel, m, n, k, lda, ldc, parallelItems(threads, panels, (double)m * n * k),
                             alpha, beta, a, packed, c};
    return suder_parallel(threads, product.items, NULL, decodeItem, &product);
}

#endif
