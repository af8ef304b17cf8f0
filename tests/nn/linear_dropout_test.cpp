// nn::functional::linear and dropout (and the activation forwarders): linear against
// matmul + add for any leading dimensions, empty and degenerate sizes, gradients against the
// composed reference, errors and float64 gradchecks; dropout's mask rate, scaling,
// reproducibility, p = 0 / 1, eval identity, gradient, errors and gradcheck; and (GPU suite)
// linear forward/backward parity and identical dropout masks on the CPU and CUDA.
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

namespace {

const cg::Device kCpu = cg::Device::cpu();

std::string message_of(const std::function<void()>& f) { return cg::testing::value_error_message(f); }

// The reference: x reshaped to rows, @ wᵀ, + b, reshaped back (composed differentiable ops).
cg::Tensor reference_linear(const cg::Tensor& x, const cg::Tensor& w, const cg::Tensor& b) {
  cg::Shape out_shape = x.shape();
  out_shape.back() = w.size(0);
  cg::Tensor y = cg::matmul(x.reshape({-1, x.size(-1)}), w.t());
  if (b.defined()) y = y + b;
  return y.reshape(out_shape);
}

cg::Tensor leaf(const cg::Tensor& t) { return t.detach().requires_grad_(); }

}  // namespace

// ---- linear ----

TEST(Linear, MatchesMatmulForAnyLeadingDims) {
  cg::manual_seed(1);
  for (const cg::DType dtype : {cg::DType::float32, cg::DType::float64}) {
    for (const cg::Shape& xs : std::vector<cg::Shape>{{5}, {3, 5}, {2, 3, 5}, {2, 1, 3, 5}}) {
      SCOPED_TRACE(cg::detail::cat(dtype, " x", cg::shape_str(xs)));
      const cg::Tensor x = cg::randn(xs, kCpu, dtype), w = cg::randn({7, 5}, kCpu, dtype),
                       b = cg::randn({7}, kCpu, dtype);
      const cg::Tensor y = F::linear(x, w, b);
      cg::Shape expect = xs;
      expect.back() = 7;
      EXPECT_EQ(y.shape(), expect);
      EXPECT_EQ(y.dtype(), dtype);
      EXPECT_TRUE(all_close(y, reference_linear(x, w, b)));
      EXPECT_TRUE(all_close(F::linear(x, w), reference_linear(x, w, {})));
    }
  }
}

TEST(Linear, GradientsMatchTheComposedReference) {
  cg::manual_seed(2);
  const cg::Tensor x0 = cg::randn({2, 4, 3}), w0 = cg::randn({6, 3}), b0 = cg::randn({6}),
                   g = cg::randn({2, 4, 6});
  const cg::Tensor x = leaf(x0), w = leaf(w0), b = leaf(b0);
  const cg::Tensor y = F::linear(x, w, b);
  EXPECT_EQ(y.grad_fn_name(), "LinearBackward");
  const cg::TensorList got = cg::autograd::grad({y}, {x, w, b}, {g});
  const cg::Tensor rx = leaf(x0), rw = leaf(w0), rb = leaf(b0);
  const cg::TensorList want = cg::autograd::grad({reference_linear(rx, rw, rb)}, {rx, rw, rb}, {g});
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(cg::testing::norm_close(got[i], want[i])) << i;

  // Only what is asked for: a frozen weight and bias give only dx; backward into .grad.
  const cg::Tensor x2 = leaf(x0);
  F::linear(x2, w0, b0).backward(g);
  EXPECT_TRUE(cg::testing::norm_close(x2.grad(), want[0]));
  const cg::Tensor w3 = leaf(w0);
  F::linear(x0, w3).backward(g);  // frozen input: weight gradient only
  EXPECT_TRUE(cg::testing::norm_close(w3.grad(), want[1]));
  EXPECT_FALSE(x0.grad().defined());
  EXPECT_FALSE(F::linear(x0, w0, b0).requires_grad());
}

TEST(Linear, EmptyAndDegenerateSizes) {
  // No rows: an empty output, zero weight and bias gradients.
  const cg::Tensor w = leaf(cg::randn({3, 4})), b = leaf(cg::randn({3}));
  const cg::Tensor y = F::linear(cg::zeros({0, 4}), w, b);
  EXPECT_EQ(y.shape(), (cg::Shape{0, 3}));
  const cg::TensorList g = cg::autograd::grad({y}, {w, b}, {cg::zeros({0, 3})});
  EXPECT_TRUE(all_equal(g[0], cg::zeros({3, 4})));
  EXPECT_TRUE(all_equal(g[1], cg::zeros({3})));
  // in_features = 0: the empty product is 0, so the output is the bias.
  const cg::Tensor b2 = cg::from_vector(std::vector<float>{1, 2}, {2});
  EXPECT_TRUE(all_equal(F::linear(cg::zeros({3, 0}), cg::zeros({2, 0}), b2),
                        cg::from_vector(std::vector<float>{1, 2, 1, 2, 1, 2}, {3, 2})));
  // out_features = 0.
  EXPECT_EQ(F::linear(cg::ones({2, 5}), cg::zeros({0, 5})).shape(), (cg::Shape{2, 0}));
}

