// cross_entropy: CPU semantics against hand-computed values and PyTorch's definition written
// out term by term (every reduction, class weights, ignore_index, label smoothing 0 and 0.1,
// all-ignored and empty batches, logits of ±1e4), errors, autograd (upstream gradients,
// retain_graph, in-place checks), PyTorch's golden file, float64 gradcheck; and CUDA against
// the float64 CPU reference for every kernel shape (K from 1 to 100003, N up to 32768),
// the golden file on the GPU, and out-of-range targets reported asynchronously.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "cuda/cross_entropy.h"
#include "cugrad/cugrad.h"
#include "cugrad/nn/functional.h"
#include "host/runtime/device_errors.h"
#include "tests/support/parity.h"

namespace cg = cugrad;
namespace F = cugrad::nn::functional;
using cg::nn::Reduction;
using cg::testing::all_close;
using cg::testing::norm_close;

namespace {

const double kNaN = std::numeric_limits<double>::quiet_NaN();

cg::Tensor f64(const std::vector<double>& v, cg::Shape s) { return cg::from_vector(v, s); }
cg::Tensor i64(const std::vector<std::int64_t>& v) {
  return cg::from_vector(v, {static_cast<std::int64_t>(v.size())});
}
std::vector<double> values(const cg::Tensor& t) { return t.cpu().to(cg::DType::float64).to_vector<double>(); }

// Waits for the GPU without the device-error check that cugrad's synchronize() performs, so a
// test can see which later call reports the error.
void wait_without_checking() { ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess); }

// Expects `fn` to throw cugrad::ValueError whose message contains every one of `parts`.
void expect_error(const std::function<void()>& fn, std::initializer_list<const char*> parts) {
  try {
    fn();
    ADD_FAILURE() << "no exception; expected one mentioning " << *parts.begin();
  } catch (const cg::ValueError& e) {
    const std::string m = e.what();
    for (const char* p : parts) EXPECT_NE(m.find(p), std::string::npos) << "'" << p << "' not in: " << m;
  }
}

const char* reduction_name(Reduction r) {
  return r == Reduction::Mean ? "mean" : r == Reduction::Sum ? "sum" : "none";
}

// ---- PyTorch's definition, term by term (independent of the library's rearrangement) ----

struct Problem {
  std::int64_t n = 0, k = 0;
  std::vector<double> x;        // n*k logits
  std::vector<std::int64_t> t;  // n targets
  std::vector<double> w;        // k class weights, or empty
  std::int64_t ignore = -100;
  double eps = 0;
  Reduction r = Reduction::Mean;

  bool counts(std::int64_t i) const { return t[i] != ignore && t[i] >= 0 && t[i] < k; }
  double wj(std::int64_t j) const { return w.empty() ? 1.0 : w[j]; }
  std::vector<double> log_softmax(std::int64_t i) const {
    double m = -INFINITY;
    for (std::int64_t j = 0; j < k; ++j) m = std::max(m, x[i * k + j]);
    double s = 0;
    for (std::int64_t j = 0; j < k; ++j) s += std::exp(x[i * k + j] - m);
    std::vector<double> lp(k);
    for (std::int64_t j = 0; j < k; ++j) lp[j] = x[i * k + j] - m - std::log(s);
    return lp;
  }
  double denominator() const {
    double d = 0;
    for (std::int64_t i = 0; i < n; ++i)
      if (counts(i)) d += wj(t[i]);
    return d;
  }
  // loss_i = (1-eps)·(-w_t log p_t) + eps/K·Σ_j (-w_j log p_j); mean divides both sums by Σ w_t.
  std::vector<double> loss() const {
    std::vector<double> per(n, 0.0);
    double nll = 0, smooth = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      if (!counts(i)) continue;
      const auto lp = log_softmax(i);
      const double a = -wj(t[i]) * lp[t[i]];
      double b = 0;
      for (std::int64_t j = 0; j < k; ++j) b += -wj(j) * lp[j];
      per[i] = (1 - eps) * a + eps / static_cast<double>(k) * b;
      nll += a;
      smooth += b;
    }
    if (r == Reduction::None) return per;
    const double sum = (1 - eps) * nll + eps / static_cast<double>(k) * smooth;
    return {r == Reduction::Sum ? sum : sum / denominator()};
  }
  // d(-w_t log p_t)/dx_j = w_t (p_j - [j==t]); d(-Σ w_k log p_k)/dx_j = W p_j - w_j.
  std::vector<double> grad(const std::vector<double>& upstream) const {
    std::vector<double> g(n * k, 0.0);
    double big_w = 0;
    for (std::int64_t j = 0; j < k; ++j) big_w += wj(j);
    const double d = denominator();
    for (std::int64_t i = 0; i < n; ++i) {
      if (!counts(i)) continue;
      const auto lp = log_softmax(i);
      const double up = r == Reduction::None ? upstream[i] : upstream[0];
      const double scale = r == Reduction::Mean ? up / d : up;
      for (std::int64_t j = 0; j < k; ++j) {
        const double p = std::exp(lp[j]);
        const double h = (1 - eps) * wj(t[i]) * (p - (j == t[i] ? 1.0 : 0.0)) +
                         eps / static_cast<double>(k) * (big_w * p - wj(j));
        g[i * k + j] = scale * h;
      }
    }
    return g;
  }
  F::CrossEntropyOptions options(const cg::Tensor& weight = cg::Tensor()) const {
    return {.weight = weight, .ignore_index = ignore, .reduction = r, .label_smoothing = eps};
  }
};

Problem random_problem(std::int64_t n, std::int64_t k, bool weighted, double eps, Reduction r) {
  Problem p;
  p.n = n;
  p.k = k;
  p.eps = eps;
  p.r = r;
  p.x = (cg::randn({n, k}, cg::Device::cpu(), cg::DType::float64) * 2.0).to_vector<double>();
  p.t = cg::randint(0, k, {n}).to_vector<std::int64_t>();
  for (std::int64_t i = 3; i < n; i += 4) p.t[i] = p.ignore;
  if (weighted) p.w = (cg::rand({k}, cg::Device::cpu(), cg::DType::float64) + 0.5).to_vector<double>();
  return p;
}

}  // namespace

// ---- CPU semantics ----

