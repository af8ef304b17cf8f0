// CPU reference of the fused dropout (cuda/dropout.cu): the same Philox numbers and the same
// arithmetic, for float32 and float64.
#pragma once

#include <cstdint>

#include "cugrad/dtype.h"

namespace cugrad::cpu {

/// y = x · m and mask = keep, keep = (u >= p) for the uniform u of element i at (seed, offset)
/// (cugrad::rand's numbers in x's dtype), m = keep ? scale : 0, p and scale rounded to x's dtype.
void dropout_forward(DType dtype, const void* x, void* y, std::uint8_t* mask, std::int64_t n,
                     std::uint64_t seed, std::uint64_t offset, double p, double scale);

/// dx = dy · (mask ? scale : 0).
void dropout_backward(DType dtype, const void* dy, const std::uint8_t* mask, void* dx, std::int64_t n,
                      double scale);

}  // namespace cugrad::cpu
