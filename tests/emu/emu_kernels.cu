// Kernels that exercise the CUDA emulator itself (tests/emu/emu_selftest.cpp).
#include <cuda_runtime.h>

#include "tests/emu/emu_kernels.h"

namespace {

__global__ void block_sum_kernel(const float* x, float* out, int n) {
  __shared__ float warp_sums[32];
  float v = 0.0f;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) v += x[i];
  // A partial last warp shuffles only among the lanes that exist.
  const unsigned warp_base = threadIdx.x / 32 * 32;
  const unsigned lanes = blockDim.x - warp_base < 32 ? blockDim.x - warp_base : 32;
  const unsigned mask = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1u;
  for (unsigned d = 16; d > 0; d /= 2) {
    const float other = __shfl_down_sync(mask, v, d);
    if (threadIdx.x % 32 + d < lanes) v += other;
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < static_cast<int>((blockDim.x + 31) / 32) ? warp_sums[lane] : 0.0f;
    for (int d = 16; d > 0; d /= 2) v += __shfl_xor_sync(0xffffffffu, v, d);
    if (lane == 0) atomicAdd(out, v);
  }
}

__global__ void reverse_kernel(const int* x, int* y, int n) {
  extern __shared__ int tile[];
  const int i = threadIdx.x;
  if (i < n) tile[i] = x[i];
  __syncthreads();
  if (i < n) y[i] = tile[n - 1 - i];
}

// Reads a neighbour's shared slot without a barrier: a race the emulator must expose.
__global__ void racy_kernel(int* y) {
  __shared__ int slot[64];
  slot[threadIdx.x] = static_cast<int>(threadIdx.x);
  y[threadIdx.x] = slot[(threadIdx.x + 1) % 64];
}

__global__ void index_kernel(unsigned* out) {
  const unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  out[b * blockDim.x * blockDim.y * blockDim.z + t] = b * 1000 + t;
}

__global__ void early_exit_kernel(int* y, int live) {
  if (static_cast<int>(threadIdx.x) >= live) return;
  __syncthreads();
  y[threadIdx.x] = __shfl_down_sync(0xffffffffu, static_cast<int>(threadIdx.x), 1);  // exited lanes: -1
}

__global__ void spin_then_set_kernel(int* flag, long long ns) {
  const long long start = clock64();
  while (clock64() - start < ns) {
  }
  *flag = 1;
}

// ---- the race check's cases (emu_tsan.h; CUGRAD_EMU_RACECHECK=ON) ----------------------------
// The lanes of a warp exchange values through shared memory; without __syncwarp they rely on a
// lock step Volta and later do not promise.
__global__ void warp_rotate_kernel(int* y, bool syncwarp) {
  __shared__ int lanes[32];
  lanes[threadIdx.x] = static_cast<int>(threadIdx.x) * 10;
  if (syncwarp) __syncwarp();
  y[threadIdx.x] = lanes[(threadIdx.x + 1) % 32];
}

// A tiled loop that reuses one shared buffer: without the barrier at the end of an iteration a
// fast thread overwrites a tile its neighbour has not read yet.
__global__ void tile_loop_kernel(const int* x, int* y, int tiles, bool trailing_barrier) {
  __shared__ int tile[64];
  int acc = 0;
  for (int t = 0; t < tiles; ++t) {
    tile[threadIdx.x] = x[t * 64 + threadIdx.x];
    __syncthreads();
    acc += tile[63 - threadIdx.x];
    if (trailing_barrier) __syncthreads();
  }
  y[threadIdx.x] = acc;
}

// Every thread adds to one shared and one global counter: atomics, never a race.
__global__ void atomic_count_kernel(int* y) {
  __shared__ int count;
  if (threadIdx.x == 0) count = 0;
  __syncthreads();
  atomicAdd(&count, 1);
  __syncthreads();
  if (threadIdx.x == 0) atomicAdd(y, count);
}

// Two threads of a block store to the same global word without ordering: a race in global memory.
__global__ void global_clash_kernel(int* y) { y[threadIdx.x / 2] = static_cast<int>(threadIdx.x); }

__global__ void copy_one_kernel(const int* src, int* dst) { *dst = *src; }

// Stream capture and graphs (emu_selftest.cpp, StreamCapture.*).
__global__ void scale_add_kernel(const float* x, float* y, int n, float a, float b) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + b;
}

__global__ void add_into_kernel(const float* x, float* y, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] += x[i];
}

}  // namespace

namespace emu_test {

cudaError_t warp_rotate(int* y, bool syncwarp) {
  warp_rotate_kernel<<<1, 32>>>(y, syncwarp);
  return cudaGetLastError();
}
cudaError_t tile_loop(const int* x, int* y, int tiles, bool trailing_barrier) {
  tile_loop_kernel<<<1, 64>>>(x, y, tiles, trailing_barrier);
  return cudaGetLastError();
}
cudaError_t atomic_count(int* y, int blocks, int threads) {
  atomic_count_kernel<<<blocks, threads>>>(y);
  return cudaGetLastError();
}
cudaError_t copy_one(const int* src, int* dst, cudaStream_t stream) {
  copy_one_kernel<<<1, 1, 0, stream>>>(src, dst);
  return cudaGetLastError();
}
cudaError_t global_clash(int* y) {
  global_clash_kernel<<<1, 4>>>(y);
  return cudaGetLastError();
}

cudaError_t block_sum(const float* x, float* out, int n, int grid, int block) {
  block_sum_kernel<<<grid, block>>>(x, out, n);
  return cudaGetLastError();
}
cudaError_t reverse(const int* x, int* y, int n, std::size_t smem) {
  reverse_kernel<<<1, n, smem>>>(x, y, n);
  return cudaGetLastError();
}
cudaError_t racy(int* y) {
  racy_kernel<<<1, 64>>>(y);
  return cudaGetLastError();
}
cudaError_t indices(unsigned* out, dim3 grid, dim3 block) {
  index_kernel<<<grid, block>>>(out);
  return cudaGetLastError();
}
cudaError_t early_exit(int* y, int block, int live) {
  early_exit_kernel<<<1, block>>>(y, live);
  return cudaGetLastError();
}

cudaError_t scale_add(const float* x, float* y, int n, float a, float b, cudaStream_t stream) {
  scale_add_kernel<<<(n + 127) / 128, 128, 0, stream>>>(x, y, n, a, b);
  return cudaGetLastError();
}
cudaError_t add_into(const float* x, float* y, int n, cudaStream_t stream) {
  add_into_kernel<<<(n + 127) / 128, 128, 0, stream>>>(x, y, n);
  return cudaGetLastError();
}

cudaError_t spin_then_set(int* flag, long long ns, cudaStream_t stream) {
  spin_then_set_kernel<<<1, 1, 0, stream>>>(flag, ns);
  return cudaGetLastError();
}

}  // namespace emu_test
