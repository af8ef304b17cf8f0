// nn::functional::max_pool2d, avg_pool2d and adaptive_avg_pool2d: the CPU loops against
// references written here (forward and backward, float32 and float64, padding, stride,
// dilation, odd and 1x1 planes), PyTorch's tie, NaN and -inf rules for max pooling (expected
// values taken from PyTorch 1.13), errors, the golden file on the CPU and the GPU, float64
// gradchecks, and (GPU suites) the CUDA kernels against the float64 CPU reference on awkward
// and large shapes, with deterministic backward passes.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "cuda/pool.h"
#include "cugrad/cugrad.h"
#include "cugrad/nn/functional.h"
#include "tests/support/parity.h"

namespace cg = cugrad;
namespace F = cugrad::nn::functional;
using cg::nn::Int2;
using cg::testing::all_close;
using cg::testing::all_equal;
using cg::testing::norm_close;

namespace {

const cg::Device kCpu = cg::Device::cpu();
const cg::Device kCuda = cg::Device::cuda(0);
constexpr double kInf = std::numeric_limits<double>::infinity();

std::string message_of(const std::function<void()>& f) { return cg::testing::value_error_message(f); }

bool mentions(const std::string& message, const std::string& op, const std::string& what) {
  return message.find(op) != std::string::npos && message.find(what) != std::string::npos;
}

std::vector<double> values(const cg::Tensor& t) { return t.cpu().to(cg::DType::float64).to_vector<double>(); }

enum class Kind { max, avg, adaptive };

// One pooling case: the input shape, kind, and its window (or, adaptive, its output size).
struct Case {
  Kind kind;
  cg::Shape x;
  Int2 k = 1;  // adaptive: the output size
  std::optional<Int2> stride = std::nullopt;
  Int2 padding = 0, dilation = 1;
  std::string name() const {
    const char* kinds[] = {"max", "avg", "adaptive"};
    return cg::detail::cat(kinds[static_cast<int>(kind)], " x", cg::shape_str(x), " k ", k.h, "x", k.w, " s ",
                           stride ? stride->h : k.h, ",", stride ? stride->w : k.w, " p ", padding.h, ",",
                           padding.w, " d ", dilation.h, ",", dilation.w);
  }
};

cg::Tensor run_pool(const Case& c, const cg::Tensor& x) {
  switch (c.kind) {
    case Kind::max:
      return F::max_pool2d(x, c.k, c.stride, c.padding, c.dilation);
    case Kind::avg:
      return F::avg_pool2d(x, c.k, c.stride, c.padding);
    case Kind::adaptive:
      break;
  }
  return F::adaptive_avg_pool2d(x, c.k);
}

// ---- references written from PyTorch's definitions ----

struct Ref {
  cg::Tensor y, dx;
};

// Max pooling: the window in row-major order, padding is -inf; a later element replaces the
// choice when greater or NaN; the first in-plane element starts (as PyTorch's CPU kernel).
// Average: PyTorch's count_include_pad divisor, (hend - hstart)(wend - wstart) with the ends
// clamped to the padded plane. Adaptive: floor/ceil window bounds computed in floating point.
Ref reference(const Case& c, const cg::Tensor& x, const cg::Tensor& dy) {
  const auto xv = values(x), gv = values(dy);
  const std::int64_t planes = c.x[0] * c.x[1], h = c.x[2], w = c.x[3];
  const cg::Shape ys = dy.shape();
  const std::int64_t oh = ys[2], ow = ys[3];
  const Int2 s = c.stride.value_or(c.k);
  std::vector<double> y(static_cast<std::size_t>(planes * oh * ow)), dx(xv.size(), 0.0);
  for (std::int64_t pl = 0; pl < planes; ++pl)
    for (std::int64_t i = 0; i < oh; ++i)
      for (std::int64_t j = 0; j < ow; ++j) {
        const auto o = static_cast<std::size_t>((pl * oh + i) * ow + j);
        const auto at = [&](std::int64_t r, std::int64_t q) {
          return static_cast<std::size_t>((pl * h + r) * w + q);
        };
        if (c.kind == Kind::max) {
          double best = -kInf;
          std::int64_t bi = -1;
          for (std::int64_t p = 0; p < c.k.h; ++p)
            for (std::int64_t q = 0; q < c.k.w; ++q) {
              const std::int64_t r = i * s.h - c.padding.h + p * c.dilation.h;
              const std::int64_t cc = j * s.w - c.padding.w + q * c.dilation.w;
              if (r < 0 || r >= h || cc < 0 || cc >= w) continue;
              const double v = xv[at(r, cc)];
              if (bi < 0 || v > best || std::isnan(v)) {
                best = v;
                bi = static_cast<std::int64_t>(at(r, cc));
              }
            }
          y[o] = best;
          if (bi >= 0) dx[static_cast<std::size_t>(bi)] += gv[o];
        } else if (c.kind == Kind::avg) {
          const std::int64_t hs = i * s.h - c.padding.h, ws = j * s.w - c.padding.w;
          const std::int64_t he = std::min(hs + c.k.h, h + c.padding.h),
                             we = std::min(ws + c.k.w, w + c.padding.w);
          const double divisor = static_cast<double>((he - hs) * (we - ws));
          double sum = 0;
          for (std::int64_t r = std::max<std::int64_t>(hs, 0); r < std::min(he, h); ++r)
            for (std::int64_t q = std::max<std::int64_t>(ws, 0); q < std::min(we, w); ++q) {
              sum += xv[at(r, q)];
              dx[at(r, q)] += gv[o] / divisor;
            }
          y[o] = sum / divisor;
        } else {
          const auto lo = [](std::int64_t a, std::int64_t in, std::int64_t out) {
            return static_cast<std::int64_t>(std::floor(static_cast<double>(a) * in / out));
          };
          const auto hi = [](std::int64_t a, std::int64_t in, std::int64_t out) {
            return static_cast<std::int64_t>(std::ceil(static_cast<double>(a + 1) * in / out));
          };
          const std::int64_t h0 = lo(i, h, oh), h1 = hi(i, h, oh), w0 = lo(j, w, ow), w1 = hi(j, w, ow);
          const double count = static_cast<double>((h1 - h0) * (w1 - w0));
          double sum = 0;
          for (std::int64_t r = h0; r < h1; ++r)
            for (std::int64_t q = w0; q < w1; ++q) {
              sum += xv[at(r, q)];
              dx[at(r, q)] += gv[o] / count;
            }
          y[o] = sum / count;
        }
      }
  return {cg::from_vector(y, ys), cg::from_vector(dx, c.x)};
}

cg::Shape output_shape(const Case& c) {
  if (c.kind == Kind::adaptive) return {c.x[0], c.x[1], c.k.h, c.k.w};
  const Int2 s = c.stride.value_or(c.k);
  return {c.x[0], c.x[1], (c.x[2] + 2 * c.padding.h - c.dilation.h * (c.k.h - 1) - 1) / s.h + 1,
          (c.x[3] + 2 * c.padding.w - c.dilation.w * (c.k.w - 1) - 1) / s.w + 1};
}

std::vector<Case> cases() {
  return {
      {Kind::max, {2, 3, 9, 8}, 2},
      {Kind::max, {2, 3, 9, 8}, 3, Int2(2), 1},                   // ResNet's stem pool
      {Kind::max, {1, 2, 7, 6}, 3, Int2(1), 1, 2},                // dilation 2
      {Kind::max, {2, 1, 5, 7}, {2, 3}, Int2{1, 2}, Int2{1, 0}},  // non-square
      {Kind::max, {3, 2, 1, 1}, 1},                               // 1x1 planes
      {Kind::max, {1, 1, 1, 1}, 3, Int2(1), 1},                   // one element, padded
      {Kind::max, {2, 2, 5, 5}, 5},                               // kernel = plane
      {Kind::max, {1, 3, 4, 5}, 2, Int2(1), 1, 2},                // dilation with padding
      {Kind::avg, {2, 3, 9, 8}, 2},
      {Kind::avg, {2, 3, 9, 8}, 3, Int2(2), 1},  // padding counted
      {Kind::avg, {1, 2, 7, 5}, {3, 2}, Int2{1, 3}, Int2{1, 1}},
      {Kind::avg, {3, 2, 1, 1}, 1},
      {Kind::avg, {1, 1, 1, 1}, 3, Int2(1), 1},
      {Kind::avg, {2, 2, 6, 7}, {6, 7}},       // global
      {Kind::adaptive, {2, 3, 9, 8}, 1},       // global average
      {Kind::adaptive, {2, 3, 7, 9}, {3, 4}},  // windows of uneven size
      {Kind::adaptive, {1, 2, 3, 3}, {5, 7}},  // more outputs than inputs
      {Kind::adaptive, {2, 2, 10, 10}, 5},     // exact division
      {Kind::adaptive, {1, 1, 1, 1}, {2, 3}},
  };
}

}  // namespace

