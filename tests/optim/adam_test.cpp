// optim::Adam and optim::AdamW: PyTorch's golden file (five configurations, a parameter that
// skips a step; float32 and float64) on the CPU and the GPU, hand-computed steps, option and
// parameter errors, OneCycleLR cycling beta1, state_dict round trips and errors, and (GPU
// suites) the multi-tensor CUDA kernel against the float64 CPU reference at awkward sizes,
// misaligned views, every option combination and several launches, with the launch count
// checked, and the refusal to be captured into a CUDA graph.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "cuda/adam.h"
#include "cugrad/cugrad.h"
#include "cugrad/graph.h"
#include "cugrad/optim.h"
#include "host/cpu/adam.h"
#include "tests/optim/twin.h"
#include "tests/support/gpu.h"
#include "tests/support/parity.h"

namespace cg = cugrad;
using cg::optim::Adam;
using cg::optim::AdamOptions;
using cg::optim::AdamW;
using cg::optim::AdamWOptions;
using cg::testing::all_close;
using cg::testing::all_equal;
using cg::testing::leaf;
using cg::testing::make_twin;
using cg::testing::norm_close;
using cg::testing::Twin;

namespace {

const cg::Device kCpu = cg::Device::cpu();
const cg::Device kCuda = cg::Device::cuda(0);

// The error is a ValueError naming `who` and containing `what`.
::testing::AssertionResult fails_with(const std::function<void()>& f, const std::string& who,
                                      const std::string& what) {
  const std::string m = cg::testing::value_error_message(f);
  if (m.find(who) != std::string::npos && m.find(what) != std::string::npos &&
      m.find("(not a") == std::string::npos)
    return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "expected a ValueError naming " << who << " and containing '" << what << "', got '" << m << "'";
}

std::string describe(const AdamOptions& o, bool decoupled) {
  return cg::detail::cat(decoupled ? "AdamW" : "Adam", "{lr ", o.lr, ", betas ", o.betas[0], "/", o.betas[1],
                         ", eps ", o.eps, ", weight_decay ", o.weight_decay, ", amsgrad ", o.amsgrad,
                         ", maximize ", o.maximize, "}");
}

AdamWOptions as_adamw(const AdamOptions& o) {
  return {o.lr, o.betas, o.eps, o.weight_decay, o.amsgrad, o.maximize, o.capturable};
}

std::unique_ptr<Adam> make(const cg::TensorList& params, const AdamOptions& o, bool decoupled) {
  if (decoupled) return std::make_unique<AdamW>(params, as_adamw(o));
  return std::make_unique<Adam>(params, o);
}

// ---- the golden file ----

struct Config {
  AdamOptions options;
  bool decoupled = false;
};

struct Golden {
  std::map<std::string, cg::Tensor> t;
  std::vector<Config> configs;
  int steps = 0;
  int params = 3;
  int skipped_param = -1, skipped_step = -1;
};

// The metadata's configs: a JSON list of flat objects of PyTorch keyword arguments (betas a
// two-number list) and "optimizer".
std::vector<Config> parse_configs(const std::string& json) {
  std::vector<Config> out;
  const std::regex object(R"(\{([^}]*)\})");
  const std::regex field(R"re("(\w+)"\s*:\s*(\[[^\]]*\]|"[^"]*"|[^,}\s]+))re");
  for (auto o = std::sregex_iterator(json.begin(), json.end(), object); o != std::sregex_iterator(); ++o) {
    Config c;
    const std::string body = (*o)[1];
    for (auto f = std::sregex_iterator(body.begin(), body.end(), field); f != std::sregex_iterator(); ++f) {
      const std::string key = (*f)[1], value = (*f)[2];
      const auto boolean = [&] {
        EXPECT_TRUE(value == "true" || value == "false") << key << ": " << value;
        return value == "true";
      };
      if (key == "optimizer") {
        EXPECT_TRUE(value == "\"Adam\"" || value == "\"AdamW\"") << value;
        c.decoupled = value == "\"AdamW\"";
        if (c.decoupled) c.options.weight_decay = 1e-2;  // AdamW's default unless given
      } else if (key == "lr") {
        c.options.lr = std::stod(value);
      } else if (key == "betas") {
        std::smatch m;
        const std::regex two(R"(\[\s*([^,\s]+)\s*,\s*([^\]\s]+)\s*\])");
        EXPECT_TRUE(std::regex_match(value, m, two)) << value;
        c.options.betas = {std::stod(m[1]), std::stod(m[2])};
      } else if (key == "eps") {
        c.options.eps = std::stod(value);
      } else if (key == "weight_decay") {
        c.options.weight_decay = std::stod(value);
      } else if (key == "amsgrad") {
        c.options.amsgrad = boolean();
      } else if (key == "maximize") {
        c.options.maximize = boolean();
      } else {
        ADD_FAILURE() << "unknown Adam argument in the golden file: " << key;
      }
    }
    out.push_back(c);
  }
  return out;
}

