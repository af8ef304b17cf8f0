// optim::SGD: PyTorch's golden file (every config, float32 and float64) on the CPU and the GPU,
// hand-computed steps, skipped parameters, zero_grad, schedules changing lr and momentum,
// state_dict round trips and errors, option and parameter errors, and (GPU suites) the
// multi-tensor CUDA kernel against the float64 CPU reference at awkward sizes, misaligned
// views, ResNet-18's 62 shapes and every option combination, with the launch count checked.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <map>
#include <regex>
#include <string>
#include <vector>

#include "cuda/sgd.h"
#include "cugrad/cugrad.h"
#include "cugrad/optim.h"
#include "host/cpu/sgd.h"
#include "tests/optim/twin.h"
#include "tests/support/gpu.h"
#include "tests/support/parity.h"

namespace cg = cugrad;
using cg::optim::SGD;
using cg::optim::SGDOptions;
using cg::testing::all_close;
using cg::testing::all_equal;
using cg::testing::leaf;
using cg::testing::make_twin;
using cg::testing::norm_close;
using cg::testing::Twin;

namespace {

const cg::Device kCpu = cg::Device::cpu();
const cg::Device kCuda = cg::Device::cuda(0);

std::string message_of(const std::function<void()>& f) { return cg::testing::value_error_message(f); }

// The error names the optimizer (or its method) and contains `what`.
::testing::AssertionResult fails_with(const std::function<void()>& f, const std::string& what) {
  const std::string m = message_of(f);
  if (m.find("SGD") != std::string::npos && m.find(what) != std::string::npos &&
      m.find("(not a") == std::string::npos)
    return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "expected a ValueError naming SGD and containing '" << what << "', got '" << m << "'";
}

std::string describe_options(const SGDOptions& o) {
  return cg::detail::cat("{lr ", o.lr, ", momentum ", o.momentum, ", dampening ", o.dampening,
                         ", weight_decay ", o.weight_decay, ", nesterov ", o.nesterov, ", maximize ",
                         o.maximize, "}");
}

cg::Tensor f64(const std::vector<double>& v, const cg::Shape& s) { return cg::from_vector(v, s); }

// ---- the golden file ----

struct Golden {
  std::map<std::string, cg::Tensor> t;
  std::vector<SGDOptions> configs;
  int steps = 0;
  int params = 3;
};

// The metadata's configs: a JSON list of flat objects of PyTorch SGD keyword arguments.
std::vector<SGDOptions> parse_configs(const std::string& json) {
  std::vector<SGDOptions> out;
  const std::regex object(R"(\{([^}]*)\})"), field(R"re("(\w+)"\s*:\s*([^,}\s]+))re");
  for (auto o = std::sregex_iterator(json.begin(), json.end(), object); o != std::sregex_iterator(); ++o) {
    SGDOptions opt;
    const std::string body = (*o)[1];
    for (auto f = std::sregex_iterator(body.begin(), body.end(), field); f != std::sregex_iterator(); ++f) {
      const std::string key = (*f)[1], value = (*f)[2];
      const auto number = [&] { return std::stod(value); };
      const auto boolean = [&] {
        EXPECT_TRUE(value == "true" || value == "false") << key << ": " << value;
        return value == "true";
      };
      if (key == "lr")
        opt.lr = number();
      else if (key == "momentum")
        opt.momentum = number();
      else if (key == "dampening")
        opt.dampening = number();
      else if (key == "weight_decay")
        opt.weight_decay = number();
      else if (key == "nesterov")
        opt.nesterov = boolean();
      else if (key == "maximize")
        opt.maximize = boolean();
      else
        ADD_FAILURE() << "unknown SGD argument in the golden file: " << key;
    }
    out.push_back(opt);
  }
  return out;
}

const Golden& golden() {
  static const Golden g = [] {
    Golden r;
    auto f = cg::io::read_safetensors(std::string(CUGRAD_GOLDEN_DIR) + "/sgd.safetensors");
    r.t = std::move(f.tensors);
    r.configs = parse_configs(f.metadata.at("configs"));
    r.steps = std::stoi(f.metadata.at("steps"));
    return r;
  }();
  return g;
}

cg::Tensor gt(const std::string& name) {
  const auto& t = golden().t;
  const auto it = t.find(name);
  if (it == t.end()) throw std::runtime_error("golden file lacks " + name);
  return it->second;
}

std::string pname(int c, int i, int s) { return cg::detail::cat("cfg", c, "_p", i, "_step", s); }
std::string gname(int i, int s) { return cg::detail::cat("g", i, "_step", s); }

// Runs every golden config with parameters of `dtype` on `device`; compares every step.
void check_golden(cg::Device device, cg::DType dtype, double rtol, double atol) {
  const Golden& g = golden();
  ASSERT_EQ(g.configs.size(), 4u);
  ASSERT_EQ(g.steps, 5);
  for (std::size_t c = 0; c < g.configs.size(); ++c) {
    SCOPED_TRACE("config " + std::to_string(c) + " " + describe_options(g.configs[c]));
    cg::TensorList params;
    for (int i = 0; i < g.params; ++i)
      params.push_back(leaf(gt(cg::detail::cat("p", i, "_init")).to(dtype).to(device).clone()));
    SGD opt(params, g.configs[c]);
    for (int s = 0; s < g.steps; ++s) {
      std::vector<cg::Tensor> grads, snapshots;
      for (int i = 0; i < g.params; ++i) {
        grads.push_back(gt(gname(i, s)).to(dtype).to(device));
        snapshots.push_back(grads.back().clone());
        params[i].set_grad(grads.back());
      }
      opt.step();
      for (int i = 0; i < g.params; ++i) {
        SCOPED_TRACE(pname(static_cast<int>(c), i, s));
        const cg::Tensor expected = gt(pname(static_cast<int>(c), i, s));
        EXPECT_TRUE(all_close(params[i], expected, {atol, rtol}));
        EXPECT_TRUE(norm_close(params[i], expected, rtol));
        // Gradients are only read.
        EXPECT_TRUE(all_equal(grads[i], snapshots[i]));
      }
    }
  }
}

// ---- an independent reference (double, written here from PyTorch's documentation) ----

struct RefState {
  std::vector<double> p, buf;
  bool has_buf = false;
};

void ref_step(RefState& r, const std::vector<double>& grad, const SGDOptions& o) {
  std::vector<double> g = grad;
  for (std::size_t k = 0; k < g.size(); ++k) {
    if (o.maximize) g[k] = -g[k];
    if (o.weight_decay != 0) g[k] += o.weight_decay * r.p[k];
  }
  std::vector<double> d = g;
  if (o.momentum != 0) {
    if (!r.has_buf) {
      r.buf = g;
      r.has_buf = true;
    } else {
      for (std::size_t k = 0; k < g.size(); ++k) r.buf[k] = o.momentum * r.buf[k] + (1 - o.dampening) * g[k];
    }
    for (std::size_t k = 0; k < g.size(); ++k) d[k] = o.nesterov ? g[k] + o.momentum * r.buf[k] : r.buf[k];
  }
  for (std::size_t k = 0; k < g.size(); ++k) r.p[k] -= o.lr * d[k];
}

std::vector<double> values(const cg::Tensor& t) { return t.cpu().to(cg::DType::float64).to_vector<double>(); }

::testing::AssertionResult near_values(const std::vector<double>& actual, const std::vector<double>& expected,
                                       double tol) {
  if (actual.size() != expected.size())
    return ::testing::AssertionFailure() << "size " << actual.size() << " vs " << expected.size();
  for (std::size_t k = 0; k < actual.size(); ++k)
    if (!(std::fabs(actual[k] - expected[k]) <= tol * (1 + std::fabs(expected[k]))))
      return ::testing::AssertionFailure() << "element " << k << ": " << actual[k] << " vs " << expected[k];
  return ::testing::AssertionSuccess();
}

// ResNet-18's parameters in torchvision order (62 tensors), from the model builder.
std::vector<cg::Shape> resnet18_parameter_shapes() {
  std::vector<cg::Shape> s;
  for (const cg::Tensor& p : cg::nn::resnet18()->parameters()) s.push_back(p.shape());
  return s;
}

}  // namespace