TEST(CrossEntropy, HandComputedValues) {
  // logits [1, 2, 3], target 2: lse = 3.40760596..., -log p_2 = 0.40760596...,
  // mean_j(-log p_j) = lse - 2; softmax = [0.0900, 0.2447, 0.6652].
  const cg::Tensor x = f64({1, 2, 3}, {1, 3});
  const cg::Tensor t = i64({2});
  EXPECT_NEAR(F::cross_entropy(x, t).item<double>(), 0.40760596444438013, 1e-14);
  EXPECT_NEAR(F::cross_entropy(x, t, {.label_smoothing = 0.1}).item<double>(), 0.5076059644443801, 1e-14);
  EXPECT_NEAR(F::cross_entropy(x, t, {.reduction = Reduction::Sum}).item<double>(), 0.40760596444438013,
              1e-14);
  // Uniform logits: every -log p_j is log 2, whatever the smoothing.
  EXPECT_NEAR(F::cross_entropy(f64({0, 0}, {1, 2}), i64({0}), {.label_smoothing = 0.3}).item<double>(),
              std::log(2.0), 1e-15);
  // One class: the loss is 0.
  EXPECT_EQ(F::cross_entropy(f64({5}, {1, 1}), i64({0}), {.label_smoothing = 0.1}).item<double>(), 0.0);

  // Gradient: softmax - target_dist, target_dist = (1-eps)[j == t] + eps/K.
  cg::Tensor xg = x.clone().requires_grad_();
  F::cross_entropy(xg, t).backward();
  EXPECT_TRUE(all_close(xg.grad(), f64({0.09003057317038048, 0.2447284710547977, -0.334759044225178}, {1, 3}),
                        {1e-14, 1e-12}));
  xg.set_grad(cg::Tensor());
  F::cross_entropy(xg, t, {.label_smoothing = 0.1}).backward();
  EXPECT_TRUE(all_close(xg.grad(),
                        f64({0.05669723983704714, 0.21139513772146437, -0.26809237755851134}, {1, 3}),
                        {1e-14, 1e-12}));

  // Class weights [0.5, 1, 2], rows ([1,2,3], t=2) and ([0,1,-1], t=0), eps 0.1: the sum of
  // the weighted terms is 1.67888814503688; mean divides by w_2 + w_0 = 2.5.
  const cg::Tensor x2 = f64({1, 2, 3, 0, 1, -1}, {2, 3});
  const cg::Tensor w = f64({0.5, 1, 2}, {3});
  EXPECT_NEAR(F::cross_entropy(x2, i64({2, 0}), {.weight = w, .label_smoothing = 0.1}).item<double>(),
              0.6715552580147509, 1e-14);
  EXPECT_NEAR(
      F::cross_entropy(x2, i64({2, 0}), {.weight = w, .reduction = Reduction::Sum, .label_smoothing = 0.1})
          .item<double>(),
      1.6788881450368773, 1e-14);
}

TEST(CrossEntropy, EveryReductionWeightAndSmoothingMatchesTheDefinition) {
  cg::manual_seed(4);
  for (Reduction r : {Reduction::Mean, Reduction::Sum, Reduction::None}) {
    for (bool weighted : {false, true}) {
      for (double eps : {0.0, 0.1}) {
        const Problem p = random_problem(9, 6, weighted, eps, r);
        const std::string what =
            std::string(reduction_name(r)) + (weighted ? " weighted" : "") + " eps " + std::to_string(eps);
        const cg::Tensor w = weighted ? f64(p.w, {p.k}) : cg::Tensor();
        for (cg::DType dtype : {cg::DType::float64, cg::DType::float32}) {
          const double tol = dtype == cg::DType::float64 ? 1e-12 : 2e-6;
          cg::Tensor x = f64(p.x, {p.n, p.k}).to(dtype).requires_grad_();
          const cg::Tensor loss =
              F::cross_entropy(x, i64(p.t), p.options(weighted ? w.to(dtype) : cg::Tensor()));
          const std::vector<double> want = p.loss();
          ASSERT_EQ(loss.shape(), r == Reduction::None ? cg::Shape{p.n} : cg::Shape{}) << what;
          EXPECT_EQ(loss.dtype(), dtype);
          EXPECT_TRUE(all_close(loss, f64(want, loss.shape()), {tol, tol})) << what;
          // An upstream gradient other than 1 (per row for none).
          std::vector<double> up = {0.7};
          if (r == Reduction::None)
            up = cg::randn({p.n}, cg::Device::cpu(), cg::DType::float64).to_vector<double>();
          loss.backward(f64(up, loss.shape()).to(dtype));
          EXPECT_TRUE(all_close(x.grad(), f64(p.grad(up), {p.n, p.k}), {tol, tol})) << what;
        }
      }
    }
  }
}

TEST(CrossEntropy, IgnoreIndexAnywhere) {
  cg::manual_seed(5);
  Problem p = random_problem(8, 5, true, 0.1, Reduction::None);
  p.ignore = 2;  // a real class: rows of class 2 are ignored; -100 is now out of range
  for (auto& t : p.t)
    if (t == -100) t = 2;
  p.t[0] = 2;
  cg::Tensor x = f64(p.x, {p.n, p.k}).requires_grad_();
  const cg::Tensor loss = F::cross_entropy(x, i64(p.t), p.options(f64(p.w, {p.k})));
  const auto l = values(loss);
  EXPECT_TRUE(all_close(loss, f64(p.loss(), {p.n}), {1e-12, 1e-12}));
  const std::vector<double> ones(p.n, 1.0);
  loss.backward(cg::ones({p.n}, cg::Device::cpu(), cg::DType::float64));
  const auto g = values(x.grad());
  for (std::int64_t i = 0; i < p.n; ++i) {
    if (p.t[i] != 2) continue;
    EXPECT_EQ(l[i], 0.0) << "row " << i;
    for (std::int64_t j = 0; j < p.k; ++j) EXPECT_EQ(g[i * p.k + j], 0.0) << "row " << i;
  }
  EXPECT_TRUE(all_close(x.grad(), f64(p.grad(ones), {p.n, p.k}), {1e-12, 1e-12}));
  // Mean over the remaining rows only.
  p.r = Reduction::Mean;
  EXPECT_NEAR(F::cross_entropy(x, i64(p.t), p.options(f64(p.w, {p.k}))).item<double>(), p.loss()[0], 1e-12);
}

