// Launchers of the fused BatchNorm kernels (cuda/batch_norm.cu) for contiguous float32 NCHW
// tensors viewed as (N, C, HW) (host/cpu/batch_norm.h). `stream` is a cudaStream_t passed
// opaquely; every launch is checked; nothing here synchronizes the host.
#pragma once

#include <cstddef>
#include <cstdint>

#include "host/cpu/batch_norm.h"

namespace cugrad::cuda {

/// Running statistics a training forward updates in place (all pointers on the device).
struct BatchNormRunning {
  float* mean = nullptr;  // both null (no update) or both set
  float* var = nullptr;
  /// Incremented by one on the device when set.
  std::int64_t* num_batches_tracked = nullptr;
  /// true: the factor is 1 / num_batches_tracked after the increment (a cumulative average; it
  /// is read on the device, so no host round trip); false: the factor is `momentum`.
  bool cumulative = false;
  double momentum = 0.1;
};

/// The fused ReLU of batch_norm_relu in backward: what recomputes the forward's pre-ReLU y
/// from x (the output relu(y) is never read). Eval recomputes its scale from running_var and
/// weight as the eval forward does.
struct BatchNormRelu {
  const float* scale = nullptr;  // training: the folded scale the forward wrote to save_scale
  const float* bias = nullptr;   // may be null (0)
};

/// Bytes of device scratch batch_norm_train_forward needs for `d` on the current device.
std::size_t batch_norm_train_forward_workspace_bytes(const BatchNormDims& d);

/// Training forward. Requires d.per_channel() >= 2 (an error checked by the caller), d.numel() > 0,
/// `workspace` of at least batch_norm_train_forward_workspace_bytes(d) bytes used only by work
/// queued on `stream`. weight and bias may be null. Writes y (N*C*HW), save_mean and
/// save_invstd (C), and updates `running` as cpu::batch_norm_train_forward does. Two kernels:
/// the statistics reduction (which also updates the running stats) and the normalization.
/// relu: writes relu(y) instead (batch_norm_relu). save_scale (C floats; may be null): where
/// the folded scale weight * invstd is kept, as the fused backward needs it (null: it stays in
/// the workspace).
void batch_norm_train_forward(const float* x, float* y, const float* weight, const float* bias, double eps,
                              const BatchNormDims& d, float* save_mean, float* save_invstd,
                              const BatchNormRunning& running, void* workspace, std::size_t workspace_bytes,
                              void* stream, bool relu = false, float* save_scale = nullptr);

/// Eval forward: one pass, y = (x - running_mean) * (weight / sqrt(running_var + eps)) + bias;
/// relu: relu(y) (batch_norm_relu).
void batch_norm_eval_forward(const float* x, float* y, const float* weight, const float* bias,
                             const float* running_mean, const float* running_var, double eps,
                             const BatchNormDims& d, void* stream, bool relu = false);

/// Bytes of device scratch batch_norm_backward needs for `d` on the current device.
std::size_t batch_norm_backward_workspace_bytes(const BatchNormDims& d);

/// Backward, as cpu::batch_norm_backward: training takes (mean, invstd_or_var) = (save_mean,
/// save_invstd), eval (running_mean, running_var). dx, dweight and dbias may each be null.
/// At most two kernels: the per-channel reduction of Σdy and Σdy·(x - mean) (when dweight,
/// dbias or a training dx is wanted) and the elementwise dx pass. relu (non-null): the backward
/// of batch_norm_relu for the gradient dy of its output relu(y): dy counts where the recomputed
/// y > 0 only (so eval's dx pass reads x too); the same results, bit for bit, as batch_norm's
/// backward of threshold_backward(dy, relu(y)).
void batch_norm_backward(const float* x, const float* dy, const float* weight, const float* mean,
                         const float* invstd_or_var, bool training, double eps, const BatchNormDims& d,
                         float* dx, float* dweight, float* dbias, void* workspace,
                         std::size_t workspace_bytes, void* stream, const BatchNormRelu* relu = nullptr);

}  // namespace cugrad::cuda
