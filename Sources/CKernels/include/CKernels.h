#ifndef SUDER_CKERNELS_H
#define SUDER_CKERNELS_H
#include <stdbool.h>

/// Whether this CPU runs the AVX-512 kernels below (checked once at load time).
bool suder_kernels_available(void);

/// C = alpha * op(A) * op(B) + beta * C, row-major, op = transpose when the flag is set
/// (cblas_sgemm's meaning; with beta = 0 C is not read). Runs AVX-512 kernels and returns true;
/// returns false without touching C when the CPU lacks AVX-512 or for shapes OpenBLAS does
/// better, and the caller then calls cblas_sgemm. `threads` is the caller's OpenBLAS thread
/// count: the kernels are single-threaded, so with more threads large products stay with OpenBLAS.
bool suder_sgemm(bool transA, bool transB, long m, long n, long k, float alpha,
                 const float *a, long lda, const float *b, long ldb, float beta, float *c, long ldc,
                 int threads);

/// out[i] = e^((x[i] - shift) * scale) for i < count (out may be x); returns the sum of the
/// outputs. Vectorised where the CPU has AVX-512 (error ~1 ulp), else expf.
float suder_exponentials(float *out, const float *x, long count, float shift, float scale);

/// The sampler's cached attention (Sampler.swift, cachedAttentionForward): each of `rows` new rows
/// (qkv rows [q | k | v], 3 channels wide) attends over positions 0...positions[r] of its stream's
/// keys and values (streams x maxSeq x channels), softmax(q k / sqrt(head size)) v per head, into
/// out (rows x channels); scores is scratch of heads x maxSeq floats. Returns false (nothing
/// written) when the CPU lacks AVX-512 or the head size is not a multiple of 16.
bool suder_cached_attention(float *out, const float *qkv, const float *keys, const float *values,
                            const int *streams, const int *positions, float *scores,
                            long rows, long channels, long heads, long maxSeq);

#endif
