// cugrad CUDA emulator: device-side half. Lets the library's CUDA C++ (cuda/*.cu, rewritten by
// tests/emu/cu2cpp.py) compile with the host compiler and run on the CPU, so the GPU code paths
// and the GPU test suite execute on a machine without a GPU. A test tool, never part of the
// library: it says nothing about speed. By default it runs every stream synchronously;
// CUGRAD_EMU_ASYNC=1 gives each stream a worker thread, and the race check (emu_tsan.h,
// CUGRAD_EMU_RACECHECK=ON) then reports races within a block and between streams.
//
// Execution model of a launch: blocks run one after another on the launching OS thread; the
// threads of a block run as cooperative fibers that switch only at __syncthreads, warp
// shuffles/votes and __syncwarp. Warps are 32 consecutive linear thread ids, as on the GPU.
// A thread that exits no longer counts toward barriers (as on Volta and later). A barrier that
// can never complete aborts with the kernel's name. Shared memory is poisoned with 0xFF bytes at
// the start of every block, so a read before any write shows up as NaN / -1.
#pragma once

#include <cuda_runtime.h>

#include <atomic>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <algorithm>
#include <bit>
#include <tuple>
#include <type_traits>
#include <utility>

#include "tests/emu/emu_tsan.h"

// Device code guarded by `#if defined(__CUDACC__) || defined(CUGRAD_CUDA_EMULATOR)` compiles here.
#define CUGRAD_CUDA_EMULATOR 1

namespace cugrad_emu {

struct Barrier {
  unsigned arrived = 0;
  unsigned generation = 0;
  // The race check's synchronization objects (emu_tsan.h), one per parity of the generation: a
  // thread released from generation g may arrive at g + 1 before the last one left g.
  unsigned char sync[2] = {};
};

struct ThreadCtx {
  uint3 thread_idx{};
  uint3 block_idx{};
  dim3 block_dim{};
  dim3 grid_dim{};
  unsigned linear = 0;  // linear thread id in the block
};

// The thread (fiber) now running on this OS thread; null outside a kernel.
ThreadCtx* current();

// Barriers and warp exchange; implemented in emu_runtime.cpp.
void syncthreads();
// A GPU faults on an access that is not aligned to its size (cudaErrorMisalignedAddress);
// x86 would not. Reports the kernel and the address, and aborts.
[[noreturn]] void misaligned_access(const void* p, std::size_t size);
template <class T>
inline const T* aligned_for_access(const T* p) {
  if (reinterpret_cast<std::uintptr_t>(p) % alignof(T) != 0) misaligned_access(p, sizeof(T));
  return p;
}
void syncwarp(unsigned mask);
// Publishes `bits` (up to 8 bytes) for this lane, waits for the lanes in `mask`, and returns the
// value lane `src` published (or this lane's own when `src` is out of range or not in `mask`).
std::uint64_t warp_exchange(unsigned mask, std::uint64_t bits, int src);
unsigned warp_ballot(unsigned mask, bool predicate);
// Dynamic shared memory of the running block.
void* dynamic_shared_memory();
// Called where a static __shared__ variable is declared: poisons it once per block.
void shared_declared(void* p, std::size_t bytes);
long long clock_ticks();

using KernelBody = void (*)(void* closure);
// Queues a launch on `stream` (runs it at once in synchronous mode): the grid of `block`-sized
// blocks, each thread calling body(closure); destroy(closure) afterwards. Returns the launch's
// configuration error, which is also recorded for cudaGetLastError.
cudaError_t run_launch(const void* kernel, dim3 grid, dim3 block, std::size_t dynamic_smem, cudaStream_t stream,
                       KernelBody body, void* closure, void (*destroy)(void*));

template <class T>
struct DecayParam {
  using type = std::remove_cv_t<std::remove_reference_t<T>>;
};

template <class... P>
class Launch {
 public:
  Launch(void (*kernel)(P...), dim3 grid, dim3 block, std::size_t smem, cudaStream_t stream)
      : kernel_(kernel), grid_(grid), block_(block), smem_(smem), stream_(stream) {}

  template <class... A>
  void operator()(A&&... args) const {
    static_assert(sizeof...(A) == sizeof...(P), "kernel launched with the wrong number of arguments");
    struct Closure {
      void (*kernel)(P...);
      std::tuple<typename DecayParam<P>::type...> args;
    };
    // The arguments are copied at the launch, as CUDA does; each thread gets its own copy of
    // the parameters (kernels may modify them).
    auto* closure = new Closure{kernel_, std::tuple<typename DecayParam<P>::type...>(std::forward<A>(args)...)};
    run_launch(reinterpret_cast<const void*>(kernel_), grid_, block_, smem_, stream_,
               [](void* c) {
                 auto* cl = static_cast<Closure*>(c);
                 std::apply(cl->kernel, cl->args);
               },
               closure, [](void* c) { delete static_cast<Closure*>(c); });
  }

