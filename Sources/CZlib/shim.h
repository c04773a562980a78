#ifndef SUDER_CZLIB_SHIM_H
#define SUDER_CZLIB_SHIM_H
#include <zlib.h>
#endif
