// Launchers of the CUDA random kernels (identical numbers to host/cpu/random.cpp).
#pragma once

#include <cstdint>

#include "cugrad/dtype.h"

namespace cugrad::cuda {

/// `state`: null, or the device-resident {seed, counter base} of a CUDA graph's draws
/// (philox::resolve_draw); the numbers are the same either way for the same (seed, counter).
void uniform(DType dtype, void* y, std::int64_t n, std::uint64_t seed, std::uint64_t offset,
             const std::uint64_t* state, void* stream);
void normal(DType dtype, void* y, std::int64_t n, std::uint64_t seed, std::uint64_t offset,
            const std::uint64_t* state, void* stream);
void randint(DType dtype, void* y, std::int64_t n, std::uint64_t seed, std::uint64_t offset, std::int64_t low,
             std::uint64_t range, const std::uint64_t* state, void* stream);
/// Writes {seed, counter base} to a CUDA graph's device-resident generator state (2 words).
void set_draw_state(std::uint64_t* state, std::uint64_t seed, std::uint64_t base, void* stream);

}  // namespace cugrad::cuda
