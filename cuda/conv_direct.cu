// Direct convolution kernels for few input taps (see cuda/conv_direct.h for why and what).
//
// direct_conv_forward_kernel: one thread per output pixel (image, row, column). The block first
// copies the weights (c_out · taps floats), the bias and a table of the taps (offset of the
// input channel, row and column offsets with dilation) into shared memory. A thread loads its
// pixel's taps into registers (a bit per tap that lies inside the image; padding taps are
// skipped, not multiplied by zero), then for each output channel adds the taps' products in
// tap order with fused multiply-adds, adds the bias, applies the ReLU and stores: consecutive
// threads store consecutive pixels of a plane (coalesced), weights are read as broadcasts.
//
// direct_conv_params_kernel: block (output channels co0 .. co0 + kCo − 1, split s) walks pixels
// [p0, p1) of the n · out_h · out_w pixels, thread t the pixels p0 + t, p0 + t + 256, ...; it
// loads a pixel's taps once and, for each of its channels, adds g · x_tap (fused) to the taps'
// sums and g to the bias sum, where g is dy, or dy masked by the ReLU's saved output. Warp
// shuffles, then the warps' values in warp order, give the block's sums: partial[(co · splits +
// s) · (taps + 1) + k]; the finish kernel adds a weight's partials in split order. Fixed order
// throughout: the same bits on every run, and the same as one channel per block would give.
#include "cuda/conv_direct.h"

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdlib>
#include <cstring>

#include "cuda/launch.cuh"
#include "host/ops/elementwise_math.h"

