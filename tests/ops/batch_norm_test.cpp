// nn::functional::batch_norm: the CPU reference against loops written here (forward, running
// statistics, backward; training and eval), the cumulative average (momentum unset), the
// errors, PyTorch's golden files (bn1d, bn2d) on the CPU and the GPU, float64 gradchecks in
// training and eval mode, and (GPU suites) the fused CUDA kernels against the float64 CPU
// reference at awkward and large sizes, misaligned inputs, a large mean, and determinism.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "cugrad/cugrad.h"
#include "cugrad/nn/functional.h"
#include "tests/support/parity.h"

namespace cg = cugrad;
namespace F = cugrad::nn::functional;
using cg::testing::all_close;
using cg::testing::all_equal;
using cg::testing::norm_close;

namespace {

const cg::Device kCpu = cg::Device::cpu();
const cg::Device kCuda = cg::Device::cuda(0);
constexpr double kEps = 1e-5;

std::string message_of(const std::function<void()>& f) { return cg::testing::value_error_message(f); }

bool mentions(const std::string& message, const std::string& what) {
  return message.find("batch_norm") != std::string::npos && message.find(what) != std::string::npos;
}

std::vector<double> values(const cg::Tensor& t) { return t.cpu().to(cg::DType::float64).to_vector<double>(); }

cg::Tensor f64(const std::vector<double>& v, const cg::Shape& s) { return cg::from_vector(v, s); }

// (N, C, HW) of a 2-D or 4-D shape.
struct Dims {
  std::int64_t n, c, hw;
  explicit Dims(const cg::Shape& s) : n(s[0]), c(s[1]), hw(s.size() == 4 ? s[2] * s[3] : 1) {}
  std::size_t at(std::int64_t i, std::int64_t ch, std::int64_t j) const {
    return static_cast<std::size_t>((i * c + ch) * hw + j);
  }
};

// Batch statistics per channel by the definition: mean and biased variance (two passes).
struct Stats {
  std::vector<double> mean, var;
};
Stats loop_stats(const cg::Tensor& x) {
  const Dims d(x.shape());
  const auto xv = values(x);
  Stats s{std::vector<double>(d.c), std::vector<double>(d.c)};
  const double m = static_cast<double>(d.n * d.hw);
  for (std::int64_t c = 0; c < d.c; ++c) {
    double sum = 0, sq = 0;
    for (std::int64_t i = 0; i < d.n; ++i)
      for (std::int64_t j = 0; j < d.hw; ++j) sum += xv[d.at(i, c, j)];
    const double mean = sum / m;
    for (std::int64_t i = 0; i < d.n; ++i)
      for (std::int64_t j = 0; j < d.hw; ++j) sq += (xv[d.at(i, c, j)] - mean) * (xv[d.at(i, c, j)] - mean);
    s.mean[static_cast<std::size_t>(c)] = mean;
    s.var[static_cast<std::size_t>(c)] = sq / m;
  }
  return s;
}

// y = (x - mean) / sqrt(var + eps) * w + b with per-channel mean/var (weight/bias optional).
cg::Tensor loop_normalize(const cg::Tensor& x, const std::vector<double>& mean,
                          const std::vector<double>& var, const cg::Tensor& w, const cg::Tensor& b,
                          double eps) {
  const Dims d(x.shape());
  const auto xv = values(x);
  const auto wv = w.defined() ? values(w) : std::vector<double>(static_cast<std::size_t>(d.c), 1.0);
  const auto bv = b.defined() ? values(b) : std::vector<double>(static_cast<std::size_t>(d.c), 0.0);
  std::vector<double> y(xv.size());
  for (std::int64_t i = 0; i < d.n; ++i)
    for (std::int64_t c = 0; c < d.c; ++c)
      for (std::int64_t j = 0; j < d.hw; ++j) {
        const auto k = static_cast<std::size_t>(c);
        y[d.at(i, c, j)] = (xv[d.at(i, c, j)] - mean[k]) / std::sqrt(var[k] + eps) * wv[k] + bv[k];
      }
  return f64(y, x.shape());
}

// Gradients by the formulas written out: training uses the batch statistics, eval the running
// ones (given as mean/var).
struct Grads {
  cg::Tensor dx, dw, db;
};
Grads loop_grads(const cg::Tensor& x, const cg::Tensor& dy, const cg::Tensor& w,
                 const std::vector<double>& mean, const std::vector<double>& var, bool training, double eps) {
  const Dims d(x.shape());
  const auto xv = values(x), gv = values(dy);
  const auto wv = w.defined() ? values(w) : std::vector<double>(static_cast<std::size_t>(d.c), 1.0);
  const double m = static_cast<double>(d.n * d.hw);
  std::vector<double> dx(xv.size()), dw(static_cast<std::size_t>(d.c)), db(static_cast<std::size_t>(d.c));
  for (std::int64_t c = 0; c < d.c; ++c) {
    const auto k = static_cast<std::size_t>(c);
    const double invstd = 1.0 / std::sqrt(var[k] + eps);
    double sum_g = 0, sum_gxhat = 0;
    for (std::int64_t i = 0; i < d.n; ++i)
      for (std::int64_t j = 0; j < d.hw; ++j) {
        sum_g += gv[d.at(i, c, j)];
        sum_gxhat += gv[d.at(i, c, j)] * (xv[d.at(i, c, j)] - mean[k]) * invstd;
      }
    dw[k] = sum_gxhat;
    db[k] = sum_g;
    for (std::int64_t i = 0; i < d.n; ++i)
      for (std::int64_t j = 0; j < d.hw; ++j) {
        const std::size_t e = d.at(i, c, j);
        const double xhat = (xv[e] - mean[k]) * invstd;
        dx[e] =
            training ? wv[k] * invstd * (gv[e] - sum_g / m - xhat * sum_gxhat / m) : gv[e] * wv[k] * invstd;
      }
  }
  return {f64(dx, x.shape()), f64(dw, {d.c}), f64(db, {d.c})};
}

// Random inputs for one case: x (mean `shift`), weight, bias, running mean/var, dy.
struct Inputs {
  cg::Tensor x, w, b, rm, rv, dy;
  cg::TensorList list() const { return {x, w, b, rm, rv, dy}; }
};
Inputs make_inputs(const cg::Shape& shape, cg::DType dtype = cg::DType::float32, double shift = 0.0,
                   double scale = 1.5) {
  const std::int64_t c = shape[1];
  Inputs in;
  in.x = cg::randn(shape, kCpu, dtype) * scale + shift;
  in.w = cg::rand({c}, kCpu, dtype) + 0.5;
  in.b = cg::randn({c}, kCpu, dtype);
  in.rm = cg::randn({c}, kCpu, dtype) * 0.1;
  in.rv = cg::rand({c}, kCpu, dtype) + 0.5;
  in.dy = cg::randn(shape, kCpu, dtype);
  return in;
}

}  // namespace

