// inspect::summary: dispatch to the CUDA kernels or a CPU loop over the same math.
#include <cmath>
#include <limits>

#include "cuda/summary.h"
#include "cugrad/inspect.h"
#include "host/inspect/summary_math.h"
#include "host/ops/op_util.h"
#include "host/runtime/capture.h"
#include "host/tensor/dispatch.h"

namespace cugrad::inspect {

namespace {
Summary finish(const SummaryState& s, std::int64_t count, const std::vector<unsigned long long>& hist, double lo,
               double hi) {
  Summary r;
  r.count = count;
  r.finite = static_cast<std::int64_t>(s.n);
  r.nan_count = static_cast<std::int64_t>(s.nan_count);
  r.inf_count = static_cast<std::int64_t>(s.inf_count);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  r.mean = s.n > 0 ? s.mean : nan;
  r.std = s.n > 0 ? std::sqrt(s.m2 / s.n) : nan;
  r.min = s.n > 0 ? s.min : nan;
  r.max = s.n > 0 ? s.max : nan;
  r.abs_max = s.n > 0 ? s.abs_max : nan;
  r.hist_lo = lo;
  r.hist_hi = hi;
  r.histogram.assign(hist.begin(), hist.end());
  return r;
}
}  // namespace

Summary summary(const Tensor& t, int bins, std::optional<std::pair<double, double>> range) {
  check_defined("inspect::summary", t);
  CUGRAD_CHECK(bins >= 1 && bins <= 4096, "inspect::summary: bins must be in [1, 4096], got ", bins);
  if (range)
    CUGRAD_CHECK(std::isfinite(range->first) && std::isfinite(range->second) && range->first < range->second,
                 "inspect::summary: bad range [", range->first, ", ", range->second, "]");
  const std::int64_t n = t.numel();
  std::vector<unsigned long long> hist(static_cast<std::size_t>(bins), 0);
  if (t.is_cuda()) {
    runtime::check_not_capturing("inspect::summary", t.device());
    const Tensor x = t.dtype() == DType::float32 ? t : t.to(DType::float32);
    OpScope scope("inspect::summary", x.device());
    scope.reads(x);
    Tensor ws = empty({static_cast<std::int64_t>(cuda::summary_workspace_bytes(n, bins))}, x.device(), DType::uint8);
    scope.writes(ws);
    SummaryState state{};
    double lohi[2] = {0, 0};
    cuda::summary_f32(static_cast<const float*>(x.raw_data()), n, bins, range.has_value(),
                      range ? range->first : 0.0, range ? range->second : 0.0, ws.raw_data(), &state, hist.data(),
                      lohi, scope.stream());
    return finish(state, n, hist, lohi[0], lohi[1]);
  }
  const std::vector<double> v = t.to(DType::float64).to_vector<double>();
  SummaryState s = summary_identity();
  for (double x : v) summary_add(s, x);
  const double lo = range ? range->first : (s.n > 0 ? s.min : 0.0);
  const double hi = range ? range->second : (s.n > 0 ? s.max : 0.0);
  for (double x : v)
    if (std::isfinite(x)) hist[static_cast<std::size_t>(summary_bin(x, lo, hi, bins))]++;
  return finish(s, n, hist, lo, hi);
}

}  // namespace cugrad::inspect
