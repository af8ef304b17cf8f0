// Library handles (cuBLAS, cuDNN) kept one per device and thread, recycled through an idle
// pool when threads end. The pool is never torn down: a static destructor may run after the
// CUDA driver has shut down, and destroying a handle then could crash or hang; the OS
// reclaims the handles at exit.
#pragma once

#include <cstddef>
#include <mutex>
#include <vector>

namespace cugrad::cuda::detail {

/// HandlePool<H, create>::get(device): this thread's handle for `device` (the current device),
/// taken from the idle pool or made by `create` (which throws on failure).
template <typename Handle, Handle (*Create)()>
class HandlePool {
 public:
  static Handle get(int device) { return thread_handles().get(device); }

 private:
  // Handles no thread holds, by device index.
  struct Idle {
    std::mutex mutex;
    std::vector<std::vector<Handle>> by_device;
  };
  static Idle& idle() {
    static Idle* const pool = new Idle();
    return *pool;
  }

  static Handle acquire(int device) {
    {
      Idle& pool = idle();
      std::lock_guard<std::mutex> lock(pool.mutex);
      const auto d = static_cast<std::size_t>(device);
      if (d < pool.by_device.size() && !pool.by_device[d].empty()) {
        Handle h = pool.by_device[d].back();
        pool.by_device[d].pop_back();
        return h;
      }
    }
    return Create();
  }

  // The handles of one thread, by device index. Its destructor runs when the thread ends (for
  // the main thread, during exit) and only moves the handles to the idle pool: no CUDA call,
  // nothing that can throw out of it.
  class ThreadHandles {
   public:
    ThreadHandles() = default;
    ThreadHandles(const ThreadHandles&) = delete;
    ThreadHandles& operator=(const ThreadHandles&) = delete;
    ~ThreadHandles() {
      try {
        Idle& pool = idle();
        std::lock_guard<std::mutex> lock(pool.mutex);
        if (pool.by_device.size() < handles_.size()) pool.by_device.resize(handles_.size());
        for (std::size_t d = 0; d < handles_.size(); ++d)
          if (handles_[d] != nullptr) pool.by_device[d].push_back(handles_[d]);
      } catch (...) {
        // Out of memory or a broken mutex while a thread ends: the handles leak, harmlessly.
      }
    }
    Handle get(int device) {
      const auto d = static_cast<std::size_t>(device);
      if (d >= handles_.size()) handles_.resize(d + 1, nullptr);
      if (handles_[d] == nullptr) handles_[d] = acquire(device);
      return handles_[d];
    }

   private:
    std::vector<Handle> handles_;
  };

  static ThreadHandles& thread_handles() {
    thread_local ThreadHandles handles;
    return handles;
  }
};

}  // namespace cugrad::cuda::detail
