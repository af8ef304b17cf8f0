// BatchNorm: the (N, C, HW) view shared with cuda/batch_norm.h, and the CPU reference kernels
// (plain loops, accumulated in double; the variance by two passes, never E[x²] - E[x]²).
#pragma once

#include <cstdint>

#include "cugrad/dtype.h"

namespace cugrad {

/// A contiguous NCHW input viewed as (N, C, HW): element (n, c, j) is at (n * C + c) * HW + j.
/// An (N, C) input is (N, C, 1). Each channel normalizes over its N * HW elements.
struct BatchNormDims {
  std::int64_t n = 0;
  std::int64_t c = 0;
  std::int64_t hw = 1;
  std::int64_t per_channel() const { return n * hw; }
  std::int64_t numel() const { return n * c * hw; }
};

namespace cpu {

// All pointers are to `dtype` elements (float32 or float64); weight and bias may be null
// (weight 1, bias 0). Per-channel arrays have C elements. Requires per_channel() >= 1.

/// Training forward: per channel, the batch mean and biased variance var (two passes);
/// y = (x - mean) * invstd * weight + bias with invstd = 1 / sqrt(var + eps); writes
/// save_mean and save_invstd. When running_mean and running_var are non-null, updates them:
/// running = (1 - factor) * running + factor * batch, running_var from the unbiased variance
/// var * M / (M - 1), M = N * HW (M >= 2 then).
void batch_norm_train_forward(DType dtype, const void* x, void* y, const BatchNormDims& d, const void* weight,
                              const void* bias, double eps, void* save_mean, void* save_invstd,
                              void* running_mean, void* running_var, double factor);

/// Eval forward: y = (x - running_mean) / sqrt(running_var + eps) * weight + bias.
void batch_norm_eval_forward(DType dtype, const void* x, void* y, const BatchNormDims& d, const void* weight,
                             const void* bias, const void* running_mean, const void* running_var, double eps);

/// Backward. training: `mean` and `invstd_or_var` are save_mean and save_invstd, and
///   dx = weight * invstd * (dy - mean(dy) - xhat * mean(dy * xhat)), xhat = (x - mean) * invstd;
/// eval: they are running_mean and running_var, invstd = 1 / sqrt(running_var + eps), and
///   dx = dy * weight * invstd.
/// Both: dweight = Σ dy * xhat, dbias = Σ dy over each channel. dx, dweight and dbias may each
/// be null (not wanted).
void batch_norm_backward(DType dtype, const void* x, const void* dy, const BatchNormDims& d,
                         const void* weight, const void* mean, const void* invstd_or_var, bool training,
                         double eps, void* dx, void* dweight, void* dbias);

}  // namespace cpu
}  // namespace cugrad