// ---- CPU: forward and running statistics against loops ----

TEST(BatchNorm, TrainingForwardAndRunningStatsMatchLoops) {
  cg::manual_seed(11);
  for (const cg::DType dtype : {cg::DType::float32, cg::DType::float64}) {
    for (const cg::Shape& shape : std::vector<cg::Shape>{{3, 4, 2, 5}, {6, 3}, {2, 1, 1, 3}, {5, 2, 1, 1}}) {
      SCOPED_TRACE(cg::detail::cat(dtype, cg::shape_str(shape)));
      Inputs in = make_inputs(shape, dtype, 0.3);
      const auto rm0 = values(in.rm), rv0 = values(in.rv);
      const std::uint64_t version = in.rm.version();
      const cg::Tensor y = F::batch_norm(in.x, in.rm, in.rv, in.w, in.b, true, 0.1, kEps);
      EXPECT_EQ(y.dtype(), dtype);
      const Stats s = loop_stats(in.x);
      EXPECT_TRUE(all_close(y, loop_normalize(in.x, s.mean, s.var, in.w, in.b, kEps)));
      const Dims d(shape);
      const double m = static_cast<double>(d.n * d.hw);
      std::vector<double> rm(rm0.size()), rv(rv0.size());
      for (std::size_t c = 0; c < rm.size(); ++c) {
        rm[c] = 0.9 * rm0[c] + 0.1 * s.mean[c];
        rv[c] = 0.9 * rv0[c] + 0.1 * s.var[c] * m / (m - 1);  // unbiased
      }
      EXPECT_TRUE(all_close(in.rm, f64(rm, {d.c}), {1e-6, 1e-6}));
      EXPECT_TRUE(all_close(in.rv, f64(rv, {d.c}), {1e-6, 1e-6}));
      EXPECT_GT(in.rm.version(), version);
    }
  }
}

TEST(BatchNorm, EvalUsesRunningStatsAndLeavesThemAlone) {
  cg::manual_seed(12);
  for (const cg::Shape& shape : std::vector<cg::Shape>{{4, 3, 2, 3}, {7, 5}, {1, 4}}) {
    SCOPED_TRACE(cg::shape_str(shape));
    Inputs in = make_inputs(shape);
    const auto rm0 = values(in.rm), rv0 = values(in.rv);
    const std::uint64_t version = in.rv.version();
    const cg::Tensor y = F::batch_norm(in.x, in.rm, in.rv, in.w, in.b, false, 0.1, kEps);
    EXPECT_TRUE(all_close(y, loop_normalize(in.x, rm0, rv0, in.w, in.b, kEps)));
    EXPECT_TRUE(all_equal(in.rm, f64(rm0, {shape[1]})));
    EXPECT_TRUE(all_equal(in.rv, f64(rv0, {shape[1]})));
    EXPECT_EQ(in.rv.version(), version);
  }
}

TEST(BatchNorm, WithoutAffineOrRunningStats) {
  cg::manual_seed(13);
  const cg::Tensor x = cg::randn({5, 3, 4, 2}) * 3.0 - 2.0;
  const cg::Tensor y = F::batch_norm(x, {}, {}, {}, {}, true, 0.1, kEps);
  const Stats s = loop_stats(x);
  EXPECT_TRUE(all_close(y, loop_normalize(x, s.mean, s.var, {}, {}, kEps)));
  // Normalized: per channel mean 0 and biased variance var / (var + eps).
  const Stats ys = loop_stats(y);
  for (std::size_t c = 0; c < 3; ++c) {
    EXPECT_NEAR(ys.mean[c], 0.0, 1e-6);
    EXPECT_NEAR(ys.var[c], s.var[c] / (s.var[c] + kEps), 1e-5);
  }
}

TEST(BatchNorm, NumBatchesTrackedIsIncrementedInTrainingOnly) {
  cg::manual_seed(14);
  Inputs in = make_inputs({4, 3});
  cg::Tensor nbt = cg::zeros({}, kCpu, cg::DType::int64);
  F::batch_norm(in.x, in.rm, in.rv, in.w, in.b, true, 0.1, kEps, nbt);
  F::batch_norm(in.x, in.rm, in.rv, in.w, in.b, true, 0.1, kEps, nbt);
  EXPECT_EQ(nbt.item<std::int64_t>(), 2);
  const std::uint64_t version = nbt.version();
  F::batch_norm(in.x, in.rm, in.rv, in.w, in.b, false, 0.1, kEps, nbt);
  EXPECT_EQ(nbt.item<std::int64_t>(), 2);
  EXPECT_EQ(nbt.version(), version);
}

TEST(BatchNorm, MomentumUnsetGivesCumulativeAverage) {
  cg::manual_seed(15);
  const cg::Shape shape{6, 2, 3, 1};
  cg::Tensor rm = cg::full({2}, 7.0), rv = cg::full({2}, 9.0);  // overwritten by the first step
  cg::Tensor nbt = cg::zeros({}, kCpu, cg::DType::int64);
  std::vector<double> sum_mean(2, 0.0), sum_var(2, 0.0);
  const double m = 18.0;
  for (int step = 1; step <= 3; ++step) {
    const cg::Tensor x = cg::randn(shape) * static_cast<double>(step) + static_cast<double>(step);
    F::batch_norm(x, rm, rv, {}, {}, true, std::nullopt, kEps, nbt);
    const Stats s = loop_stats(x);
    for (std::size_t c = 0; c < 2; ++c) {
      sum_mean[c] += s.mean[c];
      sum_var[c] += s.var[c] * m / (m - 1);
    }
    EXPECT_EQ(nbt.item<std::int64_t>(), step);
    EXPECT_TRUE(all_close(rm, f64({sum_mean[0] / step, sum_mean[1] / step}, {2}), {1e-6, 1e-6}))
        << "step " << step;
    EXPECT_TRUE(all_close(rv, f64({sum_var[0] / step, sum_var[1] / step}, {2}), {1e-6, 1e-6}))
        << "step " << step;
  }
  // Resuming at num_batches_tracked = 4: the factor is 1/5.
  cg::Tensor rm2 = cg::full({2}, 1.0), rv2 = cg::full({2}, 1.0),
             nbt2 = cg::full({}, 4.0, kCpu, cg::DType::int64);
  const cg::Tensor x = cg::randn(shape);
  F::batch_norm(x, rm2, rv2, {}, {}, true, std::nullopt, kEps, nbt2);
  const Stats s = loop_stats(x);
  EXPECT_EQ(nbt2.item<std::int64_t>(), 5);
  EXPECT_TRUE(all_close(rm2, f64({0.8 + 0.2 * s.mean[0], 0.8 + 0.2 * s.mean[1]}, {2}), {1e-6, 1e-6}));
  EXPECT_TRUE(all_close(
      rv2, f64({0.8 + 0.2 * s.var[0] * m / (m - 1), 0.8 + 0.2 * s.var[1] * m / (m - 1)}, {2}), {1e-6, 1e-6}));
}

