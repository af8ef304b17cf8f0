// Full backward hooks for a block of computation (what nn::Module's
// register_full_backward_pre_hook / register_full_backward_hook are built on).
//
// Usage around a forward:  BackwardHookSet set(pre_hooks, hooks);
//                          inputs = set.wrap_inputs(inputs);   // before computing
//                          outputs = set.wrap_outputs(outputs); // after
// Identity nodes are inserted on both sides. When the gradient with respect to the outputs is
// computed, the pre-hooks run on it (and may replace it). The hooks then run with the
// gradients with respect to the inputs (and may replace them): when the inputs' identity node
// runs, or, when no input requires grad, right after the pre-hooks with every input entry
// absent (undefined). Hooks on a part of the graph that autograd::grad skips do not fire.
#pragma once

#include <functional>
#include <memory>
#include <optional>

#include "cugrad/tensor.h"

namespace cugrad::autograd {

using BackwardPreHookFn = std::function<std::optional<TensorList>(const TensorList& grad_outputs)>;
using BackwardHookFn =
    std::function<std::optional<TensorList>(const TensorList& grad_inputs, const TensorList& grad_outputs)>;

class BackwardHookSet {
 public:
  BackwardHookSet(std::vector<BackwardPreHookFn> pre_hooks, std::vector<BackwardHookFn> hooks);
  /// Aliases of `inputs` routed through the inputs' identity node (inputs that do not require
  /// grad are passed through unchanged).
  TensorList wrap_inputs(const TensorList& inputs);
  /// Aliases of `outputs` routed through the outputs' identity node.
  TensorList wrap_outputs(const TensorList& outputs);

  struct Shared;  // state shared with the identity nodes

 private:
  std::shared_ptr<Shared> shared_;
};

}  // namespace cugrad::autograd
