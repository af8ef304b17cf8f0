// Memory statistics of the stream-ordered CUDA allocator (and, for completeness, the CPU), and
// of the pinned host cache.
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

/// The pinned host cache behind asynchronous copies to and from the host (the Inspector's
/// activation copies, the DataLoader's batches). Blocks are powers of two from 4 KB; a request
/// takes a ready free block of its size or of twice its size, and pins a new one otherwise.
struct PinnedMemoryStats {
  std::size_t bytes_in_use = 0;        // in blocks handed out
  std::size_t bytes_reserved = 0;      // pinned by the cache: in use and cached
  std::uint64_t allocation_count = 0;  // blocks pinned since start (each a cudaHostAlloc)
  std::uint64_t reuse_count = 0;       // requests served by a cached block
};

PinnedMemoryStats pinned_memory_stats();
/// Unpins the cached blocks not in use and not awaited by pending copies.
void empty_pinned_cache();

}  // namespace cugrad