TEST(BatchNorm, EmptyBatchGivesEmptyOutputAndLeavesStatsAlone) {
  Inputs in = make_inputs({0, 3, 2, 2});
  in.w.requires_grad_();
  const auto rm0 = values(in.rm);
  cg::Tensor nbt = cg::zeros({}, kCpu, cg::DType::int64);
  const cg::Tensor y = F::batch_norm(in.x, in.rm, in.rv, in.w, in.b, true, 0.1, kEps, nbt);
  EXPECT_EQ(y.shape(), (cg::Shape{0, 3, 2, 2}));
  EXPECT_TRUE(all_equal(in.rm, f64(rm0, {3})));
  EXPECT_EQ(nbt.item<std::int64_t>(), 0);
  const cg::Tensor gw = cg::autograd::grad({y}, {in.w}, {cg::zeros({0, 3, 2, 2})})[0];
  EXPECT_TRUE(all_equal(gw, cg::zeros({3})));
}

// ---- CPU: backward against loops ----

TEST(BatchNorm, BackwardMatchesLoops) {
  cg::manual_seed(16);
  for (const bool training : {true, false}) {
    for (const cg::Shape& shape : std::vector<cg::Shape>{{3, 4, 2, 5}, {9, 3}, {2, 2, 1, 1}}) {
      SCOPED_TRACE(cg::detail::cat(training ? "training " : "eval ", cg::shape_str(shape)));
      Inputs in = make_inputs(shape, cg::DType::float32, -0.7);
      const auto rm0 = values(in.rm), rv0 = values(in.rv);
      const cg::Tensor x = in.x.clone().requires_grad_(), w = in.w.clone().requires_grad_(),
                       b = in.b.clone().requires_grad_();
      const cg::Tensor y = F::batch_norm(x, in.rm, in.rv, w, b, training, 0.1, kEps);
      EXPECT_EQ(y.grad_fn_name(), "BatchNormBackward");
      const cg::TensorList g = cg::autograd::grad({y}, {x, w, b}, {in.dy});
      const Stats s = loop_stats(in.x);
      const Grads ref = training ? loop_grads(in.x, in.dy, in.w, s.mean, s.var, true, kEps)
                                 : loop_grads(in.x, in.dy, in.w, rm0, rv0, false, kEps);
      EXPECT_TRUE(all_close(g[0], ref.dx));
      EXPECT_TRUE(all_close(g[1], ref.dw));
      EXPECT_TRUE(all_close(g[2], ref.db));
    }
  }
}

TEST(BatchNorm, BackwardComputesOnlyTheGradientsAskedFor) {
  cg::manual_seed(17);
  Inputs in = make_inputs({4, 3, 2, 2});
  const Stats s = loop_stats(in.x);
  const Grads ref = loop_grads(in.x, in.dy, in.w, s.mean, s.var, true, kEps);
  {  // x only: frozen affine parameters get no gradient
    const cg::Tensor x = in.x.clone().requires_grad_();
    const cg::Tensor w = in.w.clone(), b = in.b.clone();
    F::batch_norm(x, {}, {}, w, b, true, 0.1, kEps).backward(in.dy);
    EXPECT_TRUE(all_close(x.grad(), ref.dx));
    EXPECT_FALSE(w.grad().defined());
    EXPECT_FALSE(b.grad().defined());
  }
  {  // weight only (a frozen input, as in fine-tuning the affine parameters alone)
    const cg::Tensor w = in.w.clone().requires_grad_();
    F::batch_norm(in.x, {}, {}, w, in.b, true, 0.1, kEps).backward(in.dy);
    EXPECT_TRUE(all_close(w.grad(), ref.dw));
    EXPECT_FALSE(in.x.grad().defined());
  }
  {  // bias only, eval mode
    const cg::Tensor b = in.b.clone().requires_grad_();
    F::batch_norm(in.x, in.rm, in.rv, in.w, b, false, 0.1, kEps).backward(in.dy);
    EXPECT_TRUE(all_close(b.grad(), in.dy.sum(0).sum(-1).sum(-1)));
  }
  // No input needs grad: nothing is recorded.
  EXPECT_FALSE(F::batch_norm(in.x, {}, {}, in.w, in.b, true, 0.1, kEps).requires_grad());
}

TEST(BatchNorm, SavedWeightModifiedInPlaceIsReported) {
  Inputs in = make_inputs({4, 2});
  cg::Tensor w = in.w.clone().requires_grad_();
  const cg::Tensor y = F::batch_norm(in.x, {}, {}, w, in.b, true, 0.1, kEps);
  {
    cg::NoGradGuard ng;
    w.mul_(2.0);
  }
  const std::string m = message_of([&] { y.backward(in.dy); });
  EXPECT_NE(m.find("BatchNormBackward"), std::string::npos) << m;
  EXPECT_NE(m.find("modified by an in-place operation"), std::string::npos) << m;
}

// ---- CPU: errors ----