const Golden& golden() {
  static const Golden g = [] {
    Golden r;
    auto f = cg::io::read_safetensors(std::string(CUGRAD_GOLDEN_DIR) + "/adam.safetensors");
    r.t = std::move(f.tensors);
    r.configs = parse_configs(f.metadata.at("configs"));
    r.steps = std::stoi(f.metadata.at("steps"));
    std::smatch m;
    const std::string skipped = f.metadata.at("skipped");
    if (std::regex_match(skipped, m, std::regex(R"(\[\s*(\d+)\s*,\s*(\d+)\s*\])"))) {
      r.skipped_param = std::stoi(m[1]);
      r.skipped_step = std::stoi(m[2]);
    }
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

void check_golden(cg::Device device, cg::DType dtype, double rtol, double atol, bool capturable = false) {
  const Golden& g = golden();
  ASSERT_EQ(g.configs.size(), 5u);
  ASSERT_EQ(g.steps, 6);
  ASSERT_EQ(g.skipped_param, 1);
  ASSERT_EQ(g.skipped_step, 2);
  for (std::size_t c = 0; c < g.configs.size(); ++c) {
    Config cfg = g.configs[c];
    cfg.options.capturable = capturable;
    SCOPED_TRACE("config " + std::to_string(c) + " " + describe(cfg.options, cfg.decoupled));
    cg::TensorList params;
    for (int i = 0; i < g.params; ++i)
      params.push_back(leaf(gt(cg::detail::cat("p", i, "_init")).to(dtype).to(device).clone()));
    const auto opt = make(params, cfg.options, cfg.decoupled);
    for (int s = 0; s < g.steps; ++s) {
      std::vector<cg::Tensor> grads, snapshots;
      for (int i = 0; i < g.params; ++i) {
        const bool skip = i == g.skipped_param && s == g.skipped_step;
        grads.push_back(skip ? cg::Tensor() : gt(cg::detail::cat("g", i, "_step", s)).to(dtype).to(device));
        snapshots.push_back(skip ? cg::Tensor() : grads.back().clone());
        params[i].set_grad(grads.back());
      }
      opt->step();
      for (int i = 0; i < g.params; ++i) {
        SCOPED_TRACE(cg::detail::cat("cfg", c, "_p", i, "_step", s));
        const cg::Tensor expected = gt(cg::detail::cat("cfg", c, "_p", i, "_step", s));
        EXPECT_TRUE(all_close(params[i], expected, {atol, rtol}));
        EXPECT_TRUE(norm_close(params[i], expected, rtol));
        if (grads[i].defined()) {
          EXPECT_TRUE(all_equal(grads[i], snapshots[i]));  // only read
        }
      }
    }
    for (int i = 0; i < g.params; ++i) {
      SCOPED_TRACE(cg::detail::cat("state of parameter ", i));
      EXPECT_EQ(static_cast<double>(opt->step_count(i)),
                gt(cg::detail::cat("cfg", c, "_step", i)).item_double());
      EXPECT_TRUE(all_close(opt->exp_avg(i), gt(cg::detail::cat("cfg", c, "_exp_avg", i)), {atol, rtol}));
      EXPECT_TRUE(
          all_close(opt->exp_avg_sq(i), gt(cg::detail::cat("cfg", c, "_exp_avg_sq", i)), {atol, rtol}));
      EXPECT_EQ(opt->max_exp_avg_sq(i).defined(), cfg.options.amsgrad);
    }
  }
}

cg::Tensor f64(const std::vector<double>& v, const cg::Shape& s) { return cg::from_vector(v, s); }

}  // namespace

// ============================== CPU ==============================

TEST(Adam, GoldenConfigsAreTheExpectedOnes) {
  const auto& c = golden().configs;
  ASSERT_EQ(c.size(), 5u);
  EXPECT_FALSE(c[0].decoupled);
  EXPECT_EQ(c[0].options.lr, 0.01);
  EXPECT_EQ(c[1].options.betas[0], 0.8);
  EXPECT_EQ(c[1].options.betas[1], 0.99);
  EXPECT_EQ(c[1].options.eps, 1e-6);
  EXPECT_TRUE(c[1].options.amsgrad);
  EXPECT_TRUE(c[2].options.maximize);
  EXPECT_TRUE(c[3].decoupled);
  EXPECT_EQ(c[3].options.weight_decay, 1e-2);  // AdamW's default
  EXPECT_TRUE(c[4].decoupled);
  EXPECT_TRUE(c[4].options.amsgrad);
  EXPECT_EQ(c[4].options.weight_decay, 0.1);
}

TEST(Adam, GoldenFileFloat64) { check_golden(kCpu, cg::DType::float64, 1e-12, 1e-13); }

TEST(Adam, GoldenFileFloat32) { check_golden(kCpu, cg::DType::float32, 1e-5, 1e-6); }

TEST(Adam, HandComputedSteps) {
  // First step: m = (1 - b1) g, v = (1 - b2) g^2, so p -= lr g / (|g| + eps).
  cg::Tensor p = leaf(f64({1.0, -2.0, 0.5}, {3}));
  Adam opt({p}, {.lr = 0.1, .betas = {0.9, 0.999}, .eps = 1e-3});
  p.set_grad(f64({2.0, -0.5, 0.0}, {3}));
  opt.step();
  const std::vector<double> first = p.to_vector<double>();
  EXPECT_NEAR(first[0], 1.0 - 0.1 * 2.0 / (2.0 + 1e-3), 1e-15);
  EXPECT_NEAR(first[1], -2.0 + 0.1 * 0.5 / (0.5 + 1e-3), 1e-15);
  EXPECT_EQ(first[2], 0.5);  // zero gradient: no move
  EXPECT_EQ(opt.step_count(0), 1);
  // Second step with g = 1 everywhere: m = 0.9 m + 0.1, v = 0.999 v + 0.001.
  p.set_grad(f64({1.0, 1.0, 1.0}, {3}));
  opt.step();
  const std::vector<double> g0 = {2.0, -0.5, 0.0};
  const std::vector<double> second = p.to_vector<double>();
  for (int k = 0; k < 3; ++k) {
    const double m = 0.9 * (0.1 * g0[k]) + 0.1;
    const double v = 0.999 * (0.001 * g0[k] * g0[k]) + 0.001;
    const double denom = std::sqrt(v) / std::sqrt(1 - 0.999 * 0.999) + 1e-3;
    EXPECT_NEAR(second[k], first[k] - 0.1 / (1 - 0.9 * 0.9) * m / denom, 1e-14) << k;
  }
  EXPECT_EQ(opt.step_count(0), 2);
}

TEST(Adam, WeightDecayIsL2ForAdamAndDecoupledForAdamW) {
  // A zero gradient: Adam's L2 term becomes the gradient (a move of about lr), AdamW's decay
  // only scales p by 1 - lr * weight_decay (Adam's moments stay zero).
  cg::Tensor a = leaf(f64({2.0, -4.0}, {2}));
  cg::Tensor w = leaf(f64({2.0, -4.0}, {2}));
  Adam adam({a}, {.lr = 0.1, .weight_decay = 0.5});
  AdamW adamw({w}, {.lr = 0.1, .weight_decay = 0.5});
  EXPECT_EQ(adam.name(), "Adam");
  EXPECT_EQ(adamw.name(), "AdamW");
  EXPECT_FALSE(adam.decoupled_weight_decay());
  EXPECT_TRUE(adamw.decoupled_weight_decay());
  a.set_grad(cg::zeros({2}, kCpu, cg::DType::float64));
  w.set_grad(cg::zeros({2}, kCpu, cg::DType::float64));
  adam.step();
  adamw.step();
  const auto av = a.to_vector<double>(), wv = w.to_vector<double>();
  EXPECT_NEAR(av[0], 2.0 - 0.1 * 1.0 / (1.0 + 1e-8), 1e-12);  // g = 0.5 * 2 = 1
  EXPECT_NEAR(av[1], -4.0 + 0.1 * 2.0 / (2.0 + 1e-8), 1e-12);
  EXPECT_DOUBLE_EQ(wv[0], 2.0 * (1 - 0.05));
  EXPECT_DOUBLE_EQ(wv[1], -4.0 * (1 - 0.05));
  EXPECT_EQ(AdamWOptions{}.weight_decay, 1e-2);
  EXPECT_EQ(AdamOptions{}.weight_decay, 0.0);
}

TEST(Adam, AmsgradUsesTheLargestSecondMoment) {
  cg::Tensor p = leaf(f64({0.0}, {1}));
  Adam opt({p}, {.lr = 1.0, .betas = {0.0, 0.5}, .eps = 0, .amsgrad = true});
  p.set_grad(f64({4.0}, {1}));
  opt.step();  // v = 8, vmax = 8, p = 0 - 1 * 4 / (sqrt(8) / sqrt(0.5)) = -1
  EXPECT_DOUBLE_EQ(p.to_vector<double>()[0], -1.0);
  p.set_grad(f64({1.0}, {1}));
  opt.step();  // v = 4.5, vmax = 8; bias correction sqrt(0.75); p = -1 - 1 / (sqrt(8) / sqrt(0.75))
  EXPECT_NEAR(p.to_vector<double>()[0], -1.0 - 1.0 / (std::sqrt(8.0) / std::sqrt(0.75)), 1e-15);
  EXPECT_DOUBLE_EQ(opt.exp_avg_sq(0).to_vector<double>()[0], 4.5);
  EXPECT_DOUBLE_EQ(opt.max_exp_avg_sq(0).to_vector<double>()[0], 8.0);
}

TEST(Adam, ParametersWithoutGradientsAreSkippedAndKeepTheirOwnStepCount) {
  cg::Tensor a = leaf(cg::randn({4}, kCpu, cg::DType::float64));
  cg::Tensor b = leaf(cg::randn({3}, kCpu, cg::DType::float64));
  Adam opt({a, b}, {.lr = 0.1});
  const cg::Tensor b0 = b.clone();
  a.set_grad(cg::ones({4}, kCpu, cg::DType::float64));
  opt.step();
  EXPECT_TRUE(all_equal(b, b0));
  EXPECT_EQ(opt.step_count(1), 0);
  EXPECT_FALSE(opt.exp_avg(1).defined());
  b.set_grad(cg::ones({3}, kCpu, cg::DType::float64));
  opt.step();
  EXPECT_EQ(opt.step_count(0), 2);
  EXPECT_EQ(opt.step_count(1), 1);
  // b's first update is a first step (bias correction of step 1): a move of lr / (1 + eps).
  const auto bv = b.to_vector<double>(), b0v = b0.to_vector<double>();
  for (int k = 0; k < 3; ++k) EXPECT_NEAR(bv[k], b0v[k] - 0.1 / (1 + 1e-8), 1e-14);
  EXPECT_THROW(opt.step_count(2), cg::ValueError);
  EXPECT_THROW(opt.exp_avg(2), cg::ValueError);
}

TEST(Adam, StepDoesNotRecordAndBumpsVersions) {
  cg::Tensor p = leaf(cg::randn({5}));
  Adam opt({p}, {.lr = 0.1});
  p.set_grad(cg::randn({5}));
  const auto v0 = p.version();
  opt.step();
  EXPECT_GT(p.version(), v0);
  EXPECT_TRUE(p.is_leaf());
  EXPECT_FALSE(opt.exp_avg(0).requires_grad());
}

TEST(Adam, OptionErrors) {
  cg::Tensor p = leaf(cg::zeros({2}));
  EXPECT_TRUE(fails_with([&] { Adam opt({p}, {.lr = -1}); }, "Adam", "invalid learning rate -1"));
  EXPECT_TRUE(fails_with([&] { Adam opt({p}, {.lr = NAN}); }, "Adam", "invalid learning rate"));
  EXPECT_TRUE(fails_with([&] { Adam opt({p}, {.betas = {1.0, 0.999}}); }, "Adam", "invalid beta1 1"));
  EXPECT_TRUE(fails_with([&] { Adam opt({p}, {.betas = {0.9, -0.1}}); }, "Adam", "invalid beta2 -0.1"));
  EXPECT_TRUE(fails_with([&] { Adam opt({p}, {.betas = {NAN, 0.9}}); }, "Adam", "invalid beta1"));
  EXPECT_TRUE(fails_with([&] { Adam opt({p}, {.eps = -1e-8}); }, "Adam", "invalid eps"));
  EXPECT_TRUE(
      fails_with([&] { AdamW opt({p}, {.weight_decay = -0.1}); }, "AdamW", "invalid weight_decay -0.1"));
  EXPECT_TRUE(
      fails_with([&] { AdamW opt({p}, {.weight_decay = INFINITY}); }, "AdamW", "invalid weight_decay"));
  EXPECT_TRUE(fails_with([&] { AdamW opt({}, {}); }, "AdamW", "empty parameter list"));
  EXPECT_TRUE(
      fails_with([&] { Adam opt({cg::zeros({2}, kCpu, cg::DType::int64)}, {}); }, "Adam", "floating"));
  Adam opt({p}, {});
  EXPECT_TRUE(fails_with([&] { opt.set_lr(-0.5); }, "Adam.set_lr", "invalid learning rate -0.5"));
  EXPECT_TRUE(fails_with([&] { opt.set_momentum(1.0); }, "Adam.set_momentum", "invalid beta1 1"));
  EXPECT_EQ(opt.lr(), 1e-3);
  EXPECT_EQ(opt.momentum(), 0.9);
  opt.set_momentum(0.85);
  EXPECT_EQ(opt.options().betas[0], 0.85);
  EXPECT_EQ(opt.options().betas[1], 0.999);
}

TEST(Adam, ParameterErrorsLeaveTheStateUnchanged) {
  cg::Tensor a = leaf(cg::randn({3}));
  cg::Tensor b = leaf(cg::randn({2, 2}));
  Adam opt({a, b}, {.lr = 0.1});
  a.set_grad(cg::randn({3}));
  b.set_grad(b.detach());  // would be read while it is written
  const cg::Tensor a0 = a.clone();
  EXPECT_TRUE(fails_with([&] { opt.step(); }, "Adam.step", "the gradient of parameter 1 overlaps"));
  EXPECT_TRUE(all_equal(a, a0));  // nothing was written
  EXPECT_EQ(opt.step_count(0), 0);
  b.set_grad(cg::Tensor());
  opt.step();
  EXPECT_EQ(opt.step_count(0), 1);
  EXPECT_TRUE(fails_with([&] { Adam twice({a, a}, {}); }, "Adam", "the same tensor listed twice"));
  EXPECT_TRUE(fails_with([&] { Adam not_leaf({a * 2.f}, {}); }, "Adam", "not a leaf"));
}

TEST(Adam, OneCycleCyclesBeta1) {
  // PyTorch's OneCycleLR cycles Adam's betas[0] as SGD's momentum (use_beta1).
  cg::Tensor p = leaf(cg::zeros({1}));
  Adam opt({p}, {.lr = 0.01, .betas = {0.9, 0.98}});
  cg::optim::OneCycleLR sched(opt, 0.2, 10, {.pct_start = 0.5});
  EXPECT_NEAR(opt.lr(), 0.2 / 25, 1e-15);
  EXPECT_EQ(opt.options().betas[0], 0.95);  // max_momentum at the start
  for (int k = 0; k < 4; ++k) sched.step();
  EXPECT_NEAR(opt.lr(), 0.2, 1e-12);  // the peak at step 4 = 0.5 * 10 - 1
  EXPECT_NEAR(opt.options().betas[0], 0.85, 1e-12);
  EXPECT_EQ(opt.options().betas[1], 0.98);  // untouched
}

namespace {

struct Trained {
  cg::TensorList params;
  std::unique_ptr<Adam> opt;
};

// An optimizer with state: three steps, parameter 2 without a gradient in the first.
Trained trained(cg::Device device, bool decoupled, bool amsgrad) {
  cg::manual_seed(3);
  Trained t;
  for (const cg::Shape& s : std::vector<cg::Shape>{{3, 4}, {5}, {2, 3}})
    t.params.push_back(leaf(cg::randn(s, device)));
  t.opt =
      make(t.params, {.lr = 0.05, .betas = {0.8, 0.95}, .weight_decay = 0.01, .amsgrad = amsgrad}, decoupled);
  for (int s = 0; s < 3; ++s) {
    for (int i = 0; i < 3; ++i)
      t.params[i].set_grad(s == 0 && i == 2 ? cg::Tensor() : cg::randn(t.params[i].shape(), device));
    t.opt->step();
  }
  return t;
}

}  // namespace

TEST(Adam, StateDictContents) {
  Trained t = trained(kCpu, false, true);
  const cg::StateDict s = t.opt->state_dict();
  EXPECT_EQ(s.size(), 3u * 3 + 1 + 8);
  EXPECT_EQ(s.at("step").to_vector<double>(), (std::vector<double>{3, 3, 2}));
  EXPECT_TRUE(s.at("exp_avg.0").shares_storage(t.opt->exp_avg(0)));
  EXPECT_TRUE(s.at("max_exp_avg_sq.2").shares_storage(t.opt->max_exp_avg_sq(2)));
  EXPECT_EQ(s.at("options.beta1").item_double(), 0.8);
  EXPECT_EQ(s.at("options.beta2").item_double(), 0.95);
  EXPECT_EQ(s.at("options.amsgrad").item_double(), 1.0);
  EXPECT_EQ(s.at("options.decoupled_weight_decay").item_double(), 0.0);
  Trained w = trained(kCpu, true, false);
  const cg::StateDict sw = w.opt->state_dict();
  EXPECT_EQ(sw.size(), 3u * 2 + 1 + 8);
  EXPECT_EQ(sw.count("max_exp_avg_sq.0"), 0u);
  EXPECT_EQ(sw.at("options.decoupled_weight_decay").item_double(), 1.0);
}

TEST(Adam, StateDictRoundTripThroughAFileContinuesIdentically) {
  for (const bool decoupled : {false, true}) {
    for (const bool amsgrad : {false, true}) {
      SCOPED_TRACE(cg::detail::cat(decoupled ? "AdamW" : "Adam", amsgrad ? " amsgrad" : ""));
      Trained a = trained(kCpu, decoupled, amsgrad);
      const std::string path = std::string(CUGRAD_TEST_TMP_DIR) + "/adam_state.safetensors";
      cg::io::save_safetensors(a.opt->state_dict(), path);
      cg::TensorList params;
      for (const auto& p : a.params) params.push_back(leaf(p.clone()));
      const auto b = make(params, {.lr = 0.9}, decoupled);
      b->load_state_dict(cg::io::load_safetensors(path));
      EXPECT_EQ(b->lr(), 0.05);
      EXPECT_EQ(b->options().amsgrad, amsgrad);
      EXPECT_EQ(b->step_count(2), 2);
      EXPECT_FALSE(b->exp_avg(0).shares_storage(a.opt->exp_avg(0)));
      for (int s = 0; s < 3; ++s) {
        for (int i = 0; i < 3; ++i) {
          const cg::Tensor g = cg::randn(params[i].shape());
          a.params[i].set_grad(g);
          params[i].set_grad(g.clone());
        }
        a.opt->step();
        b->step();
        for (int i = 0; i < 3; ++i)
          EXPECT_TRUE(all_equal(params[i], a.params[i])) << "step " << s << " parameter " << i;
      }
    }
  }
}

TEST(Adam, LoadStateDictErrors) {
  Trained a = trained(kCpu, false, false);
  const cg::StateDict good = a.opt->state_dict();
  cg::TensorList params;
  for (const auto& p : a.params) params.push_back(leaf(p.clone()));
  Adam b(params, {.lr = 0.7});
  for (auto& p : params) p.set_grad(cg::randn(p.shape()));
  b.step();
  const cg::Tensor m0 = b.exp_avg(0);
  const auto with = [&](const std::function<void(cg::StateDict&)>& edit) {
    return [&, edit] {
      cg::StateDict s = good;
      edit(s);
      b.load_state_dict(s);
    };
  };
  const std::string w = "Adam.load_state_dict";
  const auto scalar = [](double v) { return cg::full({}, v, kCpu, cg::DType::float64); };
  EXPECT_TRUE(
      fails_with(with([](cg::StateDict& s) { s.erase("exp_avg_sq.1"); }), w, "missing entry 'exp_avg_sq.1'"));
  EXPECT_TRUE(
      fails_with(with([](cg::StateDict& s) { s.erase("options.eps"); }), w, "missing entry 'options.eps'"));
  EXPECT_TRUE(fails_with(with([](cg::StateDict& s) {
                           s["momentum_buffer.0"] = cg::zeros({3, 4});
                         }),
                         w, "unexpected entry 'momentum_buffer.0'"));
  EXPECT_TRUE(fails_with(with([](cg::StateDict& s) { s["exp_avg.3"] = cg::zeros({3}); }), w,
                         "unexpected entry 'exp_avg.3': this Adam has 3 parameters"));
  EXPECT_TRUE(fails_with(with([](cg::StateDict& s) {
                           s["max_exp_avg_sq.0"] = cg::zeros({3, 4});
                         }),
                         w, "unexpected entry 'max_exp_avg_sq.0': the state's options have amsgrad off"));
  EXPECT_TRUE(fails_with(
      with([](cg::StateDict& s) { s["options.amsgrad"] = cg::full({}, 1.0, kCpu, cg::DType::float64); }), w,
      "missing entry 'max_exp_avg_sq.0'"));
  EXPECT_TRUE(fails_with(with([](cg::StateDict& s) {
                           s["exp_avg.0"] = cg::zeros({4, 3});
                         }),
                         w, "entry 'exp_avg.0' has shape [4, 3] but parameter 0 has shape [3, 4]"));
  EXPECT_TRUE(fails_with(with([](cg::StateDict& s) {
                           s["exp_avg.0"] = cg::zeros({3, 4}, kCpu, cg::DType::int64);
                         }),
                         w, "entry 'exp_avg.0' must be floating-point"));
  EXPECT_TRUE(fails_with(with([](cg::StateDict& s) {
                           s["step"] = f64({3, 3}, {2});
                         }),
                         w, "the state is for 2 parameters, but this Adam has 3"));
  EXPECT_TRUE(fails_with(with([](cg::StateDict& s) {
                           s["step"] = f64({3, 2.5, 1}, {3});
                         }),
                         w, "whole step counts >= 0, got 2.5 for parameter 1"));
  EXPECT_TRUE(fails_with(with([](cg::StateDict& s) {
                           s["step"] = f64({3, 0, 2}, {3});
                         }),
                         w, "unexpected entry 'exp_avg.1': 'step' says parameter 1 has no state"));
  EXPECT_TRUE(fails_with(
      with([&](cg::StateDict& s) { s["options.decoupled_weight_decay"] = scalar(1); }), w,
      "the state is AdamW's (entry 'options.decoupled_weight_decay'), but this optimizer is Adam"));
  EXPECT_TRUE(
      fails_with(with([&](cg::StateDict& s) { s["options.beta2"] = scalar(1); }), w, "invalid beta2 1"));
  EXPECT_TRUE(
      fails_with(with([&](cg::StateDict& s) { s["options.maximize"] = scalar(0.5); }), w, "must be 0 or 1"));
  // None of the failed loads changed anything.
  EXPECT_EQ(b.lr(), 0.7);
  EXPECT_EQ(b.step_count(0), 1);
  EXPECT_TRUE(b.exp_avg(0).shares_storage(m0));
  // An AdamW state into an AdamW works; into an Adam it does not (above), nor the reverse.
  Trained aw = trained(kCpu, true, false);
  AdamW c(params, {});
  EXPECT_TRUE(fails_with([&] { c.load_state_dict(good); }, "AdamW.load_state_dict", "the state is Adam's"));
  c.load_state_dict(aw.opt->state_dict());
  EXPECT_EQ(c.step_count(0), 3);
  // A state dict from a fresh optimizer clears the state.
  Adam fresh(params, {.lr = 0.01});
  b.load_state_dict(fresh.state_dict());
  EXPECT_EQ(b.step_count(0), 0);
  EXPECT_FALSE(b.exp_avg(0).defined());
  EXPECT_EQ(b.lr(), 0.01);
}

// ============================== GPU ==============================

namespace {

Twin make_awkward_twin() { return cg::testing::make_awkward_twin(cugrad::cuda::kAdamChunkElements, 300007); }

// Steps a CUDA optimizer and its float64 CPU twin `steps` times with the same random
// gradients (scaled by 1/(s+1) so amsgrad's maximum matters) and compares parameters and
// state after each step. Parameter i gets no gradient in step s when skip(i, s).
void check_against_cpu(Twin& t, const AdamOptions& o, bool decoupled, int steps,
                       const std::function<bool(std::size_t, int)>& skip) {
  cg::testing::PoisonGuard poison;  // unwritten state elements read as NaN
  const auto gpu = make(t.gpu, o, decoupled);
  const auto cpu = make(t.cpu, o, decoupled);
  for (int s = 0; s < steps; ++s) {
    SCOPED_TRACE("step " + std::to_string(s) + " " + describe(o, decoupled));
    std::vector<cg::Tensor> before;
    for (std::size_t i = 0; i < t.gpu.size(); ++i) {
      before.push_back(t.gpu[i].clone());
      if (skip(i, s)) {
        t.gpu[i].set_grad(cg::Tensor());
        t.cpu[i].set_grad(cg::Tensor());
        continue;
      }
      const cg::Tensor g = cg::randn(t.gpu[i].shape(), kCuda) * static_cast<float>(1.0 / (s + 1));
      t.gpu[i].set_grad(g);
      t.cpu[i].set_grad(g.cpu().to(cg::DType::float64));
    }
    gpu->step();
    cpu->step();
    for (std::size_t i = 0; i < t.gpu.size(); ++i) {
      SCOPED_TRACE("parameter " + std::to_string(i) + " " + cg::shape_str(t.gpu[i].shape()));
      ASSERT_EQ(gpu->step_count(i), cpu->step_count(i));
      if (skip(i, s)) {
        EXPECT_TRUE(all_equal(t.gpu[i], before[i]));
      }
      EXPECT_TRUE(all_close(t.gpu[i], t.cpu[i], {1e-5, 1e-5}));
      if (gpu->step_count(i) == 0) {
        EXPECT_FALSE(gpu->exp_avg(i).defined());
        continue;
      }
      EXPECT_TRUE(all_close(gpu->exp_avg(i), cpu->exp_avg(i)));
      EXPECT_TRUE(all_close(gpu->exp_avg_sq(i), cpu->exp_avg_sq(i)));
      if (o.amsgrad) {
        EXPECT_TRUE(all_close(gpu->max_exp_avg_sq(i), cpu->max_exp_avg_sq(i)));
      }
    }
  }
}

}  // namespace

TEST(AdamGPU, GoldenFile) {
  CUGRAD_REQUIRE_GPU();
  check_golden(kCuda, cg::DType::float32, 1e-5, 1e-6);
}

TEST(AdamGPU, CapturableMatchesTheGoldenFile) {
  CUGRAD_REQUIRE_GPU();
  // Step counts and hyperparameters in device memory, bias corrections computed there.
  check_golden(kCuda, cg::DType::float32, 1e-5, 1e-6, /*capturable=*/true);
}

TEST(AdamGPU, CapturableStepCountsAndHyperparametersFollowTheHost) {
  CUGRAD_REQUIRE_GPU();
  // A capturable AdamW against a plain one: the same updates bit for bit (the device computes the
  // bias corrections with the host's double formulas) while the lr and beta1 change between steps, a
  // parameter skips steps, and the state goes through state_dict / load_state_dict.
  cg::manual_seed(21);
  cg::TensorList plain, dev;
  for (const cg::Shape& s : std::vector<cg::Shape>{{3, 70}, {129}, {5}}) {
    plain.push_back(leaf(cg::randn(s, kCuda)));
    dev.push_back(leaf(plain.back().clone()));
  }
  AdamW a(plain, {.lr = 0.01, .amsgrad = true});
  AdamW b(dev, {.lr = 0.01, .amsgrad = true, .capturable = true});
  for (int s = 0; s < 6; ++s) {
    for (std::size_t i = 0; i < plain.size(); ++i) {
      const bool skip = i == 2 && s % 2 == 0;
      const cg::Tensor g = skip ? cg::Tensor() : cg::randn(plain[i].shape(), kCuda);
      plain[i].set_grad(g);
      dev[i].set_grad(skip ? cg::Tensor() : g.clone());
    }
    a.set_lr(0.01 / (s + 1));
    b.set_lr(0.01 / (s + 1));
    a.set_momentum(0.9 - 0.05 * s);
    b.set_momentum(0.9 - 0.05 * s);
    a.step();
    b.step();
    if (s == 3) {  // a fresh capturable optimizer continues from b's state
      const cg::StateDict saved = b.state_dict();
      EXPECT_EQ(saved.at("step").to_vector<double>(), (std::vector<double>{4, 4, 2}));
      b.load_state_dict(AdamW(dev, {.lr = 0.5, .capturable = true}).state_dict());  // clears it
      EXPECT_EQ(b.step_count(0), 0);
      b.load_state_dict(saved);
    }
    for (std::size_t i = 0; i < plain.size(); ++i) {
      EXPECT_EQ(b.step_count(i), a.step_count(i)) << "step " << s << " parameter " << i;
      EXPECT_TRUE(all_equal(dev[i], plain[i])) << "step " << s << " parameter " << i;
    }
  }
  EXPECT_EQ(b.step_count(2), 3);
}

TEST(AdamGPU, EveryOptionCombinationMatchesCpuAtAwkwardSizes) {
  CUGRAD_REQUIRE_GPU();
  int c = 0;
  for (const bool decoupled : {false, true})
    for (const double wd : {0.0, 0.05})
      for (const bool amsgrad : {false, true})
        for (const bool maximize : {false, true}) {
          cg::manual_seed(200 + c++);
          Twin t = make_awkward_twin();
          const AdamOptions o{.lr = 0.01,
                              .betas = {0.8, 0.95},
                              .eps = 1e-6,
                              .weight_decay = wd,
                              .amsgrad = amsgrad,
                              .maximize = maximize};
          check_against_cpu(t, o, decoupled, 3, [](std::size_t i, int s) { return i == 3 && s == 0; });
        }
  EXPECT_EQ(c, 16);
}

TEST(AdamGPU, ManyTensorsOverSeveralLaunchesMatchCpu) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(11);
  std::vector<cg::Shape> shapes;
  for (int i = 0; i < 300; ++i) shapes.push_back({1 + (i * 7919) % 300});
  shapes[150] = {40000};
  Twin t = make_twin(shapes);
  check_against_cpu(t, {.lr = 0.01, .weight_decay = 1e-3, .amsgrad = true}, true, 2,
                    [](std::size_t i, int s) { return s == 1 && i % 7 == 0; });
}

