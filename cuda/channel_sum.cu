// Per-channel sums of an NCHW tensor (a convolution's bias gradient), deterministic.
//
// channel_sum_kernel: block (ch, s) adds the planes of channel ch in images [n0, n1) of split s
// (units of a float4 when the planes allow, else of a float). Thread t starts at unit t of the
// block's range and strides by the block size; its (image, unit) position advances by a
// precomputed (images, units) step, so no division per element. Threads combine by warp
// shuffles, then warp 0 adds the 8 warps' values in warp order. One split: the block writes
// out[ch]; several: partial[ch · splits + s], and channel_sum_finish_kernel adds a channel's
// partials in split order. Memory: one read of x (37.7 MB for the 2-conv CNN's conv2
// gradient, 13 µs at an H100's copy rate), c · splits floats of partials.
//
// The ReLU-masked variant (kMask) reads the output gradient dy and the ReLU's output y, writes
// dz = threshold_backward(dy, y) and sums dz in the same order: one pass fewer than the
// threshold_backward kernel followed by channel_sum over dz, and the same bits.
//
// channel_bias_kernel: y = y + bias[ch] in place, optionally followed by the ReLU (a
// convolution's bias, and its ReLU when fused); one thread per float4 (or float) of a plane.
#include "cuda/channel_sum.h"

#include <algorithm>

#include "cuda/launch.cuh"
#include "host/ops/elementwise_math.h"

