// Streams (current stream per device and thread), StreamGuard, Event, and the scratch event
// that orders one stream after another.
#include <cuda_runtime.h>

#include <mutex>
#include <vector>

#include "cugrad/stream.h"
#include "host/runtime/capture.h"
#include "host/runtime/cuda_context.h"
#include "host/runtime/device_errors.h"

namespace cugrad {

struct Stream::Owner {
  cudaStream_t stream = nullptr;
  int device = 0;
  ~Owner() {
    if (stream) {
      runtime::DeviceGuard g(Device::cuda(device));
      CUGRAD_CUDA_CHECK_NOTHROW(cudaStreamDestroy(stream));
    }
  }
};

namespace {
constexpr int kMaxDevices = 64;

std::mutex g_default_mutex;
Stream* g_default_streams[kMaxDevices] = {};

thread_local Stream* t_current[kMaxDevices] = {};  // null: the default stream

void check_cuda_device(Device device, const char* op) {
  CUGRAD_CHECK(device.is_cuda(), op, ": needs a CUDA device, got ", device);
  check_device_available(device, op);
  CUGRAD_CHECK(device.index() < kMaxDevices, op, ": device index ", device.index(), " too large");
}
}  // namespace

Stream Stream::create(Device device, int priority) {
  if (device.is_cpu()) return Stream();
  check_cuda_device(device, "Stream::create");
  runtime::DeviceGuard g(device);
  auto owner = std::make_shared<Owner>();
  owner->device = device.index();
  int lo = 0, hi = 0;
  CUGRAD_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&lo, &hi));
  const int p = std::max(hi, std::min(lo, priority));  // hi is the numerically lowest
  CUGRAD_CUDA_CHECK(cudaStreamCreateWithPriority(&owner->stream, cudaStreamNonBlocking, p));
  cudaStream_t h = owner->stream;
  return Stream(device, h, std::move(owner));
}

Stream Stream::default_stream(Device device) {
  if (device.is_cpu()) return Stream();
  check_cuda_device(device, "Stream::default_stream");
  std::lock_guard<std::mutex> lock(g_default_mutex);
  Stream*& s = g_default_streams[device.index()];
  // Intentionally never destroyed: the default streams live until the process exits, and
  // destroying them from a static destructor could run after the driver has shut down.
  if (!s) s = new Stream(create(device));
  return *s;
}

Stream Stream::current(Device device) {
  if (device.is_cpu()) return Stream();
  CUGRAD_CHECK(device.index() >= 0 && device.index() < kMaxDevices, "Stream::current: bad device ", device);
  if (Stream* s = t_current[device.index()]) return *s;
  return default_stream(device);
}

void Stream::synchronize() const {
  if (!handle_) return;
  CUGRAD_CHECK(!runtime::capture_underway() || !runtime::stream_is_capturing(*this),
               "Stream.synchronize: the stream is being captured into a CUDA graph; a capture cannot "
               "wait for itself (synchronize before capture_begin or after capture_end)");
  runtime::DeviceGuard g(device_);
  CUGRAD_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(handle_)));
  runtime::check_device_errors(device_);
}

bool Stream::query() const {
  if (!handle_) return true;
  cudaError_t err = cudaStreamQuery(static_cast<cudaStream_t>(handle_));
  if (err == cudaErrorNotReady) {
    (void)cudaGetLastError();
    return false;
  }
  CUGRAD_CUDA_CHECK(err);
  return true;
}

StreamGuard::StreamGuard(const Stream& stream) : device_(stream.device()) {
  if (device_.is_cpu()) return;
  Stream*& slot = t_current[device_.index()];
  previous_ = slot ? *slot : Stream::default_stream(device_);
  delete slot;
  slot = new Stream(stream);
}

StreamGuard::~StreamGuard() {
  if (device_.is_cpu()) return;
  Stream*& slot = t_current[device_.index()];
  delete slot;
  slot = new Stream(previous_);
}

// ---- Event ----

Event::Event(bool enable_timing) : timing_(enable_timing) {}

namespace {
void destroy_event(void*& handle, Device device) noexcept {
  if (!handle) return;
  try {
    runtime::DeviceGuard g(device);
    CUGRAD_CUDA_CHECK_NOTHROW(cudaEventDestroy(static_cast<cudaEvent_t>(handle)));
  } catch (...) {
  }
  handle = nullptr;
}
}  // namespace