namespace cugrad::cuda {

namespace {

constexpr int kThreads = 256;
constexpr std::int64_t kMinPixelsPerBlock = 2048;
constexpr std::int64_t kBlocksPerSm = 8;
constexpr std::int64_t kMaxSplits = 65535;

// The geometry as the kernels read it (per-image sizes fit in int: direct_conv_supported).
struct DirectGeom {
  std::int64_t n;
  int c_in, h, w, c_out, kh, kw, out_h, out_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, taps;
};

DirectGeom direct_geom(const Conv2dGeometry& g) {
  const auto i = [](std::int64_t v) { return static_cast<int>(v); };
  return {g.n,        i(g.c_in),     i(g.h),        i(g.w),
          i(g.c_out), i(g.kh),       i(g.kw),       i(g.out_h),
          i(g.out_w), i(g.stride_h), i(g.stride_w), i(g.pad_h),
          i(g.pad_w), i(g.dil_h),    i(g.dil_w),    i(g.c_in * g.kh * g.kw)};
}

// Tap k = (ci, p, q) row-major: the input channel's offset in an image and the row and column
// offsets from the window's corner.
struct Taps {
  int offset[kDirectConvMaxTaps], dh[kDirectConvMaxTaps], dw[kDirectConvMaxTaps];
};

__device__ __forceinline__ void fill_taps(Taps& t, const DirectGeom& g) {
  const int khw = g.kh * g.kw;
  for (int k = threadIdx.x; k < g.taps; k += blockDim.x) {
    const int ci = k / khw, rem = k - ci * khw, p = rem / g.kw, q = rem - p * g.kw;
    t.offset[k] = ci * g.h * g.w;
    t.dh[k] = p * g.dil_h;
    t.dw[k] = q * g.dil_w;
  }
}

// The pixel's image, in-plane index, and the input row and column of its window's corner.
struct Pixel {
  std::int64_t img;
  int r, ih0, iw0;
};

// I: the pixel index type, 32 bits when n · out_h · out_w fits (a division per pixel).
template <class I>
__device__ __forceinline__ Pixel locate(I pix, const DirectGeom& g) {
  const I ohw = static_cast<I>(g.out_h) * static_cast<I>(g.out_w);
  const I img = pix / ohw;
  Pixel px;
  px.img = static_cast<std::int64_t>(img);
  px.r = static_cast<int>(pix - img * ohw);
  const int oh = px.r / g.out_w, ow = px.r - oh * g.out_w;
  px.ih0 = oh * g.stride_h - g.pad_h;
  px.iw0 = ow * g.stride_w - g.pad_w;
  return px;
}

// Loads the pixel's taps; bit k of the result says tap k lies inside the image.
template <int kMaxK>
__device__ __forceinline__ unsigned load_taps(const float* __restrict__ x, const Taps& t, const DirectGeom& g,
                                              const Pixel& px, float (&v)[kMaxK]) {
  const float* xi = x + px.img * static_cast<std::int64_t>(g.c_in) * g.h * g.w;
  unsigned valid = 0;
#pragma unroll
  for (int k = 0; k < kMaxK; ++k) {
    v[k] = 0.f;
    if (k < g.taps) {
      const int ih = px.ih0 + t.dh[k], iw = px.iw0 + t.dw[k];
      if (ih >= 0 && ih < g.h && iw >= 0 && iw < g.w) {
        v[k] = __ldg(xi + t.offset[k] + ih * g.w + iw);
        valid |= 1u << k;
      }
    }
  }
  return valid;
}

template <int kMaxK, bool kRelu, class I>
__global__ void __launch_bounds__(kThreads)
    direct_conv_forward_kernel(const float* __restrict__ x, const float* __restrict__ weight,
                               const float* __restrict__ bias, float* __restrict__ y, DirectGeom g) {
  extern __shared__ float smem[];  // c_out · taps weights, then c_out biases
  __shared__ Taps taps;
  float* sw = smem;
  float* sb = smem + g.c_out * g.taps;
  for (int i = threadIdx.x; i < g.c_out * g.taps; i += blockDim.x) sw[i] = weight[i];
  for (int i = threadIdx.x; i < g.c_out; i += blockDim.x) sb[i] = bias ? bias[i] : 0.f;
  fill_taps(taps, g);
  __syncthreads();
  const std::int64_t ohw = static_cast<std::int64_t>(g.out_h) * g.out_w;
  const I total = static_cast<I>(g.n * ohw);
  for (I pix = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; pix < total;
       pix += static_cast<I>(gridDim.x) * blockDim.x) {
    const Pixel px = locate<I>(pix, g);
    float v[kMaxK];
    const unsigned valid = load_taps<kMaxK>(x, taps, g, px, v);
    float* out = y + px.img * g.c_out * ohw + px.r;
    for (int co = 0; co < g.c_out; ++co) {
      const float* wc = sw + co * g.taps;
      float acc = 0.f;
#pragma unroll
      for (int k = 0; k < kMaxK; ++k)
        if (k < g.taps && ((valid >> k) & 1u)) acc = fmaf(wc[k], v[k], acc);
      if (bias) acc += sb[co];
      if (kRelu) acc = apply_unary<float>(UnaryOp::relu, acc, 0.f, 0.f);
      out[co * ohw] = acc;
    }
  }
}

template <int kMaxK, int kCo, bool kMask, class I>
__global__ void __launch_bounds__(kThreads)
    direct_conv_params_kernel(const float* __restrict__ x, const float* __restrict__ dy,
                              const float* __restrict__ relu_y, float* __restrict__ partial, DirectGeom g,
                              std::int64_t splits) {
  __shared__ Taps taps;
  __shared__ float warp_sums[kThreads / 32][kCo * (kMaxK + 1)];
  fill_taps(taps, g);
  __syncthreads();
  const int co0 = blockIdx.x * kCo;
  const std::int64_t s = blockIdx.y;
  const std::int64_t ohw = static_cast<std::int64_t>(g.out_h) * g.out_w, total = g.n * ohw;
  const I p0 = static_cast<I>(total * s / splits), p1 = static_cast<I>(total * (s + 1) / splits);
  float acc[kCo][kMaxK + 1];
#pragma unroll
  for (int c = 0; c < kCo; ++c)
#pragma unroll
    for (int k = 0; k <= kMaxK; ++k) acc[c][k] = 0.f;
  for (I pix = p0 + threadIdx.x; pix < p1; pix += kThreads) {
    const Pixel px = locate<I>(pix, g);
    float v[kMaxK];
    const unsigned valid = load_taps<kMaxK>(x, taps, g, px, v);
    const std::int64_t o0 = (px.img * g.c_out + co0) * ohw + px.r;
#pragma unroll
    for (int c = 0; c < kCo; ++c) {
      if (co0 + c >= g.c_out) break;
      const std::int64_t o = o0 + c * ohw;
      float gv = __ldcs(dy + o);
      if (kMask) gv = apply_binary<float>(BinaryOp::threshold_backward, gv, __ldcs(relu_y + o), 1.f);
#pragma unroll
      for (int k = 0; k < kMaxK; ++k)
        if (k < g.taps && ((valid >> k) & 1u)) acc[c][k] = fmaf(v[k], gv, acc[c][k]);
      acc[c][kMaxK] += gv;
    }
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int c = 0; c < kCo; ++c)
#pragma unroll
    for (int k = 0; k <= kMaxK; ++k) {
      float a = acc[c][k];
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) a += __shfl_xor_sync(0xffffffffu, a, off);
      if (lane == 0) warp_sums[warp][c * (kMaxK + 1) + k] = a;
    }
  __syncthreads();
  // Thread i = c · (taps + 1) + k writes sum k of channel co0 + c (k == taps: the bias), the
  // warps' values added in warp order.
  const int per = g.taps + 1, i = threadIdx.x, c = i / per, k = i - c * per;
  if (c < kCo && co0 + c < g.c_out) {
    const int slot = c * (kMaxK + 1) + (k == g.taps ? kMaxK : k);
    float t = warp_sums[0][slot];
#pragma unroll
    for (int w = 1; w < kThreads / 32; ++w) t += warp_sums[w][slot];
    partial[((co0 + c) * splits + s) * per + k] = t;
  }
}

// One thread per (co, k), k <= taps: the splits' partials in split order.
__global__ void direct_conv_params_finish_kernel(const float* __restrict__ partial,
                                                 float* __restrict__ dweight, float* __restrict__ dbias,
                                                 int c_out, int taps, std::int64_t splits) {
  const int per = taps + 1;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < c_out * per; i += gridDim.x * blockDim.x) {
    const int co = i / per, k = i - co * per;
    const float* p = partial + static_cast<std::int64_t>(co) * splits * per + k;
    float t = p[0];
    for (std::int64_t s = 1; s < splits; ++s) t += p[s * per];
    if (k < taps)
      dweight[co * taps + k] = t;
    else if (dbias)
      dbias[co] = t;
  }
}

