// Fused BatchNorm kernels for contiguous float32 NCHW tensors viewed as (N, C, HW).
//
// Training forward, two launches, 3 passes over the tensor:
//  1. statistics (read x): one Welford reduction per channel; each channel's N*HW elements
//     are split over many blocks when C alone would underfill the GPU, and the last block of
//     each channel to finish (threadfence + atomic ticket) merges the partials with Chan's
//     formula, writes mean and invstd (saved for backward) and the folded scale, and updates
//     the running statistics (the momentum or 1 / num_batches_tracked is read on the device).
//  2. normalize (read x, write y): y = (x - mean) * scale + bias, scale = weight * invstd.
//     When the tensor fits in L2, this second read of x hits the cache.
// Eval forward, one launch, 2 passes: normalize with the running statistics, the per-channel
//  scale weight / sqrt(running_var + eps) folded in registers.
// Backward, two launches, 5 passes:
//  1. gradient reduction (read x, dy): Σdy and Σdy·(x - mean) per channel, split and merged
//     the same way; the last block writes dbias, dweight and the per-channel coefficients of dx.
//  2. dx (read x, dy, write dx): dx = k1 * (dy - mean(dy) - (x - mean) * k2), with
//     k1 = weight * invstd and k2 = invstd² * mean(dy·(x - mean)). In eval mode dx = dy * k1
//     reads only dy.
//
// Reduction plans (256-thread blocks, sized to one wave of resident blocks):
//  - planes (HW > 1): a block reduces one channel's part of its N planes of HW contiguous
//    elements, walking a contiguous range of the channel's elements with float4 loads when HW
//    is a multiple of 4 and the pointers are 16-byte aligned (4 float4 in flight per thread),
//    scalar loads otherwise (8 in flight);
//  - rows (HW == 1, an (N, C) input): a block owns 32 adjacent channels (one per lane, so each
//    warp reads 128 contiguous bytes of a row) and a range of rows (8 rows in flight per warp).
// When a channel is split, its blocks count themselves on a ticket that a cudaMemsetAsync
// zeroes before the launch (the workspace is a fresh allocation, possibly poisoned) and the
// last block resets after merging. Within a thread, values are folded in chunks (chunk mean and
// M2 by two passes over registers, then one Chan merge), in float; blocks merge in float, and
// the last block merges the partials in double. The merge order is fixed, so results are
// deterministic.
#include "cuda/batch_norm.h"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "cuda/launch.cuh"

namespace cugrad::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kTile = 32;                    // rows plan: channels per block (one per lane)
constexpr int kTileRows = kThreads / kTile;  // rows plan: rows in flight per block (one per warp)
constexpr unsigned kFullMask = 0xffffffffu;

// ---- vector loads and stores ----

template <int VEC>
struct Vec {
  float v[VEC];
};

template <int VEC>
__device__ __forceinline__ Vec<VEC> load_vec(const float* p) {
  Vec<VEC> r;
  if constexpr (VEC == 4) {
    const float4 t = __ldg(reinterpret_cast<const float4*>(p));
    r.v[0] = t.x;
    r.v[1] = t.y;
    r.v[2] = t.z;
    r.v[3] = t.w;
  } else {
    r.v[0] = __ldg(p);
  }
  return r;
}

template <int VEC>
__device__ __forceinline__ void store_vec(float* p, const Vec<VEC>& r) {
  if constexpr (VEC == 4)
    *reinterpret_cast<float4*>(p) = make_float4(r.v[0], r.v[1], r.v[2], r.v[3]);
  else
    *p = r.v[0];
}

// ---- the fused ReLU (batch_norm_relu) ----
//
// Forward writes relu(y) for y = (x - mean) * scale + shift; backward never reads that output:
// it recomputes y from x with the forward's own expression and per-channel values (training:
// the folded scale the statistics kernel saved; eval: eval_scale below, the expression the
// eval forward uses), so the mask y > 0 has the forward's bits and the gradients equal those of
// batch_norm followed by relu, bit for bit.

// Eval's folded scale: weight * rsqrt(running_var + eps).
__device__ __forceinline__ float eval_scale(float var, float w, float eps) { return rsqrtf(var + eps) * w; }
// y = (x - mean) * scale + shift, the normalization of every forward.
__device__ __forceinline__ float affine(float x, float mean, float scale, float shift) {
  return fmaf(x - mean, scale, shift);
}
// relu as the unfused op computes it: NaN stays NaN.
__device__ __forceinline__ float relu_of(float y) { return y > 0.f ? y : (y != y ? y : 0.f); }
// The gradient through the ReLU: 0 where y <= 0, else g (threshold_backward on relu(y); a NaN y
// passes g, as there).
__device__ __forceinline__ float relu_grad(float g, float y) { return y <= 0.f ? 0.f : g; }

// What a fused backward needs per channel to recompute y.
struct ReluChannel {
  float mean, scale, shift;
};

// ---- accumulators: identity is the zero-initialized value ----

struct WelfordF {
  float mean, m2, n;
};
struct WelfordD {
  double mean, m2, n;
};
struct SumsF {
  float dy, dyx;  // Σdy, Σdy·(x - mean)
};
struct SumsD {
  double dy, dyx;
};

// Chan et al.: the mean moves by delta * nb/n, M2 gains delta² * na*nb/n.
template <class W>
__device__ __forceinline__ W welford_merge(const W& a, const W& b) {
  if (b.n == 0) return a;
  if (a.n == 0) return b;
  const auto n = a.n + b.n;
  const auto delta = b.mean - a.mean;
  const auto wb = b.n / n;
  return W{a.mean + delta * wb, a.m2 + b.m2 + delta * delta * a.n * wb, n};
}

__device__ __forceinline__ WelfordF combine(const WelfordF& a, const WelfordF& b) {
  return welford_merge(a, b);
}
__device__ __forceinline__ WelfordD combine(const WelfordD& a, const WelfordD& b) {
  return welford_merge(a, b);
}
__device__ __forceinline__ SumsF combine(const SumsF& a, const SumsF& b) {
  return {a.dy + b.dy, a.dyx + b.dyx};
}
__device__ __forceinline__ SumsD combine(const SumsD& a, const SumsD& b) {
  return {a.dy + b.dy, a.dyx + b.dyx};
}

