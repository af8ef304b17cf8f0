// Module hooks: firing order (replacing hooks first, then observers, each in registration
// order), replacement of inputs, outputs, output gradients and input gradients (a replacement of
// the wrong shape, dtype or count is an error naming the module and position), observers
// that cannot change values, removal (also after the module is gone), backward hooks on a
// frozen module, on a module whose input needs no grad (absent entries), and on parts that
// autograd::grad skips, hooks that throw (module and engine stay usable), and
// record_activations / record_gradients delivering every leaf's tensors with names; (GPU
// suite) the same deliveries from a model on CUDA.
#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "cugrad/cugrad.h"
#include "tests/support/parity.h"

namespace cg = cugrad;
namespace nn = cugrad::nn;
namespace ci = cugrad::inspect;
using cg::testing::all_close;
using cg::testing::all_equal;
using cg::testing::error_message;

TEST(ModuleHooks, ForwardHooksFireInOrderReplacersFirst) {
  nn::Linear fc(3, 2);
  std::vector<std::string> log;
  fc->register_forward_pre_hook([&](nn::Module& m, const cg::TensorList& in) {
    EXPECT_EQ(&m, fc.get());
    EXPECT_EQ(in.size(), 1u);
    log.push_back("pre-observer-1");
  });
  fc->register_forward_pre_hook([&](nn::Module&, const cg::TensorList&) -> std::optional<cg::TensorList> {
    log.push_back("pre-replacer");
    return std::nullopt;
  });
  fc->register_forward_pre_hook([&](nn::Module&, const cg::TensorList&) { log.push_back("pre-observer-2"); });
  fc->register_forward_hook([&](nn::Module&, const cg::TensorList&, const cg::Tensor& out) {
    EXPECT_EQ(out.shape(), (cg::Shape{4, 2}));
    log.push_back("observer-1");
  });
  fc->register_forward_hook(
      [&](nn::Module&, const cg::TensorList&, const cg::Tensor&) { log.push_back("observer-2"); });
  fc->register_forward_hook(
      [&](nn::Module&, const cg::TensorList&, const cg::Tensor&) -> std::optional<cg::Tensor> {
        log.push_back("replacer");
        return std::nullopt;
      });
  fc(cg::randn({4, 3}));
  EXPECT_EQ(log, (std::vector<std::string>{"pre-replacer", "pre-observer-1", "pre-observer-2", "replacer",
                                           "observer-1", "observer-2"}));
  // forward() itself runs no hooks.
  log.clear();
  fc->forward(cg::randn({4, 3}));
  EXPECT_TRUE(log.empty());
}

TEST(ModuleHooks, ReplacingInputsAndOutputs) {
  cg::manual_seed(1);
  nn::Linear fc(3, 2);
  const cg::Tensor x = cg::randn({4, 3});
  const cg::Tensor plain = fc->forward(x);
  auto doubling = fc->register_forward_pre_hook(
      [](nn::Module&, const cg::TensorList& in) -> std::optional<cg::TensorList> {
        return cg::TensorList{in[0] * 2.0};
      });
  cg::Tensor seen_input;
  cg::Tensor seen_output;
  fc->register_forward_hook([&](nn::Module&, const cg::TensorList& in, const cg::Tensor& out) {
    seen_input = in[0];
    seen_output = out;
  });
  EXPECT_TRUE(all_close(fc(x), fc->forward(x * 2.0)));
  EXPECT_TRUE(all_close(seen_input, x * 2.0));  // forward hooks see the replaced input
  doubling.remove();
  // A pre-hook may also return one tensor; a forward hook replaces the output, and later
  // replacers see the previous one's result while observers see the final value.
  fc->register_forward_pre_hook(
      [](nn::Module&, const cg::TensorList& in) -> std::optional<cg::Tensor> { return in[0] + 1.0; });
  fc->register_forward_hook([](nn::Module&, const cg::TensorList&,
                               const cg::Tensor& out) -> std::optional<cg::Tensor> { return out * 10.0; });
  fc->register_forward_hook([](nn::Module&, const cg::TensorList&,
                               const cg::Tensor& out) -> std::optional<cg::Tensor> { return out - 1.0; });
  const cg::Tensor y = fc(x);
  EXPECT_TRUE(all_close(y, fc->forward(x + 1.0) * 10.0 - 1.0));
  EXPECT_TRUE(all_close(seen_output, y));
  EXPECT_FALSE(all_close(plain, y));
  // A replaced output stays differentiable.
  const cg::Tensor w = fc->weight;
  const cg::Tensor g = cg::autograd::grad({y.sum()}, {w})[0];
  EXPECT_TRUE(all_close(g, cg::autograd::grad({(fc->forward(x + 1.0) * 10.0).sum()}, {w})[0]));
  EXPECT_NE(error_message([&] {
              fc->register_forward_pre_hook(
                  [](nn::Module&, const cg::TensorList& in) -> std::optional<cg::TensorList> {
                    return cg::TensorList{in[0], in[0]};
                  });
              fc(x);
            }).find("returned 2 inputs; the module takes 1"),
            std::string::npos);
}