TEST(BatchNorm, ErrorsNameTheOpAndTheProblem) {
  const cg::Tensor x = cg::randn({4, 3, 2, 2});
  const cg::Tensor c3 = cg::ones({3}), c4 = cg::ones({4});
  EXPECT_TRUE(mentions(message_of([&] { F::batch_norm(cg::Tensor(), c3, c3, c3, c3, true); }), "undefined"));
  EXPECT_TRUE(mentions(message_of([&] {
                         F::batch_norm(cg::randn({4, 3, 5}), c3, c3, c3, c3, true);
                       }),
                       "4-D"));
  EXPECT_TRUE(mentions(message_of([&] { F::batch_norm(cg::randn({12}), {}, {}, {}, {}, true); }), "2-D"));
  EXPECT_TRUE(
      mentions(message_of([&] { F::batch_norm(x.to(cg::DType::int64), {}, {}, {}, {}, true); }), "float32"));
  EXPECT_TRUE(
      mentions(message_of([&] { F::batch_norm(x, {}, {}, c4, {}, true); }), "weight must have shape [3]"));
  EXPECT_TRUE(mentions(message_of([&] { F::batch_norm(x, {}, {}, {}, cg::ones({3, 1}), true); }), "bias"));
  EXPECT_TRUE(mentions(message_of([&] { F::batch_norm(x, {}, {}, c3.to(cg::DType::float64), {}, true); }),
                       "float64"));
  EXPECT_TRUE(mentions(message_of([&] { F::batch_norm(x, c4, c4, {}, {}, true); }), "running_mean"));
  EXPECT_TRUE(mentions(message_of([&] { F::batch_norm(x, c3.clone(), {}, {}, {}, true); }), "together"));
  EXPECT_TRUE(mentions(message_of([&] { F::batch_norm(x, {}, c3.clone(), {}, {}, true); }), "together"));
  EXPECT_TRUE(mentions(message_of([&] { F::batch_norm(x, {}, {}, c3, c3, false); }), "eval mode"));
  // One value per channel in training, as PyTorch: (1, C) and (1, C, 1, 1).
  EXPECT_TRUE(mentions(message_of([&] {
                         F::batch_norm(cg::randn({1, 3}), {}, {}, {}, {}, true);
                       }),
                       "more than 1 value per channel"));
  EXPECT_TRUE(mentions(message_of([&] {
                         F::batch_norm(cg::randn({1, 3, 1, 1}), c3.clone(), c3.clone(), {}, {}, true);
                       }),
                       "more than 1 value per channel"));
  EXPECT_NO_THROW(F::batch_norm(cg::randn({1, 3}), c3.clone(), c3.clone(), {}, {}, false));  // fine in eval
  EXPECT_NO_THROW(F::batch_norm(cg::randn({1, 3, 1, 2}), {}, {}, {}, {}, true));             // two values
  // num_batches_tracked and momentum.
  const cg::Tensor nbt = cg::zeros({}, kCpu, cg::DType::int64);
  EXPECT_TRUE(
      mentions(message_of([&] { F::batch_norm(x, c3.clone(), c3.clone(), {}, {}, true, std::nullopt); }),
               "num_batches_tracked"));
  EXPECT_TRUE(mentions(
      message_of([&] { F::batch_norm(x, c3.clone(), c3.clone(), {}, {}, true, 0.1, kEps, cg::zeros({})); }),
      "int64 scalar"));
  EXPECT_TRUE(mentions(message_of([&] {
                         F::batch_norm(x, c3.clone(), c3.clone(), {}, {}, true, 0.1, kEps,
                                       cg::zeros({2}, kCpu, cg::DType::int64));
                       }),
                       "int64 scalar"));
  EXPECT_TRUE(mentions(message_of([&] { F::batch_norm(x, {}, {}, {}, {}, true, 0.1, kEps, nbt); }),
                       "without running_mean"));
  EXPECT_TRUE(mentions(message_of([&] { F::batch_norm(x, {}, {}, {}, {}, true, 0.1, -1.0); }), "eps"));
  // Running statistics are buffers.
  const cg::Tensor grad_rm = cg::zeros({3}).requires_grad_();
  EXPECT_TRUE(mentions(message_of([&] { F::batch_norm(x, grad_rm, c3.clone(), {}, {}, true); }),
                       "must not require grad"));
  EXPECT_EQ(nbt.item<std::int64_t>(), 0);  // nothing ran
}

// ---- golden files from PyTorch ----

namespace {

// Three training steps (running statistics carried from running_*_init), then eval; per step
// y, dx, dweight, dbias and the running statistics, to 1e-5 relative norm.
void expect_golden(const std::string& name, cg::Device dev) {
  SCOPED_TRACE(name + " on " + dev.str());
  const auto file = cg::io::read_safetensors(std::string(CUGRAD_GOLDEN_DIR) + "/" + name + ".safetensors");
  const auto get = [&](const std::string& key) { return file.tensors.at(key); };
  const auto on = [&](const std::string& key) { return get(key).to(dev).clone(); };
  const double momentum = std::stod(file.metadata.at("momentum")), eps = std::stod(file.metadata.at("eps"));
  const int steps = std::stoi(file.metadata.at("steps"));
  ASSERT_EQ(steps, 3);
  cg::Tensor rm = on("running_mean_init"), rv = on("running_var_init");
  const cg::Tensor w = on("weight").requires_grad_(), b = on("bias").requires_grad_();
  constexpr double kTol = 1e-5;
  for (int k = 0; k <= steps; ++k) {
    const bool training = k < steps;
    const std::string s = training ? std::to_string(k) : std::string("eval");
    SCOPED_TRACE("step " + s);
    const cg::Tensor x = on("x_" + s).requires_grad_();
    const cg::Tensor y = F::batch_norm(x, rm, rv, w, b, training, momentum, eps);
    const cg::TensorList g = cg::autograd::grad({y}, {x, w, b}, {on("dy_" + s)});
    EXPECT_EQ(y.device(), dev);
    EXPECT_TRUE(norm_close(y, get("y_" + s), kTol)) << "y";
    EXPECT_TRUE(norm_close(g[0], get("dx_" + s), kTol)) << "dx";
    EXPECT_TRUE(norm_close(g[1], get("dweight_" + s), kTol)) << "dweight";
    EXPECT_TRUE(norm_close(g[2], get("dbias_" + s), kTol)) << "dbias";
    const std::string r = training ? s : std::to_string(steps - 1);  // eval leaves them alone
    EXPECT_TRUE(norm_close(rm, get("running_mean_" + r), kTol)) << "running_mean";
    EXPECT_TRUE(norm_close(rv, get("running_var_" + r), kTol)) << "running_var";
  }
}

}  // namespace

TEST(BatchNormGolden, Bn2dOnCpu) { expect_golden("bn2d", kCpu); }
TEST(BatchNormGolden, Bn1dOnCpu) { expect_golden("bn1d", kCpu); }

// ---- gradcheck (float64, CPU) ----