// ---- CPU against the references ----

TEST(Pool2d, ForwardAndBackwardMatchReferences) {
  cg::manual_seed(201);
  for (const cg::DType dtype : {cg::DType::float32, cg::DType::float64}) {
    const double tol = dtype == cg::DType::float32 ? 1e-6 : 1e-13;
    for (const Case& c : cases()) {
      SCOPED_TRACE(cg::detail::cat(dtype, " ", c.name()));
      const cg::Tensor x = cg::randn(c.x, kCpu, dtype).requires_grad_();
      const cg::Tensor dy = cg::randn(output_shape(c), kCpu, dtype);
      const cg::Tensor y = run_pool(c, x);
      ASSERT_EQ(y.shape(), output_shape(c));
      EXPECT_EQ(y.dtype(), dtype);
      const Ref ref = reference(c, x.detach(), dy);
      EXPECT_TRUE(all_close(y, ref.y, {tol, tol})) << "y";
      EXPECT_TRUE(all_close(cg::autograd::grad({y}, {x}, {dy})[0], ref.dx, {tol, tol})) << "dx";
    }
  }
}

TEST(Pool2d, BackwardNodesAreNamed) {
  const cg::Tensor x = cg::randn({1, 1, 4, 4}).requires_grad_();
  EXPECT_EQ(F::max_pool2d(x, 2).grad_fn_name(), "MaxPool2dBackward");
  EXPECT_EQ(F::avg_pool2d(x, 2).grad_fn_name(), "AvgPool2dBackward");
  EXPECT_EQ(F::adaptive_avg_pool2d(x, 1).grad_fn_name(), "AdaptiveAvgPool2dBackward");
  cg::NoGradGuard ng;
  EXPECT_FALSE(F::max_pool2d(x, 2).requires_grad());
}