TEST(ModuleHooks, ObserversCannotChangeValues) {
  nn::ReLU relu;
  auto h = relu->register_forward_hook([](nn::Module&, const cg::TensorList&, const cg::Tensor& out) {
    cg::Tensor t = out;
    t.mul_(2.0);  // not allowed for an observer
  });
  const std::string m = error_message([&] { relu(cg::randn({3})); });
  EXPECT_NE(m.find("forward hook (observer) on ReLU modified a tensor it observes in place"),
            std::string::npos)
      << m;
  h.remove();
  relu->register_forward_pre_hook([](nn::Module&, const cg::TensorList& in) {
    cg::Tensor t = in[0];
    t.zero_();
  });
  EXPECT_NE(error_message([&] { relu(cg::randn({3})); }).find("forward pre-hook (observer)"), std::string::npos);
  // Backward observers too.
  nn::Linear fc(2, 2);
  fc->register_full_backward_hook([](nn::Module&, const cg::TensorList&, const cg::TensorList& go) {
    cg::Tensor t = go[0];
    t.mul_(0.0);
  });
  const cg::Tensor y = fc(cg::randn({3, 2}).requires_grad_());
  EXPECT_NE(error_message([&] { y.sum().backward(); }).find("full backward hook (observer) on Linear"),
            std::string::npos);
}

TEST(ModuleHooks, RemovalIsIdempotentAndSafeAfterTheModuleIsGone) {
  int calls = 0;
  cg::HookHandle h1, h2;
  {
    nn::Tanh t;
    h1 = t->register_forward_hook([&](nn::Module&, const cg::TensorList&, const cg::Tensor&) { ++calls; });
    h2 = t->register_full_backward_hook(
        [&](nn::Module&, const cg::TensorList&, const cg::TensorList&) { ++calls; });
    t(cg::randn({2}));
    EXPECT_EQ(calls, 1);
    h1.remove();
    EXPECT_FALSE(h1.active());
    h1.remove();
    t(cg::randn({2}));
    EXPECT_EQ(calls, 1);
  }
  EXPECT_TRUE(h2.active());
  h2.remove();  // the module is gone
  EXPECT_FALSE(h2.active());
}

