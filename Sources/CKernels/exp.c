// Vectorised e^x for the softmaxes and SwiGLU (glibc's expf is scalar: ~8% of a training step).
#include "CKernels.h"
#include "simd.h"
#include <math.h>

#if defined(__x86_64__)

// e^x on 16 lanes, Cephes' expf: x = n ln2 + r with |r| <= ln2 / 2 (ln2 split in two so n ln2 is
// exact), e^r by its degree-7 polynomial (error ~1 ulp), then times 2^n by vscalefps, which gives
// 0 below the float range and inf above. Clamping x to [-110, 100] (already 0 and inf) keeps r
// finite for infinite x; a NaN passes (min / max return their second operand when one is NaN).
INLINE AVX512 __m512 exp16(__m512 x) {
    x = _mm512_max_ps(_mm512_set1_ps(-110.0f), _mm512_min_ps(_mm512_set1_ps(100.0f), x));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

static AVX512 float exponentials16(float *out, const float *x, long count, float shift, float scale) {
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

#endif

float suder_exponentials(float *out, const float *x, long count, float shift, float scale) {
#if defined(__x86_64__)
    if (suder_cpuHasAVX512) return exponentials16(out, x, count, shift, scale);
#endif
    float sum = 0;
    for (long i = 0; i < count; i++) sum += out[i] = expf((x[i] - shift) * scale);
    return sum;
}
