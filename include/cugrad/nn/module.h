// nn::Module: the base of every layer and model (parameters, buffers, child modules with
// PyTorch's dotted names, train/eval, device and dtype moves, state_dict, printing, hooks),
// and ModuleHolder / CUGRAD_MODULE, the shared-pointer handles users write `model->...` with.
//
// Writing a module: derive from Module, register parameters, buffers and children in the
// constructor, implement forward(), and optionally extra_repr(); then CUGRAD_MODULE(Name)
// after `class NameImpl` gives the holder `Name`:
//
//   class MlpImpl : public cugrad::nn::Module {
//    public:
//     MlpImpl(std::int64_t in, std::int64_t out) : Module("Mlp") {
//       fc1 = register_module("fc1", Linear(in, 64));
//       fc2 = register_module("fc2", Linear(64, out));
//     }
//     Tensor forward(const Tensor& x) override { return fc2(fc1(x).relu()); }
//     Linear fc1 = nullptr, fc2 = nullptr;
//   };
//   CUGRAD_MODULE(Mlp);
//
// Holders forward any constructor arguments to the Impl. A braced options argument
// (`BatchNorm2d(32, {.eps = 1e-3})`) cannot be forwarded by a template, so holders of modules
// that take an options struct also declare that constructor (see nn/modules.h).
//
// Module hooks (each register_* returns a HookHandle; remove() detaches it, idempotent and
// safe after the module is gone):
//  - Observers and replacers are distinct: a hook whose callable returns void observes; one
//    that returns a value (std::optional<...>, or the value itself) may replace what it sees
//    (std::nullopt keeps it). An observer that modifies a tensor it sees in place is an error
//    (cugrad::ValueError naming the module), so observers can never change results.
//  - Order: for each kind, the replacing hooks run first in registration order, each seeing
//    the previous one's result, then the observers in registration order, seeing the final
//    value (the same rule as tensor hooks in cugrad/autograd.h).
//  - register_forward_pre_hook(fn(Module&, const TensorList& inputs)): runs in operator()
//    before forward; may return a replacement input (std::optional<TensorList> of one tensor,
//    or std::optional<Tensor>).
//  - register_forward_hook(fn(Module&, const TensorList& inputs, const Tensor& output)): runs
//    after forward with the inputs forward received; may return a replacement output.
//  - register_full_backward_pre_hook(fn(Module&, const TensorList& grad_outputs)): runs when
//    the gradient with respect to the module's output has been computed, before it flows
//    into the module; may return replacement gradients (same count).
//  - register_full_backward_hook(fn(Module&, const TensorList& grad_inputs,
//    const TensorList& grad_outputs)): runs when the gradients with respect to the module's
//    inputs are computed; an input that needs no gradient has an undefined entry. When no
//    input requires grad (a first layer, whose input is data) it runs right after the
//    backward pre-hooks with every entry undefined. It may return replacement grad_inputs.
//  - A replacement gradient (from either backward hook) must have the shape, dtype and device
//    of the tensor it is the gradient of, and the list the same count; otherwise backward
//    throws cugrad::ValueError naming the hook, the module and the position. An undefined
//    entry is allowed: no gradient flows there.
//  - Firing rules of backward hooks: a module's backward hooks fire whenever the gradient
//    with respect to its output is computed, during backward() or autograd::grad(), frozen
//    modules included (a frozen module inside a network still sees its gradients). They do
//    not fire when that gradient is not computed: the output needs no gradient (a frozen
//    first layer fed data that needs no grad records nothing at all), or autograd::grad
//    skips that part of the graph. Backward hooks are taken when operator() runs (hooks
//    added later apply to later forwards); a hook removed before backward does not fire.
//    The module is kept alive by the graph until backward has run.
//  - Hooks fire only through operator() (and holders' operator()); calling forward()
//    directly runs no hooks. A hook that throws: the exception reaches the caller of
//    operator() (forward hooks) or of backward()/grad() (backward hooks), and the module
//    and engine stay usable.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "cugrad/hooks.h"
#include "cugrad/io.h"
#include "cugrad/tensor.h"

