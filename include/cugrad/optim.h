// Optimizers: the Optimizer base class, SGD with PyTorch's torch.optim.SGD semantics
// (momentum, dampening, Nesterov, weight decay, maximize), Adam and AdamW (torch.optim.Adam's
// and AdamW's); learning-rate schedules (StepLR, CosineAnnealingLR, LinearLR, OneCycleLR) and
// clip_grad_norm_, as PyTorch defines them. On CUDA one step is one kernel launch for every
// parameter that has a gradient (a capturable Adam: two), and neither the step nor gradient
// clipping synchronizes the host. Optimizers made with `capturable = true` can be captured into
// a CUDA graph whose replays follow later changes of their hyperparameters (graph.h).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
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

  /// Whether the optimizer has a momentum that schedules may cycle (OneCycleLR's
  /// cycle_momentum; PyTorch's "momentum" in optimizer.defaults). SGD: true.
  virtual bool has_momentum() const { return false; }
  /// The momentum (SGD's). Throws ValueError when has_momentum() is false.
  virtual double momentum() const { throw ValueError(detail::cat(name_, " has no momentum")); }
  /// For schedules that cycle momentum: takes effect at the next step(). Throws ValueError
  /// when has_momentum() is false, or for a value the optimizer rejects.
  virtual void set_momentum(double /*momentum*/) {
    throw ValueError(detail::cat(name_, " has no momentum to set"));
  }

  /// The learning rate schedules start from: PyTorch's param_group["initial_lr"]. Unset until
  /// the first scheduler is attached, which sets it to the current lr (OneCycleLR sets it to
  /// max_lr / div_factor); a later scheduler on the same optimizer keeps it, so a schedule
  /// attached after a warm-up still sees the original lr as its base, as in PyTorch.
  std::optional<double> initial_lr() const { return initial_lr_; }
  void set_initial_lr(std::optional<double> lr) { initial_lr_ = lr; }

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
  std::optional<double> initial_lr_;
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
  /// CUDA only (no effect on the CPU): lr, momentum, dampening and weight_decay live in device
  /// memory that the kernel reads, so that a step captured into a CUDA graph uses, at each
  /// replay, the values set since (set_lr, set_momentum, schedules, load_state_dict), each set
  /// queueing one small kernel on the current stream. Not in PyTorch's SGD (its Adam has it).
  bool capturable = false;
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
///
/// CUDA graphs (include/cugrad/graph.h): a step may be captured once every parameter that gets
/// a gradient has its momentum buffer (take an eager step first; a captured first step would
/// reset the buffer at every replay, so it throws cugrad::Error). Without `capturable` the
/// hyperparameters are fixed in the graph at their values at capture; with it, replays read the
/// current ones. A capturable SGD cannot switch momentum between zero and nonzero (the captured
/// kernel has a buffer or not), and its set_lr / set_momentum / load_state_dict throw inside a
/// capture (the write would be captured: call schedules between replays).
class SGD : public Optimizer {
 public:
  SGD(TensorList params, SGDOptions options = {});

  void step() override;

  double lr() const override { return options_.lr; }
  void set_lr(double lr) override;
  bool has_momentum() const override { return true; }
  double momentum() const override { return options_.momentum; }
  /// For schedules that cycle momentum (OneCycle): takes effect at the next step(). Must stay
  /// finite and >= 0, and > 0 with nesterov.
  void set_momentum(double momentum) override;
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
  /// Restores buffers and options (as PyTorch restores param_groups; `capturable` is how this
  /// optimizer runs, not state: it is neither saved nor restored), so a fresh SGD over the
  /// same parameters continues exactly where the saved one stopped. Buffers are copied
  /// (converted to each parameter's dtype and device), never aliased. Every entry is checked
  /// first: a missing or unexpected entry, a buffer whose shape differs from its parameter's,
  /// a non-floating buffer, a has_momentum_buffer of another length (an optimizer over a
  /// different number of parameters) or invalid options throw ValueError naming the entry,
  /// and leave the optimizer unchanged.
  void load_state_dict(const StateDict& state) override;

 private:
  void write_device_scalars();

  SGDOptions options_;
  std::vector<Tensor> buffers_;  // per parameter; undefined: none yet
  Tensor device_scalars_;        // capturable on CUDA: float {lr, momentum, 1 - dampening, weight_decay}
};

