// Streams and events. Every op runs on the current stream of its device; the current stream
// is per device and per thread, set with StreamGuard. Handles are opaque (no CUDA types here).
#pragma once

#include <memory>

#include "cugrad/device.h"

namespace cugrad {

/// A CUDA stream (or the CPU's trivial stream). Copyable handle; the stream lives while any
/// handle to a created stream does. The default stream of each device is owned by cugrad.
class Stream {
 public:
  Stream() = default;  // the CPU stream
  /// A new non-blocking stream on `device` (priority 0: normal; negative: higher).
  static Stream create(Device device, int priority = 0);
  /// The current stream of `device` for this thread.
  static Stream current(Device device);
  /// cugrad's default stream of `device` (what current() returns outside any StreamGuard).
  static Stream default_stream(Device device);

  Device device() const { return device_; }
  /// The underlying cudaStream_t as an opaque pointer (nullptr for the CPU stream).
  void* handle() const { return handle_; }
  /// Waits until every operation queued on the stream has finished.
  void synchronize() const;
  /// True when all queued work has finished (non-blocking).
  bool query() const;

  friend bool operator==(const Stream& a, const Stream& b) {
    return a.device_ == b.device_ && a.handle_ == b.handle_;
  }

 private:
  struct Owner;
  Stream(Device d, void* h, std::shared_ptr<Owner> o) : device_(d), handle_(h), owner_(std::move(o)) {}
  Device device_ = Device::cpu();
  void* handle_ = nullptr;
  std::shared_ptr<Owner> owner_;
};

/// Makes `stream` the current stream of its device for this thread until destroyed.
class StreamGuard {
 public:
  explicit StreamGuard(const Stream& stream);
  ~StreamGuard();
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  Stream previous_;
  Device device_;
};

/// A CUDA event (RAII). record() on a stream, wait() makes another stream wait for it,
/// query()/synchronize() from the host, elapsed_ms() between two timing events.
class Event {
 public:
  explicit Event(bool enable_timing = false);
  ~Event();
  Event(Event&& other) noexcept;
  Event& operator=(Event&& other) noexcept;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  void record(const Stream& stream);
  /// Record on the current stream of `device`.
  void record(Device device) { record(Stream::current(device)); }
  /// Makes `stream` wait (on the device, without blocking the host) for the last record.
  void wait(const Stream& stream) const;
  bool query() const;
  void synchronize() const;
  /// Milliseconds between `start` (recorded earlier) and this event; both need timing.
  float elapsed_ms(const Event& start) const;
  bool recorded() const { return recorded_; }
  void* handle() const { return handle_; }

 private:
  void* handle_ = nullptr;
  Device device_ = Device::cpu();
  bool timing_ = false;
  bool recorded_ = false;
};

}  // namespace cugrad
