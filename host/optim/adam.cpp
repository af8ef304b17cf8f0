// Adam and AdamW: option checks, the step (one multi-tensor launch on CUDA, the reference loops
// on the CPU) and the state dict.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "cuda/adam.h"
#include "cugrad/autograd.h"
#include "cugrad/optim.h"
#include "host/cpu/adam.h"
#include "host/ops/op_util.h"
#include "host/optim/optim_util.h"
#include "host/runtime/capture.h"
#include "host/tensor/tensor_impl.h"

namespace cugrad::optim {

namespace {

void check_options(const std::string& where, const AdamOptions& o) {
  CUGRAD_CHECK(std::isfinite(o.lr) && o.lr >= 0, where, ": invalid learning rate ", o.lr,
               " (needs a finite lr >= 0)");
  CUGRAD_CHECK(std::isfinite(o.eps) && o.eps >= 0, where, ": invalid eps ", o.eps,
               " (needs a finite eps >= 0)");
  for (int k = 0; k < 2; ++k)
    CUGRAD_CHECK(o.betas[k] >= 0 && o.betas[k] < 1, where, ": invalid beta", k + 1, " ", o.betas[k],
                 " (needs 0 <= beta < 1)");
  CUGRAD_CHECK(std::isfinite(o.weight_decay) && o.weight_decay >= 0, where, ": invalid weight_decay ",
               o.weight_decay, " (needs a finite weight_decay >= 0)");
}

AdamOptions from_adamw(const AdamWOptions& o) {
  return {o.lr, o.betas, o.eps, o.weight_decay, o.amsgrad, o.maximize, o.capturable};
}

constexpr const char* kExpAvg = "exp_avg.";
constexpr const char* kExpAvgSq = "exp_avg_sq.";
constexpr const char* kMaxExpAvgSq = "max_exp_avg_sq.";
constexpr const char* kStep = "step";
constexpr const char* kOptionKeys[] = {
    "options.lr",           "options.beta1",   "options.beta2",    "options.eps",
    "options.weight_decay", "options.amsgrad", "options.maximize", "options.decoupled_weight_decay"};

}  // namespace

Adam::Adam(TensorList params, AdamOptions options) : Adam(std::move(params), options, "Adam", false) {}

Adam::Adam(TensorList params, AdamOptions options, std::string name, bool decoupled)
    : Optimizer(std::move(params), std::move(name)), options_(options), decoupled_(decoupled) {
  check_options(name_, options_);
  state_.resize(params_.size());
  if (options_.capturable && device_.is_cuda()) {
    CUGRAD_CHECK(!util::capturing(device_), name_, ": a capturable ", name_,
                 " must be made outside a CUDA-graph capture");
    device_scalars_ = empty({cuda::kAdamDeviceScalars}, device_, DType::int64);  // holds doubles
    device_steps_ = zeros({static_cast<std::int64_t>(2 * params_.size())}, device_, DType::int64);
    write_device_scalars();
  }
}

namespace {

// Element `index` of a capturable optimizer's device scalars (doubles in int64 storage).
void write_device_scalar(const Tensor& scalars, int index, double value, const std::string& where) {
  OpScope scope(where.c_str(), scalars.device());
  scope.writes(scalars);
  cuda::adam_write_device_scalar(reinterpret_cast<double*>(scalars.data_ptr<std::int64_t>()) + index, value,
                                 scope.stream());
  scalars.impl()->storage->bump_version();
}

}  // namespace

void Adam::write_device_scalars() {
  if (!device_scalars_.defined()) return;
  const double values[cuda::kAdamDeviceScalars] = {options_.lr, options_.betas[0], options_.betas[1],
                                                   options_.eps, options_.weight_decay};
  for (int k = 0; k < cuda::kAdamDeviceScalars; ++k)
    write_device_scalar(device_scalars_, k, values[k], name_ + ".device_scalars");
}

AdamW::AdamW(TensorList params, AdamWOptions options)
    : Adam(std::move(params), from_adamw(options), "AdamW", true) {}

void Adam::set_lr(double lr) {
  AdamOptions o = options_;
  o.lr = lr;
  check_options(name_ + ".set_lr", o);
  util::check_settable(name_ + ".set_lr", device_scalars_, device_);
  options_ = o;
  if (device_scalars_.defined()) write_device_scalar(device_scalars_, 0, lr, name_ + ".set_lr");
}

void Adam::set_momentum(double beta1) {
  AdamOptions o = options_;
  o.betas[0] = beta1;
  check_options(name_ + ".set_momentum", o);
  util::check_settable(name_ + ".set_momentum", device_scalars_, device_);
  options_ = o;
  if (device_scalars_.defined()) write_device_scalar(device_scalars_, 1, beta1, name_ + ".set_momentum");
}

std::int64_t Adam::step_count(std::size_t i) const {
  CUGRAD_CHECK(i < state_.size(), name_, ".step_count: parameter index ", i, " out of range (", state_.size(),
               " parameters)");
  if (device_steps_.defined())
    return device_steps_.narrow(0, 2 * static_cast<std::int64_t>(i), 1).to_vector<std::int64_t>()[0];
  return state_[i].step;
}

Tensor Adam::exp_avg(std::size_t i) const {
  CUGRAD_CHECK(i < state_.size(), name_, ".exp_avg: parameter index ", i, " out of range (", state_.size(),
               " parameters)");
  return state_[i].exp_avg;
}

Tensor Adam::exp_avg_sq(std::size_t i) const {
  CUGRAD_CHECK(i < state_.size(), name_, ".exp_avg_sq: parameter index ", i, " out of range (", state_.size(),
               " parameters)");
  return state_[i].exp_avg_sq;
}

Tensor Adam::max_exp_avg_sq(std::size_t i) const {
  CUGRAD_CHECK(i < state_.size(), name_, ".max_exp_avg_sq: parameter index ", i, " out of range (",
               state_.size(), " parameters)");
  return state_[i].max_exp_avg_sq;
}

void Adam::step() {
  NoGradGuard no_grad;
  const std::string where = name_ + ".step";
  const cpu::AdamHyper h{options_.lr,           options_.betas[0], options_.betas[1], options_.eps,
                         options_.weight_decay, options_.amsgrad,  options_.maximize, decoupled_};

  std::vector<std::size_t> active;
  active.reserve(params_.size());
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i];
    if (!util::has_valid_gradient(p, i, device_, where)) continue;
    const State& st = state_[i];
    if (st.step > 0) {
      for (const Tensor* t : {&st.exp_avg, &st.exp_avg_sq, &st.max_exp_avg_sq}) {
        if (t == &st.max_exp_avg_sq && !options_.amsgrad) continue;
        CUGRAD_CHECK(
            t->defined() && t->shape() == p.shape() && t->dtype() == p.dtype() && t->device() == p.device(),
            where, ": the state of parameter ", i, " (", t->defined() ? describe(*t) : "missing",
            ") does not match the parameter, ", describe(p));
      }
    }
    active.push_back(i);
  }
  if (active.empty()) return;
  if (util::capturing(device_)) {
    CUGRAD_CHECK(
        device_steps_.defined(), where,
        ": cannot be captured into a CUDA graph: its bias corrections depend on the step count, which "
        "a replay would not advance; make it with capturable = true, or run the step outside the capture");
    for (const std::size_t i : active)
      CUGRAD_CHECK(state_[i].step > 0, where, ": parameter ", i,
                   " has no state yet, and a first step inside a CUDA-graph capture would reinitialize it at "
                   "every replay; take one step before capturing");
  }

  // State created by this step: kept only once the update has been queued.
  std::vector<State> next(active.size());
  for (std::size_t k = 0; k < active.size(); ++k) {
    const std::size_t i = active[k];
    const State& st = state_[i];
    State& n = next[k];
    n.step = st.step + 1;
    if (st.step == 0) {
      n.exp_avg = empty_like(params_[i]);
      n.exp_avg_sq = empty_like(params_[i]);
    } else {
      n.exp_avg = st.exp_avg;
      n.exp_avg_sq = st.exp_avg_sq;
    }
    if (options_.amsgrad) n.max_exp_avg_sq = st.step == 0 ? empty_like(params_[i]) : st.max_exp_avg_sq;
  }

  if (device_.is_cuda()) {
    OpScope scope(where.c_str(), device_);
    std::vector<cuda::AdamTensorArgs> args;
    args.reserve(active.size());
    for (std::size_t k = 0; k < active.size(); ++k) {
      const std::size_t i = active[k];
      const Tensor& p = params_[i];
      const Tensor g = p.grad();
      State& n = next[k];
      scope.reads(g);
      scope.writes(p);
      scope.writes(n.exp_avg);
      scope.writes(n.exp_avg_sq);
      if (options_.amsgrad) scope.writes(n.max_exp_avg_sq);
      args.push_back({p.data_ptr<float>(), g.data_ptr<float>(), n.exp_avg.data_ptr<float>(),
                      n.exp_avg_sq.data_ptr<float>(),
                      options_.amsgrad ? n.max_exp_avg_sq.data_ptr<float>() : nullptr, p.numel(), n.step == 1,
                      cpu::adam_step_factors(h, n.step)});
    }
    const double* device_scalars = nullptr;
    if (device_steps_.defined()) {
      scope.reads(device_scalars_);
      scope.writes(device_steps_);
      device_scalars = reinterpret_cast<const double*>(device_scalars_.data_ptr<std::int64_t>());
      std::int64_t* steps = device_steps_.data_ptr<std::int64_t>();
      for (std::size_t k = 0; k < active.size(); ++k) args[k].step = steps + 2 * active[k];
    }
    cuda::adam_step(args.data(), args.size(), h, scope.stream(), cuda::kAdamChunkElements, device_scalars);
  } else {
    for (std::size_t k = 0; k < active.size(); ++k) {
      const std::size_t i = active[k];
      const Tensor& p = params_[i];
      const Tensor g = p.grad();
      State& n = next[k];
      cpu::adam_update(p.dtype(), p.raw_data(), g.raw_data(), n.exp_avg.raw_data(), n.exp_avg_sq.raw_data(),
                       options_.amsgrad ? n.max_exp_avg_sq.raw_data() : nullptr, p.numel(), n.step == 1, h,
                       cpu::adam_step_factors(h, n.step));
    }
  }

  for (std::size_t k = 0; k < active.size(); ++k) {
    const std::size_t i = active[k];
    state_[i] = std::move(next[k]);
    params_[i].impl()->storage->bump_version();
    if (device_steps_.defined()) device_steps_.impl()->storage->bump_version();
    for (const Tensor* t : {&state_[i].exp_avg, &state_[i].exp_avg_sq, &state_[i].max_exp_avg_sq})
      if (t->defined()) t->impl()->storage->bump_version();
  }
}

