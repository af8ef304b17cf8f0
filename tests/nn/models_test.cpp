// Model builders: the reference CNN against PyTorch's golden forward/backward (logits, loss,
// every parameter gradient, running statistics), ResNet-18's state_dict layout against
// torchvision's, initialization statistics, freezing, and CUDA against the CPU.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "cugrad/cugrad.h"
#include "cugrad/nn/models.h"
#include "tests/support/gpu.h"
#include "tests/support/parity.h"

namespace cg = cugrad;
namespace nn = cugrad::nn;
namespace F = cugrad::nn::functional;
using cg::testing::norm_close;

namespace {

const std::string kGolden = std::string(CUGRAD_GOLDEN_DIR) + "/small_cnn.safetensors";

// Loads the golden parameters and buffers into a width-8 reference CNN of `dtype` on `device`.
nn::ReferenceCnn golden_model(const cg::StateDict& g, cg::DType dtype, cg::Device device) {
  nn::ReferenceCnn model(8);
  cg::StateDict params;
  for (const auto& [key, value] : g)
    if (key.rfind("param.", 0) == 0) params[key.substr(6)] = value;
  const nn::LoadStateDictResult r = model->load_state_dict(params, /*strict=*/false);
  EXPECT_TRUE(r.unexpected_keys.empty());
  for (const std::string& k : r.missing_keys)  // PyTorch's file leaves out the batch counters
    EXPECT_NE(k.find("num_batches_tracked"), std::string::npos) << k;
  model->to(dtype);
  model->to(device);
  model->train();
  return model;
}

struct GoldenRun {
  cg::Tensor logits, loss;
  cg::StateDict grads, buffers;
};

GoldenRun run_golden(const cg::StateDict& g, cg::DType dtype, cg::Device device) {
  nn::ReferenceCnn model = golden_model(g, dtype, device);
  const cg::Tensor x = g.at("x").to(dtype).to(device);
  const cg::Tensor target = g.at("target").to(device);
  GoldenRun out;
  out.logits = model(x);
  out.loss = F::cross_entropy(out.logits, target, {.label_smoothing = 0.1});
  out.loss.backward();
  for (const auto& [name, p] : model->named_parameters()) out.grads[name] = p.grad().cpu().to(cg::DType::float64);
  for (const auto& [name, b] : model->named_buffers()) out.buffers[name] = b.cpu();
  out.logits = out.logits.detach().cpu().to(cg::DType::float64);
  out.loss = out.loss.detach().cpu().to(cg::DType::float64);
  return out;
}

void expect_matches_golden(const GoldenRun& r, const cg::StateDict& g, double tol) {
  EXPECT_TRUE(norm_close(r.logits, g.at("logits"), tol)) << "logits";
  EXPECT_TRUE(norm_close(r.loss.reshape({1}), g.at("loss").reshape({1}), tol)) << "loss";
  int grads = 0, stats = 0;
  for (const auto& [key, value] : g) {
    if (key.rfind("grad.", 0) == 0) {
      ++grads;
      ASSERT_TRUE(r.grads.count(key.substr(5))) << key;
      EXPECT_TRUE(norm_close(r.grads.at(key.substr(5)), value, tol)) << key;
    } else if (key.rfind("after.", 0) == 0) {
      ++stats;
      ASSERT_TRUE(r.buffers.count(key.substr(6))) << key;
      EXPECT_TRUE(norm_close(r.buffers.at(key.substr(6)).to(cg::DType::float64), value, tol)) << key;
    }
  }
  EXPECT_EQ(grads, 17);  // 5 convs, 5 BatchNorms (weight, bias), the linear layer (weight, bias)
  EXPECT_EQ(stats, 10);
  // Every BatchNorm counted its one training batch.
  for (const char* bn : {"f.1", "f.4", "f.8", "f.11", "f.15"})
    EXPECT_EQ(r.buffers.at(std::string(bn) + ".num_batches_tracked").item<std::int64_t>(), 1) << bn;
}

}  // namespace

