// The C face of OpenBLAS for Swift: CBLAS plus OpenBLAS's own thread and core queries.
// Only the MoE module's GEMM file imports this module.
#ifndef SWIFTMOE_COPENBLAS_SHIM_H
#define SWIFTMOE_COPENBLAS_SHIM_H

#include <cblas.h>

#endif
