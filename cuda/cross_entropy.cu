// Fused softmax cross-entropy with label smoothing, ignore_index, class weights and the
// none/mean/sum reductions (the math is in host/cpu/cross_entropy.h, the CPU reference).
//
// Every row kernel reads a row of logits once, computes its max, Σexp(x-m), Σw(x-m) and
// x_t - m, the row's loss and, when the gradient is wanted, writes the gradient for an
// upstream gradient of 1 from the values it still holds on chip: 2 passes over the logits
// in all (read once, write once), plus 8 bytes of target per row. Rows whose target is
// ignored (or out of range: reported through the device-error record, then treated as
// ignored, never used as an index) are not read; their loss and gradient are written as 0.
// The per-row losses of mean/sum are summed in double per block, and the last block to
// finish adds the per-block partials in block order (deterministic for a given GPU) and
// writes the scalar.
//
// Launches of a forward:
//  - ce_prepare_kernel (mean and sum only), 1 block of 1024 threads: zeroes the block counter
//    and, for mean, sums the denominator D (rows counted, or Σ w[t]) in double, so that the
//    row kernels write a gradient that already carries 1/D. Reads the targets (8 B per row).
//  - one row kernel, by the number of classes k (units = float4 when k % 4 == 0 and the
//    pointers are 16-byte aligned, floats otherwise):
//    * k <= 1024, ce_group_rows_kernel: 256-thread blocks; a group of 1..32 lanes of one warp
//      per row (the smallest power of two giving each lane at most ~4 units, a whole warp
//      beyond 128 units), the row in registers (up to 8 float4 or 32 floats per lane);
//      shuffle reductions inside the group; blocks stride over groups of rows.
//      Opt-in (set_cross_entropy_staged_rows), rows of a whole warp in float4 units go to
//      ce_staged_rows_kernel instead: the same arithmetic, the rows staged through shared
//      memory by cp.async, kStages - 1 rows ahead per warp.
//    * 1024 < k, ce_block_rows_kernel: one block of 256 (k <= 4096) or 512 threads per row,
//      blocks striding over rows. Each thread keeps up to 4 float4 (8 floats unaligned) of
//      the row in registers; what does not fit goes to dynamic shared memory, copied with
//      cp.async (global to shared, no registers) while the register part loads. At k = 32000
//      that is 8192 floats in registers and 93 KB of shared memory per block, so two rows
//      are in flight per SM (H100: 227 KB per block, 228 KB per SM). Still one read of the
//      row from DRAM and one write.
//    * rows beyond registers + shared memory (on an H100, k above ~61700 unaligned and
//      ~65800 aligned), ce_online_rows_kernel: one 1024-thread block per row; a first read
//      computes the max and the sums online (rescaling when the max grows), a second read
//      writes the gradient. Traffic: 2 reads + 1 write of the row; the second read hits L2
//      only while the rows in flight fit in it: two resident blocks per SM on an H100 are
//      264 rows of 247 KB and up, 65 MB and up against a 50 MB L2, so part of the second
//      read may come from DRAM (not measured yet; no benchmark shape reaches this kernel).
// Backward: ce_scale_grad_kernel scales the saved gradient in place by the upstream gradient
// (mean/sum: one scalar; the kernel reads it and exits when it is 1, so the common
// loss.backward() costs no pass; none: each counted row by its upstream value, skipping
// rows whose value is 1). Rows that do not count stay exactly 0, as in PyTorch.
#include "cuda/cross_entropy.h"

#include <cuda_pipeline_primitives.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdint>

#include "cuda/device_errors.h"
#include "cuda/launch.cuh"