// ============================== CPU ==============================

TEST(SGD, GoldenConfigsAreTheExpectedOnes) {
  const auto& c = golden().configs;
  ASSERT_EQ(c.size(), 4u);
  EXPECT_EQ(c[0].lr, 0.1);
  EXPECT_EQ(c[0].momentum, 0.9);
  EXPECT_TRUE(c[0].nesterov);
  EXPECT_EQ(c[0].weight_decay, 5e-4);
  EXPECT_EQ(c[1].dampening, 0.1);
  EXPECT_EQ(c[1].weight_decay, 0.01);
  EXPECT_EQ(c[2].momentum, 0.0);
  EXPECT_TRUE(c[3].maximize);
  EXPECT_TRUE(c[3].nesterov);
  EXPECT_EQ(c[3].momentum, 0.5);
}

TEST(SGD, GoldenFileFloat32) { check_golden(kCpu, cg::DType::float32, 1e-5, 1e-6); }

TEST(SGD, GoldenFileFloat64) { check_golden(kCpu, cg::DType::float64, 1e-12, 1e-13); }

TEST(SGD, HandComputedTwoSteps) {
  // lr 0.1, momentum 0.9, dampening 0.5, weight decay 0.1; p = [1, -2]:
  //  step 1, g = [0.5, 1]: g' = g + 0.1p = [0.6, 0.8]; buf = g' (no dampening on the first
  //          step); p = p - 0.1 buf = [0.94, -2.08]
  //  step 2, g = [-1, 2]: g' = [-0.906, 1.792]; buf = 0.9 [0.6, 0.8] + 0.5 g' = [0.087, 1.616];
  //          p = [0.9313, -2.2416]
  // lr 0.1, momentum 0.5, Nesterov, maximize; p = [1, -2]:
  //  step 1: g' = -g = [-0.5, -1]; buf = [-0.5, -1]; d = g' + 0.5 buf = [-0.75, -1.5];
  //          p = [1.075, -1.85]
  //  step 2: g' = [1, -2]; buf = 0.5 buf + g' = [0.75, -2.5]; d = [1.375, -3.25]; p = [0.9375, -1.525]
  struct Case {
    SGDOptions options;
    std::vector<double> p1, buf1, p2, buf2;
  };
  const Case cases[] = {
      {{.lr = 0.1, .momentum = 0.9, .dampening = 0.5, .weight_decay = 0.1},
       {0.94, -2.08},
       {0.6, 0.8},
       {0.9313, -2.2416},
       {0.087, 1.616}},
      {{.lr = 0.1, .momentum = 0.5, .nesterov = true, .maximize = true},
       {1.075, -1.85},
       {-0.5, -1.0},
       {0.9375, -1.525},
       {0.75, -2.5}},
  };
  for (const auto dtype : {cg::DType::float64, cg::DType::float32}) {
    const double tol = dtype == cg::DType::float64 ? 1e-14 : 1e-6;
    for (const Case& c : cases) {
      SCOPED_TRACE(describe_options(c.options) + (dtype == cg::DType::float64 ? " float64" : " float32"));
      cg::Tensor p = leaf(f64({1, -2}, {2}).to(dtype));
      SGD opt({p}, c.options);
      p.set_grad(f64({0.5, 1}, {2}).to(dtype));
      opt.step();
      EXPECT_TRUE(near_values(values(p), c.p1, tol));
      EXPECT_TRUE(near_values(values(opt.momentum_buffer(0)), c.buf1, tol));
      EXPECT_EQ(opt.momentum_buffer(0).dtype(), dtype);
      p.set_grad(f64({-1, 2}, {2}).to(dtype));
      opt.step();
      EXPECT_TRUE(near_values(values(p), c.p2, tol));
      EXPECT_TRUE(near_values(values(opt.momentum_buffer(0)), c.buf2, tol));
    }
  }
}

TEST(SGD, PlainSgdHasNoBuffers) {
  cg::Tensor p = leaf(f64({1, 2, 3}, {3}));
  SGD opt({p}, {.lr = 0.5});
  p.set_grad(f64({1, -1, 2}, {3}));
  opt.step();
  EXPECT_TRUE(near_values(values(p), {0.5, 2.5, 2.0}, 1e-15));
  EXPECT_FALSE(opt.momentum_buffer(0).defined());
  EXPECT_EQ(opt.state_dict().count("momentum_buffer.0"), 0u);
}

