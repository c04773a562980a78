// Vectorised e^x for the softmaxes and SwiGLU (glibc's expf is scalar: ~8% of a training step).
#include "CKernels.h"
#include "simd.h"
#include <math.h>

#if defined(__x86_64__)

// Cephes' expf, the same on both paths: x = n ln2 + r with |r| <= ln2 / 2 (ln2 split in two so
// n ln2 is exact), e^r by its degree-7 polynomial (error ~1 ulp), then times 2^n. Clamping x to
// [-110, 100] (already 0 and inf) keeps r finite for infinite x; a NaN passes (min / max return
// their second operand when one is NaN).
#define EXP_LOG2E 1.44269504088896341f
#define EXP_LN2_HI 0.693359375f
#define EXP_LN2_LO -2.12194440e-4f
#define EXP_P0 1.9875691500e-4f
#define EXP_P1 1.3981999507e-3f
#define EXP_P2 8.3334519073e-3f
#define EXP_P3 4.1665795894e-2f
#define EXP_P4 1.6666665459e-1f
#define EXP_P5 5.0000001201e-1f

// 16 lanes; 2^n by vscalefps, which gives 0 below the float range and inf above.
INLINE AVX512 __m512 exp16(__m512 x) {
    x = _mm512_max_ps(_mm512_set1_ps(-110.0f), _mm512_min_ps(_mm512_set1_ps(100.0f), x));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(EXP_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(EXP_LN2_HI), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(EXP_LN2_LO), r);
    __m512 p = _mm512_set1_ps(EXP_P0);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P5));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

// 2^n for integer n in [-126, 127], built in the exponent field.
INLINE AVX2 __m256 powerOfTwo8(__m256i n) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n, _mm256_set1_epi32(127)), 23));
}

// 8 lanes; AVX2 has no vscalefps, so 2^n is applied as two factors 2^(n/2) 2^(n - n/2), each a
// normal float for n in [-159, 145]: the product then rounds to 0, a subnormal or inf as scalef does.
INLINE AVX2 __m256 exp8(__m256 x) {
    x = _mm256_max_ps(_mm256_set1_ps(-110.0f), _mm256_min_ps(_mm256_set1_ps(100.0f), x));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(EXP_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(EXP_LN2_HI), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(EXP_LN2_LO), r);
    __m256 p = _mm256_set1_ps(EXP_P0);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P5));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i whole = _mm256_cvtps_epi32(n), half = _mm256_srai_epi32(whole, 1);
    return _mm256_mul_ps(_mm256_mul_ps(p, powerOfTwo8(half)), powerOfTwo8(_mm256_sub_epi32(whole, half)));
}

AVX512 float suder_exponentials16(float *out, const float *x, long count, float shift, float scale) {
    const __m512 vshift = _mm512_set1_ps(shift), vscale = _mm512_set1_ps(scale);
    __m512 sum = _mm512_setzero_ps();
    for (long i = 0; i < count; i += 16) {
        __mmask16 mask = tailMask(count - i);
        __m512 e = exp16(_mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, x + i), vshift), vscale));
        _mm512_mask_storeu_ps(out + i, mask, e);
        sum = _mm512_mask_add_ps(sum, mask, sum, e);
    }
    return _mm512_reduce_add_ps(sum);
}

// The tail (< 8 values) goes through a small buffer: AVX2's masked loads are slow to set up.
AVX2 float suder_exponentials8(float *out, const float *x, long count, float shift, float scale) {
    const __m256 vshift = _mm256_set1_ps(shift), vscale = _mm256_set1_ps(scale);
    __m256 sum = _mm256_setzero_ps();
    long i = 0;
    for (; i + 8 <= count; i += 8) {
        __m256 e = exp8(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vshift), vscale));
        _mm256_storeu_ps(out + i, e);
        sum = _mm256_add_ps(sum, e);
    }
    float lanes[8] __attribute__((aligned(32))) = {0};
    if (i < count) {
        for (long j = 0; j < count - i; j++) lanes[j] = x[i + j];
        __m256 e = exp8(_mm256_mul_ps(_mm256_sub_ps(_mm256_load_ps(lanes), vshift), vscale));
        _mm256_store_ps(lanes, e);
        for (long j = 0; j < count - i; j++) out[i + j] = lanes[j];
        for (long j = count - i; j < 8; j++) lanes[j] = 0;
    }
    sum = _mm256_add_ps(sum, _mm256_load_ps(lanes));
    __m128 four = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps(sum, 1));
    four = _mm_add_ps(four, _mm_movehl_ps(four, four));
    return _mm_cvtss_f32(_mm_add_ss(four, _mm_movehdup_ps(four)));
}

#endif

float suder_exponentials(float *out, const float *x, long count, float shift, float scale) {
#if defined(__x86_64__)
    if (suder_activeKernels == SUDER_KERNELS_AVX512) return suder_exponentials16(out, x, count, shift, scale);
    if (suder_activeKernels == SUDER_KERNELS_AVX2) return suder_exponentials8(out, x, count, shift, scale);
#endif
    float sum = 0;
    for (long i = 0; i < count; i++) sum += out[i] = expf((x[i] - shift) * scale);
    return sum;
}
