// sigmoid, tanh and leaky_relu: values against the closed forms (extremes and NaN included),
// backward against y(1-y), 1-y² and PyTorch's leaky_relu rule (slope at 0), in-place
// variants, float64 gradchecks, errors; the var/std int-literal overloads; and (GPU suite)
// CUDA forward and backward against the float64 CPU reference at awkward sizes.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "cugrad/cugrad.h"
#include "tests/support/parity.h"

namespace cg = cugrad;
using cg::testing::all_close;

namespace {

const double kNaN = std::numeric_limits<double>::quiet_NaN();

cg::Tensor f64(const std::vector<double>& v) {
  return cg::from_vector(v, {static_cast<std::int64_t>(v.size())});
}

double ref_sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double ref_leaky(double x, double s) { return x > 0 ? x : s * x; }

std::vector<double> map(const std::vector<double>& v, double (*f)(double)) {
  std::vector<double> out;
  for (double x : v) out.push_back(f(x));
  return out;
}

}  // namespace

TEST(Activation, ValuesMatchClosedForms) {
  const std::vector<double> xs = {-30.0, -3.5, -1.0, -0.25, 0.0, 0.25, 1.0, 3.5, 30.0};
  for (const cg::DType dtype : {cg::DType::float64, cg::DType::float32}) {
    SCOPED_TRACE(cg::detail::cat(dtype));
    const cg::Tensor x = f64(xs).to(dtype);
    const cg::testing::Tolerance tol = dtype == cg::DType::float64 ? cg::testing::Tolerance{1e-12, 1e-12}
                                                                   : cg::testing::Tolerance{1e-6, 1e-6};
    EXPECT_EQ(cg::sigmoid(x).dtype(), dtype);
    EXPECT_TRUE(all_close(cg::sigmoid(x), f64(map(xs, ref_sigmoid)), tol));
    EXPECT_TRUE(all_close(x.sigmoid(), f64(map(xs, ref_sigmoid)), tol));
    EXPECT_TRUE(all_close(cg::tanh(x), f64(map(xs, [](double v) { return std::tanh(v); })), tol));
    EXPECT_TRUE(all_close(x.tanh(), f64(map(xs, [](double v) { return std::tanh(v); })), tol));
    EXPECT_TRUE(all_close(cg::leaky_relu(x), f64(map(xs, [](double v) { return ref_leaky(v, 0.01); })), tol));
    EXPECT_TRUE(
        all_close(cg::leaky_relu(x, 0.2), f64(map(xs, [](double v) { return ref_leaky(v, 0.2); })), tol));
    EXPECT_TRUE(
        all_close(x.leaky_relu(-0.5), f64(map(xs, [](double v) { return ref_leaky(v, -0.5); })), tol));
  }
}

TEST(Activation, ExtremesAndNaN) {
  // sigmoid never overflows: exp is only taken of non-positive arguments.
  const cg::Tensor big = cg::from_vector(std::vector<float>{-1e4f, -100.f, 100.f, 1e4f}, {4});
  const auto s = cg::sigmoid(big).to_vector<float>();
  EXPECT_EQ(s[0], 0.f);
  EXPECT_GT(s[1], 0.f);  // 3.7e-44: a float32 denormal, not 0 and not NaN
  EXPECT_EQ(s[2], 1.f);
  EXPECT_EQ(s[3], 1.f);
  const auto t = cg::tanh(big).to_vector<float>();
  EXPECT_EQ(t[0], -1.f);
  EXPECT_EQ(t[3], 1.f);
  const cg::Tensor nan = f64({kNaN});
  EXPECT_TRUE(std::isnan(cg::sigmoid(nan).item<double>()));
  EXPECT_TRUE(std::isnan(cg::tanh(nan).item<double>()));
  EXPECT_TRUE(std::isnan(cg::leaky_relu(nan, 0.1).item<double>()));
  const cg::Tensor inf = f64({-INFINITY, INFINITY});
  EXPECT_EQ(cg::sigmoid(inf).to_vector<double>(), (std::vector<double>{0.0, 1.0}));
  EXPECT_EQ(cg::leaky_relu(inf, 0.1).to_vector<double>(), (std::vector<double>{-INFINITY, INFINITY}));
}

