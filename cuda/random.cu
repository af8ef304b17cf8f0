// CUDA random fills over the shared Philox mapping. Launch: grid-stride loop, one element
// per iteration (each thread recomputes its Philox block: compute-bound but simple and
// exactly the CPU's numbers); one write pass.
#include "cuda/launch.cuh"
#include "cuda/random.h"
#include "host/runtime/philox.h"
#include "host/tensor/dispatch.h"

namespace cugrad::cuda {

namespace {

template <typename T>
__global__ void uniform_kernel(T* __restrict__ y, std::int64_t n, std::uint64_t seed, std::uint64_t offset,
                               const std::uint64_t* state) {
  philox::resolve_draw(state, seed, offset);
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    y[i] = philox::uniform_at<T>(seed, offset, i);
}

template <typename T>
__global__ void normal_kernel(T* __restrict__ y, std::int64_t n, std::uint64_t seed, std::uint64_t offset,
                              const std::uint64_t* state) {
  philox::resolve_draw(state, seed, offset);
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    y[i] = philox::normal_at<T>(seed, offset, i);
}

template <typename T>
__global__ void randint_kernel(T* __restrict__ y, std::int64_t n, std::uint64_t seed, std::uint64_t offset,
                               std::int64_t low, std::uint64_t range, const std::uint64_t* state) {
  philox::resolve_draw(state, seed, offset);
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    y[i] = static_cast<T>(philox::randint_at(seed, offset, i, low, range));
}

__global__ void set_draw_state_kernel(std::uint64_t* state, std::uint64_t seed, std::uint64_t base) {
  state[0] = seed;
  state[1] = base;
}

}  // namespace

void set_draw_state(std::uint64_t* state, std::uint64_t seed, std::uint64_t base, void* stream) {
  set_draw_state_kernel<<<1, 1, 0, as_stream(stream)>>>(state, seed, base);
  CUGRAD_CUDA_CHECK_LAUNCH();
}

void uniform(DType dtype, void* y, std::int64_t n, std::uint64_t seed, std::uint64_t offset,
             const std::uint64_t* state, void* stream) {
  if (n == 0) return;
  CUGRAD_CHECK(dtype == DType::float32, "rand: dtype ", dtype, " is not supported on CUDA (float32 only)");
  uniform_kernel<float>
      <<<grid_for(n), kBlock, 0, as_stream(stream)>>>(static_cast<float*>(y), n, seed, offset, state);
  CUGRAD_CUDA_CHECK_LAUNCH();
}

void normal(DType dtype, void* y, std::int64_t n, std::uint64_t seed, std::uint64_t offset,
            const std::uint64_t* state, void* stream) {
  if (n == 0) return;
  CUGRAD_CHECK(dtype == DType::float32, "randn: dtype ", dtype, " is not supported on CUDA (float32 only)");
  normal_kernel<float>
      <<<grid_for(n), kBlock, 0, as_stream(stream)>>>(static_cast<float*>(y), n, seed, offset, state);
  CUGRAD_CUDA_CHECK_LAUNCH();
}

void randint(DType dtype, void* y, std::int64_t n, std::uint64_t seed, std::uint64_t offset, std::int64_t low,
             std::uint64_t range, const std::uint64_t* state, void* stream) {
  if (n == 0) return;
  dispatch_cuda_dtype(dtype, "randint", [&](auto tag) {
    using T = typename decltype(tag)::type;
    randint_kernel<T><<<grid_for(n), kBlock, 0, as_stream(stream)>>>(static_cast<T*>(y), n, seed, offset, low,
                                                                     range, state);
  });
  CUGRAD_CUDA_CHECK_LAUNCH();
}

}  // namespace cugrad::cuda
