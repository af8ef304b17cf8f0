// CUDA graphs (include/cugrad/graph.h) and the capture state the runtime consults
// (host/runtime/capture.h).
//
// How the engine's own machinery behaves during a capture:
// - Allocation: the stream-ordered allocator's cudaMallocFromPoolAsync on a capturing stream
//   becomes a graph allocation node (a fixed address, recreated at each replay); its free in the
//   capture a free node. Memory allocated before the capture cannot be freed inside it (CUDA
//   refuses), so such frees wait for the capture's end. The graph is instantiated with
//   cudaGraphInstantiateFlagAutoFreeOnLaunch: graph allocations still held by tensors after the
//   capture are freed and made again (same address) by each replay.
// - Cross-stream order: runtime::stream_wait_stream skips a wait for a stream outside the capture
//   (capture_begin synchronized the device, so its work is done; CUDA refuses such a wait), and
//   a stream that waits for captured work joins the capture; capture_end rejoins it.
// - Random draws: kernels read {seed, counter base} from device memory the replay sets, so each
//   replay draws the numbers an eager run would draw from the generator's state at that point.
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <thread>
#include <unordered_set>
#include <vector>

#include "cuda/random.h"
#include "cugrad/graph.h"
#include "host/runtime/allocator.h"
#include "host/runtime/capture.h"
#include "host/runtime/cuda_context.h"
#include "host/runtime/generator.h"