namespace cugrad::nn {

class Module;
template <typename Impl>
class ModuleHolder;

using ForwardPreHookFn = std::function<std::optional<TensorList>(Module&, const TensorList& inputs)>;
using ForwardPreObserverFn = std::function<void(Module&, const TensorList& inputs)>;
using ForwardHookFn =
    std::function<std::optional<Tensor>(Module&, const TensorList& inputs, const Tensor& output)>;
using ForwardObserverFn = std::function<void(Module&, const TensorList& inputs, const Tensor& output)>;
using BackwardPreHookFn = std::function<std::optional<TensorList>(Module&, const TensorList& grad_outputs)>;
using BackwardPreObserverFn = std::function<void(Module&, const TensorList& grad_outputs)>;
using BackwardHookFn = std::function<std::optional<TensorList>(Module&, const TensorList& grad_inputs,
                                                               const TensorList& grad_outputs)>;
using BackwardObserverFn =
    std::function<void(Module&, const TensorList& grad_inputs, const TensorList& grad_outputs)>;

/// What load_state_dict found (with strict = false; strict loading throws instead).
struct LoadStateDictResult {
  std::vector<std::string> missing_keys;     // expected by the module, absent from the dict
  std::vector<std::string> unexpected_keys;  // in the dict, unknown to the module
};

/// A ModuleHolder (Linear, Sequential, or one made by CUGRAD_MODULE).
template <typename T>
concept ModuleHolderType = std::is_base_of_v<ModuleHolder<typename T::ImplType>, T>;

class Module : public std::enable_shared_from_this<Module> {
 public:
  /// `type_name` is what printing and error messages call the module ("Linear").
  explicit Module(std::string type_name = "Module");
  virtual ~Module();
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  /// The computation. The base class has none (calling it is an error naming the module).
  virtual Tensor forward(const Tensor& x);
  /// Runs the forward pre-hooks, forward, the forward hooks, and sets up the backward hooks.
  Tensor operator()(const Tensor& x);
  /// True when any forward, forward pre-, backward or backward pre-hook is registered (and not
  /// removed). A module with hooks is never fused with its neighbour (set_fusion_enabled).
  bool has_hooks() const;

  // ---- identity ----
  /// The module's dotted path in the tree it was last registered in ("layer1.0.conv1");
  /// a root has "" unless set_name gave it one (its descendants' paths then start with it).
  const std::string& name() const { return name_; }
  void set_name(const std::string& name);
  const std::string& type_name() const { return type_name_; }
  /// The part inside the parentheses when printed ("in_features=4, out_features=8, bias=True").
  virtual std::string extra_repr() const { return ""; }

  // ---- registration (names may not be empty or contain '.') ----
  /// Registers a parameter: a leaf tensor (undefined for an absent one, such as a disabled
  /// bias: it is then skipped by parameters() and state_dict()). Marks it requires_grad.
  /// Registering an existing parameter name replaces it.
  Tensor& register_parameter(const std::string& name, Tensor tensor, bool requires_grad = true);
  /// Registers a buffer (state that is not trained: running statistics). Persistent buffers
  /// are part of state_dict(). Undefined tensors are allowed, as for parameters.
  Tensor& register_buffer(const std::string& name, Tensor tensor, bool persistent = true);
  /// Registers a child module; its name() (and its descendants') becomes this module's path
  /// joined with `name`. Returns the child, typed.
  template <typename M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
    add_child(name, module);
    return module;
  }
  template <ModuleHolderType H>
  H register_module(const std::string& name, H holder) {
    add_child(name, holder.ptr());
    return holder;
  }

  // ---- traversal (registration order; shared tensors and modules appear once) ----
  std::vector<Tensor> parameters(bool recurse = true) const;
  /// Names relative to this module: "0.weight", "layer1.0.conv1.weight".
  std::vector<std::pair<std::string, Tensor>> named_parameters(bool recurse = true) const;
  std::vector<Tensor> buffers(bool recurse = true) const;
  std::vector<std::pair<std::string, Tensor>> named_buffers(bool recurse = true) const;
  std::vector<std::shared_ptr<Module>> children() const;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_children() const;
  /// This module first, then every descendant, depth first. (For a module that is not owned
  /// by a std::shared_ptr, such as one on the stack, the first entry does not own it.)
  std::vector<std::shared_ptr<Module>> modules();
  /// As modules(), with relative dotted names ("" for this module).
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_modules();

  // ---- modes ----
  /// Sets training mode on this module and every descendant.
  Module& train(bool on = true);
  Module& eval() { return train(false); }
  bool is_training() const { return training_; }

  // ---- device and dtype ----
  /// Moves every parameter, buffer and gradient to `device` in place, as PyTorch's
  /// Module.to: each parameter keeps its identity (the Tensor objects and copies of them,
  /// such as an optimizer's list, see the moved values). Views taken of a parameter before
  /// the move keep the old memory. Atomic: when one tensor cannot move (float64 to CUDA),
  /// nothing moves. Build the optimizer after to() when the optimizer keeps its own state.
  Module& to(Device device);
  /// Converts floating parameters, buffers and gradients to `dtype` (float32 or float64) in
  /// place, as to(Device); integer buffers (num_batches_tracked) keep their dtype.
  Module& to(DType dtype);

