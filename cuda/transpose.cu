// CUDA dimension swap: a gather, writes coalesced, reads strided (one pass each way).
// Launch: 1-D grid-stride loop, 256 threads. Used by matmul's backward and by users; a tiled
// shared-memory transpose is the upgrade if it ever shows up in a profile.
#include "cuda/launch.cuh"
#include "cuda/transpose.h"
#include "host/tensor/dispatch.h"

namespace cugrad::cuda {

namespace {
template <typename T>
__global__ void permute_kernel(const T* __restrict__ x, T* __restrict__ y, std::int64_t n, PermuteIndex index) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    y[i] = x[index.in_offset(i)];
}
}  // namespace

void permute_copy(DType dtype, const void* x, void* y, std::int64_t n, const PermuteIndex& index, void* stream) {
  if (n == 0) return;
  dispatch_cuda_dtype(dtype, "transpose", [&](auto tag) {
    using T = typename decltype(tag)::type;
    permute_kernel<T><<<grid_for(n), kBlock, 0, as_stream(stream)>>>(static_cast<const T*>(x), static_cast<T*>(y), n,
                                                                      index);
  });
  CUGRAD_CUDA_CHECK_LAUNCH();
}

}  // namespace cugrad::cuda
