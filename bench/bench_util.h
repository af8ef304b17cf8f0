// Shared benchmark helpers: CUDA-event timing (warm-up, then the median of many runs), the
// device-to-device copy bandwidth measured in the same run, which every kernel is compared to,
// and the smoke mode.
//
// Smoke mode (CUGRAD_BENCH_SMOKE=1 in the environment): every benchmark runs each of its code
// paths (every case, shape family and variant, with its correctness checks) on small shapes,
// without warm-up and with one timed run, so that a crash, an exception or a failed check
// shows up in seconds (on the CUDA emulator, tests/emu, or at the start of a GPU session)
// instead of minutes into a full run. Its timings mean nothing. Without the variable nothing
// changes.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#include "cugrad/cugrad.h"

namespace cugrad::bench {

/// True when CUGRAD_BENCH_SMOKE=1: small shapes, no warm-up, one timed run. The first call
/// prints a line saying so (its timings mean nothing).
inline bool smoke_mode() {
  static const bool on = [] {
    const char* v = std::getenv("CUGRAD_BENCH_SMOKE");
    const bool smoke = v != nullptr && std::strcmp(v, "1") == 0;
    if (smoke)
      std::printf(
          "SMOKE MODE (CUGRAD_BENCH_SMOKE=1): small shapes, no warm-up, one timed run; every code "
          "path and check runs, but the timings mean nothing\n");
    return smoke;
  }();
  return on;
}

namespace detail {
// The event median behind median_ms and queued_ms: `lead` untimed runs of `fn` are issued right
// before each timed one (no synchronization in between).
inline double event_median(Device dev, const std::function<void()>& fn, int warmup, int runs, int lead) {
  if (smoke_mode()) {
    warmup = 0;
    runs = 1;
  }
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> times;
  Event start(true), stop(true);
  for (int i = 0; i < runs; ++i) {
    for (int k = 0; k < lead; ++k) fn();
    start.record(Stream::current(dev));
    fn();
    stop.record(Stream::current(dev));
    stop.synchronize();
    times.push_back(stop.elapsed_ms(start));
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}
}  // namespace detail

/// Median milliseconds of `fn` over `runs` timed runs after `warmup` untimed ones, measured
/// with CUDA events on the current stream, each run started on an idle device. Smoke mode: no
/// warm-up, one timed run.
inline double median_ms(Device dev, const std::function<void()>& fn, int warmup = 5, int runs = 30) {
  return detail::event_median(dev, fn, warmup, runs, 0);
}

/// Median milliseconds of `fn` with the launch queue ahead of the device: each timed run is
/// issued right behind an untimed run of the same work (same stream, no synchronization in
/// between), so while the device executes the untimed run the host issues the start event, the
/// timed run and the stop event, and the interval holds the device's time for the run alone.
/// median_ms starts every run on an idle device, so its interval also holds the launch latency
/// and the host's issue time of the run (microseconds that dominate a 20 µs kernel); this is
/// the time the same call takes inside a training loop, where the host runs ahead. When the host
/// takes longer to issue a run than the device to execute one, the queue drains and host time
/// enters again: then the result is an upper bound. Smoke mode: no warm-up, one timed run.
inline double queued_ms(Device dev, const std::function<void()>& fn, int warmup = 5, int runs = 30) {
  return detail::event_median(dev, fn, warmup, runs, 1);
}

/// Two views of `fn` beside the event median: `total_ms`, the time per run of `runs` runs back to
/// back (no synchronization between runs, as in a training loop); and `host_ms`, the median time
/// the host takes to return from one run issued onto an idle, synchronized device, so that
/// nothing it issues can wait for a full launch queue (about a thousand pending launches; many
/// runs back to back fill it, and the host then waits for the device, so host time over many runs
/// says nothing). When host_ms is close to the event median, the host is the bottleneck. Smoke
/// mode: one run each.
struct Pipelined {
  double total_ms;
  double host_ms;
  int runs;
};
inline Pipelined pipelined_ms(Device dev, const std::function<void()>& fn, int runs = 20) {
  if (smoke_mode()) runs = 1;
  using Clock = std::chrono::steady_clock;
  const auto ms = [](Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); };
  std::vector<double> host;
  for (int i = 0; i < runs; ++i) {
    synchronize(dev);
    const auto t0 = Clock::now();
    fn();
    host.push_back(ms(Clock::now() - t0));
  }
  std::sort(host.begin(), host.end());
  synchronize(dev);
  const auto t0 = Clock::now();
  for (int i = 0; i < runs; ++i) fn();
  synchronize(dev);
  return {ms(Clock::now() - t0) / runs, host[host.size() / 2], runs};
}

/// Device-to-device copy bandwidth in GB/s (read + write bytes over time) on 256 MiB buffers
/// (1 MiB in smoke mode).
inline double copy_bandwidth_gbs(Device dev) {
  const std::int64_t n = smoke_mode() ? std::int64_t{1} << 18 : std::int64_t{64} << 20;  // floats
  Tensor a = ones({n}, dev), b = empty({n}, dev);
  const double ms = median_ms(dev, [&] { b.copy_(a); });
  return 2.0 * static_cast<double>(n) * 4 / (ms * 1e-3) / 1e9;
}

/// Device-to-host rate in GB/s through an Inspector (its pinned buffers and copy stream: the
/// link every hooked activation crosses), the median of 5 copies of 256 MiB (1 MiB in smoke
/// mode), each timed on the host from copy() to the end of flush(), after one warm-up copy that
/// allocates the pinned buffer.
inline double inspector_copy_gbs(Device dev) {
  using Clock = std::chrono::steady_clock;
  const std::int64_t n = smoke_mode() ? std::int64_t{1} << 18 : std::int64_t{64} << 20;  // floats
  const Tensor a = ones({n}, dev);
  inspect::Inspector insp({.max_pinned_bytes = static_cast<std::size_t>(n) * 4 * 2});
  double sink = 0;
  const auto once = [&] {
    synchronize(dev);
    const auto t0 = Clock::now();
    insp.copy(a, "bandwidth", [&](const HostTensor& h, const inspect::Tag&) { sink += h.data<float>()[0]; });
    insp.flush();
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  };
  once();
  std::vector<double> times;
  for (int i = 0; i < 5; ++i) times.push_back(once());
  std::sort(times.begin(), times.end());
  return static_cast<double>(n) * 4 / (times[2] * 1e-3) / 1e9 + 0 * sink;
}

/// ResNet-18's parameters in torchvision order (62 tensors, 11,689,512 elements), from the model.
inline std::vector<Shape> resnet18_parameter_shapes() {
  std::vector<Shape> s;
  for (const Tensor& p : nn::resnet18()->parameters()) s.push_back(p.shape());
  return s;
}

/// The smoke-mode stand-in for a parameter list: the same number of tensors and ranks, every
/// channel count divided by 16 (rounded up; 3 input channels stay 3), kernel sizes kept.
inline std::vector<Shape> shrunk(const std::vector<Shape>& shapes) {
  std::vector<Shape> out;
  for (Shape s : shapes) {
    for (std::size_t d = 0; d < std::min<std::size_t>(2, s.size()); ++d)
      if (s[d] > 3) s[d] = (s[d] + 15) / 16;
    out.push_back(s);
  }
  return out;
}

inline std::int64_t total_numel(const std::vector<Shape>& shapes) {
  std::int64_t n = 0;
  for (const auto& s : shapes) n += shape_numel(s);
  return n;
}

/// An optimizer's CUDA steps against its float64 CPU reference, before timing: `make(params)`
/// builds the optimizer (over CUDA float32 parameters of `shapes`, then over float64 CPU copies),
/// both take `steps` steps with the same random gradients, and the result is the largest
/// |difference| / (1 + |reference|) over every parameter element.
template <class Make>
double optimizer_validation_error(const std::vector<Shape>& shapes, Device dev, int steps, Make make) {
  TensorList gpu, cpu;
  for (const auto& shape : shapes) {
    gpu.push_back(randn(shape, dev));
    cpu.push_back(gpu.back().cpu().to(DType::float64));
  }
  auto a = make(gpu);
  auto b = make(cpu);
  for (int step = 0; step < steps; ++step) {
    for (std::size_t i = 0; i < shapes.size(); ++i) {
      const Tensor g = randn(shapes[i], dev);
      gpu[i].set_grad(g);
      cpu[i].set_grad(g.cpu().to(DType::float64));
    }
    a->step();
    b->step();
  }
  double worst = 0;
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    const Tensor err = (gpu[i].cpu().to(DType::float64) - cpu[i]).abs() / (cpu[i].abs() + 1.0);
    worst = std::max(worst, err.max().item<double>());
  }
  return worst;
}

}  // namespace cugrad::bench
