// Autograd engine: backward and accumulation, autograd::grad, grad modes, freezing (pruned
// graphs), saved-tensor version checks, in-place rules, tensor hooks, anomaly mode, and the
// stream behaviour of backward on the GPU.
#include <limits>
#include <gtest/gtest.h>

#include <atomic>

#include "cugrad/cugrad.h"
#include "host/autograd/functions.h"
#include "tests/support/gpu.h"
#include "tests/support/parity.h"

namespace cg = cugrad;
using cg::testing::all_close;

namespace {
cg::Tensor leaf(std::vector<float> v, cg::Shape s) { return cg::from_vector(v, s).requires_grad_(); }
cg::Tensor f32(std::vector<float> v, cg::Shape s) { return cg::from_vector(v, s); }
std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const cg::Error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(Autograd, ChainRule) {
  auto x = leaf({1, 2, 3}, {3});
  auto y = x * x + x * 3.0;  // dy/dx = 2x + 3
  EXPECT_TRUE(y.requires_grad());
  EXPECT_FALSE(y.is_leaf());
  EXPECT_TRUE(x.is_leaf());
  EXPECT_EQ(y.grad_fn_name(), "AddBackward");
  y.backward(cg::ones({3}));
  EXPECT_TRUE(all_close(x.grad(), f32({5, 7, 9}, {3})));
}

TEST(Autograd, BroadcastGradientsAreSummedBack) {
  auto a = leaf({1, 2, 3}, {3, 1});
  auto b = leaf({10, 20, 30, 40}, {4});
  auto y = a * b;  // [3, 4]
  y.backward(cg::ones({3, 4}));
  EXPECT_TRUE(all_close(a.grad(), f32({100, 100, 100}, {3, 1})));
  EXPECT_TRUE(all_close(b.grad(), f32({6, 6, 6, 6}, {4})));
}

TEST(Autograd, AccumulatesAcrossCallsAndUses) {
  auto x = leaf({2}, {1});
  (x * x).backward(cg::ones({1}));  // x used twice in one node: 2x = 4
  EXPECT_FLOAT_EQ(x.grad().item<float>(), 4.f);
  (x * 5.0).backward(cg::ones({1}));
  EXPECT_FLOAT_EQ(x.grad().item<float>(), 9.f);  // accumulated
  auto y = x + x;  // two edges into the same leaf in one backward
  auto z = y * y;  // 4x^2: dz/dx = 8x = 16
  x.set_grad(cg::Tensor());
  EXPECT_FALSE(x.grad().defined());
  z.backward(cg::ones({1}));
  EXPECT_FLOAT_EQ(x.grad().item<float>(), 16.f);
}

TEST(Autograd, BackwardErrors) {
  auto x = leaf({1, 2}, {2});
  auto y = x * x;
  auto m = message_of([&] { y.backward(); });
  EXPECT_NE(m.find("non-scalar"), std::string::npos) << m;
  y.backward(cg::ones({2}));
  m = message_of([&] { y.backward(cg::ones({2})); });
  EXPECT_NE(m.find("second time"), std::string::npos) << m;
  EXPECT_NE(m.find("MulBackward"), std::string::npos) << m;
  m = message_of([&] { cg::ones({2}).backward(cg::ones({2})); });
  EXPECT_NE(m.find("does not require grad"), std::string::npos) << m;
  m = message_of([&] { (x * 2.0).backward(cg::ones({3})); });
  EXPECT_NE(m.find("does not match"), std::string::npos) << m;
  EXPECT_THROW(cg::zeros({2}, cg::Device::cpu(), cg::DType::int64).requires_grad_(), cg::ValueError);
  EXPECT_THROW((x * 2.0).requires_grad_(false), cg::ValueError);  // not a leaf
}

TEST(Autograd, RetainGraphAllowsASecondBackward) {
  auto x = leaf({3}, {1});
  auto y = x * x;
  y.backward(cg::ones({1}), /*retain_graph=*/true);
  y.backward(cg::ones({1}));
  EXPECT_FLOAT_EQ(x.grad().item<float>(), 12.f);
}

TEST(Autograd, InPlaceChangeOfSavedTensorIsAnError) {
  auto x = leaf({1, 2}, {2});
  auto h = x * 2.0;
  auto y = h * h;  // saves h
  {
    cg::NoGradGuard ng;
    h.add_(1.0);
  }
  const auto m = message_of([&] { y.backward(cg::ones({2})); });
  EXPECT_NE(m.find("MulBackward"), std::string::npos) << m;
  EXPECT_NE(m.find("in-place"), std::string::npos) << m;
}

TEST(Autograd, InPlaceRules) {
  auto w = leaf({1, 2}, {2});
  auto m = message_of([&] { w.add_(1.0); });
  EXPECT_NE(m.find("leaf"), std::string::npos) << m;
  {
    cg::NoGradGuard ng;
    w.add_(1.0);  // allowed for updates
  }
  EXPECT_TRUE(all_close(w, f32({2, 3}, {2})));
  // In place on a non-leaf under autograd moves the history: y = (2w + 1) * 3.
  auto y = w * 2.0;
  y.add_(1.0).mul_(3.0);
  EXPECT_EQ(y.grad_fn_name(), "MulBackward");
  y.backward(cg::ones({2}));
  EXPECT_TRUE(all_close(w.grad(), f32({6, 6}, {2})));
  EXPECT_TRUE(all_close(y, f32({15, 21}, {2})));
  // An in-place op that reads a tensor requiring grad makes the target require grad.
  auto t = cg::zeros({2});
  auto w2 = leaf({1, 1}, {2});
  t.add_(w2 * 4.0);
  EXPECT_TRUE(t.requires_grad());
  t.backward(cg::ones({2}));
  EXPECT_TRUE(all_close(w2.grad(), f32({4, 4}, {2})));
}

TEST(Autograd, GradModeGuards) {
  auto x = leaf({1}, {1});
  {
    cg::NoGradGuard ng;
    EXPECT_FALSE(cg::is_grad_enabled());
    auto y = x * 2.0;
    EXPECT_FALSE(y.requires_grad());
    {
      cg::EnableGradGuard eg;
      EXPECT_TRUE((x * 2.0).requires_grad());
    }
    EXPECT_FALSE((x * 2.0).requires_grad());
  }
  EXPECT_TRUE(cg::is_grad_enabled());
  auto d = (x * 2.0).detach();
  EXPECT_FALSE(d.requires_grad());
  EXPECT_TRUE(d.is_leaf());
}

TEST(Autograd, FreezingPrunesTheGraph) {
  auto x = f32({1, 2, 3}, {3});
  auto w1 = f32({0.5f, 0.5f, 0.5f}, {3});  // frozen
  auto w2 = leaf({1, 2, 3}, {3});           // trainable
  auto h = (x * w1).relu().exp();          // nothing here requires grad: no nodes
  EXPECT_FALSE(h.requires_grad());
  EXPECT_EQ(h.grad_fn_name(), "");
  auto y = h * w2;
  y.backward(cg::ones({3}));
  const auto& ran = cg::autograd::last_backward_stats().executed;
  ASSERT_EQ(ran.size(), 2u);  // MulBackward and w2's accumulator only
  EXPECT_EQ(ran[0], "MulBackward");
  EXPECT_EQ(ran[1], "AccumulateGrad");
  EXPECT_TRUE(all_close(w2.grad(), h));
  // A frozen layer between two trainable ones: gradients flow through it to the lower one,
  // but no weight gradient is computed for it.
  auto w0 = leaf({1, 1, 1}, {3});
  auto a = x * w0;
  auto frozen = f32({2, 2, 2}, {3});
  auto b = a * frozen;
  b.backward(cg::ones({3}));
  EXPECT_TRUE(all_close(w0.grad(), f32({2, 4, 6}, {3})));
  EXPECT_EQ(cg::autograd::last_backward_stats().executed.size(), 3u);
}

TEST(Autograd, GradWithRespectToInputs) {
  auto x = leaf({1, 2}, {2});
  auto w = leaf({3, 4}, {2});
  auto y = x * w;
  auto g = cg::autograd::grad({y}, {x}, {cg::ones({2})}, /*retain_graph=*/true);
  ASSERT_EQ(g.size(), 1u);
  EXPECT_TRUE(all_close(g[0], f32({3, 4}, {2})));
  EXPECT_FALSE(x.grad().defined());  // .grad untouched
  EXPECT_FALSE(w.grad().defined());
  // Only the needed part runs: w's accumulator does not.
  for (const auto& name : cg::autograd::last_backward_stats().executed) EXPECT_NE(name, "AccumulateGrad");
  // Non-leaf input.
  auto h = x * 2.0;
  auto z = h * h;
  auto gh = cg::autograd::grad({z}, {h}, {cg::ones({2})});
  EXPECT_TRUE(all_close(gh[0], f32({4, 8}, {2})));
  // Unused inputs.
  auto u = leaf({1}, {1});
  auto y2 = x * 3.0;
  EXPECT_THROW(cg::autograd::grad({y2}, {u}, {cg::ones({2})}, true), cg::ValueError);
  auto gu = cg::autograd::grad({y2}, {x, u}, {cg::ones({2})}, false, /*allow_unused=*/true);
  EXPECT_TRUE(all_close(gu[0], f32({3, 3}, {2})));
  EXPECT_FALSE(gu[1].defined());
}

TEST(Autograd, GradSkipsHooksOutsideThePath) {
  auto x = leaf({1, 2}, {2});
  auto w = leaf({3, 4}, {2});
  auto wb = w * 1.0;  // on the path to y, but not to x
  int fired = 0;
  auto handle = wb.register_hook([&](const cg::Tensor&) -> std::optional<cg::Tensor> {
    ++fired;
    return std::nullopt;
  });
  auto y = x * wb;
  (void)cg::autograd::grad({y}, {x}, {cg::ones({2})}, true);
  EXPECT_EQ(fired, 0);
  y.backward(cg::ones({2}));
  EXPECT_EQ(fired, 1);
  handle.remove();
}

TEST(TensorHooks, ReplaceObserveOrderAndRemove) {
  auto x = leaf({1, 2}, {2});
  std::vector<std::string> order;
  auto h1 = x.register_hook([&](const cg::Tensor& g) -> std::optional<cg::Tensor> {
    order.push_back("double");
    return g * 2.0;
  });
  auto h2 = x.register_hook([&](const cg::Tensor& g) -> std::optional<cg::Tensor> {
    order.push_back("plus1");
    return g + 1.0;
  });
  cg::Tensor seen;
  auto h3 = x.register_observer_hook([&](const cg::Tensor& g) {
    order.push_back("observe");
    seen = g.clone();
  });
  (x * 3.0).backward(cg::ones({2}));
  EXPECT_EQ(order, (std::vector<std::string>{"double", "plus1", "observe"}));
  EXPECT_TRUE(all_close(x.grad(), f32({7, 7}, {2})));  // 3*2 + 1
  EXPECT_TRUE(all_close(seen, f32({7, 7}, {2})));
  h1.remove();
  h1.remove();  // idempotent
  x.set_grad(cg::Tensor());
  (x * 3.0).backward(cg::ones({2}));
  EXPECT_TRUE(all_close(x.grad(), f32({4, 4}, {2})));
  h2.remove();
  h3.remove();
  x.set_grad(cg::Tensor());
  order.clear();
  (x * 3.0).backward(cg::ones({2}));
  EXPECT_TRUE(order.empty());
  EXPECT_TRUE(all_close(x.grad(), f32({3, 3}, {2})));
}

TEST(TensorHooks, NonLeafHookAndRetainGrad) {
  auto x = leaf({1, 2}, {2});
  auto h = x * 2.0;
  h.retain_grad();
  auto hk = h.register_hook([](const cg::Tensor& g) -> std::optional<cg::Tensor> { return g * 10.0; });
  auto y = h * h;  // dy/dh = 2h = [4, 8]
  y.backward(cg::ones({2}));
  EXPECT_TRUE(all_close(h.grad(), f32({40, 80}, {2})));   // retained after the replacing hook
  EXPECT_TRUE(all_close(x.grad(), f32({80, 160}, {2})));  // replacement flows on
}

TEST(TensorHooks, ObserverCannotModify) {
  auto x = leaf({1}, {1});
  auto h = x.register_observer_hook([](const cg::Tensor& g) {
    cg::Tensor t = g;
    cg::NoGradGuard ng;
    t.mul_(0.0);
  });
  const auto m = message_of([&] { (x * 2.0).backward(cg::ones({1})); });
  EXPECT_NE(m.find("observer"), std::string::npos) << m;
}

TEST(TensorHooks, PostAccumulateSeesUpdatedGrad) {
  auto x = leaf({1, 2}, {2});
  std::vector<float> seen;
  auto h = x.register_post_accumulate_grad_hook([&](cg::Tensor& t) { seen = t.grad().to_vector<float>(); });
  (x * 4.0).backward(cg::ones({2}));
  EXPECT_EQ(seen, (std::vector<float>{4, 4}));
  (x * 1.0).backward(cg::ones({2}));
  EXPECT_EQ(seen, (std::vector<float>{5, 5}));
  EXPECT_THROW((x * 1.0).register_post_accumulate_grad_hook([](cg::Tensor&) {}), cg::ValueError);
  EXPECT_THROW(cg::zeros({1}).register_hook([](const cg::Tensor&) { return std::optional<cg::Tensor>(); }),
               cg::ValueError);
}

TEST(TensorHooks, ThrowingHookReachesCallerAndEngineStaysUsable) {
  auto x = leaf({1}, {1});
  auto h = x.register_hook([](const cg::Tensor&) -> std::optional<cg::Tensor> { throw std::runtime_error("boom"); });
  auto y = x * 2.0;
  EXPECT_THROW(y.backward(cg::ones({1}), true), std::runtime_error);
  h.remove();
  y.backward(cg::ones({1}));
  EXPECT_FLOAT_EQ(x.grad().item<float>(), 2.f);
  auto z = x * 5.0;
  z.backward(cg::ones({1}));
  EXPECT_FLOAT_EQ(x.grad().item<float>(), 7.f);
}

TEST(Autograd, AnomalyModeNamesTheOp) {
  auto x = leaf({0, 1}, {2});
  auto y = x.log();  // d/dx = 1/x = inf at 0
  {
    cg::autograd::DetectAnomalyGuard anomaly;
    const auto m = message_of([&] { y.backward(cg::ones({2}), true); });
    EXPECT_NE(m.find("LogBackward"), std::string::npos) << m;
    EXPECT_NE(m.find("Inf"), std::string::npos) << m;
  }
  EXPECT_FALSE(cg::autograd::is_anomaly_enabled());
  EXPECT_NO_THROW(y.backward(cg::ones({2})));  // off: no check
}

TEST(Gradcheck, DetectsAWrongBackward) {
  // A node whose backward is deliberately off by a factor of 2 must fail gradcheck.
  auto wrong = [](const cg::TensorList& in) {
    cg::Tensor out;
    {
      cg::NoGradGuard ng;
      out = in[0] * 3.0;
    }
    cg::autograd::record_lambda("WrongBackward", {in[0]}, {out},
                                [](const cg::TensorList& g, const cg::TensorList&, const cg::autograd::Node&) {
                                  return cg::TensorList{g[0] * 6.0};
                                });
    return out;
  };
  auto x = cg::randn({4}, cg::Device::cpu(), cg::DType::float64).requires_grad_();
  EXPECT_NE(cg::autograd::gradcheck(wrong, {x}), "");
  EXPECT_EQ(cg::autograd::gradcheck([](const cg::TensorList& in) { return in[0] * 3.0; }, {x}), "");
}

// ---- gradcheck of every differentiable op (float64, CPU) ----

namespace {
cg::Tensor r64(cg::Shape s) { return cg::randn(s, cg::Device::cpu(), cg::DType::float64).requires_grad_(); }
cg::Tensor pos64(cg::Shape s) {
  cg::Tensor t;
  {
    cg::NoGradGuard ng;
    t = cg::rand(s, cg::Device::cpu(), cg::DType::float64) + 0.5;
  }
  return t.requires_grad_();
}
void expect_gradcheck(const char* name, const std::function<cg::Tensor(const cg::TensorList&)>& f,
                      const cg::TensorList& in) {
  const std::string r = cg::autograd::gradcheck(f, in);
  EXPECT_EQ(r, "") << name;
}
}  // namespace

TEST(Gradcheck, ElementwiseOps) {
  cg::manual_seed(3);
  auto a = r64({3, 4}), b = r64({4}), c = r64({3, 1}), p = pos64({3, 4});
  expect_gradcheck("add", [](const cg::TensorList& t) { return cg::add(t[0], t[1], 0.7); }, {a, b});
  expect_gradcheck("sub", [](const cg::TensorList& t) { return t[0] - t[1]; }, {a, c});
  expect_gradcheck("mul", [](const cg::TensorList& t) { return t[0] * t[1]; }, {a, c});
  expect_gradcheck("div", [](const cg::TensorList& t) { return t[0] / t[1]; }, {a, p});
  expect_gradcheck("maximum", [](const cg::TensorList& t) { return cg::maximum(t[0], t[1]); }, {a, b});
  expect_gradcheck("minimum", [](const cg::TensorList& t) { return cg::minimum(t[0], t[1]); }, {a, c});
  expect_gradcheck("where", [](const cg::TensorList& t) { return cg::where(cg::gt(t[0], 0.0), t[0], t[1]); }, {a, b});
  expect_gradcheck("neg", [](const cg::TensorList& t) { return -t[0]; }, {a});
  expect_gradcheck("exp", [](const cg::TensorList& t) { return t[0].exp(); }, {a});
  expect_gradcheck("log", [](const cg::TensorList& t) { return t[0].log(); }, {p});
  expect_gradcheck("sqrt", [](const cg::TensorList& t) { return t[0].sqrt(); }, {p});
  expect_gradcheck("rsqrt", [](const cg::TensorList& t) { return t[0].rsqrt(); }, {p});
  expect_gradcheck("abs", [](const cg::TensorList& t) { return t[0].abs(); }, {a});
  expect_gradcheck("relu", [](const cg::TensorList& t) { return t[0].relu(); }, {a});
  expect_gradcheck("pow", [](const cg::TensorList& t) { return t[0].pow(2.5); }, {p});
  expect_gradcheck("pow2", [](const cg::TensorList& t) { return t[0].pow(2.0); }, {a});
  expect_gradcheck("clamp", [](const cg::TensorList& t) { return t[0].clamp(-0.5, 0.5); }, {a});
  expect_gradcheck("scalars", [](const cg::TensorList& t) { return (2.0 - t[0] * 3.0 + 1.0) / 4.0; }, {a});
  expect_gradcheck("rdiv", [](const cg::TensorList& t) { return 2.0 / t[0]; }, {p});
  expect_gradcheck("inplace", [](const cg::TensorList& t) {
    auto y = t[0] * 1.0;
    y.mul_(t[1]).add_(t[0]).relu_();
    return y;
  }, {a, b});
}

TEST(Gradcheck, ViewsAndCopies) {
  cg::manual_seed(4);
  auto a = r64({3, 4, 2});
  expect_gradcheck("reshape", [](const cg::TensorList& t) { return t[0].reshape({4, -1}) * 2.0; }, {a});
  expect_gradcheck("flatten", [](const cg::TensorList& t) { return t[0].flatten(1) * 2.0; }, {a});
  expect_gradcheck("unsqueeze", [](const cg::TensorList& t) { return t[0].unsqueeze(1).squeeze() * 2.0; }, {a});
  expect_gradcheck("narrow", [](const cg::TensorList& t) { return t[0].narrow(0, 1, 2) * 2.0; }, {a});
  expect_gradcheck("select", [](const cg::TensorList& t) { return t[0].select(0, -1) * 2.0; }, {a});
  expect_gradcheck("transpose", [](const cg::TensorList& t) { return t[0].transpose(0, 2) * 2.0; }, {a});
  expect_gradcheck("clone", [](const cg::TensorList& t) { return t[0].clone() * t[0]; }, {a});
  expect_gradcheck("copy_", [](const cg::TensorList& t) {
    auto y = cg::zeros({3, 4, 2}, cg::Device::cpu(), cg::DType::float64);
    y.copy_(t[0] * 3.0);
    return y * t[0];
  }, {a});
}

TEST(Gradcheck, Matmul) {
  cg::manual_seed(5);
  expect_gradcheck("2d", [](const cg::TensorList& t) { return cg::matmul(t[0], t[1]); }, {r64({3, 4}), r64({4, 5})});
  expect_gradcheck("batched", [](const cg::TensorList& t) { return cg::matmul(t[0], t[1]); },
                   {r64({2, 3, 4}), r64({2, 4, 5})});
  expect_gradcheck("shared weight", [](const cg::TensorList& t) { return cg::matmul(t[0], t[1]); },
                   {r64({2, 3, 4}), r64({4, 5})});
  expect_gradcheck("shared lhs", [](const cg::TensorList& t) { return cg::matmul(t[0], t[1]); },
                   {r64({3, 4}), r64({2, 4, 5})});
  expect_gradcheck("batch of one", [](const cg::TensorList& t) { return cg::matmul(t[0], t[1]); },
                   {r64({1, 3, 4}), r64({2, 4, 5})});
  // Only one operand requires grad: the other gradient is not computed.
  auto frozen = cg::randn({4, 5}, cg::Device::cpu(), cg::DType::float64);
  expect_gradcheck("frozen rhs", [&](const cg::TensorList& t) { return cg::matmul(t[0], frozen); }, {r64({3, 4})});
}

TEST(Gradcheck, Reductions) {
  cg::manual_seed(6);
  auto a = r64({3, 4, 5}), s = r64({});
  for (std::int64_t d : {0, 1, 2, -1}) {
    for (bool keep : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "dim " << d << " keepdim " << keep);
      expect_gradcheck("sum", [=](const cg::TensorList& t) { return t[0].sum(d, keep) * 1.5; }, {a});
      expect_gradcheck("mean", [=](const cg::TensorList& t) { return t[0].mean(d, keep); }, {a});
      expect_gradcheck("amax", [=](const cg::TensorList& t) { return t[0].max(d, keep); }, {a});
      expect_gradcheck("amin", [=](const cg::TensorList& t) { return t[0].min(d, keep); }, {a});
      expect_gradcheck("var", [=](const cg::TensorList& t) { return cg::var(t[0], d, true, keep); }, {a});
      expect_gradcheck("var biased", [=](const cg::TensorList& t) { return cg::var(t[0], d, false, keep); }, {a});
      expect_gradcheck("std", [=](const cg::TensorList& t) { return cg::std(t[0], d, true, keep); }, {a});
      expect_gradcheck("norm2", [=](const cg::TensorList& t) { return t[0].norm(2.0, d, keep); }, {a});
      expect_gradcheck("norm1", [=](const cg::TensorList& t) { return t[0].norm(1.0, d, keep); }, {a});
      expect_gradcheck("norm3", [=](const cg::TensorList& t) { return t[0].norm(3.0, d, keep); }, {a});
      expect_gradcheck("norm inf", [=](const cg::TensorList& t) {
        return t[0].norm(std::numeric_limits<double>::infinity(), d, keep);
      }, {a});
    }
  }
  expect_gradcheck("sum all", [](const cg::TensorList& t) { return t[0].sum() * t[0]; }, {a});
  expect_gradcheck("mean all", [](const cg::TensorList& t) { return t[0].mean(); }, {a});
  expect_gradcheck("max all", [](const cg::TensorList& t) { return t[0].max(); }, {a});
  expect_gradcheck("min all", [](const cg::TensorList& t) { return t[0].min(); }, {a});
  expect_gradcheck("var all", [](const cg::TensorList& t) { return t[0].var(); }, {a});
  expect_gradcheck("std all", [](const cg::TensorList& t) { return t[0].std(false); }, {a});
  expect_gradcheck("norm all", [](const cg::TensorList& t) { return t[0].norm(); }, {a});
  expect_gradcheck("0-dim sum", [](const cg::TensorList& t) { return t[0].sum(0) * 2.0; }, {s});
  expect_gradcheck("0-dim max", [](const cg::TensorList& t) { return t[0].max(); }, {s});
  expect_gradcheck("chain", [](const cg::TensorList& t) {
    return (t[0] - t[0].mean(1, true)).pow(2.0).sum(1).sqrt().mean();
  }, {a});
}