namespace cugrad {

namespace runtime {
namespace {

struct DeferredFree {
  Device device;
  void* ptr;
  std::size_t nbytes;
  Stream stream;
};

struct CaptureState {
  std::mutex mutex;
  std::atomic<bool> underway{false};
  // The fields below are set by begin() and read under `mutex`.
  Device device = Device::cpu();
  Stream origin;
  std::thread::id thread;
  std::unordered_set<void*> graph_ptrs;  // allocated during the capture, not freed in it
  std::vector<DeferredFree> deferred;
  std::vector<Stream> joined;
  std::uint64_t* draw_state = nullptr;  // device {seed, base}
  std::uint64_t draw_blocks = 0;        // Philox counters the captured draws use
};

CaptureState& state() {
  static CaptureState* s = new CaptureState();  // leaked: frees may run from static destructors
  return *s;
}

// Graph allocations whose graph never ran and is gone: no CUDA free applies to them any more.
std::mutex g_orphan_mutex;
std::unordered_set<void*> g_orphans;
std::atomic<bool> g_has_orphans{false};

struct Captured {
  std::unordered_set<void*> graph_ptrs;
  std::vector<DeferredFree> deferred;
  std::uint64_t draw_blocks = 0;
};

void begin(Device device, const Stream& origin, std::uint64_t* draw_state) {
  CaptureState& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  CUGRAD_CHECK(!s.underway.load(), "CudaGraph.capture_begin: another capture is underway (on ", s.device,
               "); one capture at a time per process");
  s.device = device;
  s.origin = origin;
  s.thread = std::this_thread::get_id();
  s.graph_ptrs.clear();
  s.deferred.clear();
  s.joined.clear();
  s.draw_state = draw_state;
  s.draw_blocks = 0;
  s.underway.store(true);
}

std::vector<Stream> joined_streams() {
  CaptureState& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  return s.joined;
}

// Ends the capture's bookkeeping (after cudaStreamEndCapture) and hands back what it collected.
Captured finish() {
  CaptureState& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  Captured c{std::move(s.graph_ptrs), std::move(s.deferred), s.draw_blocks};
  s.graph_ptrs.clear();
  s.deferred.clear();
  s.joined.clear();
  s.origin = Stream();
  s.draw_state = nullptr;
  s.underway.store(false);
  return c;
}

void run_deferred(std::vector<DeferredFree>& frees) {
  for (DeferredFree& f : frees) deallocate(f.device, f.ptr, f.nbytes, f.stream);
  frees.clear();
}

void orphan(const std::unordered_set<void*>& ptrs) {
  if (ptrs.empty()) return;
  std::lock_guard<std::mutex> lock(g_orphan_mutex);
  g_orphans.insert(ptrs.begin(), ptrs.end());
  g_has_orphans.store(true);
}

bool on_capture_thread(const CaptureState& s) { return s.thread == std::this_thread::get_id(); }

}  // namespace

bool capture_underway() { return state().underway.load(std::memory_order_acquire); }

bool stream_is_capturing(const Stream& stream) {
  if (!stream.handle()) return false;
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  CUGRAD_CUDA_CHECK(cudaStreamIsCapturing(cuda_stream(stream), &status));
  return status != cudaStreamCaptureStatusNone;
}

void check_not_capturing(const char* op, Device device) {
  if (!capture_underway() || !device.is_cuda()) return;
  CUGRAD_CHECK(!stream_is_capturing(Stream::current(device)), op, ": cannot run while the current stream of ",
               device,
               " is being captured into a CUDA graph (it needs the host: a synchronization or a "
               "copy to or from host memory); run it before capture_begin or after capture_end");
}

void note_joined_stream(const Stream& stream) {
  CaptureState& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (!s.underway.load() || stream == s.origin) return;
  if (std::find(s.joined.begin(), s.joined.end(), stream) == s.joined.end()) s.joined.push_back(stream);
}

void capture_allocated(void* ptr) {
  if (g_has_orphans.load()) {
    // CUDA may give a new graph allocation the address of an orphan (graph memory addresses are
    // reused across graphs): the address now belongs to the new allocation and its free. (A
    // stale tensor still holding the orphan would then free the new allocation: tensors from a
    // capture that never ran hold garbage and should be dropped before the next capture.)
    std::lock_guard<std::mutex> lock(g_orphan_mutex);
    if (g_orphans.erase(ptr) > 0) g_has_orphans.store(!g_orphans.empty());
  }
  CaptureState& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (s.underway.load()) s.graph_ptrs.insert(ptr);
}

CaptureFree capture_take_free(Device device, void* ptr, std::size_t nbytes, Stream* stream) {
  if (g_has_orphans.load()) {
    std::lock_guard<std::mutex> lock(g_orphan_mutex);
    if (g_orphans.erase(ptr) > 0) {
      g_has_orphans.store(!g_orphans.empty());
      return CaptureFree::dropped;  // its graph never ran and is destroyed: nothing to free
    }
  }
  if (!capture_underway()) return CaptureFree::now;
  CaptureState& s = state();
  std::unique_lock<std::mutex> lock(s.mutex);
  if (!s.underway.load() || device != s.device) return CaptureFree::now;
  if (s.graph_ptrs.erase(ptr) == 0) {
    // Allocated before the capture (or on a stream outside it): CUDA refuses to free it inside
    // the capture; free it, ordered on the same stream, once the capture is over.
    s.deferred.push_back(DeferredFree{device, ptr, nbytes, *stream});
    return CaptureFree::deferred;
  }
  // A graph allocation: free it inside the graph, on a captured stream.
  const Stream origin = s.origin;
  lock.unlock();
  if (!stream_is_capturing(*stream))
    *stream = origin;
  else if (!(*stream == origin))
    note_joined_stream(*stream);
  return CaptureFree::now;
}

bool has_orphans() { return g_has_orphans.load(std::memory_order_relaxed); }

DeviceDraw reserve_device_random(Device device, std::uint64_t blocks) {
  if (device.is_cuda() && capture_underway() && stream_is_capturing(Stream::current(device))) {
    CaptureState& s = state();
    std::lock_guard<std::mutex> lock(s.mutex);
    if (s.underway.load() && device == s.device && on_capture_thread(s)) {
      DeviceDraw d{0, s.draw_blocks, s.draw_state};
      s.draw_blocks += blocks;
      return d;
    }
  }
  const GeneratorState g = reserve_random(blocks);
  return DeviceDraw{g.seed, g.offset, nullptr};
}

}  // namespace runtime

// ---- CudaGraph ----

struct CudaGraph::Impl {
  Stream stream;
  std::unique_ptr<StreamGuard> guard;  // the capture stream is current while capturing
  std::thread::id thread;
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  std::uint64_t* draw_state = nullptr;
  std::uint64_t draw_blocks = 0;
  std::unordered_set<void*> graph_ptrs;  // allocations the graph left to tensors
  std::size_t nodes = 0;
  bool capturing = false;
  bool launched = false;

