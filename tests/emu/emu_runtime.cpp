// cugrad CUDA emulator: the CUDA runtime API functions the library calls, on the CPU. Device
// memory is host memory (each allocation its own malloc, poisoned with 0xFF bytes, so that
// AddressSanitizer sees kernel overruns and a read of an unwritten output shows up as NaN);
// by default every operation completes before its call returns (streams and events then only
// check their handles). With CUGRAD_EMU_ASYNC=1 every stream is a worker thread running its
// work in order, asynchronously to the host and to the other streams, with CUDA's rules for
// events, cudaStreamWaitEvent, pinned versus pageable copies and stream-ordered frees; a
// missing wait between streams, or a host read without a synchronization, then gives wrong
// values (CUGRAD_EMU_ASYNC_DELAY_US=N adds a random delay of up to N microseconds before each
// operation, to make such races likely). Copies and memsets check that their "device" side lies inside one live device
// allocation (or a mapped host buffer, or a __device__ symbol), so a host pointer handed to a
// device copy, an overrun, or a use after free is an error here instead of silence.
//
// Environment: CUGRAD_EMU_DEVICES (devices, default 1), CUGRAD_EMU_SMS (multiprocessors per
// device, default 8), CUGRAD_EMU_MEMORY_MIB (device memory, default 16384), CUGRAD_EMU_ORDER
// (forward|reverse thread and block order, see emu_scheduler.cpp), CUGRAD_EMU_ASYNC,
// CUGRAD_EMU_ASYNC_DELAY_US (above).
#include <cuda_profiler_api.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <functional>
#include <memory>
#include <random>
#include <thread>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>

#include "tests/emu/emu_state.h"
#include "tests/emu/emu_trace.h"

namespace cugrad_emu::state {
namespace {

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}

}  // namespace

bool null_compute() {
  static const bool on = env_int("CUGRAD_EMU_NULL", 0) == 1;
  return on;
}

namespace {

int device_total() {
  static const int n = std::max(1, env_int("CUGRAD_EMU_DEVICES", 1));
  return n;
}
int sm_count() {
  static const int n = std::max(1, env_int("CUGRAD_EMU_SMS", 8));
  return n;
}
std::size_t memory_limit() {
  static const std::size_t n = static_cast<std::size_t>(std::max(64, env_int("CUGRAD_EMU_MEMORY_MIB", 16384))) << 20;
  return n;
}

struct Allocation {
  std::size_t size = 0;
  int device = 0;
  bool host = false;    // pinned host memory
  bool mapped = false;  // host memory visible to kernels
};

bool async_mode() {
  static const bool on = env_int("CUGRAD_EMU_ASYNC", 0) != 0;
  return on;
}

// One stream's work, run in order by its own thread (asynchronous mode only).
class Queue {
 public:
  Queue() : worker_([this] { run(); }) {}
  ~Queue() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    worker_.join();  // runs what is queued first
  }
  void push(std::function<void()> op) {
    {
      std::lock_guard lock(mu_);
      ops_.push_back(std::move(op));
      ++submitted_;
    }
    cv_.notify_all();
  }
  void drain() {
    std::unique_lock lock(mu_);
    const std::uint64_t target = submitted_;
    cv_.wait(lock, [&] { return completed_ >= target; });
  }
  bool idle() {
    std::lock_guard lock(mu_);
    return completed_ == submitted_;
  }

 private:
  void run() {
    static const int delay_us = env_int("CUGRAD_EMU_ASYNC_DELAY_US", 0);
    std::minstd_rand rng(static_cast<unsigned>(reinterpret_cast<std::uintptr_t>(this)));
    for (;;) {
      std::function<void()> op;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return stopping_ || !ops_.empty(); });
        if (ops_.empty()) return;
        op = std::move(ops_.front());
        ops_.pop_front();
      }
      if (delay_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(rng() % delay_us));
      op();
      {
        std::lock_guard lock(mu_);
        ++completed_;
      }
      cv_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> ops_;
  std::uint64_t submitted_ = 0, completed_ = 0;
  bool stopping_ = false;
  std::thread worker_;
};

