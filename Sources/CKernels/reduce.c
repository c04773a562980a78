// Vectorised sums and maxima along a row for the layers' per-row loops (norms, softmaxes,
// attention's backward). Compiled Swift keeps a loop's one accumulator, so such a loop waits on
// every add's latency; here several vector accumulators run side by side.
#include "CKernels.h"
#include "simd.h"
#include <math.h>

#if defined(__x86_64__)

// sum_i a[i] b[i] (c[i] when c is not NULL): four 16-lane accumulators, a masked tail.
static AVX512 float dot16(const float *a, const float *b, const float *c, long count) {
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    long i = 0;
    for (; i + 64 <= count; i += 64)
        for (int v = 0; v < 4; v++) {
            __m512 x = _mm512_loadu_ps(a + i + 16 * v);
            if (c) x = _mm512_mul_ps(x, _mm512_loadu_ps(c + i + 16 * v));
            acc[v] = _mm512_fmadd_ps(x, _mm512_loadu_ps(b + i + 16 * v), acc[v]);
        }
    for (; i < count; i += 16) {
        __mmask16 mask = tailMask(count - i);
        __m512 x = _mm512_maskz_loadu_ps(mask, a + i);
        if (c) x = _mm512_mul_ps(x, _mm512_maskz_loadu_ps(mask, c + i));
        acc[0] = _mm512_fmadd_ps(x, _mm512_maskz_loadu_ps(mask, b + i), acc[0]);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
}

static AVX512 float max16(const float *x, long count) {
    __m512 best = _mm512_set1_ps(-INFINITY);
    long i = 0;
    for (; i + 16 <= count; i += 16) best = _mm512_max_ps(best, _mm512_loadu_ps(x + i));
    if (i < count) best = _mm512_mask_max_ps(best, tailMask(count - i), best, _mm512_maskz_loadu_ps(tailMask(count - i), x + i));
    return _mm512_reduce_max_ps(best);
}

// The AVX2 twins: four 8-lane accumulators, the last few elements one by one.
static AVX2 float dot8(const float *a, const float *b, const float *c, long count) {
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    long i = 0;
    for (; i + 32 <= count; i += 32)
        for (int v = 0; v < 4; v++) {
            __m256 x = _mm256_loadu_ps(a + i + 8 * v);
            if (c) x = _mm256_mul_ps(x, _mm256_loadu_ps(c + i + 8 * v));
            acc[v] = _mm256_fmadd_ps(x, _mm256_loadu_ps(b + i + 8 * v), acc[v]);
        }
    for (; i + 8 <= count; i += 8) {
        __m256 x = _mm256_loadu_ps(a + i);
        if (c) x = _mm256_mul_ps(x, _mm256_loadu_ps(c + i));
        acc[0] = _mm256_fmadd_ps(x, _mm256_loadu_ps(b + i), acc[0]);
    }
    float sum = sum8(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
    for (; i < count; i++) sum += c ? a[i] * c[i] * b[i] : a[i] * b[i];
    return sum;
}

static AVX2 float max8(const float *x, long count) {
    __m256 best = _mm256_set1_ps(-INFINITY);
    long i = 0;
    for (; i + 8 <= count; i += 8) best = _mm256_max_ps(best, _mm256_loadu_ps(x + i));
    __m128 four = _mm_max_ps(_mm256_castps256_ps128(best), _mm256_extractf128_ps(best, 1));
    four = _mm_max_ps(four, _mm_movehl_ps(four, four));
    float result = _mm_cvtss_f32(_mm_max_ss(four, _mm_movehdup_ps(four)));
    for (; i < count; i++) result = x[i] > result ? x[i] : result;
    return result;
}

#endif

float suder_dot(const float *a, const float *b, const float *c, long count) {
#if defined(__x86_64__)
    if (suder_activeKernels == SUDER_KERNELS_AVX512) return dot16(a, b, c, count);
    if (suder_activeKernels == SUDER_KERNELS_AVX2) return dot8(a, b, c, count);
#endif
    float sum = 0;
    for (long i = 0; i < count; i++) sum += c ? a[i] * c[i] * b[i] : a[i] * b[i];
    return sum;
}

float suder_maximum(const float *x, long count) {
#if defined(__x86_64__)
    if (suder_activeKernels == SUDER_KERNELS_AVX512) return max16(x, count);
    if (suder_activeKernels == SUDER_KERNELS_AVX2) return max8(x, count);
#endif
    float result = -INFINITY;
    for (long i = 0; i < count; i++) result = x[i] > result ? x[i] : result;
    return result;
}
