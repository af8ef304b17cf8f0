// The Optimizer base (parameter checks, zero_grad) and SGD: option checks, the step (one
// multi-tensor launch on CUDA, the reference loops on the CPU) and its state dict.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "cuda/sgd.h"
#include "cugrad/autograd.h"
#include "cugrad/optim.h"
#include "host/cpu/sgd.h"
#include "host/ops/op_util.h"
#include "host/optim/optim_util.h"
#include "host/tensor/tensor_impl.h"

namespace cugrad::optim {

namespace {

using util::cpu_scalar;
using util::range_of;
using util::StorageRange;

void check_options(const std::string& where, const SGDOptions& o) {
  CUGRAD_CHECK(std::isfinite(o.lr) && o.lr >= 0, where, ": invalid learning rate ", o.lr,
               " (needs a finite lr >= 0)");
  CUGRAD_CHECK(std::isfinite(o.momentum) && o.momentum >= 0, where, ": invalid momentum ", o.momentum,
               " (needs a finite momentum >= 0)");
  CUGRAD_CHECK(std::isfinite(o.dampening), where, ": invalid dampening ", o.dampening,
               " (needs a finite value)");
  CUGRAD_CHECK(std::isfinite(o.weight_decay) && o.weight_decay >= 0, where, ": invalid weight_decay ",
               o.weight_decay, " (needs a finite weight_decay >= 0)");
  CUGRAD_CHECK(!o.nesterov || (o.momentum > 0 && o.dampening == 0), where,
               ": Nesterov momentum requires a momentum > 0 and zero dampening (got momentum ", o.momentum,
               ", dampening ", o.dampening, ")");
}

cpu::SgdHyper hyper_of(const SGDOptions& o) {
  return {o.lr, o.momentum, o.dampening, o.weight_decay, o.nesterov, o.maximize};
}

constexpr const char* kBufferPrefix = "momentum_buffer.";
constexpr const char* kHasBuffer = "has_momentum_buffer";
constexpr const char* kOptionKeys[] = {"options.lr",           "options.momentum", "options.dampening",
                                       "options.weight_decay", "options.nesterov", "options.maximize"};

std::string buffer_key(std::size_t i) { return util::indexed_key(kBufferPrefix, i); }

bool parse_buffer_key(const std::string& key, std::size_t& index) {
  return util::parse_indexed_key(key, kBufferPrefix, index);
}

}  // namespace

// ---- Optimizer ----

Optimizer::Optimizer(TensorList params, std::string name)
    : params_(std::move(params)), name_(std::move(name)) {
  CUGRAD_CHECK(!params_.empty(), name_, ": got an empty parameter list");
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i];
    CUGRAD_CHECK(p.defined(), name_, ": parameter ", i, " is an undefined tensor");
    CUGRAD_CHECK(is_floating(p.dtype()), name_, ": parameter ", i, " is ", describe(p),
                 "; only floating-point tensors can be optimized");
    CUGRAD_CHECK(p.is_leaf(), name_, ": parameter ", i, " (", describe(p),
                 ") is not a leaf tensor (it was made by ", p.grad_fn_name(),
                 "); optimize the leaf it comes from, or a detach()ed copy");
    CUGRAD_CHECK(p.device() == params_[0].device(), name_,
                 ": all parameters must be on one device, but parameter 0 is ", describe(params_[0]),
                 " and parameter ", i, " is ", describe(p));
  }
  device_ = params_[0].device();
  // No two parameters may share memory: the update would be applied twice (and race on CUDA).
  std::vector<StorageRange> ranges;
  ranges.reserve(params_.size());
  for (std::size_t i = 0; i < params_.size(); ++i)
    if (params_[i].numel() > 0) ranges.push_back(range_of(params_[i], i));
  std::sort(ranges.begin(), ranges.end(), [](const StorageRange& a, const StorageRange& b) {
    return a.storage != b.storage ? std::less<const Storage*>()(a.storage, b.storage) : a.begin < b.begin;
  });
  for (std::size_t k = 1; k < ranges.size(); ++k) {
    const StorageRange& a = ranges[k - 1];
    const StorageRange& b = ranges[k];
    if (a.storage != b.storage || b.begin >= a.end) continue;
    const std::size_t i = std::min(a.index, b.index), j = std::max(a.index, b.index);
    throw ValueError(detail::cat(name_, ": parameters ", i, " and ", j, " overlap in memory (",
                                 a.begin == b.begin && a.end == b.end ? "the same tensor listed twice"
                                                                      : "overlapping views of one storage",
                                 "); each parameter must be listed once"));
  }
}

void Optimizer::zero_grad(bool set_to_none) {
  NoGradGuard no_grad;
  for (Tensor& p : params_) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    if (set_to_none)
      p.set_grad(Tensor());
    else
      g.zero_();
  }
}

// ---- SGD ----