TEST(SGD, ParametersWithoutGradientsAreSkipped) {
  cg::manual_seed(3);
  const SGDOptions o{.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01};
  cg::TensorList params = {leaf(cg::randn({4, 3}, kCpu, cg::DType::float64)),
                           leaf(cg::randn({5}, kCpu, cg::DType::float64)),
                           leaf(cg::randn({2, 2}, kCpu, cg::DType::float64))};
  // A frozen parameter is accepted (as in PyTorch) and, having no gradient, never moves.
  cg::Tensor frozen = cg::randn({3}, kCpu, cg::DType::float64);
  params.push_back(frozen);
  std::vector<RefState> ref(params.size());
  for (std::size_t i = 0; i < params.size(); ++i) ref[i].p = values(params[i]);
  SGD opt(params, o);
  const cg::Tensor before1 = params[1].clone();
  for (int step = 0; step < 4; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    for (std::size_t i = 0; i < 3; ++i) {
      // Parameter 1 gets its first gradient at step 2: its buffer starts then (buf = g).
      if (i == 1 && step < 2) continue;
      const cg::Tensor g = cg::randn(params[i].shape(), kCpu, cg::DType::float64);
      params[i].set_grad(g);
      ref_step(ref[i], values(g), o);
    }
    const std::uint64_t v1 = params[1].version(), v3 = frozen.version();
    opt.step();
    for (std::size_t i = 0; i < params.size(); ++i)
      EXPECT_TRUE(near_values(values(params[i]), ref[i].p, 1e-14)) << i;
    if (step < 2) {
      EXPECT_TRUE(all_equal(params[1], before1));
      EXPECT_EQ(params[1].version(), v1);
      EXPECT_FALSE(opt.momentum_buffer(1).defined());
      EXPECT_EQ(opt.state_dict().count("momentum_buffer.1"), 0u);
    } else {
      EXPECT_TRUE(near_values(values(opt.momentum_buffer(1)), ref[1].buf, 1e-14));
    }
    EXPECT_EQ(frozen.version(), v3);
    EXPECT_FALSE(opt.momentum_buffer(3).defined());
    // Gradients persist between steps (nothing clears them but zero_grad).
    EXPECT_TRUE(params[0].grad().defined());
  }
  const auto has = opt.state_dict().at("has_momentum_buffer").to_vector<std::uint8_t>();
  EXPECT_EQ(has, (std::vector<std::uint8_t>{1, 1, 1, 0}));
}

TEST(SGD, ZeroGrad) {
  cg::Tensor a = leaf(f64({1, 2}, {2})), b = leaf(f64({3}, {1})), c = leaf(f64({4, 5, 6}, {3}));
  SGD opt({a, b, c}, {.lr = 0.1});
  const cg::Tensor ga = f64({1, 1}, {2}), gb = f64({2}, {1});
  a.set_grad(ga);
  b.set_grad(gb);
  opt.zero_grad(false);
  // Filled with zeros in place: the same storage, and c (no gradient) still has none.
  ASSERT_TRUE(a.grad().defined());
  EXPECT_TRUE(a.grad().shares_storage(ga));
  EXPECT_EQ(values(ga), (std::vector<double>{0, 0}));
  EXPECT_EQ(values(gb), (std::vector<double>{0}));
  EXPECT_FALSE(c.grad().defined());
  // A step on zero gradients (no weight decay, no momentum) leaves the parameters alone.
  opt.step();
  EXPECT_EQ(values(a), (std::vector<double>{1, 2}));
  opt.zero_grad();  // set_to_none
  EXPECT_FALSE(a.grad().defined());
  EXPECT_FALSE(b.grad().defined());
  // Now step() skips every parameter, even with weight decay that would move them.
  SGD decaying({a, b, c}, {.lr = 0.1, .weight_decay = 0.5});
  decaying.step();
  EXPECT_EQ(values(a), (std::vector<double>{1, 2}));
  EXPECT_EQ(values(c), (std::vector<double>{4, 5, 6}));
}

TEST(SGD, LrAndMomentumChangedBetweenSteps) {
  cg::manual_seed(5);
  // Momentum 0 at the first step (no buffer yet), then on, off (buffers kept, untouched) and
  // on again (resuming from the kept buffer), as in PyTorch.
  const double lrs[] = {0.1, 0.05, 0.2, 0.01, 0.1, 0.3};
  const double momenta[] = {0.0, 0.9, 0.85, 0.0, 0.95, 0.5};
  SGDOptions o{.lr = 1.0, .momentum = 0.0, .dampening = 0.1, .weight_decay = 1e-2};
  cg::TensorList params = {leaf(cg::randn({7}, kCpu, cg::DType::float64)),
                           leaf(cg::randn({2, 3}, kCpu, cg::DType::float64))};
  std::vector<RefState> ref(2);
  for (int i = 0; i < 2; ++i) ref[i].p = values(params[i]);
  SGD opt(params, o);
  for (int s = 0; s < 6; ++s) {
    SCOPED_TRACE("step " + std::to_string(s));
    opt.set_lr(lrs[s]);
    opt.set_momentum(momenta[s]);
    EXPECT_EQ(opt.lr(), lrs[s]);
    EXPECT_EQ(opt.momentum(), momenta[s]);
    EXPECT_EQ(opt.options().momentum, momenta[s]);
    o.lr = lrs[s];
    o.momentum = momenta[s];
    std::vector<double> buf_before;
    if (opt.momentum_buffer(0).defined()) buf_before = values(opt.momentum_buffer(0));
    for (int i = 0; i < 2; ++i) {
      const cg::Tensor g = cg::randn(params[i].shape(), kCpu, cg::DType::float64);
      params[i].set_grad(g);
      ref_step(ref[i], values(g), o);
    }
    opt.step();
    for (int i = 0; i < 2; ++i) {
      EXPECT_TRUE(near_values(values(params[i]), ref[i].p, 1e-14)) << i;
      EXPECT_EQ(opt.momentum_buffer(i).defined(), ref[i].has_buf) << i;
      if (ref[i].has_buf) {
        EXPECT_TRUE(near_values(values(opt.momentum_buffer(i)), ref[i].buf, 1e-14)) << i;
      }
    }
    if (momenta[s] == 0 && !buf_before.empty()) {
      EXPECT_EQ(values(opt.momentum_buffer(0)), buf_before);
    }
  }
}