TEST(AutogradReductions, TiesShareTheGradientAndZerosGiveZero) {
  // amax with a tie splits the gradient evenly (PyTorch's amax rule).
  auto x = cg::from_vector(std::vector<double>{1, 3, 3, 2}, {4}).requires_grad_();
  x.max().backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{0, 0.5, 0.5, 0}));
  auto y = cg::from_vector(std::vector<double>{4, 1, 4, 1, 0, 0}, {2, 3}).requires_grad_();
  y.min(1).sum().backward();
  EXPECT_EQ(y.grad().to_vector<double>(), (std::vector<double>{0, 1, 0, 0, 0.5, 0.5}));
  // The norm and std of zeros have a zero (not NaN) gradient.
  auto z = cg::zeros({5}, cg::Device::cpu(), cg::DType::float64).requires_grad_();
  (z.norm() + z.std()).backward();
  EXPECT_EQ(z.grad().to_vector<double>(), std::vector<double>(5, 0.0));
  // Integer sums and argmax record nothing.
  auto f = cg::randn({3, 4}).requires_grad_();
  EXPECT_FALSE(f.argmax(1).requires_grad());
  EXPECT_TRUE(f.sum(1).requires_grad());
  EXPECT_EQ(f.sum(1).grad_fn_name(), "SumBackward");
  {
    cg::NoGradGuard ng;
    EXPECT_FALSE(f.sum().requires_grad());
  }
}