TEST(AdamGPU, OneLaunchForAllParameters) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(9);
  cg::TensorList params;
  for (const cg::Tensor& p : cg::nn::resnet18()->parameters())
    params.push_back(leaf(cg::randn(p.shape(), kCuda)));
  ASSERT_EQ(params.size(), 62u);
  AdamW opt(params, {});
  const auto launches = [&] {
    const std::uint64_t before = cugrad::cuda::adam_launch_count();
    opt.step();
    return cugrad::cuda::adam_launch_count() - before;
  };
  EXPECT_EQ(launches(), 0u);  // no gradients
  for (auto& p : params) p.set_grad(cg::randn(p.shape(), kCuda));
  EXPECT_EQ(launches(), 1u);  // first step
  params[5].set_grad(cg::Tensor());
  EXPECT_EQ(launches(), 1u);  // steady state, one parameter skipped
  for (const auto& [n, expected] :
       std::vector<std::pair<int, std::uint64_t>>{{64, 1}, {65, 1}, {256, 1}, {257, 2}, {600, 3}}) {
    cg::TensorList many;
    for (int i = 0; i < n; ++i) many.push_back(leaf(cg::randn({1 + i % 37}, kCuda)));
    many.push_back(leaf(cg::zeros({0}, kCuda)));
    Adam big(many, {.amsgrad = true});
    for (auto& p : many) p.set_grad(cg::randn(p.shape(), kCuda));
    const std::uint64_t before = cugrad::cuda::adam_launch_count();
    big.step();
    EXPECT_EQ(cugrad::cuda::adam_launch_count() - before, expected) << n << " tensors";
  }
}