  // ---- gradients ----
  /// Sets requires_grad on every parameter (recursively).
  Module& requires_grad_(bool requires_grad = true);
  Module& freeze() { return requires_grad_(false); }
  Module& unfreeze() { return requires_grad_(true); }
  /// Clears every parameter's .grad (set_to_none), or zeroes it in place.
  void zero_grad(bool set_to_none = true);

  // ---- checkpoints ----
  /// Parameters and persistent buffers by dotted name. The tensors share memory with the
  /// module (as in PyTorch): clone them to keep a snapshot.
  StateDict state_dict() const;
  /// Copies values into the parameters and buffers in place (on their own devices). Checks
  /// everything before copying anything: a shape or dtype mismatch is always an error naming
  /// the key; with strict, missing and unexpected keys are errors listing them all.
  LoadStateDictResult load_state_dict(const StateDict& state, bool strict = true);

  /// Number of parameter elements (trainable_only: those that require grad).
  std::int64_t num_parameters(bool trainable_only = false) const;

  /// The tree as PyTorch prints it, followed by a line with the parameter counts.
  std::string to_string() const;
  /// One row per module (this one first as "(root)", then every descendant by dotted name,
  /// depth first): its type, the parameter elements of its subtree and how many of them are
  /// trainable (a tensor shared by two modules counts once per subtree).
  ///   module  type        parameters  trainable
  ///   (root)  Sequential          62         22
  ///   0       Linear              40          0
  std::string parameter_table() const;

  // ---- hooks (see the header comment for the firing rules) ----
  template <typename F>
  HookHandle register_forward_pre_hook(F&& fn) {
    using R = std::invoke_result_t<F&, Module&, const TensorList&>;
    if constexpr (std::is_void_v<R>) {
      return add_forward_pre_hook(nullptr, ForwardPreObserverFn(std::forward<F>(fn)));
    } else if constexpr (std::is_convertible_v<R, std::optional<TensorList>>) {
      return add_forward_pre_hook(ForwardPreHookFn(std::forward<F>(fn)), nullptr);
    } else {
      static_assert(
          std::is_convertible_v<R, std::optional<Tensor>>,
          "a forward pre-hook returns void (observer), std::optional<TensorList> or std::optional<Tensor>");
      return add_forward_pre_hook(
          [f = std::forward<F>(fn)](Module& m, const TensorList& in) mutable -> std::optional<TensorList> {
            std::optional<Tensor> r = f(m, in);
            if (!r) return std::nullopt;
            return TensorList{*r};
          },
          nullptr);
    }
  }
  template <typename F>
  HookHandle register_forward_hook(F&& fn) {
    using R = std::invoke_result_t<F&, Module&, const TensorList&, const Tensor&>;
    if constexpr (std::is_void_v<R>) {
      return add_forward_hook(nullptr, ForwardObserverFn(std::forward<F>(fn)));
    } else {
      static_assert(std::is_convertible_v<R, std::optional<Tensor>>,
                    "a forward hook returns void (observer) or std::optional<Tensor> (replacing)");
      return add_forward_hook(ForwardHookFn(std::forward<F>(fn)), nullptr);
    }
  }
  template <typename F>
  HookHandle register_full_backward_pre_hook(F&& fn) {
    using R = std::invoke_result_t<F&, Module&, const TensorList&>;
    if constexpr (std::is_void_v<R>) {
      return add_backward_pre_hook(nullptr, BackwardPreObserverFn(std::forward<F>(fn)));
    } else {
      static_assert(
          std::is_convertible_v<R, std::optional<TensorList>>,
          "a full backward pre-hook returns void (observer) or std::optional<TensorList> (replacing)");
      return add_backward_pre_hook(BackwardPreHookFn(std::forward<F>(fn)), nullptr);
    }
  }
  template <typename F>
  HookHandle register_full_backward_hook(F&& fn) {
    using R = std::invoke_result_t<F&, Module&, const TensorList&, const TensorList&>;
    if constexpr (std::is_void_v<R>) {
      return add_backward_hook(nullptr, BackwardObserverFn(std::forward<F>(fn)));
    } else {
      static_assert(std::is_convertible_v<R, std::optional<TensorList>>,
                    "a full backward hook returns void (observer) or std::optional<TensorList> (replacing)");
      return add_backward_hook(BackwardHookFn(std::forward<F>(fn)), nullptr);
    }
  }

