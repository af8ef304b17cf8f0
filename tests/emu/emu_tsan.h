// cugrad CUDA emulator: the race check (CUGRAD_EMU_RACECHECK=ON, ThreadSanitizer).
//
// Built with -fsanitize=thread, the emulator tells ThreadSanitizer what a GPU guarantees and
// nothing more, so that TSan's happens-before analysis reports the data races a GPU may run
// into, in shared and global memory alike:
//  - every thread of a block is a TSan fiber, and the scheduler's switches between them carry
//    no ordering (__tsan_switch_to_fiber_no_sync back to the scheduler);
//  - __syncthreads orders the block's threads (each releases on arrival, acquires on leaving);
//    __syncwarp orders the lanes of a warp the same way; shuffles and votes order nothing (CUDA
//    documents memory ordering for those two barriers only);
//  - atomics are atomic accesses (relaxed, as CUDA's are): never a race, and no ordering;
//  - the end of a block orders it before the blocks and the host code that follow (so races
//    between blocks, which cugrad's kernels leave to atomics, are not looked for);
//  - the lock that runs one launch at a time orders nothing, and each OS thread has its own
//    static shared memory: with CUGRAD_EMU_ASYNC=1 (a worker thread per stream) the kernels and
//    copies of two streams are unordered unless an event, a stream wait or a host
//    synchronization orders them, so a missing cross-stream wait is reported too;
//  - the emulator's own bookkeeping (barrier counters, shuffle slots, poisoning) is invisible.
// It sees what compute-sanitizer's racecheck sees (shared-memory hazards within a block) plus
// unsynchronized global accesses within a block, and warp-synchronous code that relies on lock
// step instead of __syncwarp. Like every emulator result it does not replace racecheck on a GPU.
#pragma once

#if defined(__SANITIZE_THREAD__)
#define CUGRAD_EMU_TSAN 1
#include <sanitizer/tsan_interface.h>

extern "C" {
// ThreadSanitizer's dynamic annotations (libtsan exports them; no header declares them).
void AnnotateIgnoreReadsBegin(const char* file, int line);
void AnnotateIgnoreReadsEnd(const char* file, int line);
void AnnotateIgnoreWritesBegin(const char* file, int line);
void AnnotateIgnoreWritesEnd(const char* file, int line);
void AnnotateIgnoreSyncBegin(const char* file, int line);
void AnnotateIgnoreSyncEnd(const char* file, int line);
}

namespace cugrad_emu::tsan {

// The emulator's own accesses inside this scope are neither checked nor recorded.
class Invisible {
 public:
  Invisible() {
    AnnotateIgnoreReadsBegin(__FILE__, __LINE__);
    AnnotateIgnoreWritesBegin(__FILE__, __LINE__);
  }
  ~Invisible() {
    AnnotateIgnoreWritesEnd(__FILE__, __LINE__);
    AnnotateIgnoreReadsEnd(__FILE__, __LINE__);
  }
  Invisible(const Invisible&) = delete;
  Invisible& operator=(const Invisible&) = delete;
};

// Locks and unlocks inside this scope order nothing.
class Unordered {
 public:
  Unordered() { AnnotateIgnoreSyncBegin(__FILE__, __LINE__); }
  ~Unordered() { AnnotateIgnoreSyncEnd(__FILE__, __LINE__); }
  Unordered(const Unordered&) = delete;
  Unordered& operator=(const Unordered&) = delete;
};

// Always inlined: an instrumented function that entered on one fiber and left on another would
// corrupt both fibers' records of their calls (a switch must sit in the function that switches).
[[gnu::always_inline]] inline void release(void* sync) { __tsan_release(sync); }
[[gnu::always_inline]] inline void acquire(void* sync) { __tsan_acquire(sync); }
[[gnu::always_inline]] inline void* current_fiber() { return __tsan_get_current_fiber(); }
[[gnu::always_inline]] inline void* create_fiber() { return __tsan_create_fiber(0); }
[[gnu::always_inline]] inline void destroy_fiber(void* f) { __tsan_destroy_fiber(f); }
[[gnu::always_inline]] inline void name_fiber(void* f, const char* name) { __tsan_set_fiber_name(f, name); }
// `ordered`: what the switching fiber did happens before what the target does next.
[[gnu::always_inline]] inline void switch_to(void* fiber, bool ordered) {
  __tsan_switch_to_fiber(fiber, ordered ? 0u : static_cast<unsigned>(__tsan_switch_to_fiber_no_sync));
}

}  // namespace cugrad_emu::tsan

#else
#define CUGRAD_EMU_TSAN 0

namespace cugrad_emu::tsan {
class Invisible {
 public:
  Invisible() {}
  Invisible(const Invisible&) = delete;
  Invisible& operator=(const Invisible&) = delete;
};
class Unordered {
 public:
  Unordered() {}
  Unordered(const Unordered&) = delete;
  Unordered& operator=(const Unordered&) = delete;
};
inline void release(void*) {}
inline void acquire(void*) {}
}  // namespace cugrad_emu::tsan

#endif