/// torch.optim.Adam's keyword arguments, in PyTorch's order: {.lr = 1e-3, .betas = {0.9, 0.999}}.
struct AdamOptions {
  double lr = 1e-3;
  std::array<double, 2> betas = {0.9, 0.999};
  double eps = 1e-8;
  double weight_decay = 0;
  bool amsgrad = false;
  bool maximize = false;
  /// CUDA only (no effect on the CPU): the hyperparameters and the step counts live in device
  /// memory and the bias corrections are computed there (PyTorch's capturable=True), so that a
  /// step captured into a CUDA graph advances the counts and uses, at each replay, the values set
  /// since (set_lr, set_momentum, schedules, load_state_dict).
  bool capturable = false;
};

/// torch.optim.AdamW's keyword arguments: Adam's, with weight_decay 1e-2 by default (decoupled).
struct AdamWOptions {
  double lr = 1e-3;
  std::array<double, 2> betas = {0.9, 0.999};
  double eps = 1e-8;
  double weight_decay = 1e-2;
  bool amsgrad = false;
  bool maximize = false;
  /// CUDA only (no effect on the CPU): the hyperparameters and the step counts live in device
  /// memory and the bias corrections are computed there (PyTorch's capturable=True), so that a
  /// step captured into a CUDA graph advances the counts and uses, at each replay, the values set
  /// since (set_lr, set_momentum, schedules, load_state_dict).
  bool capturable = false;
};

/// Adam exactly as torch.optim.Adam defines it (and, as AdamW, torch.optim.AdamW). For each
/// parameter p whose gradient g is defined (others are skipped: unchanged, their state and step
/// count untouched), with t its own step count after this step (1 on its first update):
///
///     if maximize:      g = -g
///     Adam,  if weight_decay:  g = g + weight_decay * p          (L2 penalty in the gradient)
///     AdamW:                   p = p * (1 - lr * weight_decay)  (decoupled weight decay)
///     m = beta1 * m + (1 - beta1) * g                    (exp_avg; zeros before the first update)
///     v = beta2 * v + (1 - beta2) * g * g                (exp_avg_sq; zeros before)
///     if amsgrad:       v_max = max(v_max, v), used for v below   (max_exp_avg_sq)
///     p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
///
/// The state of p (m, v, v_max and t) is created at p's first update. has_momentum() is true:
/// momentum() is beta1, which OneCycleLR's cycle_momentum cycles, as PyTorch does for Adam.
///
/// Requires: lr, eps and weight_decay finite and >= 0, 0 <= beta1, beta2 < 1. Parameters as
/// described at Optimizer.
///
/// CPU: float32 (computed in double, rounded once per value) and float64. CUDA (float32): one
/// launch of a multi-tensor kernel updates every parameter that has a gradient (several only
/// beyond 256 tensors), with float math and the bias corrections computed per tensor on the host
/// in double; 7 passes over memory (read p, g, m, v; write p, m, v), 9 with amsgrad, 5 (6) on a
/// parameter's first step, when the state is written without being read. Results match PyTorch
/// to rounding, not bit for bit. step() runs on the current stream and waits, on the device, for
/// gradients produced on other streams.
///
/// CUDA graphs (include/cugrad/graph.h): without `capturable` the bias corrections are the
/// host's values of each step, so step() throws cugrad::Error inside a capture (a replay would
/// repeat them). With it, the step counts and hyperparameters are device memory (each set_*
/// queues one small kernel, and a step one more, that advances the counts): a step can be
/// captured once every parameter that gets a gradient has its state (take an eager step first;
/// otherwise it throws), replays advance the counts, and step_count() and state_dict() read
/// the counts back from the device (they wait for it). set_lr / set_momentum / load_state_dict
/// throw inside a capture (call schedules between replays).
class Adam : public Optimizer {
 public:
  Adam(TensorList params, AdamOptions options = {});

  void step() override;

  double lr() const override { return options_.lr; }
  void set_lr(double lr) override;
  bool has_momentum() const override { return true; }
  /// beta1.
  double momentum() const override { return options_.betas[0]; }
  /// Sets beta1 (OneCycleLR's cycle_momentum); must stay in [0, 1). Takes effect at the next step().
  void set_momentum(double beta1) override;
  const AdamOptions& options() const { return options_; }
  /// True for AdamW (decoupled weight decay).
  bool decoupled_weight_decay() const { return decoupled_; }

