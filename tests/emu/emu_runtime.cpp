// cugrad CUDA emulator: the CUDA runtime API functions the library calls, on the CPU. Device
// memory is host memory (each allocation its own malloc, poisoned with 0xFF bytes, so that
// AddressSanitizer sees kernel overruns and a read of an unwritten output shows up as NaN);
// by default every operation completes before its call returns (streams and events then only
// check their handles). With CUGRAD_EMU_ASYNC=1 every stream is a worker thread running its
// work in order, asynchronously to the host and to the other streams, with CUDA's rules for
// events, cudaStreamWaitEvent, pinned versus pageable copies and stream-ordered frees; a
// missing wait between streams, or a host read without a synchronization, then gives wrong
// values (CUGRAD_EMU_ASYNC_DELAY_US=N adds a random delay of up to N microseconds before each
// operation, to make such races likely). Copies and memsets check that their "device" side lies inside one
// live device allocation (or a mapped host buffer, or a __device__ symbol), so a host pointer handed to a
// device copy, an overrun, or a use after free is an error here instead of silence.
//
// Stream capture and CUDA graphs (cudaStreamBeginCapture .. cudaStreamEndCapture,
// cudaGraphInstantiate, cudaGraphLaunch). Work queued on a capturing stream (the origin, or a
// stream that joined it by cudaStreamWaitEvent on an event recorded in the capture) is recorded,
// not run: kernels, cudaMemcpyAsync, cudaMemsetAsync, cudaLaunchHostFunc, the cuBLAS and cuDNN
// computations, external event waits, stream-ordered allocations and frees (state::submit). A
// graph is that node list in capture order, which is a topological order of its edges; a launch
// queues one op on its stream that runs the nodes one after another, after the exec's previous
// launch. An event recorded in a capture is no node (CUDA makes it an internal dependency): it
// stands for its stream's position, for forks and joins. CUDA's rules, with its error codes: no
// capture on the legacy stream (nor, here, on cudaStreamPerThread, which the emulator runs as the
// legacy stream); in every mode, synchronizing or querying a capturing stream, cudaDeviceSynchronize
// while a stream of the device captures, cudaMemcpyAsync of pageable memory, querying or
// synchronizing an event recorded in a capture (cudaErrorCapturedEvent, kept after the capture
// ended until the event is recorded again), a wait on an event recorded outside the capture
// (cudaErrorStreamCaptureIsolation; with cudaEventWaitExternal it is a node that waits for the
// event's latest record at each launch) or on an event of another capture (...Merge), any use of
// the legacy stream while a blocking stream of its device captures (...Implicit), and in a
// capture a cudaFreeAsync of memory the capture did not allocate (cudaErrorInvalidValue; CUDA
// also allows another graph's allocations: refused here); as cudaThreadExchangeStreamCaptureMode's
// modes say, the potentially unsafe calls cudaMalloc, cudaFree, cudaMallocHost / cudaHostAlloc,
// cudaFreeHost, cudaMemcpy and cudaMemset (...Unsupported). Each such call invalidates the
// capture(s) concerned: later work on its streams fails with cudaErrorStreamCaptureInvalidated, and
// so does cudaStreamEndCapture (no graph, every stream leaves the capture). cudaStreamEndCapture
// also fails with ...Unjoined when a stream that joined has work not ordered before the origin's
// end (per-stream vector clocks, merged at each cudaStreamWaitEvent; a stream that joined and
// recorded nothing needs no join), and with ...Unmatched on a stream other than the origin.
// Graph allocations (cudaMallocAsync in a capture): the address is fixed at the capture, for the
// graph's life; they count as allocated (for the copy checks and the relaunch rule) from each
// launch until freed in the graph or by the user, as the API calls see it, not when the launch
// runs; each launch poisons them afresh. A relaunch while one is still allocated needs
// cudaGraphInstantiateFlagAutoFreeOnLaunch (else cudaErrorInvalidValue); a graph with allocation
// nodes has one executable graph at a time (cudaErrorInvalidValue, the documented code). Their
// memory counts as used (cudaMemGetInfo, the pool's attributes) from the capture until the graph,
// its executable graphs and pending launches are gone and it is not allocated: a graph pool that
// never shrinks. Not emulated: graphs built node by node (cudaGraphAdd*Node), graph update, node
// handles (cudaStreamGetCaptureInfo reports no graph and no dependencies),
// cudaStreamBeginCaptureToGraph, event record nodes (cudaEventRecordWithFlags), device launch;
// and a launch runs the graph's nodes one at a time in capture order, so a race between two
// branches of a graph does not show here (it does between streams outside graphs).
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
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
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
  static const std::size_t n = static_cast<std::size_t>(std::max(64, env_int("CUGRAD_EMU_MEMORY_MIB", 16384)))
                               << 20;
  return n;
}