TEST(AdamGPU, SmallChunksThroughTheLauncher) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(12);
  const cg::cpu::AdamHyper h{.lr = 0.01,
                             .beta1 = 0.9,
                             .beta2 = 0.99,
                             .eps = 1e-6,
                             .weight_decay = 0.02,
                             .amsgrad = true,
                             .maximize = true};
  const cg::Tensor arena = cg::randn({2000}, kCuda);
  for (const int chunk : {4, 12, 1028}) {
    for (const bool first : {true, false}) {
      SCOPED_TRACE(cg::detail::cat("chunk ", chunk, first ? " first step" : " later step"));
      const std::int64_t step = first ? 1 : 4;
      const cg::cpu::AdamStepFactors f = cg::cpu::adam_step_factors(h, step);
      std::vector<cg::Tensor> p, g, m, v, x;
      const auto state = [&](std::int64_t n, bool square) {
        // On a first step the state must be written without being read: NaN would show.
        if (first) return cg::full({n}, NAN, kCuda);
        const cg::Tensor r = cg::randn({n}, kCuda);
        return square ? r * r : r;
      };
      for (const std::int64_t n : {1, 5, 12, 13, 100, 1031}) {
        p.push_back(cg::randn({n}, kCuda));
        g.push_back(cg::randn({n}, kCuda));
        m.push_back(state(n, false));
        v.push_back(state(n, true));
        x.push_back(first ? state(n, true) : v.back() * 1.5f);
      }
      p.push_back(arena.narrow(0, 1, 777));  // misaligned
      g.push_back(cg::randn({777}, kCuda));
      m.push_back(state(777, false));
      v.push_back(state(777, true));
      x.push_back(first ? state(777, true) : v.back() * 0.5f);
      std::vector<cg::Tensor> p64, m64, v64, x64;
      std::vector<cugrad::cuda::AdamTensorArgs> args;
      for (std::size_t i = 0; i < p.size(); ++i) {
        p64.push_back(p[i].cpu().to(cg::DType::float64));
        m64.push_back(m[i].cpu().to(cg::DType::float64));
        v64.push_back(v[i].cpu().to(cg::DType::float64));
        x64.push_back(x[i].cpu().to(cg::DType::float64));
        const cg::Tensor g64 = g[i].cpu().to(cg::DType::float64);
        cg::cpu::adam_update(cg::DType::float64, p64[i].raw_data(), g64.raw_data(), m64[i].raw_data(),
                             v64[i].raw_data(), x64[i].raw_data(), p64[i].numel(), first, h, f);
        args.push_back({p[i].data_ptr<float>(), g[i].data_ptr<float>(), m[i].data_ptr<float>(),
                        v[i].data_ptr<float>(), x[i].data_ptr<float>(), p[i].numel(), first, f});
      }
      const std::uint64_t before = cugrad::cuda::adam_launch_count();
      cugrad::cuda::adam_step(args.data(), args.size(), h, cg::Stream::current(kCuda).handle(), chunk);
      EXPECT_EQ(cugrad::cuda::adam_launch_count() - before, 1u);
      for (std::size_t i = 0; i < p.size(); ++i) {
        EXPECT_TRUE(all_close(p[i], p64[i])) << i;
        EXPECT_TRUE(all_close(m[i], m64[i])) << i;
        EXPECT_TRUE(all_close(v[i], v64[i])) << i;
        EXPECT_TRUE(all_close(x[i], x64[i])) << i;
      }
    }
  }
  cugrad::cuda::AdamTensorArgs one{arena.data_ptr<float>(),
                                   arena.data_ptr<float>(),
                                   arena.data_ptr<float>(),
                                   arena.data_ptr<float>(),
                                   nullptr,
                                   4,
                                   false,
                                   {}};
  EXPECT_THROW(cugrad::cuda::adam_step(&one, 1, {.lr = 0.1}, cg::Stream::current(kCuda).handle(), 6),
               cg::ValueError);
  EXPECT_THROW(cugrad::cuda::adam_step(&one, 1, h, cg::Stream::current(kCuda).handle()),
               cg::ValueError);  // amsgrad without its state
}

