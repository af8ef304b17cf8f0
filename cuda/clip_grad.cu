// Gradient-norm clipping on CUDA (optim::clip_grad_norm_): the norm of every gradient of a
// model in one multi-tensor reduction launch, a single-block launch that combines its partials
// in a fixed order into the total norm and the clip coefficient (both left on the device), and
// one multi-tensor launch that scales the gradients by that coefficient.
//
// Multi-tensor kernels (partials, scale). Launch shape: a 1-D grid of 256-thread blocks, one
// block per chunk of `chunk_elements` (kClipGradChunkElements = 16K) elements of one tensor;
// a tensor of n elements owns ceil(n / chunk) consecutive blocks. The table of tensors
// (pointers, sizes, first block of each) travels in the kernel's parameters as a
// __grid_constant__ struct (up to 64 tensors in 1.3 KB, or 256 in 5.2 KB), so nothing is
// uploaded and the host never waits; only a longer list is split over several launches (of
// 256 tensors). Each block finds its tensor by a binary search of the first-block table.
// Accesses are float4 when the chunk is 16-byte aligned, with 4 float4 loads in flight per
// thread; otherwise (views at odd offsets) scalar, still coalesced.
//
// Passes over memory: the reduction reads each gradient once (1 pass); the scale reads and
// writes it (2 passes) when the coefficient is below 1, and touches nothing when it is
// exactly 1 (no clipping: x * 1 == x). The partials are one double per block.
//
// Determinism: each thread accumulates its elements in a fixed order in double, each block
// combines its threads by a fixed shuffle tree into partials[block], and the finalize kernel
// (one block of 256 threads) sums the partials in a fixed order. No atomics: the same
// gradients give the same bits on every run.
#include <atomic>
#include <climits>
#include <cmath>
#include <cstdint>

#include "cuda/clip_grad.h"
#include "cuda/launch.cuh"
#include "cuda/multi_tensor.cuh"
#include "cuda/multi_tensor.h"

namespace cugrad::cuda {

namespace {

constexpr int kClipBlock = 256;
constexpr int kClipIlp = 4;          // float4 loads in flight per thread
constexpr int kFinalizeBlock = 256;  // threads of the single-block finalize kernel
// The coefficient sits at the start of the workspace; the partials follow, 8-byte aligned.
constexpr std::size_t kPartialsOffset = 8;

enum class NormKind : int { L2, L1, Lp, Inf };

template <int kCapacity>
struct ClipGradTable {
  int count;  // tensors in this launch (>= 1, each with numel > 0)
  int chunk_elements;
  std::int64_t partial_base;       // index of this launch's first partial (reduction only)
  int chunk_begin[kCapacity + 1];  // first block of each tensor; [count] = grid size
  float* grad[kCapacity];
  std::int64_t numel[kCapacity];
};
constexpr int kClipSmallTable = 64;
// Kernel parameters may take up to 32764 bytes on Volta and later since CUDA 12.1.
static_assert(sizeof(ClipGradTable<kClipGradMaxTensorsPerLaunch>) + 32 <= 32764,
              "the clip_grad launch table must fit in the kernel parameters");

// max that propagates NaN from either side (fmax would drop it), as torch's inf-norm does.
__device__ __forceinline__ double nan_max(double a, double b) { return (isnan(a) || a > b) ? a : b; }

template <NormKind kKind>
__device__ __forceinline__ double combine(double a, double b) {
  if constexpr (kKind == NormKind::Inf)
    return nan_max(a, b);
  else
    return a + b;
}

// Adds one element's term to a thread's accumulator.
template <NormKind kKind>
__device__ __forceinline__ double accumulate(double acc, float x, float p) {
  if constexpr (kKind == NormKind::L2) {
    const double v = static_cast<double>(x);
    return fma(v, v, acc);
  } else if constexpr (kKind == NormKind::L1) {
    return acc + static_cast<double>(fabsf(x));
  } else if constexpr (kKind == NormKind::Lp) {
    return acc + static_cast<double>(powf(fabsf(x), p));
  } else {
    return nan_max(acc, static_cast<double>(fabsf(x)));
  }
}

// Combines the values of a block's threads (blockDim.x == kThreads) in a fixed order; the
// result is valid in thread 0. The identity is 0 for every kind (terms are >= 0 or NaN).
template <NormKind kKind, int kThreads>
__device__ __forceinline__ double block_combine(double v) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "whole warps, at most 32 of them");
  __shared__ double warp_values[kThreads / 32];
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int warp = static_cast<int>(threadIdx.x) >> 5;
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1)
    v = combine<kKind>(v, __shfl_down_sync(0xffffffffu, v, offset));
  if (lane == 0) warp_values[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < kThreads / 32 ? warp_values[lane] : 0.0;
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1)
      v = combine<kKind>(v, __shfl_down_sync(0xffffffffu, v, offset));
  }
  return v;
}

