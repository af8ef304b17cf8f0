// Direct convolution kernels for layers with few input taps (first layers: 1 or 3 input
// channels), where cuDNN's implicit GEMMs have an inner dimension of 9 to 27 and run far from
// the memory floor: on an H100 (2026-11-27, ncu) the 2-conv CNN's convolutions took 180 us per
// forward and 215 us per weight gradient on average, although its conv1 (1 -> 32 channels, 3x3,
// batch 256, 28x28) reads 0.8 MB and writes 22 MB (8 us at copy rate) for 0.1 GFLOP.
//
// Forward: one thread per output pixel reads its K = c_in·kh·kw input taps once and writes
// every output channel (weights in shared memory, read as broadcasts), the bias and the ReLU in
// the same store. Parameter gradients: block (output channel, split of the pixels) accumulates
// the K weight sums and the bias sum of its pixels, optionally through the ReLU's mask computed
// from the saved output (so the masked gradient is never written), then a fixed-order tree and
// a second launch adding the splits in order: deterministic, no atomics.
//
// The input gradient stays with cuDNN (cuda/conv.cpp), which these layers rarely need (a first
// layer's input needs no gradient, except in attacks on the input).
#pragma once

#include <cstddef>
#include <cstdint>

#include "host/cpu/conv.h"

namespace cugrad::cuda {

/// Largest c_in·kh·kw (taps per output) and c_out·(c_in·kh·kw + 1) (weights and biases in
/// shared memory, 32 KB) of the direct kernels.
inline constexpr std::int64_t kDirectConvMaxTaps = 32;
inline constexpr std::int64_t kDirectConvMaxWeights = 8192;

/// Whether the direct kernels handle g: groups 1, c_in·kh·kw <= 32, c_out·(c_in·kh·kw + 1) <=
/// 8192, every per-image size below 2^31. (The 2-conv CNN's and the reference CNN's first
/// convolutions: 1 input channel, 3x3; ResNet's 7x7 stem on 3 channels has 147 taps: cuDNN.)
bool direct_conv_supported(const Conv2dGeometry& g);

/// The parameter gradients' split: blocks per output channel over the n·out_h·out_w pixels
/// (about 8 blocks per multiprocessor in all, at least 2048 pixels a block), and the workspace
/// of their partial sums (c_out · splits · (taps + 1) floats).
struct DirectConvPlan {
  std::int64_t splits = 1;
  std::size_t workspace_bytes = 0;
};
DirectConvPlan direct_conv_plan(const Conv2dGeometry& g, int sms);

/// y = conv(x, weight) + bias (bias may be null), then relu when `relu` (NaN kept), contiguous
/// NCHW float32; g supported and n >= 1. Each output is Σ_k weight[k]·x[k] in tap order k =
/// (ci, p, q) row-major with fused multiply-adds (padding taps skipped), then + bias.
void direct_conv2d_forward_f32(const float* x, const float* weight, const float* bias, float* y,
                               const Conv2dGeometry& g, bool relu, void* stream);

/// dweight = Σ over pixels of g_o · x_tap and (db non-null) dbias = Σ g_o, where g_o = dy, or
/// threshold_backward(dy, relu_y) when relu_y (the ReLU's output) is non-null. dweight and
/// dbias are fully written (n >= 1). `workspace` holds plan.workspace_bytes; plan from
/// direct_conv_plan for g. The same bits on every run.
void direct_conv2d_backward_params_f32(const float* x, const float* dy, const float* relu_y, float* dweight,
                                       float* dbias, const Conv2dGeometry& g, const DirectConvPlan& plan,
                                       float* workspace, void* stream);

/// Whether conv2d uses the direct kernels for the shapes they support (default on;
/// CUGRAD_DIRECT_CONV=0 in the environment turns them off at start). Returns the previous value.
/// For comparing the two paths (benchmarks, tests).
bool set_direct_convolutions(bool on);
bool direct_convolutions();

/// Tests: force the kernels' 64-bit pixel indices (used on their own only above 2^32 pixels)
/// on small tensors. Returns the previous setting.
bool set_direct_conv_wide_indices(bool force);

}  // namespace cugrad::cuda
