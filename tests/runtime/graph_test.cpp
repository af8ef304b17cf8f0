// CUDA graphs (include/cugrad/graph.h): a captured computation replayed with new inputs, a
// training step (cuDNN convolutions, BatchNorm's running statistics, dropout's random masks,
// label-smoothed cross-entropy, SGD Nesterov) replayed bit for bit like the same steps run
// eagerly, and the misuse that must throw while leaving the engine usable.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <memory>
#include <vector>

#include "cuda/conv.h"
#include "cuda/conv_graph.h"
#include "cugrad/cugrad.h"
#include "tests/support/parity.h"

namespace cg = cugrad;
namespace nn = cugrad::nn;

namespace {

const cg::Device kGpu = cg::Device::cuda(0);

template <class F>
void expect_error_containing(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "expected an error containing \"" << needle << "\"";
  } catch (const cg::Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(CudaGraph, ReplayOrEndWithoutACaptureIsAnError) {
  cg::CudaGraph graph;
  EXPECT_FALSE(graph.captured());
  EXPECT_FALSE(graph.capturing());
  expect_error_containing([&] { graph.replay(); }, "nothing captured");
  expect_error_containing([&] { graph.capture_end(); }, "no capture underway");
  expect_error_containing([&] { graph.capture_begin(cg::Stream()); }, "needs a CUDA stream");
  graph.capture_abandon();  // nothing to abandon: no effect
  graph.reset();
  EXPECT_EQ(graph.node_count(), 0u);
}

// ---- GPU ----

TEST(CudaGraphGPU, ReplaysTheCapturedOpsOnNewInputs) {
  CUGRAD_REQUIRE_GPU();
  const cg::Stream side = cg::Stream::create(kGpu);
  cg::Tensor x = cg::zeros({5, 7}, kGpu);
  const cg::Tensor w = cg::from_vector<float>({1, -2, 3, -4, 5, -6, 7}, {7}).to(kGpu);
  // Warm up: the ops run once eagerly before the capture.
  (void)((x * w + 1.0f).relu().sum(1));
  cg::CudaGraph graph;
  cg::Tensor y;
  cg::capture(graph, side, [&] { y = (x * w + 1.0f).relu().sum(1); });
  ASSERT_TRUE(graph.captured());
  EXPECT_GE(graph.node_count(), 2u);
  EXPECT_TRUE(y.is_cuda());
  for (int round = 0; round < 3; ++round) {
    std::vector<float> xs(35);
    for (int i = 0; i < 35; ++i)
      xs[static_cast<std::size_t>(i)] = static_cast<float>((i * 7 + round * 3) % 11) - 5.0f;
    x.copy_(cg::from_vector<float>(xs, {5, 7}).to(kGpu));
    graph.replay();
    const std::vector<float> got = y.to_vector<float>();
    ASSERT_EQ(got.size(), 5u);
    for (int r = 0; r < 5; ++r) {
      float want = 0;
      for (int c = 0; c < 7; ++c) {
        const float v =
            xs[static_cast<std::size_t>(r * 7 + c)] * static_cast<float>((c % 2 ? -1 : 1) * (c + 1)) + 1.0f;
        want += v > 0 ? v : 0;
      }
      EXPECT_FLOAT_EQ(got[static_cast<std::size_t>(r)], want) << "round " << round << " row " << r;
    }
  }
}

namespace {

// The optimizer of a Trainer (default: SGD Nesterov with weight decay, as train_step_bench).
using MakeOptimizer = std::function<std::unique_ptr<cg::optim::Optimizer>(const cg::TensorList&)>;

std::unique_ptr<cg::optim::Optimizer> sgd_nesterov(const cg::TensorList& params) {
  return std::make_unique<cg::optim::SGD>(
      params, cg::optim::SGDOptions{.lr = 0.05, .momentum = 0.9, .weight_decay = 5e-4, .nesterov = true});
}

// A step as train_step_bench runs it: forward, label-smoothed cross-entropy, backward, the
// optimizer's step. The loss lands in `loss`. With a schedule (OneCycleLR, cycling the momentum
// or Adam's beta1), `advance()` steps it: after each eager step, or after each replay.
struct Trainer {
  std::shared_ptr<nn::Module> model;
  std::unique_ptr<cg::optim::Optimizer> opt;
  std::unique_ptr<cg::optim::OneCycleLR> schedule;
  cg::Tensor x, y, loss;

  Trainer(std::shared_ptr<nn::Module> m, const cg::Shape& input, const MakeOptimizer& make_opt = sgd_nesterov,
          bool scheduled = false)
      : model(std::move(m)) {
    model->to(kGpu);
    model->train();
    opt = make_opt(model->parameters());
    if (scheduled)
      schedule = std::make_unique<cg::optim::OneCycleLR>(*opt, 0.1, 10,
                                                         cg::optim::OneCycleLROptions{.pct_start = 0.3});
    x = cg::zeros(input, kGpu);
    y = cg::zeros({input[0]}, kGpu, cg::DType::int64);
  }
  void step() {
    opt->zero_grad();
    loss = nn::functional::cross_entropy((*model)(x), y, {.label_smoothing = 0.1});
    loss.backward();
    opt->step();
  }
  void advance() {
    if (schedule) schedule->step();
  }
  void feed(const cg::Tensor& xs, const cg::Tensor& ys) {
    x.copy_(xs);
    y.copy_(ys);
  }
};

std::vector<float> flat_state(nn::Module& m) {
  std::vector<float> out;
  for (const auto& [name, t] : m.state_dict()) {
    if (t.dtype() != cg::DType::float32) continue;
    const std::vector<float> v = t.to_vector<float>();
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

// Runs `steps` training steps from the same initial model and generator state twice: all eager,
// and two eager warm-up steps then replays of one captured step (the schedule, if any, stepped
// between them). Losses, parameters, running statistics and the optimizer's whole state
// (momentum buffers, Adam's moments and step counts) must agree bit for bit.
void expect_replays_match_eager(const std::function<std::shared_ptr<nn::Module>()>& make,
                                const cg::Shape& input, std::int64_t classes,
                                const MakeOptimizer& make_opt = sgd_nesterov, bool scheduled = false) {
  constexpr int kSteps = 6, kWarmup = 2;
  std::vector<cg::Tensor> xs, ys;
  cg::manual_seed(11);
  for (int i = 0; i < kSteps; ++i) {
    xs.push_back(cg::randn(input, kGpu));
    ys.push_back(cg::randint(0, classes, {input[0]}, kGpu));
  }

  cg::manual_seed(5);
  Trainer eager(make(), input, make_opt, scheduled);
  std::vector<float> eager_losses;
  for (int i = 0; i < kSteps; ++i) {
    eager.feed(xs[static_cast<std::size_t>(i)], ys[static_cast<std::size_t>(i)]);
    eager.step();
    eager.advance();
    eager_losses.push_back(eager.loss.item<float>());
  }

  cg::manual_seed(5);
  Trainer graphed(make(), input, make_opt, scheduled);
  std::vector<float> graph_losses;
  for (int i = 0; i < kWarmup; ++i) {
    graphed.feed(xs[static_cast<std::size_t>(i)], ys[static_cast<std::size_t>(i)]);
    graphed.step();
    graphed.advance();
    graph_losses.push_back(graphed.loss.item<float>());
  }
  const cg::Stream side = cg::Stream::create(kGpu);
  cg::CudaGraph graph;
  cg::capture(graph, side, [&] { graphed.step(); });
  ASSERT_TRUE(graph.captured());
  for (int i = kWarmup; i < kSteps; ++i) {
    graphed.feed(xs[static_cast<std::size_t>(i)], ys[static_cast<std::size_t>(i)]);
    graph.replay();
    graphed.advance();
    graph_losses.push_back(graphed.loss.item<float>());
  }

  ASSERT_EQ(graph_losses.size(), eager_losses.size());
  for (int i = 0; i < kSteps; ++i)
    EXPECT_EQ(graph_losses[static_cast<std::size_t>(i)], eager_losses[static_cast<std::size_t>(i)])
        << "step " << i;
  EXPECT_NE(eager_losses[kSteps - 1], eager_losses[kSteps - 2]);  // the steps did change something
  const std::vector<float> a = flat_state(*eager.model), b = flat_state(*graphed.model);
  ASSERT_EQ(a.size(), b.size());
  std::size_t differ = 0;
  for (std::size_t i = 0; i < a.size(); ++i) differ += a[i] != b[i] ? 1 : 0;
  EXPECT_EQ(differ, 0u) << "of " << a.size() << " state values";
  const cg::StateDict sa = eager.opt->state_dict(), sb = graphed.opt->state_dict();
  ASSERT_EQ(sa.size(), sb.size());
  EXPECT_GT(sa.size(), eager.opt->params().size());  // buffers or moments, not only options
  for (const auto& [key, t] : sa) {
    ASSERT_EQ(sb.count(key), 1u) << key;
    EXPECT_TRUE(cg::testing::all_equal(sb.at(key), t)) << "optimizer state " << key;
  }
  // The generator advanced as far as the eager run's: the next draw is the same.
  const cg::GeneratorState after = cg::get_rng_state();
  cg::manual_seed(5);
  Trainer again(make(), input, make_opt, scheduled);
  for (int i = 0; i < kSteps; ++i) {
    again.feed(xs[static_cast<std::size_t>(i)], ys[static_cast<std::size_t>(i)]);
    again.step();
  }
  EXPECT_EQ(cg::get_rng_state().offset, after.offset);
}

std::shared_ptr<nn::Module> two_conv_cnn() {
  return std::static_pointer_cast<nn::Module>(std::make_shared<nn::TwoConvCnnImpl>(10, 1, 12));
}

}  // namespace

TEST(CudaGraphGPU, TwoConvCnnTrainingStepReplaysLikeEagerSteps) {
  CUGRAD_REQUIRE_GPU();
  // The 2-conv CNN of train_step_bench (its fused conv1/ReLU and bias-in-the-pool paths, two
  // dropouts) at 12×12.
  expect_replays_match_eager(two_conv_cnn, {4, 1, 12, 12}, 10);
}

TEST(CudaGraphGPU, CapturableSgdFollowsItsScheduleAcrossReplays) {
  CUGRAD_REQUIRE_GPU();
  // OneCycleLR changes the lr and the momentum after every step, between replays: a capturable
  // SGD reads them from device memory, so the replays match eager steps bit for bit.
  expect_replays_match_eager(
      two_conv_cnn, {4, 1, 12, 12}, 10,
      [](const cg::TensorList& p) {
        return std::make_unique<cg::optim::SGD>(
            p, cg::optim::SGDOptions{
                   .lr = 0.05, .momentum = 0.9, .weight_decay = 5e-4, .nesterov = true, .capturable = true});
      },
      /*scheduled=*/true);
}

TEST(CudaGraphGPU, CapturableAdamWFollowsItsScheduleAndStepCountsAcrossReplays) {
  CUGRAD_REQUIRE_GPU();
  // And AdamW: the bias corrections of steps 3-6 come from the step counts the replays advance
  // on the device; OneCycleLR changes the lr and beta1 between replays.
  for (const bool amsgrad : {false, true}) {
    SCOPED_TRACE(amsgrad ? "amsgrad" : "plain");
    expect_replays_match_eager(
        two_conv_cnn, {4, 1, 12, 12}, 10,
        [amsgrad](const cg::TensorList& p) {
          return std::make_unique<cg::optim::AdamW>(
              p, cg::optim::AdamWOptions{.lr = 1e-3, .amsgrad = amsgrad, .capturable = true});
        },
        /*scheduled=*/true);
  }
}

TEST(CudaGraphGPU, BatchNormCnnTrainingStepReplaysLikeEagerSteps) {
  CUGRAD_REQUIRE_GPU();
  // cuDNN convolutions with hooks-free fusion off the table (a BatchNorm between conv and
  // ReLU), BatchNorm's running statistics and batch counter updated in place, dropout.
  expect_replays_match_eager(
      [] {
        return std::static_pointer_cast<nn::Module>(
            std::make_shared<nn::SequentialImpl>(std::vector<std::shared_ptr<nn::Module>>{
                nn::Conv2d(2, 6, 3, {.padding = 1}).ptr(), nn::BatchNorm2d(6).ptr(), nn::ReLU().ptr(),
                nn::MaxPool2d(2).ptr(), nn::Flatten().ptr(), nn::Dropout(0.3).ptr(),
                nn::Linear(6 * 4 * 4, 5).ptr()}));
      },
      {3, 2, 8, 8}, 5);
}

TEST(CudaGraphGPU, HostWorkInsideACaptureThrowsAndTheEngineStaysUsable) {
  CUGRAD_REQUIRE_GPU();
  const cg::Stream side = cg::Stream::create(kGpu);
  const cg::Tensor x = cg::ones({16}, kGpu);
  (void)(x * 2.0f).sum();
  cg::CudaGraph graph;
  expect_error_containing([&] { cg::capture(graph, side, [&] { (void)(x * 2.0f).sum().item<float>(); }); },
                          "captured into a CUDA graph");
  EXPECT_FALSE(graph.capturing());
  EXPECT_FALSE(graph.captured());
  expect_error_containing([&] { cg::capture(graph, side, [&] { (void)(x * 2.0f).to(cg::Device::cpu()); }); },
                          "captured into a CUDA graph");
  expect_error_containing([&] { cg::capture(graph, side, [&] { side.synchronize(); }); },
                          "captured into a CUDA graph");
  expect_error_containing([&] { cg::capture(graph, side, [&] { cg::synchronize(kGpu); }); },
                          "captured into a CUDA graph");
  // The current stream is restored and eager work runs as before.
  EXPECT_TRUE(cg::Stream::current(kGpu) == cg::Stream::default_stream(kGpu));
  EXPECT_FLOAT_EQ((x * 3.0f).sum().item<float>(), 48.0f);
  // And a capture still works.
  cg::Tensor y;
  cg::capture(graph, side, [&] { y = (x * 4.0f).sum(); });
  graph.replay();
  EXPECT_FLOAT_EQ(y.item<float>(), 64.0f);
}

TEST(CudaGraphGPU, CaptureBeginRefusesTheDefaultStreamAndASecondCapture) {
  CUGRAD_REQUIRE_GPU();
  cg::CudaGraph a, b;
  expect_error_containing([&] { a.capture_begin(cg::Stream::default_stream(kGpu)); }, "default stream");
  const cg::Stream s1 = cg::Stream::create(kGpu), s2 = cg::Stream::create(kGpu);
  a.capture_begin(s1);
  EXPECT_TRUE(a.capturing());
  EXPECT_TRUE(cg::Stream::current(kGpu) == s1);
  expect_error_containing([&] { b.capture_begin(s2); }, "another capture is underway");
  expect_error_containing([&] { a.capture_begin(s1); }, "already capturing");
  a.capture_end();  // an empty capture is a graph of no nodes
  EXPECT_TRUE(a.captured());
  EXPECT_EQ(a.node_count(), 0u);
  a.replay();
  expect_error_containing([&] { a.capture_begin(s1); }, "reset() it first");
  a.reset();
  EXPECT_FALSE(a.captured());
}

TEST(CudaGraphGPU, MemoryFreedDuringACaptureIsReleasedAtItsEnd) {
  CUGRAD_REQUIRE_GPU();
  const cg::Stream side = cg::Stream::create(kGpu);
  cg::Tensor before = cg::ones({1 << 16}, kGpu);  // 256 KB allocated before the capture
  cg::Tensor on_side;  // allocated before the capture on the stream it captures: freed on it
  {
    cg::StreamGuard g(side);
    on_side = cg::ones({1 << 10}, kGpu);
  }
  cg::synchronize(kGpu);
  cg::CudaGraph graph;
  graph.capture_begin(side);
  const std::size_t with = cg::memory_stats(kGpu).bytes_in_use;
  before = cg::Tensor();  // CUDA cannot free it inside the capture: deferred
  on_side = cg::Tensor();
  EXPECT_EQ(cg::memory_stats(kGpu).bytes_in_use, with);
  cg::Tensor inside = cg::ones({8}, kGpu) * 2.0f;  // graph allocations; the ones are freed in the graph
  EXPECT_EQ(cg::memory_stats(kGpu).bytes_in_use, with + 32u);
  graph.capture_end();
  EXPECT_EQ(cg::memory_stats(kGpu).bytes_in_use + (1u << 18) + (1u << 12),
            with + 32u);  // the deferred frees ran
  graph.replay();
  EXPECT_EQ(inside.to_vector<float>(), std::vector<float>(8, 2.0f));
}

TEST(CudaGraphGPU, AStreamThatWaitsForCapturedWorkJoinsAndIsRejoined) {
  CUGRAD_REQUIRE_GPU();
  const cg::Stream side = cg::Stream::create(kGpu), other = cg::Stream::create(kGpu);
  cg::Tensor x = cg::full({64}, 1.5f, kGpu);
  cg::synchronize(kGpu);
  cg::CudaGraph graph;
  cg::Tensor a, b;
  cg::capture(graph, side, [&] {
    a = x * 2.0f;  // on the capture stream
    cg::StreamGuard g(other);
    b = a + 1.0f;  // `other` waits for a's writer: it joins the capture
  });
  ASSERT_TRUE(graph.captured());
  x.copy_(cg::full({64}, 3.0f, kGpu));
  graph.replay();
  EXPECT_EQ(b.to_vector<float>(), std::vector<float>(64, 7.0f));
}

TEST(CudaGraphGPU, CaptureReusesTheTimedSearchsChoices) {
  CUGRAD_REQUIRE_GPU();
  // With the timed search on, the warm-up step searches; the capture (where no search can run)
  // must take those rankings (legacy API) or plans (cuDNN's graph API), not add heuristic ones.
  const bool before = cg::cudnn_benchmark();
  cg::set_cudnn_benchmark(true);
  for (const bool graph_api : {false, true}) {
    SCOPED_TRACE(graph_api ? "cuDNN graph API" : "cuDNN legacy API");
    const bool api_before = cg::cuda::set_graph_convolutions(graph_api);
    Trainer t(std::make_shared<nn::SequentialImpl>(std::vector<std::shared_ptr<nn::Module>>{
                  // 8 input channels: 72 taps, past what cugrad's direct kernels take, so cuDNN's
                  nn::Conv2d(8, 5, 3, {.padding = 1}).ptr(), nn::BatchNorm2d(5).ptr(), nn::ReLU().ptr(),
                  nn::Flatten().ptr(), nn::Linear(5 * 7 * 7, 4).ptr()}),
              {2, 8, 7, 7});
    t.feed(cg::randn({2, 8, 7, 7}, kGpu), cg::randint(0, 4, {2}, kGpu));
    t.step();
    t.step();
    const std::size_t rankings = cg::cuda::conv2d_algorithm_cache_size();
    const std::size_t plans = cg::cuda::graph_conv_choices().size();
    ASSERT_GE(graph_api ? plans : rankings, 2u);  // the forward and the weight gradient
    cg::CudaGraph graph;
    cg::capture(graph, cg::Stream::create(kGpu), [&] { t.step(); });
    EXPECT_EQ(cg::cuda::conv2d_algorithm_cache_size(), rankings);
    EXPECT_EQ(cg::cuda::graph_conv_choices().size(), plans);
    graph.replay();
    EXPECT_TRUE(std::isfinite(t.loss.item<float>()));
    cg::cuda::set_graph_convolutions(api_before);
  }
  cg::set_cudnn_benchmark(before);
}

TEST(CudaGraphGPU, TensorsOfAGraphThatNeverRanAreReleasedQuietly) {
  CUGRAD_REQUIRE_GPU();
  // A capture abandoned (an exception) or a graph reset before any replay leaves tensors that
  // hold graph memory that never existed on the device: releasing them frees nothing.
  const cg::Stream side = cg::Stream::create(kGpu);
  const cg::Tensor x = cg::ones({256}, kGpu);
  cg::synchronize(kGpu);
  const std::size_t base = cg::memory_stats(kGpu).bytes_in_use;
  {
    cg::CudaGraph graph;
    cg::Tensor kept;
    cg::capture(graph, side, [&] { kept = x * 2.0f; });
    graph.reset();  // never replayed
    kept = cg::Tensor();
    cg::Tensor thrown;
    expect_error_containing(
        [&] {
          cg::capture(graph, side, [&] {
            thrown = x * 3.0f;
            (void)thrown.sum().item<float>();
          });
        },
        "captured into a CUDA graph");
    thrown = cg::Tensor();
  }
  EXPECT_EQ(cg::memory_stats(kGpu).bytes_in_use, base);
  EXPECT_FLOAT_EQ((x * 5.0f).sum().item<float>(), 1280.0f);
}

TEST(CudaGraphGPU, OptimizerStepsThatCannotBeReplayedThrowInsideACapture) {
  CUGRAD_REQUIRE_GPU();
  const cg::Stream side = cg::Stream::create(kGpu);
  const auto fresh = [] {
    cg::Tensor p = cg::randn({300}, kGpu);
    p.requires_grad_(true);
    p.set_grad(cg::randn({300}, kGpu));
    return p;
  };
  cg::CudaGraph graph;
  // A first step with momentum creates the buffer (buf = g): replayed, it would reset it.
  cg::Tensor p = fresh();
  cg::optim::SGD sgd({p}, {.lr = 0.1, .momentum = 0.9});
  expect_error_containing([&] { cg::capture(graph, side, [&] { sgd.step(); }); },
                          "SGD.step: parameter 0 has no momentum buffer yet");
  EXPECT_FALSE(sgd.momentum_buffer(0).defined());
  // Adam without capturable: the bias corrections would be the capture's.
  cg::Tensor q = fresh();
  cg::optim::Adam adam({q}, {});
  adam.step();
  expect_error_containing([&] { cg::capture(graph, side, [&] { adam.step(); }); },
                          "make it with capturable = true");
  EXPECT_EQ(adam.step_count(0), 1);
  // A capturable Adam's first step inside a capture (its state would be reset at each replay).
  cg::Tensor r = fresh();
  cg::optim::AdamW adamw({r}, {.capturable = true});
  expect_error_containing([&] { cg::capture(graph, side, [&] { adamw.step(); }); },
                          "AdamW.step: parameter 0 has no state yet");
  EXPECT_EQ(adamw.step_count(0), 0);
  // A capturable optimizer's hyperparameters cannot be set inside a capture; a plain one's can
  // (the value is then the one the capture fixes).
  cg::Tensor u = fresh();
  cg::optim::SGD capturable({u}, {.lr = 0.1, .momentum = 0.9, .capturable = true});
  expect_error_containing([&] { cg::capture(graph, side, [&] { capturable.set_lr(0.2); }); },
                          "SGD.set_lr: cannot change a capturable optimizer's hyperparameters");
  expect_error_containing([&] { cg::capture(graph, side, [&] { adamw.set_momentum(0.8); }); },
                          "AdamW.set_momentum: cannot change");
  expect_error_containing(
      [&] { cg::capture(graph, side, [&] { adamw.load_state_dict(adamw.state_dict()); }); },
      "captured into a CUDA graph");  // state_dict reads the counts back: host work
  EXPECT_EQ(capturable.lr(), 0.1);
  cg::capture(graph, side, [&] { sgd.set_lr(0.3); });
  EXPECT_EQ(sgd.lr(), 0.3);
  graph.reset();
  // Nor can a capturable SGD's momentum switch between zero and nonzero.
  expect_error_containing([&] { capturable.set_momentum(0); },
                          "cannot switch its momentum between zero and nonzero");
  capturable.set_momentum(0.5);
  // The engine stays usable: after eager first steps the captures work and replay.
  sgd.step();
  adamw.step();
  capturable.step();
  cg::capture(graph, side, [&] {
    sgd.step();
    adamw.step();
    capturable.step();
  });
  graph.replay();
  graph.replay();
  EXPECT_EQ(adamw.step_count(0), 3);
  EXPECT_TRUE(std::isfinite(r.sum().item<float>()));
}
