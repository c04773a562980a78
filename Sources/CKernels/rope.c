// Rotary position embedding over rows of q and k, in place (Layers.swift, ropeRotate). The rows
// are the qkv projection's output, which comes from memory in a training step: each row's pass
// fetches the next row's lines as it goes.
#include "CKernels.h"
#include "simd.h"

#if defined(__x86_64__)

static AVX512 void rope16(float *x, long rowStride, long rows, const int *positions, long heads, const float *cosTable,
                          const float *sinTable, long half, bool inverse) {
    const __m512 sign = _mm512_set1_ps(inverse ? -1 : 1);
    for (long r = 0; r < rows; r++) {
        const float *c = cosTable + (long)positions[r] * half, *s = sinTable + (long)positions[r] * half;
        float *row = x + r * rowStride;
        for (long h = 0; h < heads; h++) {
            float *head = row + h * 2 * half;
            for (long i = 0; i < 2 * half; i += 16) _mm_prefetch((const char *)(head + rowStride + i), _MM_HINT_T0);
            for (long i = 0; i < half; i += 16) {
                __mmask16 mask = tailMask(half - i);
                __m512 cv = _mm512_maskz_loadu_ps(mask, c + i), sv = _mm512_mul_ps(sign, _mm512_maskz_loadu_ps(mask, s + i));
                __m512 x1 = _mm512_maskz_loadu_ps(mask, head + i), x2 = _mm512_maskz_loadu_ps(mask, head + half + i);
                _mm512_mask_storeu_ps(head + i, mask, _mm512_fmsub_ps(x1, cv, _mm512_mul_ps(x2, sv)));
                _mm512_mask_storeu_ps(head + half + i, mask, _mm512_fmadd_ps(x2, cv, _mm512_mul_ps(x1, sv)));
            }
        }
    }
}

// The AVX2 twin, for half a head a multiple of 8.
static AVX2 void rope8(float *x, long rowStride, long rows, const int *positions, long heads, const float *cosTable,
                       const float *sinTable, long half, bool inverse) {
    const __m256 sign = _mm256_set1_ps(inverse ? -1 : 1);
    for (long r = 0; r < rows; r++) {
        const float *c = cosTable + (long)positions[r] * half, *s = sinTable + (long)positions[r] * half;
        float *row = x + r * rowStride;
        for (long h = 0; h < heads; h++) {
            float *head = row + h * 2 * half;
            for (long i = 0; i < 2 * half; i += 16) _mm_prefetch((const char *)(head + rowStride + i), _MM_HINT_T0);
            for (long i = 0; i < half; i += 8) {
                __m256 cv = _mm256_loadu_ps(c + i), sv = _mm256_mul_ps(sign, _mm256_loadu_ps(s + i));
                __m256 x1 = _mm256_loadu_ps(head + i), x2 = _mm256_loadu_ps(head + half + i);
                _mm256_storeu_ps(head + i, _mm256_fmsub_ps(x1, cv, _mm256_mul_ps(x2, sv)));
                _mm256_storeu_ps(head + half + i, _mm256_fmadd_ps(x2, cv, _mm256_mul_ps(x1, sv)));
            }
        }
    }
}

#endif

void suder_rope(float *x, long rowStride, long rows, const int *positions, long heads, const float *cosTable,
                const float *sinTable, long half, bool inverse) {
#if defined(__x86_64__)
    if (suder_activeKernels == SUDER_KERNELS_AVX512)
        return rope16(x, rowStride, rows, positions, heads, cosTable, sinTable, half, inverse);
    if (suder_activeKernels == SUDER_KERNELS_AVX2 && half % 8 == 0)
        return rope8(x, rowStride, rows, positions, heads, cosTable, sinTable, half, inverse);
#endif
    for (long r = 0; r < rows; r++) {
        const float *c = cosTable + (long)positions[r] * half, *s = sinTable + (long)positions[r] * half;
        for (long h = 0; h < heads; h++) {
            float *head = x + r * rowStride + h * 2 * half;
            for (long i = 0; i < half; i++) {
                float sv = inverse ? -s[i] : s[i], x1 = head[i], x2 = head[i + half];
                head[i] = x1 * c[i] - x2 * sv;
                head[i + half] = x2 * c[i] + x1 * sv;
            }
        }
    }
}