SGD::SGD(TensorList params, SGDOptions options) : Optimizer(std::move(params), "SGD"), options_(options) {
  check_options("SGD", options_);
  buffers_.resize(params_.size());
  if (options_.capturable && device_.is_cuda()) {
    CUGRAD_CHECK(!util::capturing(device_),
                 "SGD: a capturable SGD must be made outside a CUDA-graph capture");
    device_scalars_ = empty({4}, device_, DType::float32);
    write_device_scalars();
  }
}

void SGD::write_device_scalars() {
  if (!device_scalars_.defined()) return;
  util::set_device_scalar(device_scalars_, 0, options_.lr);
  util::set_device_scalar(device_scalars_, 1, options_.momentum);
  util::set_device_scalar(device_scalars_, 2, 1.0 - options_.dampening);
  util::set_device_scalar(device_scalars_, 3, options_.weight_decay);
}

void SGD::set_lr(double lr) {
  SGDOptions o = options_;
  o.lr = lr;
  check_options("SGD.set_lr", o);
  util::check_settable("SGD.set_lr", device_scalars_, device_);
  options_ = o;
  if (device_scalars_.defined()) util::set_device_scalar(device_scalars_, 0, lr);
}

void SGD::set_momentum(double momentum) {
  SGDOptions o = options_;
  o.momentum = momentum;
  check_options("SGD.set_momentum", o);
  util::check_settable("SGD.set_momentum", device_scalars_, device_);
  CUGRAD_CHECK(
      !device_scalars_.defined() || (momentum == 0) == (options_.momentum == 0),
      "SGD.set_momentum: a capturable SGD cannot switch its momentum between zero and nonzero (from ",
      options_.momentum, " to ", momentum, "): a captured step has a momentum buffer or not");
  options_ = o;
  if (device_scalars_.defined()) util::set_device_scalar(device_scalars_, 1, momentum);
}

Tensor SGD::momentum_buffer(std::size_t i) const {
  CUGRAD_CHECK(i < buffers_.size(), "SGD.momentum_buffer: parameter index ", i, " out of range (",
               buffers_.size(), " parameters)");
  return buffers_[i];
}

void SGD::step() {
  NoGradGuard no_grad;
  const cpu::SgdHyper h = hyper_of(options_);
  const bool momentum = h.momentum != 0;

  // Parameters with a gradient, all checked before anything is written.
  std::vector<std::size_t> active;
  active.reserve(params_.size());
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i];
    if (!util::has_valid_gradient(p, i, device_, "SGD.step")) continue;
    const Tensor& b = buffers_[i];
    if (momentum && b.defined())
      CUGRAD_CHECK(b.shape() == p.shape() && b.dtype() == p.dtype() && b.device() == p.device(),
                   "SGD.step: the momentum buffer of parameter ", i, " is ", describe(b),
                   " but the parameter is ", describe(p));
    active.push_back(i);
  }
  if (active.empty()) return;
  if (momentum && util::capturing(device_))
    for (const std::size_t i : active)
      CUGRAD_CHECK(buffers_[i].defined(), "SGD.step: parameter ", i,
                   " has no momentum buffer yet, and a first step inside a CUDA-graph capture would "
                   "reinitialize it at every replay; take one step before capturing");

  // Buffers created by this step (buf = g): kept only once the update has been queued, so
  // that a failure never leaves a buffer that was allocated but not written.
  std::vector<std::pair<std::size_t, Tensor>> created;
  const auto buffer_for = [&](std::size_t i, bool& init) -> Tensor {
    init = false;
    if (!momentum) return Tensor();
    if (buffers_[i].defined()) return buffers_[i];
    init = true;
    created.emplace_back(i, empty_like(params_[i]));
    return created.back().second;
  };

  if (device_.is_cuda()) {
    OpScope scope("SGD.step", device_);
    std::vector<cuda::SgdTensorArgs> args;
    args.reserve(active.size());
    for (const std::size_t i : active) {
      const Tensor& p = params_[i];
      const Tensor g = p.grad();
      bool init = false;
      const Tensor b = buffer_for(i, init);
      scope.reads(g);
      scope.writes(p);
      if (b.defined()) scope.writes(b);
      args.push_back({p.data_ptr<float>(), g.data_ptr<float>(), b.defined() ? b.data_ptr<float>() : nullptr,
                      p.numel(), init});
    }
    const float* device_scalars = nullptr;
    if (device_scalars_.defined()) {
      scope.reads(device_scalars_);
      device_scalars = device_scalars_.data_ptr<float>();
    }
    cuda::sgd_step(args.data(), args.size(), h, scope.stream(), cuda::kSgdChunkElements, device_scalars);
  } else {
    for (const std::size_t i : active) {
      const Tensor& p = params_[i];
      const Tensor g = p.grad();
      bool init = false;
      const Tensor b = buffer_for(i, init);
      cpu::sgd_update(p.dtype(), p.raw_data(), g.raw_data(), b.defined() ? b.raw_data() : nullptr, p.numel(),
                      init, h);
    }
  }

  for (auto& [i, b] : created) buffers_[i] = std::move(b);
  for (const std::size_t i : active) {
    params_[i].impl()->storage->bump_version();
    if (momentum) buffers_[i].impl()->storage->bump_version();
  }
}

