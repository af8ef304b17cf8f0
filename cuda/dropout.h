// Launchers of the fused dropout kernels (float32; identical numbers to host/cpu/dropout.cpp).
#pragma once

#include <cstdint>

namespace cugrad::cuda {

/// y = x · m and mask = keep, with keep = (u >= p) for the uniform draw u of element i at the
/// generator's (seed, offset) (cugrad::rand's numbers) and m = keep ? scale : 0. n elements.
/// `state`: null, or a CUDA graph's device-resident {seed, counter base} (cuda/random.h).
void dropout_forward(const float* x, float* y, std::uint8_t* mask, std::int64_t n, std::uint64_t seed,
                     std::uint64_t offset, const std::uint64_t* state, float p, float scale, void* stream);

/// dx = dy · (mask ? scale : 0), n elements.
void dropout_backward(const float* dy, const std::uint8_t* mask, float* dx, std::int64_t n, float scale,
                      void* stream);

}  // namespace cugrad::cuda