TEST(MaxPool2d, TiesGoToTheFirstMaximumAsPyTorch) {
  {  // Constant 5x5, kernel 3, stride 2, padding 1: each window's first in-plane element.
    const cg::Tensor x = cg::ones({1, 1, 5, 5}).requires_grad_();
    const cg::Tensor y = F::max_pool2d(x, 3, 2, 1);
    y.backward(cg::ones(y.shape()));
    const std::vector<float> expected = {1, 1, 0, 1, 0, 1, 1, 0, 1, 0, 0, 0, 0,
                                         0, 0, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0};
    EXPECT_TRUE(all_equal(x.grad(), cg::from_vector(expected, {1, 1, 5, 5})));
  }
  {  // Overlapping windows on a constant plane: gradients 1..4 go to the windows' corners.
    const cg::Tensor x = cg::ones({1, 1, 4, 4}).requires_grad_();
    F::max_pool2d(x, 3, 1).backward(cg::from_vector(std::vector<float>{1, 2, 3, 4}, {1, 1, 2, 2}));
    const std::vector<float> expected = {1, 2, 0, 0, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    EXPECT_TRUE(all_equal(x.grad(), cg::from_vector(expected, {1, 1, 4, 4})));
  }
}

TEST(MaxPool2d, NanAndInfinityFollowPyTorch) {
  {  // A NaN wins, and a later NaN replaces an earlier one.
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const cg::Tensor x =
        cg::from_vector(std::vector<float>{nan, 1, 5, 2, nan, 0}, {1, 1, 2, 3}).requires_grad_();
    const cg::Tensor y = F::max_pool2d(x, 2, 1);
    for (const double v : values(y)) EXPECT_TRUE(std::isnan(v));
    y.backward(cg::ones(y.shape()));
    EXPECT_TRUE(all_equal(x.grad(), cg::from_vector(std::vector<float>{0, 0, 0, 0, 2, 0}, {1, 1, 2, 3})));
  }
  {  // All -inf with padding: the output is -inf and the gradient goes to the first in-plane element.
    const cg::Tensor x = cg::full({1, 1, 3, 3}, -kInf).requires_grad_();
    const cg::Tensor y = F::max_pool2d(x, 2, 1, 1);
    EXPECT_TRUE(all_equal(y, cg::full({1, 1, 4, 4}, -kInf)));
    y.backward(cg::ones(y.shape()));
    EXPECT_TRUE(
        all_equal(x.grad(), cg::from_vector(std::vector<float>{4, 2, 2, 2, 1, 1, 2, 1, 1}, {1, 1, 3, 3})));
  }
  {  // Dilation with padding (PyTorch: y and the gradient below).
    const cg::Tensor x =
        cg::arange(0, 20, 1, kCpu, cg::DType::float32).reshape({1, 1, 4, 5}).requires_grad_();
    const cg::Tensor y = F::max_pool2d(x, 2, 1, 1, 2);
    const std::vector<float> ey = {6, 7, 8, 9, 8, 11, 12, 13, 14, 13, 16, 17, 18, 19, 18, 11, 12, 13, 14, 13};
    EXPECT_TRUE(all_equal(y, cg::from_vector(ey, {1, 1, 4, 5})));
    y.backward(cg::ones(y.shape()));
    const std::vector<float> edx = {0, 0, 0, 0, 0, 0, 1, 1, 2, 1, 0, 2, 2, 4, 2, 0, 1, 1, 2, 1};
    EXPECT_TRUE(all_equal(x.grad(), cg::from_vector(edx, {1, 1, 4, 5})));
  }
}

TEST(Pool2d, EmptyBatchGivesEmptyResults) {
  const cg::Tensor x = cg::randn({0, 3, 6, 6}).requires_grad_();
  for (const Case& c : {Case{Kind::max, {0, 3, 6, 6}, 2}, Case{Kind::avg, {0, 3, 6, 6}, 3, Int2(3), 1},
                        Case{Kind::adaptive, {0, 3, 6, 6}, 2}}) {
    SCOPED_TRACE(c.name());
    const cg::Tensor y = run_pool(c, x);
    EXPECT_EQ(y.shape(), output_shape(c));
    EXPECT_EQ(cg::autograd::grad({y}, {x}, {cg::zeros(y.shape())})[0].shape(), x.shape());
  }
}

TEST(Pool2d, BackwardTwiceThroughAFreedGraphIsReported) {
  const cg::Tensor x = cg::randn({1, 2, 4, 4}).requires_grad_();
  const cg::Tensor y = F::max_pool2d(x, 2);
  y.backward(cg::ones(y.shape()));
  const std::string m = message_of([&] { y.backward(cg::ones(y.shape())); });
  EXPECT_NE(m.find("MaxPool2dBackward"), std::string::npos) << m;
  EXPECT_NE(m.find("second time"), std::string::npos) << m;
}

// ---- errors ----

TEST(Pool2d, ErrorsNameTheOpAndTheProblem) {
  const cg::Tensor x = cg::randn({2, 3, 5, 5});
  EXPECT_TRUE(mentions(message_of([&] { F::max_pool2d(cg::Tensor(), 2); }), "max_pool2d", "undefined"));
  EXPECT_TRUE(mentions(message_of([&] {
                         F::max_pool2d(cg::randn({3, 5, 5}), 2);
                       }),
                       "max_pool2d", "unsqueeze(0)"));
  EXPECT_TRUE(mentions(message_of([&] { F::avg_pool2d(cg::randn({5, 5}), 2); }), "avg_pool2d", "4-D"));
  EXPECT_TRUE(mentions(message_of([&] { F::adaptive_avg_pool2d(x.to(cg::DType::int64), 2); }),
                       "adaptive_avg_pool2d", "floating-point"));
  EXPECT_TRUE(mentions(message_of([&] {
                         F::max_pool2d(cg::randn({2, 0, 5, 5}), 2);
                       }),
                       "max_pool2d", "non-zero channels"));
  EXPECT_TRUE(mentions(message_of([&] {
                         F::adaptive_avg_pool2d(cg::randn({2, 3, 0, 5}), 2);
                       }),
                       "adaptive_avg_pool2d", "non-zero"));
  EXPECT_TRUE(mentions(message_of([&] { F::max_pool2d(x, 0); }), "max_pool2d", "kernel_size must be >= 1"));
  EXPECT_TRUE(
      mentions(message_of([&] { F::max_pool2d(x, 2, Int2(0)); }), "max_pool2d", "stride must be >= 1"));
  EXPECT_TRUE(mentions(message_of([&] { F::max_pool2d(x, 2, std::nullopt, 0, 0); }), "max_pool2d",
                       "dilation must be >= 1"));
  EXPECT_TRUE(
      mentions(message_of([&] { F::max_pool2d(x, 3, 1, 2); }), "max_pool2d", "at most half of the kernel"));
  EXPECT_TRUE(mentions(message_of([&] { F::avg_pool2d(x, 3, 1, {1, 2}); }), "avg_pool2d", "at most half"));
  EXPECT_TRUE(
      mentions(message_of([&] { F::avg_pool2d(x, 2, 1, -1); }), "avg_pool2d", "padding must be >= 0"));
  EXPECT_TRUE(mentions(message_of([&] { F::max_pool2d(x, 6); }), "max_pool2d", "output size is too small"));
  EXPECT_TRUE(mentions(message_of([&] { F::max_pool2d(x, 3, 1, 0, 3); }), "max_pool2d", "too small"));
  EXPECT_TRUE(mentions(message_of([&] { F::avg_pool2d(x, {2, 7}); }), "avg_pool2d", "too small"));
  EXPECT_TRUE(mentions(message_of([&] {
                         F::adaptive_avg_pool2d(x, {0, 2});
                       }),
                       "adaptive_avg_pool2d", "output_size must be >= 1"));
  EXPECT_NO_THROW(F::max_pool2d(x, 5));
  EXPECT_NO_THROW(F::max_pool2d(x, 3, 1, 1, 2));
}

// ---- golden file ----

namespace {

void expect_golden(cg::Device dev) {
  SCOPED_TRACE(dev.str());
  const auto file = cg::io::read_safetensors(std::string(CUGRAD_GOLDEN_DIR) + "/conv_pool.safetensors");
  const auto get = [&](const std::string& key) { return file.tensors.at(key); };
  const std::vector<std::pair<std::string, std::function<cg::Tensor(const cg::Tensor&)>>> ops = {
      {"maxpool2", [](const cg::Tensor& x) { return F::max_pool2d(x, 2); }},
      {"maxpool3s2p1", [](const cg::Tensor& x) { return F::max_pool2d(x, 3, 2, 1); }},
      {"avgpool2", [](const cg::Tensor& x) { return F::avg_pool2d(x, 2); }},
      {"gap", [](const cg::Tensor& x) { return F::adaptive_avg_pool2d(x, 1); }},
  };
  for (const auto& [name, fn] : ops) {
    SCOPED_TRACE(name);
    const cg::Tensor x = get("pool_x").to(dev).requires_grad_();
    const cg::Tensor y = fn(x);
    EXPECT_EQ(y.device(), dev);
    const cg::Tensor dx = cg::autograd::grad({y}, {x}, {get(name + "_dy").to(dev)})[0];
    EXPECT_TRUE(all_close(y, get(name + "_y"))) << "y";
    EXPECT_TRUE(all_close(dx, get(name + "_dx"))) << "dx";
  }
}

}  // namespace

TEST(Pool2dGolden, MatchesPyTorchOnCpu) { expect_golden(kCpu); }

// ---- gradcheck (float64, CPU) ----

TEST(Pool2dGradcheck, EveryPoolingOp) {
  cg::manual_seed(202);
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name());
    // Distinct values spaced well beyond the finite-difference step: no ties in max windows.
    const std::int64_t n = cg::shape_numel(c.x);
    std::vector<double> v(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i)
      v[static_cast<std::size_t>(i)] = 0.01 * static_cast<double>((i * 37) % n);
    const cg::Tensor x =
        (cg::from_vector(v, c.x) + cg::randn(c.x, kCpu, cg::DType::float64) * 1e-3).requires_grad_();
    EXPECT_EQ(cg::autograd::gradcheck([&](const cg::TensorList& t) { return run_pool(c, t[0]); }, {x}), "");
  }
  // The check can fail: a max pool with a detached input has no gradient.
  const cg::Tensor x = cg::randn({1, 1, 4, 4}, kCpu, cg::DType::float64).requires_grad_();
  EXPECT_NE(
      cg::autograd::gradcheck(
          [](const cg::TensorList& t) { return F::max_pool2d(t[0].detach(), 2) + t[0].sum() * 0.0; }, {x}),
      "");
}

