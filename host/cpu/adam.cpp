// CPU reference of the Adam/AdamW update: one plain loop per parameter tensor, in PyTorch's
// order of operations (torch/optim/adam.py, _single_tensor_adam).
#include "host/cpu/adam.h"

#include <cmath>

#include "cugrad/error.h"

namespace cugrad::cpu {

AdamStepFactors adam_step_factors(const AdamHyper& h, std::int64_t step) {
  CUGRAD_CHECK(step >= 1, "adam_step_factors: the step count starts at 1, got ", step);
  return adam_factors_of(h.lr, h.beta1, h.beta2, step);
}

namespace {

template <typename T, bool kAmsgrad>
void adam_loop(T* p, const T* g, T* m, T* v, T* vmax, std::int64_t n, bool first, const AdamHyper& h,
               const AdamStepFactors& f) {
  for (std::int64_t i = 0; i < n; ++i) {
    double gi = static_cast<double>(g[i]);
    double pi = static_cast<double>(p[i]);
    if (h.maximize) gi = -gi;
    if (h.weight_decay != 0) {
      if (h.decoupled_weight_decay)
        pi *= 1 - h.lr * h.weight_decay;
      else
        gi += h.weight_decay * pi;
    }
    const double mi = first ? 0.0 : static_cast<double>(m[i]);
    const double vi = first ? 0.0 : static_cast<double>(v[i]);
    const double m_new = mi + (1 - h.beta1) * (gi - mi);  // exp_avg.lerp_(grad, 1 - beta1)
    const double v_new = h.beta2 * vi + (1 - h.beta2) * gi * gi;
    m[i] = static_cast<T>(m_new);
    v[i] = static_cast<T>(v_new);
    double second = v_new;
    if constexpr (kAmsgrad) {
      // torch.maximum: a NaN on either side gives NaN.
      const double old = first ? v_new : static_cast<double>(vmax[i]);
      const double vmax_new = std::isnan(old) || std::isnan(v_new) ? NAN : (old > v_new ? old : v_new);
      vmax[i] = static_cast<T>(vmax_new);
      second = vmax_new;
    }
    const double denom = std::sqrt(second) / f.bias_correction2_sqrt + h.eps;
    p[i] = static_cast<T>(pi - f.step_size * m_new / denom);
  }
}

template <typename T>
void adam_typed(void* param, const void* grad, void* exp_avg, void* exp_avg_sq, void* max_exp_avg_sq,
                std::int64_t n, bool first, const AdamHyper& h, const AdamStepFactors& f) {
  CUGRAD_CHECK(exp_avg != nullptr && exp_avg_sq != nullptr && (!h.amsgrad || max_exp_avg_sq != nullptr),
               "adam_update: the state tensors are required");
  T* p = static_cast<T*>(param);
  const T* g = static_cast<const T*>(grad);
  T* m = static_cast<T*>(exp_avg);
  T* v = static_cast<T*>(exp_avg_sq);
  if (h.amsgrad)
    adam_loop<T, true>(p, g, m, v, static_cast<T*>(max_exp_avg_sq), n, first, h, f);
  else
    adam_loop<T, false>(p, g, m, v, nullptr, n, first, h, f);
}

}  // namespace

void adam_update(DType dtype, void* param, const void* grad, void* exp_avg, void* exp_avg_sq,
                 void* max_exp_avg_sq, std::int64_t n, bool first_step, const AdamHyper& h,
                 const AdamStepFactors& f) {
  switch (dtype) {
    case DType::float32:
      return adam_typed<float>(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, n, first_step, h, f);
    case DType::float64:
      return adam_typed<double>(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, n, first_step, h, f);
    default:
      break;
  }
  throw ValueError(detail::cat("adam_update: needs float32 or float64 parameters, got ", dtype));
}

}  // namespace cugrad::cpu
