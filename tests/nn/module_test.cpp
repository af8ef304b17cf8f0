// nn::Module: dotted names and registration order in nested modules, traversal with shared
// tensors, registration errors, train/eval recursion, freezing (no nodes recorded below the
// lowest trainable layer), zero_grad, state_dict round trips (in memory and through a
// safetensors file) and load errors, to(float64) with parameter identity and a gradcheck of a
// whole Sequential, the atomic device move, printing, and the holder API; (GPU suite) to(cuda)
// before building the optimizer.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "cugrad/cugrad.h"
#include "tests/support/parity.h"

namespace cg = cugrad;
namespace nn = cugrad::nn;
using cg::testing::all_close;
using cg::testing::all_equal;
using cg::testing::error_message;

namespace {

// A residual-free "block" like ResNet's, to get PyTorch-style nested names.
class BlockImpl : public nn::Module {
 public:
  BlockImpl(std::int64_t width) : Module("Block") {
    fc1 = register_module("fc1", nn::Linear(width, width));
    bn1 = register_module("bn1", nn::BatchNorm1d(width));
    fc2 = register_module("fc2", nn::Linear(width, width, false));
    register_buffer("scratch", cg::zeros({1}), /*persistent=*/false);
  }
  cg::Tensor forward(const cg::Tensor& x) override { return fc2(bn1(fc1(x)).relu()); }
  nn::Linear fc1 = nullptr, fc2 = nullptr;
  nn::BatchNorm1d bn1 = nullptr;
};
CUGRAD_MODULE(Block);

class NetImpl : public nn::Module {
 public:
  NetImpl() : Module("Net") {
    stem = register_module("stem", nn::Linear(3, 4));
    layer1 = register_module("layer1", nn::Sequential({Block(4), Block(4)}));
    head = register_module("head", nn::Linear(4, 2));
    scale = register_parameter("scale", cg::ones({2}));
  }
  cg::Tensor forward(const cg::Tensor& x) override { return head(layer1(stem(x))) * scale; }
  nn::Linear stem = nullptr, head = nullptr;
  nn::Sequential layer1 = nullptr;
  cg::Tensor scale;
};
CUGRAD_MODULE(Net);

std::vector<std::string> names_of(const auto& named) {
  std::vector<std::string> out;
  for (const auto& [n, v] : named) out.push_back(n);
  return out;
}

}  // namespace

TEST(Module, NestedNamesFollowRegistrationOrder) {
  Net net;
  const std::vector<std::string> params = {
      "scale",  // own parameters first, then children in order (as PyTorch)
      "stem.weight",
      "stem.bias",
      "layer1.0.fc1.weight",
      "layer1.0.fc1.bias",
      "layer1.0.bn1.weight",
      "layer1.0.bn1.bias",
      "layer1.0.fc2.weight",
      "layer1.1.fc1.weight",
      "layer1.1.fc1.bias",
      "layer1.1.bn1.weight",
      "layer1.1.bn1.bias",
      "layer1.1.fc2.weight",
      "head.weight",
      "head.bias"};
  EXPECT_EQ(names_of(net->named_parameters()), params);
  EXPECT_EQ(net->parameters().size(), params.size());
  EXPECT_EQ(names_of(net->named_parameters(false)), std::vector<std::string>{"scale"});
  EXPECT_EQ(names_of(net->named_buffers()),
            (std::vector<std::string>{"layer1.0.scratch", "layer1.0.bn1.running_mean",
                                      "layer1.0.bn1.running_var", "layer1.0.bn1.num_batches_tracked",
                                      "layer1.1.scratch", "layer1.1.bn1.running_mean",
                                      "layer1.1.bn1.running_var", "layer1.1.bn1.num_batches_tracked"}));
  EXPECT_EQ(names_of(net->named_children()), (std::vector<std::string>{"stem", "layer1", "head"}));
  EXPECT_EQ(names_of(net->named_modules()),
            (std::vector<std::string>{"", "stem", "layer1", "layer1.0", "layer1.0.fc1", "layer1.0.bn1",
                                      "layer1.0.fc2", "layer1.1", "layer1.1.fc1", "layer1.1.bn1",
                                      "layer1.1.fc2", "head"}));
  EXPECT_EQ(net->modules().size(), 12u);
  EXPECT_EQ(net->modules()[0].get(), net.get());
  // name(): the dotted path in the tree; type_name(): the class.
  auto block1 = std::dynamic_pointer_cast<BlockImpl>(net->layer1[1]);
  ASSERT_TRUE(block1);
  EXPECT_EQ(block1->name(), "layer1.1");
  EXPECT_EQ(block1->fc2->name(), "layer1.1.fc2");
  EXPECT_EQ(block1->fc2->type_name(), "Linear");
  EXPECT_EQ(net->name(), "");
  net->set_name("net");
  EXPECT_EQ(block1->fc2->name(), "net.layer1.1.fc2");
  // Registered elsewhere later: the last registration names it.
  auto outer = std::make_shared<nn::Module>("Outer");
  outer->register_module("inner", net.ptr());
  EXPECT_EQ(block1->bn1->name(), "inner.layer1.1.bn1");
  // named_parameters is relative to the module it is called on.
  EXPECT_EQ(names_of(block1->named_parameters())[0], "fc1.weight");
}

