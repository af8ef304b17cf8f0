// Fused dropout: the forward draws the uniforms, compares them with p and writes the output and
// a one-byte mask in one pass (reads 4 B, writes 5 B per element; the composite it replaces took
// five launches and ~38 B per element: rand, compare, cast, scale, multiply); the backward is one
// pass over dy and the mask (reads 5 B, writes 4 B; the composite saved a float mask, 8 B read).
//
// Each thread handles groups of four consecutive elements, which are one Philox block of the
// draw (host/runtime/philox.h: element i is lane i % 4 of block offset + i / 4), so the
// generator runs once per four elements, not once per element as in cugrad::rand's kernel.
// Groups use 128-bit loads and stores of x, y, dy, dx and a 32-bit mask store when the pointers
// allow (vec); otherwise, and for the last partial group, scalar accesses. The same float
// operations as the composite (u >= p in float, x · m with m = scale or 0): the same bits.
#include "cuda/dropout.h"
#include "cuda/launch.cuh"
#include "host/runtime/philox.h"

namespace cugrad::cuda {

namespace {

__device__ __forceinline__ float keep_factor(std::uint32_t r, float p, float scale, std::uint8_t& keep) {
  keep = philox::uniform_of<float>(r) >= p ? 1 : 0;
  return keep ? scale : 0.0f;
}

__global__ void dropout_forward_kernel(const float* __restrict__ x, float* __restrict__ y,
                                       std::uint8_t* __restrict__ mask, std::int64_t n, std::uint64_t seed,
                                       std::uint64_t offset, const std::uint64_t* state, float p, float scale,
                                       bool vec) {
  philox::resolve_draw(state, seed, offset);
  const std::int64_t groups = (n + 3) / 4;
  for (std::int64_t g = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; g < groups;
       g += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const philox::U32x4 r = philox::philox4x32_10(seed, offset + static_cast<std::uint64_t>(g));
    const std::int64_t i0 = 4 * g;
    if (vec && i0 + 4 <= n) {
      const float4 v = *reinterpret_cast<const float4*>(x + i0);
      uchar4 k;
      float4 o;
      o.x = v.x * keep_factor(r.v[0], p, scale, k.x);
      o.y = v.y * keep_factor(r.v[1], p, scale, k.y);
      o.z = v.z * keep_factor(r.v[2], p, scale, k.z);
      o.w = v.w * keep_factor(r.v[3], p, scale, k.w);
      *reinterpret_cast<float4*>(y + i0) = o;
      *reinterpret_cast<uchar4*>(mask + i0) = k;
    } else {
      const int count = static_cast<int>(n - i0 < 4 ? n - i0 : 4);
      for (int l = 0; l < count; ++l) {
        std::uint8_t k;
        y[i0 + l] = x[i0 + l] * keep_factor(r.v[l], p, scale, k);
        mask[i0 + l] = k;
      }
    }
  }
}

__global__ void dropout_backward_kernel(const float* __restrict__ dy, const std::uint8_t* __restrict__ mask,
                                        float* __restrict__ dx, std::int64_t n, float scale, bool vec) {
  const std::int64_t groups = (n + 3) / 4;
  for (std::int64_t g = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; g < groups;
       g += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t i0 = 4 * g;
    if (vec && i0 + 4 <= n) {
      const float4 d = *reinterpret_cast<const float4*>(dy + i0);
      const uchar4 k = *reinterpret_cast<const uchar4*>(mask + i0);
      *reinterpret_cast<float4*>(dx + i0) =
          make_float4(d.x * (k.x ? scale : 0.0f), d.y * (k.y ? scale : 0.0f), d.z * (k.z ? scale : 0.0f),
                      d.w * (k.w ? scale : 0.0f));
    } else {
      const int count = static_cast<int>(n - i0 < 4 ? n - i0 : 4);
      for (int l = 0; l < count; ++l) dx[i0 + l] = dy[i0 + l] * (mask[i0 + l] ? scale : 0.0f);
    }
  }
}

bool aligned(const void* p, std::uintptr_t bytes) { return reinterpret_cast<std::uintptr_t>(p) % bytes == 0; }

}  // namespace

void dropout_forward(const float* x, float* y, std::uint8_t* mask, std::int64_t n, std::uint64_t seed,
                     std::uint64_t offset, const std::uint64_t* state, float p, float scale, void* stream) {
  if (n == 0) return;
  const bool vec = aligned(x, 16) && aligned(y, 16) && aligned(mask, 4);
  dropout_forward_kernel<<<grid_for((n + 3) / 4), kBlock, 0, as_stream(stream)>>>(x, y, mask, n, seed, offset,
                                                                                  state, p, scale, vec);
  CUGRAD_CUDA_CHECK_LAUNCH();
}

void dropout_backward(const float* dy, const std::uint8_t* mask, float* dx, std::int64_t n, float scale,
                      void* stream) {
  if (n == 0) return;
  const bool vec = aligned(dy, 16) && aligned(dx, 16) && aligned(mask, 4);
  dropout_backward_kernel<<<grid_for((n + 3) / 4), kBlock, 0, as_stream(stream)>>>(dy, mask, dx, n, scale,
                                                                                   vec);
  CUGRAD_CUDA_CHECK_LAUNCH();
}

}  // namespace cugrad::cuda