TEST(AdamGPU, NonFiniteGradientsPropagateAsInPyTorch) {
  CUGRAD_REQUIRE_GPU();
  // A NaN gradient makes that element NaN; amsgrad's maximum keeps the NaN (torch.maximum).
  cg::Tensor p = leaf(cg::zeros({3}, kCuda));
  cg::Tensor q = leaf(cg::zeros({3}, kCpu, cg::DType::float64));
  Adam gpu({p}, {.lr = 0.1, .amsgrad = true});
  Adam cpu({q}, {.lr = 0.1, .amsgrad = true});
  const std::vector<std::vector<float>> grads = {{1.f, NAN, 2.f}, {1.f, 1.f, INFINITY}};
  for (const auto& gv : grads) {
    p.set_grad(cg::from_vector(gv, {3}, kCuda));
    q.set_grad(cg::from_vector(gv, {3}).to(cg::DType::float64));
    gpu.step();
    cpu.step();
    EXPECT_TRUE(all_close(p, q));
    EXPECT_TRUE(all_close(gpu.max_exp_avg_sq(0), cpu.max_exp_avg_sq(0)));
  }
  EXPECT_TRUE(std::isnan(p.cpu().to_vector<float>()[1]));
  EXPECT_TRUE(std::isnan(gpu.max_exp_avg_sq(0).cpu().to_vector<float>()[1]));
  // A NaN in a loaded max_exp_avg_sq wins over a finite exp_avg_sq (fmax would drop it).
  cg::StateDict state = gpu.state_dict();
  state["max_exp_avg_sq.0"] = cg::from_vector(std::vector<float>{NAN, 1.f, 1.f}, {3});
  cg::Tensor r = leaf(cg::zeros({3}, kCuda));
  cg::Tensor r64 = leaf(cg::zeros({3}, kCpu, cg::DType::float64));
  Adam gpu2({r}, {.amsgrad = true});
  Adam cpu2({r64}, {.amsgrad = true});
  gpu2.load_state_dict(state);
  cpu2.load_state_dict(state);
  // The loaded exp_avg_sq holds NaN and inf where the gradients had them: make it finite.
  gpu2.exp_avg_sq(0).fill_(0.5);
  cpu2.exp_avg_sq(0).fill_(0.5);
  gpu2.exp_avg(0).fill_(0.1);
  cpu2.exp_avg(0).fill_(0.1);
  r.set_grad(cg::ones({3}, kCuda));
  r64.set_grad(cg::ones({3}, kCpu, cg::DType::float64));
  gpu2.step();
  cpu2.step();
  EXPECT_TRUE(all_close(r, r64));
  EXPECT_TRUE(std::isnan(r.cpu().to_vector<float>()[0]));
  EXPECT_FALSE(std::isnan(r.cpu().to_vector<float>()[1]));
}

