// CUDA pooling kernels over contiguous float32 NCHW planes: max (with argmax indices), average
// (count_include_pad) and adaptive average, forward and backward.
//
// Launch shape: 1-D grid-stride loops of 256 threads (grid from grid_for: at most 32 blocks per
// SM). Forward kernels: one thread per output element, reading its window (each input element
// is read by about kh·kw/(stride_h·stride_w) threads, mostly from L1/L2) and writing the output
// (and the int64 index) once. Backward kernels gather: one thread per input element (max
// pooling: per run of 4 elements of a row) walks the outputs whose window can hold it, in output
// order, and writes dx once: no atomics, no zeroing pass, and the same result on every run
// (deterministic). Max and average pooling index in int32 when the tensors allow (below 2^30
// elements). Why: on an H100 (2026-11-26) max-pool backward ran at 16% of the copy bandwidth
// and forward at 40% with int64 indices; their sm_90 code called the 64-bit division routine
// from 6 sites (backward) and 2 (forward), the int32 kernels from none. Measured after the
// change (same card, 64x64x112x112, 3x3/2): forward 0.310 → 0.198 ms (62% of copy), backward
// 0.756 → 0.616 ms (20%), the backward still bound by instructions (see its kernel).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>

#include "cuda/launch.cuh"
#include "cuda/pool.h"