__device__ __forceinline__ WelfordF shfl_down(const WelfordF& a, int o) {
  return {__shfl_down_sync(kFullMask, a.mean, o), __shfl_down_sync(kFullMask, a.m2, o),
          __shfl_down_sync(kFullMask, a.n, o)};
}
__device__ __forceinline__ WelfordD shfl_down(const WelfordD& a, int o) {
  return {__shfl_down_sync(kFullMask, a.mean, o), __shfl_down_sync(kFullMask, a.m2, o),
          __shfl_down_sync(kFullMask, a.n, o)};
}
__device__ __forceinline__ SumsF shfl_down(const SumsF& a, int o) {
  return {__shfl_down_sync(kFullMask, a.dy, o), __shfl_down_sync(kFullMask, a.dyx, o)};
}
__device__ __forceinline__ SumsD shfl_down(const SumsD& a, int o) {
  return {__shfl_down_sync(kFullMask, a.dy, o), __shfl_down_sync(kFullMask, a.dyx, o)};
}

__device__ __forceinline__ WelfordD widen(const WelfordF& a) { return {a.mean, a.m2, a.n}; }
__device__ __forceinline__ SumsD widen(const SumsF& a) { return {a.dy, a.dyx}; }

// Partials written by other blocks: read through L2 (never a stale L1 line).
__device__ __forceinline__ WelfordF load_partial(const WelfordF* p) {
  return {__ldcg(&p->mean), __ldcg(&p->m2), __ldcg(&p->n)};
}
__device__ __forceinline__ SumsF load_partial(const SumsF* p) { return {__ldcg(&p->dy), __ldcg(&p->dyx)}; }

// Reduces over a 1-D block of kThreads; the result is valid in thread 0.
template <class T>
__device__ T block_reduce(T v) {
  __shared__ T warp_vals[kWarps];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = combine(v, shfl_down(v, o));
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();  // a previous call's readers are done with warp_vals
  if (lane == 0) warp_vals[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < kWarps ? warp_vals[lane] : T{};
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = combine(v, shfl_down(v, o));
  }
  return v;
}

// ---- reduction ops: what a reduction loads, how it folds a chunk, how a channel finishes ----

// Batch statistics, running-statistics update, saved mean/invstd and the folded scale.
template <int VEC>
struct StatsOp {
  using Item = Vec<VEC>;
  using Acc = WelfordF;
  using Wide = WelfordD;
  using Channel = int;  // nothing per channel

  const float* x;
  const float* weight;  // may be null
  float* save_mean;
  float* save_invstd;
  float* scale;         // weight * invstd, read by the normalize pass
  float* running_mean;  // may be null (then running_var too)
  float* running_var;
  const std::int64_t* num_batches_tracked;  // read when cumulative
  bool cumulative;
  double momentum;
  double eps;
  double count;  // N * HW, exact

  __device__ Channel channel(std::int64_t) const { return 0; }
  __device__ Item load(std::int64_t off) const { return load_vec<VEC>(x + off); }

  // The chunk's mean and M2 by two passes over registers, then one merge into the state.
  template <int K>
  __device__ void fold(Acc& acc, const Item (&it)[K], int valid, Channel) const {
    float sum = 0.f;
#pragma unroll
    for (int k = 0; k < K; ++k)
      if (k < valid)
#pragma unroll
        for (int e = 0; e < VEC; ++e) sum += it[k].v[e];
    const float n = static_cast<float>(valid * VEC);
    const float mean = sum / n;
    float m2 = 0.f;
#pragma unroll
    for (int k = 0; k < K; ++k)
      if (k < valid)
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          const float dev = it[k].v[e] - mean;
          m2 = fmaf(dev, dev, m2);
        }
    acc = welford_merge(acc, WelfordF{mean, m2, n});
  }

  __device__ void finish(std::int64_t c, const Wide& t) const {
    const double var = t.m2 / count;  // biased
    const double invstd = 1.0 / sqrt(var + eps);
    save_mean[c] = static_cast<float>(t.mean);
    save_invstd[c] = static_cast<float>(invstd);
    scale[c] = static_cast<float>(weight ? invstd * static_cast<double>(weight[c]) : invstd);
    if (running_mean) {
      const double f = cumulative ? 1.0 / static_cast<double>(*num_batches_tracked + 1) : momentum;
      running_mean[c] = static_cast<float>((1.0 - f) * static_cast<double>(running_mean[c]) + f * t.mean);
      running_var[c] =
          static_cast<float>((1.0 - f) * static_cast<double>(running_var[c]) + f * (t.m2 / (count - 1.0)));
    }
  }
};

// Σdy and Σdy·(x - mean) per channel; the finish writes dbias, dweight and dx's coefficients.
// kRelu: the gradient of batch_norm_relu (dy masked where the recomputed y is not positive).
template <int VEC, bool kTrain, bool kRelu = false>
struct GradOp {
  struct Item {
    Vec<VEC> x, dy;
  };
  using Acc = SumsF;
  using Wide = SumsD;
  using Channel = std::conditional_t<kRelu, ReluChannel, float>;  // the channel's mean (and y's terms)

  const float* x;
  const float* dy;
  const float* mean;    // save_mean (training) or running_mean (eval)
  const float* second;  // save_invstd (training) or running_var (eval)
  const float* weight;  // may be null
  float* dweight;       // each may be null
  float* dbias;
  float* k1;  // training dx coefficients (null when dx is not wanted)
  float* mean_dy;
  float* k2;
  double eps;
  double count;
  const float* relu_scale;  // kRelu, training: the forward's folded scale
  const float* bias;        // kRelu: may be null
  float eps_f;              // kRelu, eval: eps as the eval forward takes it

  __device__ Channel channel(std::int64_t c) const {
    if constexpr (kRelu) {
      const float scale = kTrain ? __ldg(relu_scale + c)
                                 : eval_scale(__ldg(second + c), weight ? __ldg(weight + c) : 1.f, eps_f);
      return ReluChannel{__ldg(mean + c), scale, bias ? __ldg(bias + c) : 0.f};
    } else {
      return __ldg(mean + c);
    }
  }
  __device__ Item load(std::int64_t off) const {
    return Item{load_vec<VEC>(x + off), load_vec<VEC>(dy + off)};
  }

