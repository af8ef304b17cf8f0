// cugrad CUDA emulator: state shared by the runtime API (emu_runtime.cpp) and the launcher.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <functional>

namespace cugrad_emu::state {

// The emulated device's shared memory per block (an H100's): without and with the kernel's
// cudaFuncAttributeMaxDynamicSharedMemorySize opt-in.
constexpr int kSharedPerBlock = 48 * 1024;
constexpr int kSharedPerBlockOptin = 227 * 1024;

// Validates a launch's configuration (block and grid limits, dynamic shared memory against
// the kernel's attribute, the stream handle, not inside a host function).
cudaError_t check_launch(const void* kernel, dim3 grid, dim3 block, std::size_t dynamic_smem,
                         cudaStream_t stream);
// The most shared memory, static and dynamic together, a block of `kernel` may use: 48 KB unless
// cudaFuncSetAttribute opted the kernel in to more dynamic shared memory (then the device's
// per-block opt-in limit, 227 KB as on an H100). A kernel's static shared memory is known only
// when it runs, so the scheduler checks this as blocks declare their __shared__ variables.
std::size_t shared_memory_limit(const void* kernel);
// Records `err` as the thread's last error and returns it.
cudaError_t fail(cudaError_t err);
void count_launch();
// Queues `op` on the stream (runs it at once in synchronous mode). While the stream captures
// (cudaStreamBeginCapture, or a stream that joined a capture), `op` is recorded into the capture
// instead and runs at each launch of the graph: it must own copies of everything it reads at the
// call (pointers are fine) and may run many times. Returns cudaSuccess, or why the stream takes no
// work: cudaErrorStreamCaptureInvalidated (its capture was invalidated), or
// cudaErrorStreamCaptureImplicit (the legacy stream while a blocking stream of the device
// captures; that capture is invalidated). Callers report the error as their API does.
cudaError_t submit(cudaStream_t stream, std::function<void()> op);
// Waits for the stream's queued work (no-op in synchronous mode).
void wait_stream(cudaStream_t stream);
void wait_all();
std::uint64_t launches();
// CUGRAD_EMU_NULL=1: kernels, cuBLAS products and cuDNN convolutions (and their bias sums and
// adds) are checked and counted but not computed, and fresh allocations are not poisoned: what is
// left of a step is the host's
// own work (the library's code and the emulated API bookkeeping), for timing it. Results are
// garbage in this mode; only host-overhead measurements use it (tests/emu/host_overhead.cpp).
bool null_compute();

}  // namespace cugrad_emu::state
