// Softmax cross-entropy with label smoothing: the problem description shared with
// cuda/cross_entropy.h, and the CPU reference kernels (plain loops, accumulated in double).
//
// Math (PyTorch's definition, for a row i with target t = t_i that is not ignored, K classes,
// class weights w (all 1 without weights), smoothing ε, log p_ij = x_ij - lse_i):
//   loss_i = (1-ε)·w_t·(-log p_it) + (ε/K)·Σ_j w_j·(-log p_ij)
//          = (1-ε)·w_t·(L - d_t) + (ε/K)·(W·L - Σ_j w_j·d_j)
// with m = max_j x_ij, d_j = x_ij - m, L = log Σ_j exp(d_j), W = Σ_j w_j: every term is a
// difference from the row maximum, so logits of ±1e4 and many classes keep their precision.
//   mean: Σ_i loss_i / D, D = number of rows not ignored (with weights: Σ_i w_{t_i});
//   sum: Σ_i loss_i; none: loss_i (0 for ignored rows). Mean over no row is 0/0 = NaN.
// Gradient for an upstream gradient of 1:
//   ∂loss/∂x_ij = c_i·(p_ij·a_i - b_ij),  a_i = (1-ε)·w_t + (ε/K)·W  (1 without weights),
//   b_ij = (ε/K)·w_j + [j == t]·(1-ε)·w_t,  c_i = 1/D (mean) or 1 (sum, none);
// ignored rows get 0.
#pragma once

#include <cstdint>

#include "cugrad/dtype.h"
#include "cugrad/nn/functional.h"

namespace cugrad {

/// One cross-entropy problem: logits (n, k) row-major, targets (n), optional weights (k).
struct CrossEntropyProblem {
  std::int64_t n = 0;
  std::int64_t k = 0;
  std::int64_t ignore_index = -100;
  double label_smoothing = 0.0;
  nn::Reduction reduction = nn::Reduction::Mean;
};

/// True when row target `t` contributes (neither ignore_index nor out of range).
constexpr bool cross_entropy_counts(std::int64_t t, std::int64_t k, std::int64_t ignore_index) {
  return t != ignore_index && t >= 0 && t < k;
}

namespace cpu {

/// Index of the first target that is neither ignore_index nor in [0, k), or -1.
std::int64_t cross_entropy_first_bad_target(const std::int64_t* target, const CrossEntropyProblem& p);

/// Loss (n values for Reduction::None, else one) and, when `grad` is not null, the gradient
/// (n, k) for an upstream gradient of 1. dtype: float32 or float64 (computed in double).
/// Rows whose target is out of range are treated as ignored (callers check them first).
void cross_entropy_forward(DType dtype, const void* logits, const std::int64_t* target, const void* weight,
                           const CrossEntropyProblem& p, void* loss, void* grad);

/// Scales a gradient from cross_entropy_forward to an upstream gradient, in place: by the
/// scalar upstream[0] (mean, sum) or row i by upstream[i] (none). Rows that do not count
/// stay exactly 0 (as in PyTorch, whatever the upstream value).
void cross_entropy_scale_grad(DType dtype, void* grad, const void* upstream, const std::int64_t* target,
                              const CrossEntropyProblem& p);

}  // namespace cpu
}  // namespace cugrad
