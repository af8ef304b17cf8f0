// cugrad CUDA emulator: kernel launches. Blocks run in turn on the launching OS thread; the
// threads of a block are fibers (a small x86-64 context switch, no system calls) scheduled
// round-robin, switching only at barriers and warp exchanges. See cuda_emu.h.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstdio>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "tests/emu/cuda_emu.h"
#include "tests/emu/emu_state.h"
#include "tests/emu/emu_trace.h"
#include "tests/emu/emu_tsan.h"

#if !defined(__x86_64__)
#error "the cugrad CUDA emulator's fibers are written for x86-64"
#endif

// emu_switch(save, to): saves the callee-saved registers and the stack pointer into *save, then
// resumes the context whose stack pointer is `to`.
extern "C" void cugrad_emu_switch(void** save, void* to);
extern "C" void cugrad_emu_fiber_entry();
asm(R"(
  .text
  .globl cugrad_emu_switch
  .type cugrad_emu_switch,@function
cugrad_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size cugrad_emu_switch, .-cugrad_emu_switch
)");

namespace cugrad_emu {
namespace {

constexpr std::size_t kStackBytes = 256 * 1024;

struct Stack {
  char* base = nullptr;  // lowest usable byte (a guard page lies below)
  std::size_t size = 0;
};

class StackPool {
 public:
  Stack take() {
    if (!free_.empty()) {
      Stack s = free_.back();
      free_.pop_back();
      return s;
    }
    const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    void* m = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (m == MAP_FAILED) {
      std::fprintf(stderr, "cugrad CUDA emulator: cannot map a fiber stack\n");
      std::abort();
    }
    mprotect(m, page, PROT_NONE);
    return Stack{static_cast<char*>(m) + page, kStackBytes};
  }
  void give(Stack s) { free_.push_back(s); }
  ~StackPool() {
    const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    for (auto& s : free_) munmap(s.base - page, s.size + page);
  }