TEST(Module, SharedTensorsAndModulesAppearOnce) {
  auto root = std::make_shared<nn::Module>("Root");
  nn::Linear shared(3, 3);
  root->register_module("a", shared);
  root->register_module("b", shared);
  root->register_parameter("tied", shared->weight);
  EXPECT_EQ(root->parameters().size(), 2u);  // weight and bias, once each
  EXPECT_EQ(names_of(root->named_parameters()), (std::vector<std::string>{"tied", "a.bias"}));
  EXPECT_EQ(root->modules().size(), 2u);
  // children() and named_children() list a module registered twice once, under its first name.
  ASSERT_EQ(root->children().size(), 1u);
  EXPECT_EQ(root->children()[0], shared.ptr());
  EXPECT_EQ(root->named_children().size(), 1u);
  EXPECT_EQ(root->named_children()[0].first, "a");
  EXPECT_EQ(root->num_parameters(), 12);
  // state_dict lists a shared tensor under every name, as PyTorch.
  const cg::StateDict sd = root->state_dict();
  EXPECT_EQ(sd.size(), 5u);
  EXPECT_TRUE(sd.at("a.weight").shares_storage(sd.at("b.weight")));
}

TEST(Module, RegistrationErrors) {
  nn::Module m("M");
  m.register_parameter("w", cg::zeros({2}));
  EXPECT_NE(error_message<cg::Error>([&] { m.register_buffer("w", cg::zeros({2})); }).find("already used by a parameter"),
            std::string::npos);
  EXPECT_NE(
      error_message<cg::Error>([&] { m.register_parameter("a.b", cg::zeros({2})); }).find("invalid parameter name 'a.b'"),
      std::string::npos);
  EXPECT_NE(error_message<cg::Error>([&] { m.register_parameter("", cg::zeros({2})); }).find("invalid"), std::string::npos);
  EXPECT_NE(error_message<cg::Error>([&] { m.register_module("w", std::make_shared<nn::Module>()); }).find("already used"),
            std::string::npos);
  const cg::Tensor leaf = cg::zeros({2}).requires_grad_();
  EXPECT_NE(error_message<cg::Error>([&] { m.register_parameter("p", leaf * 2.0); }).find("must be a leaf"),
            std::string::npos);
  EXPECT_NE(error_message<cg::Error>([&] { m.register_parameter("p", cg::arange(3)); }).find("floating"),
            std::string::npos);
  EXPECT_NE(error_message<cg::Error>([&] { m.register_buffer("b", leaf); }).find("must not require grad"),
            std::string::npos);
  EXPECT_NE(error_message<cg::Error>([&] { m.register_module("c", std::shared_ptr<nn::Module>()); }).find("empty module"),
            std::string::npos);
  // Re-registering a parameter replaces it in place (order kept).
  m.register_parameter("v", cg::ones({1}));
  m.register_parameter("w", cg::ones({3}));
  EXPECT_EQ(names_of(m.named_parameters()), (std::vector<std::string>{"w", "v"}));
  EXPECT_EQ(m.named_parameters()[0].second.numel(), 3);
  // A plain Module has no forward.
  EXPECT_NE(error_message<cg::Error>([&] { m(cg::zeros({1})); }).find("M: forward() is not implemented"),
            std::string::npos);
  // An empty holder is a clear error.
  nn::Linear empty = nullptr;
  EXPECT_TRUE(empty.is_empty());
  EXPECT_NE(error_message<cg::Error>([&] { empty->forward(cg::zeros({1})); }).find("empty module holder"),
            std::string::npos);
}