  /// The number of updates parameter i has had (PyTorch's state["step"]; 0: no state yet).
  /// Capturable on CUDA: read from the device (waits for the queued steps).
  std::int64_t step_count(std::size_t i) const;
  /// Parameter i's state (undefined until its first update; max_exp_avg_sq only with amsgrad).
  Tensor exp_avg(std::size_t i) const;
  Tensor exp_avg_sq(std::size_t i) const;
  Tensor max_exp_avg_sq(std::size_t i) const;

  /// Entries:
  ///   "step"                  float64 [number of parameters] on the CPU: each parameter's
  ///                           step count (0: no state, and none of the entries below);
  ///   "exp_avg.<i>", "exp_avg_sq.<i>", and with amsgrad "max_exp_avg_sq.<i>", for each i with
  ///                           a state; these alias the live tensors;
  ///   "options.lr", "options.beta1", "options.beta2", "options.eps", "options.weight_decay",
  ///   "options.amsgrad", "options.maximize", "options.decoupled_weight_decay"  float64 scalars
  ///   (`capturable` is how this optimizer runs, not state: neither saved nor restored).
  StateDict state_dict() const override;
  /// Restores state and options, so a fresh Adam (AdamW) over the same parameters continues
  /// exactly where the saved one stopped. Tensors are copied, never aliased. Every entry is
  /// checked first (missing, unexpected, wrongly shaped or non-floating entries, a step list of
  /// another length, an Adam state loaded into an AdamW or the reverse, invalid options): each
  /// throws ValueError naming the entry and leaves the optimizer unchanged.
  void load_state_dict(const StateDict& state) override;

 protected:
  Adam(TensorList params, AdamOptions options, std::string name, bool decoupled);

 private:
  struct State {
    std::int64_t step = 0;  // the host's count; capturable on CUDA, replays advance only the device's
    Tensor exp_avg, exp_avg_sq, max_exp_avg_sq;
  };
  void write_device_scalars();

  AdamOptions options_;
  bool decoupled_;
  std::vector<State> state_;
  Tensor device_scalars_;  // capturable on CUDA: double {lr, beta1, beta2, eps, weight_decay} (int64 storage)
  Tensor device_steps_;    // capturable on CUDA: int64 [2 x parameters], {step count, its factors} each
};

/// torch.optim.AdamW: Adam with decoupled weight decay (p = p * (1 - lr * weight_decay) before
/// the update, instead of adding weight_decay * p to the gradient); see Adam.
class AdamW : public Adam {
 public:
  AdamW(TensorList params, AdamWOptions options = {});
};

// ---- learning-rate schedules ----

/// Base of the learning-rate schedules: torch.optim.lr_scheduler.LRScheduler for an optimizer
/// with one parameter group (cugrad's optimizers have one). Use it as in PyTorch: construct it
/// after the optimizer (the constructor takes the first step, to step 0, and writes that step's
/// lr into the optimizer), then call optimizer.step() and scheduler.step() once per step:
///
///     optim::SGD opt(params, {.lr = 0.1, .momentum = 0.9});
///     optim::OneCycleLR sched(opt, /*max_lr=*/0.2, /*total_steps=*/steps);
///     for (...) { ...; opt.step(); sched.step(); }
///
/// The lr in effect at step k (after the constructor and k calls of step()) is PyTorch's value
/// at last_epoch k, computed with PyTorch's own formulas in double: the chainable (recursive)
/// forms for StepLR, CosineAnnealingLR and LinearLR, which read the optimizer's current lr, so
/// several schedules on one optimizer compose as in PyTorch (each step() applies its own
/// factor), and the closed form for OneCycleLR.
///
/// The optimizer must outlive the scheduler and stay where it is (not be moved from). The first
/// scheduler attached to an optimizer sets its initial_lr() (PyTorch's
/// param_group["initial_lr"]) to the current lr; base_lr() is the optimizer's initial_lr() when
/// the scheduler was made. A schedule value that is negative (only OneCycleLR with linear
/// annealing gives one, on the step() that reaches total_steps, which extrapolates past the
/// end; PyTorch stores it but no training step uses it) is reported by get_last_lr() as
/// PyTorch's value, while the optimizer, which accepts no negative lr, gets 0. Resuming from a
/// saved last_epoch (PyTorch's last_epoch argument) and the deprecated step(epoch) are not
/// provided. Not thread-safe.
class LRScheduler {
 public:
  virtual ~LRScheduler() = default;
  LRScheduler(const LRScheduler&) = delete;
  LRScheduler& operator=(const LRScheduler&) = delete;

