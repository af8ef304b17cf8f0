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
}  // namespace emu_test