StateDict Adam::state_dict() const {
  StateDict out;
  std::vector<double> steps(params_.size(), 0);
  std::vector<std::int64_t> device_steps;
  if (device_steps_.defined()) device_steps = device_steps_.to_vector<std::int64_t>();
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const State& st = state_[i];
    steps[i] = static_cast<double>(device_steps_.defined() ? device_steps[2 * i] : st.step);
    if (st.step == 0) continue;
    out[util::indexed_key(kExpAvg, i)] = st.exp_avg;
    out[util::indexed_key(kExpAvgSq, i)] = st.exp_avg_sq;
    if (options_.amsgrad) out[util::indexed_key(kMaxExpAvgSq, i)] = st.max_exp_avg_sq;
  }
  out[kStep] = from_vector(steps, {static_cast<std::int64_t>(steps.size())});
  out["options.lr"] = util::cpu_scalar(options_.lr);
  out["options.beta1"] = util::cpu_scalar(options_.betas[0]);
  out["options.beta2"] = util::cpu_scalar(options_.betas[1]);
  out["options.eps"] = util::cpu_scalar(options_.eps);
  out["options.weight_decay"] = util::cpu_scalar(options_.weight_decay);
  out["options.amsgrad"] = util::cpu_scalar(options_.amsgrad ? 1.0 : 0.0);
  out["options.maximize"] = util::cpu_scalar(options_.maximize ? 1.0 : 0.0);
  out["options.decoupled_weight_decay"] = util::cpu_scalar(decoupled_ ? 1.0 : 0.0);
  return out;
}

