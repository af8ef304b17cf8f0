// The stream-ordered CUDA allocator (one memory pool per device, release threshold at the
// maximum so freed memory stays cached), CPU heap allocation, memory statistics, and the
// cached pinned host allocator.
#include "host/runtime/allocator.h"

#include <cuda_runtime.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <vector>

#include "cugrad/error.h"
#include "host/runtime/capture.h"
#include "host/runtime/cuda_context.h"

namespace cugrad::runtime {

namespace {

constexpr int kMaxDevices = 64;
constexpr std::size_t kCpuAlignment = 64;

struct Counters {
  std::atomic<std::size_t> in_use{0};
  std::atomic<std::size_t> peak{0};
  std::atomic<std::uint64_t> count{0};

  void add(std::size_t n) {
    const std::size_t now = in_use.fetch_add(n) + n;
    std::size_t p = peak.load();
    while (now > p && !peak.compare_exchange_weak(p, now)) {
    }
    count.fetch_add(1);
  }
  void sub(std::size_t n) { in_use.fetch_sub(n); }
};

Counters g_cpu;
std::array<Counters, kMaxDevices> g_cuda;

std::mutex g_pool_mutex;
std::array<cudaMemPool_t, kMaxDevices> g_pools{};

cudaMemPool_t pool_for(int device) {
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  cudaMemPool_t& pool = g_pools[static_cast<std::size_t>(device)];
  if (!pool) {
    CUGRAD_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
    // Keep freed memory cached in the pool instead of returning it at every synchronize.
    std::uint64_t threshold = std::numeric_limits<std::uint64_t>::max();
    CUGRAD_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
  }
  return pool;
}

std::size_t pool_reserved(int device) {
  std::uint64_t v = 0;
  if (cudaMemPoolGetAttribute(pool_for(device), cudaMemPoolAttrReservedMemCurrent, &v) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return static_cast<std::size_t>(v);
}

std::size_t round_up(std::size_t n, std::size_t a) { return (n + a - 1) / a * a; }

}  // namespace

namespace {
std::atomic<bool> g_poison{false};
}
void set_poison_new_memory(bool on) { g_poison = on; }
bool poison_new_memory() { return g_poison; }

void* allocate(Device device, std::size_t nbytes, const Stream& stream) {
  if (device.is_cpu()) {
    if (nbytes == 0) nbytes = 1;
    void* p = std::aligned_alloc(kCpuAlignment, round_up(nbytes, kCpuAlignment));
    if (!p) {
      throw OutOfMemoryError(detail::cat("out of memory: cannot allocate ", nbytes,
                                         " bytes on the CPU (", g_cpu.in_use.load(),
                                         " bytes in use by tensors)"),
                             2);
    }
    g_cpu.add(nbytes);
    if (g_poison) std::memset(p, 0xFF, nbytes);
    return p;
  }
  const int d = device.index();
  DeviceGuard guard(device);
  cudaMemPool_t pool = pool_for(d);
  void* p = nullptr;
  const std::size_t request = nbytes == 0 ? 1 : nbytes;
  cudaError_t err = cudaMallocFromPoolAsync(&p, request, pool, cuda_stream(stream));
  // Inside a CUDA-graph capture the device cannot be synchronized: no retry there.
  const bool captured = capture_underway() && stream_is_capturing(stream);
  if (err == cudaErrorMemoryAllocation && !captured) {
    (void)cudaGetLastError();
    // Give cached blocks back to the system and try once more before reporting.
    CUGRAD_CUDA_CHECK(cudaDeviceSynchronize());
    CUGRAD_CUDA_CHECK(cudaMemPoolTrimTo(pool, 0));
    err = cudaMallocFromPoolAsync(&p, request, pool, cuda_stream(stream));
  }
  if (err == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    std::size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) (void)cudaGetLastError();
    throw OutOfMemoryError(
        detail::cat("out of memory: tried to allocate ", nbytes, " bytes on ", device, "; ",
                    g_cuda[d].in_use.load(), " bytes in use by tensors, ", pool_reserved(d),
                    " bytes reserved by cugrad's pool, device has ", free_b, " free of ", total_b),
        static_cast<int>(err));
  }
  CUGRAD_CUDA_CHECK(err);
  if (captured) capture_allocated(p);
  g_cuda[d].add(nbytes);
  if (g_poison) CUGRAD_CUDA_CHECK(cudaMemsetAsync(p, 0xFF, nbytes, cuda_stream(stream)));
  return p;
}

void deallocate(Device device, void* ptr, std::size_t nbytes, const Stream& stream) noexcept {
  if (!ptr) return;
  if (device.is_cpu()) {
    std::free(ptr);
    g_cpu.sub(nbytes);
    return;
  }
  Stream on = stream;
  try {
    // During a CUDA-graph capture a free may have to wait for the capture's end (memory from
    // before it), or move to a captured stream; the memory of a graph that never ran has no
    // free at all (host/runtime/graph.cpp).
    if (capture_underway() || has_orphans()) {
      const CaptureFree action = capture_take_free(device, ptr, nbytes, &on);
      if (action == CaptureFree::deferred) return;  // counted when the deferred free runs
      if (action == CaptureFree::dropped) {
        g_cuda[device.index()].sub(nbytes);
        return;
      }
    }
  } catch (...) {
  }
  try {
    DeviceGuard guard(device);
    CUGRAD_CUDA_CHECK_NOTHROW(cudaFreeAsync(ptr, cuda_stream(on)));
  } catch (...) {
  }
  g_cuda[device.index()].sub(nbytes);
}

// ---- pinned host memory ----

namespace {

struct CachedBlock {
  void* data;
  std::size_t size;
  cudaEvent_t event;  // may be null
  bool pinned;
};

struct PinnedCache {
  std::mutex mutex;
  std::multimap<std::size_t, CachedBlock> free_blocks;  // by size: a power of two >= 4096
  std::size_t reserved = 0;
  std::size_t in_use = 0;
  std::uint64_t allocations = 0;  // blocks pinned (cudaHostAlloc calls that succeeded)
  std::uint64_t reuses = 0;       // requests served from free_blocks
};

PinnedCache& pinned_cache() {
  // Leaked on purpose: blocks may be returned from static destructors after main.
  static PinnedCache* cache = new PinnedCache();
  return *cache;
}

bool event_done(cudaEvent_t ev) {
  if (!ev) return true;
  cudaError_t err = cudaEventQuery(ev);
  if (err == cudaSuccess) return true;
  (void)cudaGetLastError();
  return false;
}

std::size_t bucket_size(std::size_t n) {
  std::size_t b = 4096;
  while (b < n) b <<= 1;
  return b;
}

// A request may take a free block of its own size or of the next one (twice as large): a step
// that holds one more block of some size at once than before then takes a free larger block,
// if one is ready, instead of pinning another (tens of milliseconds for the 256 MB blocks of a
// hooked ResNet-18 step). Never more than twice: a small request must not hold a large block.
constexpr std::size_t kLargestReuseFactor = 2;

// Unpins the cached blocks that no pending device work uses. Their events and host memory are
// released outside the cache's lock (cudaFreeHost waits for the device).
void drop_ready_blocks(PinnedCache& c) {
  std::vector<CachedBlock> drop;
  {
    std::lock_guard<std::mutex> lock(c.mutex);
    for (auto it = c.free_blocks.begin(); it != c.free_blocks.end();) {
      if (event_done(it->second.event)) {
        drop.push_back(it->second);
        c.reserved -= it->second.size;
        it = c.free_blocks.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& b : drop) {
    if (b.event) CUGRAD_CUDA_CHECK_NOTHROW(cudaEventDestroy(b.event));
    if (b.pinned) {
      CUGRAD_CUDA_CHECK_NOTHROW(cudaFreeHost(b.data));
    } else {
      std::free(b.data);
    }
  }
}

}  // namespace

PinnedBlock pinned_allocate(std::size_t nbytes) {
  PinnedCache& c = pinned_cache();
  const std::size_t size = bucket_size(nbytes);
  PinnedBlock block;
  {
    std::lock_guard<std::mutex> lock(c.mutex);
    // The smallest ready block of the sizes allowed (free_blocks is ordered by size).
    const auto end = c.free_blocks.upper_bound(size * kLargestReuseFactor);
    for (auto it = c.free_blocks.lower_bound(size); it != end; ++it) {
      if (event_done(it->second.event)) {
        block.data_ = it->second.data;
        block.size_ = it->second.size;  // the block's own size: it returns to its own bucket
        block.event_ = it->second.event;
        block.pinned_ = it->second.pinned;
        c.free_blocks.erase(it);
        c.in_use += block.size_;
        c.reuses++;
        return block;
      }
    }
  }
  void* p = nullptr;
  bool pinned = false;
  if (cuda_is_available()) {
    cudaError_t err = cudaHostAlloc(&p, size, cudaHostAllocDefault);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      drop_ready_blocks(c);  // unpin what the cache holds unused and retry once
      err = cudaHostAlloc(&p, size, cudaHostAllocDefault);
      if (err != cudaSuccess) {
        (void)cudaGetLastError();
        std::lock_guard<std::mutex> lock(c.mutex);
        throw OutOfMemoryError(detail::cat("out of memory: cannot allocate ", size,
                                           " bytes of pinned host memory (", c.reserved,
                                           " bytes held by the pinned cache)"),
                               static_cast<int>(err));
      }
    }
    pinned = true;
  } else {
    p = std::aligned_alloc(kCpuAlignment, size);
    if (!p) throw OutOfMemoryError(detail::cat("out of memory: cannot allocate ", size, " host bytes"), 2);
  }
  std::lock_guard<std::mutex> lock(c.mutex);
  c.reserved += size;
  c.in_use += size;
  c.allocations++;
  block.data_ = p;
  block.size_ = size;
  block.pinned_ = pinned;
  return block;
}

PinnedBlock::~PinnedBlock() {
  if (!data_) return;
  PinnedCache& c = pinned_cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  c.in_use -= size_;
  c.free_blocks.emplace(size_, CachedBlock{data_, size_, static_cast<cudaEvent_t>(event_), pinned_});
  data_ = nullptr;
}

PinnedBlock::PinnedBlock(PinnedBlock&& o) noexcept
    : data_(o.data_), size_(o.size_), event_(o.event_), pinned_(o.pinned_) {
  o.data_ = nullptr;
  o.event_ = nullptr;
}

PinnedBlock& PinnedBlock::operator=(PinnedBlock&& o) noexcept {
  if (this != &o) {
    PinnedBlock tmp(std::move(*this));  // returns our block to the cache
    data_ = o.data_;
    size_ = o.size_;
    event_ = o.event_;
    pinned_ = o.pinned_;
    o.data_ = nullptr;
    o.event_ = nullptr;
  }
  return *this;
}

void PinnedBlock::release_after(const Stream& stream) {
  if (!stream.handle() || !data_) return;
  DeviceGuard g(stream.device());
  if (!event_) {
    cudaEvent_t ev;
    CUGRAD_CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    event_ = ev;
  }
  CUGRAD_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(event_), cuda_stream(stream)));
}

}  // namespace cugrad::runtime

