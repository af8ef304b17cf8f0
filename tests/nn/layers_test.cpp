// The basic layers: Linear (PyTorch's init bounds, reproducible under manual_seed, no bias,
// matches functional::linear), BatchNorm1d/2d against functional::batch_norm (training with
// running statistics and num_batches_tracked, eval, cumulative momentum, no affine, no
// tracking, 3-D input to BatchNorm1d, rank errors), activations, Flatten, Dropout in
// train/eval, Identity; Conv2d and the pooling modules against their functional ops (options,
// PyTorch's names, init and printing, float64 gradcheck); a small network against numbers
// PyTorch 1.13 computed; and (GPU suite) every layer on CUDA against the same layer on the CPU,
// forward, backward and buffers.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "cugrad/cugrad.h"
#include "tests/support/parity.h"

namespace cg = cugrad;
namespace nn = cugrad::nn;
namespace F = cugrad::nn::functional;
using cg::testing::all_close;
using cg::testing::all_equal;

namespace {

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const cg::Error& e) {
    return e.what();
  }
  return "";
}

std::vector<std::string> param_names(nn::Module& m) {
  std::vector<std::string> out;
  for (const auto& [n, t] : m.named_parameters()) out.push_back(n);
  return out;
}

std::vector<std::string> buffer_names(nn::Module& m) {
  std::vector<std::string> out;
  for (const auto& [n, t] : m.named_buffers()) out.push_back(n);
  return out;
}

double max_abs(const cg::Tensor& t) { return t.abs().max().item<double>(); }

}  // namespace

// ---- Linear ----

TEST(LinearLayer, ShapesNamesAndInitBounds) {
  cg::manual_seed(1);
  nn::Linear fc(50, 30);
  EXPECT_EQ(param_names(*fc), (std::vector<std::string>{"weight", "bias"}));
  EXPECT_EQ(fc->weight.shape(), (cg::Shape{30, 50}));
  EXPECT_EQ(fc->bias.shape(), (cg::Shape{30}));
  EXPECT_TRUE(fc->weight.requires_grad());
  EXPECT_TRUE(fc->weight.is_leaf());
  const double bound = 1.0 / std::sqrt(50.0);
  EXPECT_LE(max_abs(fc->weight), bound);
  EXPECT_LE(max_abs(fc->bias), bound);
  EXPECT_GT(max_abs(fc->weight), 0.9 * bound);  // spread over the whole interval
  // U(-b, b) has variance b²/3.
  EXPECT_NEAR(fc->weight.var().item<double>(), bound * bound / 3, 0.1 * bound * bound / 3);
  // Reproducible under manual_seed.
  cg::manual_seed(1);
  nn::Linear again(50, 30);
  EXPECT_TRUE(all_equal(again->weight, fc->weight));
  EXPECT_TRUE(all_equal(again->bias, fc->bias));
  nn::Linear no_bias(4, 3, false);
  EXPECT_EQ(param_names(*no_bias), std::vector<std::string>{"weight"});
  EXPECT_FALSE(no_bias->bias.defined());
  EXPECT_EQ(no_bias->state_dict().size(), 1u);
}

TEST(LinearLayer, MatchesFunctional) {
  cg::manual_seed(2);
  nn::Linear fc(5, 3);
  const cg::Tensor x = cg::randn({2, 4, 5});
  EXPECT_TRUE(all_equal(fc(x), F::linear(x, fc->weight, fc->bias)));
  nn::Linear nb(5, 3, false);
  EXPECT_TRUE(all_equal(nb(x), F::linear(x, nb->weight)));
  fc(x).sum().backward();
  const cg::TensorList g =
      cg::autograd::grad({F::linear(x, fc->weight, fc->bias).sum()}, {fc->weight, fc->bias});
  EXPECT_TRUE(all_close(fc->weight.grad(), g[0]));
  EXPECT_TRUE(all_close(fc->bias.grad(), g[1]));
  EXPECT_NE(message_of([&] {
              fc(cg::randn({2, 4}));
            }).find("linear: the input's last dimension (4)"),
            std::string::npos);
}

// ---- BatchNorm ----