namespace {
cg::Tensor leaf64(const cg::Tensor& t) { return t.to(cg::DType::float64).detach().requires_grad_(); }
}  // namespace

TEST(BatchNormGradcheck, TrainingAndEvalForInputWeightAndBias) {
  cg::manual_seed(18);
  for (const cg::Shape& shape : std::vector<cg::Shape>{{3, 2, 2, 3}, {5, 3}, {2, 2, 1, 1}}) {
    SCOPED_TRACE(cg::shape_str(shape));
    const Inputs in = make_inputs(shape, cg::DType::float64, 0.5);
    const cg::Tensor x = leaf64(in.x), w = leaf64(in.w), b = leaf64(in.b);
    const cg::Tensor rm = in.rm.clone(), rv = in.rv.clone();
    EXPECT_EQ(
        cg::autograd::gradcheck(
            [](const cg::TensorList& t) { return F::batch_norm(t[0], {}, {}, t[1], t[2], true, 0.1, kEps); },
            {x, w, b}),
        "")
        << "training";
    // Running statistics in training mode do not change the output (only the buffers).
    EXPECT_EQ(
        cg::autograd::gradcheck(
            [&](const cg::TensorList& t) { return F::batch_norm(t[0], rm, rv, t[1], t[2], true, 0.1, kEps); },
            {x, w, b}),
        "")
        << "training with running stats";
    EXPECT_EQ(cg::autograd::gradcheck(
                  [&](const cg::TensorList& t) {
                    return F::batch_norm(t[0], rm, rv, t[1], t[2], false, 0.1, kEps);
                  },
                  {x, w, b}),
              "")
        << "eval";
    EXPECT_EQ(
        cg::autograd::gradcheck(
            [](const cg::TensorList& t) { return F::batch_norm(t[0], {}, {}, {}, {}, true, 0.1, kEps); },
            {x}),
        "")
        << "training without affine";
  }
  // The check itself can fail: a batch norm whose output is scaled by the wrong input fails.
  const Inputs in = make_inputs({4, 2}, cg::DType::float64);
  const cg::Tensor x = leaf64(in.x);
  EXPECT_NE(cg::autograd::gradcheck(
                [](const cg::TensorList& t) {
                  cg::Tensor detached = t[0].detach();  // the statistics' dependence on x is lost
                  return F::batch_norm(detached, {}, {}, {}, {}, true, 0.1, kEps) + t[0] * 0.0;
                },
                {x}),
            "");
}

// ---- GPU: the fused kernels against the float64 CPU reference ----

namespace {

// What a parity run returns: y, a running statistic, or one of the gradients.
enum class Out { y, running_mean, running_var, dx, dweight, dbias };

struct BnRun {
  Out out = Out::y;
  bool training = true;
  bool want_x = true, want_w = true, want_b = true;  // which inputs require grad
  bool misalign = false;                             // run on an input at a 4-byte offset
  bool misalign_params = false;  // weight, bias and running stats at a 4-byte offset
};

// A copy of t that starts 4 bytes into its buffer (not 16-byte aligned).
cg::Tensor offset_copy(const cg::Tensor& t) {
  cg::Tensor buffer = cg::empty({t.numel() + 1}, t.device(), t.dtype());
  cg::Tensor view = buffer.narrow(0, 1, t.numel()).reshape(t.shape());
  view.copy_(t);
  return view;
}

// inputs: {x, weight, bias, running_mean, running_var, dy}.
cg::Tensor run_bn(const cg::TensorList& t, const BnRun& r) {
  cg::Tensor x = r.misalign ? offset_copy(t[0]) : t[0];
  x = x.detach().requires_grad_(r.want_x);
  const auto param = [&](const cg::Tensor& p) { return r.misalign_params ? offset_copy(p) : p.clone(); };
  const cg::Tensor w = param(t[1]).detach().requires_grad_(r.want_w);
  const cg::Tensor b = param(t[2]).detach().requires_grad_(r.want_b);
  const cg::Tensor rm = param(t[3]), rv = param(t[4]);
  const cg::Tensor y = F::batch_norm(x, rm, rv, w, b, r.training, 0.1, kEps);
  switch (r.out) {
    case Out::y:
      return y;
    case Out::running_mean:
      return rm;
    case Out::running_var:
      return rv;
    default:
      break;
  }
  const cg::Tensor& wrt = r.out == Out::dx ? x : r.out == Out::dweight ? w : b;
  return cg::autograd::grad({y}, {wrt}, {t[5]})[0];
}

// Forward (y, running stats) and dx elementwise, dweight and dbias by relative norm.
void expect_parity(const cg::Shape& shape, bool training, double shift = 0.0, bool misalign = false,
                   bool with_backward = true, bool misalign_params = false) {
  SCOPED_TRACE(cg::detail::cat(training ? "training " : "eval ", cg::shape_str(shape),
                               misalign ? " misaligned" : "", misalign_params ? " misaligned parameters" : "",
                               shift != 0 ? " shifted" : ""));
  const Inputs in = make_inputs(shape, cg::DType::float32, shift);
  const cg::TensorList list = in.list();
  BnRun r;
  r.training = training;
  r.misalign = misalign;
  r.misalign_params = misalign_params;
  r.out = Out::y;
  EXPECT_TRUE(cg::testing::cuda_matches_cpu64([&](const cg::TensorList& t) { return run_bn(t, r); }, list))
      << "y";
  if (training) {
    r.out = Out::running_mean;
    EXPECT_TRUE(cg::testing::cuda_matches_cpu64([&](const cg::TensorList& t) { return run_bn(t, r); }, list))
        << "running_mean";
    r.out = Out::running_var;
    EXPECT_TRUE(cg::testing::cuda_matches_cpu64([&](const cg::TensorList& t) { return run_bn(t, r); }, list))
        << "running_var";
  }
  if (!with_backward) return;
  // dx elementwise (with N*H*W = 2 it is O(eps): a relative norm would only measure rounding);
  // dweight and dbias, sums over N*H*W, by relative norm.
  r.out = Out::dx;
  EXPECT_TRUE(cg::testing::cuda_matches_cpu64([&](const cg::TensorList& t) { return run_bn(t, r); }, list))
      << "dx";
  r.out = Out::dweight;
  EXPECT_TRUE(
      cg::testing::cuda_matches_cpu64_norm([&](const cg::TensorList& t) { return run_bn(t, r); }, list))
      << "dweight";
  r.out = Out::dbias;
  EXPECT_TRUE(
      cg::testing::cuda_matches_cpu64_norm([&](const cg::TensorList& t) { return run_bn(t, r); }, list))
      << "dbias";
}

// Awkward sizes: C = 1 and 3, N*H*W = 2, H*W not a multiple of 4 (scalar path), H*W a multiple
// of 4 (float4 path), 2-D inputs with C a multiple of 4 or not, a partial tile of channels;
// 2-D inputs whose C / 4 divides 256 (each thread keeps its four channels' parameters:
// {1001, 64}, {3, 1024}) or does not ({77, 1000}, {64, 12}).
const std::vector<cg::Shape> kAwkward = {
    {2, 1, 1, 1}, {1, 1, 1, 2}, {2, 3},   {5, 1, 3, 3},  {4, 3, 5, 7}, {7, 3, 5, 7},  {3, 5, 4, 4},
    {2, 6, 2, 2}, {33, 7},      {64, 12}, {9, 40, 3, 1}, {1000, 33},   {3, 2, 1, 6},  {2, 37, 9, 11},
    {1001, 64},   {3, 1024},    {77, 1000}};

}  // namespace