TEST(CrossEntropy, AllIgnoredAndEmptyBatches) {
  const cg::Tensor x = f64({1, 2, 3, 4, 5, 6}, {2, 3});
  const cg::Tensor t = i64({-100, -100});
  for (double eps : {0.0, 0.1}) {
    for (bool weighted : {false, true}) {
      const cg::Tensor w = weighted ? f64({1, 2, 3}, {3}) : cg::Tensor();
      // mean: 0/0 = NaN, as PyTorch; sum: 0; none: zeros. The gradient is zero (not NaN).
      cg::Tensor xg = x.clone().requires_grad_();
      const cg::Tensor mean = F::cross_entropy(xg, t, {.weight = w, .label_smoothing = eps});
      EXPECT_TRUE(std::isnan(mean.item<double>()));
      mean.backward();
      EXPECT_TRUE(
          cg::testing::all_equal(xg.grad(), cg::zeros({2, 3}, cg::Device::cpu(), cg::DType::float64)));
      EXPECT_EQ(F::cross_entropy(x, t, {.weight = w, .reduction = Reduction::Sum, .label_smoothing = eps})
                    .item<double>(),
                0.0);
      EXPECT_EQ(
          values(F::cross_entropy(x, t, {.weight = w, .reduction = Reduction::None, .label_smoothing = eps})),
          (std::vector<double>{0, 0}));
    }
  }
  // N = 0.
  const cg::Tensor x0 = cg::zeros({0, 4}, cg::Device::cpu(), cg::DType::float64);
  const cg::Tensor t0 = cg::zeros({0}, cg::Device::cpu(), cg::DType::int64);
  EXPECT_TRUE(std::isnan(F::cross_entropy(x0, t0).item<double>()));
  EXPECT_EQ(F::cross_entropy(x0, t0, {.reduction = Reduction::Sum}).item<double>(), 0.0);
  EXPECT_EQ(F::cross_entropy(x0, t0, {.reduction = Reduction::None}).shape(), (cg::Shape{0}));
}

TEST(CrossEntropy, LogitsOfTenThousandKeepPrecision) {
  // Shifting a row leaves its loss unchanged; float32 logits near ±1e4 hold exact multiples
  // of 2^-10, and the loss of those exact values must come out as in float64.
  cg::manual_seed(6);
  Problem p = random_problem(6, 7, true, 0.1, Reduction::None);
  for (std::int64_t j = 0; j < p.k; ++j) {
    p.x[0 * p.k + j] = static_cast<double>(static_cast<float>(p.x[0 * p.k + j] + 1e4));
    p.x[1 * p.k + j] = static_cast<double>(static_cast<float>(p.x[1 * p.k + j] - 1e4));
  }
  for (cg::DType dtype : {cg::DType::float32, cg::DType::float64}) {
    const double tol = dtype == cg::DType::float32 ? 1e-6 : 1e-12;
    const cg::Tensor loss =
        F::cross_entropy(f64(p.x, {p.n, p.k}).to(dtype), i64(p.t), p.options(f64(p.w, {p.k}).to(dtype)));
    EXPECT_TRUE(all_close(loss, f64(p.loss(), {p.n}), {tol, tol})) << dtype;
    for (double v : values(loss)) EXPECT_TRUE(std::isfinite(v));
  }
  // Against the unshifted row in float64: the same loss.
  const cg::Tensor a = f64({0.5, -1, 2}, {1, 3}), b = f64({10000.5, 9999, 10002}, {1, 3});
  EXPECT_NEAR(F::cross_entropy(a, i64({1}), {.label_smoothing = 0.1}).item<double>(),
              F::cross_entropy(b, i64({1}), {.label_smoothing = 0.1}).item<double>(), 1e-12);
}

TEST(CrossEntropy, InputErrorsNameTheOp) {
  const cg::Tensor x = cg::randn({4, 3});
  const cg::Tensor t = i64({0, 1, 2, 0});
  expect_error([&] { F::cross_entropy(cg::randn({3}), i64({0, 1, 2})); }, {"cross_entropy", "2-D (N, C)"});
  expect_error([&] { F::cross_entropy(cg::randn({2, 3, 4}), i64({0, 1})); }, {"cross_entropy", "2-D"});
  expect_error(
      [&] {
        F::cross_entropy(cg::zeros({4, 3}, cg::Device::cpu(), cg::DType::int64), t);
      },
      {"cross_entropy", "float32", "int64"});
  expect_error([&] { F::cross_entropy(cg::randn({4, 0}), t); }, {"cross_entropy", "at least one class"});
  expect_error([&] { F::cross_entropy(x, cg::zeros({4})); }, {"cross_entropy", "int64", "float32[4]"});
  expect_error([&] { F::cross_entropy(x, i64({0, 1, 2})); }, {"cross_entropy", "(N) = (4)", "int64[3]"});
  expect_error(
      [&] {
        F::cross_entropy(x, cg::zeros({4, 1}, cg::Device::cpu(), cg::DType::int64));
      },
      {"cross_entropy", "(N)"});
  expect_error([&] { F::cross_entropy(x, t, {.weight = cg::ones({4})}); },
               {"cross_entropy", "weight", "(C) = (3)"});
  expect_error(
      [&] { F::cross_entropy(x, t, {.weight = cg::ones({3}, cg::Device::cpu(), cg::DType::float64)}); },
      {"cross_entropy", "same dtype"});
  cg::Tensor wg = cg::ones({3}).requires_grad_();
  expect_error([&] { F::cross_entropy(x, t, {.weight = wg}); },
               {"cross_entropy", "weight", "not implemented"});
  expect_error([&] { F::cross_entropy(x, t, {.label_smoothing = -0.1}); },
               {"cross_entropy", "label_smoothing"});
  expect_error([&] { F::cross_entropy(x, t, {.label_smoothing = 1.5}); }, {"cross_entropy", "[0, 1]"});
  expect_error([&] { F::cross_entropy(x, t, {.label_smoothing = std::nan("")}); }, {"label_smoothing"});
  expect_error([&] { F::cross_entropy(cg::Tensor(), t); }, {"cross_entropy", "logits", "undefined"});
  // Smoothing 1 and a weight under NoGradGuard are fine.
  EXPECT_NO_THROW(F::cross_entropy(x, t, {.label_smoothing = 1.0}));
  {
    cg::NoGradGuard ng;
    EXPECT_NO_THROW(F::cross_entropy(x, t, {.weight = wg}));
  }
}

