// Attention of the sampler's new rows over their streams' KV cache. The products are 1 x HS by
// HS x positions, too small for gemm, and per (row, head) sgemv calls were dominated by their
// per-call cost; the cache rows of a stream are contiguous (positions x channels), so one pass
// over them per row serves every head and streams memory in order for the prefetcher.
#include "CKernels.h"
#include "simd.h"

#if defined(__x86_64__)
#include <math.h>

enum {
    MAX_HEADS = 64,
    AHEAD = 8,  // cache rows prefetched ahead: the cache is read once per step, mostly from memory
};

// out (channels) = per head h: sum_j softmax_j(scale q_h . k_jh) v_jh over j < count, where
// k_j = keys + j channels and v_j = values + j channels; scores holds heads rows of maxSeq.
static AVX512 void attendRow(float *out, const float *q, const float *keys, const float *values, long count,
                             long channels, long heads, long maxSeq, float scale, float *scores) {
    const long hs = channels / heads;
    float maxScore[MAX_HEADS], inv[MAX_HEADS];
    for (long h = 0; h < heads; h++) maxScore[h] = -INFINITY;
    for (long j = 0; j < count; j++) {
        const float *k = keys + j * channels;
        for (long c = 0; c < channels; c += 16) _mm_prefetch((const char *)(k + AHEAD * channels + c), _MM_HINT_T0);
        for (long h = 0; h < heads; h++) {
            __m512 dot = _mm512_setzero_ps();
            for (long d = h * hs; d < (h + 1) * hs; d += 16)
                dot = _mm512_fmadd_ps(_mm512_loadu_ps(q + d), _mm512_loadu_ps(k + d), dot);
            float s = scale * _mm512_reduce_add_ps(dot);
            scores[h * maxSeq + j] = s;
            maxScore[h] = s > maxScore[h] ? s : maxScore[h];
        }
    }
    for (long h = 0; h < heads; h++)
        inv[h] = 1 / suder_exponentials(scores + h * maxSeq, scores + h * maxSeq, count, maxScore[h], 1);
    for (long c = 0; c < channels; c += 16) _mm512_storeu_ps(out + c, _mm512_setzero_ps());
    for (long j = 0; j < count; j++) {
        const float *v = values + j * channels;
        for (long c = 0; c < channels; c += 16) _mm_prefetch((const char *)(v + AHEAD * channels + c), _MM_HINT_T0);
        for (long c = 0; c < channels; c += 16) {
            __m512 weight = _mm512_set1_ps(scores[c / hs * maxSeq + j]);
            _mm512_storeu_ps(out + c, _mm512_fmadd_ps(weight, _mm512_loadu_ps(v + c), _mm512_loadu_ps(out + c)));
        }
    }
    for (long c = 0; c < channels; c += 16)
        _mm512_storeu_ps(out + c, _mm512_mul_ps(_mm512_set1_ps(inv[c / hs]), _mm512_loadu_ps(out + c)));
}

#endif

bool suder_cached_attention(float *out, const float *qkv, const float *keys, const float *values,
                            const int *streams, const int *positions, float *scores,
                            long rows, long channels, long heads, long maxSeq) {
#if defined(__x86_64__)
    const long hs = channels / heads;
    // Whole vectors per head keep the loops mask-free; other shapes take the caller's path.
    if (!suder_cpuHasAVX512 || hs % 16 != 0 || heads > MAX_HEADS) return false;
    const float scale = 1 / sqrtf((float)hs);
    for (long r = 0; r < rows; r++) {
        const long base = (long)streams[r] * maxSeq * channels;
        attendRow(out + r * channels, qkv + r * 3 * channels, keys + base, values + base, positions[r] + 1L,
                  channels, heads, maxSeq, scale, scores);
    }
    return true;
#else
    return false;
#endif
}
