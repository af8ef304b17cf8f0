// CPU reference of the SGD update (torch.optim.SGD's, one parameter tensor at a time), and
// the hyperparameters the CUDA kernel shares (cuda/sgd.h).
#pragma once

#include <cstdint>

#include "cugrad/dtype.h"

namespace cugrad::cpu {

/// One step's hyperparameters (optim::SGDOptions as the kernels see them).
struct SgdHyper {
  double lr = 0;
  double momentum = 0;
  double dampening = 0;
  double weight_decay = 0;
  bool nesterov = false;
  bool maximize = false;
};

/// Updates n elements of `param` (float32 or float64) from `grad` as optim::SGD documents.
/// `momentum_buffer` (same dtype and size) is used only when h.momentum != 0, and is then
/// required: with init_buffer it is written (buf = g, the first update) without being read,
/// otherwise read and written. Float32 is computed in double and rounded once per stored value.
/// `grad` is only read; it must not overlap `param` or `momentum_buffer`.
void sgd_update(DType dtype, void* param, const void* grad, void* momentum_buffer, std::int64_t n,
                bool init_buffer, const SgdHyper& h);

}  // namespace cugrad::cpu