TEST(BatchNormLayer, NamesAndInitialValues) {
  nn::BatchNorm2d bn(3);
  EXPECT_EQ(param_names(*bn), (std::vector<std::string>{"weight", "bias"}));
  EXPECT_EQ(buffer_names(*bn),
            (std::vector<std::string>{"running_mean", "running_var", "num_batches_tracked"}));
  EXPECT_TRUE(all_equal(bn->weight, cg::ones({3})));
  EXPECT_TRUE(all_equal(bn->bias, cg::zeros({3})));
  EXPECT_TRUE(all_equal(bn->running_mean, cg::zeros({3})));
  EXPECT_TRUE(all_equal(bn->running_var, cg::ones({3})));
  EXPECT_EQ(bn->num_batches_tracked.dtype(), cg::DType::int64);
  EXPECT_EQ(bn->num_batches_tracked.dim(), 0);
  EXPECT_FALSE(bn->running_mean.requires_grad());
  nn::BatchNorm1d plain(4, {.affine = false, .track_running_stats = false});
  EXPECT_TRUE(param_names(*plain).empty());
  EXPECT_TRUE(buffer_names(*plain).empty());
  EXPECT_TRUE(plain->state_dict().empty());
}

TEST(BatchNormLayer, TrainingAndEvalMatchFunctional) {
  cg::manual_seed(3);
  nn::BatchNorm2d bn(3, {.eps = 1e-3, .momentum = 0.2});
  {
    cg::NoGradGuard ng;
    bn->weight.copy_(cg::rand({3}) + 0.5);
    bn->bias.copy_(cg::randn({3}));
  }
  cg::Tensor rm = cg::zeros({3}), rv = cg::ones({3});
  for (int step = 1; step <= 3; ++step) {
    const cg::Tensor x = cg::randn({4, 3, 2, 5}) * static_cast<double>(step) + 1.0;
    const cg::Tensor want = F::batch_norm(x, rm, rv, bn->weight.detach(), bn->bias.detach(), true, 0.2, 1e-3);
    EXPECT_TRUE(all_close(bn(x), want));
    EXPECT_TRUE(all_close(bn->running_mean, rm));
    EXPECT_TRUE(all_close(bn->running_var, rv));
    EXPECT_EQ(bn->num_batches_tracked.item<std::int64_t>(), step);
  }
  bn->eval();
  const cg::Tensor x = cg::randn({2, 3, 3, 3});
  EXPECT_TRUE(
      all_close(bn(x), F::batch_norm(x, rm, rv, bn->weight.detach(), bn->bias.detach(), false, 0.2, 1e-3)));
  EXPECT_EQ(bn->num_batches_tracked.item<std::int64_t>(), 3);  // eval leaves the buffers alone
  EXPECT_TRUE(all_close(bn->running_mean, rm));
}

TEST(BatchNormLayer, CumulativeMomentumAndNoTracking) {
  cg::manual_seed(4);
  nn::BatchNorm1d cumulative(2, {.momentum = std::nullopt});
  cg::Tensor sum_mean = cg::zeros({2});
  for (int step = 1; step <= 4; ++step) {
    const cg::Tensor x = cg::randn({6, 2}) + static_cast<double>(step);
    cumulative(x);
    sum_mean = sum_mean + x.mean(0);
    EXPECT_TRUE(all_close(cumulative->running_mean, sum_mean / static_cast<double>(step), {1e-6, 1e-6}));
  }
  // Without running statistics, eval mode normalizes with the batch statistics.
  nn::BatchNorm1d untracked(2, {.track_running_stats = false});
  untracked->eval();
  const cg::Tensor x = cg::randn({5, 2}) * 3.0 + 2.0;
  EXPECT_TRUE(all_close(untracked(x), F::batch_norm(x, {}, {}, untracked->weight.detach(),
                                                    untracked->bias.detach(), true, 0.1, 1e-5)));
}

