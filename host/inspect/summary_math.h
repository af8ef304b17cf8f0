// The statistics state of inspect::summary and how two partial states merge (Chan et al.'s
// parallel variance), shared by the CPU loop and the CUDA kernels.
#pragma once

#include <cstdint>

#include "cugrad/macros.h"

namespace cugrad::inspect {

struct SummaryState {
  double n;        // finite values seen
  double mean;
  double m2;       // sum of squared deviations from the mean
  double min, max, abs_max;
  unsigned long long nan_count, inf_count;
};

CUGRAD_HOST_DEVICE CUGRAD_INLINE SummaryState summary_identity() {
  return SummaryState{0.0, 0.0, 0.0, 1.0 / 0.0 * 1.0, -1.0 / 0.0, 0.0, 0ull, 0ull};
}

CUGRAD_HOST_DEVICE CUGRAD_INLINE void summary_add(SummaryState& s, double x) {
  if (x != x) {
    s.nan_count++;
    return;
  }
  if (x - x != 0.0) {  // +-Inf
    s.inf_count++;
    return;
  }
  s.n += 1.0;
  const double d = x - s.mean;
  s.mean += d / s.n;
  s.m2 += d * (x - s.mean);
  s.min = x < s.min ? x : s.min;
  s.max = x > s.max ? x : s.max;
  const double a = x < 0 ? -x : x;
  s.abs_max = a > s.abs_max ? a : s.abs_max;
}

CUGRAD_HOST_DEVICE CUGRAD_INLINE SummaryState summary_merge(const SummaryState& a, const SummaryState& b) {
  if (a.n == 0.0) {
    SummaryState r = b;
    r.nan_count += a.nan_count;
    r.inf_count += a.inf_count;
    return r;
  }
  if (b.n == 0.0) {
    SummaryState r = a;
    r.nan_count += b.nan_count;
    r.inf_count += b.inf_count;
    return r;
  }
  SummaryState r;
  r.n = a.n + b.n;
  const double d = b.mean - a.mean;
  r.mean = a.mean + d * (b.n / r.n);
  r.m2 = a.m2 + b.m2 + d * d * (a.n * b.n / r.n);
  r.min = a.min < b.min ? a.min : b.min;
  r.max = a.max > b.max ? a.max : b.max;
  r.abs_max = a.abs_max > b.abs_max ? a.abs_max : b.abs_max;
  r.nan_count = a.nan_count + b.nan_count;
  r.inf_count = a.inf_count + b.inf_count;
  return r;
}

/// Bin of finite value x in `bins` equal bins over [lo, hi]; outside values clamp to the ends.
CUGRAD_HOST_DEVICE CUGRAD_INLINE int summary_bin(double x, double lo, double hi, int bins) {
  if (!(hi > lo)) return 0;
  double f = (x - lo) / (hi - lo) * bins;
  int b = f < 0 ? 0 : (f >= bins ? bins - 1 : static_cast<int>(f));
  return b;
}

}  // namespace cugrad::inspect