 private:
  void (*kernel_)(P...);
  dim3 grid_, block_;
  std::size_t smem_;
  cudaStream_t stream_;
};

template <class... P>
Launch<P...> launch(void (*kernel)(P...), dim3 grid, dim3 block, std::size_t smem = 0, cudaStream_t stream = nullptr) {
  return Launch<P...>(kernel, grid, block, smem, stream);
}

template <class T>
T* dynamic_shared() {
  return static_cast<T*>(dynamic_shared_memory());
}

inline unsigned lane_id() { return current()->linear % 32u; }

}  // namespace cugrad_emu

// ---- built-in variables ------------------------------------------------------------------------
#define threadIdx (::cugrad_emu::current()->thread_idx)
#define blockIdx (::cugrad_emu::current()->block_idx)
#define blockDim (::cugrad_emu::current()->block_dim)
#define gridDim (::cugrad_emu::current()->grid_dim)
#ifndef warpSize
#define warpSize 32
#endif

// ---- qualifiers the host compiler does not know ------------------------------------------------
#undef __launch_bounds__
#define __launch_bounds__(...)
#undef __shared__
#define __shared__ static
// What cu2cpp.py makes a `__shared__` declaration. The blocks of a launch run one at a time on
// one OS thread, and launches one at a time (a lock), so one static serves every block. The
// race check gives each OS thread (each stream's worker with CUGRAD_EMU_ASYNC=1) its own copy
// instead, so that its lock can order nothing: kernels of two streams are then unordered unless
// an event or a synchronization orders them, as on a GPU.
#if CUGRAD_EMU_TSAN
#define CUGRAD_EMU_SHARED_STORAGE static thread_local
#else
#define CUGRAD_EMU_SHARED_STORAGE static
#endif

// ---- synchronization, warp primitives ----------------------------------------------------------
inline void __syncthreads() { ::cugrad_emu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::cugrad_emu::syncwarp(mask); }
inline void __threadfence() {}
inline void __threadfence_block() {}
inline void __threadfence_system() {}

namespace cugrad_emu {
template <class T>
T exchange(unsigned mask, T v, int src) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffle of an unsupported type");
  std::uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = warp_exchange(mask, bits, src);
  T r;
  std::memcpy(&r, &bits, sizeof(T));
  return r;
}
}  // namespace cugrad_emu

template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const int lane = static_cast<int>(::cugrad_emu::lane_id());
  const int src = (lane % width) + static_cast<int>(delta) < width ? lane + static_cast<int>(delta) : -1;
  return ::cugrad_emu::exchange(mask, v, src);
}
template <class T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const int lane = static_cast<int>(::cugrad_emu::lane_id());
  const int src = (lane % width) >= static_cast<int>(delta) ? lane - static_cast<int>(delta) : -1;
  return ::cugrad_emu::exchange(mask, v, src);
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  const int lane = static_cast<int>(::cugrad_emu::lane_id());
  const int src = lane ^ lane_mask;
  const bool same_segment = src / width == lane / width;
  return ::cugrad_emu::exchange(mask, v, same_segment ? src : -1);
}
template <class T>
T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
  const int lane = static_cast<int>(::cugrad_emu::lane_id());
  return ::cugrad_emu::exchange(mask, v, (lane / width) * width + ((src_lane % width) + width) % width);
}
inline unsigned __ballot_sync(unsigned mask, int predicate) { return ::cugrad_emu::warp_ballot(mask, predicate != 0); }
inline int __any_sync(unsigned mask, int predicate) { return ::cugrad_emu::warp_ballot(mask, predicate != 0) != 0; }
inline int __all_sync(unsigned mask, int predicate) {
  return ::cugrad_emu::warp_ballot(mask, predicate != 0) == ::cugrad_emu::warp_ballot(mask, true);
}
inline unsigned __activemask() { return ::cugrad_emu::warp_ballot(0xffffffffu, true); }

// ---- loads and stores with cache hints: plain accesses here, checked for alignment ---------------
template <class T>
T __ldg(const T* p) { return *::cugrad_emu::aligned_for_access(p); }
template <class T>
T __ldcg(const T* p) { return *::cugrad_emu::aligned_for_access(p); }
template <class T>
T __ldcs(const T* p) { return *::cugrad_emu::aligned_for_access(p); }
template <class T>
T __ldca(const T* p) { return *::cugrad_emu::aligned_for_access(p); }
template <class T>
T __ldlu(const T* p) { return *::cugrad_emu::aligned_for_access(p); }
template <class T>
void __stcg(T* p, T v) { *const_cast<T*>(::cugrad_emu::aligned_for_access(p)) = v; }
template <class T>
void __stcs(T* p, T v) { *const_cast<T*>(::cugrad_emu::aligned_for_access(p)) = v; }
template <class T>
void __stwt(T* p, T v) { *const_cast<T*>(::cugrad_emu::aligned_for_access(p)) = v; }

