// Learning-rate schedules (StepLR, CosineAnnealingLR, LinearLR, OneCycleLR) with PyTorch's
// formulas, evaluated in double in PyTorch's order of operations so values match to the bit
// where the libm does.
#include <cmath>
#include <numbers>
#include <string>
#include <utility>

#include "cugrad/optim.h"

namespace cugrad::optim {

namespace {

constexpr double kPi = std::numbers::pi;

// The constructors' argument checks run in the base initializer (they return the schedule's
// name), so that a rejected argument leaves the optimizer untouched.
std::string checked_step_lr(std::int64_t step_size, double gamma) {
  CUGRAD_CHECK(step_size >= 1, "StepLR: step_size must be >= 1, got ", step_size);
  CUGRAD_CHECK(std::isfinite(gamma) && gamma >= 0, "StepLR: gamma must be finite and >= 0, got ", gamma);
  return "StepLR";
}

std::string checked_cosine(std::int64_t T_max, double eta_min) {
  CUGRAD_CHECK(T_max >= 1, "CosineAnnealingLR: T_max must be >= 1, got ", T_max);
  CUGRAD_CHECK(std::isfinite(eta_min) && eta_min >= 0,
               "CosineAnnealingLR: eta_min must be finite and >= 0, got ", eta_min);
  return "CosineAnnealingLR";
}

std::string checked_linear(double start_factor, double end_factor, std::int64_t total_iters) {
  CUGRAD_CHECK(start_factor > 0 && start_factor <= 1, "LinearLR: start_factor must be in (0, 1], got ",
               start_factor);
  CUGRAD_CHECK(end_factor >= 0 && end_factor <= 1, "LinearLR: end_factor must be in [0, 1], got ",
               end_factor);
  CUGRAD_CHECK(total_iters >= 0, "LinearLR: total_iters must be >= 0, got ", total_iters);
  return "LinearLR";
}

}  // namespace

// ---- LRScheduler ----

LRScheduler::LRScheduler(Optimizer& optimizer, std::string name, std::optional<double> initial_lr)
    : optimizer_(&optimizer), name_(std::move(name)), previous_initial_lr_(optimizer.initial_lr()) {
  if (initial_lr)
    optimizer.set_initial_lr(*initial_lr);
  else if (!optimizer.initial_lr())
    optimizer.set_initial_lr(optimizer.lr());
  base_lr_ = *optimizer.initial_lr();
}

void LRScheduler::advance() {
  const std::int64_t epoch = last_epoch_ + 1;
  const Values v = values_at(epoch);
  CUGRAD_CHECK(std::isfinite(v.lr), name_, ".step: the schedule gives a non-finite learning rate ", v.lr,
               " at step ", epoch);
  // The optimizer may reject the momentum (0 with Nesterov): set it first, and on any
  // rejection leave both values as they were.
  if (v.momentum) {
    const double previous = optimizer_->momentum();
    optimizer_->set_momentum(*v.momentum);
    try {
      optimizer_->set_lr(v.lr < 0 ? 0.0 : v.lr);
    } catch (...) {
      optimizer_->set_momentum(previous);
      throw;
    }
  } else {
    optimizer_->set_lr(v.lr < 0 ? 0.0 : v.lr);
  }
  last_epoch_ = epoch;
  last_lr_ = v.lr;
}

void LRScheduler::step() { advance(); }

void LRScheduler::initial_step() {
  try {
    advance();
  } catch (...) {
    optimizer_->set_initial_lr(previous_initial_lr_);
    throw;
  }
}

// ---- StepLR ----

StepLR::StepLR(Optimizer& optimizer, std::int64_t step_size, double gamma)
    : LRScheduler(optimizer, checked_step_lr(step_size, gamma)), step_size_(step_size), gamma_(gamma) {
  initial_step();
}

LRScheduler::Values StepLR::values_at(std::int64_t epoch) const {
  const double lr = optimizer().lr();
  if (epoch == 0 || epoch % step_size_ != 0) return {lr};
  return {lr * gamma_};
}

// ---- CosineAnnealingLR ----

CosineAnnealingLR::CosineAnnealingLR(Optimizer& optimizer, std::int64_t T_max, double eta_min)
    : LRScheduler(optimizer, checked_cosine(T_max, eta_min)), T_max_(T_max), eta_min_(eta_min) {
  initial_step();
}

LRScheduler::Values CosineAnnealingLR::values_at(std::int64_t epoch) const {
  const double lr = optimizer().lr();
  const auto t_max = static_cast<double>(T_max_);
  if (epoch == 0) return {lr};
  // A zero remainder has the same meaning under C++'s and Python's modulo.
  if ((epoch - 1 - T_max_) % (2 * T_max_) == 0)
    return {lr + (base_lr() - eta_min_) * (1 - std::cos(kPi / t_max)) / 2};
  const auto e = static_cast<double>(epoch);
  return {(1 + std::cos(kPi * e / t_max)) / (1 + std::cos(kPi * (e - 1) / t_max)) * (lr - eta_min_) +
          eta_min_};
}

// ---- LinearLR ----

LinearLR::LinearLR(Optimizer& optimizer, double start_factor, double end_factor, std::int64_t total_iters)
    : LRScheduler(optimizer, checked_linear(start_factor, end_factor, total_iters)),
      start_factor_(start_factor),
      end_factor_(end_factor),
      total_iters_(total_iters) {
  initial_step();
}

LRScheduler::Values LinearLR::values_at(std::int64_t epoch) const {
  const double lr = optimizer().lr();
  if (epoch == 0) return {lr * start_factor_};
  if (epoch > total_iters_) return {lr};
  const double delta = end_factor_ - start_factor_;
  return {lr * (1.0 + delta / (static_cast<double>(total_iters_) * start_factor_ +
                               static_cast<double>(epoch - 1) * delta))};
}

// ---- OneCycleLR ----

namespace {

// OneCycleLR's checks, run before the base constructor touches the optimizer; returns
// initial_lr = max_lr / div_factor.
double checked_one_cycle_initial_lr(const Optimizer& optimizer, double max_lr, std::int64_t total_steps,
                                    const OneCycleLROptions& o) {
  const char* op = "OneCycleLR";
  CUGRAD_CHECK(total_steps >= 1, op, ": total_steps must be a positive integer, got ", total_steps);
  CUGRAD_CHECK(std::isfinite(max_lr) && max_lr > 0, op, ": max_lr must be finite and > 0, got ", max_lr);
  CUGRAD_CHECK(o.pct_start >= 0 && o.pct_start <= 1, op, ": pct_start must be between 0 and 1, got ",
               o.pct_start);
  CUGRAD_CHECK(o.anneal_strategy == AnnealStrategy::Cos || o.anneal_strategy == AnnealStrategy::Linear, op,
               ": anneal_strategy must be Cos or Linear");
  CUGRAD_CHECK(std::isfinite(o.div_factor) && o.div_factor > 0, op,
               ": div_factor must be finite and > 0, got ", o.div_factor);
  CUGRAD_CHECK(std::isfinite(o.final_div_factor) && o.final_div_factor > 0, op,
               ": final_div_factor must be finite and > 0, got ", o.final_div_factor);
  if (o.cycle_momentum) {
    CUGRAD_CHECK(optimizer.has_momentum(), op, ": ", optimizer.name(),
                 " has no momentum to cycle; pass cycle_momentum = false");
    CUGRAD_CHECK(std::isfinite(o.base_momentum) && o.base_momentum >= 0, op,
                 ": base_momentum must be finite and >= 0, got ", o.base_momentum);
    CUGRAD_CHECK(std::isfinite(o.max_momentum) && o.max_momentum >= 0, op,
                 ": max_momentum must be finite and >= 0, got ", o.max_momentum);
  }
  return max_lr / o.div_factor;
}

}  // namespace

OneCycleLR::OneCycleLR(Optimizer& optimizer, double max_lr, std::int64_t total_steps,
                       OneCycleLROptions options)
    : LRScheduler(optimizer, "OneCycleLR",
                  checked_one_cycle_initial_lr(optimizer, max_lr, total_steps, options)),
      total_steps_(total_steps),
      max_lr_(max_lr),
      options_(options) {
  const double initial = base_lr();
  min_lr_ = initial / options.final_div_factor;
  const double base_m = options.base_momentum, max_m = options.max_momentum;
  const auto total = static_cast<double>(total_steps);
  // PyTorch's _schedule_phases, with its expressions for the end steps.
  if (options.three_phase)
    phases_ = {{options.pct_start * total - 1, initial, max_lr, max_m, base_m},
               {2 * options.pct_start * total - 2, max_lr, initial, base_m, max_m},
               {total - 1, initial, min_lr_, max_m, max_m}};
  else
    phases_ = {{options.pct_start * total - 1, initial, max_lr, max_m, base_m},
               {total - 1, max_lr, min_lr_, base_m, max_m}};
  initial_step();
}

LRScheduler::Values OneCycleLR::values_at(std::int64_t epoch) const {
  CUGRAD_CHECK(epoch <= total_steps_, "OneCycleLR.step: tried to step ", epoch,
               " times; the specified number of "
               "total steps is ",
               total_steps_, " (the schedule ends there)");
  const auto anneal = [&](double start, double end, double pct) {
    if (options_.anneal_strategy == AnnealStrategy::Cos) {
      const double cos_out = std::cos(kPi * pct) + 1;
      return end + (start - end) / 2.0 * cos_out;
    }
    return (end - start) * pct + start;
  };
  const auto step = static_cast<double>(epoch);
  double start_step = 0;
  for (std::size_t i = 0; i < phases_.size(); ++i) {
    const Phase& ph = phases_[i];
    if (step <= ph.end_step || i + 1 == phases_.size()) {
      CUGRAD_CHECK(ph.end_step != start_step, "OneCycleLR.step: phase ", i,
                   " of the schedule has zero length (", "pct_start ", options_.pct_start, ", total_steps ",
                   total_steps_, "); PyTorch divides by zero here too");
      const double pct = (step - start_step) / (ph.end_step - start_step);
      const double lr = anneal(ph.start_lr, ph.end_lr, pct);
      if (!options_.cycle_momentum) return {lr};
      return {lr, anneal(ph.start_momentum, ph.end_momentum, pct)};
    }
    start_step = ph.end_step;
  }
  throw Error("OneCycleLR: no phase (unreachable)");
}

}  // namespace cugrad::optim
