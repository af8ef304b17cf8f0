// CUDA elementwise kernels: unary maps, broadcasting binary ops and comparisons, where,
// casts, fill and arange. Launch shape: 1-D grid-stride loops of 256 threads, the grid
// capped at 32 blocks per SM. Each makes one pass: read the inputs once, write the output once.
// float32 unary maps, and binary ops whose operands both have the output's shape, move float4
// when every pointer is 16-byte aligned (the last n % 4 elements one by one): with at most 2048
// resident threads per SM, one 4-byte load per thread keeps 8 KB per SM in flight, under the
// ~18 KB an H100 needs to stream at its copy rate; float4 keeps 32 KB.
#include "cuda/elementwise.h"

#include <cstdint>

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

// float32, float4 at a time: units [0, n / 4) as float4, then elements [4·(n / 4), n). In-place
// calls (y == x) are fine: each element is read and then written by the same thread, and no
// other thread touches it, so the read-only (__ldg) path never sees a stale value.
__global__ void unary_vec4_kernel(UnaryOp op, const float* x, float* y, std::int64_t n, float a, float b) {
  const std::int64_t n4 = n / 4;
  const std::int64_t first = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t u = first; u < n4; u += stride) {
    float4 v = __ldg(reinterpret_cast<const float4*>(x) + u);
    v.x = apply_unary<float>(op, v.x, a, b);
    v.y = apply_unary<float>(op, v.y, a, b);
    v.z = apply_unary<float>(op, v.z, a, b);
    v.w = apply_unary<float>(op, v.w, a, b);
    reinterpret_cast<float4*>(y)[u] = v;
  }
  for (std::int64_t i = 4 * n4 + first; i < n; i += stride) y[i] = apply_unary<float>(op, x[i], a, b);
}

// float32, both operands of the output's shape, float4 at a time (tail as above).
__global__ void binary_vec4_kernel(BinaryOp op, const float* x, const float* yv, float* out, std::int64_t n,
                                   float alpha) {
  const std::int64_t n4 = n / 4;
  const std::int64_t first = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t u = first; u < n4; u += stride) {
    const float4 p = __ldg(reinterpret_cast<const float4*>(x) + u);
    const float4 q = __ldg(reinterpret_cast<const float4*>(yv) + u);
    float4 r;
    r.x = apply_binary<float>(op, p.x, q.x, alpha);
    r.y = apply_binary<float>(op, p.y, q.y, alpha);
    r.z = apply_binary<float>(op, p.z, q.z, alpha);
    r.w = apply_binary<float>(op, p.w, q.w, alpha);
    reinterpret_cast<float4*>(out)[u] = r;
  }
  for (std::int64_t i = 4 * n4 + first; i < n; i += stride) out[i] = apply_binary<float>(op, x[i], yv[i], alpha);
}

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

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
  if (dtype == DType::float32 && aligned16(x) && aligned16(y)) {
    unary_vec4_kernel<<<grid_for((n + 3) / 4), kBlock, 0, as_stream(stream)>>>(
        op, static_cast<const float*>(x), static_cast<float*>(y), n, static_cast<float>(a), static_cast<float>(b));
    CUGRAD_CUDA_CHECK_LAUNCH();
    return;
  }
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
  if (dtype == DType::float32 && !is_comparison(op) && index.mode[0] == BroadcastIndex::same &&
      index.mode[1] == BroadcastIndex::same && aligned16(x) && aligned16(y) && aligned16(out)) {
    binary_vec4_kernel<<<grid_for((n + 3) / 4), kBlock, 0, as_stream(stream)>>>(
        op, static_cast<const float*>(x), static_cast<const float*>(y), static_cast<float*>(out), n,
        static_cast<float>(alpha));
    CUGRAD_CUDA_CHECK_LAUNCH();
    return;
  }
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