std::atomic<bool> g_force_wide{false};  // set_direct_conv_wide_indices (tests)

std::atomic<bool>& direct_flag() {
  static std::atomic<bool> flag{[] {
    const char* v = std::getenv("CUGRAD_DIRECT_CONV");
    return !(v != nullptr && std::strcmp(v, "0") == 0);
  }()};
  return flag;
}

template <int kMaxK>
void launch_forward(const float* x, const float* weight, const float* bias, float* y, const DirectGeom& dg,
                    bool relu, cudaStream_t s) {
  const std::int64_t pixels = dg.n * dg.out_h * dg.out_w;
  const std::size_t smem = static_cast<std::size_t>(dg.c_out) * (dg.taps + 1) * sizeof(float);
  const unsigned grid = grid_for(pixels, kThreads);
  // 32-bit pixel indices while the index plus a grid stride stays below 2^32.
  const bool narrow = !g_force_wide && pixels + static_cast<std::int64_t>(grid) * kThreads <= 0xffffffffLL;
  if (relu && narrow)
    direct_conv_forward_kernel<kMaxK, true, std::uint32_t>
        <<<grid, kThreads, smem, s>>>(x, weight, bias, y, dg);
  else if (relu)
    direct_conv_forward_kernel<kMaxK, true, std::uint64_t>
        <<<grid, kThreads, smem, s>>>(x, weight, bias, y, dg);
  else if (narrow)
    direct_conv_forward_kernel<kMaxK, false, std::uint32_t>
        <<<grid, kThreads, smem, s>>>(x, weight, bias, y, dg);
  else
    direct_conv_forward_kernel<kMaxK, false, std::uint64_t>
        <<<grid, kThreads, smem, s>>>(x, weight, bias, y, dg);
  CUGRAD_CUDA_CHECK_LAUNCH();
}

// Output channels per block of the parameter kernel: 4 for up to 9 taps (40 sums per thread:
// each pixel's taps and index arithmetic serve 4 channels), 1 above.
int channels_per_block(int taps) { return taps <= 9 ? 4 : 1; }

template <int kMaxK, int kCo>
void launch_params(const float* x, const float* dy, const float* relu_y, float* partial, const DirectGeom& dg,
                   std::int64_t splits, cudaStream_t s) {
  const dim3 grid(static_cast<unsigned>((dg.c_out + kCo - 1) / kCo), static_cast<unsigned>(splits));
  const bool narrow = !g_force_wide && dg.n * dg.out_h * dg.out_w + kThreads <= 0xffffffffLL;
  if (relu_y && narrow)
    direct_conv_params_kernel<kMaxK, kCo, true, std::uint32_t>
        <<<grid, kThreads, 0, s>>>(x, dy, relu_y, partial, dg, splits);
  else if (relu_y)
    direct_conv_params_kernel<kMaxK, kCo, true, std::uint64_t>
        <<<grid, kThreads, 0, s>>>(x, dy, relu_y, partial, dg, splits);
  else if (narrow)
    direct_conv_params_kernel<kMaxK, kCo, false, std::uint32_t>
        <<<grid, kThreads, 0, s>>>(x, dy, nullptr, partial, dg, splits);
  else
    direct_conv_params_kernel<kMaxK, kCo, false, std::uint64_t>
        <<<grid, kThreads, 0, s>>>(x, dy, nullptr, partial, dg, splits);
  CUGRAD_CUDA_CHECK_LAUNCH();
}

