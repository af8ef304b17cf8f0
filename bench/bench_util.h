// Shared benchmark helpers: CUDA-event timing (warm-up, then the median of many runs) and the
// device-to-device copy bandwidth measured in the same run, which every kernel is compared to.
#pragma once

#include <algorithm>
#include <cstdio>
#include <functional>
#include <vector>

#include "cugrad/cugrad.h"

namespace cugrad::bench {

/// Median milliseconds of `fn` over `runs` timed runs after `warmup` untimed ones, measured
/// with CUDA events on the current stream.
inline double median_ms(Device dev, const std::function<void()>& fn, int warmup = 5, int runs = 30) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> times;
  Event start(true), stop(true);
  for (int i = 0; i < runs; ++i) {
    start.record(Stream::current(dev));
    fn();
    stop.record(Stream::current(dev));
    stop.synchronize();
    times.push_back(stop.elapsed_ms(start));
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

/// Device-to-device copy bandwidth in GB/s (read + write bytes over time) on 256 MiB buffers.
inline double copy_bandwidth_gbs(Device dev) {
  const std::int64_t n = std::int64_t{64} << 20;  // floats
  Tensor a = ones({n}, dev), b = empty({n}, dev);
  const double ms = median_ms(dev, [&] { b.copy_(a); });
  return 2.0 * static_cast<double>(n) * 4 / (ms * 1e-3) / 1e9;
}

}  // namespace cugrad::bench