  /// Advances the schedule by one step and writes the new lr (and momentum, for OneCycleLR)
  /// into the optimizer. On an error (OneCycleLR past its end, a value the optimizer rejects)
  /// nothing changes: neither the scheduler nor the optimizer.
  void step();
  /// The lr computed by the last step() (or the constructor): PyTorch's get_last_lr()[0].
  double get_last_lr() const { return last_lr_; }
  /// The number of step() calls since construction (PyTorch's last_epoch: 0 after it).
  std::int64_t last_epoch() const { return last_epoch_; }
  /// PyTorch's base_lrs[0].
  double base_lr() const { return base_lr_; }
  Optimizer& optimizer() const { return *optimizer_; }
  /// "StepLR", ... (used in error messages).
  const std::string& name() const { return name_; }

 protected:
  /// Binds the schedule to `optimizer`. `initial_lr`, when given, replaces the optimizer's
  /// initial_lr (OneCycleLR); otherwise it is set to the optimizer's lr only if unset.
  LRScheduler(Optimizer& optimizer, std::string name, std::optional<double> initial_lr = std::nullopt);

  struct Values {
    Values(double lr_value, std::optional<double> momentum_value = std::nullopt)  // NOLINT: implicit
        : lr(lr_value), momentum(momentum_value) {}
    double lr;
    std::optional<double> momentum;  // set by schedules that cycle it
  };
  /// PyTorch's get_lr() at last_epoch = `epoch` (the optimizer still holds the previous
  /// step's values). Must not change any state; may throw ValueError.
  virtual Values values_at(std::int64_t epoch) const = 0;
  /// The constructor's step to epoch 0; the last statement of every derived constructor
  /// (a base constructor cannot call values_at). If it throws, the optimizer's initial_lr is
  /// restored, so a failed construction leaves the optimizer as it was.
  void initial_step();

 private:
  void advance();

  Optimizer* optimizer_;
  std::string name_;
  std::optional<double> previous_initial_lr_;
  double base_lr_ = 0;
  std::int64_t last_epoch_ = -1;
  double last_lr_ = 0;
};

/// torch.optim.lr_scheduler.StepLR: the lr is multiplied by gamma at every step that is a
/// multiple of step_size (lr at step k = initial lr * gamma^(k / step_size), built up
/// multiplicatively). Requires step_size >= 1 and a finite gamma >= 0.
class StepLR : public LRScheduler {
 public:
  StepLR(Optimizer& optimizer, std::int64_t step_size, double gamma = 0.1);
  std::int64_t step_size() const { return step_size_; }
  double gamma() const { return gamma_; }

 private:
  Values values_at(std::int64_t epoch) const override;
  std::int64_t step_size_;
  double gamma_;
};

/// torch.optim.lr_scheduler.CosineAnnealingLR in PyTorch's recursive form:
///     lr_k = eta_min + (lr_{k-1} - eta_min) * (1 + cos(pi k / T_max)) / (1 + cos(pi (k-1) / T_max)),
/// and at k = T_max + 1 (mod 2 T_max) lr_k = lr_{k-1} + (base_lr - eta_min)(1 - cos(pi / T_max)) / 2,
/// which follows the closed form eta_min + (base_lr - eta_min)(1 + cos(pi k / T_max)) / 2 to
/// rounding while nothing else changes the lr, past T_max as well (the lr rises again: no
/// restarts, as in PyTorch). Requires T_max >= 1 and a finite eta_min >= 0.
class CosineAnnealingLR : public LRScheduler {
 public:
  CosineAnnealingLR(Optimizer& optimizer, std::int64_t T_max, double eta_min = 0);
  std::int64_t T_max() const { return T_max_; }
  double eta_min() const { return eta_min_; }

 private:
  Values values_at(std::int64_t epoch) const override;
  std::int64_t T_max_;
  double eta_min_;
};

/// torch.optim.lr_scheduler.LinearLR (linear warm-up, or decay): the lr is multiplied by
/// start_factor at step 0 and its factor moves linearly to end_factor at step total_iters,
/// after which the lr is left alone (chainable form). Requires 0 < start_factor <= 1,
/// 0 <= end_factor <= 1 and total_iters >= 0.
class LinearLR : public LRScheduler {
 public:
  LinearLR(Optimizer& optimizer, double start_factor = 1.0 / 3, double end_factor = 1.0,
           std::int64_t total_iters = 5);
  double start_factor() const { return start_factor_; }
  double end_factor() const { return end_factor_; }
  std::int64_t total_iters() const { return total_iters_; }