struct Stream {
  int device = 0;
  std::unique_ptr<Queue> queue;  // asynchronous mode
};
// One cudaEventRecord: what a later query, synchronize or cudaStreamWaitEvent refers to (CUDA
// captures the most recent record at the call; re-recording the event does not change what an
// earlier wait waits for).
struct Record {
  bool complete = false;
  std::chrono::steady_clock::time_point at{};
};
struct Event {
  bool timing = true;
  std::shared_ptr<Record> last;  // null until recorded; guarded by event_mu()
};

std::mutex& event_mu() {
  static std::mutex* m = new std::mutex;
  return *m;
}
std::condition_variable& event_cv() {
  static std::condition_variable* cv = new std::condition_variable;
  return *cv;
}

// The event's most recent record (null when never recorded).
std::shared_ptr<Record> last_record(const Event& ev) {
  std::lock_guard lock(event_mu());
  return ev.last;
}

bool record_complete(const std::shared_ptr<Record>& r) {
  std::lock_guard lock(event_mu());
  return !r || r->complete;
}

void wait_record(const std::shared_ptr<Record>& r) {
  if (!r) return;
  std::unique_lock lock(event_mu());
  event_cv().wait(lock, [&] { return r->complete; });
}
struct Pool {
  int device = 0;
  std::uint64_t release_threshold = 0;
};

struct Global {
  std::mutex mu;
  std::map<std::uintptr_t, Allocation> allocations;  // by start address
  std::set<const void*> symbols;
  std::set<Stream*> streams;
  std::map<Event*, std::shared_ptr<Event>> events;
  Queue* legacy = nullptr;  // the null stream's queue (asynchronous mode)
  std::unordered_map<const void*, int> max_dynamic_smem;
  std::size_t used[8] = {};
  std::size_t peak[8] = {};
  Pool pools[8];
  std::atomic<std::uint64_t> launches{0};
};

Global& g() {
  static Global* global = new Global;  // never destroyed: static destructors may still free memory
  return *global;
}

thread_local cudaError_t t_last = cudaSuccess;
thread_local int t_device = 0;
thread_local bool t_in_host_fn = false;

cudaError_t ok() { return t_in_host_fn ? fail(cudaErrorNotPermitted) : cudaSuccess; }

bool is_legacy(cudaStream_t s) { return s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread; }

bool valid_stream(cudaStream_t s) {
  if (is_legacy(s)) return true;
  std::lock_guard lock(g().mu);
  return g().streams.count(reinterpret_cast<Stream*>(s)) != 0;
}

// The queue that runs `s`'s work; null in synchronous mode (work then runs in the caller).
Queue* queue_of(cudaStream_t s) {
  if (!async_mode()) return nullptr;
  std::lock_guard lock(g().mu);
  if (is_legacy(s)) {
    if (!g().legacy) g().legacy = new Queue;  // lives until the process exits
    return g().legacy;
  }
  auto* st = reinterpret_cast<Stream*>(s);
  return g().streams.count(st) ? st->queue.get() : nullptr;
}

std::shared_ptr<Event> event_of(cudaEvent_t e) {
  std::lock_guard lock(g().mu);
  auto it = g().events.find(reinterpret_cast<Event*>(e));
  return it == g().events.end() ? nullptr : it->second;
}


// The allocation holding [p, p + n), or null.
const Allocation* find_allocation(const void* p, std::size_t n, std::uintptr_t* start = nullptr) {
  auto& m = g().allocations;
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  auto it = m.upper_bound(a);
  if (it == m.begin()) return nullptr;
  --it;
  if (a < it->first || a + n > it->first + it->second.size) return nullptr;
  if (start) *start = it->first;
  return &it->second;
}

bool device_range(const void* p, std::size_t n) {
  if (n == 0) return true;
  std::lock_guard lock(g().mu);
  if (g().symbols.count(p)) return true;
  const Allocation* a = find_allocation(p, n);
  return a && (!a->host || a->mapped);
}

bool host_range(const void* p, std::size_t n) {
  if (n == 0) return true;
  std::lock_guard lock(g().mu);
  const Allocation* a = find_allocation(p, n);
  return !a || a->host;
}