  template <int K>
  __device__ void fold(Acc& acc, const Item (&it)[K], int valid, Channel ch) const {
    float m;
    if constexpr (kRelu)
      m = ch.mean;
    else
      m = ch;
#pragma unroll
    for (int k = 0; k < K; ++k)
      if (k < valid)
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          float g = it[k].dy.v[e];
          if constexpr (kRelu) g = relu_grad(g, affine(it[k].x.v[e], m, ch.scale, ch.shift));
          acc.dy += g;
          acc.dyx = fmaf(g, it[k].x.v[e] - m, acc.dyx);
        }
  }

  __device__ void finish(std::int64_t c, const Wide& t) const {
    const double invstd =
        kTrain ? static_cast<double>(second[c]) : 1.0 / sqrt(static_cast<double>(second[c]) + eps);
    if (dbias) dbias[c] = static_cast<float>(t.dy);
    if (dweight) dweight[c] = static_cast<float>(t.dyx * invstd);
    if (kTrain && k1) {
      const double w = weight ? static_cast<double>(weight[c]) : 1.0;
      k1[c] = static_cast<float>(w * invstd);
      mean_dy[c] = static_cast<float>(t.dy / count);
      k2[c] = static_cast<float>(invstd * invstd * t.dyx / count);
    }
  }
};

// ---- the reduction kernels ----

// Planes plan: channel c's elements are N planes of HW at (n * C + c) * HW. A "unit" is VEC
// consecutive elements of a plane; the channel has `total` units, split into `splits`
// contiguous ranges, one per block. A thread walks its range in steps of kThreads units,
// keeping (j = unit within the plane, off = element offset) up to date without divisions.
struct PlaneWalk {
  std::int64_t hw;
  std::int64_t plane_stride;  // C * HW
  std::int64_t units;         // units per plane: HW / VEC
  std::int64_t total;         // units per channel: N * units
  std::int64_t step_j;        // kThreads % units
  std::int64_t step_off;      // offset change of one step, before a wrap to the next plane
  std::int64_t wrap_off;      // extra offset when j wraps: plane_stride - units * VEC
  int splits;
};

// Launch: C * splits blocks of kThreads; block b reduces part b % splits of channel b / splits.
// Memory: one read of each streamed tensor; partials and tickets are a few KB.
template <int VEC, int K, class Op>
__global__ void __launch_bounds__(kThreads)
    reduce_planes_kernel(Op op, PlaneWalk w, typename Op::Acc* partials, unsigned* tickets) {
  const std::int64_t c = blockIdx.x / static_cast<unsigned>(w.splits);
  const int part = static_cast<int>(blockIdx.x % static_cast<unsigned>(w.splits));
  const std::int64_t u_end = w.total * (part + 1) / w.splits;
  std::int64_t u = w.total * part / w.splits + threadIdx.x;
  std::int64_t j = u % w.units;
  std::int64_t off = (u / w.units) * w.plane_stride + c * w.hw + j * VEC;
  const typename Op::Channel ch = op.channel(c);
  typename Op::Acc acc{};
  while (u < u_end) {
    typename Op::Item it[K];
    int valid = 0;
#pragma unroll
    for (int k = 0; k < K; ++k) {
      if (u < u_end) {
        it[k] = op.load(off);
        valid = k + 1;
      }
      u += kThreads;
      j += w.step_j;
      off += w.step_off;
      if (j >= w.units) {
        j -= w.units;
        off += w.wrap_off;
      }
    }
    op.fold(acc, it, valid, ch);
  }
  acc = block_reduce(acc);
  if (w.splits == 1) {
    if (threadIdx.x == 0) op.finish(c, widen(acc));
    return;
  }
  // Publish this block's partial; the last of the channel's blocks to arrive merges them all.
  __shared__ bool is_last;
  if (threadIdx.x == 0) {
    partials[blockIdx.x] = acc;
    __threadfence();
    is_last = atomicAdd(tickets + c, 1u) == static_cast<unsigned>(w.splits - 1);
  }
  __syncthreads();
  if (!is_last) return;
  __threadfence();
  typename Op::Wide t{};
  for (int p = threadIdx.x; p < w.splits; p += kThreads)
    t = combine(t, widen(load_partial(partials + c * w.splits + p)));
  t = block_reduce(t);
  if (threadIdx.x == 0) {
    op.finish(c, t);
    tickets[c] = 0;  // ready for another launch on this workspace
  }
}

struct RowWalk {
  std::int64_t n;
  std::int64_t c;
  int splits;
};

// Rows plan (HW == 1): launch ceil(C / 32) * splits blocks of kThreads (8 warps); block b
// covers channels [32 * (b / splits), +32) (lane = channel) and part b % splits of the N rows,
// each warp reading 128 contiguous bytes of one row at a time. Memory: one read of each
// streamed tensor; partials and tickets are a few hundred KB at most.
template <int K, class Op>
__global__ void __launch_bounds__(kThreads)
    reduce_rows_kernel(Op op, RowWalk w, typename Op::Acc* partials, unsigned* tickets) {
  const int lane = threadIdx.x % kTile, row = threadIdx.x / kTile;
  const std::int64_t tile = blockIdx.x / static_cast<unsigned>(w.splits);
  const int part = static_cast<int>(blockIdx.x % static_cast<unsigned>(w.splits));
  const std::int64_t c = tile * kTile + lane;
  const bool active = c < w.c;
  typename Op::Acc acc{};
  if (active) {
    const typename Op::Channel ch = op.channel(c);
    const std::int64_t r_end = w.n * (part + 1) / w.splits;
    std::int64_t r = w.n * part / w.splits + row;
    std::int64_t off = r * w.c + c;
    while (r < r_end) {
      typename Op::Item it[K];
      int valid = 0;
#pragma unroll
      for (int k = 0; k < K; ++k) {
        if (r < r_end) {
          it[k] = op.load(off);
          valid = k + 1;
        }
        r += kTileRows;
        off += kTileRows * w.c;
      }
      op.fold(acc, it, valid, ch);
    }
  }
  __shared__ typename Op::Acc rows[kTileRows][kTile];
  rows[row][lane] = acc;
  __syncthreads();
  if (row == 0)
    for (int i = 1; i < kTileRows; ++i) acc = combine(acc, rows[i][lane]);
  if (w.splits == 1) {
    if (row == 0 && active) op.finish(c, widen(acc));
    return;
  }
  __shared__ bool is_last;
  if (row == 0) {
    partials[static_cast<std::int64_t>(blockIdx.x) * kTile + lane] = acc;
    __threadfence();
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();  // the release covers the other writers' partials, ordered by the barrier
    is_last = atomicAdd(tickets + tile, 1u) == static_cast<unsigned>(w.splits - 1);
  }
  __syncthreads();
  if (!is_last) return;
  __threadfence();
  typename Op::Wide t{};
  for (int p = row; p < w.splits; p += kTileRows)
    t = combine(t, widen(load_partial(partials + (tile * w.splits + p) * kTile + lane)));
  __shared__ typename Op::Wide wide_rows[kTileRows][kTile];
  wide_rows[row][lane] = t;
  __syncthreads();
  if (row == 0) {
    for (int i = 1; i < kTileRows; ++i) t = combine(t, wide_rows[i][lane]);
    if (active) op.finish(c, t);
  }
  if (threadIdx.x == 0) tickets[tile] = 0;  // ready for another launch on this workspace
}

