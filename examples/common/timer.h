// Stopwatch: wall-clock timing on the steady clock (epoch times, images per second).
#pragma once

#include <chrono>

namespace cugrad::examples {

/// Starts on construction; seconds() is the time since then (or since the last reset()).
class Stopwatch {
 public:
  using Clock = std::chrono::steady_clock;

  Stopwatch() : start_(Clock::now()) {}
  void reset() { start_ = Clock::now(); }
  double seconds() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }
  double milliseconds() const { return seconds() * 1e3; }

 private:
  Clock::time_point start_;
};

}  // namespace cugrad::examples
