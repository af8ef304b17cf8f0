// Launchers of the multi-tensor gradient-norm kernels (cuda/clip_grad.cu) behind
// optim::clip_grad_norm_. Plain C++: `stream` is a cudaStream_t passed opaquely; every launch
// is checked; nothing here synchronizes the host.
#pragma once

#include <cstddef>
#include <cstdint>

namespace cugrad::cuda {

/// One float32 gradient (device pointer, contiguous).
struct ClipGradTensor {
  float* grad = nullptr;
  std::int64_t numel = 0;
};

/// Tensors one launch takes (the table travels in the kernel's parameters).
inline constexpr int kClipGradMaxTensorsPerLaunch = 256;
/// Elements each block reduces or scales (one chunk of one tensor); a multiple of 4.
inline constexpr int kClipGradChunkElements = 16384;

/// Bytes of device workspace grad_norm needs for these tensors: one double per chunk (the
/// per-block partials), plus the clip coefficient.
std::size_t clip_grad_workspace_bytes(const ClipGradTensor* tensors, std::size_t count,
                                      int chunk_elements = kClipGradChunkElements);

/// Computes, on the device, the norm of all the gradients together (norm_type a finite p > 0
/// or +inf; the norm of the per-tensor norms, which for a p-norm is the p-norm of all
/// elements) into *total_norm (float), and max_norm / (total + 1e-6) clamped to at most 1 (NaN
/// kept) into the workspace, where scale_grads finds it. One launch of a multi-tensor
/// reduction per kClipGradMaxTensorsPerLaunch tensors (one for any model with fewer), each
/// block writing one partial, then one single-block launch that combines the partials in a
/// fixed order: the result is deterministic. `workspace` holds clip_grad_workspace_bytes
/// bytes and must stay alive (stream-ordered) until scale_grads has run.
void grad_norm(const ClipGradTensor* tensors, std::size_t count, double norm_type, double max_norm,
               float* total_norm, void* workspace, std::size_t workspace_bytes, void* stream,
               int chunk_elements = kClipGradChunkElements);

/// Multiplies every gradient in place by the coefficient grad_norm left in `workspace`, read
/// on the device (no host synchronization). Blocks whose coefficient is exactly 1 (no
/// clipping) neither read nor write the gradients: x * 1 == x, so the result is the same.
/// One launch per kClipGradMaxTensorsPerLaunch tensors.
void scale_grads(const ClipGradTensor* tensors, std::size_t count, const void* workspace,
                 std::size_t workspace_bytes, void* stream, int chunk_elements = kClipGradChunkElements);

/// Launches made so far by this process, per kernel (for tests and benchmarks).
struct ClipGradLaunchCounts {
  std::uint64_t reduce = 0;    // multi-tensor partial reductions
  std::uint64_t finalize = 0;  // single-block combinations of the partials
  std::uint64_t scale = 0;     // multi-tensor scalings
};
ClipGradLaunchCounts clip_grad_launch_counts();

}  // namespace cugrad::cuda