// ---- GPU ----

TEST(AutogradGPU, ReductionGradientsMatchCpu) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(8);
  auto a_h = cg::randn({7, 33, 5});
  auto run = [&](cg::Device dev) {
    auto a = a_h.to(dev).detach().requires_grad_();
    auto y = a.sum(1).mean() + a.max(2).sum() + a.min(0).sum() + cg::var(a, 1).sum() + cg::std(a, 2, false).sum() +
             a.norm(2.0, 0).sum() + a.norm(3.0) + a.mean(2, true).sum();
    y.backward();
    return a.grad().cpu();
  };
  EXPECT_TRUE(cg::testing::norm_close(run(cg::Device::cuda(0)), run(cg::Device::cpu()), 1e-5));
}

TEST(AutogradGPU, CudaGradientsMatchCpu) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(7);
  auto a_h = cg::randn({33, 7}), b_h = cg::randn({7});
  auto run = [&](cg::Device dev) {
    auto a = a_h.to(dev).detach().requires_grad_(), b = b_h.to(dev).detach().requires_grad_();
    auto y = (a * b + a.exp()).relu() / (b.abs() + 1.0);
    y.backward(cg::ones({33, 7}, dev));
    return std::make_pair(a.grad().cpu(), b.grad().cpu());
  };
  auto [ga_c, gb_c] = run(cg::Device::cpu());
  auto [ga_g, gb_g] = run(cg::Device::cuda(0));
  EXPECT_TRUE(all_close(ga_g, ga_c, {1e-5, 1e-5}));
  EXPECT_TRUE(all_close(gb_g, gb_c, {1e-4, 1e-5}));
}