 private:
  Values values_at(std::int64_t epoch) const override;
  double start_factor_;
  double end_factor_;
  std::int64_t total_iters_;
};

/// OneCycleLR's anneal_strategy ('cos' or 'linear').
enum class AnnealStrategy : std::uint8_t { Cos, Linear };

/// OneCycleLR's keyword arguments after max_lr and total_steps, in PyTorch's order.
struct OneCycleLROptions {
  double pct_start = 0.3;
  AnnealStrategy anneal_strategy = AnnealStrategy::Cos;
  bool cycle_momentum = true;
  double base_momentum = 0.85;
  double max_momentum = 0.95;
  double div_factor = 25;
  double final_div_factor = 1e4;
  bool three_phase = false;
};

/// torch.optim.lr_scheduler.OneCycleLR (closed form; PyTorch's epochs * steps_per_epoch is
/// total_steps here). The lr goes from initial_lr = max_lr / div_factor up to max_lr over the
/// first pct_start * total_steps steps, then down to min_lr = initial_lr / final_div_factor
/// at step total_steps - 1 (three_phase: back to initial_lr over as many steps, then down to
/// min_lr). With cycle_momentum the optimizer's momentum moves inversely, between
/// max_momentum and base_momentum (the optimizer must have one: SGD's momentum, Adam's beta1). Overwrites the
/// optimizer's initial_lr. step() may be called total_steps times (the last value extrapolates
/// past the end, as in PyTorch); one more throws ValueError ("tried to step ... times"), as in
/// PyTorch. A phase of zero length (pct_start * total_steps == 1, or pct_start == 1), where
/// PyTorch divides by zero, throws ValueError when it is reached.
/// Requires total_steps >= 1, a finite max_lr > 0, 0 <= pct_start <= 1, finite div_factor
/// and final_div_factor > 0, and finite momenta >= 0.
class OneCycleLR : public LRScheduler {
 public:
  OneCycleLR(Optimizer& optimizer, double max_lr, std::int64_t total_steps, OneCycleLROptions options = {});
  std::int64_t total_steps() const { return total_steps_; }
  double max_lr() const { return max_lr_; }
  double min_lr() const { return min_lr_; }
  const OneCycleLROptions& options() const { return options_; }

 private:
  struct Phase {
    double end_step;
    double start_lr, end_lr, start_momentum, end_momentum;
  };
  Values values_at(std::int64_t epoch) const override;
  std::int64_t total_steps_;
  double max_lr_;
  double min_lr_;
  OneCycleLROptions options_;
  std::vector<Phase> phases_;
};

// ---- gradient clipping ----

/// torch.nn.utils.clip_grad_norm_: scales the gradients of `params` in place so that their
/// total norm is at most max_norm, and returns the total norm (before clipping) as a 0-d
/// tensor on the gradients' device (float32; float64 on the CPU when a gradient is float64).
///
///     total = norm of the per-tensor norms (for a p-norm: the p-norm of all elements)
///     coef  = min(max_norm / (total + 1e-6), 1)        (a NaN total gives a NaN coef)
///     every gradient *= coef
///
/// norm_type is a finite p > 0 or +inf (max |g|); PyTorch's 0 and -inf "norms" are rejected.
/// Parameters without a gradient are skipped; with none at all, nothing is done and a zero
/// (float32, on params[0]'s device, or the CPU for an empty list) is returned. All gradients
/// must be on one device and no two may share memory (each would be scaled twice). A
/// non-finite total is not an error by default: the gradients are scaled by the resulting
/// coefficient (NaN, or 0 for an infinite norm), as in PyTorch. With error_if_nonfinite a
/// non-finite total throws ValueError and leaves the gradients unchanged; on CUDA this needs
/// the total on the host, so that call waits for the device (the one synchronization).
/// Requires max_norm >= 0 (inf allowed).
///
/// CPU: per-tensor norms accumulated in double. CUDA (float32): one multi-tensor launch
/// reduces every gradient into per-block partials (float64 accumulation), one single-block
/// launch combines them in a fixed order into the total norm and the coefficient, both left on
/// the device, and one multi-tensor launch scales the gradients (skipping all memory traffic
/// when the coefficient is 1); beyond 256 gradients, one reduce and one scale launch per 256.
/// Deterministic; the host does not wait. Runs under no-grad; gradients' versions are bumped.
Tensor clip_grad_norm_(const TensorList& params, double max_norm, double norm_type = 2.0,
                       bool error_if_nonfinite = false);

}  // namespace cugrad::optim