TEST(ReferenceCnn, LayoutMatchesPyTorchSequential) {
  const cg::StateDict g = cg::io::load_safetensors(kGolden);
  nn::ReferenceCnn model(8);
  const cg::StateDict mine = model->state_dict();
  int compared = 0;
  for (const auto& [key, value] : g) {
    if (key.rfind("param.", 0) != 0) continue;
    const std::string name = key.substr(6);
    ASSERT_TRUE(mine.count(name)) << name;
    EXPECT_EQ(mine.at(name).shape(), value.shape()) << name;
    ++compared;
  }
  EXPECT_EQ(compared, 27);
  // Plus one num_batches_tracked per BatchNorm, which PyTorch's file leaves out.
  EXPECT_EQ(mine.size(), 27u + 5u);
  EXPECT_EQ(model->f->size(), 20u);
  EXPECT_EQ(model->f[nn::ReferenceCnnImpl::kClassifier]->type_name(), "Linear");
  // Convolutions have no bias; the default width is DESIGN.md's 64.
  EXPECT_EQ(mine.count("f.0.bias"), 0u);
  nn::ReferenceCnn wide;
  EXPECT_EQ(wide->state_dict().at("f.14.weight").shape(), (cg::Shape{256, 128, 3, 3}));
  EXPECT_EQ(wide->state_dict().at("f.19.weight").shape(), (cg::Shape{10, 256}));
}

TEST(ReferenceCnn, GoldenForwardBackwardFloat64) {
  const cg::StateDict g = cg::io::load_safetensors(kGolden);
  // PyTorch computed in float64 from the float32 inputs: a float64 run agrees closely.
  expect_matches_golden(run_golden(g, cg::DType::float64, cg::Device::cpu()), g, 1e-9);
}

TEST(ReferenceCnn, GoldenForwardBackwardFloat32) {
  const cg::StateDict g = cg::io::load_safetensors(kGolden);
  expect_matches_golden(run_golden(g, cg::DType::float32, cg::Device::cpu()), g, 1e-4);
}

TEST(ReferenceCnn, ShapesAndEvalMode) {
  cg::manual_seed(0);
  nn::ReferenceCnn model(4);
  const cg::Tensor x = cg::randn({3, 1, 28, 28});
  EXPECT_EQ(model(x).shape(), (cg::Shape{3, 10}));
  model->eval();
  cg::NoGradGuard ng;
  const cg::Tensor a = model(x), b = model(x);
  EXPECT_TRUE(cg::testing::all_equal(a, b));  // eval: no batch statistics, no state change
  EXPECT_EQ(model->state_dict().at("f.1.num_batches_tracked").item<std::int64_t>(), 1);
}

TEST(ResNet18, StateDictMatchesTorchvision) {
  std::ifstream in(std::string(CUGRAD_GOLDEN_DIR) + "/resnet18_state_dict_keys.txt");
  ASSERT_TRUE(in) << "missing tests/golden/resnet18_state_dict_keys.txt";
  std::vector<std::string> keys, dtypes, shapes;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ls(line);
    std::string k, d, s;
    ls >> k >> d >> s;
    keys.push_back(k);
    dtypes.push_back(d);
    shapes.push_back(s);
  }
  ASSERT_EQ(keys.size(), 122u);
  cg::manual_seed(0);
  nn::ResNet model = nn::resnet18();
  const auto params = model->named_parameters();
  EXPECT_EQ(params.size(), 62u);
  EXPECT_EQ(model->num_parameters(), 11689512);
  // state_dict() is a map; the module's own order is named_parameters + named_buffers.
  const cg::StateDict sd = model->state_dict();
  ASSERT_EQ(sd.size(), keys.size());
  for (std::size_t i = 0; i < keys.size(); ++i) {
    ASSERT_TRUE(sd.count(keys[i])) << keys[i];
    const cg::Tensor& t = sd.at(keys[i]);
    std::string shape;
    for (std::size_t d = 0; d < t.shape().size(); ++d) shape += (d ? "x" : "") + std::to_string(t.shape()[d]);
    EXPECT_EQ(shape.empty() ? "scalar" : shape, shapes[i]) << keys[i];
    EXPECT_EQ(dtypes[i], t.dtype() == cg::DType::int64 ? "int64" : "float32") << keys[i];
  }
  // Parameters come in torchvision's registration order.
  std::vector<std::string> param_keys;
  for (std::size_t i = 0; i < keys.size(); ++i)
    if (keys[i].find("running_") == std::string::npos && keys[i].find("num_batches") == std::string::npos)
      param_keys.push_back(keys[i]);
  ASSERT_EQ(param_keys.size(), params.size());
  for (std::size_t i = 0; i < params.size(); ++i) EXPECT_EQ(params[i].first, param_keys[i]);
}