bool pinned(const void* p) {
  std::lock_guard lock(g().mu);
  const Allocation* a = find_allocation(p, 1);
  return a && a->host;
}

bool in_device_allocation(const void* p) {
  std::lock_guard lock(g().mu);
  const Allocation* a = find_allocation(p, 1);
  return (a && !a->host) || g().symbols.count(p);
}

// A copy's sides, as its kind says they are.
cudaError_t check_copy(void* dst, const void* src, std::size_t n, cudaMemcpyKind kind) {
  bool good = true;
  switch (kind) {
    case cudaMemcpyHostToDevice: good = host_range(src, n) && device_range(dst, n); break;
    case cudaMemcpyDeviceToHost: good = device_range(src, n) && host_range(dst, n); break;
    case cudaMemcpyDeviceToDevice: good = device_range(src, n) && device_range(dst, n); break;
    case cudaMemcpyHostToHost: good = host_range(src, n) && host_range(dst, n); break;
    case cudaMemcpyDefault: break;
    default: return fail(cudaErrorInvalidMemcpyDirection);
  }
  if (!good) {
    std::fprintf(stderr, "cugrad CUDA emulator: cudaMemcpy of %zu bytes, kind %d, %p -> %p: a side is not where "
                         "the kind says (not inside one live allocation)\n", n, static_cast<int>(kind), src, dst);
    return fail(cudaErrorInvalidValue);
  }
  return cudaSuccess;
}

void* allocate(std::size_t size, int device, bool host, bool mapped) {
  const std::size_t n = std::max<std::size_t>(size, 1);
  // Exactly n bytes (256-aligned, as CUDA's allocations), so AddressSanitizer's redzone starts
  // right after the last byte a kernel may touch.
  void* p = nullptr;
  if (posix_memalign(&p, 256, n) != 0) return nullptr;
  // Poison fresh memory (bounded, so huge allocations stay lazily mapped).
  if (!null_compute()) std::memset(p, 0xFF, std::min<std::size_t>(n, std::size_t{256} << 20));
  std::lock_guard lock(g().mu);
  g().allocations[reinterpret_cast<std::uintptr_t>(p)] = Allocation{size, device, host, mapped};
  return p;
}

cudaError_t release(void* p, bool host) {
  if (!p) return cudaSuccess;
  {
    std::lock_guard lock(g().mu);
    auto it = g().allocations.find(reinterpret_cast<std::uintptr_t>(p));
    if (it == g().allocations.end() || it->second.host != host) {
      std::fprintf(stderr, "cugrad CUDA emulator: %s of %p, which is no live %s allocation\n",
                   host ? "cudaFreeHost" : "cudaFree", p, host ? "pinned host" : "device");
      return fail(cudaErrorInvalidValue);
    }
    if (!host) g().used[it->second.device] -= it->second.size;
    g().allocations.erase(it);
  }
  std::free(p);
  return cudaSuccess;
}

}  // namespace

void submit(cudaStream_t stream, std::function<void()> op) {
  if (Queue* q = queue_of(stream)) q->push(std::move(op));
  else op();
}

void wait_stream(cudaStream_t stream) {
  if (Queue* q = queue_of(stream)) q->drain();
}

void wait_all() {
  if (!async_mode()) return;
  std::vector<Queue*> queues;
  {
    std::lock_guard lock(g().mu);
    for (Stream* st : g().streams) queues.push_back(st->queue.get());
    if (g().legacy) queues.push_back(g().legacy);
  }
  for (Queue* q : queues) q->drain();
}

cudaError_t fail(cudaError_t err) {
  t_last = err;
  return err;
}

void count_launch() { g().launches.fetch_add(1, std::memory_order_relaxed); }
std::uint64_t launches() { return g().launches.load(); }

