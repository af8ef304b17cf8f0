// Basic layers on nn::Module, with PyTorch's parameter names, initialization and printing:
// Linear, BatchNorm1d/2d, ReLU, LeakyReLU, Sigmoid, Tanh, Flatten, Dropout, Identity, and the
// Sequential container. Each is a `NameImpl` module plus its holder `Name` (nn/module.h).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cugrad/nn/functional.h"
#include "cugrad/nn/module.h"

namespace cugrad::nn {

/// y = x Wᵀ + b over the last dimension. weight (out_features, in_features) and bias
/// (out_features) are drawn from U(-1/√in_features, 1/√in_features), PyTorch's default
/// (kaiming_uniform with a = √5, and its bias rule), with cugrad::rand: reproducible under
/// manual_seed (the values differ from PyTorch's generator). float32 on the CPU; use to().
class LinearImpl : public Module {
 public:
  LinearImpl(std::int64_t in_features, std::int64_t out_features, bool bias = true);
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;

  std::int64_t in_features, out_features;
  Tensor weight, bias;  // bias undefined when disabled
};
CUGRAD_MODULE(Linear);

/// Options of BatchNorm1d/2d, in PyTorch's argument order (after num_features).
struct BatchNormOptions {
  double eps = 1e-5;
  std::optional<double> momentum = 0.1;  // std::nullopt: cumulative average (1 / num_batches_tracked)
  bool affine = true;                    // learnable weight (ones) and bias (zeros)
  bool track_running_stats = true;       // buffers running_mean, running_var, num_batches_tracked
};

/// Batch normalization over nn::functional::batch_norm, with PyTorch's module semantics:
/// training normalizes with batch statistics and (when tracking) updates the running ones and
/// increments num_batches_tracked; eval normalizes with the running statistics, or with batch
/// statistics when the module does not track them.
class BatchNormImpl : public Module {
 public:
  BatchNormImpl(std::string type_name, std::int64_t num_features, const BatchNormOptions& options);
  Tensor forward(const Tensor& x) override;
  /// relu(forward(x)) in one op (functional::batch_norm_relu); no hooks run.
  Tensor forward_relu(const Tensor& x);
  std::string extra_repr() const override;

  std::int64_t num_features;
  BatchNormOptions options;
  Tensor weight, bias;                                    // undefined unless affine
  Tensor running_mean, running_var, num_batches_tracked;  // undefined unless tracking

 protected:
  /// Checks the input's rank and returns the (N, C) or (N, C, H, W) tensor to normalize.
  virtual Tensor as_2d_or_4d(const Tensor& x) const = 0;

 private:
  Tensor run(const Tensor& x, bool relu);
};

/// `relu(bn(x))` through operator() (hooks fire), or one fused batch_norm_relu when fusion is
/// enabled, `bn` is a BatchNorm1d/BatchNorm2d and `relu` a ReLU (exactly those types), and
/// neither has hooks. `bn` and `relu` may be holders' modules (`*holder`).
Tensor batch_norm_then_relu(Module& bn, Module& relu, const Tensor& x);
/// Whether batch_norm_then_relu would fuse `bn` and `relu` now.
bool fusable_batch_norm_relu(const Module& bn, const Module& relu);

/// `relu(conv(x))` through operator() (hooks fire), or one fused functional::conv2d_relu when
/// fusion is enabled, `conv` is a Conv2d and `relu` a ReLU (exactly those types), and neither
/// has hooks. The overload without a ReLU module is for a functional ReLU (x.relu()).
Tensor conv_then_relu(Module& conv, Module& relu, const Tensor& x);
Tensor conv_then_relu(Module& conv, const Tensor& x);
/// Whether conv_then_relu would fuse `conv` and `relu` now (relu null: a functional ReLU).
bool fusable_conv_relu(const Module& conv, const Module* relu);

/// BatchNorm over (N, C) or (N, C, L) input.
class BatchNorm1dImpl : public BatchNormImpl {
 public:
  explicit BatchNorm1dImpl(std::int64_t num_features, const BatchNormOptions& options = {})
      : BatchNormImpl("BatchNorm1d", num_features, options) {}

 protected:
  Tensor as_2d_or_4d(const Tensor& x) const override;
};

/// BatchNorm over (N, C, H, W) input.
class BatchNorm2dImpl : public BatchNormImpl {
 public:
  explicit BatchNorm2dImpl(std::int64_t num_features, const BatchNormOptions& options = {})
      : BatchNormImpl("BatchNorm2d", num_features, options) {}