Event::~Event() { destroy_event(handle_, device_); }

Event::Event(Event&& o) noexcept
    : handle_(o.handle_), device_(o.device_), timing_(o.timing_), recorded_(o.recorded_) {
  o.handle_ = nullptr;
  o.recorded_ = false;
}

Event& Event::operator=(Event&& o) noexcept {
  if (this != &o) {
    destroy_event(handle_, device_);
    handle_ = o.handle_;
    device_ = o.device_;
    timing_ = o.timing_;
    recorded_ = o.recorded_;
    o.handle_ = nullptr;
    o.recorded_ = false;
  }
  return *this;
}

void Event::record(const Stream& stream) {
  CUGRAD_CHECK(stream.device().is_cuda(), "Event::record: needs a CUDA stream, got ", stream.device());
  if (handle_ && device_ != stream.device()) destroy_event(handle_, device_);
  runtime::DeviceGuard g(stream.device());
  if (!handle_) {
    cudaEvent_t ev;
    CUGRAD_CUDA_CHECK(cudaEventCreateWithFlags(&ev, timing_ ? cudaEventDefault : cudaEventDisableTiming));
    handle_ = ev;
    device_ = stream.device();
  }
  CUGRAD_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(handle_), runtime::cuda_stream(stream)));
  recorded_ = true;
}

void Event::wait(const Stream& stream) const {
  if (!recorded_ || !stream.handle()) return;
  runtime::DeviceGuard g(stream.device());
  CUGRAD_CUDA_CHECK(cudaStreamWaitEvent(runtime::cuda_stream(stream), static_cast<cudaEvent_t>(handle_), 0));
  // Waiting for an event recorded during a capture makes the stream join the capture.
  if (runtime::capture_underway() && runtime::stream_is_capturing(stream))
    runtime::note_joined_stream(stream);
}

bool Event::query() const {
  if (!recorded_) return true;
  cudaError_t err = cudaEventQuery(static_cast<cudaEvent_t>(handle_));
  if (err == cudaErrorNotReady) {
    (void)cudaGetLastError();
    return false;
  }
  CUGRAD_CUDA_CHECK(err);
  return true;
}

void Event::synchronize() const {
  if (!recorded_) return;
  CUGRAD_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(handle_)));
}

float Event::elapsed_ms(const Event& start) const {
  CUGRAD_CHECK(timing_ && start.timing_, "Event::elapsed_ms: both events need enable_timing=true");
  CUGRAD_CHECK(recorded_ && start.recorded_, "Event::elapsed_ms: both events must be recorded first");
  float ms = 0.f;
  CUGRAD_CUDA_CHECK(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start.handle_),
                                         static_cast<cudaEvent_t>(handle_)));
  return ms;
}

namespace runtime {

void stream_wait_stream(const Stream& waiter, const Stream& producer) {
  if (!waiter.handle() || !producer.handle() || waiter == producer) return;
  if (capture_underway()) {
    const bool waiter_captured = stream_is_capturing(waiter);
    // A captured stream cannot wait for work outside the capture (CUDA refuses it); that work
    // was queued before capture_begin, which waited for the whole device.
    if (waiter_captured && !stream_is_capturing(producer)) return;
    // A stream outside the capture that waits for captured work joins the capture.
    if (!waiter_captured && stream_is_capturing(producer)) note_joined_stream(waiter);
  }
  // cudaStreamWaitEvent captures the event's state at the call, so one scratch event per
  // device and thread can be re-recorded right away.
  thread_local cudaEvent_t events[kMaxDevices] = {};
  const int d = producer.device().index();
  DeviceGuard g(producer.device());
  if (!events[d]) CUGRAD_CUDA_CHECK(cudaEventCreateWithFlags(&events[d], cudaEventDisableTiming));
  CUGRAD_CUDA_CHECK(cudaEventRecord(events[d], cuda_stream(producer)));
  CUGRAD_CUDA_CHECK(cudaStreamWaitEvent(cuda_stream(waiter), events[d], 0));
}

}  // namespace runtime
}  // namespace cugrad
