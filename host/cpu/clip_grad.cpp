// CPU reference of gradient-norm clipping: plain loops, float64 accumulation.
#include "host/cpu/clip_grad.h"

#include <cmath>
#include <limits>

#include "cugrad/error.h"

namespace cugrad::cpu {

namespace {

// max that propagates NaN from either side (std::fmax would drop it).
double nan_max(double a, double b) { return (std::isnan(a) || a > b) ? a : b; }

template <typename T>
double vector_norm_typed(const T* x, std::int64_t n, double p) {
  if (std::isinf(p)) {
    double m = 0;
    for (std::int64_t i = 0; i < n; ++i) m = nan_max(std::fabs(static_cast<double>(x[i])), m);
    return m;
  }
  double s = 0;
  if (p == 2) {
    for (std::int64_t i = 0; i < n; ++i) {
      const double v = static_cast<double>(x[i]);
      s += v * v;
    }
    return std::sqrt(s);
  }
  if (p == 1) {
    for (std::int64_t i = 0; i < n; ++i) s += std::fabs(static_cast<double>(x[i]));
    return s;
  }
  for (std::int64_t i = 0; i < n; ++i) s += std::pow(std::fabs(static_cast<double>(x[i])), p);
  return std::pow(s, 1.0 / p);
}

template <typename T>
void scale_typed(T* x, std::int64_t n, double coef) {
  for (std::int64_t i = 0; i < n; ++i) x[i] = static_cast<T>(static_cast<double>(x[i]) * coef);
}

}  // namespace

double vector_norm(DType dtype, const void* data, std::int64_t n, double norm_type) {
  CUGRAD_CHECK(norm_type > 0, "vector_norm: needs norm_type > 0 (or inf), got ", norm_type);
  switch (dtype) {
    case DType::float32:
      return vector_norm_typed(static_cast<const float*>(data), n, norm_type);
    case DType::float64:
      return vector_norm_typed(static_cast<const double*>(data), n, norm_type);
    default:
      break;
  }
  throw ValueError(detail::cat("vector_norm: needs float32 or float64 data, got ", dtype));
}

double norm_of_norms(const std::vector<double>& norms, double norm_type) {
  CUGRAD_CHECK(norm_type > 0, "norm_of_norms: needs norm_type > 0 (or inf), got ", norm_type);
  return vector_norm_typed(norms.data(), static_cast<std::int64_t>(norms.size()), norm_type);
}

double clip_coefficient(double max_norm, double total_norm) {
  const double coef = max_norm / (total_norm + 1e-6);
  return coef > 1.0 ? 1.0 : coef;  // written so that NaN passes through
}

void scale_in_place(DType dtype, void* data, std::int64_t n, double coef) {
  switch (dtype) {
    case DType::float32:
      return scale_typed(static_cast<float*>(data), n, coef);
    case DType::float64:
      return scale_typed(static_cast<double*>(data), n, coef);
    default:
      break;
  }
  throw ValueError(detail::cat("scale_in_place: needs float32 or float64 data, got ", dtype));
}

}  // namespace cugrad::cpu