// One partial per block: the kind's combination of the terms of the block's chunk.
// Launch: grid = chunks of the table, block = kClipBlock. Reads the chunk once.
template <int kCapacity, NormKind kKind>
__global__ void __launch_bounds__(kClipBlock)
    clip_grad_partials_kernel(const __grid_constant__ ClipGradTable<kCapacity> table, const float p,
                              double* __restrict__ partials) {
  const int chunk = static_cast<int>(blockIdx.x);
  const int t = tensor_of_block(table, chunk);
  const std::int64_t start = static_cast<std::int64_t>(chunk - table.chunk_begin[t]) * table.chunk_elements;
  const std::int64_t left = table.numel[t] - start;
  const int len = left < table.chunk_elements ? static_cast<int>(left) : table.chunk_elements;
  const float* g = table.grad[t] + start;

  double acc = 0.0;
  // chunk_elements is a multiple of 4, so every chunk of a tensor has its base's alignment.
  const int vector_elements = (reinterpret_cast<std::uintptr_t>(g) & 15u) == 0 ? (len & ~3) : 0;
  const int n4 = vector_elements / 4;
  const float4* g4 = reinterpret_cast<const float4*>(g);
  for (int base = static_cast<int>(threadIdx.x); base < n4; base += kClipBlock * kClipIlp) {
    float4 v[kClipIlp];
#pragma unroll
    for (int k = 0; k < kClipIlp; ++k) {
      const int i = base + k * kClipBlock;
      v[k] = i < n4 ? g4[i] : make_float4(0.f, 0.f, 0.f, 0.f);
    }
#pragma unroll
    for (int k = 0; k < kClipIlp; ++k) {
      acc = accumulate<kKind>(acc, v[k].x, p);
      acc = accumulate<kKind>(acc, v[k].y, p);
      acc = accumulate<kKind>(acc, v[k].z, p);
      acc = accumulate<kKind>(acc, v[k].w, p);
    }
  }
  // The tail of a vectorized chunk (len % 4 elements), or a whole misaligned chunk.
  for (int i = vector_elements + static_cast<int>(threadIdx.x); i < len; i += kClipBlock)
    acc = accumulate<kKind>(acc, g[i], p);

  acc = block_combine<kKind, kClipBlock>(acc);
  if (threadIdx.x == 0) partials[table.partial_base + chunk] = acc;
}

// Combines `count` partials in a fixed order into the total norm (written as float) and the
// clip coefficient max_norm / (total + 1e-6), clamped to at most 1 with NaN kept.
// Launch: one block of kFinalizeBlock threads. Reads the partials once.
template <NormKind kKind>
__global__ void __launch_bounds__(kFinalizeBlock)
    clip_grad_finalize_kernel(const double* __restrict__ partials, std::int64_t count, double p,
                              double max_norm, float* __restrict__ total_norm,
                              float* __restrict__ coefficient) {
  double acc = 0.0;
  for (std::int64_t i = threadIdx.x; i < count; i += kFinalizeBlock) acc = combine<kKind>(acc, partials[i]);
  acc = block_combine<kKind, kFinalizeBlock>(acc);
  if (threadIdx.x == 0) {
    double total = acc;
    if constexpr (kKind == NormKind::L2)
      total = sqrt(acc);
    else if constexpr (kKind == NormKind::Lp)
      total = pow(acc, 1.0 / p);
    const double coef = max_norm / (total + 1e-6);
    *total_norm = static_cast<float>(total);
    *coefficient = static_cast<float>(coef > 1.0 ? 1.0 : coef);  // written so that NaN passes
  }
}

// Multiplies the block's chunk by the coefficient; nothing at all when it is exactly 1.
// Launch: grid = chunks of the table, block = kClipBlock. Reads and writes the chunk once.
template <int kCapacity>
__global__ void __launch_bounds__(kClipBlock)
    clip_grad_scale_kernel(const __grid_constant__ ClipGradTable<kCapacity> table,
                           const float* __restrict__ coefficient) {
  const float c = *coefficient;
  if (c == 1.0f) return;
  const int chunk = static_cast<int>(blockIdx.x);
  const int t = tensor_of_block(table, chunk);
  const std::int64_t start = static_cast<std::int64_t>(chunk - table.chunk_begin[t]) * table.chunk_elements;
  const std::int64_t left = table.numel[t] - start;
  const int len = left < table.chunk_elements ? static_cast<int>(left) : table.chunk_elements;
  float* g = table.grad[t] + start;

  const int vector_elements = (reinterpret_cast<std::uintptr_t>(g) & 15u) == 0 ? (len & ~3) : 0;
  const int n4 = vector_elements / 4;
  float4* g4 = reinterpret_cast<float4*>(g);
  for (int base = static_cast<int>(threadIdx.x); base < n4; base += kClipBlock * kClipIlp) {
    float4 v[kClipIlp];
#pragma unroll
    for (int k = 0; k < kClipIlp; ++k) {
      const int i = base + k * kClipBlock;
      if (i < n4) v[k] = g4[i];
    }
#pragma unroll
    for (int k = 0; k < kClipIlp; ++k) {
      const int i = base + k * kClipBlock;
      if (i < n4) g4[i] = make_float4(v[k].x * c, v[k].y * c, v[k].z * c, v[k].w * c);
    }
  }
  for (int i = vector_elements + static_cast<int>(threadIdx.x); i < len; i += kClipBlock) g[i] *= c;
}

