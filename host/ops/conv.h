// Internal diagnostics of conv2d's backward node: how many input, weight and bias gradients it
// has computed in this process, so tests can prove that pruning skips the ones nobody needs.
#pragma once

#include <cstdint>

namespace cugrad {

struct Conv2dBackwardCounts {
  std::uint64_t input = 0;   // grad-input computations (cuDNN backward data / col2im)
  std::uint64_t weight = 0;  // grad-weight computations (cuDNN backward filter / im2col GEMM)
  std::uint64_t bias = 0;    // grad-bias reductions
};

/// Totals since the process started (all threads).
Conv2dBackwardCounts conv2d_backward_counts();

}  // namespace cugrad
