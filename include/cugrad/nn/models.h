// Model builders: the reference Fashion-MNIST network of DESIGN.md, the two-convolution CNN of
// PyTorch's MNIST example, and ResNet-18 with torchvision's parameter names and shapes (a
// torchvision state dict loads with strict=true).
#pragma once

#include <cstdint>

#include "cugrad/nn/conv.h"
#include "cugrad/nn/module.h"
#include "cugrad/nn/modules.h"

namespace cugrad::nn {

/// The reference network: five conv3×3 (no bias)–BatchNorm–ReLU blocks of widths w, w,
/// [max-pool 2] 2w, 2w, [max-pool 2] 4w, global average pooling, flatten and a linear
/// classifier; one Sequential child `f` whose entries are named as PyTorch's nn.Sequential
/// (f.0 the first conv ... f.19 the classifier). DESIGN.md's recipe uses width 64.
class ReferenceCnnImpl : public Module {
 public:
  explicit ReferenceCnnImpl(std::int64_t width = 64, std::int64_t num_classes = 10, std::int64_t in_channels = 1);
  Tensor forward(const Tensor& x) override { return f(x); }

  /// Index of the classifier in `f` (the last entry); everything before it is the backbone.
  static constexpr std::size_t kClassifier = 19;
  Sequential f = nullptr;
};
CUGRAD_MODULE(ReferenceCnn);

/// The two-convolution CNN of PyTorch's MNIST example (pytorch/examples, mnist/main.py, `Net`),
/// with its parameter names, so that its state dict loads with strict=true:
///   conv1 (in_channels→32, 3×3, bias) → ReLU → conv2 (32→64, 3×3, bias) → ReLU → max-pool 2
///   → dropout1 (p 0.25) → flatten → fc1 (64·((s-4)/2)², 128) → ReLU → dropout2 (p 0.5) → fc2.
/// forward returns the logits (the example's log_softmax is left to the loss); it runs the
/// second ReLU after the max-pool, which gives the same values and gradients bit for bit with a
/// quarter of the ReLU's memory traffic. `image_size` s
/// is the side of the square input (28 for (Fashion-)MNIST: fc1 has 9216 inputs); other sizes
/// are an error naming the expected and given shapes. PyTorch's default initialization. This
/// is the "2-conv CNN" of the train-step row of DESIGN.md's table (bench/train_step_bench).
class TwoConvCnnImpl : public Module {
 public:
  explicit TwoConvCnnImpl(std::int64_t num_classes = 10, std::int64_t in_channels = 1,
                          std::int64_t image_size = 28);
  Tensor forward(const Tensor& x) override;

  std::int64_t in_channels, image_size;
  Conv2d conv1 = nullptr, conv2 = nullptr;
  Dropout dropout1 = nullptr, dropout2 = nullptr;
  Linear fc1 = nullptr, fc2 = nullptr;
};
CUGRAD_MODULE(TwoConvCnn);

/// ResNet's basic block: conv3×3–BN–ReLU–conv3×3–BN plus the shortcut (identity, or a
/// conv1×1–BN `downsample` when the stride or width changes), then ReLU.
class BasicBlockImpl : public Module {
 public:
  BasicBlockImpl(std::int64_t in_planes, std::int64_t planes, std::int64_t stride = 1);
  Tensor forward(const Tensor& x) override;

  Conv2d conv1 = nullptr, conv2 = nullptr;
  BatchNorm2d bn1 = nullptr, bn2 = nullptr;
  ReLU relu = nullptr;
  Sequential downsample = nullptr;  // empty when the shortcut is the identity
};
CUGRAD_MODULE(BasicBlock);

/// ResNet-18 as torchvision builds it: conv1 (7×7, stride 2), bn1, relu, maxpool (3, stride
/// 2, padding 1), layer1..layer4 (two BasicBlocks each; widths 64, 128, 256, 512), avgpool
/// (adaptive, 1×1), fc. Initialization as torchvision: convolutions kaiming_normal (fan_out,
/// ReLU gain), BatchNorm weight 1 and bias 0, fc PyTorch's Linear default.
class ResNetImpl : public Module {
 public:
  ResNetImpl(std::int64_t num_classes = 1000, std::int64_t in_channels = 3);
  Tensor forward(const Tensor& x) override;

  Conv2d conv1 = nullptr;
  BatchNorm2d bn1 = nullptr;
  ReLU relu = nullptr;
  MaxPool2d maxpool = nullptr;
  Sequential layer1 = nullptr, layer2 = nullptr, layer3 = nullptr, layer4 = nullptr;
  AdaptiveAvgPool2d avgpool = nullptr;
  Linear fc = nullptr;
};
CUGRAD_MODULE(ResNet);

/// ResNet-18 (11,689,512 parameters with 1000 classes and 3 input channels).
ResNet resnet18(std::int64_t num_classes = 1000, std::int64_t in_channels = 3);

}  // namespace cugrad::nn
