// Launchers of the emulator's self-test kernels (emu_kernels.cu).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

namespace emu_test {
cudaError_t block_sum(const float* x, float* out, int n, int grid, int block);
cudaError_t reverse(const int* x, int* y, int n, std::size_t smem);
cudaError_t racy(int* y);
cudaError_t indices(unsigned* out, dim3 grid, dim3 block);
cudaError_t early_exit(int* y, int block, int live);
cudaError_t spin_then_set(int* flag, long long ns, cudaStream_t stream);
// The race check's cases (emu_selftest.cpp, RaceCheck.*).
cudaError_t warp_rotate(int* y, bool syncwarp);
cudaError_t tile_loop(const int* x, int* y, int tiles, bool trailing_barrier);
cudaError_t atomic_count(int* y, int blocks, int threads);
cudaError_t global_clash(int* y);
cudaError_t copy_one(const int* src, int* dst, cudaStream_t stream);
// Stream capture and graphs (emu_selftest.cpp, StreamCapture.*): y = a * x + b; y += x.
cudaError_t scale_add(const float* x, float* y, int n, float a, float b, cudaStream_t stream);
cudaError_t add_into(const float* x, float* y, int n, cudaStream_t stream);
}  // namespace emu_test
