// Launcher of the multi-tensor Adam/AdamW kernel (cuda/adam.cu). Plain C++: `stream` is a
// cudaStream_t passed opaquely; every launch is checked; nothing here synchronizes the host.
#pragma once

#include <cstddef>
#include <cstdint>

#include "host/cpu/adam.h"

namespace cugrad::cuda {

/// One float32 parameter tensor of a step (device pointers, contiguous).
struct AdamTensorArgs {
  float* param = nullptr;
  const float* grad = nullptr;
  float* exp_avg = nullptr;
  float* exp_avg_sq = nullptr;
  float* max_exp_avg_sq = nullptr;  // amsgrad only (then required)
  std::int64_t numel = 0;
  bool first_step = false;       // the state is zeros: written without being read
  cpu::AdamStepFactors factors;  // of this tensor's step count (unused when capturable)
  /// Capturable: the tensor's record in device memory, two int64 slots (16-byte aligned):
  /// {step count; float step_size, float bias_correction2_sqrt of that step}.
  std::int64_t* step = nullptr;
};

/// A capturable step's hyperparameters in device memory: double {lr, beta1, beta2, eps,
/// weight_decay} (kAdamDeviceScalars of them).
inline constexpr int kAdamDeviceScalars = 5;

/// Tensors one launch takes (its table travels in the kernel's parameters).
inline constexpr int kAdamMaxTensorsPerLaunch = 256;
/// Elements each block updates (one chunk of one tensor); a multiple of 4 (as SGD's).
inline constexpr int kAdamChunkElements = 4096;

/// Applies cpu::adam_update's math (in float) to every tensor of `tensors`: one launch for up to
/// kAdamMaxTensorsPerLaunch non-empty tensors, more only beyond. `chunk_elements` (a positive
/// multiple of 4) is exposed for tests. Tensors must not overlap one another.
///
/// Capturable (`device_scalars` given): the kernel reads lr, betas, eps and weight_decay from
/// `device_scalars` and each tensor's step count from its `step` record, which one small kernel
/// advances first, computing that step's bias corrections on the device (in double, with the
/// host's formulas: the same bits), so a CUDA graph's replay advances the counts and uses the values written
/// since the capture. h's amsgrad, maximize and decoupled_weight_decay still apply; `factors` is unused.
void adam_step(const AdamTensorArgs* tensors, std::size_t count, const cpu::AdamHyper& h, void* stream,
               int chunk_elements = kAdamChunkElements, const double* device_scalars = nullptr);

/// Writes `value` into the device double at `dst` (one single-thread kernel on `stream`).
void adam_write_device_scalar(double* dst, double value, void* stream);

/// Number of Adam kernel launches made so far by this process (for tests and benchmarks).
std::uint64_t adam_launch_count();

}  // namespace cugrad::cuda
