// CUDA reductions over the [outer, reduce, inner] layout: sum, mean, amax, amin, argmax,
// var/std (Welford within a thread, Chan's merge between threads: no E[x²]-E[x]² cancellation)
// and norm. float32 accumulates in float, integers in int64; threads combine their partial
// results in trees (warp shuffles, then shared memory across the warps of a block).
//
// Every combine is associative and commutative (argmax breaks ties by the smaller index, and
// NaN counts as the maximum), so the tree order never changes which element wins.
//
// Plans (make_plan), all with 256-thread blocks:
//  - inner == 1, rows of <= 8 elements: reduce_rows_kernel<8>, 8 lanes per row.
//  - inner == 1, rows of <= 1024 elements or enough rows to fill the GPU with warps:
//    reduce_rows_kernel<32>, a warp per row.
//  - otherwise (inner > 1, or a few long rows): reduce_cols_kernel, a block per tile of up to
//    32 consecutive inner indices (a block per row when inner == 1). When those tiles are too
//    few to fill the GPU, the reduced dimension is split over gridDim.y blocks that write
//    partial accumulators to a workspace, and a second small launch of reduce_cols_kernel
//    merges them.
#include "cuda/reduce.h"

#include <cmath>
#include <limits>
#include <type_traits>

#include "cuda/launch.cuh"
#include "host/tensor/dispatch.h"

namespace cugrad::cuda {

namespace {

constexpr unsigned kFullMask = 0xffffffffu;
// Index of the identity of argmax: loses every tie against a real element.
constexpr std::int64_t kNoIndex = 0x7fffffffffffffffLL;
// Blocks to aim for when splitting a reduced dimension: 16 per SM (two full waves of
// 256-thread blocks at 2048 threads per SM).
constexpr std::int64_t kTargetBlocksPerSm = 16;
// A split block gives each of its threads at least this many elements of its column.
constexpr std::int64_t kMinPerThread = 8;
constexpr std::int64_t kMaxSplits = 65535;  // gridDim.y limit

template <typename T>
__device__ __forceinline__ bool is_nan(T x) {
  if constexpr (std::is_floating_point_v<T>)
    return x != x;
  else
    return false;
}

__device__ __forceinline__ float quiet_nan() { return __int_as_float(0x7fc00000); }

// ---- warp shuffles of accumulators ----

template <typename V>
__device__ __forceinline__ V shfl_down(V v, int offset, int width) {
  if constexpr (sizeof(V) < 4)
    return static_cast<V>(__shfl_down_sync(kFullMask, static_cast<int>(v), offset, width));
  else
    return __shfl_down_sync(kFullMask, v, offset, width);
}

struct WelfordAcc {
  float mean;
  float m2;
  std::int64_t n;
};

__device__ __forceinline__ WelfordAcc shfl_down(WelfordAcc a, int offset, int width) {
  return WelfordAcc{shfl_down(a.mean, offset, width), shfl_down(a.m2, offset, width),
                    shfl_down(a.n, offset, width)};
}

template <typename T>
struct ArgAcc {
  T value;
  std::int64_t index;
};

template <typename T>
__device__ __forceinline__ ArgAcc<T> shfl_down(ArgAcc<T> a, int offset, int width) {
  return ArgAcc<T>{shfl_down(a.value, offset, width), shfl_down(a.index, offset, width)};
}

// ---- the ops: identity, add one element, combine two partials, finish ----
// In: element type; Acc: accumulator; Out: result type. `add` receives the element's index
// along the reduced dimension; `finish` receives the reduced length.

template <typename T>
struct SumOp {
  using In = T;
  using Acc = std::conditional_t<std::is_same_v<T, float>, float, std::int64_t>;
  using Out = Acc;
  bool mean;  // divide by the length (float only)

  __device__ Acc identity() const { return Acc(0); }
  __device__ Acc add(Acc a, In x, std::int64_t) const { return a + static_cast<Acc>(x); }
  __device__ Acc combine(Acc a, Acc b) const { return a + b; }
  __device__ Out finish(Acc a, std::int64_t n) const {
    if constexpr (std::is_same_v<Acc, float>) {
      if (mean) return n == 0 ? quiet_nan() : a / static_cast<float>(n);
    }
    return a;
  }
};

template <typename T, bool kMax>
struct MinMaxOp {
  using In = T;
  using Acc = T;
  using Out = T;
  T start;  // -inf / lowest for max, +inf / highest for min

