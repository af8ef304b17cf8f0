// Memory statistics of the stream-ordered CUDA allocator (and, for completeness, the CPU).
#pragma once

#include <cstddef>
#include <cstdint>

#include "cugrad/device.h"

namespace cugrad {

struct MemoryStats {
  std::size_t bytes_in_use = 0;     // requested by live tensors
  std::size_t peak_bytes_in_use = 0;  // since start or the last reset_peak_memory_stats
  std::size_t bytes_reserved = 0;   // held by the device memory pool (CUDA) or the heap (CPU)
  std::uint64_t allocation_count = 0;  // allocations made since start
};

MemoryStats memory_stats(Device device);
/// Resets peak_bytes_in_use to the current bytes_in_use.
void reset_peak_memory_stats(Device device);
/// Returns cached, unused pool memory to the system (waits for the device first).
void empty_cache(Device device);

}  // namespace cugrad