TEST(CrossEntropy, OutOfRangeTargetIsAnImmediateErrorOnTheCpu) {
  const cg::Tensor x = cg::randn({4, 3});
  expect_error(
      [&] {
        F::cross_entropy(x, i64({0, 1, 3, 0}));
      },
      {"cross_entropy", "target 3", "row 2", "3 classes", "0 <= target < 3", "ignore_index -100"});
  expect_error(
      [&] {
        F::cross_entropy(x, i64({0, -1, 2, 0}), {.reduction = Reduction::None});
      },
      {"target -1", "row 1"});
  // -100 is fine only while it is the ignore_index.
  EXPECT_NO_THROW(F::cross_entropy(x, i64({0, -100, 2, 0})));
  expect_error(
      [&] {
        F::cross_entropy(x, i64({0, -100, 2, 0}), {.ignore_index = 1});
      },
      {"target -100", "row 1"});
  // Nothing pending on the device side (and no CUDA call needed to find out).
  EXPECT_NO_THROW(cg::runtime::check_device_errors());
}

TEST(CrossEntropy, AutogradRecordsOnlyWhenNeeded) {
  cg::Tensor x = cg::randn({3, 4}, cg::Device::cpu(), cg::DType::float64);
  const cg::Tensor t = i64({0, 1, 3});
  EXPECT_FALSE(F::cross_entropy(x, t).requires_grad());
  x.requires_grad_();
  const cg::Tensor loss = F::cross_entropy(x, t);
  EXPECT_TRUE(loss.requires_grad());
  EXPECT_EQ(loss.grad_fn_name(), "CrossEntropyBackward");
  {
    cg::NoGradGuard ng;
    EXPECT_FALSE(F::cross_entropy(x, t).requires_grad());
  }
}

TEST(CrossEntropy, BackwardScalesRetainsAndChecksVersions) {
  cg::manual_seed(7);
  const Problem p = random_problem(5, 4, true, 0.1, Reduction::Mean);
  const cg::Tensor w = f64(p.w, {p.k});
  const cg::Tensor t = i64(p.t);
  const std::vector<double> g1 = p.grad({1.0});
  cg::Tensor x = f64(p.x, {p.n, p.k}).requires_grad_();
  const cg::Tensor loss = F::cross_entropy(x, t, p.options(w));
  // First backward hands on the forward's gradient; the second recomputes it.
  loss.backward(cg::Tensor(), /*retain_graph=*/true);
  EXPECT_TRUE(all_close(x.grad(), f64(g1, {p.n, p.k}), {1e-12, 1e-12}));
  loss.backward(cg::Tensor(), /*retain_graph=*/true);
  std::vector<double> g2(g1);
  for (double& v : g2) v *= 2;
  EXPECT_TRUE(all_close(x.grad(), f64(g2, {p.n, p.k}), {1e-12, 1e-12}));
  // autograd::grad with an upstream of -3 (does not touch .grad).
  const cg::Tensor gx =
      cg::autograd::grad({loss}, {x}, {cg::full({}, -3.0, cg::Device::cpu(), cg::DType::float64)},
                         /*retain_graph=*/false)[0];
  EXPECT_TRUE(all_close(gx, f64(p.grad({-3.0}), {p.n, p.k}), {1e-12, 1e-12}));
  expect_error([&] { loss.backward(); }, {"CrossEntropyBackward", "second time"});

  // Through another op: (2 * loss).backward() gives twice the gradient.
  x.set_grad(cg::Tensor());
  (F::cross_entropy(x, t, p.options(w)) * 2.0).backward();
  EXPECT_TRUE(all_close(x.grad(), f64(g2, {p.n, p.k}), {1e-12, 1e-12}));

  // The targets are needed by backward: changing them in place is reported.
  cg::Tensor t2 = t.clone();
  const cg::Tensor loss2 = F::cross_entropy(x, t2, p.options(w));
  t2.fill_(0);
  expect_error([&] { loss2.backward(); }, {"CrossEntropyBackward", "modified by an in-place operation"});
}

TEST(CrossEntropy, GoldenFileFromPyTorchOnTheCpu) {
  const auto f = cg::io::read_safetensors(std::string(CUGRAD_GOLDEN_DIR) + "/cross_entropy.safetensors");
  const auto& g = f.tensors;
  const double eps = std::stod(f.metadata.at("label_smoothing"));
  const std::int64_t ignore = std::stoll(f.metadata.at("ignore_index"));
  EXPECT_EQ(eps, 0.1);
  const cg::Tensor target = g.at("target");
  int checked = 0;
  for (cg::DType dtype : {cg::DType::float64, cg::DType::float32}) {
    const double tol = dtype == cg::DType::float64 ? 1e-10 : 1e-6;
    for (Reduction r : {Reduction::Mean, Reduction::Sum, Reduction::None}) {
      for (bool weighted : {false, true}) {
        const std::string suffix = std::string(reduction_name(r)) + (weighted ? "_weighted" : "");
        // A fresh leaf each time (to() returns the stored tensor itself when the dtype matches).
        cg::Tensor x = g.at("logits").to(dtype).detach().clone().requires_grad_();
        const cg::Tensor w = weighted ? g.at("class_weight").to(dtype) : cg::Tensor();
        const cg::Tensor loss = F::cross_entropy(
            x, target, {.weight = w, .ignore_index = ignore, .reduction = r, .label_smoothing = eps});
        EXPECT_TRUE(all_close(loss, g.at("loss_" + suffix), {tol, tol})) << suffix << " " << dtype;
        loss.backward(g.at("upstream_" + suffix).to(dtype));
        EXPECT_TRUE(norm_close(x.grad(), g.at("grad_" + suffix), tol)) << suffix << " " << dtype;
        EXPECT_TRUE(all_close(x.grad(), g.at("grad_" + suffix), {tol, tol})) << suffix << " " << dtype;
        ++checked;
      }
    }
    const cg::Tensor all_ignored =
        cg::full({target.numel()}, static_cast<double>(ignore), cg::Device::cpu(), cg::DType::int64);
    const double ref = g.at("loss_all_ignored_mean").item<double>();
    EXPECT_TRUE(std::isnan(ref));
    EXPECT_TRUE(std::isnan(F::cross_entropy(g.at("logits").to(dtype), all_ignored,
                                            {.ignore_index = ignore, .label_smoothing = eps})
                               .item<double>()));
  }
  EXPECT_EQ(checked, 12);
}

