// NumPy broadcasting: the output shape of several operands, and an index map from an output
// element to each input's element, shared by the CPU loops and the CUDA kernels.
#pragma once

#include <cstdint>

#include "cugrad/macros.h"
#include "cugrad/tensor.h"

namespace cugrad {

struct BroadcastIndex {
  static constexpr int kMaxInputs = 3;
  enum Mode : std::uint8_t { same = 0, scalar = 1, general = 2 };
  int ndim = 0;
  std::int64_t shape[kMaxDims] = {};
  std::int64_t strides[kMaxInputs][kMaxDims] = {};  // 0 on broadcast dimensions
  std::uint8_t mode[kMaxInputs] = {};

  /// Element of input `k` that output element `i` reads.
  CUGRAD_HOST_DEVICE CUGRAD_INLINE std::int64_t offset(int k, std::int64_t i) const {
    if (mode[k] == same) return i;
    if (mode[k] == scalar) return 0;
    std::int64_t off = 0;
    for (int d = ndim - 1; d >= 0; --d) {
      const std::int64_t c = i % shape[d];
      i /= shape[d];
      off += c * strides[k][d];
    }
    return off;
  }
};

/// The broadcast shape of a and b; throws naming `op` and both shapes when incompatible.
Shape broadcast_shapes(const char* op, const Shape& a, const Shape& b);
/// Sums `grad` (of a broadcast result's shape) down to `shape`, the shape of an operand that
/// was broadcast: the backward of broadcasting.
Tensor sum_to(const Tensor& grad, const Shape& shape);

/// Index map for inputs of the given shapes into an output of shape `out`.
BroadcastIndex make_broadcast_index(const Shape& out, const Shape* const* inputs, int count);

}  // namespace cugrad