TEST(AdamGPU, WaitsForGradientsProducedOnAnotherStream) {
  CUGRAD_REQUIRE_GPU();
  const std::int64_t n = 1 << 16;
  cg::Tensor p = leaf(cg::ones({n}, kCuda));
  cg::Tensor g = cg::zeros({n}, kCuda);
  p.set_grad(g);
  Adam opt({p}, {.lr = 0.5, .eps = 0});
  cg::testing::spin_on(cg::Stream::current(kCuda), 50);
  g.fill_(-2.0);
  const cg::Stream side = cg::Stream::create(kCuda);
  {
    cg::StreamGuard on(side);
    opt.step();
  }
  EXPECT_TRUE(all_close(p, cg::full({n}, 1.5, kCuda)));  // 1 - 0.5 * sign(-2)
}

TEST(AdamGPU, StepInsideACudaGraphCaptureIsRefused) {
  CUGRAD_REQUIRE_GPU();
  cg::Tensor p = leaf(cg::randn({100}, kCuda));
  Adam opt({p}, {.lr = 0.1});
  p.set_grad(cg::randn({100}, kCuda));
  opt.step();  // warm-up, outside
  const cg::Stream s = cg::Stream::create(kCuda);
  cg::CudaGraph graph;
  graph.capture_begin(s);
  bool threw = false;
  try {
    opt.step();
  } catch (const cg::Error& e) {
    threw =
        std::string(e.what()).find("Adam.step: cannot be captured into a CUDA graph") != std::string::npos;
  }
  graph.capture_abandon();
  EXPECT_TRUE(threw);
  EXPECT_EQ(opt.step_count(0), 1);  // nothing changed
  opt.step();                       // usable after
  EXPECT_EQ(opt.step_count(0), 2);
}