void check_geometry(const char* op, const Conv2dGeometry& g) {
  CUGRAD_CHECK(direct_conv_supported(g), op, ": the direct kernels do not handle this convolution (groups ",
               g.groups, ", ", g.c_in, " input channels, kernel ", g.kh, "x", g.kw, ", ", g.c_out,
               " output channels)");
  CUGRAD_CHECK(g.n >= 1, op, ": needs at least one image");
}

}  // namespace

bool direct_conv_supported(const Conv2dGeometry& g) {
  const std::int64_t taps = g.c_in * g.kh * g.kw;
  const std::int64_t per_image = std::max(g.c_in * g.h * g.w, g.c_out * g.out_h * g.out_w);
  return g.groups == 1 && g.c_in >= 1 && g.c_out >= 1 && taps >= 1 && taps <= kDirectConvMaxTaps &&
         g.c_out * (taps + 1) <= kDirectConvMaxWeights && g.out_h >= 1 && g.out_w >= 1 &&
         per_image < INT_MAX && g.h + g.pad_h + g.dil_h * g.kh < INT_MAX / 2 &&
         g.w + g.pad_w + g.dil_w * g.kw < INT_MAX / 2 && g.out_h * g.stride_h < INT_MAX / 2 &&
         g.out_w * g.stride_w < INT_MAX / 2;
}

DirectConvPlan direct_conv_plan(const Conv2dGeometry& g, int sms) {
  CUGRAD_CHECK(direct_conv_supported(g) && g.n >= 1, "direct_conv_plan: unsupported geometry or no image");
  const std::int64_t pixels = g.n * g.out_h * g.out_w;
  const int per_block = channels_per_block(static_cast<int>(g.c_in * g.kh * g.kw));
  const std::int64_t channel_blocks = (g.c_out + per_block - 1) / per_block;
  const std::int64_t want =
      (static_cast<std::int64_t>(std::max(sms, 1)) * kBlocksPerSm + channel_blocks - 1) / channel_blocks;
  const std::int64_t by_size = std::max<std::int64_t>(1, pixels / kMinPixelsPerBlock);
  DirectConvPlan p;
  p.splits = std::max<std::int64_t>(1, std::min({want, by_size, kMaxSplits}));
  p.workspace_bytes =
      static_cast<std::size_t>(g.c_out * p.splits * (g.c_in * g.kh * g.kw + 1)) * sizeof(float);
  return p;
}

void direct_conv2d_forward_f32(const float* x, const float* weight, const float* bias, float* y,
                               const Conv2dGeometry& g, bool relu, void* stream) {
  check_geometry("direct_conv2d_forward", g);
  const DirectGeom dg = direct_geom(g);
  const cudaStream_t s = as_stream(stream);
  if (dg.taps <= 9)
    launch_forward<9>(x, weight, bias, y, dg, relu, s);
  else
    launch_forward<32>(x, weight, bias, y, dg, relu, s);
}

void direct_conv2d_backward_params_f32(const float* x, const float* dy, const float* relu_y, float* dweight,
                                       float* dbias, const Conv2dGeometry& g, const DirectConvPlan& plan,
                                       float* workspace, void* stream) {
  check_geometry("direct_conv2d_backward_params", g);
  CUGRAD_CHECK(plan.splits >= 1 && plan.splits <= kMaxSplits && workspace != nullptr,
               "direct_conv2d_backward_params: needs a plan and its workspace of ", plan.workspace_bytes,
               " bytes");
  const DirectGeom dg = direct_geom(g);
  const cudaStream_t s = as_stream(stream);
  if (dg.taps <= 9)
    launch_params<9, 4>(x, dy, relu_y, workspace, dg, plan.splits, s);
  else
    launch_params<32, 1>(x, dy, relu_y, workspace, dg, plan.splits, s);
  direct_conv_params_finish_kernel<<<grid_for(static_cast<std::int64_t>(dg.c_out) * (dg.taps + 1)), kBlock, 0,
                                     s>>>(workspace, dweight, dbias, dg.c_out, dg.taps, plan.splits);
  CUGRAD_CUDA_CHECK_LAUNCH();
}

bool set_direct_convolutions(bool on) { return direct_flag().exchange(on); }
bool set_direct_conv_wide_indices(bool force) { return g_force_wide.exchange(force); }
bool direct_convolutions() { return direct_flag(); }

}  // namespace cugrad::cuda
