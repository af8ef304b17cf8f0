// Launchers of the CUDA random kernels (identical numbers to host/cpu/random.cpp).
#pragma once

#include <cstdint>

#include "cugrad/dtype.h"

namespace cugrad::cuda {

void uniform(DType dtype, void* y, std::int64_t n, std::uint64_t seed, std::uint64_t offset, void* stream);
void normal(DType dtype, void* y, std::int64_t n, std::uint64_t seed, std::uint64_t offset, void* stream);
void randint(DType dtype, void* y, std::int64_t n, std::uint64_t seed, std::uint64_t offset,
             std::int64_t low, std::uint64_t range, void* stream);

}  // namespace cugrad::cuda