TEST(SGD, StepDoesNotRecordAndBumpsVersions) {
  cg::Tensor p = leaf(cg::randn({10}));
  SGD opt({p}, {.lr = 0.1, .momentum = 0.9});
  p.set_grad(cg::ones({10}));
  ASSERT_TRUE(cg::is_grad_enabled());
  const std::uint64_t v = p.version();
  opt.step();  // grad mode on: the update is still not recorded (and not an in-place error)
  EXPECT_TRUE(cg::is_grad_enabled());
  EXPECT_TRUE(p.is_leaf());
  EXPECT_TRUE(p.requires_grad());
  EXPECT_EQ(p.grad_fn_name(), "");
  EXPECT_GT(p.version(), v);
  const cg::Tensor buf = opt.momentum_buffer(0);
  EXPECT_FALSE(buf.requires_grad());
  const std::uint64_t vb = buf.version();
  opt.step();
  EXPECT_GT(buf.version(), vb);
  // A tensor saved for backward before the step is now stale: backward reports it.
  cg::Tensor y = (p * p).sum();
  opt.step();
  EXPECT_THROW(y.backward(), cg::Error);
}

TEST(SGD, ParametersMayBeDisjointViewsOfOneStorage) {
  // An arena: the parameters are views (one of them at an odd offset).
  cg::Tensor arena = cg::zeros({10}, kCpu, cg::DType::float64);
  cg::Tensor a = leaf(arena.narrow(0, 0, 3)), b = leaf(arena.narrow(0, 3, 7).reshape({7}));
  a.requires_grad_(true);
  SGD opt({b, a}, {.lr = 1.0});
  a.set_grad(f64({1, 2, 3}, {3}));
  b.set_grad(cg::full({7}, 0.5, kCpu, cg::DType::float64));
  opt.step();
  EXPECT_EQ(values(arena), (std::vector<double>{-1, -2, -3, -0.5, -0.5, -0.5, -0.5, -0.5, -0.5, -0.5}));
}

TEST(SGD, OptionErrors) {
  const auto make = [](SGDOptions o) { return [o] { SGD opt({leaf(cg::zeros({2}))}, o); }; };
  EXPECT_TRUE(fails_with(make({.lr = -0.1}), "invalid learning rate"));
  EXPECT_TRUE(fails_with(make({.lr = std::nan("")}), "invalid learning rate"));
  EXPECT_TRUE(fails_with(make({.lr = INFINITY}), "invalid learning rate"));
  EXPECT_TRUE(fails_with(make({.lr = 0.1, .momentum = -0.5}), "invalid momentum"));
  EXPECT_TRUE(fails_with(make({.lr = 0.1, .momentum = 0.9, .dampening = NAN}), "invalid dampening"));
  EXPECT_TRUE(fails_with(make({.lr = 0.1, .weight_decay = -1e-4}), "invalid weight_decay"));
  EXPECT_TRUE(fails_with(make({.lr = 0.1, .nesterov = true}), "Nesterov momentum requires"));
  EXPECT_TRUE(fails_with(make({.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .nesterov = true}),
                         "Nesterov momentum requires"));
  EXPECT_EQ(message_of(make({.lr = 0.0})), "");  // lr 0 is allowed, as in PyTorch
  EXPECT_EQ(message_of(make({.lr = 0.1, .momentum = 0.9, .dampening = -0.5})),
            "");  // PyTorch does not bound it

  SGD opt({leaf(cg::zeros({2}))}, {.lr = 0.1, .momentum = 0.9, .nesterov = true});
  EXPECT_TRUE(fails_with([&] { opt.set_lr(-1); }, "SGD.set_lr: invalid learning rate"));
  EXPECT_TRUE(fails_with([&] { opt.set_lr(NAN); }, "invalid learning rate"));
  EXPECT_TRUE(fails_with([&] { opt.set_momentum(-0.1); }, "SGD.set_momentum: invalid momentum"));
  EXPECT_TRUE(fails_with([&] { opt.set_momentum(0); }, "Nesterov momentum requires"));
  // A rejected value changes nothing.
  EXPECT_EQ(opt.lr(), 0.1);
  EXPECT_EQ(opt.momentum(), 0.9);
  EXPECT_TRUE(fails_with([&] { (void)opt.momentum_buffer(1); }, "out of range"));
}

TEST(SGD, ParameterErrors) {
  EXPECT_TRUE(fails_with([] { SGD opt({}, {}); }, "empty parameter list"));
  EXPECT_TRUE(fails_with(
      [] {
        SGD opt({leaf(cg::zeros({2})), cg::Tensor()}, {});
      },
      "parameter 1 is an undefined"));
  EXPECT_TRUE(fails_with([] { SGD opt({cg::zeros({2}, kCpu, cg::DType::int64)}, {}); }, "floating-point"));
  EXPECT_TRUE(fails_with(
      [] {
        cg::Tensor x = leaf(cg::zeros({2}));
        SGD opt({x * 2.0}, {});
      },
      "not a leaf"));
  cg::Tensor arena = cg::zeros({10});
  const cg::Tensor a = arena.narrow(0, 0, 5), b = arena.narrow(0, 3, 5), c = arena.narrow(0, 5, 5);
  EXPECT_TRUE(fails_with([&] { SGD opt({a, b}, {}); }, "parameters 0 and 1 overlap"));
  EXPECT_TRUE(fails_with([&] { SGD opt({c, a, c}, {}); }, "listed twice"));
  EXPECT_EQ(message_of([&] { SGD opt({a, c}, {}); }), "");
  // A gradient that is the parameter itself would be read while it is written.
  cg::Tensor p = leaf(cg::ones({3}));
  SGD opt({p}, {.lr = 0.1});
  p.set_grad(p.detach());
  EXPECT_TRUE(fails_with([&] { opt.step(); }, "overlaps"));
}

