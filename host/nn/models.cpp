// Model builders: the reference Fashion-MNIST CNN, the two-convolution CNN of PyTorch's MNIST
// example and ResNet-18 (torchvision's names, shapes and initialization).
#include <cmath>

#include "cugrad/autograd.h"
#include "cugrad/error.h"
#include "cugrad/nn/models.h"

namespace cugrad::nn {

namespace {

Conv2d conv3x3(std::int64_t in, std::int64_t out, std::int64_t stride = 1) {
  return Conv2d(in, out, 3, {.stride = stride, .padding = 1, .bias = false});
}

// torchvision's ResNet initialization of a convolution: kaiming_normal_(mode="fan_out",
// nonlinearity="relu"), i.e. N(0, 2 / (out_channels · kH · kW)).
void kaiming_normal_fan_out(Conv2dImpl& conv) {
  const double fan_out = static_cast<double>(conv.out_channels * conv.kernel_size.h * conv.kernel_size.w);
  NoGradGuard no_grad;
  conv.weight.copy_(randn(conv.weight.shape(), conv.weight.device(), conv.weight.dtype()) * std::sqrt(2.0 / fan_out));
}

}  // namespace

ReferenceCnnImpl::ReferenceCnnImpl(std::int64_t w, std::int64_t num_classes, std::int64_t in_channels)
    : Module("ReferenceCnn") {
  CUGRAD_CHECK(w > 0 && num_classes > 0 && in_channels > 0, "ReferenceCnn: width (", w, "), num_classes (",
               num_classes, ") and in_channels (", in_channels, ") must be positive");
  f = register_module(
      "f", Sequential({conv3x3(in_channels, w), BatchNorm2d(w), ReLU(),              // 0 1 2
                       conv3x3(w, w), BatchNorm2d(w), ReLU(), MaxPool2d(2),          // 3 4 5 6
                       conv3x3(w, 2 * w), BatchNorm2d(2 * w), ReLU(),                // 7 8 9
                       conv3x3(2 * w, 2 * w), BatchNorm2d(2 * w), ReLU(), MaxPool2d(2),  // 10 11 12 13
                       conv3x3(2 * w, 4 * w), BatchNorm2d(4 * w), ReLU(),            // 14 15 16
                       AdaptiveAvgPool2d(1), Flatten(), Linear(4 * w, num_classes)}));  // 17 18 19
}

TwoConvCnnImpl::TwoConvCnnImpl(std::int64_t num_classes, std::int64_t in_channels, std::int64_t image_size)
    : Module("TwoConvCnn"), in_channels(in_channels), image_size(image_size) {
  CUGRAD_CHECK(num_classes > 0 && in_channels > 0, "TwoConvCnn: num_classes (", num_classes,
               ") and in_channels (", in_channels, ") must be positive");
  CUGRAD_CHECK(image_size >= 6, "TwoConvCnn: image_size (", image_size,
               ") must be at least 6 (two 3x3 convolutions and a 2x2 max-pool)");
  const std::int64_t pooled = (image_size - 4) / 2;
  conv1 = register_module("conv1", Conv2d(in_channels, 32, 3));
  conv2 = register_module("conv2", Conv2d(32, 64, 3));
  dropout1 = register_module("dropout1", Dropout(0.25));
  dropout2 = register_module("dropout2", Dropout(0.5));
  fc1 = register_module("fc1", Linear(64 * pooled * pooled, 128));
  fc2 = register_module("fc2", Linear(128, num_classes));
}

Tensor TwoConvCnnImpl::forward(const Tensor& x) {
  CUGRAD_CHECK(
      x.dim() == 4 && x.shape()[1] == in_channels && x.shape()[2] == image_size && x.shape()[3] == image_size,
      "TwoConvCnn: expected input (N, ", in_channels, ", ", image_size, ", ", image_size, "), got ",
      shape_str(x.shape()));
  // The example's relu then max-pool, computed as max-pool then relu: max(relu(a), relu(b)) is
  // relu(max(a, b)) exactly (ties, zeros and NaN included), and the gradient reaches the same
  // element with the same value, while the ReLU's passes run over a quarter of the elements.
  const Tensor h = conv_then_relu(*conv1, x);
  // Module fusion (conv2 without hooks): conv2 runs without its bias, which the max-pool adds
  // to each element it reads (bias_max_pool2d), so the biased conv2 output is never written.
  const Conv2dOptions& o = conv2->options;
  const bool fuse_bias = fusion_enabled() && !conv2->has_hooks() && conv2->bias.defined();
  const Tensor pooled =
      fuse_bias ? functional::bias_max_pool2d(functional::conv2d(h, conv2->weight, Tensor(), o.stride,
                                                                 o.padding, o.dilation, o.groups),
                                              conv2->bias, 2)
                : functional::max_pool2d(conv2(h), 2);
  Tensor y = pooled.relu();
  y = dropout1(y).flatten(1);
  return fc2(dropout2(relu(fc1(y))));
}

BasicBlockImpl::BasicBlockImpl(std::int64_t in_planes, std::int64_t planes, std::int64_t stride)
    : Module("BasicBlock") {
  conv1 = register_module("conv1", conv3x3(in_planes, planes, stride));
  bn1 = register_module("bn1", BatchNorm2d(planes));
  relu = register_module("relu", ReLU());
  conv2 = register_module("conv2", conv3x3(planes, planes));
  bn2 = register_module("bn2", BatchNorm2d(planes));
  if (stride != 1 || in_planes != planes) {
    downsample = register_module(
        "downsample", Sequential({Conv2d(in_planes, planes, 1, {.stride = stride, .bias = false}), BatchNorm2d(planes)}));
  }
}

Tensor BasicBlockImpl::forward(const Tensor& x) {
  Tensor out = batch_norm_then_relu(*bn1, *relu, conv1(x));
  out = bn2(conv2(out));
  const Tensor identity = downsample ? downsample(x) : x;
  return relu(out + identity);
}

ResNetImpl::ResNetImpl(std::int64_t num_classes, std::int64_t in_channels) : Module("ResNet") {
  CUGRAD_CHECK(num_classes > 0 && in_channels > 0, "resnet18: num_classes (", num_classes, ") and in_channels (",
               in_channels, ") must be positive");
  conv1 = register_module("conv1", Conv2d(in_channels, 64, 7, {.stride = 2, .padding = 3, .bias = false}));
  bn1 = register_module("bn1", BatchNorm2d(64));
  relu = register_module("relu", ReLU());
  maxpool = register_module("maxpool", MaxPool2d(3, {.stride = Int2(2), .padding = 1}));
  std::int64_t in_planes = 64;
  auto make_layer = [&](std::int64_t planes, std::int64_t stride) {
    Sequential layer({BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1)});
    in_planes = planes;
    return layer;
  };
  layer1 = register_module("layer1", make_layer(64, 1));
  layer2 = register_module("layer2", make_layer(128, 2));
  layer3 = register_module("layer3", make_layer(256, 2));
  layer4 = register_module("layer4", make_layer(512, 2));
  avgpool = register_module("avgpool", AdaptiveAvgPool2d(1));
  fc = register_module("fc", Linear(512, num_classes));
  for (const auto& m : modules()) {
    if (auto* conv = dynamic_cast<Conv2dImpl*>(m.get())) kaiming_normal_fan_out(*conv);
  }
}

Tensor ResNetImpl::forward(const Tensor& x) {
  Tensor y = maxpool(batch_norm_then_relu(*bn1, *relu, conv1(x)));
  y = layer4(layer3(layer2(layer1(y))));
  return fc(avgpool(y).flatten(1));  // torchvision flattens in forward (no module)
}

ResNet resnet18(std::int64_t num_classes, std::int64_t in_channels) {
  return ResNet(num_classes, in_channels);
}

}  // namespace cugrad::nn
