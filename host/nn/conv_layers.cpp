// Conv2d, MaxPool2d, AvgPool2d and AdaptiveAvgPool2d modules: parameters with PyTorch's names,
// shapes and default initialization, forward through nn::functional, and PyTorch's printout.
#include <cmath>
#include <sstream>

#include "cugrad/error.h"
#include "cugrad/nn/conv.h"

namespace cugrad::nn {

namespace {

std::string pair_str(Int2 v) {
  std::ostringstream os;
  os << "(" << v.h << ", " << v.w << ")";
  return os.str();
}

// Pooling layers print what the user gave: one number when height and width agree.
std::string int_or_pair(Int2 v) { return v.h == v.w ? std::to_string(v.h) : pair_str(v); }

void check_positive(const char* layer, const char* what, Int2 v, bool allow_zero = false) {
  CUGRAD_CHECK(allow_zero ? (v.h >= 0 && v.w >= 0) : (v.h > 0 && v.w > 0), layer, ": ", what, " must be ",
               allow_zero ? "non-negative" : "positive", ", got ", pair_str(v));
}

}  // namespace

Conv2dImpl::Conv2dImpl(std::int64_t in, std::int64_t out, Int2 kernel, const Conv2dOptions& opts)
    : Module("Conv2d"), in_channels(in), out_channels(out), kernel_size(kernel), options(opts) {
  CUGRAD_CHECK(in > 0 && out > 0, "Conv2d: in_channels and out_channels must be positive, got ", in, " and ", out);
  CUGRAD_CHECK(opts.groups > 0 && in % opts.groups == 0 && out % opts.groups == 0, "Conv2d: groups=", opts.groups,
               " must divide in_channels=", in, " and out_channels=", out);
  check_positive("Conv2d", "kernel_size", kernel);
  check_positive("Conv2d", "stride", opts.stride);
  check_positive("Conv2d", "dilation", opts.dilation);
  check_positive("Conv2d", "padding", opts.padding, true);
  const std::int64_t fan_in = in / opts.groups * kernel.h * kernel.w;
  // kaiming_uniform(a = √5) gives the bound 1/√fan_in; PyTorch's bias uses the same bound.
  const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
  weight = register_parameter("weight", (rand({out, in / opts.groups, kernel.h, kernel.w}) * 2.0 - 1.0) * bound);
  bias = register_parameter("bias", opts.bias ? (rand({out}) * 2.0 - 1.0) * bound : Tensor());
}

Tensor Conv2dImpl::forward(const Tensor& x) {
  return functional::conv2d(x, weight, bias, options.stride, options.padding, options.dilation, options.groups);
}

Tensor Conv2dImpl::forward_relu(const Tensor& x) {
  return functional::conv2d_relu(x, weight, bias, options.stride, options.padding, options.dilation,
                                 options.groups);
}

std::string Conv2dImpl::extra_repr() const {
  std::ostringstream os;
  os << in_channels << ", " << out_channels << ", kernel_size=" << pair_str(kernel_size)
     << ", stride=" << pair_str(options.stride);
  if (!(options.padding == Int2(0))) os << ", padding=" << pair_str(options.padding);
  if (!(options.dilation == Int2(1))) os << ", dilation=" << pair_str(options.dilation);
  if (options.groups != 1) os << ", groups=" << options.groups;
  if (!options.bias) os << ", bias=False";
  return os.str();
}

MaxPool2dImpl::MaxPool2dImpl(Int2 kernel, const Pool2dOptions& opts)
    : Module("MaxPool2d"), kernel_size(kernel), options(opts) {
  check_positive("MaxPool2d", "kernel_size", kernel);
  if (opts.stride) check_positive("MaxPool2d", "stride", *opts.stride);
  check_positive("MaxPool2d", "dilation", opts.dilation);
  check_positive("MaxPool2d", "padding", opts.padding, true);
}

Tensor MaxPool2dImpl::forward(const Tensor& x) {
  return functional::max_pool2d(x, kernel_size, options.stride, options.padding, options.dilation);
}

std::string MaxPool2dImpl::extra_repr() const {
  return "kernel_size=" + int_or_pair(kernel_size) + ", stride=" + int_or_pair(options.stride.value_or(kernel_size)) +
         ", padding=" + int_or_pair(options.padding) + ", dilation=" + int_or_pair(options.dilation) +
         ", ceil_mode=False";
}

AvgPool2dImpl::AvgPool2dImpl(Int2 kernel, const Pool2dOptions& opts)
    : Module("AvgPool2d"), kernel_size(kernel), options(opts) {
  check_positive("AvgPool2d", "kernel_size", kernel);
  if (opts.stride) check_positive("AvgPool2d", "stride", *opts.stride);
  check_positive("AvgPool2d", "padding", opts.padding, true);
  CUGRAD_CHECK(opts.dilation == Int2(1), "AvgPool2d: dilation is not supported (PyTorch has none), got ",
               pair_str(opts.dilation));
}

Tensor AvgPool2dImpl::forward(const Tensor& x) {
  return functional::avg_pool2d(x, kernel_size, options.stride, options.padding);
}

std::string AvgPool2dImpl::extra_repr() const {
  return "kernel_size=" + int_or_pair(kernel_size) + ", stride=" + int_or_pair(options.stride.value_or(kernel_size)) +
         ", padding=" + int_or_pair(options.padding);
}

AdaptiveAvgPool2dImpl::AdaptiveAvgPool2dImpl(Int2 out) : Module("AdaptiveAvgPool2d"), output_size(out) {
  check_positive("AdaptiveAvgPool2d", "output_size", out);
}

Tensor AdaptiveAvgPool2dImpl::forward(const Tensor& x) { return functional::adaptive_avg_pool2d(x, output_size); }

std::string AdaptiveAvgPool2dImpl::extra_repr() const {
  return "output_size=" + (output_size.h == output_size.w && output_size.h == 1 ? pair_str(output_size)
                                                                                  : int_or_pair(output_size));
}

}  // namespace cugrad::nn