namespace {

// Three parameters after two steps; parameter 1 never had a gradient.
struct Trained {
  cg::TensorList params;
  std::unique_ptr<SGD> opt;
};

Trained trained(cg::Device device = kCpu) {
  cg::manual_seed(11);
  Trained t;
  t.params = {leaf(cg::randn({3, 4}, device)), leaf(cg::randn({5}, device)), leaf(cg::randn({2, 3}, device))};
  t.opt = std::make_unique<SGD>(
      t.params,
      SGDOptions{.lr = 0.05, .momentum = 0.9, .dampening = 0.2, .weight_decay = 1e-3, .maximize = true});
  for (int s = 0; s < 2; ++s) {
    t.params[0].set_grad(cg::randn({3, 4}, device));
    t.params[2].set_grad(cg::randn({2, 3}, device));
    t.opt->step();
  }
  return t;
}

}  // namespace

TEST(SGD, StateDictContents) {
  Trained t = trained();
  const cg::StateDict s = t.opt->state_dict();
  EXPECT_EQ(s.size(), 9u);  // 2 buffers, the flags, 6 options
  EXPECT_EQ(s.at("has_momentum_buffer").to_vector<std::uint8_t>(), (std::vector<std::uint8_t>{1, 0, 1}));
  EXPECT_EQ(s.count("momentum_buffer.1"), 0u);
  EXPECT_EQ(s.at("momentum_buffer.0").shape(), (cg::Shape{3, 4}));
  EXPECT_TRUE(s.at("momentum_buffer.0").shares_storage(t.opt->momentum_buffer(0)));  // aliases, as PyTorch
  EXPECT_EQ(s.at("options.lr").item<double>(), 0.05);
  EXPECT_EQ(s.at("options.momentum").item<double>(), 0.9);
  EXPECT_EQ(s.at("options.dampening").item<double>(), 0.2);
  EXPECT_EQ(s.at("options.weight_decay").item<double>(), 1e-3);
  EXPECT_EQ(s.at("options.nesterov").item<double>(), 0.0);
  EXPECT_EQ(s.at("options.maximize").item<double>(), 1.0);
  EXPECT_EQ(s.at("options.lr").dim(), 0);
}

TEST(SGD, StateDictRoundTripThroughAFileContinuesIdentically) {
  Trained a = trained();
  const std::string path = std::string(CUGRAD_TEST_TMP_DIR) + "/sgd_state.safetensors";
  cg::io::save_safetensors(a.opt->state_dict(), path);
  // A fresh optimizer over copies of the parameters, made with other options.
  cg::TensorList params;
  for (const auto& p : a.params) params.push_back(leaf(p.clone()));
  SGD b(params, {.lr = 0.5});
  b.load_state_dict(cg::io::load_safetensors(path));
  EXPECT_EQ(b.lr(), 0.05);
  EXPECT_EQ(b.options().dampening, 0.2);
  EXPECT_TRUE(b.options().maximize);
  EXPECT_FALSE(b.momentum_buffer(1).defined());
  for (int s = 0; s < 3; ++s) {
    for (int i : {0, 1, 2}) {
      const cg::Tensor g = cg::randn(params[i].shape());
      a.params[i].set_grad(g);
      params[i].set_grad(g.clone());
    }
    a.opt->step();
    b.step();
    for (int i : {0, 1, 2}) {
      EXPECT_TRUE(all_equal(params[i], a.params[i])) << "step " << s << " parameter " << i;
      if (i != 1 || s > 0) {
        EXPECT_TRUE(all_equal(b.momentum_buffer(i), a.opt->momentum_buffer(i))) << i;
      }
    }
  }
}

TEST(SGD, LoadedBuffersAreCopiesNotAliases) {
  Trained a = trained();
  cg::TensorList params;
  for (const auto& p : a.params) params.push_back(leaf(p.clone()));
  SGD b(params, {});
  b.load_state_dict(a.opt->state_dict());  // in memory: the entries alias a's live buffers
  EXPECT_FALSE(b.momentum_buffer(0).shares_storage(a.opt->momentum_buffer(0)));
  const std::vector<double> before = values(b.momentum_buffer(0));
  a.params[0].set_grad(cg::ones({3, 4}));
  a.opt->step();
  EXPECT_EQ(values(b.momentum_buffer(0)), before);
  // Loading converts dtypes: a float64 state into float32 parameters.
  cg::StateDict s = a.opt->state_dict();
  s["momentum_buffer.0"] = s.at("momentum_buffer.0").to(cg::DType::float64);
  b.load_state_dict(s);
  EXPECT_EQ(b.momentum_buffer(0).dtype(), cg::DType::float32);
  EXPECT_TRUE(all_equal(b.momentum_buffer(0), a.opt->momentum_buffer(0)));
}