namespace cugrad::cuda {

namespace {

constexpr int kSumBlock = 256;
constexpr std::int64_t kMinPerBlock = 4096;  // elements a split block reads at least
constexpr std::int64_t kBlocksPerSm = 8;
constexpr std::int64_t kMaxSplits = 65535;  // gridDim.y

template <int kVec>
__device__ __forceinline__ float load_sum(const float* p) {
  if constexpr (kVec == 4) {
    const float4 v = __ldcs(reinterpret_cast<const float4*>(p));  // read once: streaming
    return (v.x + v.y) + (v.z + v.w);
  } else {
    return __ldcs(p);
  }
}

__device__ __forceinline__ float relu_grad(float dy, float y) {
  return apply_binary<float>(BinaryOp::threshold_backward, dy, y, 1.f);
}

// The sum of the unit at offset i; kMask: of threshold_backward(x, y), which it also stores
// in dz (x is then dy).
template <int kVec, bool kMask>
__device__ __forceinline__ float unit_sum(const float* __restrict__ x, const float* __restrict__ y,
                                          float* __restrict__ dz, std::int64_t i) {
  if constexpr (!kMask) {
    return load_sum<kVec>(x + i);
  } else if constexpr (kVec == 4) {
    const float4 g = __ldcs(reinterpret_cast<const float4*>(x + i));
    const float4 v = __ldcs(reinterpret_cast<const float4*>(y + i));
    const float4 z =
        make_float4(relu_grad(g.x, v.x), relu_grad(g.y, v.y), relu_grad(g.z, v.z), relu_grad(g.w, v.w));
    *reinterpret_cast<float4*>(dz + i) = z;
    return (z.x + z.y) + (z.z + z.w);
  } else {
    const float z = relu_grad(__ldcs(x + i), __ldcs(y + i));
    dz[i] = z;
    return z;
  }
}

template <int kVec, bool kMask>
__global__ void __launch_bounds__(kSumBlock)
    channel_sum_kernel(const float* __restrict__ x, const float* __restrict__ y, float* __restrict__ dz,
                       float* __restrict__ out, float* __restrict__ partial, std::int64_t n, std::int64_t c,
                       std::int64_t hw, std::int64_t splits) {
  __shared__ float warp_sums[kSumBlock / 32];
  const std::int64_t ch = blockIdx.x, s = blockIdx.y;
  const std::int64_t n0 = n * s / splits, n1 = n * (s + 1) / splits;
  const std::int64_t units = hw / kVec;  // per plane
  const std::int64_t step_img = kSumBlock / units, step_unit = kSumBlock % units;
  std::int64_t img = n0 + threadIdx.x / units, u = threadIdx.x % units;
  float acc = 0.f;
  while (img < n1) {
    acc += unit_sum<kVec, kMask>(x, y, dz, (img * c + ch) * hw + u * kVec);
    img += step_img;
    u += step_unit;
    if (u >= units) {
      u -= units;
      ++img;
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    float total = warp_sums[0];
#pragma unroll
    for (int w = 1; w < kSumBlock / 32; ++w) total += warp_sums[w];
    if (splits == 1)
      out[ch] = total;
    else
      partial[ch * splits + s] = total;
  }
}

__global__ void channel_sum_finish_kernel(const float* __restrict__ partial, float* __restrict__ out,
                                          std::int64_t c, std::int64_t splits) {
  for (std::int64_t ch = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; ch < c;
       ch += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const float* p = partial + ch * splits;
    float total = p[0];
    for (std::int64_t s = 1; s < splits; ++s) total += p[s];
    out[ch] = total;
  }
}

// y[i, ch, p] = y + bias[ch] (bias may be null), then the ReLU when kRelu. Unit u of the flat
// array (a float4 when kVec == 4: hw % 4 == 0, so a unit never crosses planes) lies in plane
// u / units_per_plane, channel plane % c. Index arithmetic in Index (32 bits when it fits).
template <int kVec, bool kRelu, class Index>
__global__ void channel_bias_kernel(float* __restrict__ y, const float* __restrict__ bias, Index total_units,
                                    Index units_per_plane, Index c) {
  for (Index u = blockIdx.x * static_cast<Index>(blockDim.x) + threadIdx.x; u < total_units;
       u += static_cast<Index>(gridDim.x) * blockDim.x) {
    const float b = bias ? __ldg(bias + (u / units_per_plane) % c) : 0.f;
    const auto f = [b](float v) {
      if (kRelu) return apply_unary<float>(UnaryOp::relu, v + b, 0.f, 0.f);
      return v + b;
    };
    if constexpr (kVec == 4) {
      float4* p = reinterpret_cast<float4*>(y) + u;
      float4 v = *p;
      v.x = f(v.x);
      v.y = f(v.y);
      v.z = f(v.z);
      v.w = f(v.w);
      *p = v;
    } else {
      y[u] = f(y[u]);
    }
  }
}

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

void check_sizes(const char* op, std::int64_t n, std::int64_t c, std::int64_t hw) {
  CUGRAD_CHECK(n >= 1 && c >= 1 && hw >= 1, op, ": needs n, c, hw >= 1, got ", n, ", ", c, ", ", hw);
}

template <bool kMask>
void launch_channel_sum(const float* x, const float* y, float* dz, float* out, std::int64_t n, std::int64_t c,
                        std::int64_t hw, const ChannelSumPlan& plan, float* workspace, void* stream) {
  CUGRAD_CHECK(plan.splits >= 1 && plan.splits <= std::min(n, kMaxSplits), "channel_sum: a plan of ",
               plan.splits, " splits does not fit ", n, " images");
  CUGRAD_CHECK(plan.splits == 1 || workspace != nullptr, "channel_sum: ", plan.splits,
               " splits need a workspace of ", plan.workspace_bytes, " bytes");
  const cudaStream_t s = as_stream(stream);
  const dim3 grid(static_cast<unsigned>(c), static_cast<unsigned>(plan.splits));
  const bool vec = hw % 4 == 0 && aligned16(x) && (!kMask || (aligned16(y) && aligned16(dz)));
  if (vec)
    channel_sum_kernel<4, kMask><<<grid, kSumBlock, 0, s>>>(x, y, dz, out, workspace, n, c, hw, plan.splits);
  else
    channel_sum_kernel<1, kMask><<<grid, kSumBlock, 0, s>>>(x, y, dz, out, workspace, n, c, hw, plan.splits);
  CUGRAD_CUDA_CHECK_LAUNCH();
  if (plan.splits > 1) {
    channel_sum_finish_kernel<<<grid_for(c), kBlock, 0, s>>>(workspace, out, c, plan.splits);
    CUGRAD_CUDA_CHECK_LAUNCH();
  }
}

template <int kVec, bool kRelu>
void launch_channel_bias(float* y, const float* bias, std::int64_t units, std::int64_t per_plane,
                         std::int64_t c, cudaStream_t s) {
  const unsigned grid = grid_for(units);
  if (units <= 0x7fffffff)
    channel_bias_kernel<kVec, kRelu, std::uint32_t>
        <<<grid, kBlock, 0, s>>>(y, bias, static_cast<std::uint32_t>(units),
                                 static_cast<std::uint32_t>(per_plane), static_cast<std::uint32_t>(c));
  else
    channel_bias_kernel<kVec, kRelu, std::uint64_t>
        <<<grid, kBlock, 0, s>>>(y, bias, static_cast<std::uint64_t>(units),
                                 static_cast<std::uint64_t>(per_plane), static_cast<std::uint64_t>(c));
  CUGRAD_CUDA_CHECK_LAUNCH();
}

}  // namespace

ChannelSumPlan channel_sum_plan(std::int64_t n, std::int64_t c, std::int64_t hw, int sms) {
  check_sizes("channel_sum", n, c, hw);
  CUGRAD_CHECK(c <= 0x7fffffff, "channel_sum: ", c, " channels are more than a grid holds");
  ChannelSumPlan p;
  const std::int64_t want = (static_cast<std::int64_t>(std::max(sms, 1)) * kBlocksPerSm + c - 1) / c;
  const std::int64_t by_size = std::max<std::int64_t>(1, n * hw / kMinPerBlock);
  p.splits = std::max<std::int64_t>(1, std::min({want, by_size, n, kMaxSplits}));
  p.workspace_bytes = p.splits > 1 ? static_cast<std::size_t>(c * p.splits) * sizeof(float) : 0;
  return p;
}

void channel_sum_f32(const float* x, float* out, std::int64_t n, std::int64_t c, std::int64_t hw,
                     const ChannelSumPlan& plan, float* workspace, void* stream) {
  launch_channel_sum<false>(x, nullptr, nullptr, out, n, c, hw, plan, workspace, stream);
}

void channel_sum_relu_grad_f32(const float* dy, const float* y, float* dz, float* out, std::int64_t n,
                               std::int64_t c, std::int64_t hw, const ChannelSumPlan& plan, float* workspace,
                               void* stream) {
  CUGRAD_CHECK(dy && y && dz, "channel_sum_relu_grad: needs dy, y and dz");
  launch_channel_sum<true>(dy, y, dz, out, n, c, hw, plan, workspace, stream);
}

void channel_bias_f32(float* y, const float* bias, std::int64_t n, std::int64_t c, std::int64_t hw, bool relu,
                      void* stream) {
  check_sizes("channel_bias", n, c, hw);
  CUGRAD_CHECK(bias != nullptr || relu, "channel_bias: nothing to do (no bias and no ReLU)");
  const cudaStream_t s = as_stream(stream);
  const bool vec = hw % 4 == 0 && aligned16(y);
  const std::int64_t k = vec ? 4 : 1, units = n * c * hw / k, per_plane = hw / k;
  if (vec) {
    if (relu)
      launch_channel_bias<4, true>(y, bias, units, per_plane, c, s);
    else
      launch_channel_bias<4, false>(y, bias, units, per_plane, c, s);
  } else if (relu) {
    launch_channel_bias<1, true>(y, bias, units, per_plane, c, s);
  } else {
    launch_channel_bias<1, false>(y, bias, units, per_plane, c, s);
  }
}

}  // namespace cugrad::cuda
