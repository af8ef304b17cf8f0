// CPU reference for dimension swaps (a gather through PermuteIndex).
#pragma once

#include "cugrad/dtype.h"
#include "host/ops/permute.h"

namespace cugrad::cpu {
void permute_copy(DType dtype, const void* x, void* y, std::int64_t n, const PermuteIndex& index);
}