TEST(BatchNormLayer, OneDAcceptsThreeDInputAndRanksAreChecked) {
  cg::manual_seed(5);
  nn::BatchNorm1d bn(3);
  const cg::Tensor x = cg::randn({4, 3, 5});
  // (N, C, L) normalizes over N and L, as (N, C, L, 1) does in 2-D.
  cg::Tensor rm = cg::zeros({3}), rv = cg::ones({3});
  const cg::Tensor want =
      F::batch_norm(x.reshape({4, 3, 5, 1}), rm, rv, cg::ones({3}), cg::zeros({3}), true, 0.1, 1e-5)
          .reshape({4, 3, 5});
  const cg::Tensor y = bn(x);
  EXPECT_EQ(y.shape(), (cg::Shape{4, 3, 5}));
  EXPECT_TRUE(all_close(y, want));
  EXPECT_TRUE(all_close(bn->running_var, rv));
  EXPECT_NE(message_of([&] {
              bn(cg::randn({4, 3, 2, 2}));
            }).find("BatchNorm1d: expected a 2-D (N, C) or 3-D"),
            std::string::npos);
  nn::BatchNorm2d bn2(3);
  EXPECT_NE(message_of([&] {
              bn2(cg::randn({4, 3}));
            }).find("BatchNorm2d: expected a 4-D"),
            std::string::npos);
  EXPECT_NE(message_of([&] { bn2(cg::randn({4, 2, 3, 3})); }).find("expected 3 channels"), std::string::npos);
  EXPECT_NE(message_of([&] { nn::BatchNorm2d(0); }).find("num_features must be positive"), std::string::npos);
}

TEST(BatchNormGradcheck, ModuleInFloat64) {
  cg::manual_seed(6);
  nn::BatchNorm2d bn(2);
  bn->to(cg::DType::float64);
  {
    cg::NoGradGuard ng;
    bn->weight.copy_(cg::rand({2}) + 0.5);
  }
  const cg::Tensor x = cg::randn({3, 2, 2, 2}, cg::Device::cpu(), cg::DType::float64).requires_grad_();
  EXPECT_EQ(
      cg::autograd::gradcheck([&](const cg::TensorList& t) { return bn(t[0]); }, {x, bn->weight, bn->bias}),
      "");
  bn->eval();
  EXPECT_EQ(
      cg::autograd::gradcheck([&](const cg::TensorList& t) { return bn(t[0]); }, {x, bn->weight, bn->bias}),
      "");
}

// ---- convolution and pooling modules ----

TEST(ConvPoolLayers, ModulesMatchTheirFunctionalOps) {
  cg::manual_seed(21);
  const cg::Tensor x = cg::randn({2, 4, 11, 9});
  nn::Conv2d conv(4, 6, 3, {.stride = 2, .padding = 1, .dilation = 2, .groups = 2});
  EXPECT_TRUE(all_equal(conv(x), F::conv2d(x, conv->weight, conv->bias, 2, 1, 2, 2)));
  EXPECT_EQ(conv(x).shape(), (cg::Shape{2, 6, 5, 4}));
  nn::Conv2d rect(4, 3, {3, 1}, {.stride = {1, 2}, .bias = false});
  EXPECT_FALSE(rect->bias.defined());
  EXPECT_TRUE(all_equal(rect(x), F::conv2d(x, rect->weight, cg::Tensor(), {1, 2})));
  EXPECT_TRUE(all_equal(nn::MaxPool2d(3, {.stride = cg::nn::Int2(2), .padding = 1})(x),
                        F::max_pool2d(x, 3, cg::nn::Int2(2), 1)));
  EXPECT_TRUE(all_equal(nn::MaxPool2d({2, 3})(x), F::max_pool2d(x, {2, 3})));
  EXPECT_TRUE(all_equal(nn::MaxPool2d(2, {.dilation = 2})(x), F::max_pool2d(x, 2, std::nullopt, 0, 2)));
  EXPECT_TRUE(all_equal(nn::AvgPool2d(2)(x), F::avg_pool2d(x, 2)));
  EXPECT_EQ(nn::AvgPool2d(2)(x).shape(), (cg::Shape{2, 4, 5, 4}));
  EXPECT_TRUE(all_equal(nn::AvgPool2d(3, {.stride = cg::nn::Int2(2), .padding = 1})(x),
                        F::avg_pool2d(x, 3, cg::nn::Int2(2), 1)));
  EXPECT_TRUE(all_equal(nn::AdaptiveAvgPool2d({3, 2})(x), F::adaptive_avg_pool2d(x, {3, 2})));
  EXPECT_EQ(nn::AdaptiveAvgPool2d({3, 2})(x).shape(), (cg::Shape{2, 4, 3, 2}));
  // Bad options are errors naming the module.
  EXPECT_NE(
      message_of([] { nn::AvgPool2d(2, {.dilation = 2}); }).find("AvgPool2d: dilation is not supported"),
      std::string::npos);
  EXPECT_NE(message_of([] { nn::MaxPool2d(0); }).find("MaxPool2d"), std::string::npos);
  EXPECT_NE(message_of([] { nn::AdaptiveAvgPool2d(0); }).find("AdaptiveAvgPool2d"), std::string::npos);
}