TEST(CrossEntropy, GradcheckFloat64) {
  cg::manual_seed(8);
  const cg::Tensor x = cg::randn({5, 4}, cg::Device::cpu(), cg::DType::float64).requires_grad_();
  const cg::Tensor t = i64({0, 3, -100, 1, 2});
  const cg::Tensor w = cg::rand({4}, cg::Device::cpu(), cg::DType::float64) + 0.5;
  for (Reduction r : {Reduction::Mean, Reduction::Sum, Reduction::None}) {
    for (bool weighted : {false, true}) {
      for (double eps : {0.0, 0.1}) {
        const F::CrossEntropyOptions o{
            .weight = weighted ? w : cg::Tensor(), .reduction = r, .label_smoothing = eps};
        const std::string res = cg::autograd::gradcheck(
            [&](const cg::TensorList& in) { return F::cross_entropy(in[0], t, o); }, {x});
        EXPECT_EQ(res, "") << reduction_name(r) << (weighted ? " weighted" : "") << " eps " << eps;
      }
    }
  }
  // With logits of +-1e4 (the finite differences see the same shift-invariant function).
  const cg::Tensor xs =
      (cg::randn({3, 4}, cg::Device::cpu(), cg::DType::float64) + f64({1e4, -1e4, 0}, {3, 1}))
          .requires_grad_();
  EXPECT_EQ(cg::autograd::gradcheck(
                [&](const cg::TensorList& in) {
                  return F::cross_entropy(in[0], i64({1, 2, 3}),
                                          {.reduction = Reduction::None, .label_smoothing = 0.1});
                },
                {xs}),
            "");
}

// ---- CUDA ----

namespace {

void expect_no_device_errors() {
  EXPECT_NO_THROW(cg::synchronize());
  EXPECT_NO_THROW(cg::runtime::check_device_errors());
}

struct GpuCase {
  std::int64_t n, k;
  Reduction r;
  bool weighted;
  double eps;
  double upstream;          // mean/sum; none uses random values
  bool misaligned = false;  // logits at an offset of one float: the unvectorized path
};

std::string describe(const GpuCase& c) {
  return cg::detail::cat(c.n, "x", c.k, " ", reduction_name(c.r), c.weighted ? " weighted" : "", " eps ",
                         c.eps, " upstream ", c.upstream, c.misaligned ? " misaligned" : "");
}

// Logits viewed at an offset of one element (so never 16-byte aligned), same values.
cg::Tensor shifted(const cg::Tensor& x) {
  const std::int64_t n = x.numel();
  cg::Tensor buf = cg::empty({n + 1}, x.device(), x.dtype());
  cg::Tensor view = buf.narrow(0, 1, n);
  view.copy_(x.reshape({n}));
  return view.reshape(x.shape());
}

// CUDA against the float64 CPU reference, loss and gradient (through autograd::grad with the
// case's upstream gradient). Random logits (times 3) and targets with every fifth row
// ignored unless given.
void check_parity(const GpuCase& c, cg::Tensor x = cg::Tensor(), cg::Tensor t = cg::Tensor()) {
  SCOPED_TRACE(describe(c));
  if (!x.defined()) x = cg::randn({c.n, c.k}) * 3.0;
  if (!t.defined()) {
    std::vector<std::int64_t> tv = cg::randint(0, c.k, {c.n}).to_vector<std::int64_t>();
    for (std::int64_t i = 2; i < c.n; i += 5) tv[i] = -100;
    t = i64(tv);
  }
  const cg::Tensor w = c.weighted ? cg::rand({c.k}) + 0.5 : cg::Tensor();
  const cg::Tensor up = c.r == Reduction::None ? cg::randn({c.n}) : cg::full({}, c.upstream);
  const F::CrossEntropyOptions o{.reduction = c.r, .label_smoothing = c.eps};
  const bool misaligned = c.misaligned;
  auto loss_fn = [o, misaligned](const cg::TensorList& in) {
    F::CrossEntropyOptions oo = o;
    oo.weight = in[3];
    return F::cross_entropy(misaligned ? shifted(in[0]) : in[0], in[1], oo);
  };
  auto grad_fn = [o, misaligned](const cg::TensorList& in) {
    F::CrossEntropyOptions oo = o;
    oo.weight = in[3];
    cg::Tensor xx = (misaligned ? shifted(in[0]) : in[0].clone()).detach();
    xx.requires_grad_();
    const cg::Tensor loss = F::cross_entropy(xx, in[1], oo);
    return cg::autograd::grad({loss}, {xx}, {in[2]})[0];
  };
  const cg::TensorList inputs{x, t, up, w};
  EXPECT_TRUE(cg::testing::cuda_matches_cpu64(loss_fn, inputs, {1e-5, 1e-5}));
  if (c.k > 1) {
    EXPECT_TRUE(cg::testing::cuda_matches_cpu64_norm(grad_fn, inputs, 1e-5));
  } else {
    // One class: the gradient is 0 up to rounding, so no relative norm; absolute instead.
    EXPECT_TRUE(cg::testing::cuda_matches_cpu64(grad_fn, inputs, {1e-6, 0.0}));
  }
  expect_no_device_errors();
}

}  // namespace

TEST(CrossEntropyGPU, MatchesTheCpuForEveryKernelShape) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(21);
  // K picks the kernel: <= 1024 a group of lanes per row (float4 when K % 4 == 0), above a
  // block per row (registers, then shared memory from K = 8193 / 4097 unaligned), beyond
  // ~66000 the two-read kernel.
  const std::vector<std::int64_t> ks = {1,    2,    3,    10,   33,   1000,  1001,  1024,   1025,
                                        2000, 4096, 4097, 8192, 8200, 32000, 50257, 100000, 100003};
  for (std::int64_t k : ks) {
    std::vector<std::int64_t> ns = {1, 7, 1000};
    if (k >= 8192) ns = {1, 7, 100};
    for (std::int64_t n : ns) {
      check_parity({n, k, Reduction::Mean, false, 0.1, 0.7});
      check_parity({n, k, Reduction::None, true, 0.1, 1.0});
      check_parity({n, k, Reduction::Sum, true, 0.0, 1.0});
    }
  }
}