TEST(ModuleHooks, BackwardHooksSeeAndReplaceGradients) {
  cg::manual_seed(2);
  nn::Linear fc(3, 2);
  const cg::Tensor x = cg::randn({4, 3}).requires_grad_();
  const cg::Tensor gy = cg::randn({4, 2});
  // Reference gradients without hooks.
  const cg::TensorList ref = cg::autograd::grad({fc(x)}, {x, fc->weight}, {gy});

  std::vector<std::string> log;
  cg::Tensor seen_go, seen_gi;
  fc->register_full_backward_pre_hook([&](nn::Module& m, const cg::TensorList& go) {
    EXPECT_EQ(m.type_name(), "Linear");
    log.push_back("pre-observer");
    seen_go = go[0];
  });
  fc->register_full_backward_pre_hook(
      [&](nn::Module&, const cg::TensorList& go) -> std::optional<cg::TensorList> {
        log.push_back("pre-replacer");
        return cg::TensorList{go[0] * 3.0};
      });
  fc->register_full_backward_hook([&](nn::Module&, const cg::TensorList& gi, const cg::TensorList& go) {
    log.push_back("observer");
    seen_gi = gi[0];
    EXPECT_TRUE(all_close(go[0], gy * 3.0));  // the pre-hook's replacement
  });
  fc->register_full_backward_hook(
      [&](nn::Module&, const cg::TensorList& gi, const cg::TensorList&) -> std::optional<cg::TensorList> {
        log.push_back("replacer");
        return cg::TensorList{gi[0] + 1.0};
      });
  const cg::TensorList got = cg::autograd::grad({fc(x)}, {x, fc->weight}, {gy});
  EXPECT_EQ(log, (std::vector<std::string>{"pre-replacer", "pre-observer", "replacer", "observer"}));
  EXPECT_TRUE(all_close(seen_go, gy * 3.0));
  EXPECT_TRUE(all_close(got[1], ref[1] * 3.0));         // the weight sees the replaced grad_output
  EXPECT_TRUE(all_close(seen_gi, ref[0] * 3.0 + 1.0));  // observers see the replaced grad_input
  EXPECT_TRUE(all_close(got[0], ref[0] * 3.0 + 1.0));   // and so does the input
}

TEST(ModuleHooks, ReplacementGradientsMustMatchTheirTensors) {
  cg::manual_seed(12);
  nn::Linear fc(3, 2);
  nn::Tanh act;
  const cg::Tensor x = cg::randn({4, 3}).requires_grad_();
  // Each bad replacement: wrong shape, dtype, length; the message names the hook, the module, the
  // position and what the gradient must be.
  using Hook = std::function<std::optional<cg::TensorList>(const cg::TensorList&)>;
  const std::vector<std::pair<Hook, std::string>> bad = {
      {[](const cg::TensorList&) { return cg::TensorList{cg::ones({7})}; },
       "returned float32[7] on cpu as the gradient of input 0, which must be float32[4, 3] on cpu"},
      {[](const cg::TensorList& g) { return cg::TensorList{g[0].to(cg::DType::float64)}; },
       "returned float64[4, 3] on cpu as the gradient of input 0"},
      {[](const cg::TensorList& g) {
         return cg::TensorList{g[0], g[0]};
       },
       "returned 2 gradients for 1 inputs"},
  };
  for (const auto& [hook, expected] : bad) {
    auto h = fc->register_full_backward_hook(
        [hook](nn::Module&, const cg::TensorList& gi, const cg::TensorList&) { return hook(gi); });
    const std::string m = error_message<cg::Error>([&] { fc(x).sum().backward(); });
    EXPECT_NE(m.find("full backward hook on Linear"), std::string::npos) << m;
    EXPECT_NE(m.find(expected), std::string::npos) << m;
    h.remove();
  }
  // The pre-hook's replacement of the output gradient, on an op that would broadcast it.
  auto pre = act->register_full_backward_pre_hook(
      [](nn::Module&, const cg::TensorList&) -> std::optional<cg::TensorList> {
        return cg::TensorList{cg::ones({1, 3})};
      });
  const std::string m = error_message<cg::Error>([&] { act(x).sum().backward(); });
  EXPECT_NE(m.find("full backward pre-hook on Tanh"), std::string::npos) << m;
  EXPECT_NE(m.find("as the gradient of output 0, which must be float32[4, 3] on cpu"), std::string::npos)
      << m;
  pre.remove();
  // An absent entry is allowed (no gradient flows to x), and the engine is usable afterwards.
  cg::Tensor(x).set_grad(cg::Tensor());
  auto none = fc->register_full_backward_hook(
      [](nn::Module&, const cg::TensorList&, const cg::TensorList&) -> std::optional<cg::TensorList> {
        return cg::TensorList{cg::Tensor()};
      });
  fc(x).sum().backward();
  EXPECT_FALSE(x.grad().defined());
  EXPECT_TRUE(fc->weight.grad().defined());
  none.remove();
  fc(x).sum().backward();
  EXPECT_TRUE(x.grad().defined());
  EXPECT_EQ(x.grad().shape(), (cg::Shape{4, 3}));
}

