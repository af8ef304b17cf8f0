// cugrad::nn::functional: stateless neural-network functions with PyTorch's semantics,
// backed by cugrad's hand-written fused CUDA kernels (and CPU references).
#pragma once

#include <cstdint>
#include <optional>

#include "cugrad/tensor.h"

namespace cugrad::nn {

/// How a loss reduces over the batch.
enum class Reduction : std::uint8_t { None, Mean, Sum };

/// A height/width pair: `3` means {3, 3}; `{1, 2}` means height 1, width 2 (PyTorch's int-or-tuple).
struct Int2 {
  std::int64_t h = 0, w = 0;
  Int2() = default;
  Int2(std::int64_t v) : h(v), w(v) {}  // NOLINT(google-explicit-constructor): like PyTorch's int
  Int2(std::int64_t height, std::int64_t width) : h(height), w(width) {}
  bool operator==(const Int2&) const = default;
};

namespace functional {

/// Batch normalization over (N, C) or (N, C, H, W) float32 (float64 on the CPU) input.
/// Training: normalizes with the batch mean and biased variance, and (when running_mean and
/// running_var are given) updates them in place as PyTorch does:
///   running = (1 - m) * running + m * batch, running_var from the unbiased variance,
/// where m = momentum, or, when momentum is unset, 1 / num_batches_tracked (a cumulative
/// average; num_batches_tracked, an int64 scalar tensor, is incremented on the device first).
/// Eval: normalizes with the running statistics. weight and bias (C) are optional.
/// Differentiable in x, weight and bias; each gradient is computed only when needed.
Tensor batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var, const Tensor& weight,
                  const Tensor& bias, bool training, std::optional<double> momentum = 0.1, double eps = 1e-5,
                  const Tensor& num_batches_tracked = Tensor());

/// relu(batch_norm(...)) in one op, with the same arguments and results (bit for bit on CUDA;
/// the gradients too), fewer passes over memory: on CUDA the normalization writes relu(y)
/// directly (no separate ReLU pass and no pre-ReLU tensor), and backward recomputes the
/// ReLU's mask from x instead of running threshold_backward, so a training step saves 5 of
/// the 13 passes over the activation that batch_norm then relu make (forward 3 instead of 5,
/// backward 5 instead of 8), and two launches. The CPU reference computes the same thing
/// unfused. Sequential and ResNet's blocks use it for a BatchNorm followed by a ReLU when
/// neither module has hooks (see nn::set_fusion_enabled in cugrad/nn/module.h).
Tensor batch_norm_relu(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                       const Tensor& weight, const Tensor& bias, bool training,
                       std::optional<double> momentum = 0.1, double eps = 1e-5,
                       const Tensor& num_batches_tracked = Tensor());

/// Options of cross_entropy, in PyTorch's argument order.
struct CrossEntropyOptions {
  Tensor weight;                     // optional per-class weights (C)
  std::int64_t ignore_index = -100;  // targets equal to this contribute nothing
  Reduction reduction = Reduction::Mean;
  double label_smoothing = 0.0;
};

/// Softmax cross-entropy of logits (N, C) against int64 class targets (N), with PyTorch's
/// semantics for label smoothing, ignore_index, class weights and reductions:
///   loss_i = (1 − ε) · w[t_i] · (−log p_{i,t_i}) + (ε / C) · Σ_j w_j · (−log p_ij)
/// (ε = label_smoothing, p = softmax of the row, w = 1 without class weights); ignored rows
/// give 0; Mean divides by the number of non-ignored rows (by Σ w[t_i] with weights) and is
/// NaN when every row is ignored, as in PyTorch. Float32 logits (float64 on the CPU), one
/// fused CUDA pass that also writes the gradient when the loss will be differentiated.
/// Requires: logits 2-D, target int64 (N) on the same device, weight (C) of logits' dtype.
/// A target outside [0, C) that is not ignore_index is an error. On the CPU it is thrown
/// here; on CUDA the kernel reports it without a host synchronization and it is thrown at
/// the next host synchronization (item(), to_vector(), to(cpu), synchronize()), at the next
/// cross_entropy call, or by cugrad::check_device_errors(); the loss values of such a batch
/// are not meaningful.
Tensor cross_entropy(const Tensor& logits, const Tensor& target, const CrossEntropyOptions& options = {});

/// y = x · weightᵀ + bias for x (*, in_features), weight (out_features, in_features), bias
/// (out_features) optional. Differentiable in all three.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

/// 2-D convolution (cross-correlation, as PyTorch) of x (N, C_in, H, W) with weight
/// (C_out, C_in / groups, kH, kW) and optional bias (C_out); float32 (float64 on the CPU).
/// CUDA: cuDNN, the algorithm chosen once per shape and cached, workspace from the allocator.
/// CPU: im2col + GEMM. Differentiable in x, weight and bias, each computed only when needed
/// (a frozen convolution computes only its input gradient, and does not keep x for backward).
/// Requires a batched 4-D input with C_in >= 1 divisible by groups, C_out divisible by groups,
/// stride and dilation >= 1, padding >= 0, and an output of at least 1 x 1; N may be 0.
/// Strict float32 on CUDA unless set_allow_tf32(true); CUGRAD_CUDNN_BENCHMARK=1 in the
/// environment makes the per-shape algorithm choice a timed search (cuda/conv.h).
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(), Int2 stride = 1,
              Int2 padding = 0, Int2 dilation = 1, std::int64_t groups = 1);

