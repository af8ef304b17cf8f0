// Launchers of the CUDA pooling kernels (cuda/pool.cu) for contiguous float32 NCHW planes
// described by Pool2dGeometry (host/cpu/pool.h), with the semantics of the CPU reference.
// `stream` is a cudaStream_t passed opaquely; every launch is checked; nothing synchronizes.
#pragma once

#include <cstdint>

#include "host/cpu/pool.h"

namespace cugrad::cuda {

// Pointers are device memory of the current device; every output element is written, so no
// output needs zeroing first. Backward kernels gather (one thread per input element, adding
// the outputs whose window holds it in output order): deterministic, no atomics.

/// As cpu::max_pool2d_forward; indices may be null (inference: no index is stored). With a bias
/// (one float per channel, planes = images · channels), the pool of x + bias[channel]: each
/// element gets its bias added (float32) before the comparison, the same values, maxima and
/// indices as adding the bias in a pass first.
void max_pool2d_forward_f32(const float* x, float* y, std::int64_t* indices, const Pool2dGeometry& g,
                            void* stream, const float* bias = nullptr, std::int64_t channels = 1);
/// As cpu::max_pool2d_backward, from the indices of the forward pass.
void max_pool2d_backward_f32(const float* dy, const std::int64_t* indices, float* dx, const Pool2dGeometry& g,
                             void* stream);
void avg_pool2d_forward_f32(const float* x, float* y, const Pool2dGeometry& g, void* stream);
void avg_pool2d_backward_f32(const float* dy, float* dx, const Pool2dGeometry& g, void* stream);
void adaptive_avg_pool2d_forward_f32(const float* x, float* y, const Pool2dGeometry& g, void* stream);
void adaptive_avg_pool2d_backward_f32(const float* dy, float* dx, const Pool2dGeometry& g, void* stream);

/// Max and average pooling use 32-bit index arithmetic for tensors below `elements` (default
/// 2^30) and 64-bit above; tests lower it to run the 64-bit kernels on small tensors. Returns
/// the previous limit.
std::int64_t set_pool_int32_index_limit(std::int64_t elements);

/// Max-pool backward: one thread per run of 4 elements of a row (true, the default) or one per
/// element (false: the kernel before, 2026-11-26), so that a benchmark can time both in one run
/// and tests check both. Returns the previous choice.
bool set_max_pool_backward_runs(bool runs);

}  // namespace cugrad::cuda
