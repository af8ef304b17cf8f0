// Shared launch helpers for the CUDA kernels: grid sizing for grid-stride loops and the
// check that follows every launch.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "cugrad/error.h"
#include "host/runtime/cuda_context.h"

namespace cugrad::cuda {

inline constexpr int kBlock = 256;

/// Blocks for a grid-stride loop over n items: enough to fill the GPU several times over,
/// never more than the items need.
inline unsigned grid_for(std::int64_t n, int block = kBlock, int per_thread = 1) {
  int dev = 0;
  CUGRAD_CUDA_CHECK(cudaGetDevice(&dev));
  const int sms = runtime::device_properties(dev).multiProcessorCount;
  const std::int64_t need = (n + static_cast<std::int64_t>(block) * per_thread - 1) /
                            (static_cast<std::int64_t>(block) * per_thread);
  const std::int64_t cap = static_cast<std::int64_t>(sms) * 32;
  return static_cast<unsigned>(std::max<std::int64_t>(1, std::min(need, cap)));
}

inline cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }

}  // namespace cugrad::cuda

#define CUGRAD_CUDA_CHECK_LAUNCH() CUGRAD_CUDA_CHECK(cudaGetLastError())