TEST(BatchNormGPU, TrainingMatchesCpuAtAwkwardSizes) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(21);
  for (const cg::Shape& s : kAwkward) expect_parity(s, true);
}

TEST(BatchNormGPU, EvalMatchesCpuAtAwkwardSizes) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(22);
  for (const cg::Shape& s : kAwkward) expect_parity(s, false);
  // Eval allows one value per channel, down to a single element.
  expect_parity({1, 5}, false);
  expect_parity({1, 1, 1, 1}, false);
}

TEST(BatchNormGPU, LargeSizesSpreadOverTheWholeGpu) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(23);
  expect_parity({256, 64, 56, 56}, true);  // 64 channels of 802,816: each split over many blocks
  expect_parity({32, 3, 224, 224}, true);  // 3 channels of 1.6M
  expect_parity({40001, 3}, true);         // (N, C): the rows plan split over many blocks
  expect_parity({4096, 1024}, true);
  expect_parity({4096, 1024}, false, 0.0, false, false);
  expect_parity({17, 3, 111, 113}, true);  // odd planes (scalar path) split over many blocks
}

TEST(BatchNormGPU, LargeMeanDoesNotCancel) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(24);
  // Mean 50, std 1.5, every output against the float64 reference: float4 planes, rows, scalar planes.
  expect_parity({64, 3, 32, 32}, true, 50.0);
  expect_parity({3000, 5}, true, 50.0);
  expect_parity({8, 4, 7, 7}, true, 50.0);
  // Mean 1000, std 2: E[x²] - E[x]² in float would leave nothing of the variance (1e6 vs 4);
  // the merged Welford states keep it to float precision. Momentum 1 stores the batch
  // statistics (the variance unbiased) in the running buffers.
  for (const cg::Shape& shape : std::vector<cg::Shape>{{128, 2, 16, 16}, {5000, 3}, {64, 2, 5, 5}}) {
    SCOPED_TRACE(cg::shape_str(shape));
    const cg::Tensor x = cg::randn(shape, kCuda) * 2.0 + 1000.0;
    cg::Tensor rm = cg::zeros({shape[1]}, kCuda), rv = cg::zeros({shape[1]}, kCuda);
    F::batch_norm(x, rm, rv, {}, {}, true, 1.0, kEps);
    const Stats s = loop_stats(x);
    const Dims d(shape);
    const double m = static_cast<double>(d.n * d.hw);
    const auto rmv = values(rm), rvv = values(rv);
    for (std::size_t c = 0; c < rmv.size(); ++c) {
      EXPECT_NEAR(rmv[c], s.mean[c], 1e-5 * 1000.0);
      EXPECT_NEAR(rvv[c], s.var[c] * m / (m - 1), 1e-5 * 4.0);
    }
  }
}

TEST(BatchNormGPU, MisalignedInputsUseTheScalarPath) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(25);
  expect_parity({6, 3, 4, 4}, true, 0.0, true);
  expect_parity({64, 8}, true, 0.0, true);
  expect_parity({6, 3, 4, 4}, false, 0.0, true);
}

// (N, C) with C % 4 == 0 reads four channels' parameters per 128-bit load when they are
// 16-byte aligned, and one by one when they are not.
TEST(BatchNormGPU, RowsWithMisalignedParametersLoadThemOneByOne) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(28);
  for (const cg::Shape& shape : std::vector<cg::Shape>{{64, 8}, {37, 12}}) {
    expect_parity(shape, true, 0.0, false, true, true);
    expect_parity(shape, false, 0.0, false, true, true);
  }
}

TEST(BatchNormGPU, OnlyTheGradientsAskedForMatchCpu) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(26);
  for (const cg::Shape& shape : std::vector<cg::Shape>{{4, 3, 6, 6}, {50, 9}}) {
    for (const bool training : {true, false}) {
      SCOPED_TRACE(cg::detail::cat(training ? "training " : "eval ", cg::shape_str(shape)));
      const Inputs in = make_inputs(shape);
      BnRun r;
      r.training = training;
      r.want_w = r.want_b = false;  // dx alone (eval: no reduction at all)
      r.out = Out::dx;
      EXPECT_TRUE(
          cg::testing::cuda_matches_cpu64([&](const cg::TensorList& t) { return run_bn(t, r); }, in.list()));
      r.want_x = false;  // dweight alone
      r.want_w = true;
      r.out = Out::dweight;
      EXPECT_TRUE(cg::testing::cuda_matches_cpu64_norm([&](const cg::TensorList& t) { return run_bn(t, r); },
                                                       in.list()));
    }
  }
}

TEST(BatchNormGPU, CumulativeAverageReadsTheCounterOnTheDevice) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(27);
  for (const cg::Shape& shape : std::vector<cg::Shape>{{16, 3, 20, 20}, {300, 6}}) {
    SCOPED_TRACE(cg::shape_str(shape));
    const cg::Tensor x0 = cg::randn(shape), x1 = cg::randn(shape) * 2.0 + 1.0, x2 = cg::randn(shape) - 3.0;
    auto three_steps = [&](cg::Device dev, cg::DType dtype, cg::Tensor& rm, cg::Tensor& rv, cg::Tensor& nbt) {
      rm = cg::full({shape[1]}, 5.0, dev, dtype);
      rv = cg::full({shape[1]}, 5.0, dev, dtype);
      nbt = cg::zeros({}, dev, cg::DType::int64);
      for (const cg::Tensor& x : {x0, x1, x2})
        F::batch_norm(x.to(dtype).to(dev), rm, rv, {}, {}, true, std::nullopt, kEps, nbt);
    };
    cg::Tensor rm, rv, nbt, rm_ref, rv_ref, nbt_ref;
    three_steps(kCuda, cg::DType::float32, rm, rv, nbt);
    three_steps(kCpu, cg::DType::float64, rm_ref, rv_ref, nbt_ref);
    EXPECT_EQ(nbt.item<std::int64_t>(), 3);
    EXPECT_TRUE(all_close(rm, rm_ref));
    EXPECT_TRUE(all_close(rv, rv_ref));
  }
}