cudaError_t check_launch(const void* kernel, dim3 grid, dim3 block, std::size_t dynamic_smem, cudaStream_t stream) {
  if (t_in_host_fn) return cudaErrorNotPermitted;
  const std::uint64_t threads = static_cast<std::uint64_t>(block.x) * block.y * block.z;
  if (threads == 0 || threads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64) {
    std::fprintf(stderr, "cugrad CUDA emulator: launch with block (%u,%u,%u)\n", block.x, block.y, block.z);
    return cudaErrorInvalidConfiguration;
  }
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535) {
    std::fprintf(stderr, "cugrad CUDA emulator: launch with grid (%u,%u,%u)\n", grid.x, grid.y, grid.z);
    return cudaErrorInvalidConfiguration;
  }
  int limit = kSharedPerBlock;
  {
    std::lock_guard lock(g().mu);
    auto it = g().max_dynamic_smem.find(kernel);
    if (it != g().max_dynamic_smem.end()) limit = it->second;
  }
  if (dynamic_smem > static_cast<std::size_t>(limit)) {
    std::fprintf(stderr, "cugrad CUDA emulator: launch with %zu bytes of dynamic shared memory, limit %d\n",
                 dynamic_smem, limit);
    return cudaErrorInvalidValue;
  }
  if (!valid_stream(stream)) return cudaErrorInvalidResourceHandle;
  return cudaSuccess;
}

std::size_t shared_memory_limit(const void* kernel) {
  std::lock_guard lock(g().mu);
  return g().max_dynamic_smem.contains(kernel) ? kSharedPerBlockOptin : kSharedPerBlock;
}

}  // namespace cugrad_emu::state

using namespace cugrad_emu::state;

// ---- errors ------------------------------------------------------------------------------------
cudaError_t cudaGetLastError() {
  const cudaError_t e = t_last;
  t_last = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return t_last; }

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorNotPermitted: return "cudaErrorNotPermitted";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
    default: return "cudaErrorUnknown";
  }
}
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotPermitted: return "operation not permitted";
    default: return "unknown error (emulated)";
  }
}

// ---- devices -----------------------------------------------------------------------------------
cudaError_t cudaGetDeviceCount(int* count) {
  if (!count) return fail(cudaErrorInvalidValue);
  *count = device_total();
  return ok();
}
cudaError_t cudaGetDevice(int* device) {
  if (!device) return fail(cudaErrorInvalidValue);
  *device = t_device;
  return ok();
}
cudaError_t cudaSetDevice(int device) {
  if (device < 0 || device >= device_total()) return fail(cudaErrorInvalidDevice);
  t_device = device;
  return ok();
}
cudaError_t cudaDeviceSynchronize() {
  cugrad_emu::trace::count(__func__);
  wait_all();
  return ok();
}
cudaError_t cudaDriverGetVersion(int* v) {
  *v = 13000;
  return ok();
}
cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = 13000;
  return ok();
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int device) {
  if (!p) return fail(cudaErrorInvalidValue);
  if (device < 0 || device >= device_total()) return fail(cudaErrorInvalidDevice);
  std::memset(p, 0, sizeof *p);
  std::snprintf(p->name, sizeof p->name, "cugrad CUDA emulator (CPU) #%d", device);
  p->totalGlobalMem = memory_limit();
  p->sharedMemPerBlock = kSharedPerBlock;
  p->sharedMemPerBlockOptin = kSharedPerBlockOptin;
  p->sharedMemPerMultiprocessor = 228 * 1024;
  p->reservedSharedMemPerBlock = 1024;
  p->regsPerBlock = 65536;
  p->regsPerMultiprocessor = 65536;
  p->warpSize = 32;
  p->maxThreadsPerBlock = 1024;
  p->maxThreadsDim[0] = 1024;
  p->maxThreadsDim[1] = 1024;
  p->maxThreadsDim[2] = 64;
  p->maxGridSize[0] = 2147483647;
  p->maxGridSize[1] = 65535;
  p->maxGridSize[2] = 65535;
  p->major = 9;
  p->minor = 0;
  p->multiProcessorCount = sm_count();
  p->maxThreadsPerMultiProcessor = 2048;
  p->maxBlocksPerMultiProcessor = 32;
  p->l2CacheSize = 50 * 1024 * 1024;
  p->memoryBusWidth = 5120;
  p->canMapHostMemory = 1;
  p->unifiedAddressing = 1;
  p->concurrentKernels = 1;
  p->asyncEngineCount = 2;
  p->streamPrioritiesSupported = 1;
  p->memoryPoolsSupported = 1;
  p->pciBusID = device;
  return ok();
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (!value) return fail(cudaErrorInvalidValue);
  if (device < 0 || device >= device_total()) return fail(cudaErrorInvalidDevice);
  switch (attr) {
    case cudaDevAttrClockRate: *value = 1000000; break;  // kHz: clock64() counts nanoseconds
    case cudaDevAttrMemoryClockRate: *value = 2619000; break;
    case cudaDevAttrComputeCapabilityMajor: *value = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; break;
    case cudaDevAttrMultiProcessorCount: *value = sm_count(); break;
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; break;
    case cudaDevAttrWarpSize: *value = 32; break;
    case cudaDevAttrMaxSharedMemoryPerBlock:
      *value = kSharedPerBlock;
      break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
      *value = kSharedPerBlockOptin;
      break;
    case cudaDevAttrMaxThreadsPerMultiProcessor: *value = 2048; break;
    case cudaDevAttrGlobalMemoryBusWidth: *value = 5120; break;
    case cudaDevAttrL2CacheSize: *value = 50 * 1024 * 1024; break;
    case cudaDevAttrMemoryPoolsSupported: *value = 1; break;
    default:
      std::fprintf(stderr, "cugrad CUDA emulator: cudaDeviceGetAttribute(%d) is not emulated\n", static_cast<int>(attr));
      return fail(cudaErrorNotSupported);
  }
  return ok();
}