TEST(ConvPoolLayers, Conv2dNamesAndInitAsPyTorch) {
  cg::manual_seed(22);
  nn::Conv2d conv(8, 16, 3, {.groups = 4});
  EXPECT_EQ(param_names(*conv), (std::vector<std::string>{"weight", "bias"}));
  EXPECT_EQ(conv->weight.shape(), (cg::Shape{16, 2, 3, 3}));
  // kaiming_uniform(a=√5): U(±1/√fan_in), fan_in = (8 / 4 groups) · 3 · 3 = 18; bias the same.
  const double bound = 1.0 / std::sqrt(18.0);
  EXPECT_LE(max_abs(conv->weight), bound);
  EXPECT_GT(max_abs(conv->weight), 0.95 * bound);
  EXPECT_LE(max_abs(conv->bias), bound);
  EXPECT_GT(max_abs(conv->bias), 0.5 * bound);
  cg::manual_seed(22);
  nn::Conv2d again(8, 16, 3, {.groups = 4});
  EXPECT_TRUE(all_equal(again->weight, conv->weight));  // reproducible under manual_seed
  EXPECT_EQ(param_names(*nn::Conv2d(2, 4, 1, {.bias = false})), (std::vector<std::string>{"weight"}));
}

TEST(ConvPoolLayers, PrintLikePyTorch) {
  // The strings PyTorch 1.13 prints for the same modules (to_string's first line; the second
  // is the parameter count).
  const auto tree = [](const std::string& s) { return s.substr(0, s.find('\n')); };
  EXPECT_EQ(tree(nn::Conv2d(4, 6, 3, {.stride = 2, .padding = 1, .dilation = 2, .groups = 2})->to_string()),
            "Conv2d(4, 6, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), dilation=(2, 2), groups=2)");
  EXPECT_EQ(tree(nn::Conv2d(1, 32, 3)->to_string()), "Conv2d(1, 32, kernel_size=(3, 3), stride=(1, 1))");
  EXPECT_EQ(tree(nn::Conv2d(2, 4, {3, 1}, {.bias = false})->to_string()),
            "Conv2d(2, 4, kernel_size=(3, 1), stride=(1, 1), bias=False)");
  EXPECT_EQ(tree(nn::MaxPool2d(3, {.stride = cg::nn::Int2(2), .padding = 1})->to_string()),
            "MaxPool2d(kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=False)");
  EXPECT_EQ(tree(nn::MaxPool2d({2, 3})->to_string()),
            "MaxPool2d(kernel_size=(2, 3), stride=(2, 3), padding=0, dilation=1, ceil_mode=False)");
  EXPECT_EQ(tree(nn::AvgPool2d(2)->to_string()), "AvgPool2d(kernel_size=2, stride=2, padding=0)");
  EXPECT_EQ(tree(nn::AvgPool2d(3, {.stride = cg::nn::Int2(2), .padding = 1})->to_string()),
            "AvgPool2d(kernel_size=3, stride=2, padding=1)");
  EXPECT_EQ(tree(nn::AdaptiveAvgPool2d({3, 2})->to_string()), "AdaptiveAvgPool2d(output_size=(3, 2))");
  // Output size 1 prints as torchvision's ResNet prints its AdaptiveAvgPool2d((1, 1)).
  EXPECT_EQ(tree(nn::AdaptiveAvgPool2d(1)->to_string()), "AdaptiveAvgPool2d(output_size=(1, 1))");
}

TEST(ConvPoolLayers, ModulesPassGradcheckInFloat64) {
  cg::manual_seed(23);
  nn::Sequential net({nn::Conv2d(4, 6, 3, {.stride = 2, .padding = 1, .dilation = 2, .groups = 2}),
                      nn::MaxPool2d(2, {.stride = cg::nn::Int2(1)}),
                      nn::Conv2d(6, 3, {2, 1}, {.bias = false}), nn::AvgPool2d(2, {.padding = 1}),
                      nn::AdaptiveAvgPool2d({2, 3})});
  net->to(cg::DType::float64);
  const cg::Tensor x = cg::randn({2, 4, 9, 8}, cg::Device::cpu(), cg::DType::float64).requires_grad_();
  cg::TensorList inputs{x};
  for (const cg::Tensor& p : net->parameters()) inputs.push_back(p);
  EXPECT_EQ(inputs.size(), 4u);
  EXPECT_EQ(cg::autograd::gradcheck([&](const cg::TensorList& t) { return net(t[0]); }, inputs), "");
}

