// Launcher of the multi-tensor SGD kernel (cuda/sgd.cu). Plain C++: `stream` is a
// cudaStream_t passed opaquely; every launch is checked; nothing here synchronizes the host.
#pragma once

#include <cstddef>
#include <cstdint>

#include "host/cpu/sgd.h"

namespace cugrad::cuda {

/// One float32 parameter tensor of a step (device pointers, contiguous).
struct SgdTensorArgs {
  float* param = nullptr;
  const float* grad = nullptr;
  float* momentum_buffer = nullptr;  // used only when momentum != 0 (then required)
  std::int64_t numel = 0;
  bool init_buffer = false;  // first update: buf = g, written without being read
};

/// Tensors one launch takes (its table travels in the kernel's parameters: 9.3 KB, or 2.4 KB
/// for a table of at most 64 tensors).
inline constexpr int kSgdMaxTensorsPerLaunch = 256;
/// Elements each block updates (one chunk of one tensor); a multiple of 4. 4096 from the
/// chunk sweep of sgd_bench on an H100 (2026-11-26; ResNet-18's 62 tensors, back to back):
/// 2048: 0.0824 ms, 4096: 0.0828, 8192: 0.0843, 16384 (the old value): 0.0872, 32768: 0.0903.
inline constexpr int kSgdChunkElements = 4096;

/// Applies cpu::sgd_update's math (in float, with fused multiply-adds) to every tensor of
/// `tensors`. One launch for up to kSgdMaxTensorsPerLaunch tensors (tensors with numel 0 do
/// not count), more only beyond. `chunk_elements` (a positive multiple of 4) is exposed for
/// tuning and tests. The tensors must not overlap one another, and a grad must not overlap
/// any param or buffer. `device_scalars`, when given, is device memory holding float
/// {lr, momentum, 1 - dampening, weight_decay}, read by the kernel in place of h's (a capturable
/// step: a CUDA graph's replay uses the values written there since the capture); h.momentum still
/// selects the kernel (with or without a buffer), and nesterov and maximize come from h.
void sgd_step(const SgdTensorArgs* tensors, std::size_t count, const cpu::SgdHyper& h, void* stream,
              int chunk_elements = kSgdChunkElements, const float* device_scalars = nullptr);

/// Number of SGD kernel launches made so far by this process (for tests and benchmarks).
std::uint64_t sgd_launch_count();

}  // namespace cugrad::cuda
