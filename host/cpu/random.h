// CPU kernels for random fills (Philox; identical numbers to cuda/random.cu).
#pragma once

#include <cstdint>

#include "cugrad/dtype.h"

namespace cugrad::cpu {

void uniform(DType dtype, void* y, std::int64_t n, std::uint64_t seed, std::uint64_t offset);
void normal(DType dtype, void* y, std::int64_t n, std::uint64_t seed, std::uint64_t offset);
void randint(DType dtype, void* y, std::int64_t n, std::uint64_t seed, std::uint64_t offset,
             std::int64_t low, std::uint64_t range);

}  // namespace cugrad::cpu