// ---- elementwise passes ----

// The flat tensor as `vectors` groups of VEC elements. Plane mode: a vector lies in one plane
// (HW % VEC == 0), its channel is (v / period) % C with period = HW / VEC. Row mode (HW == 1,
// VEC == 4, C % 4 == 0): vector v holds channels 4 * (v % period) .. +3 with period = C / 4.
// Each block takes a contiguous chunk of vectors; a thread steps by kThreads vectors, keeping
// (j = v % period, c) up to date without divisions.
struct FlatWalk {
  std::int64_t vectors;
  std::int64_t chunk;  // vectors per block, a multiple of kThreads
  std::int64_t period;
  std::int64_t c;
  std::int64_t step_j;  // kThreads % period
  std::int64_t step_c;  // (kThreads / period) % C (plane mode)
};

// Launch: ceil(vectors / chunk) blocks of kThreads (at most one wave of resident blocks),
// K vectors in flight per thread. Memory: one pass per tensor the functor streams.
// kFixed (row mode with C / 4 dividing kThreads, so step_j == 0 and the chunk is a multiple of
// kThreads): every vector a thread visits holds the same four channels, so their parameters
// are loaded (and, in eval, rsqrt-folded) once per thread instead of once per vector.
template <int VEC, bool kRow, int K, class F, bool kFixed = false>
__global__ void __launch_bounds__(kThreads) channel_map_kernel(F f, FlatWalk w) {
  static_assert(!kFixed || (kRow && VEC == 4), "fixed channels are a row-mode case");
  if (blockIdx.x == 0 && threadIdx.x == 0) f.once();
  const std::int64_t begin = static_cast<std::int64_t>(blockIdx.x) * w.chunk;
  const std::int64_t end = begin + w.chunk < w.vectors ? begin + w.chunk : w.vectors;
  std::int64_t v = begin + threadIdx.x;
  std::int64_t j = v % w.period;
  std::int64_t c = kRow ? 0 : (v / w.period) % w.c;
  if constexpr (kFixed) {
    typename F::Params p[4];
    f.params4(static_cast<int>(j * 4), p);
    while (v < end) {
      typename F::Item it[K];
      const std::int64_t v0 = v;
#pragma unroll
      for (int k = 0; k < K; ++k) {
        if (v < end) it[k] = f.load(v * VEC);
        v += kThreads;
      }
#pragma unroll
      for (int k = 0; k < K; ++k) {
        const std::int64_t vk = v0 + static_cast<std::int64_t>(k) * kThreads;
        if (vk < end) f.apply4(vk * VEC, it[k], p);
      }
    }
  } else {
    while (v < end) {
      typename F::Item it[K];
      int ch[K];
      const std::int64_t v0 = v;
#pragma unroll
      for (int k = 0; k < K; ++k) {
        ch[k] = static_cast<int>(kRow ? j * 4 : c);
        if (v < end) it[k] = f.load(v * VEC);
        v += kThreads;
        j += w.step_j;
        if constexpr (kRow) {
          if (j >= w.period) j -= w.period;
        } else {
          c += w.step_c;
          if (j >= w.period) {
            j -= w.period;
            ++c;
          }
          if (c >= w.c) c -= w.c;
        }
      }
#pragma unroll
      for (int k = 0; k < K; ++k) {
        const std::int64_t vk = v0 + static_cast<std::int64_t>(k) * kThreads;
        if (vk < end) f.apply(vk * VEC, it[k], ch[k]);
      }
    }
  }
}

// Applies out = g(params(channel), inputs) to each element of a vector: plane mode loads the
// channel's parameters once per vector (f.params(c)); row mode, whose vector holds channels
// c..c+3, loads the four channels' parameters together (f.params4(c, p)).
template <int VEC, bool kRow, class Params, class F, class ValueFn>
__device__ __forceinline__ void per_channel(Vec<VEC>& out, int c, const F& f, ValueFn value) {
  if constexpr (kRow) {
    static_assert(VEC == 4, "row mode holds four channels per vector");
    Params p[4];
    f.params4(c, p);
#pragma unroll
    for (int e = 0; e < 4; ++e) out.v[e] = value(p[e], e);
  } else {
    const Params p = f.params(c);
#pragma unroll
    for (int e = 0; e < VEC; ++e) out.v[e] = value(p, e);
  }
}

// Row mode: the values of channels c..c+3 (c % 4 == 0) of a per-channel array, as one 128-bit
// load when the functor's arrays are all 16-byte aligned (`vec`), else four scalar loads; a
// null array reads as `absent`. Per warp, the 128-bit loads fetch 512 contiguous bytes where
// four scalar loads would each touch four 128-byte lines for a quarter of their bytes.
__device__ __forceinline__ float4 ldg4(const float* p, int c, bool vec, float absent) {
  if (p == nullptr) return make_float4(absent, absent, absent, absent);
  if (vec) return __ldg(reinterpret_cast<const float4*>(p + c));
  return make_float4(__ldg(p + c), __ldg(p + c + 1), __ldg(p + c + 2), __ldg(p + c + 3));
}