  HookHandle add_forward_pre_hook(ForwardPreHookFn replace, ForwardPreObserverFn observe);
  HookHandle add_forward_hook(ForwardHookFn replace, ForwardObserverFn observe);
  HookHandle add_backward_pre_hook(BackwardPreHookFn replace, BackwardPreObserverFn observe);
  HookHandle add_backward_hook(BackwardHookFn replace, BackwardObserverFn observe);

  struct HookTable;  // host/nn/module.cpp

 protected:
  void add_child(const std::string& name, std::shared_ptr<Module> module);

 private:
  void set_path(const std::string& path);
  void check_new_name(const std::string& name, const char* what) const;
  void collect_parameters(const std::string& prefix, bool recurse,
                          std::vector<std::pair<std::string, Tensor>>& out,
                          std::vector<const void*>& seen) const;
  void collect_buffers(const std::string& prefix, bool recurse, bool persistent_only,
                       std::vector<std::pair<std::string, Tensor>>& out,
                       std::vector<const void*>& seen) const;
  void collect_modules(const std::string& prefix,
                       std::vector<std::pair<std::string, std::shared_ptr<Module>>>& out,
                       std::vector<const Module*>& seen);
  std::shared_ptr<Module> self_ptr();
  std::string repr() const;

  struct Buffer {
    Tensor tensor;
    bool persistent = true;
  };
  std::string type_name_;
  std::string name_;
  bool training_ = true;
  std::vector<std::pair<std::string, Tensor>> parameters_;
  std::vector<std::pair<std::string, Buffer>> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  std::shared_ptr<HookTable> hooks_;
};

std::ostream& operator<<(std::ostream& os, const Module& module);

/// A shared handle to a module of type Impl: `holder->member`, `holder(x)`, and conversion to
/// std::shared_ptr<Module> (so holders of different types fill one Sequential).
template <typename Impl>
class ModuleHolder {
 public:
  using ImplType = Impl;

  /// Constructs the Impl from the arguments (no arguments: its default constructor).
  template <typename... Args>
  requires std::is_constructible_v<Impl, Args...>
  explicit ModuleHolder(Args&&... args) : impl_(std::make_shared<Impl>(std::forward<Args>(args)...)) {}
  /// An empty holder (to be assigned later, as a member before register_module).
  ModuleHolder(std::nullptr_t) {}  // NOLINT(google-explicit-constructor)
  /// Wraps an existing module.
  ModuleHolder(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}  // NOLINT(google-explicit-constructor)

  Impl* operator->() const { return checked(); }
  Impl& operator*() const { return *checked(); }
  Impl* get() const { return impl_.get(); }
  const std::shared_ptr<Impl>& ptr() const { return impl_; }
  bool is_empty() const { return impl_ == nullptr; }
  explicit operator bool() const { return impl_ != nullptr; }
  operator std::shared_ptr<Module>() const { return impl_; }  // NOLINT(google-explicit-constructor)
  /// Runs the module with its hooks (Module::operator()).
  Tensor operator()(const Tensor& x) const { return (*checked())(x); }

 private:
  Impl* checked() const {
    CUGRAD_CHECK(impl_ != nullptr, "ModuleHolder: use of an empty module holder (assign a module first)");
    return impl_.get();
  }
  std::shared_ptr<Impl> impl_;
};

template <typename Impl>
std::ostream& operator<<(std::ostream& os, const ModuleHolder<Impl>& holder) {
  return os << *holder;
}

/// Module fusion, on by default (CUGRAD_FUSION=0 in the environment turns it off at start):
/// Sequential, and ResNet's stem and BasicBlocks, run a BatchNorm1d/BatchNorm2d followed by a
/// ReLU as one functional::batch_norm_relu when neither module has hooks; Sequential and
/// TwoConvCnn run a Conv2d followed by a ReLU as one functional::conv2d_relu likewise, and
/// TwoConvCnn adds conv2's bias inside its max-pool (functional::bias_max_pool2d). The results are the
/// same as running the two modules (bit for bit on CUDA, gradients included); the pre-ReLU
/// tensor never exists. A module with any hook runs on its own, so hooks always see what they
/// would without fusion. Global and thread-safe to change between steps.
void set_fusion_enabled(bool enabled);
bool fusion_enabled();

}  // namespace cugrad::nn

/// Defines the holder `Name` of the module class `NameImpl` (declared before it).
#define CUGRAD_MODULE(Name)                                     \
  class Name : public ::cugrad::nn::ModuleHolder<Name##Impl> {  \
   public:                                                      \
    using ::cugrad::nn::ModuleHolder<Name##Impl>::ModuleHolder; \
  }