TEST(AutogradGPU, TwoStreamForwardGivesSingleStreamGradients) {
  CUGRAD_REQUIRE_GPU();
  const cg::Device gpu = cg::Device::cuda(0);
  cg::manual_seed(11);
  const auto x_h = cg::randn({1 << 20}), w1_h = cg::randn({1 << 20}), w2_h = cg::randn({1 << 20});
  auto single = [&] {
    auto w1 = w1_h.to(gpu).requires_grad_(), w2 = w2_h.to(gpu).requires_grad_();
    auto x = x_h.to(gpu);
    auto y = (x * w1).relu() * w2 + (x * w2).exp() * 0.01;
    y.backward(cg::ones({1 << 20}, gpu));
    return std::make_pair(w1.grad().cpu(), w2.grad().cpu());
  };
  const auto [g1, g2] = single();
  cg::Stream s1 = cg::Stream::create(gpu), s2 = cg::Stream::create(gpu);
  auto w1 = w1_h.to(gpu).requires_grad_(), w2 = w2_h.to(gpu).requires_grad_();
  auto x = x_h.to(gpu);
  cg::Tensor left, right;
  {
    cg::StreamGuard g(s1);
    cg::testing::spin_on(s1, 30.0);  // the slow branch
    left = (x * w1).relu() * w2;
  }
  {
    cg::StreamGuard g(s2);
    right = (x * w2).exp() * 0.01;
  }
  auto y = left + right;  // on the default stream
  y.backward(cg::ones({1 << 20}, gpu));
  EXPECT_TRUE(cg::testing::all_equal(w1.grad(), g1));
  EXPECT_TRUE(cg::testing::all_equal(w2.grad(), g2));
}