// ---- GPU: the CUDA kernels against the float64 CPU reference ----

namespace {

// inputs {x, dy}: y or dx of the case.
void expect_parity(const Case& c) {
  SCOPED_TRACE(c.name());
  const cg::TensorList in{cg::randn(c.x), cg::randn(output_shape(c))};
  EXPECT_TRUE(cg::testing::cuda_matches_cpu64([&](const cg::TensorList& t) { return run_pool(c, t[0]); }, in))
      << "y";
  EXPECT_TRUE(cg::testing::cuda_matches_cpu64(
      [&](const cg::TensorList& t) {
        const cg::Tensor x = t[0].detach().requires_grad_();
        return cg::autograd::grad({run_pool(c, x)}, {x}, {t[1]})[0];
      },
      in))
      << "dx";
  // Inference (no grad): max pooling stores no indices and gives the same values.
  EXPECT_TRUE(cg::testing::cuda_matches_cpu64(
      [&](const cg::TensorList& t) {
        cg::NoGradGuard ng;
        return run_pool(c, t[0]);
      },
      in))
      << "y without grad";
}

}  // namespace

TEST(Pool2dGPU, MatchesCpuAtAwkwardShapes) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(211);
  for (const Case& c : cases()) expect_parity(c);
  expect_parity({Kind::max, {33, 7, 13, 11}, 3, Int2(2), 1});
  expect_parity({Kind::avg, {33, 7, 13, 11}, 3, Int2(2), 1});
  expect_parity({Kind::adaptive, {33, 7, 13, 11}, {4, 5}});
  // Max-pool backward works on runs of 4 elements of a row: rows shorter than a run whose
  // windows reach into the next row (an index there must not land in this run), a short last
  // run (w = 5, 9), whole runs stored as vectors (w = 4, 12) with and without overlap.
  expect_parity({Kind::max, {2, 3, 6, 2}, 3, Int2(1), 1});
  expect_parity({Kind::max, {2, 3, 6, 3}, 3, Int2(1), 1, 2});
  expect_parity({Kind::max, {3, 2, 7, 5}, 3, Int2(1), 1});
  expect_parity({Kind::max, {3, 2, 9, 9}, {2, 3}, Int2{2, 1}, Int2{0, 1}});
  expect_parity({Kind::max, {2, 5, 8, 4}, 2});
  expect_parity({Kind::max, {2, 5, 12, 12}, 3, Int2(1), 1});
}