__device__ __forceinline__ float lane(const float4& v, int e) {
  return e == 0 ? v.x : e == 1 ? v.y : e == 2 ? v.z : v.w;
}

// Host: 16-byte alignment (null counts as aligned), of one pointer or of every array.
inline bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }
inline bool all_aligned16(std::initializer_list<const float*> arrays) {
  return std::all_of(arrays.begin(), arrays.end(), [](const float* p) { return aligned16(p); });
}

struct Affine {
  float mean, scale, bias;
};

// y = (x - mean) * scale + bias. Training: mean = save_mean, scale = weight * invstd from
// the statistics kernel. Eval: mean = running_mean, scale = weight * rsqrt(running_var + eps).
// kRelu: batch_norm_relu's forward, relu(y).
template <int VEC, bool kRow, bool kEval, bool kRelu = false>
struct NormalizeFn {
  using Item = Vec<VEC>;
  using Params = Affine;
  const float* x;
  float* y;
  const float* mean;
  const float* scale_or_var;  // training: the folded scale; eval: running_var
  const float* weight;        // eval only; may be null
  const float* bias;          // may be null
  float eps;
  std::int64_t* counter;  // num_batches_tracked, incremented once (training); may be null
  bool vec_params;        // row mode: the per-channel arrays are 16-byte aligned (host sets it)

  bool params_aligned() const { return all_aligned16({mean, scale_or_var, weight, bias}); }

  __device__ void once() const {
    if (counter) *counter += 1;
  }
  __device__ Item load(std::int64_t off) const { return load_vec<VEC>(x + off); }
  __device__ Affine params(int c) const {
    Affine a;
    a.mean = __ldg(mean + c);
    if constexpr (kEval)
      a.scale = eval_scale(__ldg(scale_or_var + c), weight ? __ldg(weight + c) : 1.f, eps);
    else
      a.scale = __ldg(scale_or_var + c);
    a.bias = bias ? __ldg(bias + c) : 0.f;
    return a;
  }
  __device__ void params4(int c, Affine (&a)[4]) const {
    const float4 m = ldg4(mean, c, vec_params, 0.f);
    const float4 sv = ldg4(scale_or_var, c, vec_params, 0.f);
    const float4 w = kEval ? ldg4(weight, c, vec_params, 1.f) : make_float4(1.f, 1.f, 1.f, 1.f);
    const float4 b = ldg4(bias, c, vec_params, 0.f);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      a[e].mean = lane(m, e);
      a[e].scale = kEval ? eval_scale(lane(sv, e), lane(w, e), eps) : lane(sv, e);
      a[e].bias = lane(b, e);
    }
  }
  __device__ static float value(const Item& in, const Affine& a, int e) {
    const float y = affine(in.v[e], a.mean, a.scale, a.bias);
    return kRelu ? relu_of(y) : y;
  }
  __device__ void apply(std::int64_t off, const Item& in, int c) const {
    Vec<VEC> out;
    per_channel<VEC, kRow, Affine>(out, c, *this, [&](const Affine& a, int e) { return value(in, a, e); });
    store_vec<VEC>(y + off, out);
  }
  // Row mode, the four channels' parameters given.
  __device__ void apply4(std::int64_t off, const Item& in, const Affine (&p)[4]) const {
    Vec<VEC> out;
#pragma unroll
    for (int e = 0; e < 4; ++e) out.v[e] = value(in, p[e], e);
    store_vec<VEC>(y + off, out);
  }
};

struct DxCoef {
  float mean, k1, mean_dy, k2;
  float scale, shift;  // kRelu: y's terms beside mean
};

// Training: dx = (dy - mean_dy - (x - mean) * k2) * k1 (coefficients from the gradient
// reduction). Eval: dx = dy * weight * rsqrt(running_var + eps), reading dy only.
// kRelu: batch_norm_relu's dx; dy is masked where the recomputed y is not positive, so eval
// reads x too.
template <int VEC, bool kRow, bool kTrain, bool kRelu = false>
struct DxFn {
  struct Pair {
    Vec<VEC> x, dy;
  };
  using Item = std::conditional_t<kTrain || kRelu, Pair, Vec<VEC>>;
  using Params = DxCoef;
  const float* x;
  const float* dy;
  float* dx;
  const float* mean;  // training
  const float* k1;
  const float* mean_dy;
  const float* k2;
  const float* running_var;  // eval
  const float* weight;       // eval; may be null
  const float* relu_scale;   // kRelu, training: the forward's folded scale
  const float* bias;         // kRelu: may be null
  float eps;
  bool vec_params;  // row mode: the per-channel arrays are 16-byte aligned (host sets it)