TEST(Module, TrainAndEvalRecurse) {
  Net net;
  for (const auto& m : net->modules()) EXPECT_TRUE(m->is_training());
  net->eval();
  for (const auto& m : net->modules()) EXPECT_FALSE(m->is_training()) << m->name();
  net->layer1->train();
  EXPECT_FALSE(net->is_training());
  EXPECT_TRUE(net->layer1[0]->is_training());
  EXPECT_FALSE(net->head->is_training());
  net->train(true);
  for (const auto& m : net->modules()) EXPECT_TRUE(m->is_training());
}

TEST(Module, FreezeRecordsNoNodesBelowTheLowestTrainableLayer) {
  cg::manual_seed(1);
  nn::Sequential model({nn::Linear(4, 8), nn::Tanh(), nn::Linear(8, 8), nn::ReLU(), nn::Linear(8, 2)});
  const cg::Tensor x = cg::randn({5, 4});
  model[0]->freeze();
  model[2]->freeze();
  for (const auto& p : model[0]->parameters()) EXPECT_FALSE(p.requires_grad());
  EXPECT_EQ(model->num_parameters(true), 18);
  EXPECT_EQ(model->num_parameters(), 40 + 72 + 18);
  const cg::Tensor y = model(x);
  y.sum().backward();
  const auto& executed = cg::autograd::last_backward_stats().executed;
  // Only the last Linear records a node (its input needs no grad); nothing below it runs.
  EXPECT_EQ(std::count(executed.begin(), executed.end(), "LinearBackward"), 1);
  EXPECT_EQ(std::count(executed.begin(), executed.end(), "TanhBackward"), 0);
  EXPECT_EQ(std::count(executed.begin(), executed.end(), "ReluBackward"), 0);
  EXPECT_FALSE(model[0]->parameters()[0].grad().defined());
  EXPECT_TRUE(model[4]->parameters()[0].grad().defined());
  // Everything frozen: no graph at all.
  model->freeze();
  EXPECT_FALSE(model(x).requires_grad());
  EXPECT_EQ(model->num_parameters(true), 0);
  model->unfreeze();
  EXPECT_TRUE(model(x).requires_grad());
}

TEST(Module, ZeroGradClearsOrZeroes) {
  nn::Linear fc(3, 2);
  fc(cg::randn({4, 3})).sum().backward();
  ASSERT_TRUE(fc->weight.grad().defined());
  fc->zero_grad(false);
  EXPECT_TRUE(all_equal(fc->weight.grad(), cg::zeros({2, 3})));
  fc->zero_grad();
  EXPECT_FALSE(fc->weight.grad().defined());
  EXPECT_FALSE(fc->bias.grad().defined());
}

TEST(Module, StateDictRoundTripInMemoryAndOnDisk) {
  cg::manual_seed(2);
  Net a;
  a(cg::randn({6, 3}));  // training step: running statistics move away from their initial values
  cg::manual_seed(3);
  Net b;
  const cg::StateDict sd = a->state_dict();
  std::vector<std::string> keys;
  for (const auto& [k, v] : sd) keys.push_back(k);
  EXPECT_EQ(keys.size(), 15u + 6u);  // parameters + persistent buffers (not "scratch")
  EXPECT_EQ(sd.count("layer1.0.scratch"), 0u);
  EXPECT_EQ(sd.at("layer1.0.bn1.num_batches_tracked").item<std::int64_t>(), 1);
  // state_dict shares memory with the module.
  EXPECT_TRUE(sd.at("head.weight").shares_storage(a->head->weight));

  const cg::Tensor x = cg::randn({5, 3});
  a->eval();
  b->eval();
  EXPECT_FALSE(all_close(a(x), b(x)));
  const std::string path = std::string(CUGRAD_TEST_TMP_DIR) + "/module_test_net.safetensors";
  cg::io::save_safetensors(a->state_dict(), path);
  const cg::Tensor before = b->head->weight;  // a handle taken before loading sees the values
  const auto result = b->load_state_dict(cg::io::load_safetensors(path));
  EXPECT_TRUE(result.missing_keys.empty());
  EXPECT_TRUE(result.unexpected_keys.empty());
  EXPECT_TRUE(all_equal(a(x), b(x)));
  EXPECT_TRUE(all_equal(before, a->head->weight));
  EXPECT_TRUE(b->head->weight.requires_grad());  // loading keeps parameters trainable leaves
  EXPECT_TRUE(b->head->weight.is_leaf());
  EXPECT_EQ(b->layer1[0]->named_buffers()[3].first, "bn1.num_batches_tracked");
  EXPECT_EQ(b->layer1[0]->named_buffers()[3].second.item<std::int64_t>(), 1);
}

