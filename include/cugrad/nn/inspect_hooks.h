// Whole-model inspection: record_activations / record_gradients attach an observing hook to
// every leaf module of a tree that copies its output (or the gradient with respect to its
// output) to the host through an inspect::Inspector, tagged with the module's name.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "cugrad/hooks.h"
#include "cugrad/inspect.h"
#include "cugrad/nn/module.h"

namespace cugrad::inspect {

struct RecordOptions {
  /// The training step written into each tag (called at every delivery); unset: -1.
  std::function<std::int64_t()> step;
};

/// Attaches to every leaf module (a module without children; `root` itself when it has none)
/// an observing forward hook that queues `insp.copy(output, tag, callback)`, where tag.name is
/// the module's name() (its type name when the name is empty) and tag.phase is forward.
/// Observers: results are unchanged. The Inspector must outlive the hooks (remove them, or
/// flush and keep it alive while the model runs). Returns the handles, one per leaf.
std::vector<HookHandle> record_activations(nn::Module& root, Inspector& insp, Callback callback,
                                           RecordOptions options = {});

/// As record_activations, with an observing full backward hook that copies grad_outputs[0]
/// (the gradient with respect to the leaf's output), phase backward. It fires under the
/// module backward-hook rules (cugrad/nn/module.h): only where that gradient is computed.
std::vector<HookHandle> record_gradients(nn::Module& root, Inspector& insp, Callback callback,
                                         RecordOptions options = {});

}  // namespace cugrad::inspect