// ---- module-level backward hooks (engine part) ----

#include "host/autograd/backward_hooks.h"

namespace {
struct HookLog {
  std::vector<std::string> events;
  cg::TensorList grad_inputs, grad_outputs;
};

// A "module" y = x * w + z over wrapped inputs/outputs.
cg::Tensor hooked_block(cg::autograd::BackwardHookSet& set, const cg::Tensor& x, const cg::Tensor& z,
                        const cg::Tensor& w) {
  auto in = set.wrap_inputs({x, z});
  auto y = in[0] * w + in[1];
  return set.wrap_outputs({y})[0];
}
}  // namespace

TEST(BackwardHooks, FireWithInputAndOutputGradients) {
  HookLog log;
  cg::autograd::BackwardHookSet set(
      {[&](const cg::TensorList& go) -> std::optional<cg::TensorList> {
        log.events.push_back("pre");
        log.grad_outputs = go;
        return std::nullopt;
      }},
      {[&](const cg::TensorList& gi, const cg::TensorList& go) -> std::optional<cg::TensorList> {
        log.events.push_back("hook");
        log.grad_inputs = gi;
        EXPECT_TRUE(all_close(go[0], f32({1, 1}, {2})));
        return std::nullopt;
      }});
  auto x = leaf({1, 2}, {2});
  auto w = leaf({3, 4}, {2});
  auto z = f32({0, 0}, {2});  // needs no grad
  auto y = hooked_block(set, x, z, w);
  y.backward(cg::ones({2}));
  EXPECT_EQ(log.events, (std::vector<std::string>{"pre", "hook"}));
  ASSERT_EQ(log.grad_inputs.size(), 2u);
  EXPECT_TRUE(all_close(log.grad_inputs[0], f32({3, 4}, {2})));
  EXPECT_FALSE(log.grad_inputs[1].defined());  // absent: z needs no grad
  EXPECT_TRUE(all_close(x.grad(), f32({3, 4}, {2})));
  EXPECT_TRUE(all_close(w.grad(), f32({1, 2}, {2})));
}

