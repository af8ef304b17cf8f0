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
#include <string>

#include "cugrad/tensor.h"

namespace cugrad::autograd {

using BackwardPreHookFn = std::function<std::optional<TensorList>(const TensorList& grad_outputs)>;
using BackwardHookFn =
    std::function<std::optional<TensorList>(const TensorList& grad_inputs, const TensorList& grad_outputs)>;

class BackwardHookSet {
 public:
  /// `owner` names the block in error messages (a module's label). A gradient a hook returns in
  /// place of one it was given must have the shape, dtype and device of the tensor it is the
  /// gradient of (that input or output); anything else is an error naming the owner, the hook
  /// kind and the position, as is a list of the wrong length. Absent (undefined) entries are
  /// allowed: no gradient flows there.
  BackwardHookSet(std::vector<BackwardPreHookFn> pre_hooks, std::vector<BackwardHookFn> hooks,
                  std::string owner = "a block");
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