TEST(Module, LoadStateDictErrorsNameTheKeysAndLoadNothing) {
  cg::manual_seed(4);
  nn::Sequential model({nn::Linear(3, 4), nn::BatchNorm1d(4)});
  cg::manual_seed(5);
  nn::Sequential other({nn::Linear(3, 4), nn::BatchNorm1d(4)});
  const cg::Tensor w0 = model[0]->parameters()[0].clone();

  cg::StateDict missing = other->state_dict();
  missing.erase("1.running_var");
  std::string m = error_message<cg::Error>([&] { model->load_state_dict(missing); });
  EXPECT_NE(m.find("missing key(s): '1.running_var'"), std::string::npos) << m;
  EXPECT_TRUE(all_equal(model[0]->parameters()[0], w0));  // nothing loaded

  cg::StateDict extra = other->state_dict();
  extra["2.weight"] = cg::zeros({1});
  m = error_message<cg::Error>([&] { model->load_state_dict(extra); });
  EXPECT_NE(m.find("unexpected key(s): '2.weight'"), std::string::npos) << m;

  cg::StateDict shape = other->state_dict();
  shape["0.weight"] = cg::zeros({4, 2});
  m = error_message<cg::Error>([&] { model->load_state_dict(shape, /*strict=*/false); });
  EXPECT_NE(m.find("'0.weight' has shape [4, 2] but the module's is [4, 3]"), std::string::npos) << m;
  EXPECT_TRUE(all_equal(model[0]->parameters()[0], w0));

  cg::StateDict dtype = other->state_dict();
  dtype["1.num_batches_tracked"] = cg::zeros({});
  m = error_message<cg::Error>([&] { model->load_state_dict(dtype); });
  EXPECT_NE(m.find("'1.num_batches_tracked' is float32 but the module's is int64"), std::string::npos) << m;

  // Several problems at once are all listed.
  missing["bogus"] = cg::zeros({1});
  m = error_message<cg::Error>([&] { model->load_state_dict(missing); });
  EXPECT_NE(m.find("missing key(s): '1.running_var'"), std::string::npos) << m;
  EXPECT_NE(m.find("unexpected key(s): 'bogus'"), std::string::npos) << m;

  // Non-strict: loads what matches and reports the rest.
  const auto r = model->load_state_dict(missing, /*strict=*/false);
  EXPECT_EQ(r.missing_keys, std::vector<std::string>{"1.running_var"});
  EXPECT_EQ(r.unexpected_keys, std::vector<std::string>{"bogus"});
  EXPECT_TRUE(all_equal(model[0]->parameters()[0], other[0]->parameters()[0]));
}

TEST(Module, ToFloat64KeepsParameterIdentityAndPassesGradcheck) {
  cg::manual_seed(6);
  nn::Sequential model({nn::Linear(3, 4), nn::Tanh(), nn::Linear(4, 2)});
  const cg::Tensor w = model[0]->parameters()[0];  // e.g. an optimizer's reference
  const cg::Tensor w32 = w.clone();
  model->to(cg::DType::float64);
  EXPECT_EQ(w.dtype(), cg::DType::float64);
  EXPECT_TRUE(w.requires_grad());
  EXPECT_TRUE(all_close(w, w32, {0, 0}));
  for (const auto& p : model->parameters()) EXPECT_EQ(p.dtype(), cg::DType::float64);
  const cg::Tensor x = cg::randn({5, 3}, cg::Device::cpu(), cg::DType::float64).requires_grad_();
  cg::TensorList inputs{x};
  for (const auto& p : model->parameters()) inputs.push_back(p);
  EXPECT_EQ(cg::autograd::gradcheck([&](const cg::TensorList& t) { return model(t[0]); }, inputs), "");
  // Gradients follow a dtype change too.
  model(x).sum().backward();
  model->to(cg::DType::float32);
  EXPECT_EQ(w.grad().dtype(), cg::DType::float32);
  EXPECT_EQ(model(cg::randn({2, 3})).dtype(), cg::DType::float32);
  EXPECT_NE(error_message<cg::Error>([&] { model->to(cg::DType::int64); }).find("float32 or float64"), std::string::npos);
}

