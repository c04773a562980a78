// Attention of the sampler's new rows over their streams' KV cache (one row at a time: the
// products are 1 x HS by HS x positions, too small for gemm, and sgemv's per-call cost dominated).
#include "CKernels.h"
#include "simd.h"

#if defined(__x86_64__)
#include <math.h>

// out = sum_j softmax_j(scale q . k_j) v_j over j < count, k_j = keys + j ld, v_j = values + j ld.
static AVX512 void attendRow(float *out, const float *q, const float *keys, const float *values, long ld,
                             long count, long hs, float scale, float *scores) {
    float maxScore = -INFINITY;
    for (long j = 0; j < count; j++) {
        __m512 dot = _mm512_setzero_ps();
        for (long d = 0; d < hs; d += 16) {
            __mmask16 mask = tailMask(hs - d);
            dot = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, q + d), _mm512_maskz_loadu_ps(mask, keys + j * ld + d), dot);
        }
        scores[j] = scale * _mm512_reduce_add_ps(dot);
        maxScore = scores[j] > maxScore ? scores[j] : maxScore;
    }
    const __m512 inv = _mm512_set1_ps(1 / suder_exponentials(scores, scores, count, maxScore, 1));
    for (long d = 0; d < hs; d += 16) {
        __mmask16 mask = tailMask(hs - d);
        __m512 even = _mm512_setzero_ps(), odd = _mm512_setzero_ps();  // two chains hide FMA latency
        long j = 0;
        for (; j + 1 < count; j += 2) {
            even = _mm512_fmadd_ps(_mm512_set1_ps(scores[j]), _mm512_maskz_loadu_ps(mask, values + j * ld + d), even);
            odd = _mm512_fmadd_ps(_mm512_set1_ps(scores[j + 1]), _mm512_maskz_loadu_ps(mask, values + (j + 1) * ld + d), odd);
        }
        if (j < count) even = _mm512_fmadd_ps(_mm512_set1_ps(scores[j]), _mm512_maskz_loadu_ps(mask, values + j * ld + d), even);
        _mm512_mask_storeu_ps(out + d, mask, _mm512_mul_ps(_mm512_add_ps(even, odd), inv));
    }
}

#endif

bool suder_cached_attention(float *out, const float *qkv, const float *keys, const float *values,
                            const int *streams, const int *positions, float *scores,
                            long rows, long channels, long heads, long maxSeq) {
#if defined(__x86_64__)
    if (!suder_cpuHasAVX512) return false;
    const long hs = channels / heads;
    const float scale = 1 / sqrtf((float)hs);
    for (long r = 0; r < rows; r++) {
        const long base = (long)streams[r] * maxSeq * channels;
        for (long h = 0; h < heads; h++)
            attendRow(out + r * channels + h * hs, qkv + r * 3 * channels + h * hs, keys + base + h * hs,
                      values + base + h * hs, channels, positions[r] + 1L, hs, scale, scores);
    }
    return true;
#else
    return false;
#endif
}