namespace cugrad::cuda {

namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kNone = 0, kMean = 1, kSum = 2;
constexpr int kGroupBlock = 256;              // threads of ce_group_rows_kernel
constexpr int kGroupMaxK = 1024;              // largest k for ce_group_rows_kernel
constexpr int kRowBlockMax = 512;             // ce_block_rows_kernel runs 256 or 512 threads
constexpr int kOnlineBlock = 1024;            // threads of ce_online_rows_kernel
constexpr int kPrepareBlock = 1024;           // threads of ce_prepare_kernel
constexpr int kScaleBlock = 256;              // threads of ce_scale_grad_kernel
constexpr std::int64_t kMaxBlocksPerSm = 32;  // bound on row-kernel blocks per SM (partials)
std::atomic<int> g_group_blocks_per_sm{static_cast<int>(kMaxBlocksPerSm)};  // group kernel's cap
std::atomic<bool> g_staged_rows{false};       // ce_staged_rows_kernel for whole-warp float4 rows
constexpr std::size_t kHeaderBytes = 64;      // workspace: denominator (double) and counter, then partials
constexpr std::size_t kStaticSmemReserve = 2048;  // static shared memory of ce_block_rows_kernel, with margin

// Kernel arguments (by value).
struct Args {
  const float* logits;         // (n, k)
  const std::int64_t* target;  // (n)
  const float* weight;         // (k), or null: no class weights
  float* loss;                 // n values (none) or 1 (mean, sum)
  float* grad;                 // (n, k), or null: no gradient
  double* denom;               // mean: D, written by ce_prepare_kernel
  unsigned int* counter;       // mean, sum: blocks finished
  double* partials;            // mean, sum: one loss sum per block
  std::int64_t n;
  std::int64_t ignore_index;
  int k;
  int reduction;  // kNone, kMean, kSum
  float keep;     // 1 - ε
  float eps_k;    // ε / k
  runtime::DeviceErrorSink errors;
};

// Row sums after the max m is known: Σexp(x-m), Σw(x-m), Σw (weighted only), x_t - m.
struct RowSums {
  float s, sxw, sw, dt;
};
// Gradient of one element: e·ca - cb·w - [j == t]·ct, with e = exp(x - m).
struct RowCoef {
  float ca, cb, ct;
};
// Online (single read) row statistics: running max, Σexp(x-m), Σw(x-m), Σw.
struct OnlineState {
  float m, s, sxw, sw;
};

__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

// ---- reductions: xor butterflies (every lane ends with the same bits, since each step
// adds the same two values in either order), then across warps in warp order ----

__device__ __forceinline__ float shfl_xor(float v, int o) { return __shfl_xor_sync(kFullMask, v, o); }
__device__ __forceinline__ double shfl_xor(double v, int o) { return __shfl_xor_sync(kFullMask, v, o); }
__device__ __forceinline__ RowSums shfl_xor(const RowSums& r, int o) {
  return RowSums{shfl_xor(r.s, o), shfl_xor(r.sxw, o), shfl_xor(r.sw, o), shfl_xor(r.dt, o)};
}
__device__ __forceinline__ OnlineState shfl_xor(const OnlineState& r, int o) {
  return OnlineState{shfl_xor(r.m, o), shfl_xor(r.s, o), shfl_xor(r.sxw, o), shfl_xor(r.sw, o)};
}

// One side of a merge of online states, rescaled to the common max m.
__device__ __forceinline__ void online_rescale(const OnlineState& p, float m, float& s, float& sxw) {
  if (p.m == m) {  // also both -inf
    s = p.s;
    sxw = p.sxw;
  } else {
    s = p.s * expf(p.m - m);
    sxw = p.sw != 0.f ? fmaf(p.sw, p.m - m, p.sxw) : p.sxw;
  }
}

struct MaxOp {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct SumOp {
  __device__ double operator()(double a, double b) const { return a + b; }
  __device__ RowSums operator()(const RowSums& a, const RowSums& b) const {
    return RowSums{a.s + b.s, a.sxw + b.sxw, a.sw + b.sw, a.dt + b.dt};
  }
};
struct OnlineOp {
  __device__ OnlineState operator()(const OnlineState& a, const OnlineState& b) const {
    const float m = fmaxf(a.m, b.m);
    float sa, xa, sb, xb;
    online_rescale(a, m, sa, xa);
    online_rescale(b, m, sb, xb);
    return OnlineState{m, sa + sb, xa + xb, a.sw + b.sw};
  }
};

// All-reduce over aligned groups of `width` lanes (a power of two <= 32); every lane of the
// warp must call it.
template <typename T, typename Op>
__device__ __forceinline__ T group_allreduce(T v, Op op, int width) {
  for (int o = width >> 1; o > 0; o >>= 1) v = op(v, shfl_xor(v, o));
  return v;
}

// All-reduce over the block (blockDim.x a multiple of 32); every thread gets the same
// value. `scratch` holds 32 entries; the leading barrier makes it safe to call repeatedly.
template <typename T, typename Op>
__device__ __forceinline__ T block_allreduce(T v, T* scratch, Op op) {
  v = group_allreduce(v, op, 32);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = v;
  __syncthreads();
  T r = scratch[0];
  const int warps = static_cast<int>(blockDim.x >> 5);
  for (int w = 1; w < warps; ++w) r = op(r, scratch[w]);
  return r;
}

// ---- loads and stores of one unit (a float or a float4) ----

template <int kVec>
__device__ __forceinline__ void load_unit(const float* p, float (&v)[kVec]) {
  if constexpr (kVec == 4) {
    const float4 q = __ldcs(reinterpret_cast<const float4*>(p));  // read once: streaming
    v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
  } else {
    v[0] = __ldcs(p);
  }
}

template <int kVec>
__device__ __forceinline__ void store_unit(float* p, const float (&v)[kVec]) {
  if constexpr (kVec == 4)
    *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
  else
    *p = v[0];
}

// Shared-memory units: one 128-bit access per float4 (consecutive threads, consecutive
// float4: no bank conflicts).
template <int kVec>
__device__ __forceinline__ void load_smem_unit(const float* p, float (&v)[kVec]) {
  if constexpr (kVec == 4) {
    const float4 q = *reinterpret_cast<const float4*>(p);
    v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
  } else {
    v[0] = *p;
  }
}

template <int kVec>
__device__ __forceinline__ void store_zero_unit(float* p) {
  float z[kVec];
#pragma unroll
  for (int j = 0; j < kVec; ++j) z[j] = 0.f;
  store_unit<kVec>(p, z);
}

// Class weights of unit u (1 without weights).
template <int kVec, bool kWeighted>
__device__ __forceinline__ void load_weights(const float* w, int u, float (&out)[kVec]) {
  if constexpr (!kWeighted) {
#pragma unroll
    for (int j = 0; j < kVec; ++j) out[j] = 1.f;
  } else if constexpr (kVec == 4) {
    const float4 q = __ldg(reinterpret_cast<const float4*>(w) + u);
    out[0] = q.x, out[1] = q.y, out[2] = q.z, out[3] = q.w;
  } else {
    out[0] = __ldg(w + u);
  }
}

// ---- per-row math ----

// Class of `row`, or -1 when the row does not count: ignored, or out of range (reported by
// `reporter`, then treated as ignored so that it is never used as an index).
__device__ __forceinline__ int row_class(const Args& a, std::int64_t row, bool reporter) {
  const std::int64_t t = __ldg(a.target + row);
  if (t == a.ignore_index) return -1;
  if (t < 0 || t >= a.k) {
    if (reporter)
      report_device_error(a.errors, runtime::DeviceErrorKind::cross_entropy_target, row, t, a.k,
                          a.ignore_index);
    return -1;
  }
  return static_cast<int>(t);
}

// The gradient's per-row scale c: 1/D for mean (D from ce_prepare_kernel), else 1.
__device__ __forceinline__ float grad_scale(const Args& a) {
  return a.reduction == kMean ? static_cast<float>(1.0 / *a.denom) : 1.f;
}

// Adds element x (class idx, weight w) to the sums; returns e = exp(x - m).
template <bool kWeighted>
__device__ __forceinline__ float add_element(RowSums& r, float x, float m, float w, int idx, int t) {
  const float d = x - m;
  const float e = expf(d);
  r.s += e;
  if constexpr (kWeighted) {
    r.sxw = fmaf(w, d, r.sxw);
    r.sw += w;
  } else {
    r.sxw += d;
  }
  if (idx == t) r.dt = d;
  return e;
}

template <bool kWeighted>
__device__ __forceinline__ float grad_element(const RowCoef& c, float e, float w, int idx, int t) {
  float g = fmaf(e, c.ca, kWeighted ? -c.cb * w : -c.cb);
  if (idx == t) g -= c.ct;
  return g;
}

// The row's loss and gradient coefficients from its reduced sums.
template <bool kWeighted>
__device__ __forceinline__ float finish_row(const Args& a, const RowSums& r, int t, float scale, RowCoef& c) {
  const float wt = kWeighted ? __ldg(a.weight + t) : 1.f;
  const float sw = kWeighted ? r.sw : static_cast<float>(a.k);
  const float lse = logf(r.s);
  float loss = a.keep * wt * (lse - r.dt);
  // Without smoothing the smoothing term is absent, as in PyTorch (a -inf logit would make
  // it 0·inf).
  if (a.eps_k != 0.f) loss += a.eps_k * (sw * lse - r.sxw);
  const float acoef = kWeighted ? a.keep * wt + a.eps_k * sw : 1.f;
  c.ca = scale * acoef / r.s;
  c.cb = scale * a.eps_k;
  c.ct = scale * a.keep * wt;
  return loss;
}

// Mean/sum: each block's loss sum goes to partials[block]; the last block to finish adds
// them in block order and writes the scalar. Called once, by every thread, at kernel end.
__device__ __forceinline__ void finish_reduction(const Args& a, double acc) {
  __shared__ double scratch[32];
  __shared__ bool is_last;
  const double block_total = block_allreduce(acc, scratch, SumOp{});
  if (threadIdx.x == 0) {
    a.partials[blockIdx.x] = block_total;
    __threadfence();  // the partial is visible device-wide before the counter says so
    is_last = atomicAdd(a.counter, 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (!is_last) return;
  __threadfence();
  double v = 0;
  for (unsigned int b = threadIdx.x; b < gridDim.x; b += blockDim.x) v += __ldcg(a.partials + b);
  const double total = block_allreduce(v, scratch, SumOp{});
  if (threadIdx.x == 0) a.loss[0] = static_cast<float>(a.reduction == kMean ? total / *a.denom : total);
}

// ---- kernels ----

// Mean/sum set-up, 1 block: zeroes the counter; for mean, D = Σ over counted rows of w[t]
// (1 without weights), in double, in a fixed order.
__global__ void __launch_bounds__(kPrepareBlock) ce_prepare_kernel(const Args a) {
  __shared__ double scratch[32];
  if (threadIdx.x == 0) *a.counter = 0u;
  if (a.reduction != kMean) return;
  double acc = 0;
  // One block does this while the rest of the GPU waits for the row kernel: 16 target loads
  // per thread in flight (32768 rows: two rounds of memory latency instead of eight).
#pragma unroll 16
  for (std::int64_t i = threadIdx.x; i < a.n; i += kPrepareBlock) {
    const std::int64_t t = __ldg(a.target + i);
    if (t != a.ignore_index && t >= 0 && t < a.k)
      acc += a.weight != nullptr ? static_cast<double>(__ldg(a.weight + t)) : 1.0;
  }
  const double total = block_allreduce(acc, scratch, SumOp{});
  if (threadIdx.x == 0) *a.denom = total;
}

// The row's loss: written for reduction none, else added to the block's sum on the row's leader
// (the staged kernel; the others spell it out, as above).
__device__ __forceinline__ void record_loss(const Args& a, std::int64_t row, float li, bool leader,
                                            double& acc) {
  if (!leader) return;
  if (a.reduction == kNone)
    a.loss[row] = li;
  else
    acc += li;
}

// Row math on the units a lane holds in registers (unit u = c·group + lane for c < kPer, u <
// units), for the staged kernel. The group and block kernels still spell the same loops out:
// they are kept byte for byte as they ran on the H100 (2026-11-27) until the next GPU run.

template <int kVec, int kPer>
__device__ __forceinline__ float lane_max(const float (&v)[kPer][kVec], int units, int group, int lane) {
  float m = neg_inf();
#pragma unroll
  for (int c = 0; c < kPer; ++c) {
    if (c * group + lane < units) {
#pragma unroll
      for (int j = 0; j < kVec; ++j) m = fmaxf(m, v[c][j]);
    }
  }
  return m;
}

// The lane's share of the row sums; v becomes e = exp(x - m).
template <int kVec, int kPer, bool kWeighted>
__device__ __forceinline__ RowSums lane_sums(const Args& a, float (&v)[kPer][kVec], float m, int units,
                                             int group, int lane, int t) {
  RowSums r{0.f, 0.f, 0.f, 0.f};
#pragma unroll
  for (int c = 0; c < kPer; ++c) {
    const int u = c * group + lane;
    if (u < units) {
      float w[kVec];
      load_weights<kVec, kWeighted>(a.weight, u, w);
#pragma unroll
      for (int j = 0; j < kVec; ++j) v[c][j] = add_element<kWeighted>(r, v[c][j], m, w[j], u * kVec + j, t);
    }
  }
  return r;
}

// Writes the lane's units of the row's gradient from e (v) and the row's coefficients.
template <int kVec, int kPer, bool kWeighted>
__device__ __forceinline__ void lane_grad(const Args& a, const RowCoef& coef, const float (&v)[kPer][kVec],
                                          float* gr, int units, int group, int lane, int t) {
#pragma unroll
  for (int c = 0; c < kPer; ++c) {
    const int u = c * group + lane;
    if (u < units) {
      float w[kVec], g[kVec];
      load_weights<kVec, kWeighted>(a.weight, u, w);
#pragma unroll
      for (int j = 0; j < kVec; ++j) g[j] = grad_element<kWeighted>(coef, v[c][j], w[j], u * kVec + j, t);
      store_unit<kVec>(gr + static_cast<std::int64_t>(u) * kVec, g);
    }
  }
}

// Zeroes the lane's units of the gradient of a row that does not count.
template <int kVec, int kPer>
__device__ __forceinline__ void lane_zero_grad(float* gr, int units, int group, int lane) {
#pragma unroll
  for (int c = 0; c < kPer; ++c) {
    const int u = c * group + lane;
    if (u < units) store_zero_unit<kVec>(gr + static_cast<std::int64_t>(u) * kVec);
  }
}

// k <= 1024: a group of (1 << group_shift) lanes per row, kPer units per lane in registers.
// Launch: kGroupBlock threads, any grid (blocks stride over groups of rows).
template <int kVec, int kPer, bool kWeighted>
__global__ void __launch_bounds__(kGroupBlock, kVec* kPer >= 32 && kVec == 1 ? 2 : 3)
    ce_group_rows_kernel(const Args a, const int group_shift) {
  const int group = 1 << group_shift;
  const int lane = static_cast<int>(threadIdx.x) & (group - 1);
  const int slots = kGroupBlock >> group_shift;
  const int slot = static_cast<int>(threadIdx.x) >> group_shift;
  const int units = a.k / kVec;
  const float scale = grad_scale(a);
  double acc = 0;  // the block's loss sum, on group leaders
  for (std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * slots; first < a.n;
       first += static_cast<std::int64_t>(gridDim.x) * slots) {
    const std::int64_t row = first + slot;
    const bool in_range = row < a.n;
    // The same for every lane of the group; groups of one warp may differ, so every
    // shuffle below runs outside the branches.
    const int t = in_range ? row_class(a, row, lane == 0) : -1;
    float v[kPer][kVec];
    float m = neg_inf();
    if (t >= 0) {
      const float* xr = a.logits + row * a.k;
#pragma unroll
      for (int c = 0; c < kPer; ++c) {
        const int u = c * group + lane;
        if (u < units) load_unit<kVec>(xr + static_cast<std::int64_t>(u) * kVec, v[c]);
      }
#pragma unroll
      for (int c = 0; c < kPer; ++c) {
        const int u = c * group + lane;
        if (u < units) {
#pragma unroll
          for (int j = 0; j < kVec; ++j) m = fmaxf(m, v[c][j]);
        }
      }
    }
    m = group_allreduce(m, MaxOp{}, group);
    RowSums r{0.f, 0.f, 0.f, 0.f};
    if (t >= 0) {
#pragma unroll
      for (int c = 0; c < kPer; ++c) {
        const int u = c * group + lane;
        if (u < units) {
          float w[kVec];
          load_weights<kVec, kWeighted>(a.weight, u, w);
#pragma unroll
          for (int j = 0; j < kVec; ++j)
            v[c][j] = add_element<kWeighted>(r, v[c][j], m, w[j], u * kVec + j, t);
        }
      }
    }
    r = group_allreduce(r, SumOp{}, group);
    if (!in_range) continue;
    float* gr = a.grad != nullptr ? a.grad + row * a.k : nullptr;
    if (t >= 0) {
      RowCoef coef;
      const float li = finish_row<kWeighted>(a, r, t, scale, coef);
      if (lane == 0) {
        if (a.reduction == kNone)
          a.loss[row] = li;
        else
          acc += li;
      }
      if (gr != nullptr) {
#pragma unroll
        for (int c = 0; c < kPer; ++c) {
          const int u = c * group + lane;
          if (u < units) {
            float w[kVec], g[kVec];
            load_weights<kVec, kWeighted>(a.weight, u, w);
#pragma unroll
            for (int j = 0; j < kVec; ++j)
              g[j] = grad_element<kWeighted>(coef, v[c][j], w[j], u * kVec + j, t);
            store_unit<kVec>(gr + static_cast<std::int64_t>(u) * kVec, g);
          }
        }
      }
    } else {
      if (lane == 0 && a.reduction == kNone) a.loss[row] = 0.f;
      if (gr != nullptr) {
#pragma unroll
        for (int c = 0; c < kPer; ++c) {
          const int u = c * group + lane;
          if (u < units) store_zero_unit<kVec>(gr + static_cast<std::int64_t>(u) * kVec);
        }
      }
    }
  }
  if (a.reduction != kNone) finish_reduction(a, acc);
}

// The staged variant of the whole-warp group kernel (k <= 1024, float4 units, a warp per row;
// opt-in, set_cross_entropy_staged_rows): each warp keeps kStages rows in a ring of shared
// memory and copies the rows it will process next with cp.async while it reduces and writes the
// current one, so every warp has kStages - 1 rows (8 KB at k = 1000) in flight instead of
// loading, waiting, then computing. Lane l copies units l, l + 32, ... of a row and reads back
// only those, so no warp barrier is needed; a stage is refilled only after its values were used.
// Launch: kStagedWarps · 32 threads, kStagedWarps · kStages · k floats of dynamic shared memory,
// blocks striding over warps of rows.
constexpr int kStagedWarps = 8;
constexpr int kStages = 3;

// Copies row `first + i·stride` into stage i % kStages when it exists and counts; commits one
// group either way (so that waits count rows).
template <int kPer>
__device__ __forceinline__ void stage_row(const Args& a, float4* ring, int units, int lane,
                                          std::int64_t first, std::int64_t stride, std::int64_t i) {
  const std::int64_t row = first + i * stride;
  if (row < a.n) {
    const std::int64_t t = __ldg(a.target + row);
    if (t != a.ignore_index && t >= 0 && t < a.k) {
      const float4* src = reinterpret_cast<const float4*>(a.logits + row * a.k);
      float4* dst = ring + static_cast<std::int64_t>(i % kStages) * units;
#pragma unroll
      for (int c = 0; c < kPer; ++c) {
        const int u = c * 32 + lane;
        if (u < units) __pipeline_memcpy_async(dst + u, src + u, sizeof(float4));
      }
    }
  }
  __pipeline_commit();
}

template <int kPer, bool kWeighted>
__global__ void __launch_bounds__(kStagedWarps * 32) ce_staged_rows_kernel(const Args a) {
  extern __shared__ float4 staged_smem[];
  const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
  const int units = a.k / 4;
  float4* ring = staged_smem + static_cast<std::int64_t>(warp) * kStages * units;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * kStagedWarps;
  const std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * kStagedWarps + warp;
  const float scale = grad_scale(a);
  double acc = 0;  // the block's loss sum, on lane 0 of each warp
  for (int i = 0; i < kStages - 1; ++i) stage_row<kPer>(a, ring, units, lane, first, stride, i);
  for (std::int64_t i = 0; first + i * stride < a.n; ++i) {
    stage_row<kPer>(a, ring, units, lane, first, stride, i + kStages - 1);
    __pipeline_wait_prior(kStages - 1);  // this lane's copies of row i have landed
    const std::int64_t row = first + i * stride;
    const int t = row_class(a, row, lane == 0);  // the same for the whole warp
    float* gr = a.grad != nullptr ? a.grad + row * a.k : nullptr;
    if (t < 0) {
      if (lane == 0 && a.reduction == kNone) a.loss[row] = 0.f;
      if (gr != nullptr) lane_zero_grad<4, kPer>(gr, units, 32, lane);
      continue;
    }
    const float4* st = ring + static_cast<std::int64_t>(i % kStages) * units;
    float v[kPer][4];
#pragma unroll
    for (int c = 0; c < kPer; ++c) {
      const int u = c * 32 + lane;
      if (u < units) load_smem_unit<4>(reinterpret_cast<const float*>(st + u), v[c]);
    }
    const float m = group_allreduce(lane_max<4, kPer>(v, units, 32, lane), MaxOp{}, 32);
    const RowSums r =
        group_allreduce(lane_sums<4, kPer, kWeighted>(a, v, m, units, 32, lane, t), SumOp{}, 32);
    RowCoef coef;
    const float li = finish_row<kWeighted>(a, r, t, scale, coef);
    record_loss(a, row, li, lane == 0, acc);
    if (gr != nullptr) lane_grad<4, kPer, kWeighted>(a, coef, v, gr, units, 32, lane, t);
  }
  __pipeline_wait_prior(0);  // no copy still landing in shared memory at exit
  if (a.reduction != kNone) finish_reduction(a, acc);
}

// 1024 < k: one block per row; thread i holds units i, i + B, ... (kPer of them) in
// registers, the rest of the row sits in dynamic shared memory (units from kPer·B on, each
// at the same place relative to the thread, so only the thread that copied a unit reads it).
// Launch: 256 or 512 threads, dynamic shared memory (units - kPer·B) units, any grid.
template <int kVec, int kPer, bool kWeighted>
__global__ void __launch_bounds__(kRowBlockMax, 2) ce_block_rows_kernel(const Args a) {
  extern __shared__ float4 overflow_smem[];
  float* overflow = reinterpret_cast<float*>(overflow_smem);
  __shared__ float max_scratch[32];
  __shared__ RowSums sum_scratch[32];
  const int tid = static_cast<int>(threadIdx.x), nthreads = static_cast<int>(blockDim.x);
  const int units = a.k / kVec;
  const int reg_units = kPer * nthreads;
  const bool has_overflow = reg_units < units;
  const float scale = grad_scale(a);
  double acc = 0;  // the block's loss sum, on thread 0
  for (std::int64_t row = blockIdx.x; row < a.n; row += gridDim.x) {
    const int t = row_class(a, row, tid == 0);  // the same for the whole block
    const float* xr = a.logits + row * a.k;
    float* gr = a.grad != nullptr ? a.grad + row * a.k : nullptr;
    if (t < 0) {
      if (tid == 0 && a.reduction == kNone) a.loss[row] = 0.f;
      if (gr != nullptr)
        for (int u = tid; u < units; u += nthreads)
          store_zero_unit<kVec>(gr + static_cast<std::int64_t>(u) * kVec);
      continue;
    }
    if (has_overflow) {
      // Shared-memory accesses of the previous row are complete before new copies land.
      __syncthreads();
      for (int u = reg_units + tid; u < units; u += nthreads)
        __pipeline_memcpy_async(overflow + static_cast<std::int64_t>(u - reg_units) * kVec,
                                xr + static_cast<std::int64_t>(u) * kVec, sizeof(float) * kVec);
      __pipeline_commit();
    }
    float v[kPer][kVec];
#pragma unroll
    for (int c = 0; c < kPer; ++c) {
      const int u = c * nthreads + tid;
      if (u < units) load_unit<kVec>(xr + static_cast<std::int64_t>(u) * kVec, v[c]);
    }
    float m = neg_inf();
#pragma unroll
    for (int c = 0; c < kPer; ++c) {
      const int u = c * nthreads + tid;
      if (u < units) {
#pragma unroll
        for (int j = 0; j < kVec; ++j) m = fmaxf(m, v[c][j]);
      }
    }
    if (has_overflow) {
      __pipeline_wait_prior(0);  // this thread's copies (the only ones it reads) have landed
      for (int u = reg_units + tid; u < units; u += nthreads) {
        float q[kVec];
        load_smem_unit<kVec>(overflow + static_cast<std::int64_t>(u - reg_units) * kVec, q);
#pragma unroll
        for (int j = 0; j < kVec; ++j) m = fmaxf(m, q[j]);
      }
    }
    m = block_allreduce(m, max_scratch, MaxOp{});

    RowSums r{0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int c = 0; c < kPer; ++c) {
      const int u = c * nthreads + tid;
      if (u < units) {
        float w[kVec];
        load_weights<kVec, kWeighted>(a.weight, u, w);
#pragma unroll
        for (int j = 0; j < kVec; ++j) v[c][j] = add_element<kWeighted>(r, v[c][j], m, w[j], u * kVec + j, t);
      }
    }
    if (has_overflow) {
      for (int u = reg_units + tid; u < units; u += nthreads) {
        float* slot = overflow + static_cast<std::int64_t>(u - reg_units) * kVec;
        float q[kVec], w[kVec];
        load_smem_unit<kVec>(slot, q);
        load_weights<kVec, kWeighted>(a.weight, u, w);
#pragma unroll
        for (int j = 0; j < kVec; ++j) q[j] = add_element<kWeighted>(r, q[j], m, w[j], u * kVec + j, t);
        if (gr != nullptr) store_unit<kVec>(slot, q);  // keep exp(x - m) for the gradient
      }
    }
    r = block_allreduce(r, sum_scratch, SumOp{});

    RowCoef coef;
    const float li = finish_row<kWeighted>(a, r, t, scale, coef);
    if (tid == 0) {
      if (a.reduction == kNone)
        a.loss[row] = li;
      else
        acc += li;
    }
    if (gr == nullptr) continue;
#pragma unroll
    for (int c = 0; c < kPer; ++c) {
      const int u = c * nthreads + tid;
      if (u < units) {
        float w[kVec], g[kVec];
        load_weights<kVec, kWeighted>(a.weight, u, w);
#pragma unroll
        for (int j = 0; j < kVec; ++j) g[j] = grad_element<kWeighted>(coef, v[c][j], w[j], u * kVec + j, t);
        store_unit<kVec>(gr + static_cast<std::int64_t>(u) * kVec, g);
      }
    }
    if (has_overflow) {
      for (int u = reg_units + tid; u < units; u += nthreads) {
        float q[kVec], w[kVec], g[kVec];
        load_smem_unit<kVec>(overflow + static_cast<std::int64_t>(u - reg_units) * kVec, q);
        load_weights<kVec, kWeighted>(a.weight, u, w);
#pragma unroll
        for (int j = 0; j < kVec; ++j) g[j] = grad_element<kWeighted>(coef, q[j], w[j], u * kVec + j, t);
        store_unit<kVec>(gr + static_cast<std::int64_t>(u) * kVec, g);
      }
    }
  }
  if (a.reduction != kNone) finish_reduction(a, acc);
}

// Adds x (weight w) to an online state: when x raises the max, the sums so far are rescaled
// to it first. -inf logits add nothing to Σexp and -inf·w to Σw(x-m), as in the row kernels.
__device__ __forceinline__ void online_add(OnlineState& st, float x, float w) {
  if (x > st.m) {
    const float shift = st.m - x;  // < 0; -inf while only -inf logits were seen (then s == 0)
    st.s *= expf(shift);
    if (st.sw != 0.f) st.sxw = fmaf(st.sw, shift, st.sxw);
    st.m = x;
  }
  if (x == neg_inf()) {
    st.sxw = fmaf(w, x, st.sxw);
  } else {
    const float d = x - st.m;
    st.s += expf(d);
    st.sxw = fmaf(w, d, st.sxw);
  }
  st.sw += w;
}

// Rows too long for registers and shared memory: one block per row, a first read of the row
// for the online statistics, a second read (from L2 when it still holds the row) for the
// gradient. Launch: kOnlineBlock threads, any grid.
template <int kVec, bool kWeighted>
__global__ void __launch_bounds__(kOnlineBlock) ce_online_rows_kernel(const Args a) {
  __shared__ OnlineState state_scratch[32];
  const int tid = static_cast<int>(threadIdx.x), nthreads = static_cast<int>(blockDim.x);
  const int units = a.k / kVec;
  const float scale = grad_scale(a);
  double acc = 0;
  for (std::int64_t row = blockIdx.x; row < a.n; row += gridDim.x) {
    const int t = row_class(a, row, tid == 0);
    const float* xr = a.logits + row * a.k;
    float* gr = a.grad != nullptr ? a.grad + row * a.k : nullptr;
    if (t < 0) {
      if (tid == 0 && a.reduction == kNone) a.loss[row] = 0.f;
      if (gr != nullptr)
        for (int u = tid; u < units; u += nthreads)
          store_zero_unit<kVec>(gr + static_cast<std::int64_t>(u) * kVec);
      continue;
    }
    OnlineState st{neg_inf(), 0.f, 0.f, 0.f};
#pragma unroll 4
    for (int u = tid; u < units; u += nthreads) {
      float x[kVec], w[kVec];
      load_unit<kVec>(xr + static_cast<std::int64_t>(u) * kVec, x);
      load_weights<kVec, kWeighted>(a.weight, u, w);
#pragma unroll
      for (int j = 0; j < kVec; ++j) online_add(st, x[j], w[j]);
    }
    st = block_allreduce(st, state_scratch, OnlineOp{});
    const RowSums r{st.s, st.sxw, st.sw, __ldg(xr + t) - st.m};
    RowCoef coef;
    const float li = finish_row<kWeighted>(a, r, t, scale, coef);
    if (tid == 0) {
      if (a.reduction == kNone)
        a.loss[row] = li;
      else
        acc += li;
    }
    if (gr == nullptr) continue;
#pragma unroll 4
    for (int u = tid; u < units; u += nthreads) {
      float x[kVec], w[kVec], g[kVec];
      if constexpr (kVec == 4) {
        const float4 q = __ldg(reinterpret_cast<const float4*>(xr) + u);
        x[0] = q.x, x[1] = q.y, x[2] = q.z, x[3] = q.w;
      } else {
        x[0] = __ldg(xr + u);
      }
      load_weights<kVec, kWeighted>(a.weight, u, w);
#pragma unroll
      for (int j = 0; j < kVec; ++j)
        g[j] = grad_element<kWeighted>(coef, expf(x[j] - st.m), w[j], u * kVec + j, t);
      store_unit<kVec>(gr + static_cast<std::int64_t>(u) * kVec, g);
    }
  }
  if (a.reduction != kNone) finish_reduction(a, acc);
}

// Backward: grad (n, k) scaled in place by the upstream gradient, a warp per row.
// Launch: kScaleBlock threads, any grid (warps stride over rows).
template <int kVec>
__global__ void __launch_bounds__(kScaleBlock)
    ce_scale_grad_kernel(float* grad, const float* upstream, const std::int64_t* target, std::int64_t n,
                         int k, std::int64_t ignore_index, bool per_row) {
  float u_all = 1.f;
  if (!per_row) {
    u_all = __ldg(upstream);
    if (u_all == 1.f) return;  // loss.backward(): nothing to do
  }
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const std::int64_t first = (static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const std::int64_t stride = (static_cast<std::int64_t>(gridDim.x) * blockDim.x) >> 5;
  const int units = k / kVec;
  for (std::int64_t row = first; row < n; row += stride) {
    const std::int64_t t = __ldg(target + row);
    if (t == ignore_index || t < 0 || t >= k) continue;  // stays exactly 0
    const float u = per_row ? __ldg(upstream + row) : u_all;
    if (u == 1.f) continue;
    float* gr = grad + row * k;
    for (int i = lane; i < units; i += 32) {
      float v[kVec];
      if constexpr (kVec == 4) {
        const float4 q = reinterpret_cast<const float4*>(gr)[i];
        v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
      } else {
        v[0] = gr[i];
      }
#pragma unroll
      for (int j = 0; j < kVec; ++j) v[j] *= u;
      store_unit<kVec>(gr + static_cast<std::int64_t>(i) * kVec, v);
    }
  }
}

// ---- host side: plans and launches ----

int current_device() {
  int d = 0;
  CUGRAD_CUDA_CHECK(cudaGetDevice(&d));
  return d;
}

std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

int pow2_at_least(std::int64_t x) {
  int p = 1;
  while (p < x) p <<= 1;
  return p;
}

// Whether `dynamic` bytes of dynamic shared memory need cudaFuncAttributeMaxDynamicSharedMemorySize:
// without it a launch may use 48 KB of static and dynamic together (ce_staged_rows_kernel at
// k = 512 asks for exactly 48 KB of dynamic memory on top of its 256 static bytes).
bool needs_smem_opt_in(std::size_t dynamic) { return dynamic + kStaticSmemReserve > 48 * 1024; }

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

struct Plan {
  enum class Kind { group, staged, block, online };
  Kind kind = Kind::group;
  int vec = 1;          // floats per unit: 4 (float4) or 1
  int per = 1;          // units per thread in registers
  int group_shift = 0;  // group kernel: log2(lanes per row)
  int threads = 0;
  std::size_t smem = 0;  // dynamic shared memory (block kernel)
  unsigned grid = 1;
};

std::size_t block_smem_limit(const cudaDeviceProp& prop) {
  return prop.sharedMemPerBlockOptin > kStaticSmemReserve ? prop.sharedMemPerBlockOptin - kStaticSmemReserve
                                                          : 0;
}

Plan make_plan(const CrossEntropyProblem& p, bool vec_ok) {
  const cudaDeviceProp& prop = runtime::device_properties(current_device());
  const std::int64_t sms = prop.multiProcessorCount;
  Plan pl;
  pl.vec = vec_ok ? 4 : 1;
  const std::int64_t units = p.k / pl.vec;
  if (p.k <= kGroupMaxK) {
    int g = 1;
    while (g < 32 && 4 * g < units) g <<= 1;
    int shift = 0;
    while ((1 << shift) < g) ++shift;
    pl.kind = Plan::Kind::group;
    pl.group_shift = shift;
    pl.per = pow2_at_least(ceil_div(units, g));
    pl.threads = kGroupBlock;
    const std::int64_t slots = kGroupBlock / g;
    pl.grid = static_cast<unsigned>(std::min(ceil_div(p.n, slots), sms * g_group_blocks_per_sm.load()));
    const std::size_t staged_smem =
        static_cast<std::size_t>(kStagedWarps) * kStages * static_cast<std::size_t>(units) * sizeof(float4);
    if (g_staged_rows.load() && pl.vec == 4 && g == 32 && (pl.per == 4 || pl.per == 8) &&
        staged_smem <= block_smem_limit(prop)) {
      pl.kind = Plan::Kind::staged;
      pl.smem = staged_smem;
      pl.grid = static_cast<unsigned>(
          std::min(ceil_div(p.n, kStagedWarps), sms * kMaxBlocksPerSm));  // capped at launch
    }
    return pl;
  }
  pl.threads = p.k <= 4096 ? 256 : kRowBlockMax;
  // 16 floats (4 float4) or 8 floats per thread in registers: with 512 threads and at most
  // 64 registers (two blocks per SM) that is what fits without spilling.
  const int per_max = pl.vec == 4 ? 4 : 8;
  pl.per = std::min<int>(per_max, pow2_at_least(ceil_div(units, pl.threads)));
  const std::int64_t overflow_units =
      std::max<std::int64_t>(0, units - static_cast<std::int64_t>(pl.per) * pl.threads);
  const std::size_t smem =
      static_cast<std::size_t>(overflow_units) * static_cast<std::size_t>(pl.vec) * sizeof(float);
  if (smem <= block_smem_limit(prop)) {
    pl.kind = Plan::Kind::block;
    pl.smem = smem;
    pl.grid = static_cast<unsigned>(std::min(p.n, sms * 16));
    return pl;
  }
  pl.kind = Plan::Kind::online;
  pl.threads = kOnlineBlock;
  pl.per = 1;
  pl.smem = 0;
  pl.grid = static_cast<unsigned>(std::min(p.n, sms * 8));
  return pl;
}

[[noreturn]] void no_kernel(const Plan& pl) {
  throw Error(detail::cat("cross_entropy: no kernel instantiated for ", pl.vec, "-float units, ", pl.per,
                          " per thread (internal error)"));
}

template <bool kW>
void launch_group(const Plan& pl, const Args& a, cudaStream_t s) {
  auto go = [&](auto kernel) { kernel<<<pl.grid, kGroupBlock, 0, s>>>(a, pl.group_shift); };
  if (pl.vec == 4) {
    switch (pl.per) {
      case 1:
        go(ce_group_rows_kernel<4, 1, kW>);
        return;
      case 2:
        go(ce_group_rows_kernel<4, 2, kW>);
        return;
      case 4:
        go(ce_group_rows_kernel<4, 4, kW>);
        return;
      case 8:
        go(ce_group_rows_kernel<4, 8, kW>);
        return;
      default:
        break;
    }
  } else {
    switch (pl.per) {
      case 1:
        go(ce_group_rows_kernel<1, 1, kW>);
        return;
      case 2:
        go(ce_group_rows_kernel<1, 2, kW>);
        return;
      case 4:
        go(ce_group_rows_kernel<1, 4, kW>);
        return;
      case 8:
        go(ce_group_rows_kernel<1, 8, kW>);
        return;
      case 16:
        go(ce_group_rows_kernel<1, 16, kW>);
        return;
      case 32:
        go(ce_group_rows_kernel<1, 32, kW>);
        return;
      default:
        break;
    }
  }
  no_kernel(pl);
}

// The staged kernel's grid: what stays resident at once (its shared memory decides), at most
// one warp per row.
template <bool kW>
void launch_staged(const Plan& pl, const Args& a, cudaStream_t s, std::size_t smem_limit) {
  auto go = [&](auto kernel) {
    if (needs_smem_opt_in(pl.smem))  // as launch_block
      CUGRAD_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             static_cast<int>(smem_limit)));
    int per_sm = 0;
    CUGRAD_CUDA_CHECK(
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kStagedWarps * 32, pl.smem));
    const std::int64_t sms = runtime::device_properties(current_device()).multiProcessorCount;
    const unsigned grid = static_cast<unsigned>(
        std::max<std::int64_t>(1, std::min<std::int64_t>(pl.grid, sms * std::max(per_sm, 1))));
    kernel<<<grid, kStagedWarps * 32, pl.smem, s>>>(a);
  };
  if (pl.per == 4)
    go(ce_staged_rows_kernel<4, kW>);
  else if (pl.per == 8)
    go(ce_staged_rows_kernel<8, kW>);
  else
    no_kernel(pl);
}

template <bool kW>
void launch_block(const Plan& pl, const Args& a, cudaStream_t s, std::size_t smem_limit) {
  auto go = [&](auto kernel) {
    // Beyond 48 KB of static and dynamic shared memory together a kernel must opt in; always
    // the same (largest) value, so concurrent callers never undo each other.
    if (needs_smem_opt_in(pl.smem))
      CUGRAD_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             static_cast<int>(smem_limit)));
    kernel<<<pl.grid, pl.threads, pl.smem, s>>>(a);
  };
  if (pl.vec == 4) {
    switch (pl.per) {
      case 2:
        go(ce_block_rows_kernel<4, 2, kW>);
        return;
      case 4:
        go(ce_block_rows_kernel<4, 4, kW>);
        return;
      default:
        break;
    }
  } else if (pl.per == 8) {
    go(ce_block_rows_kernel<1, 8, kW>);
    return;
  }
  no_kernel(pl);
}