  __device__ Acc identity() const { return start; }
  __device__ Acc combine(Acc a, Acc b) const {
    if (is_nan(a)) return a;
    if (is_nan(b)) return b;
    return (kMax ? b > a : b < a) ? b : a;
  }
  __device__ Acc add(Acc a, In x, std::int64_t) const { return combine(a, x); }
  __device__ Out finish(Acc a, std::int64_t) const { return a; }
};

template <typename T>
struct ArgMaxOp {
  using In = T;
  using Acc = ArgAcc<T>;
  using Out = std::int64_t;
  T start;  // -inf / lowest

  __device__ Acc identity() const { return Acc{start, kNoIndex}; }
  __device__ Acc combine(Acc a, Acc b) const {
    const bool a_nan = is_nan(a.value), b_nan = is_nan(b.value);
    bool take_b;
    if (a_nan || b_nan)
      take_b = b_nan && (!a_nan || b.index < a.index);
    else
      take_b = b.value > a.value || (b.value == a.value && b.index < a.index);
    return take_b ? b : a;
  }
  __device__ Acc add(Acc a, In x, std::int64_t r) const { return combine(a, Acc{x, r}); }
  __device__ Out finish(Acc a, std::int64_t) const { return a.index; }
};

struct WelfordOp {
  using In = float;
  using Acc = WelfordAcc;
  using Out = float;
  bool unbiased;
  bool take_sqrt;  // std instead of var

  __device__ Acc identity() const { return Acc{0.f, 0.f, 0}; }
  __device__ Acc add(Acc a, In x, std::int64_t) const {
    a.n += 1;
    const float d = x - a.mean;
    a.mean += d / static_cast<float>(a.n);
    a.m2 += d * (x - a.mean);
    return a;
  }
  // Chan et al.: the mean moves by d * nb/n, M2 gains d² * na*nb/n.
  __device__ Acc combine(Acc a, Acc b) const {
    if (b.n == 0) return a;
    if (a.n == 0) return b;
    const std::int64_t n = a.n + b.n;
    const float d = b.mean - a.mean;
    const float wb = static_cast<float>(b.n) / static_cast<float>(n);
    return Acc{a.mean + d * wb, a.m2 + b.m2 + d * d * (static_cast<float>(a.n) * wb), n};
  }
  __device__ Out finish(Acc a, std::int64_t) const {
    const std::int64_t divisor = a.n - (unbiased ? 1 : 0);
    const float var = divisor > 0 ? a.m2 / static_cast<float>(divisor) : quiet_nan();
    return take_sqrt ? sqrtf(var) : var;
  }
};

enum class NormKind : std::uint8_t { one, two, inf, general };

struct NormOp {
  using In = float;
  using Acc = float;
  using Out = float;
  NormKind kind;
  float p;
  float inv_p;