cudaError_t cudaDeviceGetStreamPriorityRange(int* least, int* greatest) {
  if (least) *least = 0;
  if (greatest) *greatest = -5;
  return ok();
}

// ---- streams and events --------------------------------------------------------------------------
cudaError_t cudaStreamCreateWithPriority(cudaStream_t* s, unsigned int, int) {
  cugrad_emu::trace::count(__func__);
  if (!s) return fail(cudaErrorInvalidValue);
  auto* st = new Stream{t_device, async_mode() ? std::make_unique<Queue>() : nullptr};
  {
    std::lock_guard lock(g().mu);
    g().streams.insert(st);
  }
  *s = reinterpret_cast<cudaStream_t>(st);
  return ok();
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int flags) { return cudaStreamCreateWithPriority(s, flags, 0); }
cudaError_t cudaStreamCreate(cudaStream_t* s) { return cudaStreamCreateWithPriority(s, 0, 0); }
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  auto* st = reinterpret_cast<Stream*>(s);
  {
    std::lock_guard lock(g().mu);
    if (!g().streams.erase(st)) return fail(cudaErrorInvalidResourceHandle);
  }
  delete st;  // its queued work runs first, as CUDA finishes a destroyed stream's work
  return ok();
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  cugrad_emu::trace::count(__func__);
  if (!valid_stream(s)) return fail(cudaErrorInvalidResourceHandle);
  wait_stream(s);
  return ok();
}
cudaError_t cudaStreamQuery(cudaStream_t s) {
  cugrad_emu::trace::count(__func__);
  if (!valid_stream(s)) return fail(cudaErrorInvalidResourceHandle);
  Queue* q = queue_of(s);
  if (q && !q->idle()) return cudaErrorNotReady;
  return ok();
}
cudaError_t cudaStreamIsCapturing(cudaStream_t s, cudaStreamCaptureStatus* status) {
  if (!valid_stream(s)) return fail(cudaErrorInvalidResourceHandle);
  if (status) *status = cudaStreamCaptureStatusNone;
  return ok();
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int flags) {
  cugrad_emu::trace::count(__func__);
  if (!e) return fail(cudaErrorInvalidValue);
  auto ev = std::make_shared<Event>();
  ev->timing = (flags & cudaEventDisableTiming) == 0;
  {
    std::lock_guard lock(g().mu);
    g().events[ev.get()] = ev;
  }
  *e = reinterpret_cast<cudaEvent_t>(ev.get());
  return ok();
}
cudaError_t cudaEventCreate(cudaEvent_t* e) { return cudaEventCreateWithFlags(e, cudaEventDefault); }
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  std::lock_guard lock(g().mu);
  // Work already queued that records or waits on it keeps it alive, as CUDA does.
  if (!g().events.erase(reinterpret_cast<Event*>(e))) return fail(cudaErrorInvalidResourceHandle);
  return ok();
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  cugrad_emu::trace::count(__func__);
  auto ev = event_of(e);
  if (!ev || !valid_stream(s)) return fail(cudaErrorInvalidResourceHandle);
  auto rec = std::make_shared<Record>();
  {
    std::lock_guard lock(event_mu());
    ev->last = rec;
  }
  submit(s, [rec] {
    {
      std::lock_guard lock(event_mu());
      rec->at = std::chrono::steady_clock::now();
      rec->complete = true;
    }
    event_cv().notify_all();
  });
  return ok();
}
cudaError_t cudaEventQuery(cudaEvent_t e) {
  cugrad_emu::trace::count(__func__);
  auto ev = event_of(e);
  if (!ev) return fail(cudaErrorInvalidResourceHandle);
  return record_complete(last_record(*ev)) ? ok() : cudaErrorNotReady;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  cugrad_emu::trace::count(__func__);
  auto ev = event_of(e);
  if (!ev) return fail(cudaErrorInvalidResourceHandle);
  wait_record(last_record(*ev));
  return ok();
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  auto a = event_of(start);
  auto b = event_of(end);
  if (!ms || !a || !b || !a->timing || !b->timing) return fail(cudaErrorInvalidResourceHandle);
  const auto ra = last_record(*a), rb = last_record(*b);
  if (!ra || !rb) return fail(cudaErrorInvalidResourceHandle);
  if (!record_complete(ra) || !record_complete(rb)) return fail(cudaErrorNotReady);
  std::lock_guard lock(event_mu());
  *ms = std::chrono::duration<float, std::milli>(rb->at - ra->at).count();
  return ok();
}
// Profiler control (ncu --profile-from-start off honors it on a GPU): nothing to do here.
cudaError_t cudaProfilerStart() { return ok(); }
cudaError_t cudaProfilerStop() { return ok(); }
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int) {
  cugrad_emu::trace::count(__func__);
  auto ev = event_of(e);
  if (!valid_stream(s) || !ev) return fail(cudaErrorInvalidResourceHandle);
  auto rec = last_record(*ev);  // the most recent record at the time of the call
  if (rec) submit(s, [rec] { wait_record(rec); });
  return ok();
}
cudaError_t cudaLaunchHostFunc(cudaStream_t s, cudaHostFn_t fn, void* user) {
  cugrad_emu::trace::count(__func__);
  if (!valid_stream(s) || !fn) return fail(cudaErrorInvalidValue);
  submit(s, [fn, user] {
    t_in_host_fn = true;  // a CUDA call inside a host function is an error, as on the GPU
    fn(user);
    t_in_host_fn = false;
  });
  return ok();
}