template <bool kW>
void launch_rows(const Plan& pl, const Args& a, cudaStream_t s, std::size_t smem_limit) {
  switch (pl.kind) {
    case Plan::Kind::group:
      launch_group<kW>(pl, a, s);
      break;
    case Plan::Kind::staged:
      launch_staged<kW>(pl, a, s, smem_limit);
      break;
    case Plan::Kind::block:
      launch_block<kW>(pl, a, s, smem_limit);
      break;
    case Plan::Kind::online:
      if (pl.vec == 4)
        ce_online_rows_kernel<4, kW><<<pl.grid, kOnlineBlock, 0, s>>>(a);
      else
        ce_online_rows_kernel<1, kW><<<pl.grid, kOnlineBlock, 0, s>>>(a);
      break;
  }
  CUGRAD_CUDA_CHECK_LAUNCH();
}

}  // namespace

int set_cross_entropy_group_blocks_per_sm(int blocks) {
  if (blocks < 1 || blocks > kMaxBlocksPerSm)
    throw ValueError(detail::cat("set_cross_entropy_group_blocks_per_sm: ", blocks, " is outside 1..",
                                 kMaxBlocksPerSm));
  return g_group_blocks_per_sm.exchange(blocks);
}

bool set_cross_entropy_staged_rows(bool on) { return g_staged_rows.exchange(on); }