TEST(Activation, BackwardFollowsTheDerivativeRules) {
  const std::vector<double> xs = {-2.0, -0.5, 0.0, 0.5, 2.0};
  const cg::Tensor g = f64({1.0, -2.0, 3.0, 0.5, -1.5});
  const auto gv = g.to_vector<double>();
  {
    const cg::Tensor x = f64(xs).requires_grad_();
    const cg::Tensor y = cg::sigmoid(x);
    EXPECT_EQ(y.grad_fn_name(), "SigmoidBackward");
    const auto gx = cg::autograd::grad({y}, {x}, {g})[0].to_vector<double>();
    for (std::size_t i = 0; i < xs.size(); ++i) {
      const double s = ref_sigmoid(xs[i]);
      EXPECT_NEAR(gx[i], gv[i] * s * (1 - s), 1e-12) << i;
    }
  }
  {
    const cg::Tensor x = f64(xs).requires_grad_();
    const cg::Tensor y = cg::tanh(x);
    EXPECT_EQ(y.grad_fn_name(), "TanhBackward");
    const auto gx = cg::autograd::grad({y}, {x}, {g})[0].to_vector<double>();
    for (std::size_t i = 0; i < xs.size(); ++i) {
      const double t = std::tanh(xs[i]);
      EXPECT_NEAR(gx[i], gv[i] * (1 - t * t), 1e-12) << i;
    }
  }
  // PyTorch: x > 0 -> 1, else the slope, at 0 included; positive and negative slopes.
  for (const double slope : {0.01, 0.3, -0.7, 0.0}) {
    const cg::Tensor x = f64(xs).requires_grad_();
    const cg::Tensor y = cg::leaky_relu(x, slope);
    EXPECT_EQ(y.grad_fn_name(), "LeakyReluBackward");
    const auto gx = cg::autograd::grad({y}, {x}, {g})[0].to_vector<double>();
    for (std::size_t i = 0; i < xs.size(); ++i)
      EXPECT_EQ(gx[i], gv[i] * (xs[i] > 0 ? 1.0 : slope)) << slope << " " << i;
  }
}

// ReLU and leaky ReLU backward in one pass each, with PyTorch's rules where the values are not
// finite (reference values printed by PyTorch 1.13): ReLU is threshold_backward, y <= 0 ? 0 : g,
// so a NaN output passes the gradient and a masked Inf or NaN gradient becomes exactly 0;
// leaky ReLU is x > 0 ? g : g * slope.
TEST(Activation, ReluAndLeakyReluBackwardMatchPyTorchOnNonFiniteValues) {
  const double inf = std::numeric_limits<double>::infinity();
  for (const cg::DType dtype : {cg::DType::float64, cg::DType::float32}) {
    SCOPED_TRACE(cg::dtype_name(dtype));
    const cg::Tensor x = f64({-1.0, 0.0, 2.0, kNaN}).to(dtype).requires_grad_();
    const cg::Tensor y = cg::relu(x);
    EXPECT_EQ(y.grad_fn_name(), "ReluBackward");
    const auto gx = cg::autograd::grad({y}, {x}, {f64({inf, kNaN, 3.0, 5.0}).to(dtype)})[0]
                        .to(cg::DType::float64)
                        .to_vector<double>();
    EXPECT_EQ(gx, (std::vector<double>{0.0, 0.0, 3.0, 5.0}));

    const cg::Tensor g = f64({1.0, 2.0, 3.0, 4.0}).to(dtype);
    const auto lp = cg::autograd::grad({cg::leaky_relu(x, 0.5)}, {x}, {g})[0].to(cg::DType::float64).to_vector<double>();
    EXPECT_EQ(lp, (std::vector<double>{0.5, 1.0, 3.0, 2.0}));
    const auto ln = cg::autograd::grad({cg::leaky_relu(x, -0.5)}, {x}, {g})[0].to(cg::DType::float64).to_vector<double>();
    EXPECT_EQ(ln, (std::vector<double>{-0.5, -1.0, 3.0, -2.0}));
  }
}