TEST(Module, BatchNormBuffersConvertButTheCounterStaysInt64) {
  nn::BatchNorm2d bn(3);
  bn->to(cg::DType::float64);
  EXPECT_EQ(bn->running_mean.dtype(), cg::DType::float64);
  EXPECT_EQ(bn->num_batches_tracked.dtype(), cg::DType::int64);
  bn(cg::randn({2, 3, 2, 2}, cg::Device::cpu(), cg::DType::float64));
  EXPECT_EQ(bn->num_batches_tracked.item<std::int64_t>(), 1);
}

TEST(Module, DeviceMoveIsAtomic) {
  // float64 cannot go to CUDA: the move is refused before anything moves (no GPU needed).
  nn::Sequential model({nn::Linear(2, 2), nn::Linear(2, 2)});
  model->to(cg::DType::float64);
  const std::string m = error_message<cg::Error>([&] { model->to(cg::Device::cuda(0)); });
  EXPECT_NE(m.find("'0.weight' is float64, which lives on the CPU only"), std::string::npos) << m;
  for (const auto& p : model->parameters()) EXPECT_TRUE(p.device().is_cpu());
  model->to(cg::Device::cpu());  // already there: nothing to do
  EXPECT_EQ(model->parameters()[0].dtype(), cg::DType::float64);
}

TEST(Module, PrintsLikePyTorchWithParameterCounts) {
  nn::Sequential model(
      {nn::Linear(4, 8), nn::BatchNorm1d(8), nn::ReLU(), nn::LeakyReLU(0.2), nn::Sigmoid(), nn::Tanh(),
       nn::Flatten(), nn::Dropout(0.3), nn::Identity(),
       nn::BatchNorm2d(3, {.momentum = std::nullopt, .affine = false, .track_running_stats = false}),
       nn::Linear(2, 3, false), nn::Sequential({nn::Linear(1, 1)})});
  model[3]->freeze();  // no parameters: no effect on the counts
  model[10]->freeze();
  // PyTorch 1.13 prints the same tree (Dropout without its inplace flag, which cugrad lacks).
  const std::string expected =
      "Sequential(\n"
      "  (0): Linear(in_features=4, out_features=8, bias=True)\n"
      "  (1): BatchNorm1d(8, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)\n"
      "  (2): ReLU()\n"
      "  (3): LeakyReLU(negative_slope=0.2)\n"
      "  (4): Sigmoid()\n"
      "  (5): Tanh()\n"
      "  (6): Flatten(start_dim=1, end_dim=-1)\n"
      "  (7): Dropout(p=0.3)\n"
      "  (8): Identity()\n"
      "  (9): BatchNorm2d(3, eps=1e-05, momentum=None, affine=False, track_running_stats=False)\n"
      "  (10): Linear(in_features=2, out_features=3, bias=False)\n"
      "  (11): Sequential(\n"
      "    (0): Linear(in_features=1, out_features=1, bias=True)\n"
      "  )\n"
      ")\n"
      "Parameters: 64 (58 trainable)";
  EXPECT_EQ(model->to_string(), expected);
  std::ostringstream os;
  os << model;
  EXPECT_EQ(os.str(), expected);
  EXPECT_EQ(nn::ReLU()->to_string(), "ReLU()\nParameters: 0 (0 trainable)");
}

