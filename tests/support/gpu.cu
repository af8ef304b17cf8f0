// GPU-only test helpers: a deliberately slow kernel for cross-stream tests.
#include "tests/support/gpu.h"

#include <cuda_runtime.h>

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

}  // namespace cugrad::testing
