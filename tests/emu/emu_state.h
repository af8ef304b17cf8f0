// cugrad CUDA emulator: state shared by the runtime API (emu_runtime.cpp) and the launcher.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace cugrad_emu::state {

// Validates a launch's configuration (block and grid limits, dynamic shared memory against
// the kernel's attribute, the stream handle, not inside a host function).
cudaError_t check_launch(const void* kernel, dim3 grid, dim3 block, std::size_t dynamic_smem, cudaStream_t stream);
// Records `err` as the thread's last error and returns it.
cudaError_t fail(cudaError_t err);
void count_launch();
std::uint64_t launches();

}  // namespace cugrad_emu::state