TEST(ResNet18, InitializationAsTorchvision) {
  cg::manual_seed(1);
  nn::ResNet model = nn::resnet18(10, 1);
  const cg::StateDict sd = model->state_dict();
  // kaiming_normal(fan_out, relu): std = sqrt(2 / (out · kH · kW)).
  auto expect_std = [&](const std::string& key, double expected) {
    const cg::Tensor w = sd.at(key).to(cg::DType::float64);
    EXPECT_NEAR(w.mean().item<double>(), 0.0, 4 * expected / std::sqrt(static_cast<double>(w.numel()))) << key;
    EXPECT_NEAR(w.std().item<double>(), expected, 0.05 * expected) << key;
  };
  expect_std("conv1.weight", std::sqrt(2.0 / (64 * 49)));
  expect_std("layer3.1.conv2.weight", std::sqrt(2.0 / (256 * 9)));
  expect_std("layer2.0.downsample.0.weight", std::sqrt(2.0 / 128));
  EXPECT_EQ(sd.at("conv1.weight").shape(), (cg::Shape{64, 1, 7, 7}));
  EXPECT_EQ(sd.at("fc.weight").shape(), (cg::Shape{10, 512}));
  // BatchNorm: weight 1, bias 0; fc: U(-1/√512, 1/√512).
  EXPECT_EQ(sd.at("layer4.1.bn2.weight").sum().item<double>(), 512.0);
  EXPECT_EQ(sd.at("layer4.1.bn2.bias").abs().sum().item<double>(), 0.0);
  const double bound = 1.0 / std::sqrt(512.0);
  EXPECT_LE(sd.at("fc.weight").abs().max().item<double>(), bound);
  EXPECT_GT(sd.at("fc.weight").abs().max().item<double>(), 0.9 * bound);
}

TEST(ResNet18, ForwardBackwardAndFrozenBackbone) {
  cg::manual_seed(2);
  nn::ResNet model = nn::resnet18(5, 3);
  const cg::Tensor x = cg::randn({2, 3, 32, 32});
  const cg::Tensor y = cg::from_vector(std::vector<std::int64_t>{1, 4}, {2});
  cg::Tensor logits = model(x);
  EXPECT_EQ(logits.shape(), (cg::Shape{2, 5}));
  F::cross_entropy(logits, y).backward();
  for (const auto& [name, p] : model->named_parameters()) EXPECT_TRUE(p.grad().defined()) << name;
  const auto full = cg::autograd::last_backward_stats().executed.size();

  // Freeze everything but fc: backward runs only the classifier's part of the graph.
  model->zero_grad();
  model->freeze();
  model->fc->requires_grad_(true);
  F::cross_entropy(model(x), y).backward();
  const auto& executed = cg::autograd::last_backward_stats().executed;
  EXPECT_LT(executed.size(), 10u) << "full backward ran " << full << " nodes";
  for (const std::string& n : executed) {
    EXPECT_EQ(n.find("Conv"), std::string::npos) << n;
    EXPECT_EQ(n.find("BatchNorm"), std::string::npos) << n;
  }
  for (const auto& [name, p] : model->named_parameters())
    EXPECT_EQ(p.grad().defined(), name.rfind("fc.", 0) == 0) << name;
  EXPECT_EQ(model->num_parameters(/*trainable_only=*/true), 5 * 512 + 5);
}