// Turns the opt-in staged kernel off for a test and puts the previous setting back after it.
struct StagedRowsOff {
  bool value = cg::cuda::set_cross_entropy_staged_rows(false);
  ~StagedRowsOff() { cg::cuda::set_cross_entropy_staged_rows(value); }
};

// Every kernel kind of the test above (group of lanes, float4 or not; block per row from
// registers or shared memory; the two-read kernel; the opt-in staged kernel) on one to five rows,
// misaligned too: the same code paths at a size the emulator's race check (tests/emu, where a
// barrier costs the square of the block's threads) runs in seconds.
TEST(CrossEntropyGPU, EveryKernelKindOnAFewRows) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(28);
  StagedRowsOff restore;
  for (const bool staged : {false, true}) {
    cg::cuda::set_cross_entropy_staged_rows(staged);
    for (const std::int64_t k : {3, 33, 516, 1000, 1025, 4097, 8200, 100003}) {
      for (const std::int64_t n : {1, 5}) {
        SCOPED_TRACE(cg::detail::cat(n, "x", k, staged ? " staged" : ""));
        check_parity({n, k, Reduction::Mean, true, 0.1, 0.7});
        check_parity({n, k, Reduction::None, false, 0.0, 1.0});
        check_parity({n, k, Reduction::Sum, true, 0.1, 1.0, /*misaligned=*/true});
      }
    }
  }
}

TEST(CrossEntropyGPU, MatchesTheCpuUnalignedAndAtScale) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(22);
  for (std::int64_t k : {8, 1000, 4096, 32000})
    check_parity({33, k, Reduction::Mean, true, 0.1, 0.7, /*misaligned=*/true});
  // Large enough to spread over the whole GPU.
  check_parity({32768, 1000, Reduction::Mean, false, 0.1, 1.0});
  check_parity({32768, 1000, Reduction::None, true, 0.1, 1.0});
  check_parity({32768, 10, Reduction::Sum, false, 0.1, 0.7});
  check_parity({1000, 32000, Reduction::Mean, false, 0.1, 1.0});
}

// The k <= 1024 kernel with grids of 1 and 3 blocks per SM (each block then takes many groups
// of rows, and the mean/sum partials are fewer) gives the CPU's results too.
TEST(CrossEntropyGPU, GroupKernelWithFewLongLivedBlocks) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(26);
  EXPECT_THROW(cg::cuda::set_cross_entropy_group_blocks_per_sm(0), cg::ValueError);
  EXPECT_THROW(cg::cuda::set_cross_entropy_group_blocks_per_sm(33), cg::ValueError);
  for (const int blocks : {1, 3}) {
    SCOPED_TRACE(blocks);
    const int previous = cg::cuda::set_cross_entropy_group_blocks_per_sm(blocks);
    struct Restore {
      int value;
      ~Restore() { cg::cuda::set_cross_entropy_group_blocks_per_sm(value); }
    } restore{previous};
    check_parity({20000, 1000, Reduction::Mean, false, 0.1, 0.7});
    check_parity({5000, 10, Reduction::Sum, true, 0.0, 1.0});
    check_parity({3001, 33, Reduction::None, false, 0.1, 1.0});
  }
}

// The opt-in staged kernel (set_cross_entropy_staged_rows: rows of 257..1024 classes, float4,
// copied into shared memory ahead of use) against the CPU, and bit for bit against the default
// group kernel (the same arithmetic in the same order): every reduction, weights, ignored rows,
// row counts that leave warps with different numbers of rows and some with none.
TEST(CrossEntropyGPU, StagedRowsKernelMatchesTheGroupKernel) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(27);
  StagedRowsOff restore;
  EXPECT_FALSE(restore.value);  // off by default
  const cg::Device gpu = cg::Device::cuda(0);
  // 20001 rows at k = 1000: about 9 rows per warp on an H100 (2 blocks of 8 warps per SM), so
  // the ring of stages wraps around several times.
  for (const std::int64_t k : {260, 512, 516, 1000, 1024}) {
    for (const std::int64_t n :
         k == 1000 ? std::vector<std::int64_t>{1, 9, 1000, 20001} : std::vector<std::int64_t>{1, 9, 1000}) {
      SCOPED_TRACE(cg::detail::cat(n, "x", k));
      cg::cuda::set_cross_entropy_staged_rows(true);
      check_parity({n, k, Reduction::Mean, false, 0.1, 0.7});
      check_parity({n, k, Reduction::None, true, 0.1, 1.0});
      check_parity({n, k, Reduction::Sum, true, 0.0, 1.0});
      // Bit for bit against the group kernel, mean with weights and ignored rows.
      const cg::Tensor x = (cg::randn({n, k}) * 3.0).to(gpu);
      std::vector<std::int64_t> tv = cg::randint(0, k, {n}).to_vector<std::int64_t>();
      for (std::int64_t i = 1; i < n; i += 7) tv[i] = -100;
      const cg::Tensor t = i64(tv).to(gpu), w = (cg::rand({k}) + 0.5).to(gpu);
      const auto run = [&] {
        const cg::Tensor xx = x.detach().requires_grad_();
        const cg::Tensor loss = F::cross_entropy(xx, t, {.weight = w, .label_smoothing = 0.1});
        return cg::TensorList{loss.detach().cpu(), cg::autograd::grad({loss}, {xx})[0].cpu()};
      };
      const cg::TensorList staged = run();
      cg::cuda::set_cross_entropy_staged_rows(false);
      const cg::TensorList group = run();
      EXPECT_TRUE(cg::testing::all_equal(staged[0], group[0])) << "loss";
      EXPECT_TRUE(cg::testing::all_equal(staged[1], group[1])) << "gradient";
    }
  }
}

