// Device side of the device-error records (host/runtime/device_errors.h): the claim word that
// picks one reporter per generation, and report_device_error() for kernels.
#pragma once

#include <cstdint>

#include "host/runtime/device_errors.h"

namespace cugrad::cuda {

/// Address of the current device's claim word (a __device__ variable of
/// cuda/device_errors.cu, zero at module load). Host function; called once per device.
unsigned int* device_error_claim_word();

#if defined(__CUDACC__) || defined(CUGRAD_CUDA_EMULATOR)  // tests/emu compiles device code as C++
/// Records an error for the host to report (first one per generation wins; see
/// host/runtime/device_errors.h). Never blocks; a sink without a record ignores the report.
/// Only atomicMax on the device-memory claim word is atomic; the mapped record is written with
/// plain volatile stores by the single winner, then published by the state store.
__device__ __forceinline__ void report_device_error(const runtime::DeviceErrorSink& sink,
                                                    runtime::DeviceErrorKind kind, std::int64_t index,
                                                    std::int64_t value, std::int64_t bound,
                                                    std::int64_t extra) {
  if (sink.record == nullptr || sink.claim == nullptr) return;
  volatile runtime::DeviceErrorRecord* rec = sink.record;
  const unsigned int ticket = rec->generation + 1u;
  if (atomicMax(sink.claim, ticket) >= ticket) return;  // this generation already has its reporter
  rec->kind = static_cast<std::int32_t>(kind);
  rec->index = index;
  rec->value = value;
  rec->bound = bound;
  rec->extra = extra;
  __threadfence_system();  // the fields reach the host before the state that publishes them
  rec->state = ticket;
}
#endif

}  // namespace cugrad::cuda
