// Learning-rate schedules: PyTorch's golden values (StepLR, CosineAnnealingLR past T_max,
// OneCycleLR's lr and momentum), LinearLR, chained schedules and three-phase linear OneCycle
// against values printed by PyTorch, OneCycle past its end, schedules driving SGD's updates,
// initial_lr bookkeeping and argument errors. All on the CPU: schedules are host arithmetic.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <map>
#include <regex>
#include <string>
#include <vector>

#include "cugrad/cugrad.h"
#include "cugrad/optim.h"
#include "tests/support/parity.h"

namespace cg = cugrad;
using cg::optim::AnnealStrategy;
using cg::optim::CosineAnnealingLR;
using cg::optim::LinearLR;
using cg::optim::OneCycleLR;
using cg::optim::SGD;
using cg::optim::StepLR;

namespace {

cg::Tensor leaf(const cg::Tensor& t) {
  cg::Tensor p = t.detach();
  p.requires_grad_(true);
  return p;
}

// A one-parameter SGD as the golden file's generator makes it (lr and momentum given).
struct Fixture {
  cg::TensorList params{leaf(cg::zeros({1}, cg::Device::cpu(), cg::DType::float64))};
  SGD opt;
  Fixture(double lr, double momentum, bool nesterov = false)
      : opt(params, {.lr = lr, .momentum = momentum, .nesterov = nesterov}) {}
};

std::string message_of(const std::function<void()>& f) { return cg::testing::value_error_message(f); }

::testing::AssertionResult fails_with(const std::function<void()>& f, const std::string& what) {
  const std::string m = message_of(f);
  if (!m.empty() && m.find(what) != std::string::npos && m.find("(not a") == std::string::npos)
    return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "expected a ValueError containing '" << what << "', got '" << m << "'";
}

::testing::AssertionResult rel_close(double actual, double expected, double rtol) {
  if (std::fabs(actual - expected) <= rtol * std::fabs(expected)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << actual << " vs " << expected << " (relative error "
                                       << std::fabs(actual - expected) / std::fabs(expected) << ")";
}

// ---- the golden file ----

struct Golden {
  std::map<std::string, cg::Tensor> t;
  std::map<std::string, std::string> metadata;
};

const Golden& golden() {
  static const Golden g = [] {
    auto f = cg::io::read_safetensors(std::string(CUGRAD_GOLDEN_DIR) + "/schedules.safetensors");
    return Golden{std::move(f.tensors), std::move(f.metadata)};
  }();
  return g;
}

std::vector<double> golden_values(const std::string& name) {
  const auto it = golden().t.find(name);
  if (it == golden().t.end()) throw std::runtime_error("golden file lacks " + name);
  EXPECT_EQ(it->second.dtype(), cg::DType::float64);
  return it->second.to_vector<double>();
}

// One schedule's constructor arguments: the metadata's flat JSON object of numbers.
std::map<std::string, double> golden_arguments(const std::string& schedule) {
  std::map<std::string, double> out;
  const std::string json = golden().metadata.at(schedule);
  const std::regex field(R"re("(\w+)"\s*:\s*([-+0-9.eE]+))re");
  for (auto f = std::sregex_iterator(json.begin(), json.end(), field); f != std::sregex_iterator(); ++f)
    out[(*f)[1]] = std::stod((*f)[2]);
  return out;
}

// Walks a schedule as the generator did (record, optimizer step, scheduler step) and
// compares the value in effect at every step with the golden list.
void expect_schedule(cg::optim::LRScheduler& sched, SGD& opt, const std::vector<double>& lrs,
                     const std::vector<double>& momenta = {}) {
  for (std::size_t k = 0; k < lrs.size(); ++k) {
    SCOPED_TRACE("step " + std::to_string(k));
    EXPECT_EQ(sched.last_epoch(), static_cast<std::int64_t>(k));
    EXPECT_TRUE(rel_close(opt.lr(), lrs[k], 1e-12));
    EXPECT_EQ(sched.get_last_lr(), opt.lr());
    if (!momenta.empty()) {
      EXPECT_TRUE(rel_close(opt.momentum(), momenta[k], 1e-12));
    }
    opt.step();  // no gradients: nothing to update, as in the generator
    sched.step();
  }
}

}  // namespace

TEST(LRScheduler, GoldenStepLR) {
  const auto a = golden_arguments("step");
  ASSERT_EQ(a.size(), 3u);
  Fixture f(a.at("lr"), 0.9);
  StepLR sched(f.opt, static_cast<std::int64_t>(a.at("step_size")), a.at("gamma"));
  EXPECT_EQ(sched.step_size(), 7);
  EXPECT_EQ(sched.gamma(), 0.3);
  EXPECT_EQ(sched.base_lr(), 0.1);
  const auto lrs = golden_values("step_lr");
  ASSERT_EQ(lrs.size(), 30u);
  expect_schedule(sched, f.opt, lrs);
  EXPECT_EQ(f.opt.momentum(), 0.9);  // StepLR leaves momentum alone
}

TEST(LRScheduler, GoldenCosineAnnealingPastTMax) {
  const auto a = golden_arguments("cosine");
  ASSERT_EQ(a.size(), 3u);
  Fixture f(a.at("lr"), 0.9);
  CosineAnnealingLR sched(f.opt, static_cast<std::int64_t>(a.at("T_max")), a.at("eta_min"));
  EXPECT_EQ(sched.T_max(), 30);
  const auto lrs = golden_values("cosine_lr");
  ASSERT_EQ(lrs.size(), 45u);  // 15 steps past T_max: the recursive form's restart branch
  expect_schedule(sched, f.opt, lrs);
  // The schedule bottoms out at eta_min at T_max and rises again afterwards.
  EXPECT_TRUE(rel_close(lrs[30], 0.001, 1e-12));
  EXPECT_GT(lrs[44], lrs[31]);
}

TEST(LRScheduler, GoldenOneCycleLrAndMomentum) {
  const auto a = golden_arguments("onecycle");
  ASSERT_EQ(a.size(), 4u);
  Fixture f(a.at("base_lr_initial"), 0.9);
  OneCycleLR sched(f.opt, a.at("max_lr"), static_cast<std::int64_t>(a.at("total_steps")),
                   {.pct_start = a.at("pct_start")});
  EXPECT_EQ(sched.total_steps(), 100);
  EXPECT_EQ(sched.max_lr(), 0.2);
  EXPECT_DOUBLE_EQ(sched.min_lr(), 0.2 / 25 / 1e4);
  EXPECT_DOUBLE_EQ(*f.opt.initial_lr(), 0.2 / 25);  // OneCycle overwrites it
  EXPECT_EQ(sched.base_lr(), *f.opt.initial_lr());
  const auto lrs = golden_values("onecycle_lr");
  const auto momenta = golden_values("onecycle_momentum");
  ASSERT_EQ(lrs.size(), 100u);
  ASSERT_EQ(momenta.size(), 100u);
  expect_schedule(sched, f.opt, lrs, momenta);
  // total_steps calls of step() are allowed (the last extrapolates); one more is an error
  // that changes nothing.
  EXPECT_EQ(sched.last_epoch(), 100);
  const double lr = f.opt.lr(), momentum = f.opt.momentum();
  EXPECT_GT(lr, 0);
  EXPECT_TRUE(fails_with([&] { sched.step(); }, "OneCycleLR.step: tried to step 101 times"));
  EXPECT_TRUE(fails_with([&] { sched.step(); }, "total steps is 100"));
  EXPECT_EQ(sched.last_epoch(), 100);
  EXPECT_EQ(f.opt.lr(), lr);
  EXPECT_EQ(f.opt.momentum(), momentum);
  EXPECT_EQ(sched.get_last_lr(), lr);
}

TEST(LRScheduler, LinearLRMatchesPyTorch) {
  // Printed by torch 1.13 (/usr/bin/python3):
  //   p = torch.zeros(1, requires_grad=True); o = torch.optim.SGD([p], lr=0.1, momentum=0.9)
  //   s = torch.optim.lr_scheduler.LinearLR(o)
  //   [(o.param_groups[0]['lr'], o.step(), s.step())[0] for _ in range(8)]
  {
    Fixture f(0.1, 0.9);
    LinearLR sched(f.opt);
    EXPECT_EQ(sched.start_factor(), 1.0 / 3);
    EXPECT_EQ(sched.end_factor(), 1.0);
    EXPECT_EQ(sched.total_iters(), 5);
    expect_schedule(sched, f.opt,
                    {0.03333333333333333, 0.04666666666666667, 0.060000000000000005, 0.07333333333333335,
                     0.08666666666666668, 0.1, 0.1, 0.1});
  }
  // Same with lr=0.2 and LinearLR(o, start_factor=0.25, end_factor=0.5, total_iters=4), 7 steps.
  {
    Fixture f(0.2, 0.9);
    LinearLR sched(f.opt, 0.25, 0.5, 4);
    expect_schedule(sched, f.opt, {0.05, 0.0625, 0.075, 0.08750000000000001, 0.1, 0.1, 0.1});
  }
  // total_iters = 0: the start factor stays.
  {
    Fixture f(0.2, 0.9);
    LinearLR sched(f.opt, 0.5, 1.0, 0);
    expect_schedule(sched, f.opt, {0.1, 0.1, 0.1});
  }
}

TEST(LRScheduler, ChainedWarmupAndCosineMatchPyTorch) {
  // Two chainable schedules on one optimizer, both stepped each step. The cosine's restart
  // branch (step 7) uses base_lr = the optimizer's initial_lr (0.1), which LinearLR set first.
  // torch 1.13: o = SGD([p], lr=0.1, momentum=0.9); s1 = LinearLR(o, start_factor=0.5, total_iters=3);
  //   s2 = CosineAnnealingLR(o, T_max=6, eta_min=0.01); per step: record lr, o.step(), s1.step(), s2.step()
  const std::vector<double> expected = {0.05,
                                        0.06287071977389243,
                                        0.06513461894323341,
                                        0.05544102848792007,
                                        0.032720514243960046,
                                        0.01608794344328891,
                                        0.01,
                                        0.01602885682970026,
                                        0.03250000000000001,
                                        0.05500000000000004};
  Fixture f(0.1, 0.9);
  LinearLR warmup(f.opt, 0.5, 1.0, 3);
  CosineAnnealingLR cosine(f.opt, 6, 0.01);
  EXPECT_EQ(*f.opt.initial_lr(), 0.1);
  EXPECT_EQ(cosine.base_lr(), 0.1);  // not the warm-up's 0.05
  for (std::size_t k = 0; k < expected.size(); ++k) {
    EXPECT_TRUE(rel_close(f.opt.lr(), expected[k], 1e-12)) << "step " << k;
    f.opt.step();
    warmup.step();
    cosine.step();
  }
}

TEST(LRScheduler, OneCycleThreePhaseLinearMatchesPyTorch) {
  // torch 1.13: o = SGD([p], lr=0.1, momentum=0.9); s = OneCycleLR(o, max_lr=0.5, total_steps=10,
  //   anneal_strategy='linear', three_phase=True, pct_start=0.3); per step: record lr and momentum,
  //   o.step(), s.step(); then s.get_last_lr() after the 10th step, and an 11th s.step() raises.
  const std::vector<double> lrs = {0.02,
                                   0.26,
                                   0.5,
                                   0.26,
                                   0.020000000000000018,
                                   0.016000399999999998,
                                   0.012000799999999999,
                                   0.0080012,
                                   0.0040015999999999975,
                                   1.9999999999985307e-06};
  const std::vector<double> momenta = {
      0.95, 0.8999999999999999, 0.85, 0.8999999999999999, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95};
  Fixture f(0.1, 0.9);
  OneCycleLR sched(f.opt, 0.5, 10,
                   {.pct_start = 0.3, .anneal_strategy = AnnealStrategy::Linear, .three_phase = true});
  expect_schedule(sched, f.opt, lrs, momenta);
  // The 10th step extrapolates past the end: PyTorch's value is negative. get_last_lr reports
  // it; the optimizer, which takes no negative lr, gets 0.
  EXPECT_TRUE(rel_close(sched.get_last_lr(), -0.0039976000000000005, 1e-12));
  EXPECT_EQ(f.opt.lr(), 0.0);
  EXPECT_EQ(f.opt.momentum(), 0.95);
  EXPECT_TRUE(fails_with([&] { sched.step(); }, "tried to step 11 times"));
  EXPECT_EQ(sched.last_epoch(), 10);
}

TEST(LRScheduler, OneCycleWithoutMomentumCyclingLeavesMomentum) {
  Fixture f(0.1, 0.7);
  OneCycleLR sched(f.opt, 1.0, 20, {.cycle_momentum = false, .div_factor = 10, .final_div_factor = 100});
  EXPECT_DOUBLE_EQ(f.opt.lr(), 0.1);
  for (int k = 0; k < 20; ++k) {
    EXPECT_EQ(f.opt.momentum(), 0.7);
    sched.step();
  }
  EXPECT_DOUBLE_EQ(sched.min_lr(), 0.001);
}

TEST(LRScheduler, SchedulesDriveSgdUpdates) {
  // p -= lr * g with g = 1 each step (no momentum): p after k steps is minus the sum of the
  // lrs in effect, which StepLR halves every 2 steps.
  {
    cg::TensorList params{leaf(cg::zeros({3}, cg::Device::cpu(), cg::DType::float64))};
    SGD opt(params, {.lr = 0.8});
    StepLR sched(opt, 2, 0.5);
    const double lrs[] = {0.8, 0.8, 0.4, 0.4, 0.2, 0.2, 0.1};
    double expected = 0;
    for (const double lr : lrs) {
      params[0].set_grad(cg::ones({3}, cg::Device::cpu(), cg::DType::float64));
      opt.step();
      sched.step();
      expected -= lr;
      for (const double v : params[0].to_vector<double>()) EXPECT_DOUBLE_EQ(v, expected);
    }
  }
  // OneCycle's lr and momentum (the golden values) used by SGD with momentum, against a
  // reference written here: buf = g first, then buf = m_k buf + g; p -= lr_k buf.
  {
    const auto a = golden_arguments("onecycle");
    const auto lrs = golden_values("onecycle_lr");
    const auto momenta = golden_values("onecycle_momentum");
    cg::manual_seed(3);
    cg::TensorList params{leaf(cg::randn({5}, cg::Device::cpu(), cg::DType::float64))};
    std::vector<double> p = params[0].to_vector<double>(), buf;
    SGD opt(params, {.lr = a.at("base_lr_initial"), .momentum = 0.9});
    OneCycleLR sched(opt, a.at("max_lr"), static_cast<std::int64_t>(a.at("total_steps")),
                     {.pct_start = a.at("pct_start")});
    for (std::size_t k = 0; k < 40; ++k) {
      const cg::Tensor g = cg::randn({5}, cg::Device::cpu(), cg::DType::float64);
      const std::vector<double> gv = g.to_vector<double>();
      params[0].set_grad(g);
      opt.step();
      sched.step();
      if (buf.empty())
        buf = gv;
      else
        for (std::size_t i = 0; i < 5; ++i) buf[i] = momenta[k] * buf[i] + gv[i];
      for (std::size_t i = 0; i < 5; ++i) p[i] -= lrs[k] * buf[i];
      const std::vector<double> actual = params[0].to_vector<double>();
      for (std::size_t i = 0; i < 5; ++i)
        EXPECT_NEAR(actual[i], p[i], 1e-12 * (1 + std::fabs(p[i]))) << "step " << k << " element " << i;
    }
  }
}

TEST(LRScheduler, InitialLrBookkeeping) {
  Fixture f(0.4, 0.9);
  EXPECT_FALSE(f.opt.initial_lr().has_value());
  {
    StepLR first(f.opt, 1, 0.5);
    EXPECT_EQ(*f.opt.initial_lr(), 0.4);
    first.step();
    EXPECT_EQ(f.opt.lr(), 0.2);
  }
  // A later schedule keeps the first one's initial_lr as its base.
  CosineAnnealingLR second(f.opt, 10);
  EXPECT_EQ(second.base_lr(), 0.4);
  EXPECT_EQ(second.get_last_lr(), 0.2);  // step 0 keeps the current lr
  // A construction that fails leaves initial_lr as it was: OneCycle sets it, then its first
  // momentum (0 with Nesterov) is rejected by SGD.
  Fixture n(0.4, 0.9, /*nesterov=*/true);
  EXPECT_TRUE(
      fails_with([&] { OneCycleLR s(n.opt, 1.0, 10, {.max_momentum = 0.0}); }, "Nesterov momentum requires"));
  EXPECT_FALSE(n.opt.initial_lr().has_value());
  EXPECT_EQ(n.opt.lr(), 0.4);
  EXPECT_EQ(n.opt.momentum(), 0.9);
}

TEST(LRScheduler, RejectedStepChangesNothing) {
  // Nesterov SGD cannot take momentum 0: the step that reaches base_momentum = 0 (the peak,
  // step pct_start * total_steps - 1 = 4) fails, leaving lr, momentum and the step count.
  Fixture f(0.1, 0.9, /*nesterov=*/true);
  OneCycleLR sched(f.opt, 1.0, 10, {.pct_start = 0.5, .base_momentum = 0.0});
  for (int k = 1; k < 4; ++k) sched.step();
  const double lr = f.opt.lr(), momentum = f.opt.momentum(), last = sched.get_last_lr();
  EXPECT_TRUE(fails_with([&] { sched.step(); }, "SGD.set_momentum"));
  EXPECT_EQ(sched.last_epoch(), 3);
  EXPECT_EQ(f.opt.lr(), lr);
  EXPECT_EQ(f.opt.momentum(), momentum);
  EXPECT_EQ(sched.get_last_lr(), last);
}

namespace {

// An optimizer without momentum, for OneCycle's cycle_momentum check.
class PlainDescent : public cg::optim::Optimizer {
 public:
  explicit PlainDescent(cg::TensorList params) : Optimizer(std::move(params), "PlainDescent") {}
  void step() override {}
  double lr() const override { return lr_; }
  void set_lr(double lr) override { lr_ = lr; }
  cg::StateDict state_dict() const override { return {}; }
  void load_state_dict(const cg::StateDict&) override {}