// ---- asynchronous copies (cuda_pipeline_primitives.h): done at once ---------------------------
inline void __pipeline_memcpy_async(void* dst, const void* src, std::size_t bytes, std::size_t zfill = 0) {
  std::memcpy(dst, src, bytes - zfill);
  if (zfill) std::memset(static_cast<char*>(dst) + (bytes - zfill), 0, zfill);
}
inline void __pipeline_commit() {}
inline void __pipeline_wait_prior(std::size_t) {}

// ---- atomics: one OS thread runs all fibers of a launch, so a plain read-modify-write; for the
// race check (emu_tsan.h) a relaxed atomic one, as CUDA's atomics are ----------------------------
namespace cugrad_emu {
template <class T, class F>
T atomic_update(T* p, F f) {
#if CUGRAD_EMU_TSAN
  std::atomic_ref<T> a(*p);
  T old = a.load(std::memory_order_relaxed);
  while (!a.compare_exchange_weak(old, f(old), std::memory_order_relaxed)) {
  }
  return old;
#else
  T old = *p;
  *p = f(old);
  return old;
#endif
}
}  // namespace cugrad_emu
template <class T>
T atomicAdd(T* p, T v) {
  return ::cugrad_emu::atomic_update(p, [v](T o) { return static_cast<T>(o + v); });
}
template <class T>
T atomicSub(T* p, T v) {
  return ::cugrad_emu::atomic_update(p, [v](T o) { return static_cast<T>(o - v); });
}
template <class T>
T atomicMax(T* p, T v) {
  return ::cugrad_emu::atomic_update(p, [v](T o) { return std::max(o, v); });
}
template <class T>
T atomicMin(T* p, T v) {
  return ::cugrad_emu::atomic_update(p, [v](T o) { return std::min(o, v); });
}
template <class T>
T atomicExch(T* p, T v) {
  return ::cugrad_emu::atomic_update(p, [v](T) { return v; });
}
template <class T>
T atomicCAS(T* p, T compare, T v) {
  return ::cugrad_emu::atomic_update(p, [compare, v](T o) { return o == compare ? v : o; });
}
template <class T>
T atomicOr(T* p, T v) {
  return ::cugrad_emu::atomic_update(p, [v](T o) { return static_cast<T>(o | v); });
}
template <class T>
T atomicAnd(T* p, T v) {
  return ::cugrad_emu::atomic_update(p, [v](T o) { return static_cast<T>(o & v); });
}
inline unsigned atomicInc(unsigned* p, unsigned limit) {
  return ::cugrad_emu::atomic_update(p, [limit](unsigned o) { return o >= limit ? 0u : o + 1u; });
}

// ---- intrinsics and device math the host library lacks -----------------------------------------
inline float __int_as_float(int v) { return std::bit_cast<float>(v); }
inline int __float_as_int(float v) { return std::bit_cast<int>(v); }
inline unsigned __float_as_uint(float v) { return std::bit_cast<unsigned>(v); }
inline float __uint_as_float(unsigned v) { return std::bit_cast<float>(v); }
inline double __longlong_as_double(long long v) { return std::bit_cast<double>(v); }
inline long long __double_as_longlong(double v) { return std::bit_cast<long long>(v); }
inline int __popc(unsigned v) { return std::popcount(v); }
inline int __popcll(unsigned long long v) { return std::popcount(v); }
inline int __clz(unsigned v) { return v ? std::countl_zero(v) : 32; }
inline int __ffs(unsigned v) { return v ? std::countr_zero(v) + 1 : 0; }
inline float rsqrtf(float v) { return 1.0f / std::sqrt(v); }
inline double rsqrt(double v) { return 1.0 / std::sqrt(v); }
inline float __expf(float v) { return std::exp(v); }
inline float __logf(float v) { return std::log(v); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float v) { return 1.0f / v; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __saturatef(float v) { return v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v); }
inline long long clock64() { return ::cugrad_emu::clock_ticks(); }
using std::isfinite;
using std::isinf;
using std::isnan;
inline int max(int a, int b) { return a > b ? a : b; }
inline int min(int a, int b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline long min(long a, long b) { return a < b ? a : b; }
inline float max(float a, float b) { return std::fmax(a, b); }
inline float min(float a, float b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }

// ---- the runtime's template wrappers, which cuda_runtime.h declares only for nvcc ------------
template <class T>
cudaError_t cudaGetSymbolAddress(void** ptr, const T& symbol) {
  return ::cudaGetSymbolAddress(ptr, static_cast<const void*>(&symbol));
}
template <class... P>
cudaError_t cudaFuncSetAttribute(void (*func)(P...), cudaFuncAttribute attr, int value) {
  return ::cudaFuncSetAttribute(reinterpret_cast<const void*>(func), attr, value);
}
template <class... P>
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, void (*func)(P...), int block_size,
                                                          std::size_t dynamic_smem) {
  return ::cudaOccupancyMaxActiveBlocksPerMultiprocessor(blocks, reinterpret_cast<const void*>(func), block_size,
                                                         dynamic_smem);
}