TEST(SGD, LoadStateDictErrors) {
  Trained a = trained();
  const cg::StateDict good = a.opt->state_dict();
  cg::TensorList params;
  for (const auto& p : a.params) params.push_back(leaf(p.clone()));
  SGD b(params, {.lr = 0.7, .momentum = 0.3});
  b.load_state_dict(good);
  const cg::Tensor buf0 = b.momentum_buffer(0);
  b.set_lr(0.7);
  const auto with = [&](const std::function<void(cg::StateDict&)>& edit) {
    return [&b, &good, edit] {
      cg::StateDict s = good;
      edit(s);
      b.load_state_dict(s);
    };
  };
  const std::string w = "SGD.load_state_dict: ";
  EXPECT_TRUE(fails_with(with([](cg::StateDict& s) { s.erase("has_momentum_buffer"); }),
                         w + "missing entry 'has_momentum_buffer'"));
  EXPECT_TRUE(fails_with(with([](cg::StateDict& s) { s.erase("momentum_buffer.2"); }),
                         w + "missing entry 'momentum_buffer.2'"));
  EXPECT_TRUE(
      fails_with(with([](cg::StateDict& s) { s.erase("options.lr"); }), w + "missing entry 'options.lr'"));
  EXPECT_TRUE(
      fails_with(with([](cg::StateDict& s) { s["momentum_buffer.1"] = cg::zeros({5}); }),
                 w + "unexpected entry 'momentum_buffer.1': 'has_momentum_buffer' says parameter 1 has no"));
  EXPECT_TRUE(fails_with(with([](cg::StateDict& s) { s["momentum_buffer.3"] = cg::zeros({5}); }),
                         w + "unexpected entry 'momentum_buffer.3': this SGD has 3 parameters"));
  EXPECT_TRUE(fails_with(with([](cg::StateDict& s) {
                           s["momentum_buffer.00"] = cg::zeros({3, 4});
                         }),
                         w + "unexpected entry 'momentum_buffer.00'"));
  EXPECT_TRUE(
      fails_with(with([](cg::StateDict& s) { s["step"] = cg::zeros({}); }), w + "unexpected entry 'step'"));
  EXPECT_TRUE(fails_with(with([](cg::StateDict& s) {
                           s["momentum_buffer.0"] = cg::zeros({4, 3});
                         }),
                         w + "entry 'momentum_buffer.0' has shape [4, 3] but parameter 0 has shape [3, 4]"));
  EXPECT_TRUE(fails_with(with([](cg::StateDict& s) {
                           s["momentum_buffer.0"] = cg::zeros({3, 4}, kCpu, cg::DType::int64);
                         }),
                         w + "entry 'momentum_buffer.0' must be floating-point"));
  EXPECT_TRUE(fails_with(with([](cg::StateDict& s) {
                           s["has_momentum_buffer"] = cg::from_vector<std::uint8_t>({1, 0}, {2});
                         }),
                         w + "the state is for 2 parameters, but this SGD has 3"));
  EXPECT_TRUE(fails_with(with([](cg::StateDict& s) {
                           s["has_momentum_buffer"] = cg::from_vector<std::uint8_t>({1, 2, 1}, {3});
                         }),
                         "must hold 0 or 1"));
  EXPECT_TRUE(fails_with(with([](cg::StateDict& s) { s["has_momentum_buffer"] = cg::ones({3}); }),
                         "must be a 1-D uint8 tensor"));
  EXPECT_TRUE(fails_with(
      with([](cg::StateDict& s) { s["options.lr"] = cg::full({}, -1.0, kCpu, cg::DType::float64); }),
      w + "invalid learning rate -1"));
  EXPECT_TRUE(
      fails_with(with([](cg::StateDict& s) { s["options.lr"] = cg::zeros({2}, kCpu, cg::DType::float64); }),
                 "must hold one floating-point value"));
  EXPECT_TRUE(fails_with(
      with([](cg::StateDict& s) { s["options.maximize"] = cg::full({}, 0.5, kCpu, cg::DType::float64); }),
      "must be 0 or 1"));
  EXPECT_TRUE(fails_with(
      with([](cg::StateDict& s) { s["options.nesterov"] = cg::full({}, 1.0, kCpu, cg::DType::float64); }),
      w + "Nesterov momentum requires"));  // with dampening 0.2
  // None of the failed loads changed anything.
  EXPECT_EQ(b.lr(), 0.7);
  EXPECT_EQ(b.momentum(), 0.9);
  EXPECT_TRUE(b.momentum_buffer(0).shares_storage(buf0));
  EXPECT_FALSE(b.momentum_buffer(1).defined());
  // A state dict from a fresh optimizer (no buffers) clears the buffers.
  SGD fresh(params, {.lr = 0.01});
  b.load_state_dict(fresh.state_dict());
  EXPECT_FALSE(b.momentum_buffer(0).defined());
  EXPECT_EQ(b.lr(), 0.01);
  EXPECT_EQ(b.momentum(), 0.0);
}

TEST(SGD, ResNet18ShapeList) {
  const auto shapes = resnet18_parameter_shapes();
  std::int64_t total = 0;
  for (const auto& s : shapes) total += cg::shape_numel(s);
  EXPECT_EQ(shapes.size(), 62u);
  EXPECT_EQ(total, 11689512);
}

// ============================== GPU ==============================

namespace {

// Gives every parameter in `which` a fresh random gradient (the same values on both sides).
// `grad_views` makes the CUDA gradients views at odd offsets of one larger tensor.
void set_random_grads(Twin& t, const std::vector<std::size_t>& which, bool grad_views) {
  std::int64_t total = 0;
  for (std::size_t i : which) total += t.gpu[i].numel() + 3;
  const cg::Tensor arena = cg::randn({total + 1}, kCuda);
  std::int64_t at = 1;  // element 1: 4 bytes past the allocation's alignment
  for (std::size_t i : which) {
    const std::int64_t n = t.gpu[i].numel();
    cg::Tensor g =
        grad_views ? arena.narrow(0, at, n).reshape(t.gpu[i].shape()) : cg::randn(t.gpu[i].shape(), kCuda);
    at += n + 3;
    t.gpu[i].set_grad(g);
    t.cpu[i].set_grad(g.cpu().to(cg::DType::float64));
  }
}

// Steps a CUDA optimizer and its float64 CPU twin `steps` times and compares parameters and
// buffers after each step. Parameters not in `with_grad` never get a gradient.
void check_against_cpu(Twin& t, const SGDOptions& o, int steps, const std::vector<std::size_t>& with_grad,
                       bool grad_views) {
  cg::testing::PoisonGuard poison;  // unwritten buffer elements read as NaN
  SGD gpu(t.gpu, o), cpu(t.cpu, o);
  std::vector<cg::Tensor> untouched;
  for (const auto& p : t.gpu) untouched.push_back(p.clone());
  for (int s = 0; s < steps; ++s) {
    SCOPED_TRACE("step " + std::to_string(s) + " " + describe_options(o));
    set_random_grads(t, with_grad, grad_views);
    gpu.step();
    cpu.step();
    std::vector<bool> has(t.gpu.size(), false);
    for (std::size_t i : with_grad) has[i] = true;
    for (std::size_t i = 0; i < t.gpu.size(); ++i) {
      SCOPED_TRACE("parameter " + std::to_string(i) + " " + cg::shape_str(t.gpu[i].shape()));
      if (!has[i]) {
        EXPECT_TRUE(all_equal(t.gpu[i], untouched[i]));
        EXPECT_FALSE(gpu.momentum_buffer(i).defined());
        continue;
      }
      EXPECT_TRUE(all_close(t.gpu[i], t.cpu[i]));
      ASSERT_EQ(gpu.momentum_buffer(i).defined(), o.momentum != 0);
      if (o.momentum != 0) {
        EXPECT_TRUE(all_close(gpu.momentum_buffer(i), cpu.momentum_buffer(i)));
      }
    }
  }
}

Twin make_awkward_twin() { return cg::testing::make_awkward_twin(cugrad::cuda::kSgdChunkElements, 1000003); }

std::vector<std::size_t> all_indices(const Twin& t) {
  std::vector<std::size_t> v(t.gpu.size());
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = i;
  return v;
}

std::vector<SGDOptions> option_combinations() {
  std::vector<SGDOptions> out;
  for (const double momentum : {0.0, 0.9})
    for (const double dampening : {0.0, 0.3})
      for (const double wd : {0.0, 1e-2})
        for (const bool nesterov : {false, true})
          for (const bool maximize : {false, true}) {
            if (nesterov && (momentum == 0 || dampening != 0)) continue;
            out.push_back({.lr = 0.1,
                           .momentum = momentum,
                           .dampening = dampening,
                           .weight_decay = wd,
                           .nesterov = nesterov,
                           .maximize = maximize});
          }
  return out;
}

}  // namespace

