// Allocators: the stream-ordered CUDA allocator (cudaMallocFromPoolAsync on a per-device
// memory pool whose release threshold keeps freed memory cached), the CPU heap, and a cached
// pinned host allocator for asynchronous copies.
#pragma once

#include <cstddef>
#include <memory>

#include "cugrad/device.h"
#include "cugrad/memory.h"
#include "cugrad/stream.h"

namespace cugrad::runtime {

/// Allocates `nbytes` on `device`, ordered on `stream` for CUDA. Throws OutOfMemoryError
/// naming the request and the pool's state; the engine stays usable afterwards.
void* allocate(Device device, std::size_t nbytes, const Stream& stream);
/// Frees memory from allocate(), ordered on `stream` for CUDA (callers first make `stream`
/// wait for every other stream that used the memory).
void deallocate(Device device, void* ptr, std::size_t nbytes, const Stream& stream) noexcept;

/// Testing aid: when on, every new allocation is filled with 0xFF bytes (NaN for floats,
/// -1 for signed integers), so that an output element a kernel forgets to write is caught.
void set_poison_new_memory(bool on);
bool poison_new_memory();

/// A block of page-locked host memory from the pinned cache; returned to the cache when
/// destroyed, and reused only after the work recorded with release_after() has finished.
class PinnedBlock {
 public:
  PinnedBlock() = default;
  ~PinnedBlock();
  PinnedBlock(PinnedBlock&& other) noexcept;
  PinnedBlock& operator=(PinnedBlock&& other) noexcept;
  PinnedBlock(const PinnedBlock&) = delete;
  PinnedBlock& operator=(const PinnedBlock&) = delete;

  void* data() const { return data_; }
  std::size_t size() const { return size_; }
  /// Marks `stream` as using the block: it is reused only after the stream's work so far.
  void release_after(const Stream& stream);

 private:
  friend PinnedBlock pinned_allocate(std::size_t nbytes);
  void* data_ = nullptr;
  std::size_t size_ = 0;
  void* event_ = nullptr;  // cudaEvent_t recorded by release_after, or null
  bool pinned_ = false;    // false: plain heap memory (no CUDA driver)
};

/// A pinned block of at least `nbytes` (plain host memory when no CUDA driver is present).
PinnedBlock pinned_allocate(std::size_t nbytes);
/// The cache's statistics and emptying are public: cugrad::pinned_memory_stats(), empty_pinned_cache().

}  // namespace cugrad::runtime