TEST(Linear, ErrorsNameTheOpAndShapes) {
  const cg::Tensor x = cg::randn({2, 3}), w = cg::randn({4, 3}), b = cg::randn({4});
  auto mentions = [](const std::string& m, const std::string& what) {
    return m.find("linear") != std::string::npos && m.find(what) != std::string::npos;
  };
  EXPECT_TRUE(mentions(message_of([&] { F::linear(cg::randn({2, 5}), w, b); }), "in_features (3)"));
  EXPECT_TRUE(mentions(message_of([&] { F::linear(x, cg::randn({12}), b); }), "2-D"));
  EXPECT_TRUE(mentions(message_of([&] { F::linear(x, w, cg::randn({3})); }), "bias must have shape [4]"));
  EXPECT_TRUE(mentions(message_of([&] { F::linear(x, w.to(cg::DType::float64), b); }), "float64"));
  EXPECT_TRUE(mentions(message_of([&] { F::linear(x.to(cg::DType::int64), w, b); }), "int64"));
  EXPECT_TRUE(mentions(message_of([&] { F::linear(cg::randn({}), w, b); }), "at least one dimension"));
  EXPECT_TRUE(mentions(message_of([&] { F::linear(cg::Tensor(), w, b); }), "undefined"));
}

TEST(LinearGradcheck, Float64) {
  cg::manual_seed(3);
  const auto d = cg::DType::float64;
  const cg::Tensor x = leaf(cg::randn({2, 3, 4}, kCpu, d)), w = leaf(cg::randn({5, 4}, kCpu, d)),
                   b = leaf(cg::randn({5}, kCpu, d));
  EXPECT_EQ(
      cg::autograd::gradcheck([](const cg::TensorList& t) { return F::linear(t[0], t[1], t[2]); }, {x, w, b}),
      "");
  EXPECT_EQ(cg::autograd::gradcheck([](const cg::TensorList& t) { return F::linear(t[0], t[1]); }, {x, w}),
            "");
  const cg::Tensor v = leaf(cg::randn({4}, kCpu, d));
  EXPECT_EQ(
      cg::autograd::gradcheck([](const cg::TensorList& t) { return F::linear(t[0], t[1], t[2]); }, {v, w, b}),
      "");
  // Stacked: linear -> tanh -> linear.
  const cg::Tensor w2 = leaf(cg::randn({2, 5}, kCpu, d));
  EXPECT_EQ(cg::autograd::gradcheck(
                [](const cg::TensorList& t) { return F::linear(F::tanh(F::linear(t[0], t[1], t[2])), t[3]); },
                {x, w, b, w2}),
            "");
}

TEST(FunctionalActivations, ForwardToTheTensorOps) {
  const cg::Tensor x = cg::randn({4, 5});
  EXPECT_TRUE(all_equal(F::sigmoid(x), cg::sigmoid(x)));
  EXPECT_TRUE(all_equal(F::tanh(x), cg::tanh(x)));
  EXPECT_TRUE(all_equal(F::leaky_relu(x), cg::leaky_relu(x, 0.01)));
  EXPECT_TRUE(all_equal(F::leaky_relu(x, 0.3), cg::leaky_relu(x, 0.3)));
}

// ---- dropout ----

TEST(Dropout, ZeroesAboutPAndScalesTheRest) {
  cg::manual_seed(4);
  const double p = 0.3;
  const cg::Tensor x = cg::rand({200000}) + 1.0;  // no zeros of its own
  const cg::Tensor y = F::dropout(x, p, true);
  const auto xv = x.to_vector<float>(), yv = y.to_vector<float>();
  std::int64_t zeros = 0;
  for (std::size_t i = 0; i < yv.size(); ++i) {
    if (yv[i] == 0.f) {
      ++zeros;
    } else {
      ASSERT_NEAR(yv[i], xv[i] / (1 - p), 1e-6) << i;
    }
  }
  // Binomial(200000, 0.3): standard deviation 205 elements; allow 5 of them.
  EXPECT_NEAR(static_cast<double>(zeros), p * 200000, 1025.0);
}

TEST(Dropout, MaskIsRandLikeAtLeastPAndReproducible) {
  const cg::Tensor x = cg::randn({7, 33});
  cg::manual_seed(5);
  const cg::Tensor y1 = F::dropout(x, 0.4);
  cg::manual_seed(5);
  const cg::Tensor keep = cg::ge(cg::rand_like(x), 0.4).to(cg::DType::float32);
  EXPECT_TRUE(all_close(y1, x * keep / 0.6, {1e-6, 1e-6}));
  cg::manual_seed(5);
  EXPECT_TRUE(all_equal(F::dropout(x, 0.4), y1));
  EXPECT_FALSE(all_equal(F::dropout(x, 0.4), y1));  // the next draw differs
}