// Tensors of 2^30 elements or more take the kernels' 64-bit index arithmetic; the same awkward
// shapes through those kernels (the limit lowered to 0 so that every call uses them).
TEST(Pool2dGPU, SixtyFourBitIndexKernelsMatchCpu) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(215);
  struct Restore {
    std::int64_t previous = cg::cuda::set_pool_int32_index_limit(0);
    ~Restore() { cg::cuda::set_pool_int32_index_limit(previous); }
  } restore;
  for (const Case& c : cases()) expect_parity(c);
  expect_parity({Kind::max, {33, 7, 13, 11}, 3, Int2(2), 1});
  expect_parity({Kind::avg, {33, 7, 13, 11}, 3, Int2(2), 1});
}

// The thread-per-element max-pool backward kept for comparison (set_max_pool_backward_runs).
TEST(Pool2dGPU, ElementPerThreadMaxBackwardMatchesCpu) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(216);
  struct Restore {
    bool previous = cg::cuda::set_max_pool_backward_runs(false);
    ~Restore() { cg::cuda::set_max_pool_backward_runs(previous); }
  } restore;
  for (const Case& c : cases())
    if (c.kind == Kind::max) expect_parity(c);
  expect_parity({Kind::max, {2, 3, 6, 2}, 3, Int2(1), 1});
  expect_parity({Kind::max, {33, 7, 13, 11}, 3, Int2(2), 1});
}