TEST(BatchNormGPU, GoldenFiles) {
  CUGRAD_REQUIRE_GPU();
  expect_golden("bn2d", kCuda);
  expect_golden("bn1d", kCuda);
}

TEST(BatchNormGPU, OneValuePerChannelInTrainingIsAnError) {
  CUGRAD_REQUIRE_GPU();
  const cg::Tensor rm = cg::zeros({3}, kCuda), rv = cg::ones({3}, kCuda);
  EXPECT_TRUE(mentions(message_of([&] {
                         F::batch_norm(cg::randn({1, 3}, kCuda), rm, rv, {}, {}, true);
                       }),
                       "more than 1 value per channel"));
  EXPECT_TRUE(mentions(message_of([&] {
                         F::batch_norm(cg::randn({1, 3, 1, 1}, kCuda), {}, {}, {}, {}, true);
                       }),
                       "more than 1 value per channel"));
  EXPECT_TRUE(mentions(message_of([&] {
                         // (float64 tensors cannot live on CUDA; an integer input is the wrong dtype here)
                         F::batch_norm(cg::zeros({4, 3}, kCuda, cg::DType::int32), {}, {}, {}, {}, true);
                       }),
                       "float32"));
  EXPECT_TRUE(mentions(message_of([&] {
                         F::batch_norm(cg::randn({4, 3}, kCuda), {}, {}, cg::ones({3}), {}, true);
                       }),
                       "weight is on cpu"));
  EXPECT_TRUE(all_equal(rm, cg::zeros({3})));
}

TEST(BatchNormGPU, RepeatedRunsAreBitwiseIdentical) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(28);
  for (const cg::Shape& shape : std::vector<cg::Shape>{{64, 16, 28, 28}, {20000, 3}}) {
    const Inputs in = make_inputs(shape);
    const cg::Tensor x = in.x.cuda(), w = in.w.cuda().requires_grad_(), b = in.b.cuda(), dy = in.dy.cuda();
    cg::Tensor y[2], gw[2], rm[2];
    for (int i = 0; i < 2; ++i) {
      rm[i] = in.rm.cuda();
      cg::Tensor rv = in.rv.cuda();
      y[i] = F::batch_norm(x, rm[i], rv, w, b, true, 0.1, kEps);
      gw[i] = cg::autograd::grad({y[i]}, {w}, {dy})[0];
    }
    EXPECT_TRUE(all_equal(y[0], y[1]));
    EXPECT_TRUE(all_equal(gw[0], gw[1]));
    EXPECT_TRUE(all_equal(rm[0], rm[1]));
  }
}

// ---- batch_norm_relu: relu(batch_norm(...)) in one op ----

namespace {

// The outputs of one run: y, the running statistics and the gradients of (x, weight, bias)
// for the upstream gradient dy (only dx when `dx_only`).
struct ReluRun {
  cg::Tensor y, rm, rv, dx, dw, db;
};

// Runs batch_norm_relu (fused) or batch_norm then relu on `dev`; inputs {x, w, b, rm, rv, dy}.
ReluRun run_relu(const Inputs& in, cg::Device dev, bool training, bool fused, bool dx_only = false,
                 bool misalign = false) {
  const auto on = [&](const cg::Tensor& t) { return misalign ? offset_copy(t.to(dev)) : t.to(dev).clone(); };
  const cg::Tensor x = on(in.x).detach().requires_grad_();
  const cg::Tensor w = on(in.w).detach().requires_grad_(!dx_only);
  const cg::Tensor b = on(in.b).detach().requires_grad_(!dx_only);
  ReluRun r;
  r.rm = on(in.rm);
  r.rv = on(in.rv);
  r.y = fused ? F::batch_norm_relu(x, r.rm, r.rv, w, b, training, 0.1, kEps)
              : cg::relu(F::batch_norm(x, r.rm, r.rv, w, b, training, 0.1, kEps));
  EXPECT_EQ(r.y.grad_fn_name(), fused ? "BatchNormReluBackward" : "ReluBackward");
  const cg::TensorList wrt = dx_only ? cg::TensorList{x} : cg::TensorList{x, w, b};
  const cg::TensorList g = cg::autograd::grad({r.y}, wrt, {in.dy.to(dev)});
  r.dx = g[0];
  if (!dx_only) {
    r.dw = g[1];
    r.db = g[2];
  }
  return r;
}

// Fused and unfused give the same bits: y, running statistics and every gradient.
void expect_relu_fused_equal(const Inputs& in, cg::Device dev, bool training, bool dx_only = false,
                             bool misalign = false) {
  SCOPED_TRACE(cg::detail::cat(dev.is_cuda() ? "cuda " : "cpu ", training ? "training " : "eval ",
                               cg::shape_str(in.x.shape()), dx_only ? " dx only" : "",
                               misalign ? " misaligned" : ""));
  const ReluRun a = run_relu(in, dev, training, true, dx_only, misalign);
  const ReluRun b = run_relu(in, dev, training, false, dx_only, misalign);
  EXPECT_TRUE(all_equal(a.y, b.y)) << "y";
  EXPECT_TRUE(all_equal(a.rm, b.rm)) << "running_mean";
  EXPECT_TRUE(all_equal(a.rv, b.rv)) << "running_var";
  EXPECT_TRUE(all_equal(a.dx, b.dx)) << "dx";
  if (!dx_only) {
    EXPECT_TRUE(all_equal(a.dw, b.dw)) << "dweight";
    EXPECT_TRUE(all_equal(a.db, b.db)) << "dbias";
  }
}

// Zero-mean outputs (bias around 0): about half of y is negative, so the mask matters.
Inputs relu_inputs(const cg::Shape& shape, cg::DType dtype = cg::DType::float32) {
  Inputs in = make_inputs(shape, dtype);
  in.b = in.b * 0.3;
  return in;
}

}  // namespace

