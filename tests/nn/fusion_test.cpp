// Module fusion (nn::set_fusion_enabled): Sequential, ResNet's stem and BasicBlocks run a
// BatchNorm followed by a ReLU as one functional::batch_norm_relu when neither module has
// hooks; Sequential and TwoConvCnn run a Conv2d followed by a ReLU as one conv2d_relu. Checked here: that the
// fusion happens (the graph records BatchNormReluBackward), that any hook on either module turns it off (and
// hooks see the pre-ReLU tensor), that removing the hook turns it back on, and that whole models give the
// same outputs, running statistics and gradients with and without it (bit for bit, on the CPU and on CUDA,
// the latter with deterministic cuDNN convolutions).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "cugrad/cugrad.h"
#include "cugrad/nn/models.h"
#include "tests/support/gpu.h"
#include "tests/support/parity.h"

namespace cg = cugrad;
namespace nn = cugrad::nn;
using cg::testing::all_equal;

namespace {

// Restores the fusion setting a test changes.
struct FusionGuard {
  bool saved = nn::fusion_enabled();
  ~FusionGuard() { nn::set_fusion_enabled(saved); }
};

// What one training (or eval) step of a model gives: output, running statistics and the
// gradient of every parameter for a fixed upstream gradient.
struct StepResult {
  cg::Tensor out;
  std::vector<std::pair<std::string, cg::Tensor>> buffers, grads;
};

template <class Model>
StepResult run_step(Model& model, const cg::Tensor& x, const cg::Tensor& dy) {
  StepResult r;
  r.out = model(x);
  r.out.backward(dy);
  for (const auto& [name, b] : model->named_buffers()) r.buffers.emplace_back(name, b.clone());
  for (const auto& [name, p] : model->named_parameters()) r.grads.emplace_back(name, p.grad());
  return r;
}

void expect_same(const StepResult& a, const StepResult& b) {
  EXPECT_TRUE(all_equal(a.out, b.out)) << "output";
  ASSERT_EQ(a.buffers.size(), b.buffers.size());
  for (std::size_t i = 0; i < a.buffers.size(); ++i)
    EXPECT_TRUE(all_equal(a.buffers[i].second, b.buffers[i].second)) << a.buffers[i].first;
  ASSERT_EQ(a.grads.size(), b.grads.size());
  for (std::size_t i = 0; i < a.grads.size(); ++i) {
    ASSERT_TRUE(a.grads[i].second.defined() && b.grads[i].second.defined()) << a.grads[i].first;
    EXPECT_TRUE(all_equal(a.grads[i].second, b.grads[i].second)) << a.grads[i].first;
  }
}

// Two identically initialized models (same seed), one step each: fused, then unfused.
template <class MakeModel>
void expect_fusion_changes_nothing(MakeModel make, const cg::Shape& in_shape, cg::Device dev, bool training) {
  SCOPED_TRACE(cg::detail::cat(dev.is_cuda() ? "cuda " : "cpu ", training ? "training" : "eval"));
  FusionGuard guard;
  // Bit-for-bit comparison of two CUDA runs: no cuDNN algorithm with atomics (on an H100 the
  // weight and input gradients of the convolutions differed in their last bits without this).
  cg::testing::DeterministicConvolutions deterministic;
  cg::manual_seed(7);
  const cg::Tensor x = cg::randn(in_shape).to(dev);
  cg::manual_seed(8);
  auto fused_model = make();
  cg::manual_seed(8);
  auto plain_model = make();
  for (auto* m : {&fused_model, &plain_model}) {
    (*m)->to(dev);
    if (training)
      (*m)->train();
    else
      (*m)->eval();
  }
  nn::set_fusion_enabled(true);
  const cg::Tensor probe = fused_model(x);
  const cg::Tensor dy = cg::randn(probe.shape()).to(dev);
  fused_model->zero_grad();
  cg::manual_seed(9);  // the same dropout masks in both steps
  const StepResult fused = run_step(fused_model, x, dy);
  nn::set_fusion_enabled(false);
  plain_model(x);  // the same number of steps as the fused model (running statistics)
  plain_model->zero_grad();
  cg::manual_seed(9);
  const StepResult plain = run_step(plain_model, x, dy);
  expect_same(fused, plain);
}

}  // namespace