/// relu(conv2d(...)) in one op, with the same arguments and results (bit for bit, the gradients
/// too; graph node Conv2dReluBackward). On CUDA the bias pass after cuDNN's convolution also
/// applies the ReLU (no separate ReLU pass), and backward masks dy with the saved output in the
/// same pass as the bias gradient's channel sums (threshold_backward and the sums separately
/// otherwise): a training step makes 5 passes over the output besides cuDNN's instead of the 8
/// that the bias, the ReLU and their gradients make apart, and two launches fewer. The CPU runs conv2d, relu
/// in place and threshold_backward. Sequential and TwoConvCnn use it for a Conv2d followed by a ReLU when the
/// Conv2d has no hooks (see nn::set_fusion_enabled in cugrad/nn/module.h).
Tensor conv2d_relu(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(), Int2 stride = 1,
                   Int2 padding = 0, Int2 dilation = 1, std::int64_t groups = 1);

/// Max pooling over (N, C, H, W); stride defaults to the kernel size; padding pads with -inf.
/// Output size floor((H + 2p - d(k-1) - 1) / s) + 1 (ceil_mode false); padding at most half the
/// kernel. Backward routes each gradient to the first maximum of its window (row-major order; a
/// NaN counts as the maximum, the last NaN winning, as in PyTorch).
Tensor max_pool2d(const Tensor& x, Int2 kernel_size, std::optional<Int2> stride = std::nullopt, Int2 padding = 0,
                  Int2 dilation = 1);

/// max_pool2d(x + bias.reshape({1, C, 1, 1}), ...) in one op (graph node BiasMaxPool2dBackward):
/// the per-channel bias (C) is added to each element inside the pool, so x + bias is never
/// written; the same outputs and gradients, bit for bit (dbias is the channel sum of the pool's
/// input gradient, computed as conv2d's bias gradient is). For a convolution's bias followed by
/// a max-pool: TwoConvCnn runs its conv2 without the bias and then this (module fusion, when
/// conv2 has no hooks; see nn::set_fusion_enabled in cugrad/nn/module.h).
Tensor bias_max_pool2d(const Tensor& x, const Tensor& bias, Int2 kernel_size,
                       std::optional<Int2> stride = std::nullopt, Int2 padding = 0, Int2 dilation = 1);

/// Average pooling over (N, C, H, W) (ceil_mode false, count_include_pad true, as PyTorch's
/// defaults: every window divides by kH·kW); stride defaults to the kernel size; padding at
/// most half the kernel.
Tensor avg_pool2d(const Tensor& x, Int2 kernel_size, std::optional<Int2> stride = std::nullopt, Int2 padding = 0);

/// Adaptive average pooling of (N, C, H, W) to (N, C, out.h, out.w) with PyTorch's window
/// boundaries (start = floor(i·H/out), end = ceil((i+1)·H/out)).
Tensor adaptive_avg_pool2d(const Tensor& x, Int2 output_size);

/// Elementwise activations (differentiable).
Tensor leaky_relu(const Tensor& x, double negative_slope = 0.01);
Tensor sigmoid(const Tensor& x);
Tensor tanh(const Tensor& x);

/// Inverted dropout: in training, zeroes each element with probability p (Philox from the
/// global generator, so CPU and CUDA draw the same mask for the same seed) and scales the rest
/// by 1/(1-p); identity when !training or p == 0. p must be in [0, 1].
Tensor dropout(const Tensor& x, double p = 0.5, bool training = true);

}  // namespace functional
}  // namespace cugrad::nn