struct Allocation {
  std::size_t size = 0;
  int device = 0;
  bool host = false;    // pinned host memory
  bool mapped = false;  // host memory visible to kernels
  // A graph allocation (cudaMallocAsync on a capturing stream): its backing stays at one address
  // for the life of the graph that owns it; `live` says whether it is allocated now (between its
  // allocation and its free as the API calls see them: in the capture, then from each launch).
  // A graph allocation still allocated when its graphs are destroyed is an orphan: the user's
  // free releases it.
  bool graph = false;
  bool live = true;
  bool orphan = false;
  std::uint64_t capture_id = 0;  // the capture that allocated it
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
      op = nullptr;  // what it owns (a kernel's arguments, a graph) goes before the op counts as done
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

struct Capture;

struct Stream {
  int device = 0;
  std::unique_ptr<Queue> queue;      // asynchronous mode
  bool blocking = true;              // not cudaStreamNonBlocking: synchronizes with the legacy stream
  std::shared_ptr<Capture> capture;  // the capture it records into (origin or joined); guarded by g().mu
};
// One cudaEventRecord: what a later query, synchronize or cudaStreamWaitEvent refers to (CUDA
// captures the most recent record at the call; re-recording the event does not change what an
// earlier wait waits for).
struct Record {
  bool complete = false;
  std::chrono::steady_clock::time_point at{};
};
// What each stream of a capture has recorded: stream -> number of its nodes ordered before.
using Clock = std::map<Stream*, std::uint64_t>;

struct Event {
  bool timing = true;
  std::shared_ptr<Record> last;  // null until recorded; guarded by event_mu()
  // Last recorded in a capture (guarded by g().mu): then queries and waits refer to the capture's
  // position `clock`, not to `last`; `capture` expires when the capture ends.
  bool captured = false;
  std::weak_ptr<Capture> capture;
  Clock clock;
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

struct GraphBody;

// One stream capture (cudaStreamBeginCapture .. cudaStreamEndCapture); guarded by g().mu.
struct Capture {
  std::uint64_t id = 0;
  Stream* origin = nullptr;
  cudaStreamCaptureMode mode = cudaStreamCaptureModeGlobal;
  std::thread::id thread;
  int device = 0;
  bool invalidated = false;
  std::shared_ptr<GraphBody> body;
  std::vector<Stream*> members;               // the origin and the streams that joined
  std::map<Stream*, std::uint64_t> recorded;  // nodes recorded per stream
  std::map<Stream*, Clock> clock;             // per member: what its next node is ordered after
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
  std::vector<std::shared_ptr<Capture>> captures;  // the active ones
  std::atomic<int> capturing{0};                   // captures.size(), read without the lock
  std::uint64_t next_capture_id = 1;
  std::set<cudaGraph_t> graphs;
  std::set<cudaGraphExec_t> execs;
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

// The allocation holding [p, p + n), or null (a graph allocation only while allocated).
const Allocation* find_allocation(const void* p, std::size_t n, std::uintptr_t* start = nullptr) {
  auto& m = g().allocations;
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  auto it = m.upper_bound(a);
  if (it == m.begin()) return nullptr;
  --it;
  if (a < it->first || a + n > it->first + it->second.size || !it->second.live) return nullptr;
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
    case cudaMemcpyHostToDevice:
      good = host_range(src, n) && device_range(dst, n);
      break;
    case cudaMemcpyDeviceToHost:
      good = device_range(src, n) && host_range(dst, n);
      break;
    case cudaMemcpyDeviceToDevice:
      good = device_range(src, n) && device_range(dst, n);
      break;
    case cudaMemcpyHostToHost:
      good = host_range(src, n) && host_range(dst, n);
      break;
    case cudaMemcpyDefault:
      break;
    default:
      return fail(cudaErrorInvalidMemcpyDirection);
  }
  if (!good) {
    std::fprintf(stderr,
                 "cugrad CUDA emulator: cudaMemcpy of %zu bytes, kind %d, %p -> %p: a side is not where "
                 "the kind says (not inside one live allocation)\n",
                 n, static_cast<int>(kind), src, dst);
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
    if (it == g().allocations.end() || it->second.host != host || !it->second.live) {
      std::fprintf(stderr, "cugrad CUDA emulator: %s of %p, which is no live %s allocation\n",
                   host ? "cudaFreeHost" : "cudaFree", p, host ? "pinned host" : "device");
      return fail(cudaErrorInvalidValue);
    }
    if (it->second.graph) {
      // Freed by the user outside the graph: the graph keeps the memory for its next launch,
      // unless the graph is gone already.
      it->second.live = false;
      if (!it->second.orphan) return cudaSuccess;
    }
    if (!host) g().used[it->second.device] -= it->second.size;
    g().allocations.erase(it);
  }
  std::free(p);
  return cudaSuccess;
}

// ---- stream capture ------------------------------------------------------------------------------

// The captured work: shared by the graph, its executable graphs and their pending launches.
struct GraphBody {
  std::vector<std::function<void()>> nodes;  // in capture order, a topological order of the graph
  std::vector<void*> allocs;                 // its graph allocations
  std::set<void*> freed;                     // those of them its free nodes free
  int execs = 0;                             // live executable graphs; guarded by g().mu
  GraphBody() = default;
  GraphBody(const GraphBody&) = delete;
  GraphBody& operator=(const GraphBody&) = delete;
  bool has_memory_nodes() const { return !allocs.empty(); }
  // The backing of its graph allocations goes with it, except where still allocated (orphans:
  // the user's free releases them).
  ~GraphBody() {
    std::vector<void*> backing;
    {
      std::lock_guard lock(g().mu);
      for (void* p : allocs) {
        auto it = g().allocations.find(reinterpret_cast<std::uintptr_t>(p));
        if (it == g().allocations.end()) continue;
        if (it->second.live) {
          it->second.orphan = true;
          continue;
        }
        g().used[it->second.device] -= it->second.size;
        g().allocations.erase(it);
        backing.push_back(p);
      }
    }
    for (void* p : backing) std::free(p);
  }
};

thread_local cudaStreamCaptureMode t_capture_mode = cudaStreamCaptureModeGlobal;

// The stream `s` (null for the legacy stream or an unknown handle). Requires g().mu.
Stream* stream_locked(cudaStream_t s) {
  if (is_legacy(s)) return nullptr;
  auto* st = reinterpret_cast<Stream*>(s);
  return g().streams.count(st) ? st : nullptr;
}

// The capture `s` records into, or null. Requires g().mu.
std::shared_ptr<Capture> capture_locked(cudaStream_t s) {
  Stream* st = stream_locked(s);
  return st ? st->capture : nullptr;
}

std::shared_ptr<Capture> capture_of(cudaStream_t s) {
  if (g().capturing.load() == 0) return nullptr;
  std::lock_guard lock(g().mu);
  return capture_locked(s);
}

// CUDA invalidates a capture on an operation it prohibits; cudaStreamEndCapture then returns
// cudaErrorStreamCaptureInvalidated. Said once per capture, so that the first offence shows.
void invalidate_locked(Capture& c, const char* why) {
  if (!c.invalidated)
    std::fprintf(stderr, "cugrad CUDA emulator: %s: stream capture %llu is invalidated\n", why,
                 static_cast<unsigned long long>(c.id));
  c.invalidated = true;
}

void invalidate(const std::shared_ptr<Capture>& c, const char* why) {
  std::lock_guard lock(g().mu);
  invalidate_locked(*c, why);
}

// The legacy stream synchronizes with every blocking stream of its device, so while one of them
// captures, any use of it would depend on the capture: cudaErrorStreamCaptureImplicit, and those
// captures are invalidated (unless `invalidate` is false: cudaStreamIsCapturing only reports).
cudaError_t legacy_implicit(cudaStream_t s, const char* what, bool invalidate = true) {
  if (!is_legacy(s) || g().capturing.load() == 0) return cudaSuccess;
  std::lock_guard lock(g().mu);
  bool hit = false;
  for (const auto& c : g().captures) {
    if (c->device != t_device) continue;
    for (Stream* m : c->members)
      if (m->blocking) {
        if (invalidate) invalidate_locked(*c, what);
        hit = true;
        break;
      }
  }
  return hit ? cudaErrorStreamCaptureImplicit : cudaSuccess;
}

// cudaThreadExchangeStreamCaptureMode's rule for the potentially unsafe calls (cudaMalloc,
// cudaMemcpy, ...): the calling thread may not make them while it has a capture of its own that
// is not relaxed, nor (its mode global) while another thread has a global capture, unless its
// own mode is relaxed. Such a call returns cudaErrorStreamCaptureUnsupported and invalidates the
// captures concerned.
cudaError_t unsafe_call(const char* what) {
  if (g().capturing.load() == 0 || t_capture_mode == cudaStreamCaptureModeRelaxed) return cudaSuccess;
  std::lock_guard lock(g().mu);
  bool hit = false;
  const auto self = std::this_thread::get_id();
  for (const auto& c : g().captures) {
    if (c->mode == cudaStreamCaptureModeRelaxed) continue;
    const bool local = c->thread == self;
    if (local || (t_capture_mode == cudaStreamCaptureModeGlobal && c->mode == cudaStreamCaptureModeGlobal)) {
      invalidate_locked(*c, what);
      hit = true;
    }
  }
  return hit ? cudaErrorStreamCaptureUnsupported : cudaSuccess;
}

// Appends a node to the capture, on stream `st` in capture order. Requires g().mu.
cudaError_t record_locked(Capture& c, Stream* st, std::function<void()> op) {
  if (c.invalidated) return cudaErrorStreamCaptureInvalidated;
  const std::uint64_t seq = ++c.recorded[st];
  c.clock[st][st] = seq;
  c.body->nodes.push_back(std::move(op));
  return cudaSuccess;
}

void merge(Clock& into, const Clock& from) {
  for (const auto& [s, n] : from) into[s] = std::max(into[s], n);
}

// Every stream leaves the capture. Requires g().mu.
void end_capture_locked(const std::shared_ptr<Capture>& c) {
  for (Stream* m : c->members)
    if (g().streams.count(m) && m->capture == c) m->capture.reset();
  auto& all = g().captures;
  all.erase(std::remove(all.begin(), all.end(), c), all.end());
  g().capturing.store(static_cast<int>(all.size()));
  // Graph allocations exist only from a launch on.
  for (void* p : c->body->allocs) {
    auto it = g().allocations.find(reinterpret_cast<std::uintptr_t>(p));
    if (it != g().allocations.end()) it->second.live = false;
  }
}

}  // namespace

cudaError_t submit(cudaStream_t stream, std::function<void()> op) {
  if (g().capturing.load() != 0) {
    if (is_legacy(stream)) {
      if (const cudaError_t e = legacy_implicit(stream, "work queued on the legacy stream"); e != cudaSuccess)
        return e;
    } else {
      std::lock_guard lock(g().mu);
      if (Stream* st = stream_locked(stream); st && st->capture)
        return record_locked(*st->capture, st, std::move(op));  // recorded, not run
    }
  }
  if (Queue* q = queue_of(stream))
    q->push(std::move(op));
  else
    op();
  return cudaSuccess;
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

cudaError_t check_launch(const void* kernel, dim3 grid, dim3 block, std::size_t dynamic_smem,
                         cudaStream_t stream) {
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

// The graph types the headers leave opaque. A graph owns its captured work; an executable graph
// shares it (the emulator needs no copy: nodes are never edited).
struct CUgraph_st {
  std::shared_ptr<GraphBody> body;
};
struct CUgraphExec_st {
  std::shared_ptr<GraphBody> body;
  unsigned long long flags = 0;
  std::shared_ptr<Record> last_launch;  // each launch runs after the previous one, as in CUDA
};

// ---- errors ------------------------------------------------------------------------------------
cudaError_t cudaGetLastError() {
  const cudaError_t e = t_last;
  t_last = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return t_last; }

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "cudaSuccess";
    case cudaErrorInvalidValue:
      return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation:
      return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration:
      return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice:
      return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle:
      return "cudaErrorInvalidResourceHandle";
    case cudaErrorInvalidMemcpyDirection:
      return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorNotReady:
      return "cudaErrorNotReady";
    case cudaErrorNotPermitted:
      return "cudaErrorNotPermitted";
    case cudaErrorNoDevice:
      return "cudaErrorNoDevice";
    case cudaErrorInsufficientDriver:
      return "cudaErrorInsufficientDriver";
    case cudaErrorNotSupported:
      return "cudaErrorNotSupported";
    default:
      return "cudaErrorUnknown";
  }
}
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorMemoryAllocation:
      return "out of memory";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument";
    case cudaErrorInvalidDevice:
      return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle:
      return "invalid resource handle";
    case cudaErrorNotPermitted:
      return "operation not permitted";
    default:
      return "unknown error (emulated)";
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
  // Synchronizing a device while one of its streams captures is invalid in every capture mode
  // (the CUDA Programming Guide: "a broader handle which encompasses an active stream capture").
  if (g().capturing.load() != 0) {
    std::lock_guard lock(g().mu);
    bool hit = false;
    for (const auto& c : g().captures)
      if (c->device == t_device) {
        invalidate_locked(*c, "cudaDeviceSynchronize during stream capture");
        hit = true;
      }
    if (hit) return fail(cudaErrorStreamCaptureUnsupported);
  }
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
    case cudaDevAttrClockRate:
      *value = 1000000;
      break;  // kHz: clock64() counts nanoseconds
    case cudaDevAttrMemoryClockRate:
      *value = 2619000;
      break;
    case cudaDevAttrComputeCapabilityMajor:
      *value = 9;
      break;
    case cudaDevAttrComputeCapabilityMinor:
      *value = 0;
      break;
    case cudaDevAttrMultiProcessorCount:
      *value = sm_count();
      break;
    case cudaDevAttrMaxThreadsPerBlock:
      *value = 1024;
      break;
    case cudaDevAttrWarpSize:
      *value = 32;
      break;
    case cudaDevAttrMaxSharedMemoryPerBlock:
      *value = kSharedPerBlock;
      break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
      *value = kSharedPerBlockOptin;
      break;
    case cudaDevAttrMaxThreadsPerMultiProcessor:
      *value = 2048;
      break;
    case cudaDevAttrGlobalMemoryBusWidth:
      *value = 5120;
      break;
    case cudaDevAttrL2CacheSize:
      *value = 50 * 1024 * 1024;
      break;
    case cudaDevAttrMemoryPoolsSupported:
      *value = 1;
      break;
    default:
      std::fprintf(stderr, "cugrad CUDA emulator: cudaDeviceGetAttribute(%d) is not emulated\n",
                   static_cast<int>(attr));
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
cudaError_t cudaStreamCreateWithPriority(cudaStream_t* s, unsigned int flags, int) {
  cugrad_emu::trace::count(__func__);
  if (!s) return fail(cudaErrorInvalidValue);
  auto* st = new Stream{t_device, async_mode() ? std::make_unique<Queue>() : nullptr,
                        (flags & cudaStreamNonBlocking) == 0, nullptr};
  {
    std::lock_guard lock(g().mu);
    g().streams.insert(st);
  }
  *s = reinterpret_cast<cudaStream_t>(st);
  return ok();
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int flags) {
  return cudaStreamCreateWithPriority(s, flags, 0);
}
cudaError_t cudaStreamCreate(cudaStream_t* s) { return cudaStreamCreateWithPriority(s, 0, 0); }
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  auto* st = reinterpret_cast<Stream*>(s);
  std::shared_ptr<Capture> ended;  // dropped after the lock (its graph may free memory)
  {
    std::lock_guard lock(g().mu);
    if (!g().streams.count(st)) return fail(cudaErrorInvalidResourceHandle);
    // Not documented; emulated: destroying a capturing stream invalidates its capture, and
    // destroying the origin ends the capture (it can no longer be ended).
    if (st->capture) {
      ended = st->capture;
      invalidate_locked(*ended, "cudaStreamDestroy of a capturing stream");
      if (ended->origin == st) end_capture_locked(ended);
      auto& m = ended->members;
      m.erase(std::remove(m.begin(), m.end(), st), m.end());
      st->capture.reset();
    }
    g().streams.erase(st);
  }
  delete st;  // its queued work runs first, as CUDA finishes a destroyed stream's work
  return ok();
}
// Synchronizing or querying a capturing stream is invalid in every capture mode.
static cudaError_t stream_wait_allowed(cudaStream_t s, const char* what) {
  if (const cudaError_t e = legacy_implicit(s, what); e != cudaSuccess) return e;
  if (auto c = capture_of(s)) {
    invalidate(c, what);
    return cudaErrorStreamCaptureUnsupported;
  }
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  cugrad_emu::trace::count(__func__);
  if (!valid_stream(s)) return fail(cudaErrorInvalidResourceHandle);
  if (const cudaError_t e = stream_wait_allowed(s, "cudaStreamSynchronize of a capturing stream");
      e != cudaSuccess)
    return fail(e);
  wait_stream(s);
  return ok();
}
cudaError_t cudaStreamQuery(cudaStream_t s) {
  cugrad_emu::trace::count(__func__);
  if (!valid_stream(s)) return fail(cudaErrorInvalidResourceHandle);
  if (const cudaError_t e = stream_wait_allowed(s, "cudaStreamQuery of a capturing stream"); e != cudaSuccess)
    return fail(e);
  Queue* q = queue_of(s);
  if (q && !q->idle()) return cudaErrorNotReady;
  return ok();
}

