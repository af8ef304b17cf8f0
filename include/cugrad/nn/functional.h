// cugrad::nn::functional: stateless neural-network functions with PyTorch's semantics,
// backed by cugrad's hand-written fused CUDA kernels (and CPU references).
#pragma once

#include <cstdint>
#include <optional>

#include "cugrad/tensor.h"

namespace cugrad::nn {

/// How a loss reduces over the batch.
enum class Reduction : std::uint8_t { None, Mean, Sum };

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

/// Options of cross_entropy, in PyTorch's argument order.
struct CrossEntropyOptions {
  Tensor weight;                     // optional per-class weights (C)
  std::int64_t ignore_index = -100;  // targets equal to this contribute nothing
  Reduction reduction = Reduction::Mean;
  double label_smoothing = 0.0;
};

/// Softmax cross-entropy of logits (N, C) against int64 class targets (N), with PyTorch's
/// semantics for label smoothing, ignore_index, class weights and reductions.
Tensor cross_entropy(const Tensor& logits, const Tensor& target, const CrossEntropyOptions& options = {});

}  // namespace functional
}  // namespace cugrad::nn
