// GPU-only test helpers: a deliberately slow kernel for cross-stream tests.
#include "tests/support/gpu.h"

#include <cuda_runtime.h>

#include <condition_variable>
#include <memory>
#include <mutex>

#include "cugrad/error.h"

namespace cugrad::testing {

namespace {
__global__ void spin_kernel(long long cycles) {
  const long long start = clock64();
  while (clock64() - start < cycles) {
  }
}
}  // namespace

void spin_on(const Stream& stream, double milliseconds) {
  int dev = 0, khz = 0;
  CUGRAD_CUDA_CHECK(cudaGetDevice(&dev));
  CUGRAD_CUDA_CHECK(cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, dev));
  const auto cycles = static_cast<long long>(milliseconds * khz);
  spin_kernel<<<1, 1, 0, static_cast<cudaStream_t>(stream.handle())>>>(cycles);
  CUGRAD_CUDA_CHECK(cudaGetLastError());
}

struct StreamGate::State {
  std::mutex mutex;
  std::condition_variable cv;
  bool open = false;
};

namespace {
void CUDART_CB wait_for_gate(void* user) {
  std::unique_ptr<std::shared_ptr<StreamGate::State>> state(
      static_cast<std::shared_ptr<StreamGate::State>*>(user));
  std::unique_lock<std::mutex> lock((*state)->mutex);
  (*state)->cv.wait(lock, [&] { return (*state)->open; });
}
}  // namespace

StreamGate::StreamGate(const Stream& stream) : state_(std::make_shared<State>()) {
  // The host function owns a reference: it may start after the gate is gone.
  auto* held = new std::shared_ptr<State>(state_);
  const cudaError_t err = cudaLaunchHostFunc(static_cast<cudaStream_t>(stream.handle()), wait_for_gate, held);
  if (err != cudaSuccess) delete held;
  CUGRAD_CUDA_CHECK(err);
}

StreamGate::~StreamGate() { open(); }

void StreamGate::open() {
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->open = true;
  }
  state_->cv.notify_all();
}

}  // namespace cugrad::testing
