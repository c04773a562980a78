#ifndef SUDER_COPENBLAS_SHIM_H
#define SUDER_COPENBLAS_SHIM_H
/* Debian's openblas.pc points the include path at the variant's cblas.h, which also declares
   openblas_get_num_threads / openblas_set_num_threads / openblas_get_corename. */
#include <cblas.h>
#endif
