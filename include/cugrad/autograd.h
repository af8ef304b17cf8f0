// Autograd: grad mode, autograd::grad, anomaly mode, gradcheck and engine statistics.
//
// The graph is dynamic: an op records a node when grad mode is on and one of its inputs
// requires grad; ops whose inputs need no grad record nothing, so freezing parameters prunes
// the graph (a frozen layer computes only what flows to trainable inputs below it, and
// nothing below the lowest trainable input runs).
//
// Backward runs nodes in reverse creation order as soon as every gradient they wait for has
// arrived. Each node runs on the stream its forward ran on; a gradient produced on one
// stream and consumed on another is ordered by an event (the storage's cross-stream
// protocol), leaves accumulate on their accumulator's stream, and at the end the caller's
// current stream waits for every stream backward used. Backward never synchronizes the host.
//
// Hook firing rules:
//  - Tensor hooks (register_hook, register_observer_hook) fire when the gradient with respect
//    to that tensor has been fully accumulated, before it is used: replacing hooks first, in
//    registration order, each seeing the previous one's result, then observers. For a leaf
//    they fire before accumulation into .grad; post-accumulate hooks fire after it.
//  - autograd::grad runs only the part of the graph between the outputs and the requested
//    inputs: hooks on parts it skips do not fire, and it never touches .grad.
//  - A gradient hook or node that throws aborts backward; the exception reaches the caller,
//    and the graph stays usable with retain_graph (without it, the nodes that already ran
//    have freed their saved tensors).
// Higher-order gradients (backward of a backward) are not supported: nodes compute their
// gradients in no-grad mode.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "cugrad/tensor.h"

namespace cugrad {

bool is_grad_enabled();
void set_grad_enabled(bool enabled);

/// Disables recording in its scope (inference, optimizer updates).
class NoGradGuard {
 public:
  NoGradGuard() : previous_(is_grad_enabled()) { set_grad_enabled(false); }
  ~NoGradGuard() { set_grad_enabled(previous_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

/// Enables recording in its scope (inside a NoGradGuard).
class EnableGradGuard {
 public:
  EnableGradGuard() : previous_(is_grad_enabled()) { set_grad_enabled(true); }
  ~EnableGradGuard() { set_grad_enabled(previous_); }
  EnableGradGuard(const EnableGradGuard&) = delete;
  EnableGradGuard& operator=(const EnableGradGuard&) = delete;

 private:
  bool previous_;
};

namespace autograd {

/// Gradients of `outputs` (weighted by `grad_outputs`; may be empty for one-element outputs)
/// with respect to `inputs`, returned without touching any .grad. An input the outputs do not
/// depend on is an error unless allow_unused (then its gradient is an undefined Tensor).
TensorList grad(const TensorList& outputs, const TensorList& inputs, const TensorList& grad_outputs = {},
                bool retain_graph = false, bool allow_unused = false);

/// backward() for several outputs at once.
void backward(const TensorList& outputs, const TensorList& grad_outputs = {}, bool retain_graph = false);

/// Anomaly mode: every node's output gradients are checked for NaN/Inf, and the first
/// offender raises an error naming the op (slow: it copies gradients to the host).
void set_detect_anomaly(bool enabled);
bool is_anomaly_enabled();
class DetectAnomalyGuard {
 public:
  DetectAnomalyGuard() : previous_(is_anomaly_enabled()) { set_detect_anomaly(true); }
  ~DetectAnomalyGuard() { set_detect_anomaly(previous_); }

 private:
  bool previous_;
};

/// What the last backward/grad call on this thread executed (node names in order).
struct EngineStats {
  std::vector<std::string> executed;
};
const EngineStats& last_backward_stats();

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-5;
  double rtol = 1e-3;
  int probes = 3;  // random output weightings checked
};

/// Compares the analytic gradients of `fn` at `inputs` (float64 CPU tensors; those with
/// requires_grad are checked) with central finite differences. Returns an empty string when
/// they agree, else a description of the worst mismatch.
std::string gradcheck(const std::function<Tensor(const TensorList&)>& fn, const TensorList& inputs,
                      GradcheckOptions options = {});

}  // namespace autograd
}  // namespace cugrad
