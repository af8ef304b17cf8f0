// Convolution and pooling layers on nn::Module, with PyTorch's parameter names,
// initialization and printing: Conv2d (cuDNN on CUDA), MaxPool2d, AvgPool2d, AdaptiveAvgPool2d.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "cugrad/nn/functional.h"
#include "cugrad/nn/module.h"

namespace cugrad::nn {

/// Options of Conv2d, in PyTorch's argument order (after in, out and kernel_size).
struct Conv2dOptions {
  Int2 stride = 1;
  Int2 padding = 0;
  Int2 dilation = 1;
  std::int64_t groups = 1;
  bool bias = true;
};

/// 2-D convolution over (N, C_in, H, W). weight (C_out, C_in / groups, kH, kW) and bias (C_out)
/// are drawn from U(-1/√fan_in, 1/√fan_in) with fan_in = C_in / groups · kH · kW (PyTorch's
/// default: kaiming_uniform with a = √5), with cugrad::rand, reproducible under manual_seed.
class Conv2dImpl : public Module {
 public:
  Conv2dImpl(std::int64_t in_channels, std::int64_t out_channels, Int2 kernel_size,
             const Conv2dOptions& options = {});
  Tensor forward(const Tensor& x) override;
  /// relu(forward(x)) as one functional::conv2d_relu, without firing hooks (conv_then_relu in
  /// cugrad/nn/modules.h decides when that is allowed).
  Tensor forward_relu(const Tensor& x);
  std::string extra_repr() const override;

  std::int64_t in_channels, out_channels;
  Int2 kernel_size;
  Conv2dOptions options;
  Tensor weight, bias;  // bias undefined when options.bias is false
};

class Conv2d : public ModuleHolder<Conv2dImpl> {
 public:
  using ModuleHolder::ModuleHolder;
  /// Conv2d(1, 32, 3, {.padding = 1}).
  Conv2d(std::int64_t in_channels, std::int64_t out_channels, Int2 kernel_size, const Conv2dOptions& options = {})
      : ModuleHolder(std::make_shared<Conv2dImpl>(in_channels, out_channels, kernel_size, options)) {}
};

/// Options of MaxPool2d and AvgPool2d (stride defaults to the kernel size).
struct Pool2dOptions {
  std::optional<Int2> stride;
  Int2 padding = 0;
  Int2 dilation = 1;  // MaxPool2d only
};

class MaxPool2dImpl : public Module {
 public:
  explicit MaxPool2dImpl(Int2 kernel_size, const Pool2dOptions& options = {});
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;
  Int2 kernel_size;
  Pool2dOptions options;
};

class MaxPool2d : public ModuleHolder<MaxPool2dImpl> {
 public:
  using ModuleHolder::ModuleHolder;
  MaxPool2d(Int2 kernel_size, const Pool2dOptions& options = {})  // NOLINT(google-explicit-constructor)
      : ModuleHolder(std::make_shared<MaxPool2dImpl>(kernel_size, options)) {}
  MaxPool2d(std::int64_t kernel_size)  // NOLINT(google-explicit-constructor)
      : ModuleHolder(std::make_shared<MaxPool2dImpl>(Int2(kernel_size))) {}
};

/// Average pooling (count_include_pad, no ceil mode, as PyTorch's defaults).
class AvgPool2dImpl : public Module {
 public:
  explicit AvgPool2dImpl(Int2 kernel_size, const Pool2dOptions& options = {});
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;
  Int2 kernel_size;
  Pool2dOptions options;
};

class AvgPool2d : public ModuleHolder<AvgPool2dImpl> {
 public:
  using ModuleHolder::ModuleHolder;
  AvgPool2d(Int2 kernel_size, const Pool2dOptions& options = {})  // NOLINT(google-explicit-constructor)
      : ModuleHolder(std::make_shared<AvgPool2dImpl>(kernel_size, options)) {}
  AvgPool2d(std::int64_t kernel_size)  // NOLINT(google-explicit-constructor)
      : ModuleHolder(std::make_shared<AvgPool2dImpl>(Int2(kernel_size))) {}
};

/// Adaptive average pooling to a fixed output size (1 = global average pooling).
class AdaptiveAvgPool2dImpl : public Module {
 public:
  explicit AdaptiveAvgPool2dImpl(Int2 output_size);
  Tensor forward(const Tensor& x) override;
  std::string extra_repr() const override;
  Int2 output_size;
};

class AdaptiveAvgPool2d : public ModuleHolder<AdaptiveAvgPool2dImpl> {
 public:
  using ModuleHolder::ModuleHolder;
  AdaptiveAvgPool2d(Int2 output_size)  // NOLINT(google-explicit-constructor)
      : ModuleHolder(std::make_shared<AdaptiveAvgPool2dImpl>(output_size)) {}
  AdaptiveAvgPool2d(std::int64_t output_size)  // NOLINT(google-explicit-constructor)
      : ModuleHolder(std::make_shared<AdaptiveAvgPool2dImpl>(Int2(output_size))) {}
};

}  // namespace cugrad::nn
