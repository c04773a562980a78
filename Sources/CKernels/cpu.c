#include "CKernels.h"
#include "simd.h"

#if defined(__x86_64__)
bool suder_cpuHasAVX512;

// The builtins need __builtin_cpu_init before use; a constructor runs it once, before any caller.
__attribute__((constructor)) static void detectCPU(void) {
    __builtin_cpu_init();
    suder_cpuHasAVX512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
}
#endif

bool suder_kernels_available(void) {
#if defined(__x86_64__)
    return suder_cpuHasAVX512;
#else
    return false;
#endif
}