std::size_t cross_entropy_workspace_bytes(const CrossEntropyProblem& p) {
  if (p.reduction == nn::Reduction::None || p.n == 0) return 0;
  const std::int64_t sms = runtime::device_properties(current_device()).multiProcessorCount;
  return kHeaderBytes + static_cast<std::size_t>(sms * kMaxBlocksPerSm) * sizeof(double);
}

void cross_entropy_forward(const float* logits, const std::int64_t* target, const float* weight,
                           const CrossEntropyProblem& p, float* loss, float* grad, void* workspace,
                           std::size_t workspace_bytes, const runtime::DeviceErrorSink& errors,
                           void* stream) {
  CUGRAD_CHECK(p.n > 0 && p.k >= 1 && p.k <= INT_MAX,
               "cross_entropy: kernels need n > 0 and 1 <= k < 2^31, got n = ", p.n, ", k = ", p.k);
  const cudaStream_t s = as_stream(stream);
  Args a{};
  a.logits = logits;
  a.target = target;
  a.weight = weight;
  a.loss = loss;
  a.grad = grad;
  a.n = p.n;
  a.ignore_index = p.ignore_index;
  a.k = static_cast<int>(p.k);
  a.reduction = p.reduction == nn::Reduction::None   ? kNone
                : p.reduction == nn::Reduction::Mean ? kMean
                                                     : kSum;
  a.keep = static_cast<float>(1.0 - p.label_smoothing);
  a.eps_k = static_cast<float>(p.label_smoothing / static_cast<double>(p.k));
  a.errors = errors;
  if (a.reduction != kNone) {
    const std::size_t need = cross_entropy_workspace_bytes(p);
    CUGRAD_CHECK(workspace != nullptr && workspace_bytes >= need, "cross_entropy: the workspace holds ",
                 workspace_bytes, " bytes, ", need, " are needed (use cross_entropy_workspace_bytes)");
    char* ws = static_cast<char*>(workspace);
    a.denom = reinterpret_cast<double*>(ws);
    a.counter = reinterpret_cast<unsigned int*>(ws + sizeof(double));
    a.partials = reinterpret_cast<double*>(ws + kHeaderBytes);
    ce_prepare_kernel<<<1, kPrepareBlock, 0, s>>>(a);
    CUGRAD_CUDA_CHECK_LAUNCH();
  }
  const bool vec_ok = p.k % 4 == 0 && aligned16(logits) && (grad == nullptr || aligned16(grad)) &&
                      (weight == nullptr || aligned16(weight));
  const Plan pl = make_plan(p, vec_ok);
  const std::size_t smem_limit = block_smem_limit(runtime::device_properties(current_device()));
  if (weight != nullptr)
    launch_rows<true>(pl, a, s, smem_limit);
  else
    launch_rows<false>(pl, a, s, smem_limit);
}

