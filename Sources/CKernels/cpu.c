// Which kernels run: the CPU's features and caches, read once at load time, and the path in use.
#include "CKernels.h"
#include "simd.h"
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__)
SuderKernels suder_activeKernels = SUDER_KERNELS_BLAS;
Blocking suder_blocking;
static bool hasAVX512F, hasAVX2, hasFMA;

// Rounds x down to a multiple of `step`, within [lo, hi].
static long blockSize(long x, long step, long lo, long hi) {
    x = x / step * step;
    return x < lo ? lo : x > hi ? hi : x;
}

static long cacheBytes(int name, long fallback) {
    long bytes = sysconf(name);
    return bytes > 0 ? bytes : fallback;
}

// The builtins need __builtin_cpu_init before use; a constructor runs it once, before any caller.
__attribute__((constructor)) static void detectCPU(void) {
    __builtin_cpu_init();
    hasAVX512F = __builtin_cpu_supports("avx512f");
    hasAVX2 = __builtin_cpu_supports("avx2");
    hasFMA = __builtin_cpu_supports("fma");
    suder_activeKernels = suder_kernels_best();
    // Fallback: the smallest L2 of the CPUs we target.
    suder_kernels_plan_blocking(cacheBytes(_SC_LEVEL2_CACHE_SIZE, 512 << 10));
}

void suder_kernels_plan_blocking(long l2) {
    // A block of A (mc x kc) takes a quarter of L2, leaving room for the packed B it meets.
    suder_blocking.mc512 = blockSize(l2 / 4 / (KC512 * 4), 12, 48, 1020);
    suder_blocking.mc256 = blockSize(l2 / 4 / (KC256 * 4), 6, 48, 1020);
    suder_blocking.l2 = l2;
}

const char *suder_kernels_missing(SuderKernels path) {
    static char missing[32];
    missing[0] = 0;
    bool needs512 = path == SUDER_KERNELS_AVX512, needs256 = path == SUDER_KERNELS_AVX2;
    if (needs512 && !hasAVX512F) strcat(missing, "avx512f, ");
    if (needs256 && !hasAVX2) strcat(missing, "avx2, ");
    if ((needs512 || needs256) && !hasFMA) strcat(missing, "fma, ");
    if (missing[0]) missing[strlen(missing) - 2] = 0;
    return missing;
}

SuderKernels suder_kernels_best(void) {
    if (hasAVX512F && hasFMA) return SUDER_KERNELS_AVX512;
    if (hasAVX2 && hasFMA) return SUDER_KERNELS_AVX2;
    return SUDER_KERNELS_BLAS;
}

bool suder_kernels_select(SuderKernels path) {
    if (suder_kernels_missing(path)[0]) return false;
    suder_activeKernels = path;
    return true;
}

SuderKernels suder_kernels_active(void) { return suder_activeKernels; }

const char *suder_openblas_core(void) {
    if (hasAVX512F && __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        return __builtin_cpu_supports("avx512bf16") ? "Cooperlake" : "SkylakeX";
    return hasAVX2 && hasFMA ? "Haswell" : "";
}

void suder_kernels_blocking(SuderKernels path, long *kc, long *mc, long *l2) {
    *kc = path == SUDER_KERNELS_AVX512 ? KC512 : path == SUDER_KERNELS_AVX2 ? KC256 : 0;
    *mc = path == SUDER_KERNELS_AVX512 ? suder_blocking.mc512 : path == SUDER_KERNELS_AVX2 ? suder_blocking.mc256 : 0;
    *l2 = suder_blocking.l2;
}

// FMA peak: CHAINS independent accumulators (enough to cover 4-cycle latency on 2-4 FMA pipes)
// each doing acc = acc * x + y; the sum is returned so the loop is not removed.
enum { CHAINS = 12 };

static AVX512 float fmaLoop512(long iterations) {
    __m512 acc[CHAINS], x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_set1_ps((float)i);
    for (long it = 0; it < iterations; it++)
        for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_fmadd_ps(acc[i], x, y);
    for (int i = 1; i < CHAINS; i++) acc[0] = _mm512_add_ps(acc[0], acc[i]);
    return _mm512_reduce_add_ps(acc[0]);
}

static AVX2 float fmaLoop256(long iterations) {
    __m256 acc[CHAINS], x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm256_set1_ps((float)i);
    for (long it = 0; it < iterations; it++)
        for (int i = 0; i < CHAINS; i++) acc[i] = _mm256_fmadd_ps(acc[i], x, y);
    for (int i = 1; i < CHAINS; i++) acc[0] = _mm256_add_ps(acc[0], acc[i]);
    float lanes[8];
    _mm256_storeu_ps(lanes, acc[0]);
    return lanes[0];
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

double suder_fma_peak_gflops(SuderKernels path, double seconds) {
    // OpenBLAS may run 512-bit kernels (SkylakeX, Cooperlake), so the BLAS path's peak is the widest.
    bool wide = path == SUDER_KERNELS_AVX512 || (path == SUDER_KERNELS_BLAS && hasAVX512F);
    if (!hasFMA || (wide && !hasAVX512F) || (!wide && !hasAVX2)) return 0;
    const long chunk = 1 << 20;
    volatile float sink = 0;
    // Warm-up: the core may need to raise its clock or power up the wide units.
    sink += wide ? fmaLoop512(chunk) : fmaLoop256(chunk);
    long chunks = 0;
    double start = now(), elapsed;
    do {
        sink += wide ? fmaLoop512(chunk) : fmaLoop256(chunk);
        chunks++;
    } while ((elapsed = now() - start) < seconds);
    (void)sink;
    return (double)chunks * chunk * CHAINS * (wide ? 16 : 8) * 2 / elapsed / 1e9;
}

#else  // other architectures: OpenBLAS and libm do everything

const char *suder_kernels_missing(SuderKernels path) { return path == SUDER_KERNELS_BLAS ? "" : "x86-64"; }
SuderKernels suder_kernels_best(void) { return SUDER_KERNELS_BLAS; }
bool suder_kernels_select(SuderKernels path) { return path == SUDER_KERNELS_BLAS; }
SuderKernels suder_kernels_active(void) { return SUDER_KERNELS_BLAS; }
const char *suder_openblas_core(void) { return ""; }
void suder_kernels_plan_blocking(long l2) { (void)l2; }
void suder_kernels_blocking(SuderKernels path, long *kc, long *mc, long *l2) { *kc = *mc = *l2 = 0; }
double suder_fma_peak_gflops(SuderKernels path, double seconds) { return 0; }

#endif
