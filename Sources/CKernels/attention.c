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

// out[c0 ..< c0 + 16 nb] = inv_h sum_j e_hj v_j[c] for the heads h of those channels (nb vectors
// in registers; callers pass a constant nb).
INLINE AVX512 void weightedValues(int nb, float *out, const float *values, const float *scores, const float *inv,
                                  long c0, long count, long channels, long hs, long maxSeq) {
    __m512 acc[4];
#pragma clang loop unroll(full)
    for (int b = 0; b < nb; b++) acc[b] = _mm512_setzero_ps();
    for (long j = 0; j < count; j++) {
        const float *v = values + j * channels + c0;
        _mm_prefetch((const char *)(v + AHEAD * channels), _MM_HINT_T0);
#pragma clang loop unroll(full)
        for (int b = 0; b < nb; b++)
            acc[b] = _mm512_fmadd_ps(_mm512_set1_ps(scores[(c0 + 16 * b) / hs * maxSeq + j]), _mm512_loadu_ps(v + 16 * b), acc[b]);
    }
#pragma clang loop unroll(full)
    for (int b = 0; b < nb; b++)
        _mm512_storeu_ps(out + c0 + 16 * b, _mm512_mul_ps(_mm512_set1_ps(inv[(c0 + 16 * b) / hs]), acc[b]));
}

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
    // Blocks of 4 vectors of the output row; each block streams the value rows once.
    long c0 = 0;
    for (; c0 + 64 <= channels; c0 += 64) weightedValues(4, out, values, scores, inv, c0, count, channels, hs, maxSeq);
    switch ((channels - c0) / 16) {
        case 3: weightedValues(3, out, values, scores, inv, c0, count, channels, hs, maxSeq); break;
        case 2: weightedValues(2, out, values, scores, inv, c0, count, channels, hs, maxSeq); break;
        case 1: weightedValues(1, out, values, scores, inv, c0, count, channels, hs, maxSeq); break;
    }
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