TEST(SGDGPU, EveryOptionCombinationMatchesCpuAtAwkwardSizes) {
  CUGRAD_REQUIRE_GPU();
  const auto combos = option_combinations();
  EXPECT_EQ(combos.size(), 20u);
  for (std::size_t c = 0; c < combos.size(); ++c) {
    cg::manual_seed(100 + c);
    Twin t = make_awkward_twin();
    check_against_cpu(t, combos[c], 3, all_indices(t), /*grad_views=*/c % 2 == 1);
  }
}

TEST(SGDGPU, ParametersWithoutGradientsAreSkipped) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(7);
  Twin t = make_awkward_twin();
  check_against_cpu(t, {.lr = 0.05, .momentum = 0.9, .weight_decay = 5e-4, .nesterov = true}, 3,
                    {0, 3, 5, 11, 12}, false);
}

TEST(SGDGPU, ResNet18ParametersMatchCpu) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(8);
  Twin t = make_twin(resnet18_parameter_shapes());
  check_against_cpu(t, {.lr = 0.1, .momentum = 0.9, .weight_decay = 5e-4, .nesterov = true}, 3,
                    all_indices(t), false);
}

TEST(SGDGPU, GoldenFile) {
  CUGRAD_REQUIRE_GPU();
  check_golden(kCuda, cg::DType::float32, 1e-5, 1e-6);
}

TEST(SGDGPU, OneLaunchForAllParameters) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(9);
  cg::TensorList params;
  for (const auto& s : resnet18_parameter_shapes()) params.push_back(leaf(cg::randn(s, kCuda)));
  SGD opt(params, {.lr = 0.1, .momentum = 0.9, .weight_decay = 5e-4, .nesterov = true});
  EXPECT_EQ(opt.device(), kCuda);
  const auto launches = [&] {
    const std::uint64_t before = cugrad::cuda::sgd_launch_count();
    opt.step();
    return cugrad::cuda::sgd_launch_count() - before;
  };
  EXPECT_EQ(launches(), 0u);  // no gradients: nothing to do
  for (auto& p : params) p.set_grad(cg::randn(p.shape(), kCuda));
  EXPECT_EQ(launches(), 1u);  // first step (buffers initialized in the same launch)
  EXPECT_EQ(launches(), 1u);  // steady state
  opt.set_momentum(0.5);
  EXPECT_EQ(launches(), 1u);
  params[5].set_grad(cg::Tensor());
  EXPECT_EQ(launches(), 1u);
  // Small (64) and large (256) tables; beyond one large table, as few launches as tables.
  for (const auto& [n, expected] :
       std::vector<std::pair<int, std::uint64_t>>{{64, 1}, {65, 1}, {256, 1}, {257, 2}, {600, 3}}) {
    cg::TensorList many;
    for (int i = 0; i < n; ++i) many.push_back(leaf(cg::randn({1 + i % 37}, kCuda)));
    many.push_back(leaf(cg::zeros({0}, kCuda)));  // empty: takes no table entry
    SGD big(many, {.lr = 0.1, .momentum = 0.9});
    for (auto& p : many) p.set_grad(cg::randn(p.shape(), kCuda));
    const std::uint64_t before = cugrad::cuda::sgd_launch_count();
    big.step();
    EXPECT_EQ(cugrad::cuda::sgd_launch_count() - before, expected) << n << " tensors";
  }
}

TEST(SGDGPU, ManyTensorsOverSeveralLaunchesMatchCpu) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(10);
  std::vector<cg::Shape> shapes;
  for (int i = 0; i < 300; ++i) shapes.push_back({1 + (i * 7919) % 300});
  shapes[150] = {40000};
  Twin t = make_twin(shapes);
  check_against_cpu(t, {.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .weight_decay = 1e-3}, 2,
                    all_indices(t), true);
}

TEST(SGDGPU, SmallChunksThroughTheLauncher) {
  CUGRAD_REQUIRE_GPU();
  // The launcher directly, with chunks small enough that every tensor spans several blocks,
  // against the CPU loops in float64.
  cg::manual_seed(12);
  const cg::cpu::SgdHyper h{
      .lr = 0.1, .momentum = 0.9, .dampening = 0.2, .weight_decay = 1e-2, .maximize = true};
  const cg::Tensor arena = cg::randn({2000}, kCuda);
  for (const int chunk : {4, 12, 1028}) {
    for (const bool init : {true, false}) {
      SCOPED_TRACE(cg::detail::cat("chunk ", chunk, init ? " first step" : " later step"));
      std::vector<cg::Tensor> p, g, b;
      for (const std::int64_t n : {1, 5, 12, 13, 100, 1031}) {
        p.push_back(cg::randn({n}, kCuda));
        g.push_back(cg::randn({n}, kCuda));
        // On a first step the buffer must be written without being read: NaN would show.
        b.push_back(init ? cg::full({n}, NAN, kCuda) : cg::randn({n}, kCuda));
      }
      p.push_back(arena.narrow(0, 1, 777));  // misaligned
      g.push_back(cg::randn({777}, kCuda));
      b.push_back(init ? cg::full({777}, NAN, kCuda) : cg::randn({777}, kCuda));
      std::vector<cg::Tensor> p64, g64, b64;
      std::vector<cugrad::cuda::SgdTensorArgs> args;
      for (std::size_t i = 0; i < p.size(); ++i) {
        p64.push_back(p[i].cpu().to(cg::DType::float64));
        g64.push_back(g[i].cpu().to(cg::DType::float64));
        b64.push_back(b[i].cpu().to(cg::DType::float64));
        cg::cpu::sgd_update(cg::DType::float64, p64[i].raw_data(), g64[i].raw_data(), b64[i].raw_data(),
                            p64[i].numel(), init, h);
        args.push_back(
            {p[i].data_ptr<float>(), g[i].data_ptr<float>(), b[i].data_ptr<float>(), p[i].numel(), init});
      }
      const std::uint64_t before = cugrad::cuda::sgd_launch_count();
      cugrad::cuda::sgd_step(args.data(), args.size(), h, cg::Stream::current(kCuda).handle(), chunk);
      EXPECT_EQ(cugrad::cuda::sgd_launch_count() - before, 1u);
      for (std::size_t i = 0; i < p.size(); ++i) {
        EXPECT_TRUE(all_close(p[i], p64[i])) << i;
        EXPECT_TRUE(all_close(b[i], b64[i])) << i;
      }
    }
  }
  cugrad::cuda::SgdTensorArgs one{arena.data_ptr<float>(), arena.data_ptr<float>(), nullptr, 4, false};
  EXPECT_THROW(cugrad::cuda::sgd_step(&one, 1, {.lr = 0.1}, cg::Stream::current(kCuda).handle(), 6),
               cg::ValueError);
  EXPECT_THROW(cugrad::cuda::sgd_step(&one, 1, h, cg::Stream::current(kCuda).handle()),
               cg::ValueError);  // no buffer
}