TEST(Pool2dGPU, LargeShapesSpreadOverTheWholeGpu) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(212);
  expect_parity({Kind::max, {32, 64, 112, 112}, 3, Int2(2), 1});  // ResNet-18's stem pool
  expect_parity({Kind::avg, {16, 64, 57, 55}, 2});
  expect_parity({Kind::adaptive, {256, 512, 7, 7}, 1});  // ResNet-18's global pool
}

TEST(Pool2dGPU, GoldenFile) {
  CUGRAD_REQUIRE_GPU();
  expect_golden(kCuda);
}

TEST(Pool2dGPU, TiesAndNanFollowTheCpu) {
  CUGRAD_REQUIRE_GPU();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const cg::Tensor a = cg::from_vector(std::vector<float>{nan, 1, 5, 2, nan, 0}, {1, 1, 2, 3});
  const cg::Tensor b = cg::ones({2, 3, 7, 7});
  const cg::Tensor c = cg::full({1, 1, 3, 3}, -kInf);
  for (const auto& [x, k, s, p] :
       std::vector<std::tuple<cg::Tensor, int, int, int>>{{a, 2, 1, 0}, {b, 3, 2, 1}, {c, 2, 1, 1}}) {
    const cg::Tensor xc = x.cuda().requires_grad_(), xh = x.clone().requires_grad_();
    const cg::Tensor yc = F::max_pool2d(xc, k, s, p), yh = F::max_pool2d(xh, k, s, p);
    EXPECT_TRUE(all_equal(yc, yh));
    yc.backward(cg::ones(yc.shape(), kCuda));
    yh.backward(cg::ones(yh.shape()));
    EXPECT_TRUE(all_equal(xc.grad(), xh.grad()));
  }
}