TEST(BasicBlock, GradcheckInFloat64WithBothShortcuts) {
  // The residual add's gradient reaches the input through both paths: the identity shortcut and
  // the downsampling one (conv1x1 + BatchNorm), in training mode (batch statistics).
  for (const std::int64_t stride : {1, 2}) {
    SCOPED_TRACE(stride);
    cg::manual_seed(30 + stride);
    nn::BasicBlock block(3, stride == 1 ? 3 : 4, stride);
    EXPECT_EQ(static_cast<bool>(block->downsample), stride != 1);
    block->to(cg::DType::float64);
    block->train();
    const cg::Tensor x = cg::randn({2, 3, 5, 5}, cg::Device::cpu(), cg::DType::float64).requires_grad_();
    cg::TensorList inputs{x};
    for (const cg::Tensor& p : block->parameters()) inputs.push_back(p);
    EXPECT_EQ(cg::autograd::gradcheck([&](const cg::TensorList& t) { return block(t[0]); }, inputs), "");
  }
}

TEST(ResNet18, SafetensorsRoundTripStrict) {
  cg::manual_seed(3);
  nn::ResNet a = nn::resnet18(10, 1);
  const std::string path = std::string(CUGRAD_TEST_TMP_DIR) + "/resnet18_roundtrip.safetensors";
  cg::io::save_safetensors(a->state_dict(), path);
  cg::manual_seed(4);
  nn::ResNet b = nn::resnet18(10, 1);
  b->load_state_dict(cg::io::load_safetensors(path), /*strict=*/true);
  for (const auto& [key, value] : a->state_dict())
    EXPECT_TRUE(cg::testing::all_equal(b->state_dict().at(key), value)) << key;
  // A classifier of another size is a clear error naming the key.
  nn::ResNet c = nn::resnet18(7, 1);
  try {
    c->load_state_dict(cg::io::load_safetensors(path));
    ADD_FAILURE() << "no error for fc of another shape";
  } catch (const cg::Error& e) {
    EXPECT_NE(std::string(e.what()).find("fc.weight"), std::string::npos) << e.what();
  }
}

// ---- The two-convolution CNN of PyTorch's MNIST example ----

namespace {

const std::string kTwoConvGolden = std::string(CUGRAD_GOLDEN_DIR) + "/two_conv_cnn.safetensors";

cg::StateDict golden_params(const cg::StateDict& g) {
  cg::StateDict params;
  for (const auto& [key, value] : g)
    if (key.rfind("param.", 0) == 0) params[key.substr(6)] = value;
  return params;
}

// PyTorch's eval-mode forward and backward (dropout off) of the 9×9 golden model.
void expect_two_conv_golden(cg::DType dtype, cg::Device device, double tol) {
  const cg::StateDict g = cg::io::load_safetensors(kTwoConvGolden);
  nn::TwoConvCnn model(10, 1, 9);
  model->load_state_dict(golden_params(g), /*strict=*/true);
  model->to(dtype);
  model->to(device);
  model->eval();
  const cg::Tensor logits = model(g.at("x").to(dtype).to(device));
  const cg::Tensor loss = F::cross_entropy(logits, g.at("target").to(device), {.label_smoothing = 0.1});
  loss.backward();
  EXPECT_TRUE(norm_close(logits.detach().cpu().to(cg::DType::float64), g.at("logits"), tol)) << "logits";
  EXPECT_TRUE(
      norm_close(loss.detach().cpu().to(cg::DType::float64).reshape({1}), g.at("loss").reshape({1}), tol));
  int grads = 0;
  for (const auto& [name, p] : model->named_parameters()) {
    ASSERT_TRUE(g.count("grad." + name)) << name;
    EXPECT_TRUE(norm_close(p.grad().cpu().to(cg::DType::float64), g.at("grad." + name), tol)) << name;
    ++grads;
  }
  EXPECT_EQ(grads, 8);
}

}  // namespace

