// Internal runtime helpers that need CUDA types: device guards, stream handles, the scratch
// event used to order one stream after another, and library handles per device and thread.
#pragma once

#include <cuda_runtime.h>

#include "cugrad/device.h"
#include "cugrad/error.h"
#include "cugrad/stream.h"

namespace cugrad::runtime {

/// Makes `device` current for this thread (for CUDA) while alive; restores it afterwards.
class DeviceGuard {
 public:
  explicit DeviceGuard(Device device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

inline cudaStream_t cuda_stream(const Stream& s) { return static_cast<cudaStream_t>(s.handle()); }
inline cudaStream_t current_cuda_stream(Device d) { return cuda_stream(Stream::current(d)); }

/// Orders all work queued on `waiter` after all work queued so far on `producer`
/// (device-side, never blocking the host). No-op when they are the same stream.
void stream_wait_stream(const Stream& waiter, const Stream& producer);

/// Properties read once per device.
const cudaDeviceProp& device_properties(int device);

}  // namespace cugrad::runtime