TEST(CrossEntropyGPU, GoldenFileFromPyTorch) {
  CUGRAD_REQUIRE_GPU();
  const cg::Device gpu = cg::Device::cuda(0);
  const auto f = cg::io::read_safetensors(std::string(CUGRAD_GOLDEN_DIR) + "/cross_entropy.safetensors");
  const auto& g = f.tensors;
  const double eps = std::stod(f.metadata.at("label_smoothing"));
  const std::int64_t ignore = std::stoll(f.metadata.at("ignore_index"));
  const cg::Tensor target = g.at("target").to(gpu);
  cg::testing::PoisonGuard poison;
  for (Reduction r : {Reduction::Mean, Reduction::Sum, Reduction::None}) {
    for (bool weighted : {false, true}) {
      const std::string suffix = std::string(reduction_name(r)) + (weighted ? "_weighted" : "");
      cg::Tensor x = g.at("logits").to(gpu).requires_grad_();
      const cg::Tensor w = weighted ? g.at("class_weight").to(gpu) : cg::Tensor();
      const cg::Tensor loss = F::cross_entropy(
          x, target, {.weight = w, .ignore_index = ignore, .reduction = r, .label_smoothing = eps});
      EXPECT_TRUE(loss.is_cuda());
      EXPECT_TRUE(all_close(loss, g.at("loss_" + suffix), {1e-5, 1e-5})) << suffix;
      loss.backward(g.at("upstream_" + suffix).to(cg::DType::float32).to(gpu));
      EXPECT_TRUE(norm_close(x.grad(), g.at("grad_" + suffix), 1e-5)) << suffix;
    }
  }
  const cg::Tensor all_ignored =
      cg::full({target.numel()}, static_cast<double>(ignore), gpu, cg::DType::int64);
  EXPECT_TRUE(std::isnan(
      F::cross_entropy(g.at("logits").to(gpu), all_ignored, {.ignore_index = ignore, .label_smoothing = eps})
          .item<double>()));
  expect_no_device_errors();
}

TEST(CrossEntropyGPU, AllIgnoredLargeLogitsAndEmptyBatches) {
  CUGRAD_REQUIRE_GPU();
  const cg::Device gpu = cg::Device::cuda(0);
  cg::testing::PoisonGuard poison;
  for (std::int64_t k : {10, 2000, 32000, 100000}) {
    SCOPED_TRACE(k);
    const cg::Tensor t = cg::full({5}, -100.0, gpu, cg::DType::int64);
    cg::Tensor x = cg::randn({5, k}, gpu).requires_grad_();
    const cg::Tensor mean = F::cross_entropy(x, t, {.label_smoothing = 0.1});
    EXPECT_TRUE(std::isnan(mean.item<double>()));
    mean.backward();
    EXPECT_TRUE(cg::testing::all_equal(x.grad(), cg::zeros({5, k}, gpu)));  // written, and 0 (not NaN)
    EXPECT_EQ(F::cross_entropy(x, t, {.reduction = Reduction::Sum}).item<double>(), 0.0);
    EXPECT_TRUE(
        cg::testing::all_equal(F::cross_entropy(x, t, {.reduction = Reduction::None}), cg::zeros({5}, gpu)));
  }
  // Rows shifted by ±1e4 (float32 values the CPU reference sees exactly).
  cg::manual_seed(23);
  for (std::int64_t k : {10, 1000, 32000}) {
    const cg::Tensor x =
        cg::randn({4, k}) * 3.0 + cg::from_vector(std::vector<float>{1e4f, -1e4f, 0.f, 1e4f}, {4, 1});
    const cg::Tensor t = i64({0, k - 1, 1 % k, -100});
    check_parity({4, k, Reduction::None, false, 0.1, 1.0}, x, t);
    check_parity({4, k, Reduction::Mean, true, 0.1, 0.7}, x, t);
  }
  // N = 0.
  const cg::Tensor x0 = cg::zeros({0, 7}, gpu);
  const cg::Tensor t0 = cg::zeros({0}, gpu, cg::DType::int64);
  EXPECT_TRUE(std::isnan(F::cross_entropy(x0, t0).item<double>()));
  EXPECT_EQ(F::cross_entropy(x0, t0, {.reduction = Reduction::Sum}).item<double>(), 0.0);
  EXPECT_EQ(F::cross_entropy(x0, t0, {.reduction = Reduction::None}).shape(), (cg::Shape{0}));
  expect_no_device_errors();
}