TEST(TwoConvCnn, LayoutMatchesPyTorchMnistExample) {
  // The golden file's state dict (PyTorch's Net at 9×9) loads strictly: same names and shapes.
  const cg::StateDict g = cg::io::load_safetensors(kTwoConvGolden);
  nn::TwoConvCnn small(10, 1, 9);
  const cg::StateDict params = golden_params(g);
  EXPECT_EQ(small->state_dict().size(), params.size());
  const nn::LoadStateDictResult r = small->load_state_dict(params, /*strict=*/true);
  EXPECT_TRUE(r.missing_keys.empty());
  EXPECT_TRUE(r.unexpected_keys.empty());
  for (const auto& [key, value] : params)
    EXPECT_TRUE(cg::testing::all_equal(small->state_dict().at(key), value)) << key;
  // At 28×28 it is the example's network: fc1 has 64·12·12 = 9216 inputs, 1,199,882 parameters.
  nn::TwoConvCnn mnist;
  const cg::StateDict sd = mnist->state_dict();
  EXPECT_EQ(sd.at("conv1.weight").shape(), (cg::Shape{32, 1, 3, 3}));
  EXPECT_EQ(sd.at("conv2.weight").shape(), (cg::Shape{64, 32, 3, 3}));
  EXPECT_EQ(sd.at("fc1.weight").shape(), (cg::Shape{128, 9216}));
  EXPECT_EQ(sd.at("fc2.weight").shape(), (cg::Shape{10, 128}));
  EXPECT_EQ(mnist->num_parameters(), 1199882);
  EXPECT_EQ(mnist->dropout1->p, 0.25);
  EXPECT_EQ(mnist->dropout2->p, 0.5);
  // PyTorch's default initialization: conv2 weight and bias in ±1/√(32·9).
  const double bound = 1.0 / std::sqrt(32.0 * 9.0);
  EXPECT_LE(sd.at("conv2.weight").abs().max().item<double>(), bound);
  EXPECT_GT(sd.at("conv2.weight").abs().max().item<double>(), 0.99 * bound);
  EXPECT_LE(sd.at("conv2.bias").abs().max().item<double>(), bound);
}

TEST(TwoConvCnn, GoldenForwardBackwardFloat64) {
  expect_two_conv_golden(cg::DType::float64, cg::Device::cpu(), 1e-9);
}

TEST(TwoConvCnn, GoldenForwardBackwardFloat32) {
  expect_two_conv_golden(cg::DType::float32, cg::Device::cpu(), 1e-4);
}

namespace {

// TwoConvCnn (which max-pools before its second ReLU) against the example's order, ReLU then
// max-pool, built from the same parameters: outputs and every gradient bit for bit. Eval mode
// (no dropout); conv2's weights can be zeroed so that every pooling window is a tie.
void expect_pool_relu_order_is_exact(cg::Device device, bool ties) {
  SCOPED_TRACE(ties ? "every window a tie" : "random");
  // Two CUDA runs compared bit for bit: deterministic cuDNN convolutions (on an H100 the
  // heuristics chose a weight-gradient algorithm with atomics, whose last bits varied).
  cg::testing::DeterministicConvolutions deterministic;
  cg::manual_seed(40);
  nn::TwoConvCnn model(10, 1, 12);
  if (ties) {
    cg::NoGradGuard ng;
    model->conv2->weight.zero_();
    std::vector<float> b(64);
    for (std::size_t c = 0; c < b.size(); ++c) b[c] = c % 3 == 0 ? -0.5f : c % 3 == 1 ? 0.0f : 0.25f;
    model->conv2->bias.copy_(cg::from_vector(b, {64}));
  }
  model->to(device);
  model->eval();
  const cg::Tensor x = cg::randn({3, 1, 12, 12}).to(device);
  const cg::Tensor target = cg::from_vector(std::vector<std::int64_t>{1, 7, 3}, {3}).to(device);
  const auto grads = [&](const cg::Tensor& logits) {
    return cg::autograd::grad({F::cross_entropy(logits, target)},
                              {model->conv1->weight, model->conv2->weight, model->conv2->bias, model->fc1->weight});
  };
  const cg::Tensor mine = model(x);
  const cg::Tensor h = F::max_pool2d(model->conv2(model->conv1(x).relu()).relu(), 2).flatten(1);
  const cg::Tensor theirs = model->fc2(model->fc1(h).relu());
  EXPECT_TRUE(cg::testing::all_equal(mine.cpu(), theirs.cpu()));
  const cg::TensorList gm = grads(mine), gt = grads(theirs);
  for (std::size_t i = 0; i < gm.size(); ++i) EXPECT_TRUE(cg::testing::all_equal(gm[i].cpu(), gt[i].cpu())) << i;
}

}  // namespace