std::atomic<std::uint64_t> g_reduce_launches{0};
std::atomic<std::uint64_t> g_finalize_launches{0};
std::atomic<std::uint64_t> g_scale_launches{0};

NormKind kind_of(double norm_type) {
  if (std::isinf(norm_type)) return NormKind::Inf;
  if (norm_type == 2) return NormKind::L2;
  if (norm_type == 1) return NormKind::L1;
  return NormKind::Lp;
}

// Checks the tensors and returns the number of chunks (= partials) they make.
std::int64_t check_and_count_chunks(const char* op, const ClipGradTensor* tensors, std::size_t count,
                                    int chunk_elements) {
  CUGRAD_CHECK(chunk_elements > 0 && chunk_elements % 4 == 0, op,
               ": chunk_elements must be a positive multiple of 4, got ", chunk_elements);
  CUGRAD_CHECK(count == 0 || tensors != nullptr, op, ": got ", count, " tensors but no table");
  std::int64_t chunks = 0;
  for (std::size_t i = 0; i < count; ++i) {
    const ClipGradTensor& a = tensors[i];
    CUGRAD_CHECK(a.numel >= 0, op, ": tensor ", i, " has a negative size ", a.numel);
    if (a.numel == 0) continue;
    CUGRAD_CHECK(a.grad != nullptr, op, ": tensor ", i, " of ", a.numel, " elements has no pointer");
    const std::int64_t c = (a.numel - 1) / chunk_elements + 1;
    CUGRAD_CHECK(c <= INT_MAX, op, ": tensor ", i, " of ", a.numel, " elements needs more than ", INT_MAX,
                 " blocks of ", chunk_elements);
    chunks += c;
  }
  return chunks;
}

std::size_t count_nonempty(const ClipGradTensor* tensors, std::size_t count) {
  std::size_t n = 0;
  for (std::size_t i = 0; i < count; ++i) n += tensors[i].numel > 0 ? 1 : 0;
  return n;
}

// Packs the gradients into tables of kCapacity tensors (cuda/multi_tensor.h) and hands each to
// launch(table, grid), with partial_base set to the index of its first chunk among all chunks.
template <int kCapacity, typename Launch>
void for_each_table(const ClipGradTensor* tensors, std::size_t count, int chunk_elements, Launch&& launch) {
  ClipGradTable<kCapacity> table{};
  for_each_launch_table<kCapacity>(
      table, count, chunk_elements, [&](std::size_t i) { return tensors[i].numel; },
      [&](ClipGradTable<kCapacity>& t, int k, std::size_t i) {
        t.grad[k] = tensors[i].grad;
        t.numel[k] = tensors[i].numel;
      },
      [&](ClipGradTable<kCapacity>& t, unsigned grid, std::int64_t first_chunk) {
        t.partial_base = first_chunk;
        launch(static_cast<const ClipGradTable<kCapacity>&>(t), grid);
      });
}

template <int kCapacity, NormKind kKind>
void launch_partials(const ClipGradTensor* tensors, std::size_t count, float p, double* partials,
                     int chunk_elements, cudaStream_t stream) {
  for_each_table<kCapacity>(
      tensors, count, chunk_elements, [&](const ClipGradTable<kCapacity>& table, unsigned grid) {
        clip_grad_partials_kernel<kCapacity, kKind><<<grid, kClipBlock, 0, stream>>>(table, p, partials);
        CUGRAD_CUDA_CHECK_LAUNCH();
        g_reduce_launches.fetch_add(1, std::memory_order_relaxed);
      });
}

