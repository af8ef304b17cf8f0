// Launchers of the fused softmax cross-entropy kernels (cuda/cross_entropy.cu): float32
// logits (n, k), int64 targets, optional class weights; the math is in host/cpu/cross_entropy.h.
// `stream` is a cudaStream_t passed opaquely; every launch is checked.
#pragma once

#include <cstddef>
#include <cstdint>

#include "host/cpu/cross_entropy.h"
#include "host/runtime/device_errors.h"

namespace cugrad::cuda {

/// Bytes of device scratch cross_entropy_forward needs on the current device: the mean's
/// denominator, a block counter and one partial sum per block for Reduction::Mean and Sum;
/// 0 for Reduction::None.
std::size_t cross_entropy_workspace_bytes(const CrossEntropyProblem& p);

/// Writes the loss (n floats for Reduction::None, else 1) and, when `grad` is not null, the
/// gradient (n, k) for an upstream gradient of 1, in one pass over the logits (two passes for
/// rows too long to keep on chip; see the .cu). The scalar of mean/sum is reduced on the
/// device, deterministically. A target outside [0, k) that is not ignore_index is reported
/// through `errors` and its row treated as ignored. Requires n > 0, 1 <= k < 2^31, device
/// pointers on the current device, `workspace` of cross_entropy_workspace_bytes(p) bytes
/// (may be null when that is 0), used only by work queued on `stream`.
void cross_entropy_forward(const float* logits, const std::int64_t* target, const float* weight,
                           const CrossEntropyProblem& p, float* loss, float* grad, void* workspace,
                           std::size_t workspace_bytes, const runtime::DeviceErrorSink& errors, void* stream);

/// cpu::cross_entropy_scale_grad on the device, in place. For a scalar upstream gradient
/// equal to 1 the kernel reads that one value and exits: no pass over the gradient.
/// Tuning knob for benchmarks: the most blocks per SM the grid of the k <= 1024 row kernel
/// (ce_group_rows_kernel) may have, 1..32 (default 32, the bound the workspace is sized for).
/// Returns the previous value; throws cugrad::ValueError outside 1..32.
int set_cross_entropy_group_blocks_per_sm(int blocks);
/// Experiment for benchmarks (off by default): rows of 257..1024 classes in float4 units, a
/// warp per row, go to ce_staged_rows_kernel, which copies the next rows into shared memory
/// with cp.async while it computes the current one, instead of ce_group_rows_kernel (on an H100
/// the latter is register-limited to half occupancy and stalls on its loads: 67% of copy at
/// 32768x1000). The same arithmetic in the same order as ce_group_rows_kernel, so the same
/// bits. Not yet measured on a GPU. Returns the previous setting.
bool set_cross_entropy_staged_rows(bool on);

void cross_entropy_scale_grad(float* grad, const float* upstream, const std::int64_t* target,
                              const CrossEntropyProblem& p, void* stream);

}  // namespace cugrad::cuda