TEST(AdamGPU, StateDictRoundTrips) {
  CUGRAD_REQUIRE_GPU();
  Trained a = trained(kCuda, true, true);
  // GPU to GPU: continues bit for bit. GPU to CPU float64: to rounding.
  cg::TensorList params, host;
  for (const auto& p : a.params) {
    params.push_back(leaf(p.clone()));
    host.push_back(leaf(p.cpu().to(cg::DType::float64)));
  }
  AdamW b(params, {});
  AdamW c(host, {});
  b.load_state_dict(a.opt->state_dict());
  c.load_state_dict(a.opt->state_dict());
  EXPECT_EQ(b.exp_avg(0).device(), kCuda);
  EXPECT_EQ(c.max_exp_avg_sq(2).dtype(), cg::DType::float64);
  for (int s = 0; s < 3; ++s) {
    for (int i = 0; i < 3; ++i) {
      const cg::Tensor g = cg::randn(params[i].shape(), kCuda);
      a.params[i].set_grad(g);
      params[i].set_grad(g.clone());
      host[i].set_grad(g.cpu().to(cg::DType::float64));
    }
    a.opt->step();
    b.step();
    c.step();
    for (int i = 0; i < 3; ++i) {
      EXPECT_TRUE(all_equal(params[i], a.params[i])) << "step " << s << " parameter " << i;
      EXPECT_TRUE(all_close(a.params[i], host[i])) << "step " << s << " parameter " << i;
    }
  }
}