TEST(Dropout, IdentityCasesAndPOne) {
  const cg::Tensor x = leaf(cg::randn({4, 6}));
  EXPECT_TRUE(F::dropout(x, 0.5, false).shares_storage(x));  // eval: the input itself
  EXPECT_TRUE(F::dropout(x, 0.0, true).shares_storage(x));
  const cg::Tensor y = F::dropout(x, 1.0, true);
  EXPECT_TRUE(all_equal(y, cg::zeros({4, 6})));
  EXPECT_TRUE(y.requires_grad());
  EXPECT_TRUE(all_equal(cg::autograd::grad({y.sum()}, {x})[0], cg::zeros({4, 6})));
}

TEST(Dropout, GradientIsTheScaledMask) {
  cg::manual_seed(6);
  const cg::Tensor x = leaf(cg::randn({50, 20}));
  const cg::Tensor y = F::dropout(x, 0.25);
  const cg::Tensor g = cg::autograd::grad({y.sum()}, {x})[0];
  // Where kept, dy/dx = 1/(1-p); where dropped, 0: the gradient is y / x.
  EXPECT_TRUE(all_close(g, y.detach() / x.detach(), {1e-5, 1e-5}));
}

TEST(Dropout, Errors) {
  const cg::Tensor x = cg::randn({3});
  for (const double p : {-0.1, 1.5, static_cast<double>(NAN)}) {
    const std::string m = message_of([&] { F::dropout(x, p); });
    EXPECT_NE(m.find("dropout: probability must be in [0, 1]"), std::string::npos) << m;
  }
  EXPECT_NE(message_of([&] { F::dropout(cg::arange(3), 0.5); }).find("floating"), std::string::npos);
}

TEST(DropoutGradcheck, Float64WithAFixedMask) {
  const cg::Tensor x = leaf(cg::randn({4, 5}, kCpu, cg::DType::float64));
  EXPECT_EQ(cg::autograd::gradcheck(
                [](const cg::TensorList& t) {
                  cg::manual_seed(7);  // the same mask at every evaluation
                  return F::dropout(t[0], 0.35);
                },
                {x}),
            "");
}

// ---- GPU ----

TEST(FunctionalGPU, LinearForwardAndBackwardMatchCpu) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(8);
  for (const auto& [xs, out] : std::vector<std::pair<cg::Shape, std::int64_t>>{
           {{1, 1}, 1}, {{7, 33}, 5}, {{3, 5, 17}, 65}, {{1000, 257}, 129}, {{33}, 7}}) {
    SCOPED_TRACE(cg::shape_str(xs));
    const std::int64_t in = xs.back();
    cg::Shape ys = xs;
    ys.back() = out;
    const cg::Tensor x = cg::randn(xs), w = cg::randn({out, in}), b = cg::randn({out}), g = cg::randn(ys);
    EXPECT_TRUE(cg::testing::cuda_matches_cpu64_norm(
        [](const cg::TensorList& t) { return F::linear(t[0], t[1], t[2]); }, {x, w, b}));
    for (int i = 0; i < 3; ++i) {
      EXPECT_TRUE(cg::testing::cuda_matches_cpu64_norm(
          [i](const cg::TensorList& t) {
            const cg::Tensor a = t[0].detach().requires_grad_(), c = t[1].detach().requires_grad_(),
                             d = t[2].detach().requires_grad_();
            return cg::autograd::grad({F::linear(a, c, d)}, {a, c, d}, {t[3]})[static_cast<std::size_t>(i)];
          },
          {x, w, b, g}))
          << "gradient " << i;
    }
  }
}

TEST(FunctionalGPU, DropoutMaskIsTheSameOnCpuAndCuda) {
  CUGRAD_REQUIRE_GPU();
  for (const cg::Shape& shape : cg::testing::awkward_shapes()) {
    const cg::Tensor x = cg::randn(shape);
    cg::manual_seed(9);
    const cg::Tensor on_cpu = F::dropout(x, 0.3);
    cg::manual_seed(9);
    const cg::Tensor on_cuda = F::dropout(x.cuda(), 0.3);
    EXPECT_TRUE(on_cuda.is_cuda());
    EXPECT_TRUE(all_close(on_cuda, on_cpu, {0, 1e-7})) << cg::shape_str(shape);
  }
  // And its gradient on the device.
  cg::manual_seed(10);
  const cg::Tensor x = cg::randn({1000003}).cuda().requires_grad_();
  const cg::Tensor y = F::dropout(x, 0.5);
  const cg::Tensor gx = cg::autograd::grad({y.sum()}, {x})[0];
  EXPECT_TRUE(all_close(gx.cpu(), (cg::ne(y.detach(), 0.0).to(cg::DType::float32) * 2.0).cpu()));
}
