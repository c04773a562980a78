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
INLINE AVX512 void weightedValues16(int nb, float *out, const float *values, const float *scores, const float *inv,
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
static AVX512 void attendRow16(float *out, const float *q, const float *keys, const float *values, long count,
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
        inv[h] = 1 / suder_exponentials16(scores + h * maxSeq, scores + h * maxSeq, count, maxScore[h], 1);
    // Blocks of 4 vectors of the output row; each block streams the value rows once.
    long c0 = 0;
    for (; c0 + 64 <= channels; c0 += 64) weightedValues16(4, out, values, scores, inv, c0, count, channels, hs, maxSeq);
    switch ((channels - c0) / 16) {
        case 3: weightedValues16(3, out, values, scores, inv, c0, count, channels, hs, maxSeq); break;
        case 2: weightedValues16(2, out, values, scores, inv, c0, count, channels, hs, maxSeq); break;
        case 1: weightedValues16(1, out, values, scores, inv, c0, count, channels, hs, maxSeq); break;
    }
}


// The AVX2 twin of weightedValues16: 8-float vectors, up to 8 of them (64 channels) per pass.
INLINE AVX2 void weightedValues8(int nb, float *out, const float *values, const float *scores, const float *inv,
                                 long c0, long count, long channels, long hs, long maxSeq) {
    __m256 acc[8];
#pragma clang loop unroll(full)
    for (int b = 0; b < nb; b++) acc[b] = _mm256_setzero_ps();
    for (long j = 0; j < count; j++) {
        const float *v = values + j * channels + c0;
        _mm_prefetch((const char *)(v + AHEAD * channels), _MM_HINT_T0);
#pragma clang loop unroll(full)
        for (int b = 0; b < nb; b++)
            acc[b] = _mm256_fmadd_ps(_mm256_set1_ps(scores[(c0 + 8 * b) / hs * maxSeq + j]), _mm256_loadu_ps(v + 8 * b), acc[b]);
    }
#pragma clang loop unroll(full)
    for (int b = 0; b < nb; b++)
        _mm256_storeu_ps(out + c0 + 8 * b, _mm256_mul_ps(_mm256_set1_ps(inv[(c0 + 8 * b) / hs]), acc[b]));
}

// The AVX2 twin of attendRow16.
static AVX2 void attendRow8(float *out, const float *q, const float *keys, const float *values, long count,
                            long channels, long heads, long maxSeq, float scale, float *scores) {
    const long hs = channels / heads;
    float maxScore[MAX_HEADS], inv[MAX_HEADS];
    for (long h = 0; h < heads; h++) maxScore[h] = -INFINITY;
    for (long j = 0; j < count; j++) {
        const float *k = keys + j * channels;
        for (long c = 0; c < channels; c += 16) _mm_prefetch((const char *)(k + AHEAD * channels + c), _MM_HINT_T0);
        for (long h = 0; h < heads; h++) {
            __m256 dot = _mm256_setzero_ps();
            for (long d = h * hs; d < (h + 1) * hs; d += 8)
                dot = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), _mm256_loadu_ps(k + d), dot);
            float s = scale * sum8(dot);
            scores[h * maxSeq + j] = s;
            maxScore[h] = s > maxScore[h] ? s : maxScore[h];
        }
    }
    for (long h = 0; h < heads; h++)
        inv[h] = 1 / suder_exponentials8(scores + h * maxSeq, scores + h * maxSeq, count, maxScore[h], 1);
    // Blocks of 8 vectors, then 4, 2, 1 for the rest; each block streams the value rows once.
    long c0 = 0;
    for (; c0 + 64 <= channels; c0 += 64) weightedValues8(8, out, values, scores, inv, c0, count, channels, hs, maxSeq);
    if (c0 + 32 <= channels) { weightedValues8(4, out, values, scores, inv, c0, count, channels, hs, maxSeq); c0 += 32; }
    if (c0 + 16 <= channels) { weightedValues8(2, out, values, scores, inv, c0, count, channels, hs, maxSeq); c0 += 16; }
    if (c0 < channels) weightedValues8(1, out, values, scores, inv, c0, count, channels, hs, maxSeq);
}

// The rows of one call; items are rows, each with its own thread's scores.
typedef struct {
    float *out;
    const float *qkv, *keys, *values;
    const int *streams, *positions;
    long channels, heads, maxSeq;
    float scale;
} CachedAttention;

static bool reserveScores(void *context) {
    const CachedAttention *p = context;
    return suder_packingBuffer(SCORES, p->heads * p->maxSeq);
}

static void attendItem(void *context, long r) {
    const CachedAttention *p = context;
    const long base = (long)p->streams[r] * p->maxSeq * p->channels;
    // Reserved by reserveScores on this thread: this only looks the buffer up.
    float *scores = suder_packingBuffer(SCORES, p->heads * p->maxSeq);
    (suder_activeKernels == SUDER_KERNELS_AVX512 ? attendRow16 : attendRow8)(
        p->out + r * p->channels, p->qkv + r * 3 * p->channels, p->keys + base, p->values + base, p->positions[r] + 1L,
        p->channels, p->heads, p->maxSeq, p->scale, scores);
}

#endif

bool suder_cached_attention_applies(long channels, long heads) {
#if defined(__x86_64__)
    const bool wide = suder_activeKernels == SUDER_KERNELS_AVX512;
    // Whole vectors per head keep the loops mask-free; other shapes take the caller's path.
    return suder_activeKernels != SUDER_KERNELS_BLAS && (channels / heads) % (wide ? 16 : 8) == 0 && heads <= MAX_HEADS;
#else
    return false;
#endif
}

bool suder_cached_attention(float *out, const float *qkv, const float *keys, const float *values,
                            const int *streams, const int *positions, long rows, long channels, long heads,
                            long maxSeq, int threads) {
#if defined(__x86_64__)
    if (!suder_cached_attention_applies(channels, heads)) return false;
    const long hs = channels / heads;
    CachedAttention attention = {out, qkv, keys, values, streams, positions, channels, heads, maxSeq, 1 / sqrtf((float)hs)};
    // Per cached position and channel: two multiply-adds over 8 bytes of cache read from L3 or
    // memory, about as long as 8 multiply-adds of a product.
    double work = 0;
    for (long r = 0; r < rows; r++) work += 8.0 * (positions[r] + 1) * channels;
    return suder_parallel(work < suder_parallel_min_work ? 1 : threads, rows, reserveScores, attendItem, &attention);
#else
    return false;
#endif
}
