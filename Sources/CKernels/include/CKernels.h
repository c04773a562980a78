#ifndef SUDER_CKERNELS_H
#define SUDER_CKERNELS_H
#include <stdbool.h>

/// Which kernels run the Float products, exponentials and the sampler's attention.
typedef enum {
    SUDER_KERNELS_BLAS = 0,    // OpenBLAS products, libm expf, sgemv attention (any CPU)
    SUDER_KERNELS_AVX2 = 1,    // 256-bit AVX2 + FMA kernels
    SUDER_KERNELS_AVX512 = 2,  // 512-bit AVX-512F + FMA kernels
} SuderKernels;

/// The CPU features `path` needs that this CPU lacks, comma-separated ("" when it has them all).
const char *suder_kernels_missing(SuderKernels path);
/// The best path this CPU has (chosen at load time).
SuderKernels suder_kernels_best(void);
/// The path in use.
SuderKernels suder_kernels_active(void);
/// The OpenBLAS kernel family this CPU should run (an OPENBLAS_CORETYPE name): SkylakeX (Cooperlake
/// with AVX-512 BF16) with AVX-512, Haswell with AVX2 + FMA; "" for older CPUs.
const char *suder_openblas_core(void);
/// Switches every entry point to `path`; false (nothing changed) when the CPU lacks it.
/// Not thread-safe: call before the products run, not during.
bool suder_kernels_select(SuderKernels path);

/// Packed-path blocking for `path` (0 for the BLAS path): the depth of a block, fixed per path so
/// that products round the same on every CPU, and the rows of A per block, from the L2 size they
/// were planned for, which goes to l2 (bytes; this CPU's, or 512 KB when it reports none).
void suder_kernels_blocking(SuderKernels path, long *kc, long *mc, long *l2);
/// Plans the rows of A per block for an L2 of `l2` bytes (done for this CPU's at load time; tests
/// plan others). Not thread-safe: call before the products run, not during.
void suder_kernels_plan_blocking(long l2);

/// One core's FMA peak in GFLOP/s with the vectors of `path` (512-bit for avx512, 256-bit for
/// avx2, the widest the CPU has for blas), measured by a loop of independent FMAs for about `seconds`; 0 when the CPU
/// lacks FMA.
double suder_fma_peak_gflops(SuderKernels path, double seconds);

/// C = alpha * op(A) * op(B) + beta * C, row-major, op = transpose when the flag is set
/// (cblas_sgemm's meaning; with beta = 0 C is not read). Runs the active path's kernels and
/// returns true; returns false without touching C on the BLAS path, and the caller then calls
/// cblas_sgemm. Products large enough to pay for it are split over up to `threads` threads
/// (suder_parallel) by blocks of C, so the result is the same bit for bit for any `threads`.
bool suder_sgemm(bool transA, bool transB, long m, long n, long k, float alpha,
                 const float *a, long lda, const float *b, long ldb, float beta, float *c, long ldc,
                 int threads);

/// Floats W (n x k, row-major) takes packed for the active path's decode product; 0 on the BLAS
/// path, which has none.
long suder_decode_packed_floats(long n, long k);

/// Packs W for suder_decode_gemm on the active path (suder_decode_packed_floats floats at `packed`,
/// 64-byte aligned).
void suder_decode_pack(const float *w, long n, long k, float *packed);

/// C = alpha * A * W^T + beta * C, W packed by suder_decode_pack on the active path: the same bits
/// as suder_sgemm(false, true, ...) with W, for any `threads`, without reading W or copying it.
/// Returns false without touching C on the BLAS path, for an empty product, or out of memory.
bool suder_decode_gemm(long m, long n, long k, float alpha, const float *a, long lda, const float *packed,
                       float beta, float *c, long ldc, int threads);

/// out[i] = e^((x[i] - shift) * scale) for i < count (out may be x); returns the sum of the
/// outputs. Vectorised on the AVX-512 and AVX2 paths (error ~1 ulp), else expf.
float suder_exponentials(float *out, const float *x, long count, float shift, float scale);

/// Rotary position embedding, in place: in each of `rows` rows (rowStride apart), `heads` heads of
/// 2 half floats each from the row's start are rotated pairwise (i, i + half) by the angles of
/// the row's position (cosTable / sinTable rows of half floats); `inverse` rotates back.
void suder_rope(float *x, long rowStride, long rows, const int *positions, long heads, const float *cosTable,
                const float *sinTable, long half, bool inverse);

/// SwiGLU over `rows` rows: h[r][i] = silu(g) u with g = gu[r][i], u = gu[r][width + i] (gu rows
/// are [gate | up], 2 width floats; h rows width floats). Vectorised as suder_exponentials.
void suder_swiglu_forward(float *h, const float *gu, long rows, long width);

/// Differentiates suder_swiglu_forward: dgu rows [d gate | d up] (overwritten) from dh and gu.
void suder_swiglu_backward(float *dgu, const float *dh, const float *gu, long rows, long width);

/// sum_i a[i] b[i] c[i] for i < count, or sum_i a[i] b[i] when c is NULL: several vector
/// accumulators on the AVX-512 and AVX2 paths (so the order of the additions differs from a plain
/// loop's), a plain loop on the BLAS path.
float suder_dot(const float *a, const float *b, const float *c, long count);

/// The largest of x[0..<count] (-inf when count is 0; NaNs are not looked for).
float suder_maximum(const float *x, long count);

/// Whether suder_cached_attention takes `heads` heads over `channels` channels on the active
/// path; when it does not, the caller's path (OpenBLAS) does.
bool suder_cached_attention_applies(long channels, long heads);

/// The sampler's cached attention (Sampler.swift, cachedAttentionForward): each of `rows` new rows
/// (qkv rows [q | k | v], 3 channels wide) attends over positions 0...positions[r] of its stream's
/// keys and values (streams x maxSeq x channels), softmax(q k / sqrt(head size)) v per head, into
/// out (rows x channels); rows are split over up to `threads` threads when there are enough cached
/// positions to pay for it (bitwise the same result). Returns false (nothing written) where it
/// does not apply (suder_cached_attention_applies: the BLAS path, or a head size that is not a
/// multiple of the path's vector, 16 floats for AVX-512 and 8 for AVX2) or when out of memory for
/// the scores.
bool suder_cached_attention(float *out, const float *qkv, const float *keys, const float *values,
                            const int *streams, const int *positions, long rows, long channels, long heads,
                            long maxSeq, int threads);

/// Multiply-adds below which a product or an attention call stays on the calling thread: handing
/// a job to the pool's polling workers and waiting for them costs a few microseconds, while one
/// thread needs ~8 for 2^20 multiply-adds (the default). Tests lower it to split small shapes.
extern long suder_parallel_min_work;

/// Runs body(context, i) for every i < count on the calling thread and up to threads - 1 workers
/// of the kernels' thread pool (started on first use and kept, polling and then asleep between
/// jobs), each thread taking the next item as it finishes one: items must be independent.
/// `prepare` (may be NULL) runs first on each thread that takes part, e.g. to size its scratch; a
/// worker whose prepare fails takes no items. One thread, or a pool busy with another caller's
/// job, runs every item here. Returns false, having run nothing, when the calling thread's
/// prepare fails.
bool suder_parallel(int threads, long count, bool (*prepare)(void *context), void (*body)(void *context, long item),
                    void *context);

#endif