  bool params_aligned() const {
    const bool relu_ok = !kRelu || all_aligned16({relu_scale, bias, mean});
    return relu_ok && (kTrain ? all_aligned16({mean, k1, mean_dy, k2}) : all_aligned16({running_var, weight}));
  }
  __device__ void once() const {}
  __device__ Item load(std::int64_t off) const {
    if constexpr (kTrain || kRelu)
      return Pair{load_vec<VEC>(x + off), load_vec<VEC>(dy + off)};
    else
      return load_vec<VEC>(dy + off);
  }
  __device__ DxCoef params(int c) const {
    DxCoef p;
    if constexpr (kTrain) {
      p.mean = __ldg(mean + c);
      p.k1 = __ldg(k1 + c);
      p.mean_dy = __ldg(mean_dy + c);
      p.k2 = __ldg(k2 + c);
      p.scale = kRelu ? __ldg(relu_scale + c) : 0.f;
    } else {
      p.mean = kRelu ? __ldg(mean + c) : 0.f;
      p.k1 = eval_scale(__ldg(running_var + c), weight ? __ldg(weight + c) : 1.f, eps);
      p.mean_dy = 0.f;
      p.k2 = 0.f;
      p.scale = p.k1;  // the eval forward's scale
    }
    p.shift = kRelu && bias ? __ldg(bias + c) : 0.f;
    return p;
  }
  __device__ void params4(int c, DxCoef (&p)[4]) const {
    const float4 sh = kRelu ? ldg4(bias, c, vec_params, 0.f) : make_float4(0.f, 0.f, 0.f, 0.f);
    if constexpr (kTrain) {
      const float4 m = ldg4(mean, c, vec_params, 0.f), a = ldg4(k1, c, vec_params, 0.f);
      const float4 mdy = ldg4(mean_dy, c, vec_params, 0.f), b = ldg4(k2, c, vec_params, 0.f);
      const float4 s = kRelu ? ldg4(relu_scale, c, vec_params, 0.f) : make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
      for (int e = 0; e < 4; ++e)
        p[e] = DxCoef{lane(m, e), lane(a, e), lane(mdy, e), lane(b, e), lane(s, e), lane(sh, e)};
    } else {
      const float4 v = ldg4(running_var, c, vec_params, 0.f), w = ldg4(weight, c, vec_params, 1.f);
      const float4 m = kRelu ? ldg4(mean, c, vec_params, 0.f) : make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float k = eval_scale(lane(v, e), lane(w, e), eps);
        p[e] = DxCoef{lane(m, e), k, 0.f, 0.f, k, lane(sh, e)};
      }
    }
  }
  __device__ static float value(const Item& in, const DxCoef& p, int e) {
    if constexpr (kTrain || kRelu) {
      float g = in.dy.v[e];
      if constexpr (kRelu) g = relu_grad(g, affine(in.x.v[e], p.mean, p.scale, p.shift));
      if constexpr (kTrain)
        return (g - p.mean_dy - (in.x.v[e] - p.mean) * p.k2) * p.k1;
      else
        return g * p.k1;
    } else {
      return in.v[e] * p.k1;
    }
  }
  __device__ void apply(std::int64_t off, const Item& in, int c) const {
    Vec<VEC> out;
    per_channel<VEC, kRow, DxCoef>(out, c, *this, [&](const DxCoef& p, int e) { return value(in, p, e); });
    store_vec<VEC>(dx + off, out);
  }
  // Row mode, the four channels' coefficients given.
  __device__ void apply4(std::int64_t off, const Item& in, const DxCoef (&p)[4]) const {
    Vec<VEC> out;
#pragma unroll
    for (int e = 0; e < 4; ++e) out.v[e] = value(in, p[e], e);
    store_vec<VEC>(dx + off, out);
  }
};

// ---- host side: plans, workspace, launches ----

std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

const cudaDeviceProp& current_properties() {
  int dev = 0;
  CUGRAD_CUDA_CHECK(cudaGetDevice(&dev));
  return runtime::device_properties(dev);
}

// Resident blocks of `Kernel` per SM (computed once per process; devices are assumed to share
// an architecture).
template <auto Kernel>
int blocks_per_sm() {
  static const int cached = [] {
    int n = 0;
    CUGRAD_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, Kernel, kThreads, 0));
    return std::max(n, 1);
  }();
  return cached;
}

// Blocks per channel (or per tile of channels): enough for `groups * splits` to fill one wave
// of `resident` blocks, but no more than gives each thread one full unrolled step.
int choose_splits(std::int64_t groups, std::int64_t max_useful, std::int64_t resident) {
  if (groups >= resident) return 1;
  return static_cast<int>(std::max<std::int64_t>(1, std::min(resident / groups, max_useful)));
}

// Workspace: [tickets | partial accumulators | per-channel float arrays]. Sized for the most
// blocks any plan launches with splits > 1: one wave at the architecture's thread limit.
struct WorkspaceLayout {
  std::size_t partials = 0;  // byte offsets
  std::size_t floats = 0;
  std::size_t total = 0;
};

std::size_t align256(std::size_t v) { return (v + 255) / 256 * 256; }

WorkspaceLayout workspace_layout(const BatchNormDims& d, std::size_t acc_bytes, int floats_per_channel) {
  const cudaDeviceProp& p = current_properties();
  const auto max_resident = static_cast<std::size_t>(p.multiProcessorCount) *
                            static_cast<std::size_t>(std::max(1, p.maxThreadsPerMultiProcessor / kThreads));
  const std::size_t entries = max_resident * (d.hw == 1 ? kTile : 1);
  WorkspaceLayout l;
  l.partials = align256(max_resident * sizeof(unsigned));
  l.floats = l.partials + align256(entries * acc_bytes);
  l.total = l.floats + align256(static_cast<std::size_t>(d.c) * floats_per_channel * sizeof(float));
  return l;
}

void check_workspace(const char* op, const WorkspaceLayout& l, const void* workspace, std::size_t bytes) {
  CUGRAD_CHECK(workspace != nullptr && bytes >= l.total && aligned16(workspace), op, ": workspace of ", bytes,
               " bytes is too small or misaligned (", l.total, " bytes needed)");
}

void check_grid(const char* op, std::int64_t blocks) {
  CUGRAD_CHECK(blocks <= INT_MAX, op, ": ", blocks, " blocks exceed the grid limit");
}

template <int VEC, int K, class Op>
void launch_planes(const char* name, const BatchNormDims& d, const Op& op, void* partials, unsigned* tickets,
                   cudaStream_t s) {
  PlaneWalk w{};
  w.hw = d.hw;
  w.plane_stride = d.c * d.hw;
  w.units = d.hw / VEC;
  w.total = d.n * w.units;
  w.step_j = kThreads % w.units;
  w.step_off = (kThreads / w.units) * w.plane_stride + w.step_j * VEC;
  w.wrap_off = w.plane_stride - w.units * VEC;
  const std::int64_t resident = static_cast<std::int64_t>(blocks_per_sm<reduce_planes_kernel<VEC, K, Op>>()) *
                                current_properties().multiProcessorCount;
  w.splits = choose_splits(d.c, ceil_div(w.total, static_cast<std::int64_t>(kThreads) * K), resident);
  const std::int64_t blocks = d.c * w.splits;
  check_grid(name, blocks);
  if (w.splits > 1)
    CUGRAD_CUDA_CHECK(cudaMemsetAsync(tickets, 0, static_cast<std::size_t>(d.c) * sizeof(unsigned), s));
  reduce_planes_kernel<VEC, K, Op><<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(
      op, w, static_cast<typename Op::Acc*>(partials), tickets);
  CUGRAD_CUDA_CHECK_LAUNCH();
}