void cross_entropy_scale_grad(float* grad, const float* upstream, const std::int64_t* target,
                              const CrossEntropyProblem& p, void* stream) {
  if (p.n == 0 || p.k == 0) return;
  CUGRAD_CHECK(p.k <= INT_MAX, "cross_entropy: k = ", p.k, " is too large for the kernels");
  const std::int64_t sms = runtime::device_properties(current_device()).multiProcessorCount;
  const std::int64_t rows_per_block = kScaleBlock / 32;
  const unsigned grid = static_cast<unsigned>(std::min(ceil_div(p.n, rows_per_block), sms * 8));
  const bool per_row = p.reduction == nn::Reduction::None;
  const cudaStream_t s = as_stream(stream);
  if (p.k % 4 == 0 && aligned16(grad))
    ce_scale_grad_kernel<4><<<grid, kScaleBlock, 0, s>>>(grad, upstream, target, p.n, static_cast<int>(p.k),
                                                         p.ignore_index, per_row);
  else
    ce_scale_grad_kernel<1><<<grid, kScaleBlock, 0, s>>>(grad, upstream, target, p.n, static_cast<int>(p.k),
                                                         p.ignore_index, per_row);
  CUGRAD_CUDA_CHECK_LAUNCH();
}

}  // namespace cugrad::cuda