TEST(Activation, InPlaceVariantsAndTheirBackward) {
  const std::vector<double> xs = {-2.0, -0.5, 0.0, 0.5, 2.0};
  cg::Tensor a = f64(xs);
  a.sigmoid_();
  EXPECT_TRUE(all_close(a, f64(map(xs, ref_sigmoid))));
  cg::Tensor b = f64(xs);
  b.tanh_();
  EXPECT_TRUE(all_close(b, f64(map(xs, [](double v) { return std::tanh(v); }))));
  for (const double slope : {0.25, -0.5}) {  // a negative slope needs x's old value for backward
    const cg::Tensor leaf = f64(xs).requires_grad_();
    cg::Tensor c = leaf * 1.0;  // a non-leaf, so it may be modified in place
    c.leaky_relu_(slope);
    EXPECT_TRUE(all_close(c, f64(map(xs, [](double v) { return v; })).leaky_relu(slope)));
    const auto gx = cg::autograd::grad({c}, {leaf}, {cg::ones({5}, cg::Device::cpu(), cg::DType::float64)})[0]
                        .to_vector<double>();
    for (std::size_t i = 0; i < xs.size(); ++i)
      EXPECT_EQ(gx[i], xs[i] > 0 ? 1.0 : slope) << slope << " " << i;
  }
  const cg::Tensor leaf = f64(xs).requires_grad_();
  cg::Tensor d = leaf * 2.0;
  d.sigmoid_();
  const auto gd = cg::autograd::grad({d}, {leaf}, {cg::ones({5}, cg::Device::cpu(), cg::DType::float64)})[0]
                      .to_vector<double>();
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const double s = ref_sigmoid(2 * xs[i]);
    EXPECT_NEAR(gd[i], 2 * s * (1 - s), 1e-12);
  }
}

TEST(Activation, ErrorsNameTheOp) {
  const cg::Tensor i = cg::arange(4);
  for (const auto& [name, fn] : std::vector<std::pair<std::string, std::function<void()>>>{
           {"sigmoid", [&] { (void)cg::sigmoid(i); }},
           {"tanh", [&] { (void)cg::tanh(i); }},
           {"leaky_relu", [&] { (void)cg::leaky_relu(i, 0.1); }},
           {"leaky_relu", [&] { (void)cg::leaky_relu(cg::zeros({2}), NAN); }},
           {"sigmoid", [&] { (void)cg::sigmoid(cg::Tensor()); }}}) {
    try {
      fn();
      ADD_FAILURE() << name << ": no throw";
    } catch (const cg::ValueError& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
  }
}

TEST(ActivationGradcheck, Float64) {
  cg::manual_seed(3);
  // Keep leaky_relu's inputs away from the kink at 0, where finite differences straddle it.
  cg::Tensor x = cg::randn({3, 5}, cg::Device::cpu(), cg::DType::float64);
  x = x + cg::sign(x) * 0.1;
  x.requires_grad_();
  EXPECT_EQ(cg::autograd::gradcheck([](const cg::TensorList& t) { return cg::sigmoid(t[0]); }, {x}), "");
  EXPECT_EQ(cg::autograd::gradcheck([](const cg::TensorList& t) { return cg::tanh(t[0]); }, {x}), "");
  EXPECT_EQ(cg::autograd::gradcheck([](const cg::TensorList& t) { return cg::leaky_relu(t[0], 0.2); }, {x}),
            "");
  EXPECT_EQ(cg::autograd::gradcheck([](const cg::TensorList& t) { return cg::leaky_relu(t[0], -1.5); }, {x}),
            "");
  EXPECT_EQ(
      cg::autograd::gradcheck(
          [](const cg::TensorList& t) { return cg::tanh(cg::sigmoid(t[0]) * 3.0).leaky_relu(0.1); }, {x}),
      "");
}

// An int literal as the first argument of var/std means a dimension (it used to be ambiguous
// between the bool `unbiased` and the int64 `dim` overloads).
TEST(ReduceOverloads, IntLiteralIsADimension) {
  const cg::Tensor t = cg::from_vector(std::vector<double>{1, 2, 3, 4, 6, 8}, {2, 3});
  EXPECT_EQ(t.var(0).shape(), (cg::Shape{3}));
  EXPECT_TRUE(all_close(t.var(0), cg::from_vector(std::vector<double>{4.5, 8, 12.5}, {3})));
  EXPECT_TRUE(all_close(t.var(1), cg::from_vector(std::vector<double>{1, 4}, {2})));
  EXPECT_TRUE(all_close(t.std(1, false),
                        cg::from_vector(std::vector<double>{std::sqrt(2.0 / 3), std::sqrt(8.0 / 3)}, {2})));
  EXPECT_EQ(t.std(0, true, true).shape(), (cg::Shape{1, 3}));
  EXPECT_TRUE(all_close(cg::var(t, 0), t.var(std::int64_t{0})));
  EXPECT_TRUE(all_close(cg::std(t, -1), t.std(std::int64_t{1})));
  EXPECT_EQ(t.sum(0).shape(), (cg::Shape{3}));
  // bool still selects the all-elements overloads.
  EXPECT_EQ(t.var(false).dim(), 0);
  EXPECT_NEAR(t.var(true).item<double>(), cg::var(t, true).item<double>(), 0);
}

// ---- GPU: CUDA vs the float64 CPU reference ----

TEST(ActivationGPU, ForwardMatchesCpu) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(21);
  const std::vector<std::pair<const char*, cg::testing::TensorFn>> ops = {
      {"sigmoid", [](const cg::TensorList& t) { return cg::sigmoid(t[0]); }},
      {"tanh", [](const cg::TensorList& t) { return cg::tanh(t[0]); }},
      {"leaky_relu", [](const cg::TensorList& t) { return cg::leaky_relu(t[0], 0.1); }},
      {"leaky_relu(-2)", [](const cg::TensorList& t) { return cg::leaky_relu(t[0], -2.0); }},
  };
  for (const auto& shape : cg::testing::awkward_shapes()) {
    const cg::Tensor x = cg::randn(shape) * 4.0;
    for (const auto& [name, fn] : ops)
      EXPECT_TRUE(cg::testing::cuda_matches_cpu64(fn, {x})) << name << " at " << cg::shape_str(shape);
  }
  // Large arguments: no overflow on the device either.
  const cg::Tensor big =
      cg::from_vector(std::vector<float>{-1e4f, -100.f, -20.f, 0.f, 20.f, 100.f, 1e4f}, {7});
  EXPECT_TRUE(cg::testing::cuda_matches_cpu64(ops[0].second, {big}));
  EXPECT_TRUE(cg::testing::cuda_matches_cpu64(ops[1].second, {big}));
}

