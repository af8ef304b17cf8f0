// The per-device claim word of the device-error records (see host/runtime/device_errors.h).
#include "cuda/device_errors.h"

#include <cuda_runtime.h>

#include "cugrad/error.h"

namespace cugrad::cuda {

// One per device (module globals are per device); only ever raised, with atomicMax, to the
// generation being claimed plus one, so it never needs resetting.
__device__ unsigned int device_error_claim = 0;

unsigned int* device_error_claim_word() {
  void* p = nullptr;
  CUGRAD_CUDA_CHECK(cudaGetSymbolAddress(&p, device_error_claim));
  return static_cast<unsigned int*>(p);
}

}  // namespace cugrad::cuda