void Adam::load_state_dict(const StateDict& state) {
  const std::string where = name_ + ".load_state_dict";
  const std::size_t count = params_.size();
  const util::StateReader reader(state, where);

  AdamOptions o;
  o.lr = reader.scalar("options.lr");
  o.betas = {reader.scalar("options.beta1"), reader.scalar("options.beta2")};
  o.eps = reader.scalar("options.eps");
  o.weight_decay = reader.scalar("options.weight_decay");
  o.amsgrad = reader.flag("options.amsgrad");
  o.maximize = reader.flag("options.maximize");
  const bool decoupled = reader.flag("options.decoupled_weight_decay");
  CUGRAD_CHECK(decoupled == decoupled_, where, ": the state is ", decoupled ? "AdamW" : "Adam",
               "'s (entry 'options.decoupled_weight_decay'), but this optimizer is ", name_);
  check_options(where, o);
  util::check_settable(where, device_scalars_, device_);
  o.capturable = options_.capturable;

  const Tensor& steps_entry = reader.entry(kStep);
  CUGRAD_CHECK(is_floating(steps_entry.dtype()) && steps_entry.dim() == 1, where, ": entry '", kStep,
               "' must be a 1-D floating-point tensor, got ", describe(steps_entry));
  CUGRAD_CHECK(static_cast<std::size_t>(steps_entry.numel()) == count, where, ": the state is for ",
               steps_entry.numel(), " parameters, but this ", name_, " has ", count, " (entry '", kStep,
               "')");
  const std::vector<double> steps = steps_entry.cpu().to(DType::float64).to_vector<double>();

  const std::vector<const char*> prefixes = o.amsgrad
                                                ? std::vector<const char*>{kExpAvg, kExpAvgSq, kMaxExpAvgSq}
                                                : std::vector<const char*>{kExpAvg, kExpAvgSq};
  std::vector<std::vector<const Tensor*>> sources(count);
  for (std::size_t i = 0; i < count; ++i) {
    CUGRAD_CHECK(steps[i] >= 0 && steps[i] == std::floor(steps[i]) && steps[i] < 9.0e15, where, ": entry '",
                 kStep, "' must hold whole step counts >= 0, got ", steps[i], " for parameter ", i);
    if (steps[i] == 0) continue;
    for (const char* prefix : prefixes) {
      const std::string key = util::indexed_key(prefix, i);
      const Tensor& t = reader.entry(key);
      CUGRAD_CHECK(is_floating(t.dtype()), where, ": entry '", key, "' must be floating-point, got ",
                   describe(t));
      CUGRAD_CHECK(t.shape() == params_[i].shape(), where, ": entry '", key, "' has shape ",
                   shape_str(t.shape()), " but parameter ", i, " has shape ", shape_str(params_[i].shape()));
      sources[i].push_back(&t);
    }
  }
  for (const auto& [key, t] : state) {
    if (key == kStep ||
        std::find(std::begin(kOptionKeys), std::end(kOptionKeys), key) != std::end(kOptionKeys))
      continue;
    bool known = false;
    for (const char* prefix : {kExpAvg, kExpAvgSq, kMaxExpAvgSq}) {
      std::size_t i = 0;
      if (!util::parse_indexed_key(key, prefix, i)) continue;
      CUGRAD_CHECK(i < count, where, ": unexpected entry '", key, "': this ", name_, " has ", count,
                   " parameters");
      CUGRAD_CHECK(steps[i] > 0, where, ": unexpected entry '", key, "': '", kStep, "' says parameter ", i,
                   " has no state");
      CUGRAD_CHECK(prefix != kMaxExpAvgSq || o.amsgrad, where, ": unexpected entry '", key,
                   "': the state's options have amsgrad off");
      known = true;
    }
    if (!known)
      throw ValueError(cugrad::detail::cat(where, ": unexpected entry '", key, "' (", name_,
                                           "'s state holds '", kStep, "', '", kExpAvg, "<i>', '", kExpAvgSq,
                                           "<i>', '", kMaxExpAvgSq, "<i>' and 'options.*')"));
  }

  // Everything is valid: copy (never alias) the tensors, then commit.
  NoGradGuard no_grad;
  std::vector<State> fresh(count);
  for (std::size_t i = 0; i < count; ++i) {
    if (steps[i] == 0) continue;
    fresh[i].step = static_cast<std::int64_t>(steps[i]);
    Tensor* targets[] = {&fresh[i].exp_avg, &fresh[i].exp_avg_sq, &fresh[i].max_exp_avg_sq};
    for (std::size_t k = 0; k < sources[i].size(); ++k) {
      Tensor src = *sources[i][k];
      if (src.dtype() != params_[i].dtype() && src.is_cuda()) src = src.cpu();
      *targets[k] = empty_like(params_[i]);
      targets[k]->copy_(src);
    }
  }
  state_ = std::move(fresh);
  options_ = o;
  if (device_steps_.defined()) {
    // Records {count, factors}: the factors are recomputed by the next step.
    std::vector<std::int64_t> records(2 * count, 0);
    for (std::size_t i = 0; i < count; ++i) records[2 * i] = static_cast<std::int64_t>(steps[i]);
    device_steps_.copy_(from_vector(records, {static_cast<std::int64_t>(2 * count)}));
    write_device_scalars();
  }
}

}  // namespace cugrad::optim