TEST(Fusion, BatchNormThenReluIsOneOpUnlessHooked) {
  FusionGuard guard;
  nn::set_fusion_enabled(true);
  cg::manual_seed(1);
  nn::BatchNorm2d bn(3);
  nn::ReLU relu;
  nn::Sequential seq({bn, relu});
  const cg::Tensor x = cg::randn({4, 3, 5, 5}).requires_grad_();
  EXPECT_EQ(seq(x).grad_fn_name(), "BatchNormReluBackward");
  EXPECT_EQ(nn::batch_norm_then_relu(*bn, *relu, x).grad_fn_name(), "BatchNormReluBackward");

  nn::set_fusion_enabled(false);
  EXPECT_EQ(seq(x).grad_fn_name(), "ReluBackward");
  nn::set_fusion_enabled(true);

  // A hook on either module: both run as modules, and the hooks see the pre-ReLU tensor.
  cg::Tensor seen_bn_out, seen_relu_in;
  cg::HookHandle h1 = bn->register_forward_hook(
      [&](nn::Module&, const cg::TensorList&, const cg::Tensor& out) { seen_bn_out = out.detach(); });
  EXPECT_EQ(seq(x).grad_fn_name(), "ReluBackward");
  ASSERT_TRUE(seen_bn_out.defined());
  EXPECT_LT(seen_bn_out.min().item<float>(), 0.f);  // before the ReLU
  h1.remove();
  EXPECT_EQ(seq(x).grad_fn_name(), "BatchNormReluBackward");

  cg::HookHandle h2 = relu->register_forward_pre_hook(
      [&](nn::Module&, const cg::TensorList& in) { seen_relu_in = in[0].detach(); });
  EXPECT_EQ(seq(x).grad_fn_name(), "ReluBackward");
  ASSERT_TRUE(seen_relu_in.defined());
  EXPECT_LT(seen_relu_in.min().item<float>(), 0.f);
  h2.remove();

  int fired = 0;
  cg::HookHandle h3 = relu->register_full_backward_hook(
      [&](nn::Module&, const cg::TensorList&, const cg::TensorList&) { ++fired; });
  seq(x).sum().backward();
  EXPECT_EQ(fired, 1);
  h3.remove();
  EXPECT_EQ(seq(x).grad_fn_name(), "BatchNormReluBackward");

  // Only a BatchNorm directly followed by a ReLU fuses.
  nn::Sequential other({nn::ReLU(), nn::BatchNorm2d(3)});
  EXPECT_EQ(other(x).grad_fn_name(), "BatchNormBackward");
  nn::Sequential leaky({nn::BatchNorm2d(3), nn::LeakyReLU(0.1)});
  EXPECT_NE(leaky(x).grad_fn_name(), "BatchNormReluBackward");
}

TEST(Fusion, ConvThenReluIsOneOpUnlessHooked) {
  FusionGuard guard;
  nn::set_fusion_enabled(true);
  cg::manual_seed(3);
  nn::Conv2d conv(2, 3, 3, {.padding = 1});
  nn::ReLU relu;
  nn::Sequential seq({conv, relu});
  const cg::Tensor x = cg::randn({2, 2, 5, 5}).requires_grad_();
  EXPECT_EQ(seq(x).grad_fn_name(), "Conv2dReluBackward");
  EXPECT_EQ(nn::conv_then_relu(*conv, *relu, x).grad_fn_name(), "Conv2dReluBackward");
  EXPECT_EQ(nn::conv_then_relu(*conv, x).grad_fn_name(), "Conv2dReluBackward");

  nn::set_fusion_enabled(false);
  EXPECT_EQ(seq(x).grad_fn_name(), "ReluBackward");
  EXPECT_EQ(nn::conv_then_relu(*conv, x).grad_fn_name(), "ReluBackward");
  nn::set_fusion_enabled(true);

  // A hook on either module: both run as modules, and the hooks see the pre-ReLU tensor.
  cg::Tensor seen;
  cg::HookHandle h1 = conv->register_forward_hook(
      [&](nn::Module&, const cg::TensorList&, const cg::Tensor& out) { seen = out.detach(); });
  EXPECT_EQ(seq(x).grad_fn_name(), "ReluBackward");
  EXPECT_EQ(nn::conv_then_relu(*conv, x).grad_fn_name(), "ReluBackward");
  ASSERT_TRUE(seen.defined());
  EXPECT_LT(seen.min().item<float>(), 0.f);  // before the ReLU
  h1.remove();
  EXPECT_EQ(seq(x).grad_fn_name(), "Conv2dReluBackward");

  int fired = 0;
  cg::HookHandle h2 = relu->register_full_backward_hook(
      [&](nn::Module&, const cg::TensorList&, const cg::TensorList&) { ++fired; });
  seq(x).sum().backward();
  EXPECT_EQ(fired, 1);
  h2.remove();
  EXPECT_EQ(seq(x).grad_fn_name(), "Conv2dReluBackward");

  // Only a Conv2d directly followed by a ReLU fuses; a BatchNorm between them fuses with the ReLU.
  nn::Sequential leaky({nn::Conv2d(2, 3, 3), nn::LeakyReLU(0.1)});
  EXPECT_NE(leaky(x).grad_fn_name(), "Conv2dReluBackward");
  nn::Sequential bn({nn::Conv2d(2, 3, 3), nn::BatchNorm2d(3), nn::ReLU()});
  EXPECT_EQ(bn(x).grad_fn_name(), "BatchNormReluBackward");
}