TEST(Pool2dGPU, BackwardIsDeterministic) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(213);
  const cg::Tensor x = cg::randn({16, 32, 31, 29}, kCuda), dy3 = cg::randn({16, 32, 16, 15}, kCuda);
  for (const Case& c :
       {Case{Kind::max, {16, 32, 31, 29}, 3, Int2(2), 1}, Case{Kind::avg, {16, 32, 31, 29}, 3, Int2(2), 1},
        Case{Kind::adaptive, {16, 32, 31, 29}, {16, 15}}}) {
    SCOPED_TRACE(c.name());
    cg::Tensor g[2];
    for (int i = 0; i < 2; ++i) {
      const cg::Tensor xl = x.detach().requires_grad_();
      g[i] = cg::autograd::grad({run_pool(c, xl)}, {xl}, {dy3})[0];
    }
    EXPECT_TRUE(all_equal(g[0], g[1]));
  }
}

TEST(Pool2dGPU, ErrorsOnTheDevice) {
  CUGRAD_REQUIRE_GPU();
  const std::string m = message_of([&] {
    F::max_pool2d(cg::randn({1, 1, 4, 4}, kCuda, cg::DType::float64), 2);
  });
  EXPECT_NE(m.find("float"), std::string::npos) << m;  // float64 is CPU-only (here or at creation)
  EXPECT_TRUE(mentions(message_of([&] {
                         F::avg_pool2d(cg::randn({1, 1, 4, 4}, kCuda), 3, 1, 2);
                       }),
                       "avg_pool2d", "at most half"));
}

// ---- bias_max_pool2d: max_pool2d(x + bias) with the bias added inside the pool ----