template <int K, class Op>
void launch_rows(const char* name, const BatchNormDims& d, const Op& op, void* partials, unsigned* tickets,
                 cudaStream_t s) {
  const std::int64_t tiles = ceil_div(d.c, kTile);
  const std::int64_t resident = static_cast<std::int64_t>(blocks_per_sm<reduce_rows_kernel<K, Op>>()) *
                                current_properties().multiProcessorCount;
  RowWalk w{d.n, d.c,
            choose_splits(tiles, ceil_div(d.n, static_cast<std::int64_t>(kTileRows) * K), resident)};
  const std::int64_t blocks = tiles * w.splits;
  check_grid(name, blocks);
  if (w.splits > 1)
    CUGRAD_CUDA_CHECK(cudaMemsetAsync(tickets, 0, static_cast<std::size_t>(tiles) * sizeof(unsigned), s));
  reduce_rows_kernel<K, Op><<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(
      op, w, static_cast<typename Op::Acc*>(partials), tickets);
  CUGRAD_CUDA_CHECK_LAUNCH();
}

// Picks the plan (rows for HW == 1, float4 planes when possible, scalar planes otherwise) and
// launches the reduction; make_op(std::integral_constant<int, VEC>) builds the op.
template <class MakeOp>
void launch_reduction(const char* name, const BatchNormDims& d, bool vec4, MakeOp make_op, void* partials,
                      unsigned* tickets, cudaStream_t s) {
  if (d.hw == 1)
    launch_rows<8>(name, d, make_op(std::integral_constant<int, 1>{}), partials, tickets, s);
  else if (vec4)
    launch_planes<4, 4>(name, d, make_op(std::integral_constant<int, 4>{}), partials, tickets, s);
  else
    launch_planes<1, 8>(name, d, make_op(std::integral_constant<int, 1>{}), partials, tickets, s);
}

enum class MapMode { plane4, row4, scalar };

MapMode map_mode(const BatchNormDims& d, std::initializer_list<const void*> streamed) {
  for (const void* p : streamed)
    if (!aligned16(p)) return MapMode::scalar;
  if (d.hw % 4 == 0) return MapMode::plane4;
  if (d.hw == 1 && d.c % 4 == 0) return MapMode::row4;
  return MapMode::scalar;
}

// Launches a channel_map_kernel over `w`: at most one wave of resident blocks, each a chunk of
// whole kThreads-vector steps (K per thread in flight).
template <auto Kernel, int K, class F>
void launch_walk(FlatWalk w, const F& f, cudaStream_t s) {
  const std::int64_t resident =
      static_cast<std::int64_t>(blocks_per_sm<Kernel>()) * current_properties().multiProcessorCount;
  std::int64_t blocks = std::min(ceil_div(w.vectors, static_cast<std::int64_t>(kThreads) * K), resident);
  w.chunk = ceil_div(ceil_div(w.vectors, blocks), kThreads) * kThreads;  // a multiple of kThreads
  blocks = ceil_div(w.vectors, w.chunk);
  Kernel<<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(f, w);
  CUGRAD_CUDA_CHECK_LAUNCH();
}

template <int VEC, bool kRow, class F>
void launch_map(const BatchNormDims& d, F f, cudaStream_t s) {
  constexpr int K = 4;
  f.vec_params = kRow && f.params_aligned();
  FlatWalk w{};
  w.vectors = d.numel() / VEC;
  w.c = d.c;
  w.period = kRow ? d.c / 4 : d.hw / VEC;
  w.step_j = kThreads % w.period;
  w.step_c = kRow ? 0 : (kThreads / w.period) % d.c;
  if constexpr (kRow) {
    if (w.step_j == 0) return launch_walk<channel_map_kernel<VEC, kRow, K, F, true>, K>(w, f, s);
  }
  launch_walk<channel_map_kernel<VEC, kRow, K, F>, K>(w, f, s);
}

// make_fn(std::integral_constant<int, VEC>, std::bool_constant<kRow>) builds the functor.
template <class MakeFn>
void launch_map_mode(MapMode mode, const BatchNormDims& d, MakeFn make_fn, cudaStream_t s) {
  switch (mode) {
    case MapMode::plane4:
      launch_map<4, false>(d, make_fn(std::integral_constant<int, 4>{}, std::false_type{}), s);
      break;
    case MapMode::row4:
      launch_map<4, true>(d, make_fn(std::integral_constant<int, 4>{}, std::true_type{}), s);
      break;
    case MapMode::scalar:
      launch_map<1, false>(d, make_fn(std::integral_constant<int, 1>{}, std::false_type{}), s);
      break;
  }
}

// fn(std::bool_constant<relu>): the kernels with or without the fused ReLU.
template <class Fn>
void with_relu(bool relu, Fn&& fn) {
  if (relu)
    fn(std::true_type{});
  else
    fn(std::false_type{});
}

void check_dims(const char* op, const BatchNormDims& d) {
  CUGRAD_CHECK(d.n >= 0 && d.c >= 0 && d.hw >= 1 && d.c <= INT_MAX, op, ": bad dimensions N=", d.n,
               " C=", d.c, " HW=", d.hw);
}

}  // namespace

std::size_t batch_norm_train_forward_workspace_bytes(const BatchNormDims& d) {
  return workspace_layout(d, sizeof(WelfordF), 1).total;
}

std::size_t batch_norm_backward_workspace_bytes(const BatchNormDims& d) {
  return workspace_layout(d, sizeof(SumsF), 3).total;
}