TEST(ModuleHooks, FrozenModuleInsideANetworkStillFires) {
  cg::manual_seed(3);
  nn::Sequential model({nn::Linear(3, 4), nn::Linear(4, 4), nn::Linear(4, 2)});
  model[1]->freeze();
  int fired = 0;
  cg::HookHandle h = model[1]->register_full_backward_hook(
      [&](nn::Module&, const cg::TensorList& gi, const cg::TensorList& go) {
        ++fired;
        EXPECT_TRUE(gi[0].defined());  // its input comes from a trainable layer
        EXPECT_EQ(go[0].shape(), (cg::Shape{5, 4}));
      });
  model(cg::randn({5, 3})).sum().backward();
  EXPECT_EQ(fired, 1);
  EXPECT_FALSE(model[1]->parameters()[0].grad().defined());
  EXPECT_TRUE(model[0]->parameters()[0].grad().defined());
  // A frozen first layer whose input is data needs no gradient at all: nothing is recorded
  // for it, so its output gradient is never computed and its hooks do not fire.
  h.remove();
  model->unfreeze();
  model[0]->freeze();
  int first = 0;
  model[0]->register_full_backward_hook(
      [&](nn::Module&, const cg::TensorList&, const cg::TensorList&) { ++first; });
  model(cg::randn({5, 3})).sum().backward();
  EXPECT_EQ(first, 0);
  // With an input that requires grad (the adversarial example), the frozen layer fires.
  const cg::Tensor x = cg::randn({5, 3}).requires_grad_();
  cg::autograd::grad({model(x).sum()}, {x});
  EXPECT_EQ(first, 1);
}

TEST(ModuleHooks, InputThatNeedsNoGradGivesAnAbsentEntry) {
  cg::manual_seed(4);
  nn::Linear fc(3, 2);
  std::vector<std::string> log;
  fc->register_full_backward_pre_hook([&](nn::Module&, const cg::TensorList& go) {
    EXPECT_TRUE(go[0].defined());
    log.push_back("pre");
  });
  fc->register_full_backward_hook([&](nn::Module&, const cg::TensorList& gi, const cg::TensorList& go) {
    ASSERT_EQ(gi.size(), 1u);
    EXPECT_FALSE(gi[0].defined());
    EXPECT_TRUE(all_equal(go[0], cg::ones({4, 2})));
    log.push_back("hook");
  });
  fc(cg::randn({4, 3})).sum().backward();
  EXPECT_EQ(log, (std::vector<std::string>{"pre", "hook"}));
  EXPECT_TRUE(fc->weight.grad().defined());
}

TEST(ModuleHooks, PartsThatGradSkipsDoNotFire) {
  cg::manual_seed(5);
  nn::Sequential model({nn::Linear(3, 4), nn::Tanh(), nn::Linear(4, 2)});
  std::map<std::string, int> pre, post;
  for (const auto& m : model->modules()) {
    const std::string name = m->name();
    m->register_full_backward_pre_hook([&pre, name](nn::Module&, const cg::TensorList&) { ++pre[name]; });
    m->register_full_backward_hook(
        [&post, name](nn::Module&, const cg::TensorList&, const cg::TensorList&) { ++post[name]; });
  }
  const cg::Tensor x = cg::randn({2, 3}).requires_grad_();
  const cg::Tensor y = model(x);
  // Only the last layer's weight: the graph below the last Linear is skipped.
  cg::autograd::grad({y.sum()}, {model[2]->parameters()[0]});
  EXPECT_EQ(pre["2"], 1);   // its output gradient is computed...
  EXPECT_EQ(post["2"], 0);  // ...but not its input gradient
  EXPECT_EQ(pre["0"] + pre["1"] + post["0"] + post["1"], 0);
  EXPECT_EQ(pre[""], 1);  // the Sequential's output gradient is computed too
  EXPECT_EQ(post[""], 0);
  // Everything, down to x.
  pre.clear();
  post.clear();
  cg::autograd::grad({model(x).sum()}, {x});
  for (const std::string n : {"", "0", "1", "2"}) {
    EXPECT_EQ(pre[n], 1) << n;
    EXPECT_EQ(post[n], 1) << n;
  }
}