TEST(Module, ParameterTableCountsEachSubtree) {
  nn::Sequential model(
      {nn::Linear(4, 8), nn::ReLU(), nn::Sequential({nn::Linear(8, 2), nn::BatchNorm1d(2)})});
  model[0]->freeze();
  const std::string expected =
      "module  type         parameters  trainable\n"
      "(root)  Sequential           62         22\n"
      "0       Linear               40          0\n"
      "1       ReLU                  0          0\n"
      "2       Sequential           22         22\n"
      "2.0     Linear               18         18\n"
      "2.1     BatchNorm1d           4          4";
  EXPECT_EQ(model->parameter_table(), expected);
  // A module registered twice is listed once and its tensors counted once.
  auto root = std::make_shared<nn::Module>("Root");
  nn::Linear shared(3, 3);
  root->register_module("a", shared);
  root->register_module("b", shared);
  EXPECT_EQ(root->parameter_table(),
            "module  type    parameters  trainable\n"
            "(root)  Root            12         12\n"
            "a       Linear          12         12");
}

TEST(Module, HolderApi) {
  cg::manual_seed(7);
  // DESIGN.md's sketch.
  auto model = nn::Sequential({nn::Linear(4, 8), nn::ReLU(), nn::Linear(8, 2)});
  model->to(cg::Device::cpu());
  const cg::Tensor x = cg::randn({3, 4});
  const cg::Tensor y = model->forward(x);
  EXPECT_EQ(y.shape(), (cg::Shape{3, 2}));
  EXPECT_TRUE(all_equal(model(x), y));
  EXPECT_EQ(model->size(), 3u);
  EXPECT_EQ(model[1]->type_name(), "ReLU");
  EXPECT_NE(error_message<cg::Error>([&] { (void)model[3]; }).find("index 3 is out of range"), std::string::npos);
  model->push_back(nn::Sigmoid());
  model->push_back(std::make_shared<nn::IdentityImpl>());
  EXPECT_EQ(model[4]->name(), "4");
  std::size_t count = 0;
  for (const auto& m : *model) count += m != nullptr;
  EXPECT_EQ(count, 5u);
  // Conversions: holder -> shared_ptr<Module>, ptr(), operator*, and wrapping an existing impl.
  nn::Linear fc(2, 3);
  std::shared_ptr<nn::Module> base = fc;
  EXPECT_EQ(base.get(), fc.get());
  EXPECT_EQ(fc.ptr()->out_features, 3);
  EXPECT_EQ((*fc).in_features, 2);
  nn::Linear again(fc.ptr());
  EXPECT_EQ(again.get(), fc.get());
  nn::Sequential empty;
  EXPECT_EQ(empty->size(), 0u);
  EXPECT_TRUE(all_equal(empty(x), x));  // an empty Sequential is the identity
  // register_module returns the typed child.
  nn::Module root;
  std::shared_ptr<nn::LinearImpl> typed = root.register_module("fc", std::make_shared<nn::LinearImpl>(1, 1));
  EXPECT_EQ(typed->name(), "fc");
  nn::Tanh t = root.register_module("t", nn::Tanh());
  EXPECT_EQ(t->name(), "t");
}

// ---- GPU ----

TEST(ModuleGPU, ToCudaBeforeTheOptimizerTrains) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(8);
  const cg::Device dev = cg::Device::cuda(0);
  auto model = nn::Sequential({nn::Linear(4, 8), nn::BatchNorm1d(8), nn::ReLU(), nn::Linear(8, 2)});
  const cg::Tensor w = model[0]->parameters()[0];
  model->to(dev);
  EXPECT_TRUE(w.is_cuda());  // moved in place: earlier handles see the device copy
  for (const auto& t : model->buffers()) EXPECT_TRUE(t.is_cuda());
  cg::optim::SGD opt(model->parameters(), {.lr = 0.1, .momentum = 0.9});
  const cg::Tensor x = cg::randn({16, 4}, dev), target = cg::randint(0, 2, {16}, dev);
  float first = 0, last = 0;
  for (int step = 0; step < 20; ++step) {
    const cg::Tensor loss = cg::nn::functional::cross_entropy(model(x), target);
    opt.zero_grad();
    loss.backward();
    opt.step();
    (step == 0 ? first : last) = loss.item<float>();
  }
  EXPECT_LT(last, first);
  EXPECT_TRUE(w.is_cuda());
  // And back to the CPU with the gradients.
  model->to(cg::Device::cpu());
  EXPECT_TRUE(w.device().is_cpu());
  EXPECT_TRUE(w.grad().device().is_cpu());
}