TEST(SGDGPU, WaitsForGradientsProducedOnAnotherStream) {
  CUGRAD_REQUIRE_GPU();
  const std::int64_t n = 1 << 20;
  cg::Tensor p = leaf(cg::ones({n}, kCuda));
  cg::Tensor g = cg::zeros({n}, kCuda);
  p.set_grad(g);
  SGD opt({p}, {.lr = 0.5, .momentum = 0.9});
  // The gradient's final value is written on the default stream behind a slow kernel; the
  // step runs on another stream and must wait for it.
  cg::testing::spin_on(cg::Stream::current(kCuda), 50);
  g.fill_(2.0);
  const cg::Stream side = cg::Stream::create(kCuda);
  {
    cg::StreamGuard on(side);
    opt.step();
  }
  EXPECT_TRUE(all_close(p, cg::zeros({n}, kCuda)));  // 1 - 0.5 * 2
  EXPECT_TRUE(all_close(opt.momentum_buffer(0), cg::full({n}, 2.0, kCuda)));
}

TEST(SGDGPU, ParametersOnTwoDevicesAreAnError) {
  CUGRAD_REQUIRE_GPU();
  EXPECT_TRUE(fails_with(
      [] {
        SGD opt({leaf(cg::zeros({2})), leaf(cg::zeros({2}, kCuda))}, {});
      },
      "all parameters must be on one device"));
}

TEST(SGDGPU, StateDictRoundTrips) {
  CUGRAD_REQUIRE_GPU();
  Trained a = trained(kCuda);
  // GPU to GPU: continues bit for bit.
  cg::TensorList params;
  for (const auto& p : a.params) params.push_back(leaf(p.clone()));
  SGD b(params, {.lr = 0.3});
  b.load_state_dict(a.opt->state_dict());
  EXPECT_FALSE(b.momentum_buffer(0).shares_storage(a.opt->momentum_buffer(0)));
  EXPECT_EQ(b.momentum_buffer(0).device(), kCuda);
  // GPU to CPU (float64): continues to rounding.
  cg::TensorList host;
  for (const auto& p : a.params) host.push_back(leaf(p.cpu().to(cg::DType::float64)));
  SGD c(host, {});
  c.load_state_dict(a.opt->state_dict());
  EXPECT_EQ(c.momentum_buffer(2).device(), kCpu);
  EXPECT_EQ(c.momentum_buffer(2).dtype(), cg::DType::float64);
  for (int s = 0; s < 3; ++s) {
    for (int i : {0, 1, 2}) {
      const cg::Tensor g = cg::randn(params[i].shape(), kCuda);
      a.params[i].set_grad(g);
      params[i].set_grad(g.clone());
      host[i].set_grad(g.cpu().to(cg::DType::float64));
    }
    a.opt->step();
    b.step();
    c.step();
    for (int i : {0, 1, 2}) {
      EXPECT_TRUE(all_equal(params[i], a.params[i])) << "step " << s << " parameter " << i;
      EXPECT_TRUE(all_close(a.params[i], host[i])) << "step " << s << " parameter " << i;
    }
  }
}

TEST(SGDGPU, CapturableReadsItsHyperparametersFromTheDevice) {
  CUGRAD_REQUIRE_GPU();
  // The same float values reach the kernel by value or from device memory: a capturable SGD
  // matches a plain one bit for bit while the lr and momentum change between steps and the
  // options go through load_state_dict.
  cg::manual_seed(31);
  cg::TensorList plain, dev;
  for (const cg::Shape& s : std::vector<cg::Shape>{{7, 9}, {4099}}) {
    plain.push_back(leaf(cg::randn(s, kCuda)));
    dev.push_back(leaf(plain.back().clone()));
  }
  const SGDOptions o{.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .weight_decay = 1e-3};
  SGD a(plain, o);
  SGDOptions oc = o;
  oc.capturable = true;
  SGD b(dev, oc);
  for (int s = 0; s < 5; ++s) {
    for (std::size_t i = 0; i < plain.size(); ++i) {
      const cg::Tensor g = cg::randn(plain[i].shape(), kCuda);
      plain[i].set_grad(g);
      dev[i].set_grad(g.clone());
    }
    a.set_lr(0.1 / (s + 1));
    b.set_lr(0.1 / (s + 1));
    a.set_momentum(0.9 - 0.1 * s);
    b.set_momentum(0.9 - 0.1 * s);
    if (s == 3) {
      SGD other(plain, {.lr = 0.7, .momentum = 0.2, .dampening = 0.3, .weight_decay = 0.01});
      a.load_state_dict(other.state_dict());
      b.load_state_dict(other.state_dict());
    }
    a.step();
    b.step();
    for (std::size_t i = 0; i < plain.size(); ++i)
      EXPECT_TRUE(all_equal(dev[i], plain[i])) << "step " << s << " parameter " << i;
  }
  EXPECT_TRUE(b.options().capturable);
}
