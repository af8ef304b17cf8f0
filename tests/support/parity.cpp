// Parity harness implementation.
#include "tests/support/parity.h"

#include <cmath>
#include <sstream>

#include "host/runtime/allocator.h"

namespace cugrad::testing {

namespace {

std::vector<double> as_doubles(const Tensor& t) { return t.cpu().to(DType::float64).to_vector<double>(); }

std::string index_str(std::int64_t flat, const Shape& shape) {
  std::vector<std::int64_t> idx(shape.size());
  for (std::size_t d = shape.size(); d-- > 0;) {
    idx[d] = flat % shape[d];
    flat /= shape[d];
  }
  return shape_str(idx);
}

}  // namespace

::testing::AssertionResult all_close(const Tensor& actual, const Tensor& expected, Tolerance tol) {
  if (actual.shape() != expected.shape())
    return ::testing::AssertionFailure() << "shape mismatch: actual " << shape_str(actual.shape()) << ", expected "
                                         << shape_str(expected.shape());
  const auto a = as_doubles(actual), e = as_doubles(expected);
  std::int64_t worst = -1, bad = 0;
  double worst_excess = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const bool a_nan = std::isnan(a[i]), e_nan = std::isnan(e[i]);
    double excess;
    if (a_nan || e_nan) {
      excess = (a_nan && e_nan) ? 0 : INFINITY;
    } else if (std::isinf(e[i]) || std::isinf(a[i])) {
      excess = a[i] == e[i] ? 0 : INFINITY;
    } else {
      excess = std::fabs(a[i] - e[i]) - (tol.atol + tol.rtol * std::fabs(e[i]));
    }
    if (excess > 0) {
      ++bad;
      if (worst < 0 || excess > worst_excess) {
        worst = static_cast<std::int64_t>(i);
        worst_excess = excess;
      }
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  const auto w = static_cast<std::size_t>(worst);
  return ::testing::AssertionFailure() << bad << " of " << a.size() << " elements differ (atol " << tol.atol
                                       << ", rtol " << tol.rtol << "); worst at " << index_str(worst, actual.shape())
                                       << " (flat " << worst << "): actual " << std::setprecision(10) << a[w]
                                       << ", expected " << e[w];
}

::testing::AssertionResult norm_close(const Tensor& actual, const Tensor& expected, double tol) {
  if (actual.shape() != expected.shape())
    return ::testing::AssertionFailure() << "shape mismatch: actual " << shape_str(actual.shape()) << ", expected "
                                         << shape_str(expected.shape());
  const auto a = as_doubles(actual), e = as_doubles(expected);
  double num = 0, den = 0, worst_diff = -1;
  std::size_t worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double d = a[i] - e[i];
    if (std::isnan(d) && !(std::isnan(a[i]) && std::isnan(e[i])))
      return ::testing::AssertionFailure() << "NaN mismatch at " << index_str(static_cast<std::int64_t>(i), actual.shape())
                                           << ": actual " << a[i] << ", expected " << e[i];
    if (std::isnan(d)) continue;
    num += d * d;
    den += e[i] * e[i];
    if (std::fabs(d) > worst_diff) {
      worst_diff = std::fabs(d);
      worst = i;
    }
  }
  const double rel = std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
  if (rel <= tol || num == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "relative norm error " << rel << " > " << tol << "; worst at "
                                       << index_str(static_cast<std::int64_t>(worst), actual.shape()) << ": actual "
                                       << std::setprecision(10) << a[worst] << ", expected " << e[worst];
}

::testing::AssertionResult all_equal(const Tensor& actual, const Tensor& expected) {
  return all_close(actual, expected, Tolerance{0.0, 0.0});
}

namespace {
TensorList to_cuda(const TensorList& inputs) {
  TensorList out;
  for (const auto& t : inputs) out.push_back(t.defined() ? t.to(Device::cuda(0)) : t);
  return out;
}
TensorList to_cpu64(const TensorList& inputs) {
  TensorList out;
  for (const auto& t : inputs) {
    if (!t.defined()) out.push_back(t);
    else if (is_floating(t.dtype())) out.push_back(t.cpu().to(DType::float64));
    else out.push_back(t.cpu());
  }
  return out;
}
}  // namespace

::testing::AssertionResult cuda_matches_cpu64(const TensorFn& fn, const TensorList& inputs, Tolerance tol) {
  const Tensor ref = fn(to_cpu64(inputs));
  Tensor got;
  {
    PoisonGuard poison;
    got = fn(to_cuda(inputs));
  }
  if (!got.is_cuda()) return ::testing::AssertionFailure() << "the CUDA run returned a tensor on " << got.device();
  return all_close(got, ref, tol);
}

::testing::AssertionResult cuda_matches_cpu64_norm(const TensorFn& fn, const TensorList& inputs, double tol) {
  const Tensor ref = fn(to_cpu64(inputs));
  Tensor got;
  {
    PoisonGuard poison;
    got = fn(to_cuda(inputs));
  }
  if (!got.is_cuda()) return ::testing::AssertionFailure() << "the CUDA run returned a tensor on " << got.device();
  return norm_close(got, ref, tol);
}

PoisonGuard::PoisonGuard() : previous_(runtime::poison_new_memory()) { runtime::set_poison_new_memory(true); }
PoisonGuard::~PoisonGuard() { runtime::set_poison_new_memory(previous_); }

std::vector<Shape> awkward_shapes() {
  return {{1}, {7}, {33}, {1000003}, {3, 5, 7}, {2, 1, 9, 4}, {}};
}

std::string value_error_message(const std::function<void()>& f) {
  try {
    f();
  } catch (const ValueError& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("(not a ValueError) ") + e.what();
  }
  return "";
}

}  // namespace cugrad::testing