 private:
  std::vector<Stack> free_;
};

enum class FiberState { unstarted, running, waiting, done };

struct Fiber {
  ThreadCtx ctx;
  void* sp = nullptr;
  Stack stack;
  FiberState state = FiberState::unstarted;
  const unsigned* wait_generation = nullptr;
  unsigned wait_value = 0;
};

struct Warp {
  Barrier barrier;
  unsigned live = 0;      // lanes that exist and have not exited
  unsigned mask = 0;      // the mask of the exchange in progress
  std::uint64_t slots[32] = {};
};

struct Block {
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  unsigned live = 0;
  Barrier barrier;
  std::vector<std::max_align_t> dynamic;
  std::vector<void*> declared;  // static shared variables poisoned in this block
  std::size_t static_bytes = 0;  // their sizes together
  std::size_t dynamic_bytes = 0;
};

struct Scheduler {
  Block block;
  Fiber* current = nullptr;
  void* scheduler_sp = nullptr;
  KernelBody body = nullptr;
  void* closure = nullptr;
  StackPool stacks;
  const void* kernel = nullptr;
#if CUGRAD_EMU_TSAN
  // The race check: one TSan fiber per thread index, reused by every block; the scheduler's own;
  // the object each finished thread releases and the scheduler acquires when the block ends.
  std::vector<void*> tsan_fibers;
  void* tsan_scheduler = nullptr;
  unsigned char block_done = 0;
  ~Scheduler() {
    for (void* f : tsan_fibers) tsan::destroy_fiber(f);
  }
#endif
};

thread_local Scheduler* t_sched = nullptr;

Scheduler& sched() {
  if (!t_sched) {
    std::fprintf(stderr, "cugrad CUDA emulator: a device function ran outside a kernel launch\n");
    std::abort();
  }
  return *t_sched;
}

void yield_to_scheduler() {
  Scheduler& s = *t_sched;
  void** save = &s.current->sp;
  void* to = s.scheduler_sp;
#if CUGRAD_EMU_TSAN
  tsan::switch_to(s.tsan_scheduler, false);  // a switch orders nothing: only barriers do
#endif
  cugrad_emu_switch(save, to);
}

void wait_for(const Barrier& b, unsigned generation) {
  Fiber* f = t_sched->current;
  f->state = FiberState::waiting;
  f->wait_generation = &b.generation;
  f->wait_value = generation;
  yield_to_scheduler();
  f->state = FiberState::running;
  f->wait_generation = nullptr;
}

unsigned warp_expected(const Warp& w) { return static_cast<unsigned>(std::popcount(w.live & w.mask)); }

// With `orders_memory` (__syncthreads, __syncwarp), what each thread did before it arrived happens
// before what any of them does after it leaves, for the race check. CUDA documents that ordering
// for those two only: a shuffle or a vote exchanges its values and orders no memory access.
void arrive(Barrier& b, unsigned expected, bool orders_memory) {
  const unsigned g = b.generation;
  if (orders_memory) tsan::release(&b.sync[g % 2]);
  if (++b.arrived >= expected) {
    b.arrived = 0;
    ++b.generation;
  } else {
    wait_for(b, g);
  }
  if (orders_memory) tsan::acquire(&b.sync[g % 2]);
}

std::string kernel_name(const void* kernel) { return trace::function_name(kernel); }

// Reverse order (CUGRAD_EMU_ORDER=reverse) runs the threads of a block and the blocks of a grid
// last to first: a missing barrier or an order assumption shows up in one order or the other.
bool reverse_order() {
  static const bool r = [] {
    const char* v = std::getenv("CUGRAD_EMU_ORDER");
    return v && std::strcmp(v, "reverse") == 0;
  }();
  return r;
}

void on_exit(Block& b, Fiber& f) {
  --b.live;
  Warp& w = b.warps[f.ctx.linear / 32];
  w.live &= ~(1u << (f.ctx.linear % 32));
  if (b.barrier.arrived > 0 && b.barrier.arrived >= b.live) {
    b.barrier.arrived = 0;
    ++b.barrier.generation;
  }
  if (w.barrier.arrived > 0 && w.barrier.arrived >= warp_expected(w)) {
    w.barrier.arrived = 0;
    ++w.barrier.generation;
  }
}

void run_block(Scheduler& s, dim3 grid, dim3 block_dim, uint3 block_idx, std::size_t dyn_bytes) {
  Block& b = s.block;
  const unsigned n = block_dim.x * block_dim.y * block_dim.z;
  b.fibers.assign(n, Fiber{});
  b.warps.assign((n + 31) / 32, Warp{});
  for (unsigned i = 0; i < n; ++i) {
    Fiber& f = b.fibers[i];
    f.ctx.linear = i;
    f.ctx.thread_idx = uint3{i % block_dim.x, (i / block_dim.x) % block_dim.y, i / (block_dim.x * block_dim.y)};
    f.ctx.block_idx = block_idx;
    f.ctx.block_dim = block_dim;
    f.ctx.grid_dim = grid;
    b.warps[i / 32].live |= 1u << (i % 32);
  }
  b.live = n;
  b.barrier = Barrier{};
  b.declared.clear();
  b.static_bytes = 0;
  b.dynamic_bytes = dyn_bytes;
  b.dynamic.resize((dyn_bytes + sizeof(std::max_align_t) - 1) / sizeof(std::max_align_t) + 1);
  std::memset(b.dynamic.data(), 0xFF, b.dynamic.size() * sizeof(std::max_align_t));

#if CUGRAD_EMU_TSAN
  // The scheduler's bookkeeping is invisible to the race check; its poisoning of dynamic shared
  // memory and its setup happen before the block's threads start (the first switch into each
  // thread is ordered).
  tsan::Invisible hide;
  if (!s.tsan_scheduler) s.tsan_scheduler = tsan::current_fiber();
  while (s.tsan_fibers.size() < n) {
    s.tsan_fibers.push_back(tsan::create_fiber());
    // Reports name the thread of the block ("thread 37"), and the launch by the stack of its fiber.
    tsan::name_fiber(s.tsan_fibers.back(), ("thread " + std::to_string(s.tsan_fibers.size() - 1)).c_str());
  }
  // A finished thread's stack is not handed to another thread of the same block: the two are
  // unordered, and the second one's use of it would read as a race.
  std::vector<Stack> retired;
#endif
  const bool rev = reverse_order();
  while (b.live > 0) {
    bool progressed = false;
    for (unsigned k = 0; k < n; ++k) {
      Fiber& f = b.fibers[rev ? n - 1 - k : k];
      if (f.state == FiberState::done) continue;
      if (f.state == FiberState::waiting && *f.wait_generation == f.wait_value) continue;
      progressed = true;
      const bool starting = f.state == FiberState::unstarted;
      if (starting) {
        f.stack = s.stacks.take();
        auto* top = reinterpret_cast<std::uint64_t*>(f.stack.base + f.stack.size);
        *--top = 0;  // the entry function's return address slot: keeps the ABI's alignment
        *--top = reinterpret_cast<std::uint64_t>(&cugrad_emu_fiber_entry);
        for (int r = 0; r < 6; ++r) *--top = 0;
        f.sp = top;
        f.state = FiberState::running;
      }
      s.current = &f;
      void* to = f.sp;
#if CUGRAD_EMU_TSAN
      // Only the start is ordered: the block's setup happens before its threads run; resuming a
      // thread after a barrier or a shuffle orders nothing more.
      tsan::switch_to(s.tsan_fibers[f.ctx.linear], starting);
#endif
      cugrad_emu_switch(&s.scheduler_sp, to);
      s.current = nullptr;
      if (f.state == FiberState::done) {
#if CUGRAD_EMU_TSAN
        retired.push_back(f.stack);
#else
        s.stacks.give(f.stack);
#endif
        on_exit(b, f);
      }
    }
    if (!progressed) {
      unsigned at_block = 0, at_warp = 0;
      for (auto& f : b.fibers) {
        if (f.state != FiberState::waiting) continue;
        if (f.wait_generation == &b.barrier.generation) ++at_block;
        else ++at_warp;
      }
      std::fprintf(stderr,
                   "cugrad CUDA emulator: deadlock in kernel %s, block (%u,%u,%u): %u of %u threads wait at "
                   "__syncthreads and %u at warp primitives that can never complete\n",
                   kernel_name(s.kernel).c_str(), block_idx.x, block_idx.y, block_idx.z, at_block, b.live, at_warp);
      std::abort();
    }
  }
#if CUGRAD_EMU_TSAN
  // The block is over: it happens before the next block and the host code after the launch.
  tsan::acquire(&s.block_done);
  for (const Stack& st : retired) s.stacks.give(st);
#endif
}

std::mutex g_launch_mutex;

}  // namespace

ThreadCtx* current() { return &sched().current->ctx; }

void misaligned_access(const void* p, std::size_t size) {
  Scheduler& s = sched();
  std::fprintf(stderr,
               "cugrad CUDA emulator: kernel %s, block (%u,%u,%u), thread %u: misaligned address %p for a %zu-byte "
               "access (a GPU faults here: cudaErrorMisalignedAddress)\n",
               kernel_name(s.kernel).c_str(), s.current->ctx.block_idx.x, s.current->ctx.block_idx.y,
               s.current->ctx.block_idx.z, s.current->ctx.linear, p, size);
  std::abort();
}

void syncthreads() {
  tsan::Invisible hide;  // the emulator's bookkeeping
  Scheduler& s = sched();
  arrive(s.block.barrier, s.block.live, true);
}

void syncwarp(unsigned mask) {
  tsan::Invisible hide;  // the emulator's bookkeeping
  Scheduler& s = sched();
  Warp& w = s.block.warps[s.current->ctx.linear / 32];
  w.mask = mask;
  arrive(w.barrier, warp_expected(w), true);
}

std::uint64_t warp_exchange(unsigned mask, std::uint64_t bits, int src) {
  tsan::Invisible hide;  // the emulator's bookkeeping
  Scheduler& s = sched();
  const unsigned lane = s.current->ctx.linear % 32;
  Warp& w = s.block.warps[s.current->ctx.linear / 32];
  if (!(mask & (1u << lane))) {
    std::fprintf(stderr, "cugrad CUDA emulator: kernel %s: a lane not in its shuffle mask 0x%08x called it\n",
                 kernel_name(s.kernel).c_str(), mask);
    std::abort();
  }
  w.mask = mask;
  w.slots[lane] = bits;
  arrive(w.barrier, warp_expected(w), false);
  // Out of the width segment: the lane's own value, as CUDA defines. A lane that does not exist,
  // has exited or is outside the mask: undefined on the GPU, all one bits here (NaN, -1).
  std::uint64_t r = bits;
  if (src >= 0) r = src < 32 && (mask & w.live & (1u << src)) ? w.slots[src] : ~std::uint64_t{0};
  w.mask = mask;
  arrive(w.barrier, warp_expected(w), false);
  return r;
}

unsigned warp_ballot(unsigned mask, bool predicate) {
  tsan::Invisible hide;  // the emulator's bookkeeping
  Scheduler& s = sched();
  const unsigned lane = s.current->ctx.linear % 32;
  Warp& w = s.block.warps[s.current->ctx.linear / 32];
  w.mask = mask;
  w.slots[lane] = predicate ? 1 : 0;
  arrive(w.barrier, warp_expected(w), false);
  unsigned r = 0;
  for (unsigned l = 0; l < 32; ++l)
    if ((mask & w.live & (1u << l)) && w.slots[l]) r |= 1u << l;
  w.mask = mask;
  arrive(w.barrier, warp_expected(w), false);
  return r;
}

void* dynamic_shared_memory() {
  tsan::Invisible hide;
  return sched().block.dynamic.data();
}

void shared_declared(void* p, std::size_t bytes) {
  tsan::Invisible hide;  // the emulator's bookkeeping
  Block& b = sched().block;
  if (std::find(b.declared.begin(), b.declared.end(), p) != b.declared.end()) return;
  b.declared.push_back(p);
  std::memset(p, 0xFF, bytes);
  b.static_bytes += bytes;
  // On a GPU the launch itself fails (cudaErrorInvalidValue); only here are the static sizes known.
  const std::size_t limit = state::shared_memory_limit(sched().kernel);
  if (b.static_bytes + b.dynamic_bytes > limit) {
    std::fprintf(
        stderr,
        "cugrad CUDA emulator: kernel %s: a block uses %zu bytes of static and %zu of dynamic shared memory, "
        "more than the %zu bytes its kernel may use (%s); a GPU fails this launch with "
        "cudaErrorInvalidValue\n",
        kernel_name(sched().kernel).c_str(), b.static_bytes, b.dynamic_bytes, limit,
        limit == static_cast<std::size_t>(state::kSharedPerBlock)
            ? "48 KB without cudaFuncAttributeMaxDynamicSharedMemorySize"
            : "the opt-in limit");
    std::abort();
  }
}

long long clock_ticks() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

namespace {

void execute(const void* kernel, dim3 grid, dim3 block, std::size_t dynamic_smem, KernelBody body, void* closure) {
  // Static shared memory: one kernel at a time. For the race check the lock orders nothing
  // (CUGRAD_EMU_SHARED_STORAGE gives each OS thread its own shared memory instead).
  struct LaunchLock {
    LaunchLock() {
      tsan::Unordered unordered;
      g_launch_mutex.lock();
    }
    ~LaunchLock() {
      tsan::Unordered unordered;
      g_launch_mutex.unlock();
    }
  } lock;
  static thread_local Scheduler scheduler;
  if (t_sched) {
    std::fprintf(stderr, "cugrad CUDA emulator: a kernel launched another kernel\n");
    std::abort();
  }
  t_sched = &scheduler;
  scheduler.body = body;
  scheduler.closure = closure;
  scheduler.kernel = kernel;
  const bool rev = reverse_order();
  const std::uint64_t blocks = static_cast<std::uint64_t>(grid.x) * grid.y * grid.z;
  for (std::uint64_t k = 0; k < blocks; ++k) {
    const std::uint64_t i = rev ? blocks - 1 - k : k;
    const uint3 idx{static_cast<unsigned>(i % grid.x), static_cast<unsigned>((i / grid.x) % grid.y),
                    static_cast<unsigned>(i / (static_cast<std::uint64_t>(grid.x) * grid.y))};
    run_block(scheduler, grid, block, idx, dynamic_smem);
  }
  t_sched = nullptr;
}

}  // namespace

cudaError_t run_launch(const void* kernel, dim3 grid, dim3 block, std::size_t dynamic_smem, cudaStream_t stream,
                       KernelBody body, void* closure, void (*destroy)(void*)) {
  const cudaError_t err = state::check_launch(kernel, grid, block, dynamic_smem, stream);
  if (err != cudaSuccess) {
    destroy(closure);
    return state::fail(err);
  }
  state::count_launch();
  trace::count_kernel(kernel);
  if (state::null_compute()) {
    destroy(closure);
    return cudaSuccess;
  }
  // The closure (the launch's copy of the arguments) lives as long as the op: one run, or every
  // launch of a graph that captured it.
  std::shared_ptr<void> owned(closure, destroy);
  const cudaError_t queued = state::submit(stream, [=, owned = std::move(owned)] {
    execute(kernel, grid, block, dynamic_smem, body, owned.get());
  });
  return queued == cudaSuccess ? cudaSuccess : state::fail(queued);
}

}  // namespace cugrad_emu

// Not instrumented: the entry never returns, so the race check's record of the calls a fiber made
// would grow by one frame for every block the fiber ran.
extern "C" __attribute__((no_sanitize_thread)) void cugrad_emu_fiber_entry() {
  using namespace cugrad_emu;
  Scheduler& s = *t_sched;
  s.body(s.closure);
  s.current->state = FiberState::done;
  void** save = &s.current->sp;
  void* to = s.scheduler_sp;
#if CUGRAD_EMU_TSAN
  tsan::release(&s.block_done);
  tsan::switch_to(s.tsan_scheduler, false);
#endif
  cugrad_emu_switch(save, to);
  std::abort();  // a finished fiber is never resumed
}
