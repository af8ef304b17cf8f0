// inspect::summary on the GPU. Kernel 1: a grid-stride Welford/min/max/NaN/Inf reduction
// (one read pass), block partials merged by the last block to finish (threadfence + atomic
// ticket) into one state, which also fixes the histogram range. Kernel 2: a shared-memory
// histogram (second read pass) using the range from device memory, so there is no host
// round trip in between. Launch: 256 threads, up to 2 blocks per SM.
#include "cuda/launch.cuh"
#include "cuda/summary.h"

namespace cugrad::cuda {

namespace {

constexpr int kThreads = 256;

struct Workspace {
  inspect::SummaryState result;
  double lo, hi;
  unsigned int ticket;
  unsigned int pad;
  // followed by: SummaryState partials[grid]; unsigned long long hist[bins]
};

__device__ inspect::SummaryState shfl_state(const inspect::SummaryState& s, int offset) {
  inspect::SummaryState o;
  o.n = __shfl_down_sync(0xffffffffu, s.n, offset);
  o.mean = __shfl_down_sync(0xffffffffu, s.mean, offset);
  o.m2 = __shfl_down_sync(0xffffffffu, s.m2, offset);
  o.min = __shfl_down_sync(0xffffffffu, s.min, offset);
  o.max = __shfl_down_sync(0xffffffffu, s.max, offset);
  o.abs_max = __shfl_down_sync(0xffffffffu, s.abs_max, offset);
  o.nan_count = __shfl_down_sync(0xffffffffu, s.nan_count, offset);
  o.inf_count = __shfl_down_sync(0xffffffffu, s.inf_count, offset);
  return o;
}

__device__ inspect::SummaryState block_reduce(inspect::SummaryState s) {
  __shared__ inspect::SummaryState warp_states[kThreads / 32];
  for (int off = 16; off > 0; off >>= 1) s = inspect::summary_merge(s, shfl_state(s, off));
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_states[warp] = s;
  __syncthreads();
  s = threadIdx.x < kThreads / 32 ? warp_states[threadIdx.x] : inspect::summary_identity();
  if (warp == 0)
    for (int off = 16; off > 0; off >>= 1) s = inspect::summary_merge(s, shfl_state(s, off));
  return s;  // valid in thread 0
}

__global__ void stats_kernel(const float* __restrict__ x, std::int64_t n, Workspace* ws,
                             inspect::SummaryState* partials, bool use_range, double lo, double hi) {
  inspect::SummaryState s = inspect::summary_identity();
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    inspect::summary_add(s, static_cast<double>(x[i]));
  s = block_reduce(s);
  __shared__ bool last;
  if (threadIdx.x == 0) {
    partials[blockIdx.x] = s;
    __threadfence();
    last = atomicAdd(&ws->ticket, 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (!last) return;
  // The last block merges every block's partial.
  __threadfence();
  inspect::SummaryState t = inspect::summary_identity();
  for (unsigned b = threadIdx.x; b < gridDim.x; b += blockDim.x) {
    volatile inspect::SummaryState* p = partials + b;
    inspect::SummaryState q;
    q.n = p->n; q.mean = p->mean; q.m2 = p->m2; q.min = p->min; q.max = p->max; q.abs_max = p->abs_max;
    q.nan_count = p->nan_count; q.inf_count = p->inf_count;
    t = inspect::summary_merge(t, q);
  }
  t = block_reduce(t);
  if (threadIdx.x == 0) {
    ws->result = t;
    ws->lo = use_range ? lo : (t.n > 0 ? t.min : 0.0);
    ws->hi = use_range ? hi : (t.n > 0 ? t.max : 0.0);
    ws->ticket = 0;  // ready for the next use
  }
}

__global__ void hist_kernel(const float* __restrict__ x, std::int64_t n, const Workspace* ws,
                            unsigned long long* hist, int bins) {
  extern __shared__ unsigned long long local[];
  for (int b = threadIdx.x; b < bins; b += blockDim.x) local[b] = 0;
  __syncthreads();
  const double lo = ws->lo, hi = ws->hi;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const double v = x[i];
    if (v != v || v - v != 0.0) continue;
    atomicAdd(&local[inspect::summary_bin(v, lo, hi, bins)], 1ull);
  }
  __syncthreads();
  for (int b = threadIdx.x; b < bins; b += blockDim.x)
    if (local[b]) atomicAdd(&hist[b], local[b]);
}

unsigned grid_size(std::int64_t n) {
  int dev = 0;
  CUGRAD_CUDA_CHECK(cudaGetDevice(&dev));
  const std::int64_t cap = 2 * static_cast<std::int64_t>(runtime::device_properties(dev).multiProcessorCount);
  const std::int64_t need = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::max<std::int64_t>(1, std::min(cap, need)));
}

}  // namespace

std::size_t summary_workspace_bytes(std::int64_t n, int bins) {
  return sizeof(Workspace) + grid_size(n) * sizeof(inspect::SummaryState) + static_cast<std::size_t>(bins) * 8;
}

void summary_f32(const float* x, std::int64_t n, int bins, bool use_range, double lo, double hi, void* workspace,
                 inspect::SummaryState* host_state, unsigned long long* host_hist, double* host_range, void* stream) {
  const unsigned grid = grid_size(n);
  auto* ws = static_cast<Workspace*>(workspace);
  auto* partials = reinterpret_cast<inspect::SummaryState*>(ws + 1);
  auto* hist = reinterpret_cast<unsigned long long*>(partials + grid);
  cudaStream_t s = as_stream(stream);
  CUGRAD_CUDA_CHECK(cudaMemsetAsync(&ws->ticket, 0, sizeof(unsigned int), s));
  CUGRAD_CUDA_CHECK(cudaMemsetAsync(hist, 0, static_cast<std::size_t>(bins) * 8, s));
  stats_kernel<<<grid, kThreads, 0, s>>>(x, n, ws, partials, use_range, lo, hi);
  CUGRAD_CUDA_CHECK_LAUNCH();
  hist_kernel<<<grid, kThreads, static_cast<std::size_t>(bins) * 8, s>>>(x, n, ws, hist, bins);
  CUGRAD_CUDA_CHECK_LAUNCH();
  CUGRAD_CUDA_CHECK(cudaMemcpyAsync(host_state, &ws->result, sizeof(inspect::SummaryState), cudaMemcpyDeviceToHost, s));
  CUGRAD_CUDA_CHECK(cudaMemcpyAsync(host_range, &ws->lo, 2 * sizeof(double), cudaMemcpyDeviceToHost, s));
  CUGRAD_CUDA_CHECK(cudaMemcpyAsync(host_hist, hist, static_cast<std::size_t>(bins) * 8, cudaMemcpyDeviceToHost, s));
  CUGRAD_CUDA_CHECK(cudaStreamSynchronize(s));
}

}  // namespace cugrad::cuda
