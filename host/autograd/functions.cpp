// AccumulateGrad and LambdaNode.
#include "host/autograd/functions.h"

#include "host/ops/op_util.h"
#include "host/tensor/tensor_impl.h"

namespace cugrad::autograd {

TensorList AccumulateGrad::apply(TensorList grads) {
  Tensor g = grads.at(0);
  if (!g.defined()) return {};
  Tensor leaf(leaf_);
  AutogradMeta& m = meta(leaf);
  if (!m.grad.defined()) {
    // Take the gradient without a copy when nobody else holds its storage.
    m.grad = g.impl()->storage.use_count() == 1 && !g.impl()->is_view ? g.detach() : g.clone();
  } else {
    m.grad.add_(g);
  }
  for (const auto& hook : std::vector(m.post_accumulate_hooks)) (*hook)(leaf);
  return {};
}

LambdaNode::LambdaNode(std::string name, Fn fn, const TensorList& saved) : name_(std::move(name)), fn_(std::move(fn)) {
  for (const Tensor& t : saved) saved_.emplace_back(t);
  has_saved_ = !saved.empty();
}

TensorList LambdaNode::apply(TensorList grads) {
  CUGRAD_CHECK(!(released_ && has_saved_), name_, ": trying to backward through the graph a second time (its ",
               "saved tensors were freed by the previous backward); call backward with retain_graph=true the ",
               "first time");
  TensorList saved;
  saved.reserve(saved_.size());
  for (const SavedTensor& s : saved_) saved.push_back(s.unpack(name_));
  return fn_(grads, saved, *this);
}

void record_lambda(const char* name, const TensorList& inputs, const TensorList& outputs, LambdaNode::Fn fn,
                   const TensorList& saved) {
  if (!any_requires_grad(inputs)) return;
  auto node = std::make_shared<LambdaNode>(name, std::move(fn), saved);
  record(node, inputs, outputs);
}

}  // namespace cugrad::autograd