StateDict SGD::state_dict() const {
  StateDict out;
  std::vector<std::uint8_t> has(params_.size(), 0);
  for (std::size_t i = 0; i < params_.size(); ++i) {
    if (!buffers_[i].defined()) continue;
    out[buffer_key(i)] = buffers_[i];
    has[i] = 1;
  }
  out[kHasBuffer] = from_vector(has, {static_cast<std::int64_t>(has.size())});
  out["options.lr"] = cpu_scalar(options_.lr);
  out["options.momentum"] = cpu_scalar(options_.momentum);
  out["options.dampening"] = cpu_scalar(options_.dampening);
  out["options.weight_decay"] = cpu_scalar(options_.weight_decay);
  out["options.nesterov"] = cpu_scalar(options_.nesterov ? 1.0 : 0.0);
  out["options.maximize"] = cpu_scalar(options_.maximize ? 1.0 : 0.0);
  return out;
}

void SGD::load_state_dict(const StateDict& state) {
  const std::string where = "SGD.load_state_dict";
  const std::size_t count = params_.size();
  const util::StateReader reader(state, where);

  SGDOptions o;
  o.lr = reader.scalar("options.lr");
  o.momentum = reader.scalar("options.momentum");
  o.dampening = reader.scalar("options.dampening");
  o.weight_decay = reader.scalar("options.weight_decay");
  o.nesterov = reader.flag("options.nesterov");
  o.maximize = reader.flag("options.maximize");
  check_options(where, o);
  util::check_settable(where, device_scalars_, device_);
  CUGRAD_CHECK(!device_scalars_.defined() || (o.momentum == 0) == (options_.momentum == 0), where,
               ": a capturable SGD cannot switch its momentum between zero and nonzero (from ",
               options_.momentum, " to ", o.momentum, ")");
  o.capturable = options_.capturable;

  const Tensor& has = reader.entry(kHasBuffer);
  CUGRAD_CHECK(has.dtype() == DType::uint8 && has.dim() == 1, where, ": entry '", kHasBuffer,
               "' must be a 1-D uint8 tensor, got ", describe(has));
  CUGRAD_CHECK(static_cast<std::size_t>(has.numel()) == count, where, ": the state is for ", has.numel(),
               " parameters, but this SGD has ", count, " (entry '", kHasBuffer, "')");
  const std::vector<std::uint8_t> flags = has.cpu().to_vector<std::uint8_t>();

  std::vector<const Tensor*> sources(count, nullptr);
  for (std::size_t i = 0; i < count; ++i) {
    CUGRAD_CHECK(flags[i] <= 1, where, ": entry '", kHasBuffer, "' must hold 0 or 1, got ", int{flags[i]},
                 " for parameter ", i);
    if (flags[i] == 0) continue;
    const std::string key = buffer_key(i);
    const Tensor& t = reader.entry(key);
    CUGRAD_CHECK(is_floating(t.dtype()), where, ": entry '", key, "' must be floating-point, got ",
                 describe(t));
    CUGRAD_CHECK(t.shape() == params_[i].shape(), where, ": entry '", key, "' has shape ",
                 shape_str(t.shape()), " but parameter ", i, " has shape ", shape_str(params_[i].shape()));
    sources[i] = &t;
  }
  for (const auto& [key, t] : state) {
    if (key == kHasBuffer ||
        std::find(std::begin(kOptionKeys), std::end(kOptionKeys), key) != std::end(kOptionKeys))
      continue;
    std::size_t i = 0;
    if (parse_buffer_key(key, i)) {
      CUGRAD_CHECK(i < count, where, ": unexpected entry '", key, "': this SGD has ", count, " parameters");
      CUGRAD_CHECK(flags[i] == 1, where, ": unexpected entry '", key, "': '", kHasBuffer, "' says parameter ",
                   i, " has no momentum buffer");
      continue;
    }
    throw ValueError(detail::cat(where, ": unexpected entry '", key, "' (SGD's state holds '", kBufferPrefix,
                                 "<i>', '", kHasBuffer, "' and 'options.*')"));
  }

  // Everything is valid: copy (never alias) the buffers, then commit.
  NoGradGuard no_grad;
  std::vector<Tensor> fresh(count);
  for (std::size_t i = 0; i < count; ++i) {
    if (sources[i] == nullptr) continue;
    Tensor src = *sources[i];
    // float64 exists only on the CPU: convert a CUDA source there (copy_ would convert it on
    // its own device).
    if (src.dtype() != params_[i].dtype() && src.is_cuda()) src = src.cpu();
    fresh[i] = empty_like(params_[i]);
    fresh[i].copy_(src);
  }
  buffers_ = std::move(fresh);
  options_ = o;
  write_device_scalars();
}

}  // namespace cugrad::optim