namespace cugrad {

MemoryStats memory_stats(Device device) {
  MemoryStats s;
  if (device.is_cpu()) {
    s.bytes_in_use = runtime::g_cpu.in_use;
    s.peak_bytes_in_use = runtime::g_cpu.peak;
    s.bytes_reserved = runtime::g_cpu.in_use;
    s.allocation_count = runtime::g_cpu.count;
    return s;
  }
  check_device_available(device, "memory_stats");
  auto& c = runtime::g_cuda[static_cast<std::size_t>(device.index())];
  s.bytes_in_use = c.in_use;
  s.peak_bytes_in_use = c.peak;
  s.allocation_count = c.count;
  runtime::DeviceGuard g(device);
  s.bytes_reserved = runtime::pool_reserved(device.index());
  return s;
}

void reset_peak_memory_stats(Device device) {
  auto& c = device.is_cpu() ? runtime::g_cpu : runtime::g_cuda[static_cast<std::size_t>(device.index())];
  c.peak = c.in_use.load();
}

PinnedMemoryStats pinned_memory_stats() {
  runtime::PinnedCache& c = runtime::pinned_cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  PinnedMemoryStats s;
  s.bytes_in_use = c.in_use;
  s.bytes_reserved = c.reserved;
  s.allocation_count = c.allocations;
  s.reuse_count = c.reuses;
  return s;
}

void empty_pinned_cache() { runtime::drop_ready_blocks(runtime::pinned_cache()); }

void empty_cache(Device device) {
  if (device.is_cpu()) return;
  check_device_available(device, "empty_cache");
  runtime::check_not_capturing("empty_cache", device);
  runtime::DeviceGuard g(device);
  CUGRAD_CUDA_CHECK(cudaDeviceSynchronize());
  CUGRAD_CUDA_CHECK(cudaMemPoolTrimTo(runtime::pool_for(device.index()), 0));
}

}  // namespace cugrad
