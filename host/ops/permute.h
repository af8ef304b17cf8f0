// Index map of a dimension swap: output element i reads input element in_offset(i).
// Shared by the CPU loop and the CUDA kernel.
#pragma once

#include <cstdint>

#include "cugrad/macros.h"
#include "cugrad/tensor.h"

namespace cugrad {

struct PermuteIndex {
  int ndim = 0;
  std::int64_t out_shape[kMaxDims] = {};
  std::int64_t in_stride[kMaxDims] = {};  // input stride of each output dimension

  CUGRAD_HOST_DEVICE CUGRAD_INLINE std::int64_t in_offset(std::int64_t i) const {
    std::int64_t off = 0;
    for (int d = ndim - 1; d >= 0; --d) {
      off += (i % out_shape[d]) * in_stride[d];
      i /= out_shape[d];
    }
    return off;
  }
};

}  // namespace cugrad
