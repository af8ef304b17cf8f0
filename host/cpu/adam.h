// CPU reference of the Adam/AdamW update (torch.optim.Adam's and AdamW's, one parameter tensor
// at a time), and the hyperparameters the CUDA kernel shares (cuda/adam.h).
#pragma once

#include <cmath>
#include <cstdint>

#include "cugrad/dtype.h"
#include "cugrad/macros.h"

namespace cugrad::cpu {

/// One step's hyperparameters (optim::AdamOptions as the kernels see them).
struct AdamHyper {
  double lr = 0;
  double beta1 = 0;
  double beta2 = 0;
  double eps = 0;
  double weight_decay = 0;
  bool amsgrad = false;
  bool maximize = false;
  bool decoupled_weight_decay = false;  // AdamW: p *= 1 - lr * weight_decay; Adam: g += weight_decay * p
};

/// The step-dependent factors of one tensor's update at its step `step` (>= 1, counted from 1):
/// step_size = lr / (1 - beta1^step) and bias_correction2_sqrt = sqrt(1 - beta2^step), in double
/// as PyTorch computes them.
struct AdamStepFactors {
  double step_size = 0;
  double bias_correction2_sqrt = 1;
};

/// beta^n (n >= 1) by binary powering in double: the host and the CUDA kernels (a capturable
/// step computes the factors on the device) get the same bits, and the kernel needs no pow()
/// (whose device implementation keeps a stack frame). Within a few ulp of std::pow.
CUGRAD_HOST_DEVICE CUGRAD_INLINE double adam_power(double beta, std::int64_t n) {
  double result = 1.0;
  double square = beta;
  while (n > 0) {
    if ((n & 1) != 0) result *= square;
    n >>= 1;
    if (n > 0) square *= square;
  }
  return result;
}

/// The factors of step `step` (>= 1) for lr, beta1 and beta2 (host and device).
CUGRAD_HOST_DEVICE CUGRAD_INLINE AdamStepFactors adam_factors_of(double lr, double beta1, double beta2,
                                                                 std::int64_t step) {
  return {lr / (1.0 - adam_power(beta1, step)), sqrt(1.0 - adam_power(beta2, step))};
}

/// adam_factors_of for h; throws ValueError unless step >= 1.
AdamStepFactors adam_step_factors(const AdamHyper& h, std::int64_t step);

/// Updates n elements of `param` (float32 or float64) from `grad` as optim::Adam documents, with
/// the state `exp_avg`, `exp_avg_sq` and (amsgrad only, else ignored) `max_exp_avg_sq`, all of
/// the parameter's dtype and size. `first_step`: the state is taken as zeros and written without
/// being read. Float32 is computed in double and rounded once per stored value. `grad` is only
/// read; it must not overlap the others.
void adam_update(DType dtype, void* param, const void* grad, void* exp_avg, void* exp_avg_sq,
                 void* max_exp_avg_sq, std::int64_t n, bool first_step, const AdamHyper& h,
                 const AdamStepFactors& f);

}  // namespace cugrad::cpu