namespace cugrad::cuda {

namespace {

template <typename I>
__device__ __forceinline__ I clamp_end(I end, I size) {
  return end < size ? end : size;
}

// The geometry in the index type I of a launch: int32 when every index of the call fits (with
// the grid stride added), int64 otherwise (see the file comment for why).
template <typename I>
struct Geometry {
  I h, w, kh, kw, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, out_h, out_w;
  explicit Geometry(const Pool2dGeometry& g)
      : h(static_cast<I>(g.h)), w(static_cast<I>(g.w)), kh(static_cast<I>(g.kh)), kw(static_cast<I>(g.kw)),
        stride_h(static_cast<I>(g.stride_h)), stride_w(static_cast<I>(g.stride_w)),
        pad_h(static_cast<I>(g.pad_h)), pad_w(static_cast<I>(g.pad_w)), dil_h(static_cast<I>(g.dil_h)),
        dil_w(static_cast<I>(g.dil_w)), out_h(static_cast<I>(g.out_h)), out_w(static_cast<I>(g.out_w)) {}
};

template <typename I>
__device__ __forceinline__ I first_index() {
  return static_cast<I>(blockIdx.x) * static_cast<I>(blockDim.x) + static_cast<I>(threadIdx.x);
}
template <typename I>
__device__ __forceinline__ I grid_stride() {
  return static_cast<I>(gridDim.x) * static_cast<I>(blockDim.x);
}

// Element e of planes of rows × cols: its plane, row and column.
template <typename I>
__device__ __forceinline__ void split_index(I e, I rows, I cols, I& plane, I& row, I& col) {
  col = e % cols;
  const I t = e / cols;
  row = t % rows;
  plane = t / rows;
}

// First and one-past-last output position along one axis whose window
// [o·stride − pad, o·stride − pad + span − 1] contains input position `in` (span = dil·(k−1) + 1).
template <typename I>
__device__ __forceinline__ void covering_outputs(I in, I pad, I span, I stride, I out_size, I& first, I& last) {
  const I pos = in + pad;  // >= 0
  first = pos < span ? 0 : (pos - span) / stride + 1;
  last = clamp_end<I>(pos / stride + 1, out_size);
}

// One thread per output element: the window's maximum (first maximum in row-major window
// order; a NaN wins) and its flat in-plane index; -inf and -1 for a window with no in-plane
// element. Reads the window, writes y (and indices when non-null) once.
// kBias: every input element of plane p gets bias[p % channels] added before the comparison
// (bias_max_pool2d: a convolution's bias folded into the pool that follows it), the same
// float32 additions as adding the bias first.
template <typename I, bool kBias>
__global__ void max_pool2d_forward_kernel(const float* __restrict__ x, float* __restrict__ y,
                                          std::int64_t* __restrict__ indices, Geometry<I> g,
                                          const float* __restrict__ bias, I channels, I total) {
  for (I o = first_index<I>(); o < total; o += grid_stride<I>()) {
    I plane, i, j;
    split_index(o, g.out_h, g.out_w, plane, i, j);
    const float* in = x + plane * g.h * g.w;
    const float b = kBias ? __ldg(bias + plane % channels) : 0.f;
    float best = -INFINITY;
    I best_index = -1;
    for (I p = 0; p < g.kh; ++p) {
      const I ih = i * g.stride_h - g.pad_h + p * g.dil_h;
      if (ih < 0 || ih >= g.h) continue;
      for (I q = 0; q < g.kw; ++q) {
        const I iw = j * g.stride_w - g.pad_w + q * g.dil_w;
        if (iw < 0 || iw >= g.w) continue;
        float v = __ldg(in + ih * g.w + iw);
        if (kBias) v += b;
        if (best_index < 0 || v > best || isnan(v)) {
          best = v;
          best_index = ih * g.w + iw;
        }
      }
    }
    y[o] = best;
    if (indices) indices[o] = best_index;
  }
}

// One thread per input element: Σ dy over the outputs whose saved index is this element.
// Reads the covering outputs' indices and gradients, writes dx once. The kernel before the runs
// below (2026-11-26), kept for comparing the two on a GPU (set_max_pool_backward_runs).
template <typename I>
__global__ void max_pool2d_backward_element_kernel(const float* __restrict__ dy,
                                                   const std::int64_t* __restrict__ indices,
                                                   float* __restrict__ dx, Geometry<I> g, I total) {
  const I span_h = g.dil_h * (g.kh - 1) + 1, span_w = g.dil_w * (g.kw - 1) + 1;
  const I ohw = g.out_h * g.out_w;
  for (I e = first_index<I>(); e < total; e += grid_stride<I>()) {
    I plane, ih, iw;
    split_index(e, g.h, g.w, plane, ih, iw);
    I i0, i1, j0, j1;
    covering_outputs(ih, g.pad_h, span_h, g.stride_h, g.out_h, i0, i1);
    covering_outputs(iw, g.pad_w, span_w, g.stride_w, g.out_w, j0, j1);
    const std::int64_t target = ih * g.w + iw;
    const std::int64_t* idx = indices + plane * ohw;
    const float* grad = dy + plane * ohw;
    float sum = 0.0f;
    for (I i = i0; i < i1; ++i)
      for (I j = j0; j < j1; ++j) {
        const I o = i * g.out_w + j;
        if (__ldg(idx + o) == target) sum += __ldg(grad + o);
      }
    dx[e] = sum;
  }
}

// Input elements per thread of the max-pool backward: a run of consecutive elements of a row.
constexpr int kMaxBackwardRun = 4;
static_assert(kMaxBackwardRun == 4, "the vector store writes a run as one float4");

// One thread per run of kMaxBackwardRun consecutive input elements of a row (a row's last run
// may be shorter): Σ dy over the outputs whose saved index is each element, dx written once.
// The thread reads each output that can hold an element of its run once: rows i0..i1 of the
// outputs covering the run's row, columns from the first element's first covering output to the
// last element's last. An output's saved index lies inside its own window, so an index naming an
// element of the run is a covering output of that element: no per-element coverage test. Each
// element gets its additions in output order (rows, then columns), as one thread per element
// would add them. `vec_store`: every run is whole and 16-byte aligned (w % 4 == 0, dx aligned).
// Why runs: on an H100 (2026-11-26, ncu) the thread-per-element kernel was bound by its
// instructions (SM throughput 80%, DRAM 17%, 0.604 ms at 64x64x112x112 3x3/2), about 320 per
// element, most of them the index decomposition and window bounds that a run computes once.
template <typename I>
__global__ void max_pool2d_backward_kernel(const float* __restrict__ dy,
                                           const std::int64_t* __restrict__ indices, float* __restrict__ dx,
                                           Geometry<I> g, I runs_per_row, bool vec_store, I total) {
  const I span_h = g.dil_h * (g.kh - 1) + 1, span_w = g.dil_w * (g.kw - 1) + 1;
  const I ohw = g.out_h * g.out_w;
  for (I r = first_index<I>(); r < total; r += grid_stride<I>()) {
    I plane, ih, q;
    split_index(r, g.h, runs_per_row, plane, ih, q);
    const I iw0 = q * kMaxBackwardRun;
    const I count = clamp_end<I>(kMaxBackwardRun, g.w - iw0);
    I i0, i1, j0, j1, unused;
    covering_outputs(ih, g.pad_h, span_h, g.stride_h, g.out_h, i0, i1);
    covering_outputs(iw0, g.pad_w, span_w, g.stride_w, g.out_w, j0, unused);
    covering_outputs(iw0 + count - 1, g.pad_w, span_w, g.stride_w, g.out_w, unused, j1);
    const I first = ih * g.w + iw0;  // in-plane index of the run's first element
    const std::int64_t* idx = indices + plane * ohw;
    const float* grad = dy + plane * ohw;
    float sum[kMaxBackwardRun];
#pragma unroll
    for (int s = 0; s < kMaxBackwardRun; ++s) sum[s] = 0.0f;
    for (I i = i0; i < i1; ++i)
      for (I j = j0; j < j1; ++j) {
        // Index and gradient are loaded together, with no branch on the loaded index (one
        // memory latency per output, and the compiler may batch the loads of several outputs).
        // An index naming an element past the end of a short run adds to a sum that is never
        // stored.
        const I o = i * g.out_w + j;
        const std::int64_t k = __ldg(idx + o) - first;
        const float gv = __ldg(grad + o);
#pragma unroll
        for (int s = 0; s < kMaxBackwardRun; ++s)
          if (k == s) sum[s] += gv;
      }
    float* out = dx + plane * g.h * g.w + first;
    if (vec_store) {
      *reinterpret_cast<float4*>(out) = make_float4(sum[0], sum[1], sum[2], sum[3]);
    } else {
#pragma unroll
      for (int s = 0; s < kMaxBackwardRun; ++s)
        if (s < count) out[s] = sum[s];
    }
  }
}

// One thread per output element: the sum of the window's in-plane elements over kh·kw.
template <typename I>
__global__ void avg_pool2d_forward_kernel(const float* __restrict__ x, float* __restrict__ y, Geometry<I> g,
                                          I total) {
  const float inv = 1.0f / static_cast<float>(g.kh * g.kw);
  for (I o = first_index<I>(); o < total; o += grid_stride<I>()) {
    I plane, i, j;
    split_index(o, g.out_h, g.out_w, plane, i, j);
    const float* in = x + plane * g.h * g.w;
    float sum = 0.0f;
    for (I p = 0; p < g.kh; ++p) {
      const I ih = i * g.stride_h - g.pad_h + p;
      if (ih < 0 || ih >= g.h) continue;
      for (I q = 0; q < g.kw; ++q) {
        const I iw = j * g.stride_w - g.pad_w + q;
        if (iw >= 0 && iw < g.w) sum += __ldg(in + ih * g.w + iw);
      }
    }
    y[o] = sum * inv;
  }
}

// One thread per input element: Σ dy over the windows that contain it, over kh·kw.
template <typename I>
__global__ void avg_pool2d_backward_kernel(const float* __restrict__ dy, float* __restrict__ dx, Geometry<I> g,
                                           I total) {
  const float inv = 1.0f / static_cast<float>(g.kh * g.kw);
  const I ohw = g.out_h * g.out_w;
  for (I e = first_index<I>(); e < total; e += grid_stride<I>()) {
    I plane, ih, iw;
    split_index(e, g.h, g.w, plane, ih, iw);
    I i0, i1, j0, j1;
    covering_outputs(ih, g.pad_h, g.kh, g.stride_h, g.out_h, i0, i1);
    covering_outputs(iw, g.pad_w, g.kw, g.stride_w, g.out_w, j0, j1);
    const float* grad = dy + plane * ohw;
    float sum = 0.0f;
    for (I i = i0; i < i1; ++i)
      for (I j = j0; j < j1; ++j) sum += __ldg(grad + i * g.out_w + j);
    dx[e] = sum * inv;
  }
}

// One thread per output element: the mean of its adaptive window.
__global__ void adaptive_avg_pool2d_forward_kernel(const float* __restrict__ x, float* __restrict__ y,
                                                   Pool2dGeometry g, std::int64_t total) {
  for (std::int64_t o = first_index<std::int64_t>(); o < total; o += grid_stride<std::int64_t>()) {
    std::int64_t plane, i, j;
    split_index(o, g.out_h, g.out_w, plane, i, j);
    const std::int64_t h0 = adaptive_start(i, g.h, g.out_h), h1 = adaptive_end(i, g.h, g.out_h);
    const std::int64_t w0 = adaptive_start(j, g.w, g.out_w), w1 = adaptive_end(j, g.w, g.out_w);
    const float* in = x + plane * g.h * g.w;
    float sum = 0.0f;
    for (std::int64_t ih = h0; ih < h1; ++ih)
      for (std::int64_t iw = w0; iw < w1; ++iw) sum += __ldg(in + ih * g.w + iw);
    y[o] = sum / static_cast<float>((h1 - h0) * (w1 - w0));
  }
}

// One thread per input element: Σ dy / window size over the adaptive windows that contain it.
// Window o along an axis contains e iff o is in [floor(e·out/in), ceil((e+1)·out/in)); the
// bounds are checked again per window, so rounding can never add a window that does not hold e.
__global__ void adaptive_avg_pool2d_backward_kernel(const float* __restrict__ dy, float* __restrict__ dx,
                                                    Pool2dGeometry g, std::int64_t total) {
  const std::int64_t ohw = g.out_h * g.out_w;
  for (std::int64_t e = first_index<std::int64_t>(); e < total; e += grid_stride<std::int64_t>()) {
    std::int64_t plane, ih, iw;
    split_index(e, g.h, g.w, plane, ih, iw);
    const std::int64_t i0 = adaptive_start(ih, g.out_h, g.h),
                       i1 = clamp_end(adaptive_end(ih, g.out_h, g.h), g.out_h);
    const std::int64_t j0 = adaptive_start(iw, g.out_w, g.w),
                       j1 = clamp_end(adaptive_end(iw, g.out_w, g.w), g.out_w);
    const float* grad = dy + plane * ohw;
    float sum = 0.0f;
    for (std::int64_t i = i0; i < i1; ++i) {
      const std::int64_t h0 = adaptive_start(i, g.h, g.out_h), h1 = adaptive_end(i, g.h, g.out_h);
      if (ih < h0 || ih >= h1) continue;
      for (std::int64_t j = j0; j < j1; ++j) {
        const std::int64_t w0 = adaptive_start(j, g.w, g.out_w), w1 = adaptive_end(j, g.w, g.out_w);
        if (iw < w0 || iw >= w1) continue;
        sum += __ldg(grad + i * g.out_w + j) / static_cast<float>((h1 - h0) * (w1 - w0));
      }
    }
    dx[e] = sum;
  }
}

}  // namespace

namespace {

// Launches a grid-stride kernel over `total` items (passed as its last argument); nothing to do
// for an empty tensor.
template <class... P, class... A>
void launch_over(std::int64_t total, void* stream, void (*kernel)(P...), A... args) {
  if (total == 0) return;
  kernel<<<grid_for(total), kBlock, 0, as_stream(stream)>>>(args..., total);
  CUGRAD_CUDA_CHECK_LAUNCH();
}

// As launch_over, with `total` passed in the kernel's index type I.
template <class I, class... P, class... A>
void launch_over_as(std::int64_t total, void* stream, void (*kernel)(P...), A... args) {
  if (total == 0) return;
  kernel<<<grid_for(total), kBlock, 0, as_stream(stream)>>>(args..., static_cast<I>(total));
  CUGRAD_CUDA_CHECK_LAUNCH();
}

// Calls launch(I{}) with I = int32 when the input, the output and the grid-stride loop's
// largest index (total plus one grid, at most 32 blocks per SM) all stay far below 2^31;
// with I = int64 otherwise.
std::atomic<std::int64_t> g_int32_limit{std::int64_t{1} << 30};
std::atomic<bool> g_max_backward_runs{true};  // max-pool backward: runs of 4 (or one element) per thread

template <class Launch>
void launch_indexed(const Pool2dGeometry& g, std::int64_t total, Launch&& launch) {
  const std::int64_t limit = std::min(g_int32_limit.load(), std::int64_t{1} << 30);
  if (std::max(g.in_numel(), g.out_numel()) < limit && total < limit)
    launch(std::int32_t{});
  else
    launch(std::int64_t{});
}

}  // namespace

std::int64_t set_pool_int32_index_limit(std::int64_t elements) { return g_int32_limit.exchange(elements); }
bool set_max_pool_backward_runs(bool runs) { return g_max_backward_runs.exchange(runs); }

void max_pool2d_forward_f32(const float* x, float* y, std::int64_t* indices, const Pool2dGeometry& g,
                            void* stream, const float* bias, std::int64_t channels) {
  CUGRAD_CHECK(bias == nullptr || (channels >= 1 && g.planes % channels == 0),
               "max_pool2d_forward_f32: a bias needs channels >= 1 dividing the planes, got ", channels,
               " for ", g.planes, " planes");
  launch_indexed(g, g.out_numel(), [&](auto index) {
    using I = decltype(index);
    if (bias)
      launch_over_as<I>(g.out_numel(), stream, max_pool2d_forward_kernel<I, true>, x, y, indices,
                        Geometry<I>(g), bias, static_cast<I>(channels));
    else
      launch_over_as<I>(g.out_numel(), stream, max_pool2d_forward_kernel<I, false>, x, y, indices,
                        Geometry<I>(g), bias, static_cast<I>(1));
  });
}

void max_pool2d_backward_f32(const float* dy, const std::int64_t* indices, float* dx, const Pool2dGeometry& g,
                             void* stream) {
  if (!g_max_backward_runs.load()) {
    launch_indexed(g, g.in_numel(), [&](auto index) {
      using I = decltype(index);
      launch_over_as<I>(g.in_numel(), stream, max_pool2d_backward_element_kernel<I>, dy, indices, dx,
                        Geometry<I>(g));
    });
    return;
  }
  const std::int64_t runs_per_row = (g.w + kMaxBackwardRun - 1) / kMaxBackwardRun;
  const std::int64_t runs = g.planes * g.h * runs_per_row;
  const bool vec_store = g.w % kMaxBackwardRun == 0 && reinterpret_cast<std::uintptr_t>(dx) % 16 == 0;
  launch_indexed(g, runs, [&](auto index) {
    using I = decltype(index);
    launch_over_as<I>(runs, stream, max_pool2d_backward_kernel<I>, dy, indices, dx, Geometry<I>(g),
                      static_cast<I>(runs_per_row), vec_store);
  });
}

void avg_pool2d_forward_f32(const float* x, float* y, const Pool2dGeometry& g, void* stream) {
  launch_indexed(g, g.out_numel(), [&](auto index) {
    using I = decltype(index);
    launch_over_as<I>(g.out_numel(), stream, avg_pool2d_forward_kernel<I>, x, y, Geometry<I>(g));
  });
}

void avg_pool2d_backward_f32(const float* dy, float* dx, const Pool2dGeometry& g, void* stream) {
  launch_indexed(g, g.in_numel(), [&](auto index) {
    using I = decltype(index);
    launch_over_as<I>(g.in_numel(), stream, avg_pool2d_backward_kernel<I>, dy, dx, Geometry<I>(g));
  });
}

void adaptive_avg_pool2d_forward_f32(const float* x, float* y, const Pool2dGeometry& g, void* stream) {
  launch_over(g.out_numel(), stream, adaptive_avg_pool2d_forward_kernel, x, y, g);
}

void adaptive_avg_pool2d_backward_f32(const float* dy, float* dx, const Pool2dGeometry& g, void* stream) {
  launch_over(g.in_numel(), stream, adaptive_avg_pool2d_backward_kernel, dy, dx, g);
}

}  // namespace cugrad::cuda
