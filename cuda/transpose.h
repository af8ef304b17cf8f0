// Launcher of the CUDA dimension-swap kernel.
#pragma once

#include "cugrad/dtype.h"
#include "host/ops/permute.h"

namespace cugrad::cuda {
void permute_copy(DType dtype, const void* x, void* y, std::int64_t n, const PermuteIndex& index, void* stream);
}