template <NormKind kKind>
void launch_norm(const ClipGradTensor* tensors, std::size_t count, double norm_type, double max_norm,
                 float* total_norm, char* workspace, std::int64_t chunks, int chunk_elements,
                 cudaStream_t stream) {
  double* partials = reinterpret_cast<double*>(workspace + kPartialsOffset);
  float* coefficient = reinterpret_cast<float*>(workspace);
  const auto p = static_cast<float>(norm_type);
  if (count_nonempty(tensors, count) <= static_cast<std::size_t>(kClipSmallTable))
    launch_partials<kClipSmallTable, kKind>(tensors, count, p, partials, chunk_elements, stream);
  else
    launch_partials<kClipGradMaxTensorsPerLaunch, kKind>(tensors, count, p, partials, chunk_elements, stream);
  clip_grad_finalize_kernel<kKind>
      <<<1, kFinalizeBlock, 0, stream>>>(partials, chunks, norm_type, max_norm, total_norm, coefficient);
  CUGRAD_CUDA_CHECK_LAUNCH();
  g_finalize_launches.fetch_add(1, std::memory_order_relaxed);
}

template <int kCapacity>
void launch_scale(const ClipGradTensor* tensors, std::size_t count, const float* coefficient,
                  int chunk_elements, cudaStream_t stream) {
  for_each_table<kCapacity>(
      tensors, count, chunk_elements, [&](const ClipGradTable<kCapacity>& table, unsigned grid) {
        clip_grad_scale_kernel<kCapacity><<<grid, kClipBlock, 0, stream>>>(table, coefficient);
        CUGRAD_CUDA_CHECK_LAUNCH();
        g_scale_launches.fetch_add(1, std::memory_order_relaxed);
      });
}

}  // namespace

std::size_t clip_grad_workspace_bytes(const ClipGradTensor* tensors, std::size_t count, int chunk_elements) {
  const std::int64_t chunks =
      check_and_count_chunks("clip_grad_workspace_bytes", tensors, count, chunk_elements);
  return kPartialsOffset + static_cast<std::size_t>(chunks) * sizeof(double);
}

void grad_norm(const ClipGradTensor* tensors, std::size_t count, double norm_type, double max_norm,
               float* total_norm, void* workspace, std::size_t workspace_bytes, void* stream,
               int chunk_elements) {
  CUGRAD_CHECK(norm_type > 0 && !std::isnan(norm_type), "grad_norm: needs norm_type > 0 (or inf), got ",
               norm_type);
  CUGRAD_CHECK(total_norm != nullptr && workspace != nullptr,
               "grad_norm: needs a total_norm and a workspace");
  const std::int64_t chunks = check_and_count_chunks("grad_norm", tensors, count, chunk_elements);
  const std::size_t need = kPartialsOffset + static_cast<std::size_t>(chunks) * sizeof(double);
  CUGRAD_CHECK(workspace_bytes >= need, "grad_norm: the workspace has ", workspace_bytes, " bytes, needs ",
               need);
  CUGRAD_CHECK(reinterpret_cast<std::uintptr_t>(workspace) % 8 == 0,
               "grad_norm: the workspace must be 8-byte aligned");
  char* ws = static_cast<char*>(workspace);
  const cudaStream_t s = as_stream(stream);
  switch (kind_of(norm_type)) {
    case NormKind::L2:
      return launch_norm<NormKind::L2>(tensors, count, norm_type, max_norm, total_norm, ws, chunks,
                                       chunk_elements, s);
    case NormKind::L1:
      return launch_norm<NormKind::L1>(tensors, count, norm_type, max_norm, total_norm, ws, chunks,
                                       chunk_elements, s);
    case NormKind::Lp:
      return launch_norm<NormKind::Lp>(tensors, count, norm_type, max_norm, total_norm, ws, chunks,
                                       chunk_elements, s);
    case NormKind::Inf:
      return launch_norm<NormKind::Inf>(tensors, count, norm_type, max_norm, total_norm, ws, chunks,
                                        chunk_elements, s);
  }
}

void scale_grads(const ClipGradTensor* tensors, std::size_t count, const void* workspace,
                 std::size_t workspace_bytes, void* stream, int chunk_elements) {
  check_and_count_chunks("scale_grads", tensors, count, chunk_elements);
  CUGRAD_CHECK(workspace != nullptr && workspace_bytes >= kPartialsOffset,
               "scale_grads: needs the workspace grad_norm filled");
  const float* coefficient = static_cast<const float*>(workspace);
  const std::size_t nonempty = count_nonempty(tensors, count);
  if (nonempty == 0) return;
  if (nonempty <= static_cast<std::size_t>(kClipSmallTable))
    launch_scale<kClipSmallTable>(tensors, count, coefficient, chunk_elements, as_stream(stream));
  else
    launch_scale<kClipGradMaxTensorsPerLaunch>(tensors, count, coefficient, chunk_elements,
                                               as_stream(stream));
}

ClipGradLaunchCounts clip_grad_launch_counts() {
  return {g_reduce_launches.load(std::memory_order_relaxed),
          g_finalize_launches.load(std::memory_order_relaxed),
          g_scale_launches.load(std::memory_order_relaxed)};
}

}  // namespace cugrad::cuda
