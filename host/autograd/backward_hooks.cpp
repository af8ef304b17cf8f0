// BackwardHookSet: identity nodes on a block's inputs and outputs that run module-level
// backward hooks.
#include "host/autograd/backward_hooks.h"

#include "host/autograd/node.h"
#include "host/ops/op_util.h"

namespace cugrad::autograd {

struct BackwardHookSet::Shared {
  std::vector<BackwardPreHookFn> pre_hooks;
  std::vector<BackwardHookFn> hooks;
  std::size_t n_inputs = 0;
  bool inputs_wrapped = false;  // some input required grad
  TensorList grad_outputs;      // set by the outputs' node, read by the inputs' node

  TensorList run_hooks(TensorList grad_inputs) {
    for (const auto& h : hooks) {
      if (auto r = h(grad_inputs, grad_outputs)) {
        CUGRAD_CHECK(r->size() == grad_inputs.size(), "full backward hook returned ", r->size(),
                     " gradients for ", grad_inputs.size(), " inputs");
        grad_inputs = *r;
      }
    }
    return grad_inputs;
  }
};

namespace {

class HookIdentity : public Node {
 public:
  HookIdentity(std::shared_ptr<BackwardHookSet::Shared> shared, bool outputs_side)
      : shared_(std::move(shared)), outputs_side_(outputs_side) {}
  std::string name() const override { return outputs_side_ ? "BackwardHookOutputs" : "BackwardHookInputs"; }
  bool materialize_grads() const override { return false; }
  TensorList apply(TensorList grads) override {
    if (outputs_side_) {
      for (const auto& h : shared_->pre_hooks) {
        if (auto r = h(grads)) {
          CUGRAD_CHECK(r->size() == grads.size(), "full backward pre-hook returned ", r->size(), " gradients for ",
                       grads.size(), " outputs");
          grads = *r;
        }
      }
      shared_->grad_outputs = grads;
      if (!shared_->inputs_wrapped) (void)shared_->run_hooks(TensorList(shared_->n_inputs));
      return grads;
    }
    return shared_->run_hooks(std::move(grads));
  }

 private:
  std::shared_ptr<BackwardHookSet::Shared> shared_;
  bool outputs_side_;
};

TensorList wrap(const TensorList& tensors, const std::shared_ptr<Node>& node) {
  TensorList aliases;
  TensorList sources;
  for (const Tensor& t : tensors) {
    sources.push_back(t.defined() && t.requires_grad() ? t : Tensor());
    aliases.push_back(t.defined() && t.requires_grad() ? t.detach() : Tensor());
  }
  record(node, sources, aliases);
  TensorList out;
  for (std::size_t i = 0; i < tensors.size(); ++i) out.push_back(aliases[i].defined() ? aliases[i] : tensors[i]);
  return out;
}

}  // namespace

BackwardHookSet::BackwardHookSet(std::vector<BackwardPreHookFn> pre_hooks, std::vector<BackwardHookFn> hooks)
    : shared_(std::make_shared<Shared>()) {
  shared_->pre_hooks = std::move(pre_hooks);
  shared_->hooks = std::move(hooks);
}

TensorList BackwardHookSet::wrap_inputs(const TensorList& inputs) {
  shared_->n_inputs = inputs.size();
  if (!any_requires_grad(inputs)) return inputs;
  shared_->inputs_wrapped = true;
  return wrap(inputs, std::make_shared<HookIdentity>(shared_, false));
}

TensorList BackwardHookSet::wrap_outputs(const TensorList& outputs) {
  if (!any_requires_grad(outputs)) return outputs;
  return wrap(outputs, std::make_shared<HookIdentity>(shared_, true));
}

}  // namespace cugrad::autograd