  ~Impl() {
    if (capturing) abandon();
    drop_graph();
    free_draw_state();
  }

  void free_draw_state() {
    if (!draw_state) return;
    runtime::deallocate(stream.device(), draw_state, 2 * sizeof(std::uint64_t), stream);
    draw_state = nullptr;
  }

  // Forgets the capture's allocations and draws; those of a graph that never ran become orphans
  // (never materialized: nothing to free later).
  void forget_capture() {
    if (!launched) runtime::orphan(graph_ptrs);
    graph_ptrs.clear();
    draw_blocks = 0;
  }

  void drop_graph() {
    forget_capture();
    if (exec || graph) {
      runtime::DeviceGuard g(stream.device());
      if (exec) CUGRAD_CUDA_CHECK_NOTHROW(cudaGraphExecDestroy(exec));
      if (graph) CUGRAD_CUDA_CHECK_NOTHROW(cudaGraphDestroy(graph));
    }
    exec = nullptr;
    graph = nullptr;
    nodes = 0;
    launched = false;
  }

  // Ends CUDA's capture and the runtime's; the deferred frees run once nothing is capturing.
  cudaError_t end(cudaGraph_t* out) {
    runtime::DeviceGuard g(stream.device());
    const cudaError_t err = cudaStreamEndCapture(runtime::cuda_stream(stream), out);
    if (err != cudaSuccess) (void)cudaGetLastError();
    runtime::Captured c = runtime::finish();
    capturing = false;
    guard.reset();
    graph_ptrs = std::move(c.graph_ptrs);
    draw_blocks = c.draw_blocks;
    runtime::run_deferred(c.deferred);
    return err;
  }

  void abandon() noexcept {
    try {
      cudaGraph_t g = nullptr;
      (void)end(&g);
      if (g) CUGRAD_CUDA_CHECK_NOTHROW(cudaGraphDestroy(g));
      forget_capture();
    } catch (...) {
    }
  }
};

CudaGraph::CudaGraph() : impl_(std::make_unique<Impl>()) {}
CudaGraph::~CudaGraph() = default;
CudaGraph::CudaGraph(CudaGraph&&) noexcept = default;
CudaGraph& CudaGraph::operator=(CudaGraph&&) noexcept = default;

void CudaGraph::capture_begin(const Stream& stream) {
  CUGRAD_CHECK(impl_, "CudaGraph: used after being moved from");
  Impl& m = *impl_;
  CUGRAD_CHECK(!m.capturing, "CudaGraph.capture_begin: this graph is already capturing");
  CUGRAD_CHECK(!m.exec, "CudaGraph.capture_begin: this graph already holds a capture; reset() it first");
  CUGRAD_CHECK(stream.device().is_cuda() && stream.handle(),
               "CudaGraph.capture_begin: needs a CUDA stream, got a stream of ", stream.device());
  CUGRAD_CHECK(!(stream == Stream::default_stream(stream.device())),
               "CudaGraph.capture_begin: cannot capture cugrad's default stream of ", stream.device(),
               "; capture on a stream from Stream::create");
  // Before anything touches the device: a synchronization would break the capture underway.
  CUGRAD_CHECK(!runtime::capture_underway(),
               "CudaGraph.capture_begin: another capture is underway; one "
               "capture at a time per process");
  const Device device = stream.device();
  runtime::DeviceGuard g(device);
  if (!m.draw_state || !(m.stream == stream)) {
    m.free_draw_state();
    m.draw_state = static_cast<std::uint64_t*>(runtime::allocate(device, 2 * sizeof(std::uint64_t), stream));
  }
  m.stream = stream;
  // Everything queued before the capture completes first: the captured work may then skip its
  // waits for streams outside the capture (CUDA refuses them).
  CUGRAD_CUDA_CHECK(cudaDeviceSynchronize());
  runtime::begin(device, stream, m.draw_state);
  m.guard = std::make_unique<StreamGuard>(stream);
  const cudaError_t err =
      cudaStreamBeginCapture(runtime::cuda_stream(stream), cudaStreamCaptureModeThreadLocal);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    m.guard.reset();
    runtime::Captured c = runtime::finish();
    runtime::run_deferred(c.deferred);
    CUGRAD_CUDA_CHECK(err);
  }
  m.capturing = true;
  m.thread = std::this_thread::get_id();
}

