// Vectorised e^x for the softmaxes, and SwiGLU with its e^-x in the same pass (glibc's expf is
// scalar: ~8% of a training step).
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

// 1 / (1 + e^-g), SwiGLU's gate.
INLINE AVX512 __m512 sigmoid16(__m512 g) {
    const __m512 one = _mm512_set1_ps(1);
    return _mm512_div_ps(one, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), g))));
}

INLINE AVX2 __m256 sigmoid8(__m256 g) {
    const __m256 one = _mm256_set1_ps(1);
    return _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), g))));
}

// SwiGLU over rows of [gate | up] (see suder_swiglu_forward): e^-g and the products in one pass.
// The rows come from memory (a layer's gate and up outgrow the caches): each pass fetches the
// next row's lines as it goes.
static AVX512 void swigluForward16(float *h, const float *gu, long rows, long width) {
    for (long r = 0; r < rows; r++) {
        const float *g = gu + r * 2 * width, *u = g + width;
        float *y = h + r * width;
        for (long i = 0; i < width; i += 16) {
            _mm_prefetch((const char *)(g + 2 * width + i), _MM_HINT_T0);
            _mm_prefetch((const char *)(u + 2 * width + i), _MM_HINT_T0);
            __mmask16 mask = tailMask(width - i);
            __m512 gv = _mm512_maskz_loadu_ps(mask, g + i), uv = _mm512_maskz_loadu_ps(mask, u + i);
            __m512 sig = sigmoid16(gv);
            _mm512_mask_storeu_ps(y + i, mask, _mm512_mul_ps(_mm512_mul_ps(gv, uv), sig));
        }
    }
}

static AVX512 void swigluBackward16(float *dgu, const float *dh, const float *gu, long rows, long width) {
    const __m512 one = _mm512_set1_ps(1);
    for (long r = 0; r < rows; r++) {
        const float *g = gu + r * 2 * width, *u = g + width, *dy = dh + r * width;
        float *dg = dgu + r * 2 * width, *du = dg + width;
        for (long i = 0; i < width; i += 16) {
            _mm_prefetch((const char *)(g + 2 * width + i), _MM_HINT_T0);
            _mm_prefetch((const char *)(u + 2 * width + i), _MM_HINT_T0);
            _mm_prefetch((const char *)(dy + width + i), _MM_HINT_T0);
            __mmask16 mask = tailMask(width - i);
            __m512 gv = _mm512_maskz_loadu_ps(mask, g + i), uv = _mm512_maskz_loadu_ps(mask, u + i);
            __m512 dyv = _mm512_maskz_loadu_ps(mask, dy + i);
            __m512 sig = sigmoid16(gv);
            __m512 slope = _mm512_fmadd_ps(gv, _mm512_sub_ps(one, sig), one);  // 1 + g (1 - sig)
            _mm512_mask_storeu_ps(dg + i, mask, _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(dyv, uv), sig), slope));
            _mm512_mask_storeu_ps(du + i, mask, _mm512_mul_ps(_mm512_mul_ps(dyv, gv), sig));
        }
    }
}

// The AVX2 twins; a width that is not a multiple of 8 takes the plain loops.
static AVX2 void swigluForward8(float *h, const float *gu, long rows, long width) {
    for (long r = 0; r < rows; r++) {
        const float *g = gu + r * 2 * width, *u = g + width;
        float *y = h + r * width;
        for (long i = 0; i < width; i += 8) {
            if (i % 16 == 0) {
                _mm_prefetch((const char *)(g + 2 * width + i), _MM_HINT_T0);
                _mm_prefetch((const char *)(u + 2 * width + i), _MM_HINT_T0);
            }
            __m256 gv = _mm256_loadu_ps(g + i), uv = _mm256_loadu_ps(u + i);
            __m256 sig = sigmoid8(gv);
            _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(gv, uv), sig));
        }
    }
}

static AVX2 void swigluBackward8(float *dgu, const float *dh, const float *gu, long rows, long width) {
    const __m256 one = _mm256_set1_ps(1);
    for (long r = 0; r < rows; r++) {
        const float *g = gu + r * 2 * width, *u = g + width, *dy = dh + r * width;
        float *dg = dgu + r * 2 * width, *du = dg + width;
        for (long i = 0; i < width; i += 8) {
            if (i % 16 == 0) {
                _mm_prefetch((const char *)(g + 2 * width + i), _MM_HINT_T0);
                _mm_prefetch((const char *)(u + 2 * width + i), _MM_HINT_T0);
                _mm_prefetch((const char *)(dy + width + i), _MM_HINT_T0);
            }
            __m256 gv = _mm256_loadu_ps(g + i), uv = _mm256_loadu_ps(u + i), dyv = _mm256_loadu_ps(dy + i);
            __m256 sig = sigmoid8(gv);
            __m256 slope = _mm256_fmadd_ps(gv, _mm256_sub_ps(one, sig), one);
            _mm256_storeu_ps(dg + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(dyv, uv), sig), slope));
            _mm256_storeu_ps(du + i, _mm256_mul_ps(_mm256_mul_ps(dyv, gv), sig));
        }
    }
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

void suder_swiglu_forward(float *h, const float *gu, long rows, long width) {
#if defined(__x86_64__)
    if (suder_activeKernels == SUDER_KERNELS_AVX512) return swigluForward16(h, gu, rows, width);
    if (suder_activeKernels == SUDER_KERNELS_AVX2 && width % 8 == 0) return swigluForward8(h, gu, rows, width);
#endif
    for (long r = 0; r < rows; r++)
        for (long i = 0; i < width; i++) {
            float g = gu[r * 2 * width + i], u = gu[r * 2 * width + width + i];
            h[r * width + i] = g * u / (1 + expf(-g));
        }
}

void suder_swiglu_backward(float *dgu, const float *dh, const float *gu, long rows, long width) {
#if defined(__x86_64__)
    if (suder_activeKernels == SUDER_KERNELS_AVX512) return swigluBackward16(dgu, dh, gu, rows, width);
    if (suder_activeKernels == SUDER_KERNELS_AVX2 && width % 8 == 0) return swigluBackward8(dgu, dh, gu, rows, width);
#endif
    for (long r = 0; r < rows; r++)
        for (long i = 0; i < width; i++) {
            float g = gu[r * 2 * width + i], u = gu[r * 2 * width + width + i], dy = dh[r * width + i];
            float sig = 1 / (1 + expf(-g));
            dgu[r * 2 * width + i] = dy * u * sig * (1 + g * (1 - sig));
            dgu[r * 2 * width + width + i] = dy * g * sig;
        }
}