TEST(CrossEntropyGPU, OutOfRangeTargetsAreReportedWithoutAHostSync) {
  CUGRAD_REQUIRE_GPU();
  const cg::Device gpu = cg::Device::cuda(0);
  expect_no_device_errors();
  // Every kernel shape reports: group (K 10), block (K 2000, 50257 with shared memory),
  // two-read (K 100003).
  for (std::int64_t k : {10, 2000, 50257, 100003}) {
    SCOPED_TRACE(k);
    cg::Tensor x = cg::randn({6, k}, gpu).requires_grad_();
    const cg::Tensor bad = i64({1, 2, k, 3, -100, 4}).to(gpu);
    const cg::Tensor good = i64({1, 2, 0, 3, -100, 4}).to(gpu);
    cg::Tensor loss;
    {
      cg::testing::PoisonGuard poison;
      EXPECT_NO_THROW(loss = F::cross_entropy(x, bad, {.reduction = Reduction::None}));  // asynchronous
      // The next host synchronization reports it.
      expect_error(
          [] { cg::synchronize(); },
          {"cross_entropy", ("target " + std::to_string(k)).c_str(), "row 2", "cuda:0", "ignore_index -100"});
      EXPECT_NO_THROW(cg::runtime::check_device_errors());  // consumed
      // The row was treated as ignored: loss 0 and gradient 0, both written.
      EXPECT_EQ(values(loss)[2], 0.0);
      loss.backward(cg::ones({6}, gpu));
      const auto g = values(x.grad().narrow(0, 2, 1));
      for (double v : g) ASSERT_EQ(v, 0.0);
    }
    // Reported by the next call at the latest (here a correct one), then cleared.
    F::cross_entropy(x.detach(), i64({-5, 1, 2, 3, 4, 5}).to(gpu));
    wait_without_checking();
    expect_error([&] { F::cross_entropy(x.detach(), good); }, {"cross_entropy", "target -5", "row 0"});
    EXPECT_NO_THROW(F::cross_entropy(x.detach(), good));
    expect_no_device_errors();
  }
  // Several bad rows in one launch: one report (whichever row claimed it first), then none.
  const cg::Tensor x = cg::randn({3, 4}, gpu);
  F::cross_entropy(x, i64({9, 0, 7}).to(gpu), {.reduction = Reduction::Sum});
  wait_without_checking();
  try {
    cg::runtime::check_device_errors();
    ADD_FAILURE() << "no report for targets 9 and 7";
  } catch (const cg::ValueError& e) {
    const std::string m = e.what();
    EXPECT_TRUE(m.find("target 9 at row 0") != std::string::npos ||
                m.find("target 7 at row 2") != std::string::npos)
        << m;
  }
  expect_no_device_errors();
  // check_device_errors(device) reports for that device only.
  F::cross_entropy(x, i64({0, 11, 0}).to(gpu));
  wait_without_checking();
  EXPECT_NO_THROW(cg::runtime::check_device_errors(cg::Device::cpu()));
  expect_error([&] { cg::runtime::check_device_errors(gpu); }, {"target 11"});
  expect_no_device_errors();
  // item(), to_vector() and Stream::synchronize() report it too, and consume it.
  cg::Tensor l = F::cross_entropy(x, i64({0, 12, 0}).to(gpu));
  expect_error([&] { (void)l.item<float>(); }, {"target 12"});
  expect_no_device_errors();
  l = F::cross_entropy(x, i64({0, 13, 0}).to(gpu), {.reduction = Reduction::None});
  expect_error([&] { (void)l.to_vector<float>(); }, {"target 13"});
  F::cross_entropy(x, i64({0, 14, 0}).to(gpu));
  expect_error([&] { cg::Stream::current(gpu).synchronize(); }, {"target 14"});
  F::cross_entropy(x, i64({0, 15, 0}).to(gpu));
  wait_without_checking();
  expect_error([] { cg::check_device_errors(); }, {"target 15"});
  expect_no_device_errors();
}

TEST(CrossEntropyGPU, NoGradientBufferWithoutRequiresGrad) {
  CUGRAD_REQUIRE_GPU();
  const cg::Device gpu = cg::Device::cuda(0);
  const std::int64_t n = 4096, k = 1000;
  const std::size_t grad_bytes = static_cast<std::size_t>(n * k) * sizeof(float);
  cg::Tensor x = cg::randn({n, k}, gpu);
  const cg::Tensor t = cg::randint(0, k, {n}, gpu);
  cg::synchronize();
  auto peak_during = [&](const std::function<cg::Tensor()>& fn) {
    const std::size_t before = cg::memory_stats(gpu).bytes_in_use;
    cg::reset_peak_memory_stats(gpu);
    const cg::Tensor loss = fn();
    return cg::memory_stats(gpu).peak_bytes_in_use - before;
  };
  EXPECT_LT(peak_during([&] { return F::cross_entropy(x, t, {.label_smoothing = 0.1}); }), grad_bytes / 8);
  x.requires_grad_();
  {
    cg::NoGradGuard ng;
    EXPECT_LT(peak_during([&] { return F::cross_entropy(x, t, {.label_smoothing = 0.1}); }), grad_bytes / 8);
  }
  // With a gradient to compute, the forward allocates it.
  EXPECT_GE(peak_during([&] { return F::cross_entropy(x, t, {.label_smoothing = 0.1}); }), grad_bytes);
  expect_no_device_errors();
}

TEST(CrossEntropyGPU, LeafGradientsRetainGraphAndDeterminism) {
  CUGRAD_REQUIRE_GPU();
  const cg::Device gpu = cg::Device::cuda(0);
  cg::manual_seed(24);
  const cg::Tensor xc = cg::randn({777, 1000}) * 2.0;
  const cg::Tensor tc = cg::randint(0, 1000, {777});
  cg::Tensor xr = xc.to(cg::DType::float64).requires_grad_();
  const cg::Tensor lr = F::cross_entropy(xr, tc, {.label_smoothing = 0.1});
  lr.backward();

  cg::Tensor x = xc.to(gpu).requires_grad_();
  const cg::Tensor t = tc.to(gpu);
  const cg::Tensor loss = F::cross_entropy(x, t, {.label_smoothing = 0.1});
  EXPECT_TRUE(all_close(loss, lr, {1e-5, 1e-5}));
  loss.backward(cg::Tensor(), /*retain_graph=*/true);
  EXPECT_TRUE(norm_close(x.grad(), xr.grad(), 1e-5));
  loss.backward(cg::full({}, 0.5, gpu), /*retain_graph=*/false);  // recomputed, scaled by 0.5
  EXPECT_TRUE(norm_close(x.grad(), xr.grad() * 1.5, 1e-5));
  expect_error([&] { loss.backward(); }, {"CrossEntropyBackward", "second time"});

  // The scalar is reduced deterministically: the same bits every time.
  const cg::Tensor big = cg::randn({32768, 1000}, gpu);
  const cg::Tensor bt = cg::randint(0, 1000, {32768}, gpu);
  const double first = F::cross_entropy(big, bt, {.label_smoothing = 0.1}).item<double>();
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(F::cross_entropy(big, bt, {.label_smoothing = 0.1}).item<double>(), first);
  expect_no_device_errors();
}

TEST(CrossEntropyGPU, DeviceAndDtypeErrors) {
  CUGRAD_REQUIRE_GPU();
  const cg::Device gpu = cg::Device::cuda(0);
  const cg::Tensor x = cg::randn({4, 3}, gpu);
  expect_error(
      [&] {
        F::cross_entropy(x, i64({0, 1, 2, 0}));
      },
      {"cross_entropy", "different devices", "cuda:0"});
  expect_error(
      [&] {
        F::cross_entropy(x, i64({0, 1, 2, 0}).to(gpu), {.weight = cg::ones({3})});
      },
      {"cross_entropy", "weight", "different devices"});
  expect_error(
      [&] {
        F::cross_entropy(cg::zeros({4, 3}, gpu, cg::DType::int64), i64({0, 1, 2, 0}).to(gpu));
      },
      {"cross_entropy", "float32", "int64"});
  expect_no_device_errors();
}