void batch_norm_train_forward(const float* x, float* y, const float* weight, const float* bias, double eps,
                              const BatchNormDims& d, float* save_mean, float* save_invstd,
                              const BatchNormRunning& running, void* workspace, std::size_t workspace_bytes,
                              void* stream, bool relu, float* save_scale) {
  constexpr const char* kName = "batch_norm";
  check_dims(kName, d);
  if (d.numel() == 0) return;
  CUGRAD_CHECK(d.per_channel() >= 2, kName, ": training needs more than one value per channel");
  const WorkspaceLayout l = workspace_layout(d, sizeof(WelfordF), 1);
  check_workspace(kName, l, workspace, workspace_bytes);
  auto* base = static_cast<char*>(workspace);
  auto* tickets = reinterpret_cast<unsigned*>(base);
  void* partials = base + l.partials;
  auto* scale = save_scale ? save_scale : reinterpret_cast<float*>(base + l.floats);
  cudaStream_t s = as_stream(stream);

  launch_reduction(
      kName, d, d.hw % 4 == 0 && aligned16(x),
      [&](auto vec) {
        StatsOp<decltype(vec)::value> op{};
        op.x = x;
        op.weight = weight;
        op.save_mean = save_mean;
        op.save_invstd = save_invstd;
        op.scale = scale;
        op.running_mean = running.mean;
        op.running_var = running.var;
        op.num_batches_tracked = running.num_batches_tracked;
        op.cumulative = running.cumulative;
        op.momentum = running.momentum;
        op.eps = eps;
        op.count = static_cast<double>(d.per_channel());
        return op;
      },
      partials, tickets, s);

  with_relu(relu, [&](auto fused) {
    launch_map_mode(
        map_mode(d, {x, y}), d,
        [&](auto vec, auto row) {
          NormalizeFn<decltype(vec)::value, decltype(row)::value, false, decltype(fused)::value> f{};
          f.x = x;
          f.y = y;
          f.mean = save_mean;
          f.scale_or_var = scale;
          f.weight = nullptr;
          f.bias = bias;
          f.eps = static_cast<float>(eps);
          f.counter = running.num_batches_tracked;
          return f;
        },
        s);
  });
}

void batch_norm_eval_forward(const float* x, float* y, const float* weight, const float* bias,
                             const float* running_mean, const float* running_var, double eps,
                             const BatchNormDims& d, void* stream, bool relu) {
  check_dims("batch_norm", d);
  if (d.numel() == 0) return;
  with_relu(relu, [&](auto fused) {
    launch_map_mode(
        map_mode(d, {x, y}), d,
        [&](auto vec, auto row) {
          NormalizeFn<decltype(vec)::value, decltype(row)::value, true, decltype(fused)::value> f{};
          f.x = x;
          f.y = y;
          f.mean = running_mean;
          f.scale_or_var = running_var;
          f.weight = weight;
          f.bias = bias;
          f.eps = static_cast<float>(eps);
          f.counter = nullptr;
          return f;
        },
        as_stream(stream));
  });
}

void batch_norm_backward(const float* x, const float* dy, const float* weight, const float* mean,
                         const float* invstd_or_var, bool training, double eps, const BatchNormDims& d,
                         float* dx, float* dweight, float* dbias, void* workspace,
                         std::size_t workspace_bytes, void* stream, const BatchNormRelu* relu) {
  constexpr const char* kName = "batch_norm_backward";
  check_dims(kName, d);
  CUGRAD_CHECK(!relu || !training || relu->scale != nullptr, kName,
               ": the fused ReLU's training backward needs the forward's saved scale");
  const float* relu_scale = relu ? relu->scale : nullptr;
  const float* relu_bias = relu ? relu->bias : nullptr;
  if (d.numel() == 0) return;
  const WorkspaceLayout l = workspace_layout(d, sizeof(SumsF), 3);
  cudaStream_t s = as_stream(stream);
  float* k1 = nullptr;
  float* mean_dy = nullptr;
  float* k2 = nullptr;

  if (dweight || dbias || (training && dx)) {
    check_workspace(kName, l, workspace, workspace_bytes);
    auto* base = static_cast<char*>(workspace);
    auto* tickets = reinterpret_cast<unsigned*>(base);
    void* partials = base + l.partials;
    if (training && dx) {
      k1 = reinterpret_cast<float*>(base + l.floats);
      mean_dy = k1 + d.c;
      k2 = mean_dy + d.c;
    }
    const bool vec4 = d.hw % 4 == 0 && aligned16(x) && aligned16(dy);
    auto fill = [&](auto& op) {
      op.x = x;
      op.dy = dy;
      op.mean = mean;
      op.second = invstd_or_var;
      op.weight = weight;
      op.dweight = dweight;
      op.dbias = dbias;
      op.k1 = k1;
      op.mean_dy = mean_dy;
      op.k2 = k2;
      op.eps = eps;
      op.count = static_cast<double>(d.per_channel());
      op.relu_scale = relu_scale;
      op.bias = relu_bias;
      op.eps_f = static_cast<float>(eps);
    };
    with_relu(relu != nullptr, [&](auto fused) {
      constexpr bool kRelu = decltype(fused)::value;
      if (training) {
        launch_reduction(
            kName, d, vec4,
            [&](auto vec) {
              GradOp<decltype(vec)::value, true, kRelu> op{};
              fill(op);
              return op;
            },
            partials, tickets, s);
      } else {
        launch_reduction(
            kName, d, vec4,
            [&](auto vec) {
              GradOp<decltype(vec)::value, false, kRelu> op{};
              fill(op);
              return op;
            },
            partials, tickets, s);
      }
    });
  }
  if (!dx) return;

  auto fill_dx = [&](auto& f) {
    f.x = x;
    f.dy = dy;
    f.dx = dx;
    f.mean = mean;
    f.k1 = k1;
    f.mean_dy = mean_dy;
    f.k2 = k2;
    f.running_var = invstd_or_var;
    f.weight = weight;
    f.relu_scale = relu_scale;
    f.bias = relu_bias;
    f.eps = static_cast<float>(eps);
  };
  with_relu(relu != nullptr, [&](auto fused) {
    constexpr bool kRelu = decltype(fused)::value;
    if (training) {
      launch_map_mode(
          map_mode(d, {x, dy, dx}), d,
          [&](auto vec, auto row) {
            DxFn<decltype(vec)::value, decltype(row)::value, true, kRelu> f{};
            fill_dx(f);
            return f;
          },
          s);
    } else {
      // Eval reads dy only, unless the fused ReLU's mask needs x.
      launch_map_mode(
          kRelu ? map_mode(d, {x, dy, dx}) : map_mode(d, {dy, dx}), d,
          [&](auto vec, auto row) {
            DxFn<decltype(vec)::value, decltype(row)::value, false, kRelu> f{};
            fill_dx(f);
            return f;
          },
          s);
    }
  });
}

}  // namespace cugrad::cuda
