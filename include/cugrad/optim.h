// Optimizers: the Optimizer base class and SGD with PyTorch's torch.optim.SGD semantics
// (momentum, dampening, Nesterov, weight decay, maximize). On CUDA one step is one kernel
// launch for every parameter that has a gradient, and never synchronizes the host.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "cugrad/io.h"
#include "cugrad/tensor.h"

namespace cugrad::optim {

/// The parameters an optimizer updates, zero_grad, and the interface of step, the learning
/// rate (for schedules) and checkpoints. Not thread-safe: one thread drives an optimizer.
///
/// Parameters must be defined leaf tensors of a floating dtype, all on one device, and no two
/// may overlap in memory (disjoint views of one storage, e.g. an arena, are fine). They may
/// have requires_grad false (frozen): like any parameter without a gradient, step() skips
/// them. Violations throw cugrad::ValueError naming the optimizer.
class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;
  Optimizer(Optimizer&&) = default;
  Optimizer& operator=(Optimizer&&) = default;

  /// The parameters, in the order given to the constructor (state_dict indexes them so).
  const TensorList& params() const { return params_; }
  /// The device every parameter lives on.
  Device device() const { return device_; }
  /// "SGD", ... (used in error messages).
  const std::string& name() const { return name_; }

  /// set_to_none (the default, as in PyTorch): every gradient becomes undefined, so the next
  /// backward allocates fresh ones and step() skips parameters that get none. Otherwise each
  /// defined gradient is filled with zeros in place (its storage is kept).
  void zero_grad(bool set_to_none = true);

  /// Updates every parameter that has a gradient (under no-grad: nothing is recorded; the
  /// versions of the written tensors are bumped). Gradients are only read.
  virtual void step() = 0;

  virtual double lr() const = 0;
  /// For schedules: takes effect at the next step(). Throws ValueError unless lr is finite
  /// and >= 0.
  virtual void set_lr(double lr) = 0;

  /// The optimizer's state as named tensors (saveable with io::save_safetensors).
  virtual StateDict state_dict() const = 0;
  /// Restores a state from state_dict(), validating it completely before changing anything.
  virtual void load_state_dict(const StateDict& state) = 0;

 protected:
  /// Checks `params` as described above; errors start with `name`.
  Optimizer(TensorList params, std::string name);

  TensorList params_;
  Device device_;
  std::string name_;
};

/// torch.optim.SGD's keyword arguments, in PyTorch's order, so designated initializers read
/// like PyTorch: {.lr = 0.1, .momentum = 0.9, .weight_decay = 5e-4, .nesterov = true}.
struct SGDOptions {
  double lr = 1e-3;
  double momentum = 0;
  double dampening = 0;
  double weight_decay = 0;
  bool nesterov = false;
  bool maximize = false;
};

/// Stochastic gradient descent exactly as torch.optim.SGD defines it. For each parameter p
/// whose gradient g is defined (others are skipped: unchanged, no momentum buffer created):
///
///     if maximize:      g = -g
///     if weight_decay:  g = g + weight_decay * p
///     if momentum:      buf = g                                   (first update of p)
///                       buf = momentum * buf + (1 - dampening) * g  (later updates)
///                       d = nesterov ? g + momentum * buf : buf
///     else:             d = g
///     p = p - lr * d
///
/// The momentum buffer of p is created at p's first update with momentum != 0. When momentum
/// is later set to 0, existing buffers are kept untouched and resume if it becomes nonzero
/// again (as in PyTorch).
///
/// Requires: lr, momentum and weight_decay finite and >= 0, dampening finite; nesterov needs
/// momentum > 0 and dampening == 0. Parameters as described at Optimizer.
///
/// CPU: float32 (computed in double, rounded once per value) and float64. CUDA (float32):
/// one launch of a multi-tensor kernel updates every parameter that has a gradient (several
/// launches only beyond 256 tensors), with float scalars; it makes the minimum 5 passes over
/// memory (read p, g, buf; write p, buf), 4 on a buffer's first step and 3 without momentum.
/// Results match PyTorch to rounding (about 1e-7 relative per step), not bit for bit.
/// Ordering across streams is automatic (cugrad's storage protocol): step() runs on the
/// current stream and waits, on the device, for gradients produced on other streams.
class SGD : public Optimizer {
 public:
  SGD(TensorList params, SGDOptions options = {});

  void step() override;

  double lr() const override { return options_.lr; }
  void set_lr(double lr) override;
  double momentum() const { return options_.momentum; }
  /// For schedules that cycle momentum (OneCycle): takes effect at the next step(). Must stay
  /// finite and >= 0, and > 0 with nesterov.
  void set_momentum(double momentum);
  const SGDOptions& options() const { return options_; }

  /// The momentum buffer of parameter i (undefined until its first update with momentum).
  Tensor momentum_buffer(std::size_t i) const;

  /// Entries:
  ///   "momentum_buffer.<i>"   the buffer of parameter i, for each i that has one; these alias
  ///                           the live buffers (clone them to keep a snapshot in memory);
  ///   "has_momentum_buffer"   uint8 [number of parameters], 1 where a buffer is stored;
  ///   "options.lr", "options.momentum", "options.dampening", "options.weight_decay",
  ///   "options.nesterov", "options.maximize"   float64 scalars (0-d, on the CPU).
  StateDict state_dict() const override;
  /// Restores buffers and options (as PyTorch restores param_groups), so a fresh SGD over the
  /// same parameters continues exactly where the saved one stopped. Buffers are copied
  /// (converted to each parameter's dtype and device), never aliased. Every entry is checked
  /// first: a missing or unexpected entry, a buffer whose shape differs from its parameter's,
  /// a non-floating buffer, a has_momentum_buffer of another length (an optimizer over a
  /// different number of parameters) or invalid options throw ValueError naming the entry,
  /// and leave the optimizer unchanged.
  void load_state_dict(const StateDict& state) override;

 private:
  SGDOptions options_;
  std::vector<Tensor> buffers_;  // per parameter; undefined: none yet
};

}  // namespace cugrad::optim