TEST(ModuleHooks, ThrowingHooksLeaveTheModuleAndEngineUsable) {
  cg::manual_seed(6);
  nn::Sequential model({nn::Linear(3, 4), nn::ReLU(), nn::Linear(4, 1)});
  const cg::Tensor x = cg::randn({5, 3});
  auto fh = model[1]->register_forward_hook([](nn::Module&, const cg::TensorList&, const cg::Tensor&) {
    throw std::runtime_error("forward hook failed");
  });
  EXPECT_EQ(error_message([&] { model(x); }), "forward hook failed");
  fh.remove();
  auto fph = model[0]->register_forward_pre_hook(
      [](nn::Module&, const cg::TensorList&) { throw std::runtime_error("forward pre-hook failed"); });
  EXPECT_EQ(error_message([&] { model(x); }), "forward pre-hook failed");
  fph.remove();
  auto bh = model[2]->register_full_backward_pre_hook(
      [](nn::Module&, const cg::TensorList&) { throw std::runtime_error("backward hook failed"); });
  EXPECT_EQ(error_message([&] { model(x).sum().backward(); }), "backward hook failed");
  bh.remove();
  model->zero_grad();
  const cg::Tensor y = model(x);
  y.sum().backward();
  const cg::Tensor w = model[0]->parameters()[0];
  EXPECT_TRUE(w.grad().defined());
  const cg::Tensor ref = cg::autograd::grad({model->forward(x).sum()}, {w})[0];
  EXPECT_TRUE(all_close(w.grad(), ref));
  // With retain_graph, the same graph can run again after a throwing hook.
  auto once = std::make_shared<bool>(true);
  model[2]->register_full_backward_hook([once](nn::Module&, const cg::TensorList&, const cg::TensorList&) {
    if (*once) {
      *once = false;
      throw std::runtime_error("first time only");
    }
  });
  const cg::Tensor y2 = model(x).sum();
  EXPECT_EQ(error_message([&] { cg::autograd::grad({y2}, {w}, {}, /*retain_graph=*/true); }), "first time only");
  EXPECT_TRUE(all_close(cg::autograd::grad({y2}, {w})[0], ref));
}

TEST(ModuleHooks, BackwardHooksKeepTheModuleAliveUntilBackward) {
  int fired = 0;
  cg::Tensor y;
  const cg::Tensor x = cg::randn({2, 3}).requires_grad_();
  {
    nn::Linear fc(3, 1);
    fc->register_full_backward_hook([&](nn::Module& m, const cg::TensorList&, const cg::TensorList&) {
      EXPECT_EQ(m.type_name(), "Linear");
      ++fired;
    });
    y = fc(x);
  }
  y.sum().backward();
  EXPECT_EQ(fired, 1);
}

// ---- record_activations / record_gradients ----