// ---- stream capture and graphs ----------------------------------------------------------------------
cudaError_t cudaStreamIsCapturing(cudaStream_t s, cudaStreamCaptureStatus* status) {
  cugrad_emu::trace::count(__func__);
  if (!status) return fail(cudaErrorInvalidValue);
  if (!valid_stream(s)) return fail(cudaErrorInvalidResourceHandle);
  // The legacy stream while a blocking stream captures: an error, but no invalidation (documented).
  if (const cudaError_t e = legacy_implicit(s, "cudaStreamIsCapturing", false); e != cudaSuccess)
    return fail(e);
  std::lock_guard lock(g().mu);
  const auto c = capture_locked(s);
  *status = !c               ? cudaStreamCaptureStatusNone
            : c->invalidated ? cudaStreamCaptureStatusInvalidated
                             : cudaStreamCaptureStatusActive;
  return ok();
}
cudaError_t cudaStreamGetCaptureInfo(cudaStream_t s, cudaStreamCaptureStatus* status, unsigned long long* id,
                                     cudaGraph_t* graph, const cudaGraphNode_t** dependencies,
                                     const cudaGraphEdgeData** edge_data, size_t* num_dependencies) {
  cugrad_emu::trace::count(__func__);
  if (!status || (edge_data && !dependencies)) return fail(cudaErrorInvalidValue);
  if (!valid_stream(s)) return fail(cudaErrorInvalidResourceHandle);
  if (const cudaError_t e = legacy_implicit(s, "cudaStreamGetCaptureInfo", false); e != cudaSuccess)
    return fail(e);
  std::lock_guard lock(g().mu);
  const auto c = capture_locked(s);
  *status = !c               ? cudaStreamCaptureStatusNone
            : c->invalidated ? cudaStreamCaptureStatusInvalidated
                             : cudaStreamCaptureStatusActive;
  // Emulated: the id; no graph handle before cudaStreamEndCapture, and no node handles (the
  // emulator's graphs are node lists): the dependency set is reported empty.
  if (id && c) *id = c->id;
  if (graph) *graph = nullptr;
  if (dependencies) *dependencies = nullptr;
  if (edge_data) *edge_data = nullptr;
  if (num_dependencies) *num_dependencies = 0;
  return ok();
}
cudaError_t cudaThreadExchangeStreamCaptureMode(cudaStreamCaptureMode* mode) {
  cugrad_emu::trace::count(__func__);
  if (!mode || (*mode != cudaStreamCaptureModeGlobal && *mode != cudaStreamCaptureModeThreadLocal &&
                *mode != cudaStreamCaptureModeRelaxed))
    return fail(cudaErrorInvalidValue);
  std::swap(*mode, t_capture_mode);
  return ok();
}
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode) {
  cugrad_emu::trace::count(__func__);
  if (mode != cudaStreamCaptureModeGlobal && mode != cudaStreamCaptureModeThreadLocal &&
      mode != cudaStreamCaptureModeRelaxed)
    return fail(cudaErrorInvalidValue);
  // The legacy stream cannot capture; nor, here, cudaStreamPerThread (the emulator runs it as
  // the legacy stream).
  if (is_legacy(s)) return fail(cudaErrorStreamCaptureUnsupported);
  std::lock_guard lock(g().mu);
  Stream* st = stream_locked(s);
  if (!st) return fail(cudaErrorInvalidResourceHandle);
  if (st->capture) return fail(cudaErrorIllegalState);
  auto c = std::make_shared<Capture>();
  c->id = g().next_capture_id++;
  c->origin = st;
  c->mode = mode;
  c->thread = std::this_thread::get_id();
  c->device = st->device;
  c->body = std::make_shared<GraphBody>();
  c->members.push_back(st);
  c->clock[st] = {};
  st->capture = c;
  g().captures.push_back(c);
  g().capturing.store(static_cast<int>(g().captures.size()));
  return ok();
}
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t* graph) {
  cugrad_emu::trace::count(__func__);
  if (!graph) return fail(cudaErrorInvalidValue);
  if (!valid_stream(s)) return fail(cudaErrorInvalidResourceHandle);
  std::shared_ptr<Capture> c;  // dropped after the lock (a discarded graph frees its memory)
  cudaError_t result = cudaSuccess;
  {
    std::lock_guard lock(g().mu);
    c = capture_locked(s);
    if (!c) return fail(cudaErrorIllegalState);
    if (c->origin != stream_locked(s)) {
      invalidate_locked(*c, "cudaStreamEndCapture on a stream that joined the capture");
      return fail(cudaErrorStreamCaptureUnmatched);
    }
    if (c->mode != cudaStreamCaptureModeRelaxed && c->thread != std::this_thread::get_id())
      return fail(cudaErrorStreamCaptureWrongThread);
    end_capture_locked(c);
    // Every stream that joined must have joined back: its last node ordered before the origin's
    // end, through the events the origin waited on (directly or through other streams).
    const Clock& end = c->clock[c->origin];
    for (const auto& [st, n] : c->recorded) {
      const auto it = end.find(st);
      if (st != c->origin && (it == end.end() || it->second < n) && !c->invalidated) {
        std::fprintf(stderr,
                     "cugrad CUDA emulator: cudaStreamEndCapture: a stream that joined capture %llu has "
                     "work not joined back into the origin stream (cudaErrorStreamCaptureUnjoined)\n",
                     static_cast<unsigned long long>(c->id));
        result = cudaErrorStreamCaptureUnjoined;
      }
    }
    if (c->invalidated) result = cudaErrorStreamCaptureInvalidated;
    if (result != cudaSuccess) {
      *graph = nullptr;
    } else {
      *graph = new CUgraph_st{std::move(c->body)};
      g().graphs.insert(*graph);
    }
  }
  return result == cudaSuccess ? ok() : fail(result);
}
cudaError_t cudaGraphInstantiateWithFlags(cudaGraphExec_t* exec, cudaGraph_t graph,
                                          unsigned long long flags) {
  cugrad_emu::trace::count(__func__);
  if (!exec) return fail(cudaErrorInvalidValue);
  constexpr unsigned long long known = cudaGraphInstantiateFlagAutoFreeOnLaunch |
                                       cudaGraphInstantiateFlagUpload | cudaGraphInstantiateFlagDeviceLaunch |
                                       cudaGraphInstantiateFlagUseNodePriority;
  if ((flags & ~known) ||
      ((flags & cudaGraphInstantiateFlagDeviceLaunch) && (flags & cudaGraphInstantiateFlagAutoFreeOnLaunch)))
    return fail(cudaErrorInvalidValue);
  if (flags & cudaGraphInstantiateFlagDeviceLaunch) return fail(cudaErrorNotSupported);  // not emulated
  std::lock_guard lock(g().mu);
  if (!g().graphs.count(graph)) return fail(cudaErrorInvalidValue);
  const auto& body = graph->body;
  // "If graph contains any allocation or free nodes, there can be at most one executable graph
  // in existence for that graph at a time" (cudaGraphInstantiate; documented return values:
  // cudaSuccess, cudaErrorInvalidValue).
  if (body->has_memory_nodes() && body->execs > 0) {
    std::fprintf(stderr,
                 "cugrad CUDA emulator: cudaGraphInstantiate of a graph with allocation nodes that has an "
                 "executable graph already\n");
    return fail(cudaErrorInvalidValue);
  }
  ++body->execs;
  *exec = new CUgraphExec_st{body, flags, nullptr};
  g().execs.insert(*exec);
  return ok();
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long flags) {
  return cudaGraphInstantiateWithFlags(exec, graph, flags);
}
cudaError_t cudaGraphUpload(cudaGraphExec_t exec, cudaStream_t s) {
  cugrad_emu::trace::count(__func__);
  std::lock_guard lock(g().mu);
  if (!g().execs.count(exec)) return fail(cudaErrorInvalidValue);
  return ok();
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s) {
  cugrad_emu::trace::count(__func__);
  if (!valid_stream(s)) return fail(cudaErrorInvalidResourceHandle);
  if (const cudaError_t e = legacy_implicit(s, "cudaGraphLaunch on the legacy stream"); e != cudaSuccess)
    return fail(e);
  std::shared_ptr<GraphBody> body;
  std::shared_ptr<Record> previous, done = std::make_shared<Record>();
  {
    std::lock_guard lock(g().mu);
    if (!g().execs.count(exec)) return fail(cudaErrorInvalidValue);
    body = exec->body;
    if (auto c = capture_locked(s)) {
      // A launch into a capture (a child graph node): emulated for graphs without memory nodes.
      if (body->has_memory_nodes()) {
        invalidate_locked(*c, "cudaGraphLaunch of a graph with allocation nodes into a capture");
        return fail(cudaErrorStreamCaptureUnsupported);
      }
    } else {
      // Its graph allocations: still allocated from the previous launch is an error, unless the
      // launch frees them first (cudaGraphInstantiateFlagAutoFreeOnLaunch). Tracked at the call,
      // as the checks of later calls see it (not when the launch runs).
      for (void* p : body->allocs) {
        const auto it = g().allocations.find(reinterpret_cast<std::uintptr_t>(p));
        if (it != g().allocations.end() && it->second.live &&
            !(exec->flags & cudaGraphInstantiateFlagAutoFreeOnLaunch)) {
          std::fprintf(stderr,
                       "cugrad CUDA emulator: cudaGraphLaunch: graph allocation %p of the previous launch is "
                       "not freed (instantiate with cudaGraphInstantiateFlagAutoFreeOnLaunch to free it)\n",
                       p);
          return fail(cudaErrorInvalidValue);
        }
      }
      for (void* p : body->allocs) {
        const auto it = g().allocations.find(reinterpret_cast<std::uintptr_t>(p));
        if (it != g().allocations.end()) it->second.live = !body->freed.count(p);
      }
      previous = exec->last_launch;
      exec->last_launch = done;
    }
  }
  // One op on the stream runs the nodes in capture order (the graph's edges all point forward in
  // it), after the exec's previous launch.
  const cudaError_t e = submit(s, [body, previous, done] {
    wait_record(previous);
    for (const auto& node : body->nodes) node();
    {
      std::lock_guard lock(event_mu());
      done->complete = true;
    }
    event_cv().notify_all();
  });
  return e == cudaSuccess ? ok() : fail(e);
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  cugrad_emu::trace::count(__func__);
  {
    std::lock_guard lock(g().mu);
    if (!g().execs.erase(exec)) return fail(cudaErrorInvalidValue);
    --exec->body->execs;
  }
  delete exec;  // a pending launch keeps the work it runs
  return ok();
}
// The node count only (node handles are not emulated): the recorded operations, which are
// what CUDA's kernel, copy, memset and host nodes are, plus an allocation node per graph
// allocation and a free node per one freed in the graph.
cudaError_t cudaGraphGetNodes(cudaGraph_t graph, cudaGraphNode_t* nodes, size_t* numNodes) {
  cugrad_emu::trace::count(__func__);
  if (!numNodes) return fail(cudaErrorInvalidValue);
  if (nodes) return fail(cudaErrorNotSupported);
  std::lock_guard lock(g().mu);
  if (!g().graphs.count(graph)) return fail(cudaErrorInvalidValue);
  *numNodes = graph->body->nodes.size() + graph->body->allocs.size() + graph->body->freed.size();
  return ok();
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  cugrad_emu::trace::count(__func__);
  {
    std::lock_guard lock(g().mu);
    if (!g().graphs.erase(graph)) return fail(cudaErrorInvalidValue);
  }
  delete graph;  // its executable graphs and pending launches keep what they run
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
  if (const cudaError_t err = legacy_implicit(s, "cudaEventRecord on the legacy stream"); err != cudaSuccess)
    return fail(err);
  {
    std::lock_guard lock(g().mu);
    if (Stream* st = stream_locked(s); st && st->capture) {
      // A record in a capture is no node: the event now stands for the stream's position in the
      // capture, for cudaStreamWaitEvent (fork and join) only.
      if (st->capture->invalidated) return fail(cudaErrorStreamCaptureInvalidated);
      ev->captured = true;
      ev->capture = st->capture;
      ev->clock = st->capture->clock[st];
      return ok();
    }
    ev->captured = false;
    ev->capture.reset();
    ev->clock.clear();
  }
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
// An event last recorded in a capture stands for no work that will complete: querying or
// waiting on it from the host is cudaErrorCapturedEvent, and invalidates its capture while that
// is active. Emulated: the error stays after the capture ended, until the event is recorded
// outside a capture again.
static cudaError_t captured_event(Event& ev, const char* what) {
  std::lock_guard lock(g().mu);
  if (!ev.captured) return cudaSuccess;
  if (auto c = ev.capture.lock()) invalidate_locked(*c, what);
  return cudaErrorCapturedEvent;
}
cudaError_t cudaEventQuery(cudaEvent_t e) {
  cugrad_emu::trace::count(__func__);
  auto ev = event_of(e);
  if (!ev) return fail(cudaErrorInvalidResourceHandle);
  if (const cudaError_t err = captured_event(*ev, "cudaEventQuery of a captured event"); err != cudaSuccess)
    return fail(err);
  return record_complete(last_record(*ev)) ? ok() : cudaErrorNotReady;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  cugrad_emu::trace::count(__func__);
  auto ev = event_of(e);
  if (!ev) return fail(cudaErrorInvalidResourceHandle);
  if (const cudaError_t err = captured_event(*ev, "cudaEventSynchronize of a captured event");
      err != cudaSuccess)
    return fail(err);
  wait_record(last_record(*ev));
  return ok();
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  auto a = event_of(start);
  auto b = event_of(end);
  if (!ms || !a || !b || !a->timing || !b->timing) return fail(cudaErrorInvalidResourceHandle);
  for (Event* ev : {a.get(), b.get()})
    if (const cudaError_t err = captured_event(*ev, "cudaEventElapsedTime of a captured event");
        err != cudaSuccess)
      return fail(err);
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
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int flags) {
  cugrad_emu::trace::count(__func__);
  auto ev = event_of(e);
  if (!valid_stream(s) || !ev) return fail(cudaErrorInvalidResourceHandle);
  if (flags & ~static_cast<unsigned>(cudaEventWaitExternal)) return fail(cudaErrorInvalidValue);
  {
    std::lock_guard lock(g().mu);
    Stream* st = stream_locked(s);
    const std::shared_ptr<Capture> sc = st ? st->capture : nullptr;
    if (ev->captured) {
      const std::shared_ptr<Capture> ec = ev->capture.lock();
      if (!ec) return fail(cudaErrorCapturedEvent);  // recorded in a capture that has ended
      if (sc == ec) {                                // within the capture: a dependency edge
        merge(sc->clock[st], ev->clock);
        return sc->invalidated ? fail(cudaErrorStreamCaptureInvalidated) : ok();
      }
      if (sc) {  // two captures would merge
        invalidate_locked(*sc, "cudaStreamWaitEvent on an event of another capture");
        invalidate_locked(*ec, "cudaStreamWaitEvent on an event of another capture");
        return fail(cudaErrorStreamCaptureMerge);
      }
      if (!st) {  // the legacy stream cannot join a capture
        invalidate_locked(*ec, "cudaStreamWaitEvent of the legacy stream on a captured event");
        return fail(cudaErrorStreamCaptureImplicit);
      }
      // The stream joins the capture: its work is recorded from now on, after the event's position.
      st->capture = ec;
      ec->members.push_back(st);
      ec->clock[st] = ev->clock;
      return ec->invalidated ? fail(cudaErrorStreamCaptureInvalidated) : ok();
    }
    if (sc) {
      if (sc->invalidated) return fail(cudaErrorStreamCaptureInvalidated);
      if (flags & cudaEventWaitExternal) {
        // An external event wait node: each launch waits for the event's most recent record.
        record_locked(*sc, st, [ev] { wait_record(last_record(*ev)); });
        return ok();
      }
      if (!last_record(*ev)) return ok();  // never recorded: nothing to wait for
      // A dependency on work outside the capture, which a graph cannot hold.
      invalidate_locked(*sc, "cudaStreamWaitEvent in a capture on an event recorded outside it");
      return fail(cudaErrorStreamCaptureIsolation);
    }
  }
  if (const cudaError_t err = legacy_implicit(s, "cudaStreamWaitEvent on the legacy stream");
      err != cudaSuccess)
    return fail(err);
  auto rec = last_record(*ev);  // the most recent record at the time of the call
  if (rec) submit(s, [rec] { wait_record(rec); });
  return ok();
}
cudaError_t cudaLaunchHostFunc(cudaStream_t s, cudaHostFn_t fn, void* user) {
  cugrad_emu::trace::count(__func__);
  if (!valid_stream(s) || !fn) return fail(cudaErrorInvalidValue);
  const cudaError_t e = submit(s, [fn, user] {
    t_in_host_fn = true;  // a CUDA call inside a host function is an error, as on the GPU
    fn(user);
    t_in_host_fn = false;
  });
  return e == cudaSuccess ? ok() : fail(e);
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
  if (attr == cudaMemPoolAttrReleaseThreshold)
    p->release_threshold = *static_cast<std::uint64_t*>(value);
  else if (attr == cudaMemPoolAttrReservedMemHigh || attr == cudaMemPoolAttrUsedMemHigh)
    g().peak[p->device] = 0;
  return ok();
}
cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t pool, cudaMemPoolAttr attr, void* value) {
  auto* p = reinterpret_cast<Pool*>(pool);
  if (!p || !value) return fail(cudaErrorInvalidValue);
  auto* out = static_cast<std::uint64_t*>(value);
  std::lock_guard lock(g().mu);
  switch (attr) {
    case cudaMemPoolAttrReleaseThreshold:
      *out = p->release_threshold;
      break;
    case cudaMemPoolAttrReservedMemCurrent:
    case cudaMemPoolAttrUsedMemCurrent:
      *out = g().used[p->device];
      break;
    case cudaMemPoolAttrReservedMemHigh:
    case cudaMemPoolAttrUsedMemHigh:
      *out = g().peak[p->device];
      break;
    default:
      return fail(cudaErrorNotSupported);
  }
  return ok();
}
cudaError_t cudaMemPoolTrimTo(cudaMemPool_t pool, size_t) {
  return pool ? ok() : fail(cudaErrorInvalidValue);
}

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

