// BackwardHookSet: identity nodes on a block's inputs and outputs that run module-level
// backward hooks.
#include "host/autograd/backward_hooks.h"

#include "host/autograd/node.h"
#include "host/ops/op_util.h"

namespace cugrad::autograd {

namespace {

// What a gradient with respect to one tensor must look like.
struct GradMeta {
  bool defined = false;
  Shape shape;
  DType dtype = DType::float32;
  Device device = Device::cpu();
};

std::vector<GradMeta> metas_of(const TensorList& tensors) {
  std::vector<GradMeta> out;
  for (const Tensor& t : tensors)
    out.push_back(t.defined() ? GradMeta{true, t.shape(), t.dtype(), t.device()} : GradMeta{});
  return out;
}

std::string describe_meta(const GradMeta& m) {
  return detail::cat(m.dtype, shape_str(m.shape), " on ", m.device);
}

// A hook's replacement list: its length, and each defined entry against its tensor.
void check_replacement(const TensorList& r, const std::vector<GradMeta>& metas, const std::string& owner,
                       const char* hook, const char* side) {
  CUGRAD_CHECK(r.size() == metas.size(), hook, " on ", owner, " returned ", r.size(), " gradients for ",
               metas.size(), " ", side, "s");
  for (std::size_t i = 0; i < r.size(); ++i) {
    if (!r[i].defined()) continue;
    const GradMeta& m = metas[i];
    CUGRAD_CHECK(
        m.defined && r[i].shape() == m.shape && r[i].dtype() == m.dtype && r[i].device() == m.device, hook,
        " on ", owner, " returned ", describe(r[i]), " as the gradient of ", side, " ", i,
        m.defined ? ", which must be " + describe_meta(m) + " (that " + side + "'s shape, dtype and device)"
                  : std::string(", which is not a tensor"));
  }
}

}  // namespace

struct BackwardHookSet::Shared {
  std::vector<BackwardPreHookFn> pre_hooks;
  std::vector<BackwardHookFn> hooks;
  std::string owner;
  std::vector<GradMeta> input_metas, output_metas;
  bool inputs_wrapped = false;  // some input required grad
  TensorList grad_outputs;      // set by the outputs' node, read by the inputs' node

  TensorList run_hooks(TensorList grad_inputs) {
    for (const auto& h : hooks) {
      if (auto r = h(grad_inputs, grad_outputs)) {
        check_replacement(*r, input_metas, owner, "full backward hook", "input");
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
          check_replacement(*r, shared_->output_metas, shared_->owner, "full backward pre-hook", "output");
          grads = *r;
        }
      }
      shared_->grad_outputs = grads;
      if (!shared_->inputs_wrapped) (void)shared_->run_hooks(TensorList(shared_->input_metas.size()));
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

BackwardHookSet::BackwardHookSet(std::vector<BackwardPreHookFn> pre_hooks, std::vector<BackwardHookFn> hooks,
                                 std::string owner)
    : shared_(std::make_shared<Shared>()) {
  shared_->pre_hooks = std::move(pre_hooks);
  shared_->hooks = std::move(hooks);
  shared_->owner = std::move(owner);
}

TensorList BackwardHookSet::wrap_inputs(const TensorList& inputs) {
  shared_->input_metas = metas_of(inputs);
  if (!any_requires_grad(inputs)) return inputs;
  shared_->inputs_wrapped = true;
  return wrap(inputs, std::make_shared<HookIdentity>(shared_, false));
}

TensorList BackwardHookSet::wrap_outputs(const TensorList& outputs) {
  shared_->output_metas = metas_of(outputs);
  if (!any_requires_grad(outputs)) return outputs;
  return wrap(outputs, std::make_shared<HookIdentity>(shared_, true));
}

}  // namespace cugrad::autograd
