// CPU reference of gradient-norm clipping (optim::clip_grad_norm_): per-tensor norms in
// float64, the norm of those norms, the clip coefficient, and the in-place scaling.
#pragma once

#include <cstdint>
#include <vector>

#include "cugrad/dtype.h"

namespace cugrad::cpu {

/// The norm of one tensor of n elements (float32 or float64), accumulated in double:
/// (sum |x|^p)^(1/p) for a finite p > 0 (p = 2 and p = 1 without pow), max |x| for p = inf
/// (0 for n = 0). A NaN element makes the norm NaN, as in torch.linalg.vector_norm.
double vector_norm(DType dtype, const void* data, std::int64_t n, double norm_type);

/// The norm of per-tensor norms with the same norm_type (PyTorch's total norm).
double norm_of_norms(const std::vector<double>& norms, double norm_type);

/// max_norm / (total + 1e-6), clamped to at most 1. A NaN stays NaN (torch.clamp's
/// propagation), so a NaN total turns every gradient into NaN, as in PyTorch.
double clip_coefficient(double max_norm, double total_norm);

/// x *= coef for n elements (float32 or float64) in place; float32 is computed in double and
/// rounded once.
void scale_in_place(DType dtype, void* data, std::int64_t n, double coef);

}  // namespace cugrad::cpu