 protected:
  Tensor as_2d_or_4d(const Tensor& x) const override;
};

class BatchNorm1d : public ModuleHolder<BatchNorm1dImpl> {
 public:
  using ModuleHolder::ModuleHolder;
  BatchNorm1d(std::int64_t num_features, const BatchNormOptions& options)  // `{.eps = 1e-3}` works
      : ModuleHolder(std::make_shared<BatchNorm1dImpl>(num_features, options)) {}
};

class BatchNorm2d : public ModuleHolder<BatchNorm2dImpl> {
 public:
  using ModuleHolder::ModuleHolder;
  BatchNorm2d(std::int64_t num_features, const BatchNormOptions& options)
      : ModuleHolder(std::make_shared<BatchNorm2dImpl>(num_features, options)) {}
};

class ReLUImpl : public Module {
 public:
  ReLUImpl() : Module("ReLU") {}
  Tensor forward(const Tensor& x) override { return relu(x); }
};
CUGRAD_MODULE(ReLU);

class LeakyReLUImpl : public Module {
 public:
  explicit LeakyReLUImpl(double negative_slope = 0.01);
  Tensor forward(const Tensor& x) override { return functional::leaky_relu(x, negative_slope); }
  std::string extra_repr() const override;
  double negative_slope;
};
CUGRAD_MODULE(LeakyReLU);

class SigmoidImpl : public Module {
 public:
  SigmoidImpl() : Module("Sigmoid") {}
  Tensor forward(const Tensor& x) override { return functional::sigmoid(x); }
};
CUGRAD_MODULE(Sigmoid);

class TanhImpl : public Module {
 public:
  TanhImpl() : Module("Tanh") {}
  Tensor forward(const Tensor& x) override { return functional::tanh(x); }
};
CUGRAD_MODULE(Tanh);

/// Flattens dimensions start_dim..end_dim into one (a view).
class FlattenImpl : public Module {
 public:
  explicit FlattenImpl(std::int64_t start_dim = 1, std::int64_t end_dim = -1)
      : Module("Flatten"), start_dim(start_dim), end_dim(end_dim) {}
  Tensor forward(const Tensor& x) override { return x.flatten(start_dim, end_dim); }
  std::string extra_repr() const override;
  std::int64_t start_dim, end_dim;
};
CUGRAD_MODULE(Flatten);

/// Inverted dropout in training mode (functional::dropout), the identity in eval mode.
class DropoutImpl : public Module {
 public:
  explicit DropoutImpl(double p = 0.5);
  Tensor forward(const Tensor& x) override { return functional::dropout(x, p, is_training()); }
  std::string extra_repr() const override;
  double p;
};
CUGRAD_MODULE(Dropout);

class IdentityImpl : public Module {
 public:
  IdentityImpl() : Module("Identity") {}
  Tensor forward(const Tensor& x) override { return x; }
};
CUGRAD_MODULE(Identity);

/// Runs its modules in order, each through operator() (so their hooks fire), except that a
/// BatchNorm1d/2d directly followed by a ReLU, neither with hooks, runs as one fused
/// batch_norm_relu, and a Conv2d directly followed by a ReLU, neither with hooks, as one
/// conv2d_relu (same results; see set_fusion_enabled in module.h). Children are named "0", "1",
/// ... as in PyTorch.
class SequentialImpl : public Module {
 public:
  SequentialImpl() : Module("Sequential") {}
  explicit SequentialImpl(const std::vector<std::shared_ptr<Module>>& modules);
  Tensor forward(const Tensor& x) override;

  /// Appends a module, named by its index.
  void push_back(std::shared_ptr<Module> module);
  template <ModuleHolderType H>
  void push_back(const H& holder) {
    push_back(std::shared_ptr<Module>(holder.ptr()));
  }
  std::size_t size() const { return modules_.size(); }
  bool empty() const { return modules_.empty(); }
  /// The module at `index` (checked).
  const std::shared_ptr<Module>& operator[](std::size_t index) const;
  auto begin() const { return modules_.begin(); }
  auto end() const { return modules_.end(); }

 private:
  std::vector<std::shared_ptr<Module>> modules_;
};

class Sequential : public ModuleHolder<SequentialImpl> {
 public:
  using ModuleHolder::ModuleHolder;
  /// Sequential({Linear(4, 8), ReLU(), Linear(8, 2)}).
  Sequential(const std::vector<std::shared_ptr<Module>>& modules)  // NOLINT(google-explicit-constructor)
      : ModuleHolder(std::make_shared<SequentialImpl>(modules)) {}
  const std::shared_ptr<Module>& operator[](std::size_t index) const { return (**this)[index]; }
};

}  // namespace cugrad::nn
