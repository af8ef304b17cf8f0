// CUDA-graph capture state shared by the runtime (see include/cugrad/graph.h): whether a capture
// is underway, which streams it has reached, the frees it must defer, and the random draws it
// records. One capture at a time per process; everything here is cheap when none is underway.
#pragma once

#include <cstddef>
#include <cstdint>

#include "cugrad/device.h"
#include "cugrad/random.h"
#include "cugrad/stream.h"

namespace cugrad::runtime {

/// True while a CudaGraph capture is underway anywhere in the process (one atomic load).
bool capture_underway();

/// True when work queued on `stream` now is being captured (CUDA's stream capture status).
bool stream_is_capturing(const Stream& stream);

/// Throws cugrad::Error naming `op` when the current stream of `device` is being captured: `op`
/// needs the host (a synchronization, a copy to or from host memory) and cannot be part of a
/// CUDA graph.
void check_not_capturing(const char* op, Device device);

/// Notes that `stream` joined the capture (it waited for captured work): capture_end makes the
/// capture's stream wait for it, as CUDA requires every captured stream to rejoin.
void note_joined_stream(const Stream& stream);

/// Allocator hooks. capture_allocated: `ptr` came from a stream-ordered allocation on a
/// capturing stream (a graph allocation). capture_take_free: asked for every CUDA free while
/// capture_underway() or has_orphans(); says whether the caller frees now (on `*stream`, which
/// it may move to a captured stream), or the free was deferred to the capture's end (CUDA
/// forbids freeing memory allocated outside a graph inside its capture; the deferred free goes
/// through deallocate again), or there is nothing to free (the graph that allocated it never ran).
enum class CaptureFree { now, deferred, dropped };
void capture_allocated(void* ptr);
CaptureFree capture_take_free(Device device, void* ptr, std::size_t nbytes, Stream* stream);
/// True when some graph allocations outlived a graph that never ran (their frees are no-ops).
bool has_orphans();

/// A random draw's parameters for a CUDA kernel: outside a capture the seed and first counter;
/// inside one, `state` points at device memory holding {seed, counter base} that the graph's
/// replay sets before each launch, and `offset` is relative to that base.
struct DeviceDraw {
  std::uint64_t seed = 0;
  std::uint64_t offset = 0;
  const std::uint64_t* state = nullptr;
};

/// Reserves `blocks` Philox counters for a kernel on `device` (the capture's own counters when
/// the current stream of `device` is being captured, the global generator's otherwise).
DeviceDraw reserve_device_random(Device device, std::uint64_t blocks);

}  // namespace cugrad::runtime