// ---- memory --------------------------------------------------------------------------------------
cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t* pool, int device) {
  if (!pool) return fail(cudaErrorInvalidValue);
  if (device < 0 || device >= device_total()) return fail(cudaErrorInvalidDevice);
  g().pools[device].device = device;
  *pool = reinterpret_cast<cudaMemPool_t>(&g().pools[device]);
  return ok();
}
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t pool, cudaMemPoolAttr attr, void* value) {
  auto* p = reinterpret_cast<Pool*>(pool);
  if (!p || !value) return fail(cudaErrorInvalidValue);
  if (attr == cudaMemPoolAttrReleaseThreshold) p->release_threshold = *static_cast<std::uint64_t*>(value);
  else if (attr == cudaMemPoolAttrReservedMemHigh || attr == cudaMemPoolAttrUsedMemHigh) g().peak[p->device] = 0;
  return ok();
}
cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t pool, cudaMemPoolAttr attr, void* value) {
  auto* p = reinterpret_cast<Pool*>(pool);
  if (!p || !value) return fail(cudaErrorInvalidValue);
  auto* out = static_cast<std::uint64_t*>(value);
  std::lock_guard lock(g().mu);
  switch (attr) {
    case cudaMemPoolAttrReleaseThreshold: *out = p->release_threshold; break;
    case cudaMemPoolAttrReservedMemCurrent:
    case cudaMemPoolAttrUsedMemCurrent: *out = g().used[p->device]; break;
    case cudaMemPoolAttrReservedMemHigh:
    case cudaMemPoolAttrUsedMemHigh: *out = g().peak[p->device]; break;
    default: return fail(cudaErrorNotSupported);
  }
  return ok();
}
cudaError_t cudaMemPoolTrimTo(cudaMemPool_t pool, size_t) { return pool ? ok() : fail(cudaErrorInvalidValue); }