TEST(BackwardHooks, ReplaceGradients) {
  cg::autograd::BackwardHookSet set(
      {[](const cg::TensorList& go) -> std::optional<cg::TensorList> { return cg::TensorList{go[0] * 2.0}; }},
      {[](const cg::TensorList& gi, const cg::TensorList&) -> std::optional<cg::TensorList> {
        return cg::TensorList{gi[0] + 100.0, gi[1]};
      }});
  auto x = leaf({1, 2}, {2});
  auto w = leaf({3, 4}, {2});
  auto y = hooked_block(set, x, f32({0, 0}, {2}), w);
  y.backward(cg::ones({2}));
  EXPECT_TRUE(all_close(w.grad(), f32({2, 4}, {2})));      // doubled output grad reaches w
  EXPECT_TRUE(all_close(x.grad(), f32({106, 108}, {2})));  // 2*w + 100
}

TEST(BackwardHooks, FrozenInputsStillFireWithAbsentEntries) {
  int fired = 0;
  cg::autograd::BackwardHookSet set({}, {[&](const cg::TensorList& gi, const cg::TensorList& go) -> std::optional<cg::TensorList> {
    ++fired;
    EXPECT_FALSE(gi[0].defined());
    EXPECT_FALSE(gi[1].defined());
    EXPECT_TRUE(go[0].defined());
    return std::nullopt;
  }});
  auto w = leaf({3, 4}, {2});
  auto y = hooked_block(set, f32({1, 2}, {2}), f32({0, 0}, {2}), w);  // only the weight trains
  y.backward(cg::ones({2}));
  EXPECT_EQ(fired, 1);
  EXPECT_TRUE(all_close(w.grad(), f32({1, 2}, {2})));
}

TEST(BackwardHooks, ThrowingHookPropagates) {
  cg::autograd::BackwardHookSet set({}, {[](const cg::TensorList&, const cg::TensorList&) -> std::optional<cg::TensorList> {
    throw std::runtime_error("module hook failed");
  }});
  auto x = leaf({1}, {1});
  auto y = hooked_block(set, x, f32({0}, {1}), f32({2}, {1}));
  EXPECT_THROW(y.backward(cg::ones({1})), std::runtime_error);
  auto again = x * 3.0;  // the engine is still usable
  again.backward(cg::ones({1}));
  EXPECT_FLOAT_EQ(x.grad().item<float>(), 3.f);
}