namespace {

struct Delivery {
  std::string name;
  ci::Phase phase;
  std::int64_t step;
  std::vector<float> values;
};

struct Collector {
  std::mutex mutex;
  std::vector<Delivery> got;
  ci::Callback callback() {
    return [this](const cg::HostTensor& t, const ci::Tag& tag) {
      std::lock_guard<std::mutex> lock(mutex);
      got.push_back({tag.name, tag.phase, tag.step, t.to_vector<float>()});
    };
  }
};

std::vector<float> host(const cg::Tensor& t) { return t.cpu().to_vector<float>(); }

void expect_records(cg::Device dev) {
  cg::manual_seed(7);
  auto model = nn::Sequential(
      {nn::Linear(3, 4), nn::BatchNorm1d(4), nn::ReLU(), nn::Sequential({nn::Linear(4, 2), nn::Tanh()})});
  model->set_name("net");
  model->to(dev);
  ci::Inspector insp;
  Collector acts, grads;
  std::int64_t step = 5;
  auto ha = ci::record_activations(*model, insp, acts.callback(), {.step = [&] { return step; }});
  auto hg = ci::record_gradients(*model, insp, grads.callback());
  EXPECT_EQ(ha.size(), 5u);  // leaves only
  EXPECT_EQ(hg.size(), 5u);
  const cg::Tensor x = cg::randn({6, 3}, dev);
  const cg::Tensor y = model(x);
  y.backward(cg::ones({6, 2}, dev));
  insp.flush();

  // Tags: the leaves' dotted names in forward order, the phase, and the step option.
  const std::vector<std::string> names = {"net.0", "net.1", "net.2", "net.3.0", "net.3.1"};
  ASSERT_EQ(acts.got.size(), names.size());
  for (std::size_t i = 0; i < names.size(); ++i) {
    EXPECT_EQ(acts.got[i].name, names[i]);
    EXPECT_EQ(acts.got[i].phase, ci::Phase::forward);
    EXPECT_EQ(acts.got[i].step, 5);
  }
  const cg::Tensor a0 = model[0]->forward(x);
  EXPECT_EQ(acts.got[0].values, host(a0));  // the first leaf's output, exactly
  EXPECT_EQ(acts.got[4].values, host(y));
  EXPECT_EQ(acts.got[3].values.size(), 12u);
  // Gradients arrive in backward order, each the gradient w.r.t. that leaf's output.
  const std::vector<std::string> back = {"net.3.1", "net.3.0", "net.2", "net.1", "net.0"};
  ASSERT_EQ(grads.got.size(), back.size());
  for (std::size_t i = 0; i < back.size(); ++i) {
    EXPECT_EQ(grads.got[i].name, back[i]);
    EXPECT_EQ(grads.got[i].phase, ci::Phase::backward);
    EXPECT_EQ(grads.got[i].step, -1);
  }
  EXPECT_EQ(grads.got[0].values, std::vector<float>(12, 1.f));  // d(sum)/dy
  const std::vector<float> yv = host(y);
  for (std::size_t i = 0; i < yv.size(); ++i)  // through tanh: 1 - y²
    EXPECT_NEAR(grads.got[1].values[i], 1 - yv[i] * yv[i], 1e-6);
  // Observers: results are those of the model without hooks.
  for (auto& h : ha) h.remove();
  for (auto& h : hg) h.remove();
  model->eval();
  EXPECT_TRUE(all_equal(model(x), model->forward(x)));
  insp.flush();
  EXPECT_EQ(acts.got.size(), names.size());  // removed: nothing more delivered
}

}  // namespace

TEST(RecordHooks, DeliverEveryLeafWithItsName) { expect_records(cg::Device::cpu()); }

TEST(RecordHooks, ARootWithoutChildrenIsItsOwnLeaf) {
  nn::Linear fc(2, 2);
  ci::Inspector insp;
  Collector acts;
  auto h = ci::record_activations(*fc, insp, acts.callback());
  ASSERT_EQ(h.size(), 1u);
  fc(cg::ones({1, 2}));
  insp.flush();
  ASSERT_EQ(acts.got.size(), 1u);
  EXPECT_EQ(acts.got[0].name, "Linear");  // an unnamed root is tagged with its type
}

TEST(RecordHooksGPU, DeliverEveryLeafWithItsName) {
  CUGRAD_REQUIRE_GPU();
  expect_records(cg::Device::cuda(0));
}
