// Nodes the engine itself needs: AccumulateGrad (leaf .grad updates), and a helper to write
// op nodes from a lambda when a dedicated class is not worth it.
#pragma once

#include <functional>

#include "host/autograd/node.h"

namespace cugrad::autograd {

/// Accumulates the incoming gradient into its leaf's .grad (on the node's stream), running
/// the leaf's hooks before and its post-accumulate hooks after.
class AccumulateGrad : public Node {
 public:
  explicit AccumulateGrad(std::shared_ptr<TensorImpl> leaf) : leaf_(std::move(leaf)) {}
  std::string name() const override { return "AccumulateGrad"; }
  TensorList apply(TensorList grad_outputs) override;
  TensorImpl* leaf() const override { return leaf_.get(); }
  const std::shared_ptr<TensorImpl>& leaf_ptr() const { return leaf_; }

 private:
  std::shared_ptr<TensorImpl> leaf_;
};

/// A node whose backward is a function of the output gradients and its saved tensors.
/// `saved` are unpacked (version-checked) and passed to `fn` in order.
class LambdaNode : public Node {
 public:
  using Fn = std::function<TensorList(const TensorList& grads, const TensorList& saved, const Node& self)>;
  LambdaNode(std::string name, Fn fn, const TensorList& saved = {});
  std::string name() const override { return name_; }
  TensorList apply(TensorList grad_outputs) override;
  void release_saved() override { saved_.clear(); }

 private:
  std::string name_;
  Fn fn_;
  std::vector<SavedTensor> saved_;
};

/// Records a LambdaNode for `outputs` when grad mode is on and an input requires grad.
/// Saved tensors should be inputs or outputs the backward needs.
void record_lambda(const char* name, const TensorList& inputs, const TensorList& outputs, LambdaNode::Fn fn,
                   const TensorList& saved = {});

}  // namespace cugrad::autograd
