#ifndef SUDER_CZSTD_SHIM_H
#define SUDER_CZSTD_SHIM_H
#include <zstd.h>
#endif
