// Asynchronous inspection of tensors: the Inspector copies device tensors to pinned host
// memory on its own stream and hands them to callbacks on a worker thread, without stalling
// the GPU; summary() computes statistics and a histogram on the device and copies back a few
// hundred bytes.
#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cugrad/tensor.h"

namespace cugrad {

/// A read-only view of host memory holding one copied tensor; valid during the callback.
class HostTensor {
 public:
  HostTensor(const void* data, Shape shape, DType dtype) : data_(data), shape_(std::move(shape)), dtype_(dtype) {}
  const Shape& shape() const { return shape_; }
  DType dtype() const { return dtype_; }
  std::int64_t numel() const { return shape_numel(shape_); }
  /// Pointer to the elements; T must match dtype().
  template <typename T> const T* data() const {
    CUGRAD_CHECK(dtype_of<T> == dtype_, "HostTensor::data: requested ", dtype_of<T>, " from a ", dtype_, " tensor");
    return static_cast<const T*>(data_);
  }
  /// A copy of the elements that outlives the callback.
  template <typename T> std::vector<T> to_vector() const {
    const T* p = data<T>();
    return std::vector<T>(p, p + numel());
  }

 private:
  const void* data_;
  Shape shape_;
  DType dtype_;
};

namespace inspect {

enum class Phase : std::uint8_t { none, forward, backward };
const char* phase_name(Phase p);

/// What a delivery is: a name (module name, tensor label), the phase and training step it
/// belongs to, and a sequence number the Inspector assigns in submission order.
struct Tag {
  std::string name;
  Phase phase = Phase::none;
  std::int64_t step = -1;
  std::uint64_t sequence = 0;
  Tag() = default;
  Tag(std::string n, Phase p = Phase::none, std::int64_t s = -1) : name(std::move(n)), phase(p), step(s) {}
  Tag(const char* n) : name(n) {}
  /// Lets callbacks take the tag as `const std::string&` (the name).
  operator const std::string&() const { return name; }
};

using Callback = std::function<void(const HostTensor&, const Tag&)>;

enum class WhenFull : std::uint8_t {
  block,        // copy() waits until enough pinned memory is free (default)
  drop_newest,  // copy() drops this tensor and counts it
};

struct InspectorOptions {
  std::size_t max_pinned_bytes = std::size_t{256} << 20;
  WhenFull when_full = WhenFull::block;
};

struct InspectorStats {
  std::uint64_t submitted = 0;  // accepted copies
  std::uint64_t delivered = 0;  // callbacks run (or that threw)
  std::uint64_t dropped = 0;    // refused because the pinned budget was full (drop_newest)
  std::uint64_t blocked = 0;    // copies that had to wait for pinned memory (block)
  std::size_t pinned_in_use = 0;
  std::size_t peak_pinned_in_use = 0;
};

/// Copies tensors for host-side inspection without stalling the compute stream.
///
/// copy(t, tag, cb): the copy runs on the Inspector's own stream after the work that
/// produced t (an event on the producing stream), into a pinned buffer from a bounded pool;
/// cb(host_tensor, tag) then runs on the Inspector's worker thread, in submission order.
/// t's memory stays alive until its copy is done, and a later in-place write to t (on any
/// stream) waits for the copy, so the callback sees exactly the values t had at copy().
/// CPU tensors go through the same path (copied at once). No CUDA call ever runs inside a
/// stream callback: the worker waits on events.
class Inspector {
 public:
  explicit Inspector(InspectorOptions options = {});
  /// Flushes; an exception a callback threw and nobody collected is reported on stderr.
  ~Inspector();
  Inspector(const Inspector&) = delete;
  Inspector& operator=(const Inspector&) = delete;

  /// Queues a copy of `t`. Returns false when it was dropped (WhenFull::drop_newest). Throws
  /// when one tensor is larger than the whole pinned budget.
  bool copy(const Tensor& t, Tag tag, Callback callback);
  /// Waits until every queued callback has run, then rethrows the first exception a callback
  /// threw since the last flush.
  void flush();
  InspectorStats stats() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

/// Statistics of a tensor's values (NaN and Inf are counted and left out of the rest).
struct Summary {
  std::int64_t count = 0;   // all elements
  std::int64_t finite = 0;  // elements that are neither NaN nor Inf
  double mean = 0, std = 0, min = 0, max = 0, abs_max = 0;
  std::int64_t nan_count = 0, inf_count = 0;
  double hist_lo = 0, hist_hi = 0;    // histogram range
  std::vector<std::int64_t> histogram;  // `bins` equal bins over [hist_lo, hist_hi]
};

/// Computes a Summary on the tensor's device (one statistics reduction, one histogram pass,
/// no host round trip between them) and copies back only the result. The histogram covers
/// `range` when given, else [min, max] of the finite values; values outside go to the end bins.
/// std is the population standard deviation.
Summary summary(const Tensor& t, int bins = 32, std::optional<std::pair<double, double>> range = std::nullopt);

}  // namespace inspect
}  // namespace cugrad