TEST(ActivationGPU, BackwardMatchesCpu) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(22);
  const auto grad_of = [](cg::Tensor (*f)(const cg::Tensor&)) {
    return [f](const cg::TensorList& t) {
      const cg::Tensor x = t[0].detach().requires_grad_();
      return cg::autograd::grad({f(x)}, {x}, {t[1]})[0];
    };
  };
  const auto leaky = [](const cg::Tensor& x) { return cg::leaky_relu(x, 0.05); };
  for (const auto& shape : cg::testing::awkward_shapes()) {
    const cg::Tensor x = cg::randn(shape) * 3.0, g = cg::randn(shape);
    EXPECT_TRUE(
        cg::testing::cuda_matches_cpu64(grad_of([](const cg::Tensor& v) { return cg::sigmoid(v); }), {x, g}))
        << cg::shape_str(shape);
    EXPECT_TRUE(
        cg::testing::cuda_matches_cpu64(grad_of([](const cg::Tensor& v) { return cg::tanh(v); }), {x, g}))
        << cg::shape_str(shape);
    EXPECT_TRUE(cg::testing::cuda_matches_cpu64(grad_of(+leaky), {x, g})) << cg::shape_str(shape);
    EXPECT_TRUE(cg::testing::cuda_matches_cpu64(grad_of([](const cg::Tensor& v) { return cg::relu(v); }), {x, g}))
        << cg::shape_str(shape);
  }
}

TEST(ActivationGPU, ReluAndLeakyReluBackwardOnNonFiniteValuesMatchCpu) {
  CUGRAD_REQUIRE_GPU();
  const double inf = std::numeric_limits<double>::infinity();
  const cg::Device gpu = cg::Device::cuda(0);
  const cg::Tensor x = f64({-1.0, 0.0, 2.0, kNaN, -3.0, 7.0}).to(cg::DType::float32).to(gpu).requires_grad_();
  const cg::Tensor g = f64({inf, kNaN, 3.0, 5.0, -inf, -inf}).to(cg::DType::float32).to(gpu);
  const auto relu = cg::autograd::grad({cg::relu(x)}, {x}, {g})[0].to(cg::Device::cpu()).to(cg::DType::float64).to_vector<double>();
  ASSERT_EQ(relu.size(), 6u);
  EXPECT_EQ(relu[0], 0.0);
  EXPECT_EQ(relu[1], 0.0);
  EXPECT_EQ(relu[2], 3.0);
  EXPECT_EQ(relu[3], 5.0);
  EXPECT_EQ(relu[4], 0.0);
  EXPECT_EQ(relu[5], -inf);
  const auto leaky = cg::autograd::grad({cg::leaky_relu(x, 0.5)}, {x}, {g})[0].to(cg::Device::cpu()).to(cg::DType::float64).to_vector<double>();
  EXPECT_EQ(leaky[0], inf);
  EXPECT_TRUE(std::isnan(leaky[1]));
  EXPECT_EQ(leaky[2], 3.0);
  EXPECT_EQ(leaky[3], 2.5);
  EXPECT_EQ(leaky[4], -inf);
  EXPECT_EQ(leaky[5], -inf);
}