TEST(Fusion, TwoConvCnnFusesItsFirstConvolutionAndRelu) {
  FusionGuard guard;
  cg::manual_seed(4);
  nn::TwoConvCnn model(10, 1, 12);
  std::string conv2_input;
  cg::HookHandle h = model->conv2->register_forward_pre_hook(
      [&](nn::Module&, const cg::TensorList& in) { conv2_input = in[0].grad_fn_name(); });
  const cg::Tensor x = cg::randn({2, 1, 12, 12});
  nn::set_fusion_enabled(true);
  model(x);
  EXPECT_EQ(conv2_input, "Conv2dReluBackward");
  nn::set_fusion_enabled(false);
  model(x);
  EXPECT_EQ(conv2_input, "ReluBackward");
  // A hook on conv1 turns the fusion off (the hook sees conv1's own output).
  nn::set_fusion_enabled(true);
  cg::HookHandle h1 =
      model->conv1->register_forward_hook([](nn::Module&, const cg::TensorList&, const cg::Tensor&) {});
  model(x);
  EXPECT_EQ(conv2_input, "ReluBackward");
  h1.remove();
  h.remove();
}

TEST(Fusion, ResNetBlocksFuseTheirFirstBatchNormAndRelu) {
  FusionGuard guard;
  cg::manual_seed(2);
  nn::ResNet model = nn::resnet18(10);
  std::string conv2_input;
  auto* block = dynamic_cast<nn::BasicBlockImpl*>((*model->layer1)[0].get());
  ASSERT_NE(block, nullptr);
  cg::HookHandle h = block->conv2->register_forward_pre_hook(
      [&](nn::Module&, const cg::TensorList& in) { conv2_input = in[0].grad_fn_name(); });
  const cg::Tensor x = cg::randn({2, 3, 32, 32});
  nn::set_fusion_enabled(true);
  model(x);
  EXPECT_EQ(conv2_input, "BatchNormReluBackward");
  nn::set_fusion_enabled(false);
  model(x);
  EXPECT_EQ(conv2_input, "ReluBackward");
  h.remove();
}

TEST(Fusion, ModelsGiveTheSameResultsFusedOrNot) {
  for (const bool training : {true, false}) {
    expect_fusion_changes_nothing([] { return nn::ReferenceCnn(4); }, {3, 1, 28, 28}, cg::Device::cpu(),
                                  training);
    expect_fusion_changes_nothing([] { return nn::resnet18(5); }, {2, 3, 32, 32}, cg::Device::cpu(), training);
    expect_fusion_changes_nothing([] { return nn::TwoConvCnn(10, 1, 12); }, {3, 1, 12, 12}, cg::Device::cpu(),
                                  training);
  }
  expect_fusion_changes_nothing(
      [] {
        return nn::Sequential(
            {nn::Conv2d(1, 4, 3), nn::ReLU(), nn::Conv2d(4, 2, 3, {.bias = false}), nn::ReLU()});
      },
      {2, 1, 9, 9}, cg::Device::cpu(), true);
}

TEST(FusionGPU, ModelsGiveTheSameResultsFusedOrNotOnCuda) {
  CUGRAD_REQUIRE_GPU();
  for (const bool training : {true, false})
    expect_fusion_changes_nothing([] { return nn::ReferenceCnn(4); }, {3, 1, 28, 28}, cg::Device::cuda(0),
                                  training);
  expect_fusion_changes_nothing([] { return nn::resnet18(5); }, {2, 3, 32, 32}, cg::Device::cuda(0), true);
  for (const bool training : {true, false})
    expect_fusion_changes_nothing([] { return nn::TwoConvCnn(10, 1, 28); }, {8, 1, 28, 28},
                                  cg::Device::cuda(0), training);
  expect_fusion_changes_nothing(
      [] {
        return nn::Sequential(
            {nn::Conv2d(1, 4, 3), nn::ReLU(), nn::Conv2d(4, 2, 3, {.bias = false}), nn::ReLU()});
      },
      {2, 1, 9, 9}, cg::Device::cuda(0), true);
}