TEST(TwoConvCnn, PoolThenReluIsTheExamplesReluThenPoolExactly) {
  expect_pool_relu_order_is_exact(cg::Device::cpu(), false);
  expect_pool_relu_order_is_exact(cg::Device::cpu(), true);
}

TEST(TwoConvCnn, DropoutInTrainingOnlyAndInputChecks) {
  cg::manual_seed(6);
  nn::TwoConvCnn model(10, 1, 12);
  const cg::Tensor x = cg::randn({4, 1, 12, 12});
  model->eval();
  cg::Tensor e1, e2, t1, t2;
  {
    cg::NoGradGuard ng;
    e1 = model(x);
    e2 = model(x);
    model->train();
    t1 = model(x);
    t2 = model(x);
  }
  EXPECT_EQ(e1.shape(), (cg::Shape{4, 10}));
  EXPECT_TRUE(cg::testing::all_equal(e1, e2));   // eval: deterministic
  EXPECT_FALSE(cg::testing::all_equal(t1, t2));  // training: a new dropout mask per call
  EXPECT_FALSE(cg::testing::all_equal(t1, e1));
  for (const cg::Shape& bad : {cg::Shape{4, 1, 28, 28}, cg::Shape{4, 3, 12, 12}, cg::Shape{1, 12, 12}}) {
    try {
      model(cg::randn(bad));
      ADD_FAILURE() << "no error for input " << cg::shape_str(bad);
    } catch (const cg::Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("TwoConvCnn"), std::string::npos) << what;
      EXPECT_NE(what.find("(N, 1, 12, 12)"), std::string::npos) << what;
      EXPECT_NE(what.find(cg::shape_str(bad)), std::string::npos) << what;
    }
  }
  EXPECT_THROW(nn::TwoConvCnn(10, 1, 5), cg::Error);
  EXPECT_THROW(nn::TwoConvCnn(0, 1, 28), cg::Error);
}

// ---- GPU ----

TEST(ModelsGPU, ReferenceCnnGoldenOnCuda) {
  CUGRAD_REQUIRE_GPU();
  const cg::StateDict g = cg::io::load_safetensors(kGolden);
  expect_matches_golden(run_golden(g, cg::DType::float32, cg::Device::cuda(0)), g, 1e-4);
}

TEST(ModelsGPU, TwoConvCnnGoldenOnCuda) {
  CUGRAD_REQUIRE_GPU();
  expect_two_conv_golden(cg::DType::float32, cg::Device::cuda(0), 1e-4);
  expect_pool_relu_order_is_exact(cg::Device::cuda(0), false);
  expect_pool_relu_order_is_exact(cg::Device::cuda(0), true);
}

TEST(ModelsGPU, ResNet18CudaMatchesCpu) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(5);
  nn::ResNet cpu_model = nn::resnet18(10, 3);
  cg::manual_seed(5);
  nn::ResNet gpu_model = nn::resnet18(10, 3);
  gpu_model->to(cg::Device::cuda(0));
  const cg::Tensor x = cg::randn({4, 3, 64, 64});
  const cg::Tensor y = cg::from_vector(std::vector<std::int64_t>{0, 3, 9, 5}, {4});
  cg::Tensor lc = F::cross_entropy(cpu_model(x), y, {.label_smoothing = 0.1});
  cg::Tensor lg = F::cross_entropy(gpu_model(x.cuda()), y.cuda(), {.label_smoothing = 0.1});
  lc.backward();
  lg.backward();
  EXPECT_NEAR(lg.item<double>(), lc.item<double>(), 1e-4 * std::abs(lc.item<double>()));
  const auto pc = cpu_model->named_parameters(), pg = gpu_model->named_parameters();
  for (std::size_t i = 0; i < pc.size(); ++i)
    EXPECT_TRUE(norm_close(pg[i].second.grad().cpu(), pc[i].second.grad(), 1e-3)) << pc[i].first;
}