static cudaError_t device_malloc(void** ptr, size_t size, int device) {
  if (!ptr) return fail(cudaErrorInvalidValue);
  {
    std::lock_guard lock(g().mu);
    if (size > memory_limit() - g().used[device]) return fail(cudaErrorMemoryAllocation);
  }
  void* p = allocate(size, device, false, false);
  if (!p) return fail(cudaErrorMemoryAllocation);
  std::lock_guard lock(g().mu);
  g().used[device] += size;
  g().peak[device] = std::max(g().peak[device], g().used[device]);
  *ptr = p;
  return ok();
}

cudaError_t cudaMallocFromPoolAsync(void** ptr, size_t size, cudaMemPool_t pool, cudaStream_t s) {
  cugrad_emu::trace::count(__func__);
  auto* p = reinterpret_cast<Pool*>(pool);
  if (!p || !valid_stream(s)) return fail(cudaErrorInvalidValue);
  return device_malloc(ptr, size, p->device);
}
cudaError_t cudaMallocAsync(void** ptr, size_t size, cudaStream_t s) {
  cugrad_emu::trace::count(__func__);
  if (!valid_stream(s)) return fail(cudaErrorInvalidValue);
  return device_malloc(ptr, size, t_device);
}
cudaError_t cudaMalloc(void** ptr, size_t size) { cugrad_emu::trace::count(__func__); return device_malloc(ptr, size, t_device); }
cudaError_t cudaFreeAsync(void* p, cudaStream_t s) {
  cugrad_emu::trace::count(__func__);
  if (!valid_stream(s)) return fail(cudaErrorInvalidValue);
  if (!p) return ok();
  if (!in_device_allocation(p)) return release(p, false);  // reports the bad pointer
  submit(s, [p] { (void)release(p, false); });  // stream-ordered: after the work queued before it
  return ok();
}
cudaError_t cudaFree(void* p) {
  cugrad_emu::trace::count(__func__);
  wait_all();  // cudaFree synchronizes the device
  const cudaError_t e = release(p, false);
  return e == cudaSuccess ? ok() : e;
}
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total) {
  std::lock_guard lock(g().mu);
  if (total) *total = memory_limit();
  if (free_bytes) *free_bytes = memory_limit() - g().used[t_device];
  return ok();
}