 private:
  double lr_ = 0.1;
};

}  // namespace

TEST(LRScheduler, ArgumentErrors) {
  Fixture f(0.1, 0.9);
  EXPECT_TRUE(fails_with([&] { StepLR s(f.opt, 0); }, "StepLR: step_size must be >= 1, got 0"));
  EXPECT_TRUE(fails_with([&] { StepLR s(f.opt, 3, -0.5); }, "StepLR: gamma must be finite and >= 0"));
  EXPECT_TRUE(fails_with([&] { CosineAnnealingLR s(f.opt, 0); }, "CosineAnnealingLR: T_max must be >= 1"));
  EXPECT_TRUE(fails_with([&] { CosineAnnealingLR s(f.opt, 5, NAN); }, "eta_min must be finite"));
  EXPECT_TRUE(fails_with([&] { LinearLR s(f.opt, 0.0); }, "LinearLR: start_factor must be in (0, 1]"));
  EXPECT_TRUE(fails_with([&] { LinearLR s(f.opt, 1.5); }, "start_factor"));
  EXPECT_TRUE(fails_with([&] { LinearLR s(f.opt, 0.5, 1.5); }, "LinearLR: end_factor must be in [0, 1]"));
  EXPECT_TRUE(fails_with([&] { LinearLR s(f.opt, 0.5, 1.0, -1); }, "total_iters must be >= 0"));
  EXPECT_TRUE(
      fails_with([&] { OneCycleLR s(f.opt, 0.1, 0); }, "OneCycleLR: total_steps must be a positive integer"));
  EXPECT_TRUE(fails_with([&] { OneCycleLR s(f.opt, 0.0, 10); }, "OneCycleLR: max_lr must be finite and > 0"));
  EXPECT_TRUE(
      fails_with([&] { OneCycleLR s(f.opt, 0.1, 10, {.pct_start = 1.5}); }, "pct_start must be between"));
  EXPECT_TRUE(fails_with([&] { OneCycleLR s(f.opt, 0.1, 10, {.div_factor = 0}); }, "div_factor"));
  EXPECT_TRUE(
      fails_with([&] { OneCycleLR s(f.opt, 0.1, 10, {.final_div_factor = INFINITY}); }, "final_div_factor"));
  EXPECT_TRUE(fails_with([&] { OneCycleLR s(f.opt, 0.1, 10, {.base_momentum = -1}); }, "base_momentum"));
  // PyTorch divides by zero when pct_start * total_steps == 1 (a first phase of length 0).
  EXPECT_TRUE(fails_with([&] { OneCycleLR s(f.opt, 0.1, 4, {.pct_start = 0.25}); }, "zero length"));
  // None of the failures touched the optimizer.
  EXPECT_EQ(f.opt.lr(), 0.1);
  EXPECT_EQ(f.opt.momentum(), 0.9);
  EXPECT_FALSE(f.opt.initial_lr().has_value());

  PlainDescent plain({leaf(cg::zeros({2}))});
  EXPECT_FALSE(plain.has_momentum());
  EXPECT_TRUE(fails_with([&] { plain.set_momentum(0.5); }, "PlainDescent has no momentum"));
  EXPECT_TRUE(fails_with([&] { OneCycleLR s(plain, 0.1, 10); }, "PlainDescent has no momentum to cycle"));
  OneCycleLR ok(plain, 0.1, 10, {.cycle_momentum = false});
  EXPECT_DOUBLE_EQ(plain.lr(), 0.1 / 25);
}