TEST(BatchNormRelu, CpuEqualsBatchNormThenRelu) {
  cg::manual_seed(41);
  for (const cg::Shape& s : std::vector<cg::Shape>{{4, 3, 5, 7}, {33, 7}, {2, 1, 1, 2}, {6, 8, 4, 4}}) {
    const Inputs in = relu_inputs(s);
    expect_relu_fused_equal(in, kCpu, true);
    expect_relu_fused_equal(in, kCpu, false);
    expect_relu_fused_equal(in, kCpu, false, true);
  }
  // The mask is real: negative pre-ReLU values give 0 and no gradient there.
  const Inputs in = relu_inputs({8, 2, 3, 3});
  const ReluRun r = run_relu(in, kCpu, true, true);
  const cg::Tensor pre = F::batch_norm(in.x, {}, {}, in.w, in.b, true, 0.1, kEps);
  const auto pv = values(pre), yv = values(r.y);
  std::size_t negative = 0;
  for (std::size_t i = 0; i < pv.size(); ++i) {
    EXPECT_EQ(yv[i], pv[i] > 0 ? pv[i] : 0.0);
    negative += pv[i] < 0 ? 1 : 0;
  }
  EXPECT_GT(negative, pv.size() / 4);
  EXPECT_LT(negative, pv.size() * 3 / 4);
}

TEST(BatchNormRelu, GradcheckTrainingAndEval) {
  cg::manual_seed(42);
  for (const cg::Shape& shape : std::vector<cg::Shape>{{3, 2, 2, 3}, {5, 3}}) {
    SCOPED_TRACE(cg::shape_str(shape));
    const Inputs in = relu_inputs(shape, cg::DType::float64);
    const cg::Tensor x = leaf64(in.x), w = leaf64(in.w), b = leaf64(in.b);
    const cg::Tensor rm = in.rm.clone(), rv = in.rv.clone();
    EXPECT_EQ(cg::autograd::gradcheck(
                  [](const cg::TensorList& t) {
                    return F::batch_norm_relu(t[0], {}, {}, t[1], t[2], true, 0.1, kEps);
                  },
                  {x, w, b}),
              "")
        << "training";
    EXPECT_EQ(cg::autograd::gradcheck(
                  [&](const cg::TensorList& t) {
                    return F::batch_norm_relu(t[0], rm, rv, t[1], t[2], false, 0.1, kEps);
                  },
                  {x, w, b}),
              "")
        << "eval";
  }
}

TEST(BatchNormRelu, ErrorsNameTheFusedOp) {
  const cg::Tensor x = cg::randn({4, 3});
  const std::string m = message_of([&] { F::batch_norm_relu(x, {}, {}, cg::ones({2}), {}, true); });
  EXPECT_NE(m.find("batch_norm_relu"), std::string::npos) << m;
  EXPECT_NE(m.find("weight"), std::string::npos) << m;
  const std::string m2 = message_of([&] { F::batch_norm_relu(cg::randn({1, 3}), {}, {}, {}, {}, true); });
  EXPECT_NE(m2.find("batch_norm_relu"), std::string::npos) << m2;
  EXPECT_NE(m2.find("more than 1 value per channel"), std::string::npos) << m2;
}

// On CUDA the fused kernels recompute the ReLU's mask from x: every path (float4 planes,
// scalar planes, rows with and without four channels per vector, misaligned inputs, eval's dx
// pass alone) must give the bits of batch_norm followed by relu.
TEST(BatchNormReluGPU, EqualsBatchNormThenReluBitForBit) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(43);
  for (const cg::Shape& s : kAwkward) {
    if (s[0] * (s.size() == 4 ? s[2] * s[3] : 1) < 2) continue;  // training needs 2 values per channel
    const Inputs in = relu_inputs(s);
    expect_relu_fused_equal(in, kCuda, true);
    expect_relu_fused_equal(in, kCuda, false);
    expect_relu_fused_equal(in, kCuda, false, true);
  }
  for (const cg::Shape& s : std::vector<cg::Shape>{{6, 3, 4, 4}, {64, 8}}) {
    const Inputs in = relu_inputs(s);
    expect_relu_fused_equal(in, kCuda, true, false, true);
    expect_relu_fused_equal(in, kCuda, false, false, true);
    expect_relu_fused_equal(in, kCuda, false, true, true);
  }
  // Without a backward to come (no grad): the folded scale is not kept; same output.
  for (const bool training : {true, false}) {
    cg::NoGradGuard no_grad;
    const Inputs in = relu_inputs({5, 6, 4, 4});
    const cg::Tensor x = in.x.to(kCuda);
    cg::Tensor rm1 = in.rm.to(kCuda), rv1 = in.rv.to(kCuda), rm2 = rm1.clone(), rv2 = rv1.clone();
    const cg::Tensor w = in.w.to(kCuda), b = in.b.to(kCuda);
    EXPECT_TRUE(all_equal(F::batch_norm_relu(x, rm1, rv1, w, b, training, 0.1, kEps),
                          cg::relu(F::batch_norm(x, rm2, rv2, w, b, training, 0.1, kEps))));
    EXPECT_TRUE(all_equal(rm1, rm2));
    EXPECT_TRUE(all_equal(rv1, rv2));
  }
  // Large enough to split channels over many blocks.
  const Inputs big = relu_inputs({64, 16, 28, 28});
  expect_relu_fused_equal(big, kCuda, true);
  expect_relu_fused_equal(big, kCuda, false, true);
}

TEST(BatchNormReluGPU, MatchesTheCpuReference) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(44);
  for (const cg::Shape& s : std::vector<cg::Shape>{{4, 3, 5, 7}, {7, 8, 4, 4}, {1001, 64}, {33, 7}}) {
    SCOPED_TRACE(cg::shape_str(s));
    const Inputs in = relu_inputs(s);
    for (const bool training : {true, false}) {
      const ReluRun g = run_relu(in, kCuda, training, true);
      const ReluRun c = run_relu(in, kCpu, training, true);
      EXPECT_TRUE(all_close(g.y, c.y)) << "y";
      EXPECT_TRUE(norm_close(g.dx, c.dx, 1e-5)) << "dx";
      EXPECT_TRUE(norm_close(g.dw, c.dw, 1e-5)) << "dweight";
      EXPECT_TRUE(norm_close(g.db, c.db, 1e-5)) << "dbias";
    }
  }
}