cudaError_t cudaHostAlloc(void** ptr, size_t size, unsigned int flags) {
  cugrad_emu::trace::count(__func__);
  if (!ptr) return fail(cudaErrorInvalidValue);
  void* p = allocate(size, t_device, true, (flags & cudaHostAllocMapped) != 0);
  if (!p) return fail(cudaErrorMemoryAllocation);
  *ptr = p;
  return ok();
}
cudaError_t cudaMallocHost(void** ptr, size_t size) { return cudaHostAlloc(ptr, size, cudaHostAllocDefault); }
cudaError_t cudaFreeHost(void* p) {
  cugrad_emu::trace::count(__func__);
  wait_all();
  const cudaError_t e = release(p, true);
  return e == cudaSuccess ? ok() : e;
}
cudaError_t cudaHostGetDevicePointer(void** device_ptr, void* host, unsigned int) {
  std::lock_guard lock(g().mu);
  const Allocation* a = find_allocation(host, 1);
  if (!device_ptr || !a || !a->host || !a->mapped) return fail(cudaErrorInvalidValue);
  *device_ptr = host;
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind kind, cudaStream_t s) {
  cugrad_emu::trace::count(__func__);
  if (!valid_stream(s)) return fail(cudaErrorInvalidResourceHandle);
  if (const cudaError_t e = check_copy(dst, src, n, kind); e != cudaSuccess) return e;
  if (n == 0) return ok();
  // CUDA's rules for pageable host memory: the source is staged before the call returns, and a
  // copy into pageable memory has completed when the call returns. Pinned memory is fully async.
  const bool src_host = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyHostToHost ||
                        (kind == cudaMemcpyDefault && !in_device_allocation(src));
  const bool dst_host = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyHostToHost ||
                        (kind == cudaMemcpyDefault && !in_device_allocation(dst));
  if (src_host && !pinned(src)) {
    // Counted apart: a program that means to overlap its host-to-device copies needs pinned
    // sources (tests/emu/dataloader_profile_test.cpp holds the DataLoader to that).
    cugrad_emu::trace::count("cudaMemcpyAsync from pageable host memory");
    auto staged = std::make_shared<std::vector<char>>(static_cast<const char*>(src), static_cast<const char*>(src) + n);
    submit(s, [dst, staged] { std::memcpy(dst, staged->data(), staged->size()); });
  } else {
    submit(s, [dst, src, n] { std::memmove(dst, src, n); });
  }
  if (dst_host && !pinned(dst)) wait_stream(s);
  return ok();
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
  cugrad_emu::trace::count(__func__);
  const cudaError_t e = cudaMemcpyAsync(dst, src, n, kind, nullptr);
  wait_stream(nullptr);  // synchronous with respect to the host
  return e;
}
cudaError_t cudaMemcpyPeerAsync(void* dst, int dst_device, const void* src, int src_device, size_t n, cudaStream_t s) {
  cugrad_emu::trace::count(__func__);
  if (dst_device < 0 || dst_device >= device_total() || src_device < 0 || src_device >= device_total())
    return fail(cudaErrorInvalidDevice);
  return cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, s);
}
cudaError_t cudaMemsetAsync(void* p, int value, size_t n, cudaStream_t s) {
  cugrad_emu::trace::count(__func__);
  if (!valid_stream(s)) return fail(cudaErrorInvalidResourceHandle);
  if (!device_range(p, n)) {
    std::fprintf(stderr, "cugrad CUDA emulator: cudaMemset of %zu bytes at %p: not inside one live device "
                         "allocation\n", n, p);
    return fail(cudaErrorInvalidValue);
  }
  if (n) submit(s, [p, value, n] { std::memset(p, value, n); });
  return ok();
}
cudaError_t cudaMemset(void* p, int value, size_t n) {
  cugrad_emu::trace::count(__func__);
  const cudaError_t e = cudaMemsetAsync(p, value, n, nullptr);
  wait_stream(nullptr);
  return e;
}

// ---- kernels and symbols ---------------------------------------------------------------------------
cudaError_t cudaGetSymbolAddress(void** ptr, const void* symbol) {
  if (!ptr || !symbol) return fail(cudaErrorInvalidValue);
  {
    std::lock_guard lock(g().mu);
    g().symbols.insert(symbol);
  }
  *ptr = const_cast<void*>(symbol);
  return ok();
}
cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  if (!func) return fail(cudaErrorInvalidDeviceFunction);
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0 || value > kSharedPerBlockOptin) return fail(cudaErrorInvalidValue);
    std::lock_guard lock(g().mu);
    g().max_dynamic_smem[func] = value;
  }
  return ok();
}
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, const void* func, int block_size,
                                                          size_t dynamic_smem) {
  if (!blocks || !func || block_size <= 0 || block_size > 1024) return fail(cudaErrorInvalidValue);
  int n = std::min(32, 2048 / block_size);
  if (dynamic_smem > 0) n = std::min<int>(n, static_cast<int>(228 * 1024 / (dynamic_smem + 1024)));
  *blocks = n;
  return ok();
}