namespace {

// Output and the gradients of x and bias for dy, fused (bias_max_pool2d) or as the composite
// max_pool2d(x + bias.reshape({1, C, 1, 1})), on `dev`; `node`: the fused output's node.
cg::TensorList bias_pool_results(const Case& c, const cg::Tensor& x, const cg::Tensor& bias,
                                 const cg::Tensor& dy, cg::Device dev, bool fused,
                                 std::string* node = nullptr) {
  const cg::Tensor xl = x.to(dev).detach().requires_grad_(), bl = bias.to(dev).detach().requires_grad_();
  const cg::Tensor y =
      fused ? F::bias_max_pool2d(xl, bl, c.k, c.stride, c.padding, c.dilation)
            : F::max_pool2d(xl + bl.reshape({1, c.x[1], 1, 1}), c.k, c.stride, c.padding, c.dilation);
  if (node) *node = y.grad_fn_name();
  cg::TensorList out{y.detach()};
  for (const cg::Tensor& g : cg::autograd::grad({y}, {xl, bl}, {dy.to(dev)})) out.push_back(g);
  return out;
}

void expect_bias_pool_is_the_composite(cg::Device dev, cg::DType dtype) {
  cg::manual_seed(150);
  for (const Case& c : cases()) {
    if (c.kind != Kind::max) continue;
    SCOPED_TRACE(c.name());
    cg::Tensor x = cg::randn(c.x, kCpu, dtype);
    // Ties after the bias (a whole plane equal) and a NaN: the same winner both ways.
    if (c.x[2] * c.x[3] > 1) {
      std::vector<double> v = x.to(cg::DType::float64).to_vector<double>();
      for (std::int64_t i = 0; i < c.x[2] * c.x[3]; ++i) v[static_cast<std::size_t>(i)] = 0.5;
      v.back() = NAN;
      x = cg::from_vector(v, c.x).to(dtype);
    }
    const cg::Tensor bias = cg::randn({c.x[1]}, kCpu, dtype), dy = cg::randn(output_shape(c), kCpu, dtype);
    std::string node;
    const cg::TensorList fused = bias_pool_results(c, x, bias, dy, dev, true, &node);
    const cg::TensorList plain = bias_pool_results(c, x, bias, dy, dev, false);
    EXPECT_EQ(node, "BiasMaxPool2dBackward");
    // Output and input gradient bit for bit; the bias gradient sums the same terms in another
    // order (conv2d's bias-gradient reduction, not the broadcast add's; fusion_test checks it
    // bit for bit against conv2d with its bias).
    EXPECT_TRUE(all_equal(fused[0].cpu(), plain[0].cpu())) << "output";
    EXPECT_TRUE(all_equal(fused[1].cpu(), plain[1].cpu())) << "input gradient";
    EXPECT_TRUE(all_close(fused[2].cpu(), plain[2].cpu(), {1e-5, 1e-5})) << "bias gradient";
  }
}

}  // namespace

TEST(MaxPool2d, BiasInsideThePoolIsTheCompositeBitForBit) {
  expect_bias_pool_is_the_composite(kCpu, cg::DType::float32);
  expect_bias_pool_is_the_composite(kCpu, cg::DType::float64);
}

TEST(MaxPool2d, BiasInsideThePoolGradcheckAndErrors) {
  cg::manual_seed(151);
  const cg::Tensor x = cg::randn({2, 3, 6, 5}, kCpu, cg::DType::float64).requires_grad_();
  const cg::Tensor b = cg::randn({3}, kCpu, cg::DType::float64).requires_grad_();
  EXPECT_EQ(
      cg::autograd::gradcheck(
          [](const cg::TensorList& t) { return F::bias_max_pool2d(t[0], t[1], 3, Int2(2), 1); }, {x, b}),
      "");
  const std::string wrong = cg::testing::value_error_message([&] {
    F::bias_max_pool2d(x, b.reshape({1, 3}), 2);
  });
  EXPECT_TRUE(mentions(wrong, "bias_max_pool2d", "bias must have shape [3]")) << wrong;
  const std::string dtype =
      cg::testing::value_error_message([&] { F::bias_max_pool2d(x, b.to(cg::DType::float32), 2); });
  EXPECT_TRUE(mentions(dtype, "bias_max_pool2d", "device and dtype")) << dtype;
  const std::string missing =
      cg::testing::value_error_message([&] { F::bias_max_pool2d(x, cg::Tensor(), 2); });
  EXPECT_TRUE(mentions(missing, "bias_max_pool2d", "bias")) << missing;
}

TEST(Pool2dGPU, BiasInsideThePoolIsTheCompositeBitForBit) {
  CUGRAD_REQUIRE_GPU();
  expect_bias_pool_is_the_composite(kCuda, cg::DType::float32);
  // And against the CPU (float64 composite).
  cg::manual_seed(152);
  const Case c{Kind::max, {16, 64, 24, 24}, 2};  // the 2-conv CNN's conv2 output
  const cg::Tensor x = cg::randn(c.x), b = cg::randn({64}), dy = cg::randn(output_shape(c));
  const cg::TensorList gpu = bias_pool_results(c, x, b, dy, kCuda, true);
  const cg::TensorList ref = bias_pool_results(c, x.to(cg::DType::float64), b.to(cg::DType::float64),
                                               dy.to(cg::DType::float64), kCpu, false);
  EXPECT_TRUE(all_close(gpu[0], ref[0], {1e-6, 1e-6}));
  EXPECT_TRUE(all_close(gpu[1], ref[1], {1e-6, 1e-6}));
  EXPECT_TRUE(norm_close(gpu[2], ref[2], 1e-5));
}
