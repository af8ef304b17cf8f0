// CUDA elementwise kernels: unary maps, broadcasting binary ops and comparisons, where,
// casts, fill and arange. Launch shape: 1-D grid-stride loops of 256 threads, the grid
// capped at 32 blocks per SM. Each makes one pass: read the inputs once, write the output once.
#include "cuda/elementwise.h"
#include "cuda/launch.cuh"
#include "host/tensor/dispatch.h"

namespace cugrad::cuda {

namespace {

template <typename T>
__global__ void unary_kernel(UnaryOp op, const T* __restrict__ x, T* __restrict__ y, std::int64_t n, T a, T b) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    y[i] = apply_unary<T>(op, x[i], a, b);
}

template <typename T>
__global__ void binary_kernel(BinaryOp op, const T* __restrict__ x, const T* __restrict__ yv, T* __restrict__ out,
                              std::int64_t n, BroadcastIndex index, T alpha) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    out[i] = apply_binary<T>(op, x[index.offset(0, i)], yv[index.offset(1, i)], alpha);
}

template <typename T>
__global__ void compare_kernel(BinaryOp op, const T* __restrict__ x, const T* __restrict__ yv,
                               std::uint8_t* __restrict__ out, std::int64_t n, BroadcastIndex index) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    out[i] = apply_compare<T>(op, x[index.offset(0, i)], yv[index.offset(1, i)]);
}

template <typename T>
__global__ void where_kernel(const std::uint8_t* __restrict__ cond, const T* __restrict__ a, const T* __restrict__ b,
                             T* __restrict__ out, std::int64_t n, BroadcastIndex index) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    out[i] = cond[index.offset(0, i)] ? a[index.offset(1, i)] : b[index.offset(2, i)];
}

template <typename Tin, typename Tout>
__global__ void cast_kernel(const Tin* __restrict__ x, Tout* __restrict__ y, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    y[i] = convert<Tout>(x[i]);
}

template <typename T>
__global__ void fill_kernel(T* __restrict__ y, std::int64_t n, T value) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    y[i] = value;
}

template <typename T>
__global__ void arange_kernel(T* __restrict__ y, std::int64_t n, double start, double step) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    y[i] = convert<T>(start + static_cast<double>(i) * step);
}

}  // namespace

void unary(UnaryOp op, DType dtype, const void* x, void* y, std::int64_t n, double a, double b, void* stream) {
  if (n == 0) return;
  dispatch_cuda_dtype(dtype, "unary", [&](auto tag) {
    using T = typename decltype(tag)::type;
    unary_kernel<T><<<grid_for(n), kBlock, 0, as_stream(stream)>>>(
        op, static_cast<const T*>(x), static_cast<T*>(y), n, static_cast<T>(a), static_cast<T>(b));
  });
  CUGRAD_CUDA_CHECK_LAUNCH();
}

void binary(BinaryOp op, DType dtype, const void* x, const void* y, void* out, std::int64_t n,
            const BroadcastIndex& index, double alpha, void* stream) {
  if (n == 0) return;
  dispatch_cuda_dtype(dtype, "binary", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (is_comparison(op)) {
      compare_kernel<T><<<grid_for(n), kBlock, 0, as_stream(stream)>>>(
          op, static_cast<const T*>(x), static_cast<const T*>(y), static_cast<std::uint8_t*>(out), n, index);
    } else {
      binary_kernel<T><<<grid_for(n), kBlock, 0, as_stream(stream)>>>(
          op, static_cast<const T*>(x), static_cast<const T*>(y), static_cast<T*>(out), n, index,
          static_cast<T>(alpha));
    }
  });
  CUGRAD_CUDA_CHECK_LAUNCH();
}

void where(DType dtype, const std::uint8_t* cond, const void* a, const void* b, void* out, std::int64_t n,
           const BroadcastIndex& index, void* stream) {
  if (n == 0) return;
  dispatch_cuda_dtype(dtype, "where", [&](auto tag) {
    using T = typename decltype(tag)::type;
    where_kernel<T><<<grid_for(n), kBlock, 0, as_stream(stream)>>>(
        cond, static_cast<const T*>(a), static_cast<const T*>(b), static_cast<T*>(out), n, index);
  });
  CUGRAD_CUDA_CHECK_LAUNCH();
}

void cast(DType from, DType to, const void* x, void* y, std::int64_t n, void* stream) {
  if (n == 0) return;
  dispatch_cuda_dtype(from, "cast", [&](auto tin) {
    using Tin = typename decltype(tin)::type;
    dispatch_cuda_dtype(to, "cast", [&](auto tout) {
      using Tout = typename decltype(tout)::type;
      cast_kernel<Tin, Tout><<<grid_for(n), kBlock, 0, as_stream(stream)>>>(
          static_cast<const Tin*>(x), static_cast<Tout*>(y), n);
    });
  });
  CUGRAD_CUDA_CHECK_LAUNCH();
}

void fill(DType dtype, void* y, std::int64_t n, double value, void* stream) {
  if (n == 0) return;
  dispatch_cuda_dtype(dtype, "fill", [&](auto tag) {
    using T = typename decltype(tag)::type;
    fill_kernel<T><<<grid_for(n), kBlock, 0, as_stream(stream)>>>(static_cast<T*>(y), n, convert<T>(value));
  });
  CUGRAD_CUDA_CHECK_LAUNCH();
}

void arange(DType dtype, void* y, std::int64_t n, double start, double step, void* stream) {
  if (n == 0) return;
  dispatch_cuda_dtype(dtype, "arange", [&](auto tag) {
    using T = typename decltype(tag)::type;
    arange_kernel<T><<<grid_for(n), kBlock, 0, as_stream(stream)>>>(static_cast<T*>(y), n, start, step);
  });
  CUGRAD_CUDA_CHECK_LAUNCH();
}

}  // namespace cugrad::cuda