  __device__ Acc identity() const { return 0.f; }
  __device__ Acc combine(Acc a, Acc b) const {
    if (kind != NormKind::inf) return a + b;
    if (is_nan(a)) return a;
    if (is_nan(b)) return b;
    return b > a ? b : a;
  }
  __device__ Acc add(Acc a, In x, std::int64_t) const {
    const float v = fabsf(x);
    switch (kind) {
      case NormKind::one:
        return a + v;
      case NormKind::two:
        return a + v * v;
      case NormKind::inf:
        return combine(a, v);
      default:
        return a + powf(v, p);
    }
  }
  __device__ Out finish(Acc a, std::int64_t) const {
    if (kind == NormKind::two) return sqrtf(a);
    if (kind == NormKind::general) return powf(a, inv_p);
    return a;
  }
};

NormOp make_norm_op(double p) {
  NormKind kind = NormKind::general;
  if (p == 1.0)
    kind = NormKind::one;
  else if (p == 2.0)
    kind = NormKind::two;
  else if (std::isinf(p))
    kind = NormKind::inf;
  return NormOp{kind, static_cast<float>(p), static_cast<float>(1.0 / p)};
}

// Calls f(op) with the op struct for (op, dtype).
template <typename F>
void with_op(ReduceOp op, DType dtype, const ReduceArgs& args, F&& f) {
  dispatch_cuda_dtype(dtype, "reduce", [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr bool kFloat = std::is_same_v<T, float>;
    T lowest = std::numeric_limits<T>::lowest(), highest = std::numeric_limits<T>::max();
    if constexpr (kFloat) {
      lowest = -std::numeric_limits<float>::infinity();
      highest = std::numeric_limits<float>::infinity();
    }
    switch (op) {
      case ReduceOp::sum:
        f(SumOp<T>{false});
        return;
      case ReduceOp::amax:
        f(MinMaxOp<T, true>{lowest});
        return;
      case ReduceOp::amin:
        f(MinMaxOp<T, false>{highest});
        return;
      case ReduceOp::argmax:
        f(ArgMaxOp<T>{lowest});
        return;
      default:
        break;
    }
    if constexpr (kFloat) {
      switch (op) {
        case ReduceOp::mean:
          f(SumOp<float>{true});
          return;
        case ReduceOp::var:
          f(WelfordOp{args.unbiased, false});
          return;
        case ReduceOp::std:
          f(WelfordOp{args.unbiased, true});
          return;
        case ReduceOp::norm:
          f(make_norm_op(args.p));
          return;
        default:
          break;
      }
    }
    throw ValueError(
        detail::cat("reduce: op ", static_cast<int>(op), " is not available for ", dtype, " on CUDA"));
  });
}

// ---- sources of a column walk: the input elements, or partial accumulators ----

template <class Op>
struct ElementSource {
  const typename Op::In* x;
  __device__ typename Op::Acc fold(const Op& op, typename Op::Acc a, std::int64_t k, std::int64_t r) const {
    return op.add(a, x[k], r);
  }
};

template <class Op>
struct PartialSource {
  const typename Op::Acc* partial;
  __device__ typename Op::Acc fold(const Op& op, typename Op::Acc a, std::int64_t k, std::int64_t) const {
    return op.combine(a, partial[k]);
  }
};

// ---- tree reductions ----

// Combines the accumulators of each aligned group of G lanes (G a power of two <= 32) into
// the group's first lane. Every lane of the warp must call it.
template <int G, class Op>
__device__ __forceinline__ typename Op::Acc group_reduce(const Op& op, typename Op::Acc a) {
#pragma unroll
  for (int offset = G / 2; offset > 0; offset /= 2) a = op.combine(a, shfl_down(a, offset, G));
  return a;
}

// Combines the accumulators of the threads of a block that share threadIdx.x % bx (bx a power
// of two <= 32, blockDim.x a multiple of 32). The result is valid in threads 0..bx-1. Every
// thread of the block must call it; `smem` holds blockDim.x / 32 * bx accumulators.
template <class Op>
__device__ typename Op::Acc block_reduce_columns(const Op& op, typename Op::Acc a, int bx,
                                                 typename Op::Acc* smem) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  // Lanes l and l + offset hold the same column while offset >= bx.
  for (int offset = 16; offset >= bx; offset >>= 1) a = op.combine(a, shfl_down(a, offset, 32));
  __syncthreads();  // the readers of the previous call are done with smem
  if (lane < bx) smem[warp * bx + lane] = a;
  __syncthreads();
  if (static_cast<int>(threadIdx.x) < bx) {
    a = smem[threadIdx.x];
    for (int w = 1; w < warps; ++w) a = op.combine(a, smem[w * bx + threadIdx.x]);
  }
  return a;
}

// ---- kernels ----

// inner == 1: G lanes per row (32 / G rows per warp), 256-thread blocks, grid-stride over
// rows. One pass: reads each element once, writes each result once.
template <class Op, int G>
__global__ void __launch_bounds__(kBlock)
    reduce_rows_kernel(Op op, const typename Op::In* __restrict__ x, std::int64_t rows, std::int64_t len,
                       typename Op::Out* __restrict__ out) {
  constexpr int kRowsPerWarp = 32 / G;
  const int lane = threadIdx.x & 31, sub = lane / G, lg = lane % G;
  const std::int64_t warp = (static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const std::int64_t warps = (static_cast<std::int64_t>(gridDim.x) * blockDim.x) >> 5;
  // `first` is the same in every lane of the warp, so all lanes reach the shuffles.
  for (std::int64_t first = warp * kRowsPerWarp; first < rows; first += warps * kRowsPerWarp) {
    const std::int64_t row = first + sub;
    typename Op::Acc acc = op.identity();
    if (row < rows) {
      const typename Op::In* p = x + row * len;
#pragma unroll 4
      for (std::int64_t r = lg; r < len; r += G) acc = op.add(acc, p[r], r);
    }
    acc = group_reduce<G>(op, acc);
    if (lg == 0 && row < rows) out[row] = op.finish(acc, len);
  }
}

// General [outer, len, inner] walk: a 256-thread block is bx x by threads (bx = threads along
// inner, a power of two <= 32; by = 256 / bx along the reduced dimension). Block x walks tiles
// of bx consecutive inner indices of one outer index (grid-stride); block y takes rows
// [y * split_len, (y + 1) * split_len) of the reduced dimension. A warp reads 32 / bx runs of
// bx consecutive elements, coalesced. One pass over the source; with `partial` set, writes
// gridDim.y x (outer * inner) accumulators there (partial[y * outer * inner + j]) instead of
// finished results. `count` is the full reduced length (for mean).
template <class Op, class Source>
__global__ void __launch_bounds__(kBlock)
    reduce_cols_kernel(Op op, Source src, std::int64_t outer, std::int64_t len, std::int64_t inner, int bx,
                       std::int64_t split_len, std::int64_t count, typename Op::Out* __restrict__ out,
                       typename Op::Acc* __restrict__ partial) {
  using Acc = typename Op::Acc;
  __shared__ Acc smem[kBlock];  // Acc types are trivial: no shared-memory initializers
  const int tx = threadIdx.x % bx, ty = threadIdx.x / bx, by = blockDim.x / bx;
  const std::int64_t tiles_per_outer = (inner + bx - 1) / bx;
  const std::int64_t tiles = outer * tiles_per_outer;
  const std::int64_t outputs = outer * inner;
  const std::int64_t r_begin = static_cast<std::int64_t>(blockIdx.y) * split_len;
  const std::int64_t r_end = r_begin + split_len < len ? r_begin + split_len : len;
  // `tile` is the same in every thread of the block, so all threads reach the barriers.
  for (std::int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const std::int64_t o = tile / tiles_per_outer;
    const std::int64_t i = (tile - o * tiles_per_outer) * bx + tx;
    Acc acc = op.identity();
    if (i < inner) {
      const std::int64_t base = o * len * inner + i;
      for (std::int64_t r = r_begin + ty; r < r_end; r += by) acc = src.fold(op, acc, base + r * inner, r);
    }
    acc = block_reduce_columns(op, acc, bx, smem);
    if (static_cast<int>(threadIdx.x) < bx && i < inner) {  // here tx == threadIdx.x
      const std::int64_t j = o * inner + i;
      if (partial != nullptr)
        partial[static_cast<std::int64_t>(blockIdx.y) * outputs + j] = acc;
      else
        out[j] = op.finish(acc, count);
    }
  }
}

// ---- planning ----

struct Plan {
  enum class Kind { rows8, rows32, columns } kind = Kind::columns;
  unsigned grid = 1;           // blocks along x of the first launch
  int bx = 1;                  // columns: threads along inner
  unsigned splits = 1;         // columns: blocks along the reduced dimension
  std::int64_t split_len = 0;  // columns: reduced rows per split
  unsigned final_grid = 1;     // splits > 1: the merging launch
  int final_bx = 1;
};

std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

int pow2_at_least(std::int64_t n, int cap) {
  int b = 1;
  while (b < cap && b < n) b *= 2;
  return b;
}

unsigned clamp_grid(std::int64_t blocks, std::int64_t cap) {
  return static_cast<unsigned>(std::max<std::int64_t>(1, std::min(blocks, cap)));
}

Plan make_plan(const ReduceLayout& l) {
  int dev = 0;
  CUGRAD_CUDA_CHECK(cudaGetDevice(&dev));
  const std::int64_t sms = runtime::device_properties(dev).multiProcessorCount;
  const std::int64_t cap = sms * 32;  // grid-stride loops: as grid_for
  constexpr std::int64_t kWarps = kBlock / 32;
  Plan p;
  if (l.inner == 1 && l.reduce <= 8) {
    p.kind = Plan::Kind::rows8;
    p.grid = clamp_grid(ceil_div(l.outer, kWarps * 4), cap);
    return p;
  }
  if (l.inner == 1 && (l.reduce <= 1024 || l.outer >= sms * 64)) {
    p.kind = Plan::Kind::rows32;
    p.grid = clamp_grid(ceil_div(l.outer, kWarps), cap);
    return p;
  }
  p.kind = Plan::Kind::columns;
  p.bx = l.inner == 1 ? 1 : pow2_at_least(l.inner, 32);
  const std::int64_t by = kBlock / p.bx;
  const std::int64_t tiles = l.outer * ceil_div(l.inner, p.bx);
  p.grid = clamp_grid(tiles, cap);
  std::int64_t splits = 1;
  const std::int64_t target = sms * kTargetBlocksPerSm;
  if (tiles < target && l.reduce > 0) {
    splits = std::min(ceil_div(target, tiles), ceil_div(l.reduce, by * kMinPerThread));
    splits = std::clamp<std::int64_t>(splits, 1, kMaxSplits);
  }
  p.split_len = l.reduce;
  if (splits > 1) {
    p.split_len = ceil_div(l.reduce, splits);
    splits = ceil_div(l.reduce, p.split_len);  // no empty split
  }
  p.splits = static_cast<unsigned>(splits);
  if (splits > 1) {
    const std::int64_t outputs = l.outer * l.inner;
    p.final_bx = pow2_at_least(outputs, 32);
    p.final_grid = clamp_grid(ceil_div(outputs, p.final_bx), cap);
  }
  return p;
}

}  // namespace

std::size_t reduce_workspace_bytes(ReduceOp op, DType dtype, const ReduceLayout& layout,
                                   const ReduceArgs& args) {
  const std::int64_t outputs = layout.outer * layout.inner;
  if (outputs == 0) return 0;
  const Plan plan = make_plan(layout);
  if (plan.kind != Plan::Kind::columns || plan.splits <= 1) return 0;
  std::size_t acc_bytes = 0;
  with_op(op, dtype, args, [&](auto o) { acc_bytes = sizeof(typename decltype(o)::Acc); });
  return static_cast<std::size_t>(plan.splits) * static_cast<std::size_t>(outputs) * acc_bytes;
}

void reduce(ReduceOp rop, DType dtype, const void* x, void* out, const ReduceLayout& l,
            const ReduceArgs& args, void* workspace, std::size_t workspace_bytes, void* stream) {
  const std::int64_t outputs = l.outer * l.inner;
  if (outputs == 0) return;
  const Plan plan = make_plan(l);
  const cudaStream_t s = as_stream(stream);
  with_op(rop, dtype, args, [&](auto op) {
    using Op = decltype(op);
    using In = typename Op::In;
    using Acc = typename Op::Acc;
    using Out = typename Op::Out;
    const In* in = static_cast<const In*>(x);
    Out* result = static_cast<Out*>(out);
    switch (plan.kind) {
      case Plan::Kind::rows8:
        reduce_rows_kernel<Op, 8><<<plan.grid, kBlock, 0, s>>>(op, in, l.outer, l.reduce, result);
        CUGRAD_CUDA_CHECK_LAUNCH();
        return;
      case Plan::Kind::rows32:
        reduce_rows_kernel<Op, 32><<<plan.grid, kBlock, 0, s>>>(op, in, l.outer, l.reduce, result);
        CUGRAD_CUDA_CHECK_LAUNCH();
        return;
      case Plan::Kind::columns:
        break;
    }
    Acc* partial = nullptr;
    if (plan.splits > 1) {
      const std::size_t need =
          static_cast<std::size_t>(plan.splits) * static_cast<std::size_t>(outputs) * sizeof(Acc);
      CUGRAD_CHECK(workspace != nullptr && workspace_bytes >= need, "reduce: the workspace holds ",
                   workspace_bytes, " bytes, ", need, " are needed (use reduce_workspace_bytes)");
      partial = static_cast<Acc*>(workspace);
    }
    reduce_cols_kernel<Op, ElementSource<Op>><<<dim3(plan.grid, plan.splits), kBlock, 0, s>>>(
        op, ElementSource<Op>{in}, l.outer, l.reduce, l.inner, plan.bx, plan.split_len, l.reduce, result,
        partial);
    CUGRAD_CUDA_CHECK_LAUNCH();
    if (partial != nullptr) {
      // Merge: the partials are [splits, outputs], a column reduction of length `splits`.
      reduce_cols_kernel<Op, PartialSource<Op>><<<dim3(plan.final_grid, 1), kBlock, 0, s>>>(
          op, PartialSource<Op>{partial}, 1, plan.splits, outputs, plan.final_bx, plan.splits, l.reduce,
          result, nullptr);
      CUGRAD_CUDA_CHECK_LAUNCH();
    }
  });
}

}  // namespace cugrad::cuda