void CudaGraph::capture_end() {
  CUGRAD_CHECK(impl_ && impl_->capturing, "CudaGraph.capture_end: no capture underway on this graph");
  Impl& m = *impl_;
  CUGRAD_CHECK(m.thread == std::this_thread::get_id(),
               "CudaGraph.capture_end: must be called on the thread that began the capture");
  // Every stream that joined the capture rejoins the capture's stream (CUDA requires it).
  std::string rejoin_error;
  try {
    for (const Stream& s : runtime::joined_streams())
      if (runtime::stream_is_capturing(s)) runtime::stream_wait_stream(m.stream, s);
  } catch (const std::exception& e) {
    rejoin_error = e.what();
  }
  cudaGraph_t graph = nullptr;
  const cudaError_t err = m.end(&graph);
  if (err != cudaSuccess || !graph || !rejoin_error.empty()) {
    if (graph) CUGRAD_CUDA_CHECK_NOTHROW(cudaGraphDestroy(graph));
    m.forget_capture();
    throw Error(detail::cat("CudaGraph.capture_end: the capture on ", m.stream.device(), " failed: ",
                            rejoin_error.empty() ? cudaGetErrorString(err) : rejoin_error.c_str(),
                            " (was something that needs the host, or a stream outside the capture, "
                            "used during it?)"));
  }
  m.graph = graph;
  runtime::DeviceGuard g(m.stream.device());
  std::size_t nodes = 0;
  CUGRAD_CUDA_CHECK(cudaGraphGetNodes(graph, nullptr, &nodes));
  m.nodes = nodes;
  const cudaError_t ierr =
      cudaGraphInstantiateWithFlags(&m.exec, graph, cudaGraphInstantiateFlagAutoFreeOnLaunch);
  if (ierr != cudaSuccess) {
    (void)cudaGetLastError();
    m.exec = nullptr;
    m.drop_graph();
    CUGRAD_CUDA_CHECK(ierr);
  }
}

void CudaGraph::capture_abandon() {
  if (impl_ && impl_->capturing) impl_->abandon();
}

void CudaGraph::replay() {
  CUGRAD_CHECK(impl_ && impl_->exec, "CudaGraph.replay: nothing captured (capture_begin, then capture_end)");
  Impl& m = *impl_;
  const Device device = m.stream.device();
  runtime::check_not_capturing("CudaGraph.replay", device);
  runtime::DeviceGuard g(device);
  const Stream current = Stream::current(device);
  runtime::stream_wait_stream(m.stream, current);
  if (m.draw_blocks > 0) {
    const GeneratorState draw = runtime::reserve_random(m.draw_blocks);
    cuda::set_draw_state(m.draw_state, draw.seed, draw.offset, m.stream.handle());
  }
  CUGRAD_CUDA_CHECK(cudaGraphLaunch(m.exec, runtime::cuda_stream(m.stream)));
  m.launched = true;
  runtime::stream_wait_stream(current, m.stream);
}

void CudaGraph::reset() {
  if (!impl_) return;
  if (impl_->capturing) impl_->abandon();
  impl_->drop_graph();
}

bool CudaGraph::captured() const { return impl_ && impl_->exec; }
bool CudaGraph::capturing() const { return impl_ && impl_->capturing; }
Stream CudaGraph::stream() const { return impl_ ? impl_->stream : Stream(); }
std::size_t CudaGraph::node_count() const { return impl_ ? impl_->nodes : 0; }

}  // namespace cugrad
