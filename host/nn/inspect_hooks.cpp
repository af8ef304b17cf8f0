// record_activations / record_gradients: observing module hooks that hand every leaf's
// output (or output gradient) to an Inspector.
#include "cugrad/nn/inspect_hooks.h"

namespace cugrad::inspect {

namespace {

std::string tag_name(const nn::Module& m) { return m.name().empty() ? m.type_name() : m.name(); }

std::vector<std::shared_ptr<nn::Module>> leaves(nn::Module& root) {
  std::vector<std::shared_ptr<nn::Module>> out;
  for (const auto& m : root.modules())
    if (m->children().empty()) out.push_back(m);
  return out;
}

}  // namespace

std::vector<HookHandle> record_activations(nn::Module& root, Inspector& insp, Callback callback,
                                           RecordOptions options) {
  std::vector<HookHandle> handles;
  for (const auto& leaf : leaves(root)) {
    handles.push_back(leaf->register_forward_hook(
        [&insp, callback, options](nn::Module& m, const TensorList&, const Tensor& out) {
          if (!out.defined()) return;
          insp.copy(out, Tag(tag_name(m), Phase::forward, options.step ? options.step() : -1), callback);
        }));
  }
  return handles;
}

std::vector<HookHandle> record_gradients(nn::Module& root, Inspector& insp, Callback callback,
                                         RecordOptions options) {
  std::vector<HookHandle> handles;
  for (const auto& leaf : leaves(root)) {
    handles.push_back(leaf->register_full_backward_hook(
        [&insp, callback, options](nn::Module& m, const TensorList&, const TensorList& grad_outputs) {
          if (grad_outputs.empty() || !grad_outputs[0].defined()) return;
          insp.copy(grad_outputs[0], Tag(tag_name(m), Phase::backward, options.step ? options.step() : -1),
                    callback);
        }));
  }
  return handles;
}

}  // namespace cugrad::inspect