// A stream-ordered allocation: on a capturing stream, a graph allocation (an allocation node):
// its address is fixed now, for the graph's life, and it is allocated from each launch until
// freed (by a free node of the graph, or by the user after the launch).
static cudaError_t malloc_async(void** ptr, size_t size, int device, cudaStream_t s) {
  if (!ptr) return fail(cudaErrorInvalidValue);
  if (const cudaError_t e = legacy_implicit(s, "cudaMallocAsync on the legacy stream"); e != cudaSuccess)
    return fail(e);
  const auto c = capture_of(s);
  if (!c) return device_malloc(ptr, size, device);
  if (c->invalidated) return fail(cudaErrorStreamCaptureInvalidated);
  if (const cudaError_t e = device_malloc(ptr, size, device); e != cudaSuccess) return e;
  void* p = *ptr;
  std::lock_guard lock(g().mu);
  Allocation& a = g().allocations[reinterpret_cast<std::uintptr_t>(p)];
  a.graph = true;
  a.capture_id = c->id;
  c->body->allocs.push_back(p);
  // Each launch allocates it afresh: poisoned, as a new allocation is here.
  const cudaError_t e = record_locked(*c, stream_locked(s), [p, size] {
    if (!null_compute()) std::memset(p, 0xFF, std::min<std::size_t>(size, std::size_t{256} << 20));
  });
  return e == cudaSuccess ? ok() : fail(e);
}
cudaError_t cudaMallocFromPoolAsync(void** ptr, size_t size, cudaMemPool_t pool, cudaStream_t s) {
  cugrad_emu::trace::count(__func__);
  auto* p = reinterpret_cast<Pool*>(pool);
  if (!p || !valid_stream(s)) return fail(cudaErrorInvalidValue);
  return malloc_async(ptr, size, p->device, s);
}
cudaError_t cudaMallocAsync(void** ptr, size_t size, cudaStream_t s) {
  cugrad_emu::trace::count(__func__);
  if (!valid_stream(s)) return fail(cudaErrorInvalidValue);
  return malloc_async(ptr, size, t_device, s);
}
cudaError_t cudaMalloc(void** ptr, size_t size) {
  cugrad_emu::trace::count(__func__);
  if (const cudaError_t e = unsafe_call("cudaMalloc during stream capture"); e != cudaSuccess) return fail(e);
  return device_malloc(ptr, size, t_device);
}
cudaError_t cudaFreeAsync(void* p, cudaStream_t s) {
  cugrad_emu::trace::count(__func__);
  if (!valid_stream(s)) return fail(cudaErrorInvalidValue);
  if (!p) return ok();
  if (const cudaError_t e = legacy_implicit(s, "cudaFreeAsync on the legacy stream"); e != cudaSuccess)
    return fail(e);
  {
    std::lock_guard lock(g().mu);
    auto it = g().allocations.find(reinterpret_cast<std::uintptr_t>(p));
    if (Stream* st = stream_locked(s); st && st->capture) {
      // A free node: only of a graph allocation of this capture, allocated at this point of it
      // (CUDA lets no graph free memory it does not own; emulated more strictly: nor another
      // graph's allocations).
      Capture& c = *st->capture;
      if (c.invalidated) return fail(cudaErrorStreamCaptureInvalidated);
      if (it == g().allocations.end() || !it->second.graph || !it->second.live ||
          it->second.capture_id != c.id) {
        invalidate_locked(
            c, "cudaFreeAsync in a capture of memory the capture did not allocate (or freed already)");
        return fail(cudaErrorInvalidValue);
      }
      it->second.live = false;
      c.body->freed.insert(p);
      return record_locked(c, st, [] {}) == cudaSuccess ? ok() : fail(cudaErrorStreamCaptureInvalidated);
    }
    if (it != g().allocations.end() && it->second.graph) {
      // A graph allocation freed after its launch: no longer allocated from now on (for the
      // next launch's check); the graph keeps the memory unless it is gone (an orphan).
      if (!it->second.live) {
        std::fprintf(stderr,
                     "cugrad CUDA emulator: cudaFreeAsync of %p, a graph allocation not allocated now\n", p);
        return fail(cudaErrorInvalidValue);
      }
      if (!it->second.orphan) {
        it->second.live = false;
        return ok();
      }
      // An orphan: released in stream order below, as any allocation.
    }
  }
  if (!in_device_allocation(p)) return release(p, false);  // reports the bad pointer
  submit(s, [p] { (void)release(p, false); });             // stream-ordered: after the work queued before it
  return ok();
}
cudaError_t cudaFree(void* p) {
  cugrad_emu::trace::count(__func__);
  if (const cudaError_t e = unsafe_call("cudaFree during stream capture"); e != cudaSuccess) return fail(e);
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
  if (const cudaError_t e = unsafe_call("cudaHostAlloc during stream capture"); e != cudaSuccess)
    return fail(e);
  void* p = allocate(size, t_device, true, (flags & cudaHostAllocMapped) != 0);
  if (!p) return fail(cudaErrorMemoryAllocation);
  *ptr = p;
  return ok();
}
cudaError_t cudaMallocHost(void** ptr, size_t size) { return cudaHostAlloc(ptr, size, cudaHostAllocDefault); }
cudaError_t cudaFreeHost(void* p) {
  cugrad_emu::trace::count(__func__);
  if (const cudaError_t e = unsafe_call("cudaFreeHost during stream capture"); e != cudaSuccess)
    return fail(e);
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
  if ((src_host && !pinned(src)) || (dst_host && !pinned(dst))) {
    // A graph cannot stage or wait for pageable memory.
    if (auto c = capture_of(s)) {
      invalidate(c, "cudaMemcpyAsync in a capture with pageable host memory");
      return fail(cudaErrorStreamCaptureUnsupported);
    }
  }
  cudaError_t queued = cudaSuccess;
  if (src_host && !pinned(src)) {
    // Counted apart: a program that means to overlap its host-to-device copies needs pinned
    // sources (tests/emu/dataloader_profile_test.cpp holds the DataLoader to that).
    cugrad_emu::trace::count("cudaMemcpyAsync from pageable host memory");
    auto staged =
        std::make_shared<std::vector<char>>(static_cast<const char*>(src), static_cast<const char*>(src) + n);
    queued = submit(s, [dst, staged] { std::memcpy(dst, staged->data(), staged->size()); });
  } else {
    queued = submit(s, [dst, src, n] { std::memmove(dst, src, n); });
  }
  if (queued != cudaSuccess) return fail(queued);
  if (dst_host && !pinned(dst)) wait_stream(s);
  return ok();
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
  cugrad_emu::trace::count(__func__);
  if (const cudaError_t e = unsafe_call("cudaMemcpy during stream capture"); e != cudaSuccess) return fail(e);
  const cudaError_t e = cudaMemcpyAsync(dst, src, n, kind, nullptr);
  wait_stream(nullptr);  // synchronous with respect to the host
  return e;
}
cudaError_t cudaMemcpyPeerAsync(void* dst, int dst_device, const void* src, int src_device, size_t n,
                                cudaStream_t s) {
  cugrad_emu::trace::count(__func__);
  if (dst_device < 0 || dst_device >= device_total() || src_device < 0 || src_device >= device_total())
    return fail(cudaErrorInvalidDevice);
  return cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, s);
}
cudaError_t cudaMemsetAsync(void* p, int value, size_t n, cudaStream_t s) {
  cugrad_emu::trace::count(__func__);
  if (!valid_stream(s)) return fail(cudaErrorInvalidResourceHandle);
  if (!device_range(p, n)) {
    std::fprintf(stderr,
                 "cugrad CUDA emulator: cudaMemset of %zu bytes at %p: not inside one live device "
                 "allocation\n",
                 n, p);
    return fail(cudaErrorInvalidValue);
  }
  if (n)
    if (const cudaError_t e = submit(s, [p, value, n] { std::memset(p, value, n); }); e != cudaSuccess)
      return fail(e);
  return ok();
}
cudaError_t cudaMemset(void* p, int value, size_t n) {
  cugrad_emu::trace::count(__func__);
  if (const cudaError_t e = unsafe_call("cudaMemset during stream capture"); e != cudaSuccess) return fail(e);
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