// ---- activations and shape layers ----

TEST(SimpleLayers, ComputeTheirFunctions) {
  cg::manual_seed(7);
  const cg::Tensor x = cg::randn({2, 3, 4});
  EXPECT_TRUE(all_equal(nn::ReLU()(x), x.relu()));
  EXPECT_TRUE(all_equal(nn::LeakyReLU()(x), cg::leaky_relu(x, 0.01)));
  EXPECT_TRUE(all_equal(nn::LeakyReLU(0.3)(x), cg::leaky_relu(x, 0.3)));
  EXPECT_TRUE(all_equal(nn::Sigmoid()(x), cg::sigmoid(x)));
  EXPECT_TRUE(all_equal(nn::Tanh()(x), cg::tanh(x)));
  EXPECT_TRUE(nn::Identity()(x).shares_storage(x));
  EXPECT_EQ(nn::Flatten()(x).shape(), (cg::Shape{2, 12}));
  EXPECT_EQ(nn::Flatten(0)(x).shape(), (cg::Shape{24}));
  EXPECT_EQ(nn::Flatten(0, 1)(x).shape(), (cg::Shape{6, 4}));
  EXPECT_TRUE(nn::Flatten()(x).shares_storage(x));
  nn::ReLU relu;
  nn::Flatten flatten;
  EXPECT_TRUE(relu->parameters().empty());
  EXPECT_TRUE(flatten->parameters().empty());
  EXPECT_NE(message_of([] { nn::LeakyReLU(NAN); }).find("negative_slope must be finite"), std::string::npos);
}

TEST(SimpleLayers, DropoutFollowsTrainAndEval) {
  nn::Dropout drop(0.4);
  const cg::Tensor x = cg::ones({1000});
  cg::manual_seed(8);
  const cg::Tensor y = drop(x);
  cg::manual_seed(8);
  EXPECT_TRUE(all_equal(y, F::dropout(x, 0.4, true)));
  const double kept = cg::ne(y, 0.0).to(cg::DType::float32).sum().item<double>();
  EXPECT_GT(kept, 500);
  EXPECT_LT(kept, 700);
  drop->eval();
  EXPECT_TRUE(drop(x).shares_storage(x));
  EXPECT_NE(message_of([] { nn::Dropout(1.5); }).find("Dropout: probability must be in [0, 1]"),
            std::string::npos);
}

