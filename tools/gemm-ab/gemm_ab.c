// Side-by-side timing of the packed products of two (or more) builds of the kernels, alternated
// call by call so that the machine's drift falls on every build alike, and a check that every
// build gives the first one's bits. Each build is a shared library of Sources/CKernels made by
// `build-lib` (next to this file). A shapes file lists one product a line,
//     count transA transB m n k lda ldb ldc beta
// count being the calls a training step makes (one per layer), which weighs the totals;
// demo-step.txt and cluster-step.txt hold the layers' products of configs/demo.yaml and
// configs/cluster.yaml at a step's 3,072 tokens a rank. Small products run 192 times a round,
// each on its own part of a larger buffer, as attention's per-head products do.
//     tools/gemm-ab/build-lib OLD_CHECKOUT /tmp/old.so && tools/gemm-ab/build-lib . /tmp/new.so
//     clang -O2 -I Sources/CKernels/include tools/gemm-ab/gemm_ab.c -ldl -o /tmp/gemm-ab
//     taskset -c 0 /tmp/gemm-ab tools/gemm-ab/demo-step.txt 15 /tmp/old.so /tmp/new.so
// THREADS=n runs each product on n threads (default 1); SUDER_KERNELS=avx512|avx2 picks the path
// (default: the best the CPU has). Prints, per product, each build's GFLOP/s (median of the
// rounds) and the median of its per-round speed ratio to the first build, then the weighted
// totals.
#include <dlfcn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "CKernels.h"

typedef bool (*Gemm)(bool, bool, long, long, long, float, const float *, long, const float *, long, float, float *, long,
                     int);
typedef bool (*Select)(SuderKernels);
typedef SuderKernels (*Best)(void);

enum { MAX_BUILDS = 8, MAX_ROUNDS = 64, REGION = 16L << 20, SLOTS = 192 };

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static long maxLong(long x, long y) { return x > y ? x : y; }

static int ascending(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

static double median(const double *values, int count) {
    double sorted[MAX_ROUNDS];
    memcpy(sorted, values, count * sizeof *values);
    qsort(sorted, count, sizeof *sorted, ascending);
    return sorted[count / 2];
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s SHAPES ROUNDS LIBRARY...\n", argv[0]);
        return 2;
    }
    const int rounds = atoi(argv[2]), builds = argc - 3;
    const int threads = getenv("THREADS") ? atoi(getenv("THREADS")) : 1;
    if (rounds < 1 || rounds > MAX_ROUNDS || builds > MAX_BUILDS) {
        fprintf(stderr, "ROUNDS must be 1-%d, at most %d libraries\n", MAX_ROUNDS, MAX_BUILDS);
        return 2;
    }
    Gemm gemm[MAX_BUILDS];
    for (int i = 0; i < builds; i++) {
        void *library = dlopen(argv[3 + i], RTLD_NOW | RTLD_LOCAL);
        if (!library || !dlsym(library, "suder_sgemm") || !dlsym(library, "suder_kernels_select")) {
            fprintf(stderr, "%s: not a kernels library (%s)\n", argv[3 + i], library ? "symbols missing" : dlerror());
            return 2;
        }
        const char *name = getenv("SUDER_KERNELS");
        const SuderKernels path = !name ? ((Best)dlsym(library, "suder_kernels_best"))()
                                  : !strcmp(name, "avx512") ? SUDER_KERNELS_AVX512
                                  : !strcmp(name, "avx2")   ? SUDER_KERNELS_AVX2
                                                            : SUDER_KERNELS_BLAS;
        if (path == SUDER_KERNELS_BLAS || !((Select)dlsym(library, "suder_kernels_select"))(path)) {
            fprintf(stderr, "%s: no kernel path %s on this CPU\n", argv[3 + i], name ? name : "");
            return 2;
        }
        gemm[i] = (Gemm)dlsym(library, "suder_sgemm");
    }
    FILE *shapes = fopen(argv[1], "r");
    if (!shapes) {
        perror(argv[1]);
        return 2;
    }
    // Regions for A, B and C, and C's starting values; inputs in [-1, 1].
    float *memory = aligned_alloc(64, 4 * REGION * sizeof(float));
    float *reference = aligned_alloc(64, REGION * sizeof(float));
    float *a = memory, *b = memory + REGION, *c = memory + 2 * REGION, *start = memory + 3 * REGION;
    srand(1);
    for (long i = 0; i < 4 * REGION; i++) memory[i] = (rand() % 2001 - 1000) * 1e-3f;
    double total[MAX_BUILDS] = {0};
    int count, transA, transB;
    long m, n, k, lda, ldb, ldc;
    float beta;
    while (fscanf(shapes, "%d %d %d %ld %ld %ld %ld %ld %ld %f", &count, &transA, &transB, &m, &n, &k, &lda, &ldb, &ldc,
                  &beta) == 10) {
        const long aFloats = (transA ? k : m) * lda, bFloats = (transB ? n : k) * ldb, cFloats = m * ldc;
        const long largest = maxLong(maxLong(aFloats, bFloats), cFloats);
        const long slots = SLOTS * largest <= REGION ? SLOTS : 1;
        if (largest > REGION) {
            fprintf(stderr, "%ld x %ld x %ld: larger than the harness's %ld-float regions\n", m, n, k, (long)REGION);
            return 2;
        }
        int differ = 0;
        for (int i = 0; i < builds; i++) {
            memcpy(c, start, cFloats * sizeof(float));
            if (!gemm[i](transA, transB, m, n, k, 1, a, lda, b, ldb, beta, c, ldc, threads)) {
                fprintf(stderr, "%s declined %ld x %ld x %ld\n", argv[3 + i], m, n, k);
                return 2;
            }
            if (i == 0) memcpy(reference, c, cFloats * sizeof(float));
            else if (memcmp(reference, c, cFloats * sizeof(float))) differ |= 1 << i;
        }
        double time[MAX_BUILDS][MAX_ROUNDS];
        for (int round = 0; round < rounds; round++)
            for (int i = 0; i < builds; i++) {
                const double begin = seconds();
                for (long slot = 0; slot < slots; slot++)
                    gemm[i](transA, transB, m, n, k, 1, a + slot * aFloats, lda, b + slot * bFloats, ldb, beta,
                            c + slot * cFloats, ldc, threads);
                time[i][round] = (seconds() - begin) / slots;
            }
        printf("%5d x %d %d %5ld %5ld %5ld:", count, transA, transB, m, n, k);
        for (int i = 0; i < builds; i++) {
            double ratio[MAX_ROUNDS];
            for (int round = 0; round < rounds; round++) ratio[round] = time[0][round] / time[i][round];
            const double typical = median(time[i], rounds);
            total[i] += count * typical;
            printf("  %6.1f GFLOP/s x%.3f%s", 2.0 * m * n * k / typical / 1e9, median(ratio, rounds),
                   differ & (1 << i) ? " BITS DIFFER" : "");
        }
        printf("\n");
    }
    printf("weighted total:");
    for (int i = 0; i < builds; i++) printf("  %.3f s (x%.3f)", total[i], total[0] / total[i]);
    printf("\n");
    return 0;
}
