// The basic layers of cugrad/nn/modules.h: constructors (parameters, buffers and PyTorch's
// initialization), forward over nn::functional, and PyTorch-style extra_repr.
#include <cmath>
#include <typeinfo>

#include "cugrad/nn/conv.h"
#include "cugrad/nn/modules.h"
#include "host/nn/format.h"
#include "host/ops/op_util.h"

namespace cugrad::nn {

// ---- Linear ----

LinearImpl::LinearImpl(std::int64_t in, std::int64_t out, bool with_bias)
    : Module("Linear"), in_features(in), out_features(out) {
  CUGRAD_CHECK(in >= 0 && out >= 0, "Linear: in_features and out_features must be >= 0, got ", in, " and ",
               out);
  // kaiming_uniform(a = √5): gain √(2 / (1 + 5)) times √(3 / fan_in) = 1 / √fan_in; the bias
  // uses the same bound (0 when fan_in is 0, as PyTorch).
  const double bound = in > 0 ? 1.0 / std::sqrt(static_cast<double>(in)) : 0.0;
  weight = register_parameter("weight", (rand({out, in}) * 2.0 - 1.0) * bound);
  bias = register_parameter("bias", with_bias ? (rand({out}) * 2.0 - 1.0) * bound : Tensor());
}

Tensor LinearImpl::forward(const Tensor& x) { return functional::linear(x, weight, bias); }

std::string LinearImpl::extra_repr() const {
  return detail::cat("in_features=", in_features, ", out_features=", out_features,
                     ", bias=", py_bool(bias.defined()));
}

// ---- BatchNorm ----

BatchNormImpl::BatchNormImpl(std::string type_name, std::int64_t num_features_,
                             const BatchNormOptions& options_)
    : Module(std::move(type_name)), num_features(num_features_), options(options_) {
  CUGRAD_CHECK(num_features > 0, this->type_name(), ": num_features must be positive, got ", num_features);
  CUGRAD_CHECK(std::isfinite(options.eps) && options.eps >= 0, this->type_name(),
               ": eps must be finite and >= 0, got ", options.eps);
  CUGRAD_CHECK(!options.momentum || std::isfinite(*options.momentum), this->type_name(),
               ": momentum must be finite, got ", options.momentum.value_or(0.0));
  weight = register_parameter("weight", options.affine ? ones({num_features}) : Tensor());
  bias = register_parameter("bias", options.affine ? zeros({num_features}) : Tensor());
  const bool track = options.track_running_stats;
  running_mean = register_buffer("running_mean", track ? zeros({num_features}) : Tensor());
  running_var = register_buffer("running_var", track ? ones({num_features}) : Tensor());
  num_batches_tracked =
      register_buffer("num_batches_tracked", track ? zeros({}, Device::cpu(), DType::int64) : Tensor());
}

Tensor BatchNormImpl::forward(const Tensor& x) { return run(x, false); }

Tensor BatchNormImpl::forward_relu(const Tensor& x) { return run(x, true); }

Tensor BatchNormImpl::run(const Tensor& x, bool relu) {
  check_defined(type_name().c_str(), x);
  const Tensor x2 = as_2d_or_4d(x);
  CUGRAD_CHECK(x2.size(1) == num_features, type_name(), ": expected ", num_features,
               " channels (dimension 1), got ", describe(x));
  const bool training = is_training();
  const bool track = options.track_running_stats;
  // PyTorch: batch statistics in training, and in eval when no running statistics exist;
  // running statistics updated (and num_batches_tracked incremented) only while training.
  const bool use_batch_stats = training || !track;
  const Tensor rm = track ? running_mean : Tensor(), rv = track ? running_var : Tensor();
  const Tensor nbt = training && track ? num_batches_tracked : Tensor();
  const auto op = relu ? functional::batch_norm_relu : functional::batch_norm;
  const Tensor y = op(x2, rm, rv, weight, bias, use_batch_stats, options.momentum, options.eps, nbt);
  return y.dim() == x.dim() ? y : y.reshape(x.shape());
}

bool fusable_batch_norm_relu(const Module& bn, const Module& relu) {
  const std::type_info& t = typeid(bn);
  return fusion_enabled() && (t == typeid(BatchNorm2dImpl) || t == typeid(BatchNorm1dImpl)) &&
         typeid(relu) == typeid(ReLUImpl) && !bn.has_hooks() && !relu.has_hooks();
}

Tensor batch_norm_then_relu(Module& bn, Module& relu, const Tensor& x) {
  if (fusable_batch_norm_relu(bn, relu)) return static_cast<BatchNormImpl&>(bn).forward_relu(x);
  return relu(bn(x));
}

bool fusable_conv_relu(const Module& conv, const Module* relu) {
  return fusion_enabled() && typeid(conv) == typeid(Conv2dImpl) && !conv.has_hooks() &&
         (relu == nullptr || (typeid(*relu) == typeid(ReLUImpl) && !relu->has_hooks()));
}

Tensor conv_then_relu(Module& conv, Module& relu, const Tensor& x) {
  if (fusable_conv_relu(conv, &relu)) return static_cast<Conv2dImpl&>(conv).forward_relu(x);
  return relu(conv(x));
}

Tensor conv_then_relu(Module& conv, const Tensor& x) {
  if (fusable_conv_relu(conv, nullptr)) return static_cast<Conv2dImpl&>(conv).forward_relu(x);
  return conv(x).relu();
}

std::string BatchNormImpl::extra_repr() const {
  return detail::cat(num_features, ", eps=", py_float(options.eps),
                     ", momentum=", options.momentum ? py_float(*options.momentum) : std::string("None"),
                     ", affine=", py_bool(options.affine),
                     ", track_running_stats=", py_bool(options.track_running_stats));
}

Tensor BatchNorm1dImpl::as_2d_or_4d(const Tensor& x) const {
  CUGRAD_CHECK(x.dim() == 2 || x.dim() == 3,
               "BatchNorm1d: expected a 2-D (N, C) or 3-D (N, C, L) input, got ", describe(x));
  if (x.dim() == 2) return x;
  return x.reshape({x.size(0), x.size(1), x.size(2), 1});  // (N, C, L) normalizes like (N, C, L, 1)
}

Tensor BatchNorm2dImpl::as_2d_or_4d(const Tensor& x) const {
  CUGRAD_CHECK(x.dim() == 4, "BatchNorm2d: expected a 4-D (N, C, H, W) input, got ", describe(x));
  return x;
}

// ---- activations and shape layers ----

LeakyReLUImpl::LeakyReLUImpl(double slope) : Module("LeakyReLU"), negative_slope(slope) {
  CUGRAD_CHECK(std::isfinite(slope), "LeakyReLU: negative_slope must be finite, got ", slope);
}

std::string LeakyReLUImpl::extra_repr() const { return "negative_slope=" + py_float(negative_slope); }

std::string FlattenImpl::extra_repr() const {
  return detail::cat("start_dim=", start_dim, ", end_dim=", end_dim);
}

DropoutImpl::DropoutImpl(double p_) : Module("Dropout"), p(p_) {
  CUGRAD_CHECK(p >= 0.0 && p <= 1.0, "Dropout: probability must be in [0, 1], got ", p);
}

std::string DropoutImpl::extra_repr() const { return "p=" + py_float(p); }

// ---- Sequential ----

SequentialImpl::SequentialImpl(const std::vector<std::shared_ptr<Module>>& modules) : Module("Sequential") {
  for (const auto& m : modules) push_back(m);
}

void SequentialImpl::push_back(std::shared_ptr<Module> module) {
  CUGRAD_CHECK(module != nullptr, "Sequential: cannot add an empty module (at index ", modules_.size(), ")");
  register_module(std::to_string(modules_.size()), module);
  modules_.push_back(std::move(module));
}

const std::shared_ptr<Module>& SequentialImpl::operator[](std::size_t index) const {
  CUGRAD_CHECK(index < modules_.size(), "Sequential: index ", index, " is out of range for ", modules_.size(),
               " modules");
  return modules_[index];
}

Tensor SequentialImpl::forward(const Tensor& x) {
  Tensor y = x;
  for (std::size_t i = 0; i < modules_.size(); ++i) {
    if (i + 1 < modules_.size() && fusable_batch_norm_relu(*modules_[i], *modules_[i + 1])) {
      y = static_cast<BatchNormImpl&>(*modules_[i]).forward_relu(y);
      ++i;
      continue;
    }
    if (i + 1 < modules_.size() && fusable_conv_relu(*modules_[i], modules_[i + 1].get())) {
      y = static_cast<Conv2dImpl&>(*modules_[i]).forward_relu(y);
      ++i;
      continue;
    }
    y = (*modules_[i])(y);
  }
  return y;
}

}  // namespace cugrad::nn