// A network with fixed weights against PyTorch 1.13: Linear(3,4) -> BatchNorm1d(4) (training)
// -> LeakyReLU(0.1) -> Linear(4,2) -> Sigmoid, weights w[i] = sin(i + offset) / 2. The expected
// numbers were printed by this script:
//   torch.set_default_dtype(torch.float64)
//   m = nn.Sequential(nn.Linear(3,4), nn.BatchNorm1d(4), nn.LeakyReLU(0.1), nn.Linear(4,2), nn.Sigmoid())
//   fill = lambda t, o: t.data.copy_(torch.sin(torch.arange(t.numel()) + o).reshape(t.shape) / 2)
//   fill(m[0].weight, 0); fill(m[0].bias, 1); fill(m[3].weight, 2); fill(m[3].bias, 3)
//   x = torch.cos(torch.arange(15.) * 0.7).reshape(5, 3) * 2
//   y = m(x); y.sum().backward()
//   print(y, m[0].weight.grad, m[1].running_var)
namespace {

const std::vector<double> kTorchY = {
    0.5569306227445421, 0.4425396779765045, 0.40094856735783546, 0.5535139772589396,  0.5149666547287911,
    0.5107407048707231, 0.556594217675276,  0.44068218162112305, 0.40199402535455075, 0.552812420820159};
const std::vector<double> kTorchFc0WeightGrad = {
    0.002175614278835882,   0.0008872336994371082, -0.000818426752215909, -0.028385852424275652,
    -0.014044082917400133,  0.006902838230377572,  0.017805661796086253,  0.010409438062048972,
    -0.0018825070445263668, 0.08057779955175814,   0.054872142221684274,  0.0033592590038789196};
const std::vector<double> kTorchRunningVar = {1.080963178866975, 1.053894857558675, 1.0265739289954345,
                                              1.0011767626834926};

// Builds the network on `dev` in `dtype`, runs forward and backward of y.sum(), and compares
// with PyTorch: to 1e-9 in float64, to 1e-5 relative norm in float32.
void expect_small_network_matches_pytorch(cg::Device dev, cg::DType dtype) {
  nn::Sequential m(
      {nn::Linear(3, 4), nn::BatchNorm1d(4), nn::LeakyReLU(0.1), nn::Linear(4, 2), nn::Sigmoid()});
  m->to(dtype);
  const auto fill = [](cg::Tensor t, double offset) {
    std::vector<double> v(static_cast<std::size_t>(t.numel()));
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = std::sin(static_cast<double>(i) + offset) / 2;
    cg::NoGradGuard ng;
    t.copy_(cg::from_vector(v, t.shape()));
  };
  fill(m[0]->parameters()[0], 0);
  fill(m[0]->parameters()[1], 1);
  fill(m[3]->parameters()[0], 2);
  fill(m[3]->parameters()[1], 3);
  m->to(dev);
  std::vector<double> xv(15);
  for (int i = 0; i < 15; ++i) xv[static_cast<std::size_t>(i)] = std::cos(i * 0.7) * 2;
  const cg::Tensor x = cg::from_vector(xv, {5, 3}).to(dtype).to(dev);
  const cg::Tensor y = m(x);
  y.sum().backward();
  const auto expect = [&](const cg::Tensor& got, const std::vector<double>& want, const cg::Shape& shape) {
    const cg::Tensor ref = cg::from_vector(want, shape);
    if (dtype == cg::DType::float64) return all_close(got, ref, {1e-9, 1e-9});
    return cg::testing::norm_close(got, ref, 1e-5);
  };
  EXPECT_TRUE(expect(y, kTorchY, {5, 2}));
  EXPECT_TRUE(expect(m[0]->parameters()[0].grad(), kTorchFc0WeightGrad, {4, 3}));
  EXPECT_TRUE(expect(m[1]->buffers()[1], kTorchRunningVar, {4}));
}

}  // namespace

TEST(Layers, SmallNetworkMatchesPyTorch) {
  expect_small_network_matches_pytorch(cg::Device::cpu(), cg::DType::float64);
  expect_small_network_matches_pytorch(cg::Device::cpu(), cg::DType::float32);
}

TEST(LayersGPU, SmallNetworkMatchesPyTorch) {
  CUGRAD_REQUIRE_GPU();
  expect_small_network_matches_pytorch(cg::Device::cuda(0), cg::DType::float32);
}

// ---- GPU: each layer on CUDA against the same layer on the CPU ----

namespace {

// Runs `make()` twice (same seed), moves one copy to CUDA, and compares forward, input and
// parameter gradients, and buffers after two training steps and one eval step.
void expect_layer_parity(const std::string& what, const std::function<std::shared_ptr<nn::Module>()>& make,
                         const cg::Shape& shape) {
  SCOPED_TRACE(what);
  cg::manual_seed(42);
  const auto cpu = make();
  cg::manual_seed(42);
  const auto gpu = make();
  gpu->to(cg::Device::cuda(0));
  for (int step = 0; step < 3; ++step) {
    if (step == 2) {
      cpu->eval();
      gpu->eval();
    }
    const cg::Tensor x = cg::randn(shape) * 2.0 + 0.5, g = cg::randn(shape);
    const cg::Tensor xc = x.clone().requires_grad_(), xg = x.cuda().requires_grad_();
    cg::testing::PoisonGuard poison;
    const cg::Tensor yc = (*cpu)(xc), yg = (*gpu)(xg);
    ASSERT_TRUE(yg.is_cuda());
    EXPECT_TRUE(cg::testing::norm_close(yg, yc)) << "forward, step " << step;
    const cg::Tensor gy = cg::randn(yc.shape());
    cpu->zero_grad();
    gpu->zero_grad();
    yc.backward(gy);
    yg.backward(gy.cuda());
    EXPECT_TRUE(cg::testing::norm_close(xg.grad(), xc.grad())) << "input gradient, step " << step;
    const auto pc = cpu->named_parameters(), pg = gpu->named_parameters();
    for (std::size_t i = 0; i < pc.size(); ++i)
      EXPECT_TRUE(cg::testing::norm_close(pg[i].second.grad(), pc[i].second.grad()))
          << pc[i].first << ", step " << step;
    const auto bc = cpu->named_buffers(), bg = gpu->named_buffers();
    for (std::size_t i = 0; i < bc.size(); ++i)
      EXPECT_TRUE(cg::testing::norm_close(bg[i].second, bc[i].second)) << bc[i].first << ", step " << step;
  }
}

}  // namespace

TEST(LayersGPU, EachLayerMatchesItsCpuTwin) {
  CUGRAD_REQUIRE_GPU();
  expect_layer_parity("Linear", [] { return nn::Linear(37, 19).ptr(); }, {33, 37});
  expect_layer_parity("Linear 3-D", [] { return nn::Linear(5, 7).ptr(); }, {3, 11, 5});
  expect_layer_parity("Linear no bias", [] { return nn::Linear(37, 19, false).ptr(); }, {7, 37});
  expect_layer_parity("BatchNorm1d", [] { return nn::BatchNorm1d(13).ptr(); }, {65, 13});
  expect_layer_parity("BatchNorm1d 3-D", [] { return nn::BatchNorm1d(5).ptr(); }, {6, 5, 9});
  expect_layer_parity("BatchNorm2d cumulative",
                      [] { return nn::BatchNorm2d(7, {.momentum = std::nullopt}).ptr(); }, {5, 7, 9, 11});
  expect_layer_parity("BatchNorm2d untracked",
                      [] { return nn::BatchNorm2d(3, {.track_running_stats = false}).ptr(); }, {4, 3, 5, 5});
  expect_layer_parity("LeakyReLU", [] { return nn::LeakyReLU(0.2).ptr(); }, {1000003});
  expect_layer_parity("Sigmoid", [] { return nn::Sigmoid().ptr(); }, {7, 33});
  expect_layer_parity("Tanh", [] { return nn::Tanh().ptr(); }, {7, 33});
  expect_layer_parity("Flatten", [] { return nn::Flatten().ptr(); }, {3, 4, 5});
  expect_layer_parity("ReLU", [] { return nn::ReLU().ptr(); }, {7, 33});
  expect_layer_parity("Identity", [] { return nn::Identity().ptr(); }, {7, 3});
  expect_layer_parity(
      "Conv2d strided, dilated, grouped",
      [] { return nn::Conv2d(4, 6, 3, {.stride = 2, .padding = 1, .dilation = 2, .groups = 2}).ptr(); },
      {3, 4, 11, 9});
  expect_layer_parity("Conv2d rectangular, no bias",
                      [] {
                        return nn::Conv2d(3, 5, {3, 1}, {.stride = {1, 2}, .bias = false}).ptr();
                      },
                      {2, 3, 7, 8});
  expect_layer_parity("MaxPool2d 3/2/1",
                      [] { return nn::MaxPool2d(3, {.stride = cg::nn::Int2(2), .padding = 1}).ptr(); },
                      {3, 5, 13, 11});
  expect_layer_parity("AvgPool2d 3/2/1",
                      [] { return nn::AvgPool2d(3, {.stride = cg::nn::Int2(2), .padding = 1}).ptr(); },
                      {3, 5, 13, 11});
  expect_layer_parity("AdaptiveAvgPool2d 3x2",
                      [] {
                        return nn::AdaptiveAvgPool2d({3, 2}).ptr();
                      },
                      {2, 5, 13, 11});
  expect_layer_parity("AdaptiveAvgPool2d 1", [] { return nn::AdaptiveAvgPool2d(1).ptr(); }, {2, 5, 7, 7});
  expect_layer_parity("MLP",
                      [] {
                        // No bias before the batch norm: its gradient is exactly zero in training,
                        // and two roundings of zero cannot be compared relatively.
                        return nn::Sequential({nn::Linear(9, 17, false), nn::BatchNorm1d(17), nn::ReLU(),
                                               nn::Linear(17, 3), nn::Tanh()})
                            .ptr();
                      },
                      {31, 9});
}

TEST(LayersGPU, DropoutMaskMatchesTheCpuForOneSeed) {
  CUGRAD_REQUIRE_GPU();
  nn::Dropout drop(0.3);
  const cg::Tensor x = cg::randn({4097});
  cg::manual_seed(9);
  const cg::Tensor yc = drop(x);
  cg::manual_seed(9);
  const cg::Tensor yg = drop(x.cuda());
  EXPECT_TRUE(all_close(yg, yc, {0, 1e-7}));
}
