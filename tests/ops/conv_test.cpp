// nn::functional::conv2d: the CPU path (im2col + GEMM) against direct loops written here,
// forward and backward, float32 and float64, over strides, padding, dilation, groups
// (depthwise included), 1x1 kernels and images; pruning of the backward (a frozen convolution
// computes only its input gradient, a first layer only its parameter gradients); errors;
// PyTorch's golden file on the CPU and the GPU; float64 gradchecks; and (GPU suites) cuDNN
// against the float64 CPU reference on awkward shapes, the algorithm cache, TF32 opt-in and
// side streams.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <regex>
#include <string>
#include <vector>

#include "cuda/channel_sum.h"
#include "cuda/conv.h"
#include "cuda/conv_direct.h"
#include "cuda/conv_graph.h"
#include "cugrad/cugrad.h"
#include "cugrad/nn/functional.h"
#include "host/ops/conv.h"
#include "host/runtime/cuda_context.h"
#include "tests/support/gpu.h"
#include "tests/support/parity.h"

namespace cg = cugrad;
namespace F = cugrad::nn::functional;
using cg::nn::Int2;
using cg::testing::all_close;
using cg::testing::norm_close;

namespace {

const cg::Device kCpu = cg::Device::cpu();
const cg::Device kCuda = cg::Device::cuda(0);

std::string message_of(const std::function<void()>& f) { return cg::testing::value_error_message(f); }

bool mentions(const std::string& message, const std::string& what) {
  return message.find("conv2d") != std::string::npos && message.find(what) != std::string::npos;
}

std::vector<double> values(const cg::Tensor& t) { return t.cpu().to(cg::DType::float64).to_vector<double>(); }

// One convolution: input shape, output channels, kernel, stride, padding, dilation, groups, bias.
struct Cfg {
  cg::Shape x;
  std::int64_t c_out;
  Int2 k, stride = 1, padding = 0, dilation = 1;
  std::int64_t groups = 1;
  bool bias = true;
  std::string name() const {
    return cg::detail::cat("x", cg::shape_str(x), " c_out ", c_out, " k ", k.h, "x", k.w, " s ", stride.h,
                           ",", stride.w, " p ", padding.h, ",", padding.w, " d ", dilation.h, ",",
                           dilation.w, " g ", groups, bias ? " bias" : " no bias");
  }
  cg::Shape w_shape() const { return {c_out, x[1] / groups, k.h, k.w}; }
  std::int64_t out_h() const { return (x[2] + 2 * padding.h - dilation.h * (k.h - 1) - 1) / stride.h + 1; }
  std::int64_t out_w() const { return (x[3] + 2 * padding.w - dilation.w * (k.w - 1) - 1) / stride.w + 1; }
  cg::Shape y_shape() const { return {x[0], c_out, out_h(), out_w()}; }
};

// Awkward configurations: every feature alone and combined, odd sizes, 1x1 images and kernels.
std::vector<Cfg> configs() {
  return {
      {{2, 3, 7, 6}, 4, 3, 1, 1},                         // 3x3 "same"
      {{2, 4, 9, 9}, 6, 3, 2, 0, 1, 2, false},            // stride 2, groups 2, no bias
      {{2, 2, 5, 8}, 3, 3, 1, 2, 2},                      // dilation 2
      {{3, 3, 4, 4}, 5, 1},                               // pointwise (im2col skipped)
      {{2, 3, 5, 7}, 4, 1, 2},                            // 1x1 with stride 2 (im2col needed)
      {{1, 1, 1, 1}, 1, 1},                               // one element
      {{3, 2, 1, 1}, 3, 3, 1, 1},                         // 1x1 image, 3x3 kernel, padding 1
      {{2, 6, 5, 5}, 12, 3, 1, 1, 1, 6},                  // depthwise, multiplier 2
      {{2, 4, 6, 5}, 4, {1, 3}, {2, 1}, {0, 1}},          // non-square kernel, stride, padding
      {{2, 3, 5, 6}, 2, {5, 6}},                          // kernel = image: 1x1 output
      {{1, 4, 11, 10}, 6, 3, {3, 2}, {2, 1}, {2, 3}, 2},  // everything at once
      {{5, 3, 6, 6}, 8, 2, 2, 0, 1, 1, false},            // stride = kernel
  };
}

struct Inputs {
  cg::Tensor x, w, b, dy;
  cg::TensorList list() const { return {x, w, b, dy}; }
};

Inputs make_inputs(const Cfg& c, cg::DType dtype = cg::DType::float32) {
  Inputs in;
  in.x = cg::randn(c.x, kCpu, dtype);
  in.w = cg::randn(c.w_shape(), kCpu, dtype) * 0.5;
  if (c.bias) in.b = cg::randn({c.c_out}, kCpu, dtype);
  in.dy = cg::randn(c.y_shape(), kCpu, dtype);
  return in;
}

cg::Tensor run_conv(const Cfg& c, const cg::Tensor& x, const cg::Tensor& w, const cg::Tensor& b) {
  return F::conv2d(x, w, b, c.stride, c.padding, c.dilation, c.groups);
}

// ---- direct loops (double), independent of im2col ----

struct Ref {
  cg::Tensor y, dx, dw, db;
};

Ref loop_conv(const Cfg& c, const Inputs& in) {
  const auto xv = values(in.x), wv = values(in.w), gv = values(in.dy);
  const auto bv = c.bias ? values(in.b) : std::vector<double>(static_cast<std::size_t>(c.c_out), 0.0);
  const std::int64_t n = c.x[0], ci = c.x[1], h = c.x[2], w = c.x[3], co = c.c_out;
  const std::int64_t oh = c.out_h(), ow = c.out_w(), cg_in = ci / c.groups, cg_out = co / c.groups;
  std::vector<double> y(static_cast<std::size_t>(n * co * oh * ow)), dx(xv.size(), 0.0), dw(wv.size(), 0.0),
      db(static_cast<std::size_t>(co), 0.0);
  const auto xi = [&](std::int64_t b, std::int64_t ch, std::int64_t i, std::int64_t j) {
    return static_cast<std::size_t>(((b * ci + ch) * h + i) * w + j);
  };
  const auto wi = [&](std::int64_t o, std::int64_t ch, std::int64_t p, std::int64_t q) {
    return static_cast<std::size_t>(((o * cg_in + ch) * c.k.h + p) * c.k.w + q);
  };
  for (std::int64_t b = 0; b < n; ++b)
    for (std::int64_t o = 0; o < co; ++o) {
      const std::int64_t grp = o / cg_out;
      for (std::int64_t i = 0; i < oh; ++i)
        for (std::int64_t j = 0; j < ow; ++j) {
          const auto yi = static_cast<std::size_t>(((b * co + o) * oh + i) * ow + j);
          double acc = bv[static_cast<std::size_t>(o)];
          const double g = gv[yi];
          db[static_cast<std::size_t>(o)] += g;
          for (std::int64_t ch = 0; ch < cg_in; ++ch)
            for (std::int64_t p = 0; p < c.k.h; ++p)
              for (std::int64_t q = 0; q < c.k.w; ++q) {
                const std::int64_t ih = i * c.stride.h - c.padding.h + p * c.dilation.h;
                const std::int64_t iw = j * c.stride.w - c.padding.w + q * c.dilation.w;
                if (ih < 0 || ih >= h || iw < 0 || iw >= w) continue;
                const std::size_t xe = xi(b, grp * cg_in + ch, ih, iw), we = wi(o, ch, p, q);
                acc += wv[we] * xv[xe];
                dx[xe] += wv[we] * g;
                dw[we] += xv[xe] * g;
              }
          y[yi] = acc;
        }
    }
  Ref r;
  r.y = cg::from_vector(y, c.y_shape());
  r.dx = cg::from_vector(dx, c.x);
  r.dw = cg::from_vector(dw, c.w_shape());
  r.db = cg::from_vector(db, {co});
  return r;
}

}  // namespace

// ---- CPU against the loops ----

TEST(Conv2d, ForwardAndBackwardMatchLoops) {
  cg::manual_seed(101);
  for (const cg::DType dtype : {cg::DType::float32, cg::DType::float64}) {
    const double tol = dtype == cg::DType::float32 ? 1e-5 : 1e-12;
    for (const Cfg& c : configs()) {
      SCOPED_TRACE(cg::detail::cat(dtype, " ", c.name()));
      const Inputs in = make_inputs(c, dtype);
      const Ref ref = loop_conv(c, in);
      const cg::Tensor x = in.x.clone().requires_grad_(), w = in.w.clone().requires_grad_();
      const cg::Tensor b = c.bias ? in.b.clone().requires_grad_() : cg::Tensor();
      const cg::Tensor y = run_conv(c, x, w, b);
      EXPECT_EQ(y.shape(), c.y_shape());
      EXPECT_EQ(y.dtype(), dtype);
      EXPECT_EQ(y.grad_fn_name(), "Conv2dBackward");
      EXPECT_TRUE(norm_close(y, ref.y, tol)) << "y";
      EXPECT_TRUE(all_close(y, ref.y, {tol, tol})) << "y";
      const cg::TensorList g =
          c.bias ? cg::autograd::grad({y}, {x, w, b}, {in.dy}) : cg::autograd::grad({y}, {x, w}, {in.dy});
      EXPECT_TRUE(norm_close(g[0], ref.dx, tol)) << "dx";
      EXPECT_TRUE(norm_close(g[1], ref.dw, tol)) << "dweight";
      if (c.bias) {
        EXPECT_TRUE(norm_close(g[2], ref.db, tol)) << "dbias";
      }
    }
  }
}

TEST(Conv2d, GroupsEqualSeparateConvolutionsPerGroup) {
  cg::manual_seed(102);
  // groups = 2 is two independent convolutions on the channel halves, concatenated.
  const cg::Tensor x = cg::randn({2, 4, 6, 5}), w = cg::randn({6, 2, 3, 3}), b = cg::randn({6});
  const auto yv = values(F::conv2d(x, w, b, 1, 1, 1, 2));
  const auto xv = x.to_vector<float>();
  constexpr std::int64_t kPlane = 6 * 5;
  for (std::int64_t grp = 0; grp < 2; ++grp) {
    std::vector<float> xs;  // x[:, 2 grp : 2 grp + 2]
    for (std::int64_t n = 0; n < 2; ++n)
      xs.insert(xs.end(), xv.begin() + (n * 4 + grp * 2) * kPlane,
                xv.begin() + (n * 4 + grp * 2 + 2) * kPlane);
    const cg::Tensor part = F::conv2d(cg::from_vector(xs, {2, 2, 6, 5}), w.narrow(0, grp * 3, 3).clone(),
                                      b.narrow(0, grp * 3, 3).clone(), 1, 1);
    const auto pv = values(part);
    for (std::int64_t n = 0; n < 2; ++n)
      for (std::int64_t k = 0; k < 3 * kPlane; ++k)
        EXPECT_NEAR(yv[static_cast<std::size_t>((n * 6 + grp * 3) * kPlane + k)],
                    pv[static_cast<std::size_t>(n * 3 * kPlane + k)], 1e-5);
  }
}

TEST(Conv2d, EmptyBatchGivesEmptyOutputAndZeroParameterGradients) {
  const cg::Tensor x = cg::randn({0, 3, 5, 5}).requires_grad_(), w = cg::randn({4, 3, 3, 3}).requires_grad_(),
                   b = cg::randn({4}).requires_grad_();
  const cg::Tensor y = F::conv2d(x, w, b, 1, 1);
  EXPECT_EQ(y.shape(), (cg::Shape{0, 4, 5, 5}));
  const cg::TensorList g = cg::autograd::grad({y}, {x, w, b}, {cg::zeros({0, 4, 5, 5})});
  EXPECT_EQ(g[0].shape(), x.shape());
  EXPECT_TRUE(cg::testing::all_equal(g[1], cg::zeros({4, 3, 3, 3})));
  EXPECT_TRUE(cg::testing::all_equal(g[2], cg::zeros({4})));
}

// ---- pruning: only the gradients somebody needs ----

namespace {

struct CountDelta {
  cg::Conv2dBackwardCounts before = cg::conv2d_backward_counts();
  cg::Conv2dBackwardCounts now() const {
    const cg::Conv2dBackwardCounts a = cg::conv2d_backward_counts();
    return {a.input - before.input, a.weight - before.weight, a.bias - before.bias};
  }
};

bool ran(const std::string& name) {
  for (const std::string& n : cg::autograd::last_backward_stats().executed)
    if (n == name) return true;
  return false;
}

// Pruning on `dev`: frozen layer, first layer, autograd::grad of one input, no grad mode.
void expect_pruning(cg::Device dev) {
  SCOPED_TRACE(dev.str());
  cg::manual_seed(103);
  const Cfg c{{2, 3, 6, 6}, 4, 3, 1, 1};
  const Inputs in = make_inputs(c);
  const cg::Tensor xd = in.x.to(dev), wd = in.w.to(dev), bd = in.b.to(dev), dy = in.dy.to(dev);
  {  // Frozen convolution: weight and bias need nothing; only grad-input runs.
    const cg::Tensor x = xd.clone().requires_grad_();
    const CountDelta d;
    run_conv(c, x, wd, bd).backward(dy);
    const auto n = d.now();
    EXPECT_EQ(n.input, 1u);
    EXPECT_EQ(n.weight, 0u);
    EXPECT_EQ(n.bias, 0u);
    EXPECT_TRUE(x.grad().defined());
    EXPECT_TRUE(ran("Conv2dBackward"));
  }
  {  // First layer: the input needs no grad; weight and bias gradients only.
    const cg::Tensor w = wd.clone().requires_grad_(), b = bd.clone().requires_grad_();
    const CountDelta d;
    run_conv(c, xd, w, b).backward(dy);
    const auto n = d.now();
    EXPECT_EQ(n.input, 0u);
    EXPECT_EQ(n.weight, 1u);
    EXPECT_EQ(n.bias, 1u);
    EXPECT_TRUE(w.grad().defined());
    EXPECT_TRUE(b.grad().defined());
    EXPECT_FALSE(xd.grad().defined());
  }
  {  // Everything requires grad, but autograd::grad asks for the weight only.
    const cg::Tensor x = xd.clone().requires_grad_(), w = wd.clone().requires_grad_(),
                     b = bd.clone().requires_grad_();
    const CountDelta d;
    const cg::Tensor gw = cg::autograd::grad({run_conv(c, x, w, b)}, {w}, {dy})[0];
    const auto n = d.now();
    EXPECT_EQ(n.input, 0u);
    EXPECT_EQ(n.weight, 1u);
    EXPECT_EQ(n.bias, 0u);
    EXPECT_TRUE(norm_close(gw, loop_conv(c, in).dw, 1e-5));
  }
  {  // Weight without bias: two gradients, no bias gradient exists.
    const cg::Tensor x = xd.clone().requires_grad_(), w = wd.clone().requires_grad_();
    const CountDelta d;
    run_conv(c, x, w, bd).backward(dy);
    const auto n = d.now();
    EXPECT_EQ(n.input, 1u);
    EXPECT_EQ(n.weight, 1u);
    EXPECT_EQ(n.bias, 0u);
  }
  {  // No grad mode: nothing recorded.
    const cg::Tensor w = wd.clone().requires_grad_();
    cg::NoGradGuard ng;
    EXPECT_FALSE(run_conv(c, xd, w, bd).requires_grad());
  }
}

}  // namespace

TEST(Conv2d, BackwardComputesOnlyTheGradientsNeeded) { expect_pruning(kCpu); }

TEST(Conv2d, FrozenLayerBelowAFrozenLayerRunsNoBackward) {
  cg::manual_seed(104);
  // Two frozen convolutions on an input that needs no grad, then a trainable one: backward
  // runs only the top node (nothing below the lowest trainable layer).
  const cg::Tensor x = cg::randn({2, 2, 6, 6});
  const cg::Tensor w1 = cg::randn({3, 2, 3, 3}), w2 = cg::randn({3, 3, 3, 3});
  const cg::Tensor w3 = cg::randn({2, 3, 1, 1}).requires_grad_();
  const cg::Tensor h = F::conv2d(F::conv2d(x, w1, {}, 1, 1), w2, {}, 1, 1);
  EXPECT_FALSE(h.requires_grad());
  const CountDelta d;
  F::conv2d(h, w3).sum().backward();
  const auto n = d.now();
  EXPECT_EQ(n.input, 0u);
  EXPECT_EQ(n.weight, 1u);
  std::size_t convs = 0;
  for (const std::string& name : cg::autograd::last_backward_stats().executed)
    convs += name == "Conv2dBackward";
  EXPECT_EQ(convs, 1u);
}

TEST(Conv2d, SavedWeightModifiedInPlaceIsReported) {
  const cg::Tensor x = cg::randn({1, 2, 4, 4}).requires_grad_();
  cg::Tensor w = cg::randn({2, 2, 3, 3});
  const cg::Tensor y = F::conv2d(x, w);
  w.mul_(2.0);
  const std::string m = message_of([&] { y.backward(cg::ones(y.shape())); });
  EXPECT_NE(m.find("Conv2dBackward"), std::string::npos) << m;
  EXPECT_NE(m.find("modified by an in-place operation"), std::string::npos) << m;
}

// ---- errors ----

TEST(Conv2d, ErrorsNameTheOpAndTheProblem) {
  const cg::Tensor x = cg::randn({2, 4, 5, 5}), w = cg::randn({6, 4, 3, 3});
  EXPECT_TRUE(mentions(message_of([&] { F::conv2d(cg::Tensor(), w); }), "undefined"));
  EXPECT_TRUE(mentions(message_of([&] { F::conv2d(x, cg::Tensor()); }), "weight is an undefined"));
  EXPECT_TRUE(mentions(message_of([&] { F::conv2d(cg::randn({4, 5, 5}), w); }), "unsqueeze(0)"));
  EXPECT_TRUE(mentions(message_of([&] { F::conv2d(x, cg::randn({6, 4, 3})); }), "4-D weight"));
  EXPECT_TRUE(mentions(message_of([&] { F::conv2d(x.to(cg::DType::int64), w.to(cg::DType::int64)); }),
                       "floating-point"));
  EXPECT_TRUE(mentions(message_of([&] { F::conv2d(x, w.to(cg::DType::float64)); }), "weight is float64"));
  EXPECT_TRUE(mentions(message_of([&] { F::conv2d(x, w, cg::ones({6}, kCpu, cg::DType::float64)); }),
                       "bias is float64"));
  EXPECT_TRUE(mentions(message_of([&] {
                         F::conv2d(x, cg::randn({6, 3, 3, 3}));
                       }),
                       "expects 3 input channels"));
  EXPECT_TRUE(mentions(message_of([&] {
                         F::conv2d(x, cg::randn({6, 4, 3, 3}), {}, 1, 0, 1, 3);
                       }),
                       "divisible by groups"));
  EXPECT_TRUE(mentions(message_of([&] {
                         F::conv2d(x, cg::randn({5, 2, 3, 3}), {}, 1, 0, 1, 2);
                       }),
                       "output channels (5"));
  EXPECT_TRUE(mentions(message_of([&] { F::conv2d(x, w, cg::ones({5})); }), "bias must have shape [6]"));
  EXPECT_TRUE(mentions(message_of([&] { F::conv2d(x, w, cg::ones({6, 1})); }), "bias must have shape [6]"));
  EXPECT_TRUE(mentions(message_of([&] { F::conv2d(x, w, {}, 0); }), "stride must be >= 1"));
  EXPECT_TRUE(mentions(message_of([&] {
                         F::conv2d(x, w, {}, {1, -1});
                       }),
                       "stride must be >= 1, got (1, -1)"));
  EXPECT_TRUE(mentions(message_of([&] { F::conv2d(x, w, {}, 1, -1); }), "padding must be >= 0"));
  EXPECT_TRUE(mentions(message_of([&] { F::conv2d(x, w, {}, 1, 0, 0); }), "dilation must be >= 1"));
  EXPECT_TRUE(mentions(message_of([&] { F::conv2d(x, w, {}, 1, 0, 1, 0); }), "groups must be >= 1"));
  EXPECT_TRUE(mentions(message_of([&] {
                         F::conv2d(x, cg::randn({6, 4, 6, 3}));
                       }),
                       "smaller than the dilated kernel"));
  EXPECT_TRUE(
      mentions(message_of([&] { F::conv2d(x, w, {}, 1, 0, 3); }), "smaller than the dilated kernel (7 x 7)"));
  EXPECT_TRUE(mentions(message_of([&] {
                         F::conv2d(cg::randn({2, 0, 5, 5}), cg::randn({6, 0, 3, 3}));
                       }),
                       "at least one channel"));
  EXPECT_TRUE(mentions(message_of([&] {
                         F::conv2d(x, cg::randn({0, 4, 3, 3}));
                       }),
                       "at least one output channel"));
  EXPECT_NO_THROW(F::conv2d(x, cg::randn({6, 4, 5, 5})));            // kernel = image
  EXPECT_NO_THROW(F::conv2d(x, cg::randn({6, 4, 7, 7}), {}, 1, 1));  // fits with padding
}

// ---- golden file from PyTorch ----

namespace {

// The file's metadata "convs": a JSON list of flat objects with cin, cout, k, stride, padding,
// dilation, groups, bias and hw ([h, w]); the batch is the x tensor's.
struct GoldenConv {
  std::int64_t cin = 0, cout = 0, k = 0, stride = 1, padding = 0, dilation = 1, groups = 1;
  bool bias = false;
};

std::vector<GoldenConv> parse_convs(const std::string& json) {
  std::vector<GoldenConv> out;
  const std::regex object(R"(\{([^}]*)\})"), field(R"re("(\w+)"\s*:\s*(\[[^\]]*\]|[^,}\s]+))re");
  for (auto o = std::sregex_iterator(json.begin(), json.end(), object); o != std::sregex_iterator(); ++o) {
    GoldenConv c;
    const std::string body = (*o)[1];
    for (auto f = std::sregex_iterator(body.begin(), body.end(), field); f != std::sregex_iterator(); ++f) {
      const std::string key = (*f)[1], value = (*f)[2];
      if (key == "cin")
        c.cin = std::stoll(value);
      else if (key == "cout")
        c.cout = std::stoll(value);
      else if (key == "k")
        c.k = std::stoll(value);
      else if (key == "stride")
        c.stride = std::stoll(value);
      else if (key == "padding")
        c.padding = std::stoll(value);
      else if (key == "dilation")
        c.dilation = std::stoll(value);
      else if (key == "groups")
        c.groups = std::stoll(value);
      else if (key == "bias")
        c.bias = value == "true";
      else if (key != "hw")
        ADD_FAILURE() << "unknown conv setting in the golden file: " << key;
    }
    out.push_back(c);
  }
  return out;
}

void expect_golden(cg::Device dev) {
  SCOPED_TRACE(dev.str());
  const auto file = cg::io::read_safetensors(std::string(CUGRAD_GOLDEN_DIR) + "/conv_pool.safetensors");
  const auto get = [&](const std::string& key) { return file.tensors.at(key); };
  const std::vector<GoldenConv> convs = parse_convs(file.metadata.at("convs"));
  ASSERT_EQ(convs.size(), 4u);
  for (std::size_t i = 0; i < convs.size(); ++i) {
    const GoldenConv& c = convs[i];
    const std::string p = "conv" + std::to_string(i) + "_";
    SCOPED_TRACE(p);
    const cg::Tensor x = get(p + "x").to(dev).requires_grad_(), w = get(p + "w").to(dev).requires_grad_();
    ASSERT_EQ(x.size(1), c.cin);
    ASSERT_EQ(w.size(0), c.cout);
    ASSERT_EQ(w.size(2), c.k);
    ASSERT_EQ(file.tensors.count(p + "b") == 1, c.bias);
    const cg::Tensor b = c.bias ? get(p + "b").to(dev).requires_grad_() : cg::Tensor();
    const cg::Tensor y = F::conv2d(x, w, b, c.stride, c.padding, c.dilation, c.groups);
    EXPECT_EQ(y.device(), dev);
    const cg::TensorList g = c.bias ? cg::autograd::grad({y}, {x, w, b}, {get(p + "dy").to(dev)})
                                    : cg::autograd::grad({y}, {x, w}, {get(p + "dy").to(dev)});
    EXPECT_TRUE(norm_close(y, get(p + "y"), 1e-5)) << "y";
    EXPECT_TRUE(norm_close(g[0], get(p + "dx"), 1e-5)) << "dx";
    EXPECT_TRUE(norm_close(g[1], get(p + "dw"), 1e-5)) << "dw";
    if (c.bias) {
      EXPECT_TRUE(norm_close(g[2], get(p + "db"), 1e-5)) << "db";
    }
  }
}

}  // namespace

TEST(Conv2dGolden, MatchesPyTorchOnCpu) { expect_golden(kCpu); }

// ---- gradcheck (float64, CPU) ----

TEST(Conv2dGradcheck, InputWeightAndBias) {
  cg::manual_seed(105);
  const std::vector<Cfg> cases = {
      {{2, 3, 5, 4}, 2, 3, 1, 1},
      {{1, 4, 7, 6}, 4, 3, 2, 1, 1, 2, false},     // stride 2, groups 2
      {{2, 2, 6, 6}, 3, 3, 1, 2, 2},               // dilation 2
      {{1, 3, 5, 5}, 3, 3, {2, 1}, {1, 0}, 1, 3},  // depthwise
      {{2, 2, 3, 4}, 3, 1},                        // pointwise
      {{1, 2, 1, 1}, 2, 3, 1, 1},                  // 1x1 image
      {{1, 4, 6, 7}, 2, {2, 3}, {1, 2}, {1, 1}, {2, 1}, 2},
  };
  for (const Cfg& c : cases) {
    SCOPED_TRACE(c.name());
    const Inputs in = make_inputs(c, cg::DType::float64);
    cg::TensorList leaves{in.x.clone().requires_grad_(), in.w.clone().requires_grad_()};
    if (c.bias) leaves.push_back(in.b.clone().requires_grad_());
    EXPECT_EQ(
        cg::autograd::gradcheck(
            [&](const cg::TensorList& t) { return run_conv(c, t[0], t[1], c.bias ? t[2] : cg::Tensor()); },
            leaves),
        "");
  }
  // The check can fail: a convolution whose weight is detached has a wrong weight gradient.
  const Cfg c{{1, 2, 4, 4}, 2, 3};
  const Inputs in = make_inputs(c, cg::DType::float64);
  EXPECT_NE(
      cg::autograd::gradcheck(
          [&](const cg::TensorList& t) { return run_conv(c, t[0], t[1].detach(), {}) + t[1].sum() * 0.0; },
          {in.x.clone().requires_grad_(), in.w.clone().requires_grad_()}),
      "");
}

// ---- conv2d_relu: relu(conv2d(...)) fused, the same bits ----

namespace {

// What a step takes from relu(conv2d(x, w, b)), fused (conv2d_relu) or not (conv2d then relu),
// on `dev`: the output and the gradients for in.dy of the inputs in `need` (x, w, b).
cg::TensorList relu_conv_results(const Cfg& c, const Inputs& in, cg::Device dev, bool fused,
                                 std::array<bool, 3> need, std::string* node = nullptr) {
  // detach: on the CPU .to(dev) is the same tensor, whose requires_grad must not change.
  cg::TensorList leaves{in.x.to(dev).detach(), in.w.to(dev).detach(),
                        c.bias ? in.b.to(dev).detach() : cg::Tensor()},
      wrt;
  for (std::size_t i = 0; i < 3; ++i)
    if (leaves[i].defined() && need[i]) {
      leaves[i].requires_grad_();
      wrt.push_back(leaves[i]);
    }
  const cg::Tensor y =
      fused ? F::conv2d_relu(leaves[0], leaves[1], leaves[2], c.stride, c.padding, c.dilation, c.groups)
            : run_conv(c, leaves[0], leaves[1], leaves[2]).relu();
  if (node) *node = wrt.empty() ? "Conv2dReluBackward" : y.grad_fn_name();  // no grad needed: no node
  cg::TensorList out{y.detach()};
  if (!wrt.empty())
    for (const cg::Tensor& g : cg::autograd::grad({y}, wrt, {in.dy.to(dev)})) out.push_back(g);
  return out;
}

void expect_relu_fusion_changes_nothing(const Cfg& c, const Inputs& in, cg::Device dev) {
  SCOPED_TRACE(c.name());
  for (const std::array<bool, 3> need :
       {std::array<bool, 3>{true, true, true}, std::array<bool, 3>{true, false, false},
        std::array<bool, 3>{false, true, true}, std::array<bool, 3>{false, false, true},
        std::array<bool, 3>{false, true, false}}) {
    SCOPED_TRACE(cg::detail::cat("needs x ", need[0], " w ", need[1], " b ", need[2]));
    std::string node;
    const cg::TensorList fused = relu_conv_results(c, in, dev, true, need, &node);
    const cg::TensorList plain = relu_conv_results(c, in, dev, false, need);
    EXPECT_EQ(node, "Conv2dReluBackward");
    ASSERT_EQ(fused.size(), plain.size());
    for (std::size_t i = 0; i < fused.size(); ++i)
      EXPECT_TRUE(cg::testing::all_equal(fused[i].cpu(), plain[i].cpu())) << "result " << i;
  }
}

}  // namespace

TEST(Conv2d, ReluFusedIsConvThenReluBitForBit) {
  cg::manual_seed(130);
  for (const cg::DType dtype : {cg::DType::float32, cg::DType::float64})
    for (const Cfg& c : configs()) {
      Inputs in = make_inputs(c, dtype);
      expect_relu_fusion_changes_nothing(c, in, kCpu);
    }
  // NaN: a NaN input makes NaN outputs, which the ReLU keeps and whose gradient passes.
  const Cfg c{{2, 2, 5, 5}, 3, 3, 1, 1};
  Inputs in = make_inputs(c);
  std::vector<float> xv = in.x.to_vector<float>();
  xv[7] = NAN;
  in.x = cg::from_vector(xv, c.x);
  expect_relu_fusion_changes_nothing(c, in, kCpu);
  // The ReLU happened: no negative output, some zeros.
  const std::vector<float> y = F::conv2d_relu(in.x, in.w, in.b, c.stride, c.padding).to_vector<float>();
  EXPECT_GT(std::count_if(y.begin(), y.end(), [](float v) { return std::isnan(v); }), 0);
  EXPECT_EQ(std::count_if(y.begin(), y.end(), [](float v) { return v < 0.f; }), 0);
  EXPECT_GT(std::count(y.begin(), y.end(), 0.f), 0);
}

TEST(Conv2d, ReluFusedEmptyBatchAndErrors) {
  const Cfg c{{0, 3, 5, 5}, 4, 3, 1, 1};
  const Inputs in = make_inputs(c);
  expect_relu_fusion_changes_nothing(c, in, kCpu);
  const std::string m = message_of([&] { F::conv2d_relu(in.x, in.w.reshape({4, 27}), in.b); });
  EXPECT_NE(m.find("conv2d"), std::string::npos) << m;
  EXPECT_NE(m.find("4-D weight"), std::string::npos) << m;
}

TEST(Conv2dGradcheck, ReluFused) {
  cg::manual_seed(131);
  for (const Cfg& c :
       {Cfg{{2, 3, 5, 4}, 2, 3, 1, 1}, Cfg{{1, 4, 7, 6}, 4, 3, 2, 1, 1, 2, false}, Cfg{{2, 2, 3, 4}, 3, 1}}) {
    SCOPED_TRACE(c.name());
    const Inputs in = make_inputs(c, cg::DType::float64);
    cg::TensorList leaves{in.x.clone().requires_grad_(), in.w.clone().requires_grad_()};
    if (c.bias) leaves.push_back(in.b.clone().requires_grad_());
    EXPECT_EQ(cg::autograd::gradcheck(
                  [&](const cg::TensorList& t) {
                    return F::conv2d_relu(t[0], t[1], c.bias ? t[2] : cg::Tensor(), c.stride, c.padding,
                                          c.dilation, c.groups);
                  },
                  leaves),
              "");
  }
}

// ---- GPU: cuDNN against the float64 CPU reference ----

namespace {

enum class Out { y, dx, dw, db };

// inputs {x, w, b, dy}; the requested output of the convolution, all inputs requiring grad.
cg::Tensor conv_out(const Cfg& c, const cg::TensorList& t, Out out) {
  const cg::Tensor x = t[0].detach().requires_grad_(), w = t[1].detach().requires_grad_();
  const cg::Tensor b = t[2].defined() ? t[2].detach().requires_grad_() : cg::Tensor();
  const cg::Tensor y = run_conv(c, x, w, b);
  if (out == Out::y) return y;
  const cg::Tensor& wrt = out == Out::dx ? x : out == Out::dw ? w : b;
  return cg::autograd::grad({y}, {wrt}, {t[3]})[0];
}

// Terms summed into one element of `out`: a window of the input for y and dx, every output
// position of the batch for dw and db.
double reduction_length(const Cfg& c, Out out) {
  const double window = static_cast<double>(c.k.h * c.k.w);
  switch (out) {
    case Out::y: return window * static_cast<double>(c.x[1] / c.groups);
    case Out::dx: return window * static_cast<double>(c.c_out / c.groups);
    default: return static_cast<double>(c.x[0] * c.out_h() * c.out_w());
  }
}

// Sets cuda::set_direct_convolutions for its lifetime and restores the previous value.
class DirectConvolutions {
 public:
  explicit DirectConvolutions(bool on) : previous_(cg::cuda::set_direct_convolutions(on)) {}
  ~DirectConvolutions() { cg::cuda::set_direct_convolutions(previous_); }
  DirectConvolutions(const DirectConvolutions&) = delete;
  DirectConvolutions& operator=(const DirectConvolutions&) = delete;

 private:
  bool previous_;
};

// Outputs are sums of many products: compared by relative norm against float64, within
// 1e-5 or 4·sqrt(K)·2^-24 for a sum of K float32 terms, whichever is larger (rounding errors
// grow like sqrt(K)). Seen on an H100 with cuDNN 9.14, 2026-11-26: 1.08e-5 for the weight
// gradient of ResNet-18's layer1 at batch 16 (K = 50176, bound 5.3e-5); a wrong index or a
// missed term gives errors of order 1.
void expect_parity(const Cfg& c) {
  SCOPED_TRACE(c.name());
  const Inputs in = make_inputs(c);
  for (const Out out : {Out::y, Out::dx, Out::dw, Out::db}) {
    if (out == Out::db && !c.bias) continue;
    const double tol = std::max(1e-5, 4.0 * std::sqrt(reduction_length(c, out)) * std::ldexp(1.0, -24));
    EXPECT_TRUE(cg::testing::cuda_matches_cpu64_norm(
        [&](const cg::TensorList& t) { return conv_out(c, t, out); }, in.list(), tol))
        << "output " << static_cast<int>(out) << ", tolerance " << tol;
  }
}

}  // namespace

TEST(Conv2dGPU, MatchesCpuAtAwkwardShapes) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(111);
  // With cugrad's direct kernels for the shapes with few input taps (the default), then cuDNN
  // for every shape.
  for (const bool direct : {true, false}) {
    SCOPED_TRACE(direct ? "direct kernels on" : "cuDNN only");
    DirectConvolutions guard(direct);
    for (const Cfg& c : configs()) expect_parity(c);
  }
  expect_parity({{129, 16, 13, 13}, 16, 3, 1, 1});            // large batch, odd images
  expect_parity({{7, 32, 9, 9}, 32, 3, 1, 1, 1, 32, false});  // depthwise, no bias
  expect_parity({{3, 5, 17, 1}, 7, {3, 1}, {2, 1}, {1, 0}});  // one-column images
}

TEST(Conv2dGPU, ResNetShapesSpreadOverTheWholeGpu) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(112);
  expect_parity({{8, 3, 224, 224}, 64, 7, 2, 3, 1, 1, false});  // ResNet-18 stem
  expect_parity({{16, 64, 56, 56}, 64, 3, 1, 1, 1, 1, false});  // layer1
  expect_parity({{16, 128, 28, 28}, 256, 3, 2, 1, 1, 1, false});
  expect_parity({{16, 128, 28, 28}, 256, 1, 2, 0, 1, 1, false});  // downsample
}

TEST(Conv2dGPU, GoldenFile) {
  CUGRAD_REQUIRE_GPU();
  expect_golden(kCuda);
}

TEST(Conv2dGPU, BackwardComputesOnlyTheGradientsNeeded) {
  CUGRAD_REQUIRE_GPU();
  expect_pruning(kCuda);
}

TEST(Conv2dGPU, AlgorithmsAreChosenOncePerShape) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(113);
  const cg::Tensor x = cg::randn({3, 5, 11, 13}, kCuda).requires_grad_(),
                   w = cg::randn({7, 5, 3, 3}, kCuda).requires_grad_();
  F::conv2d(x, w, {}, 1, 1).sum().backward();
  const std::size_t after_first = cg::cuda::conv2d_algorithm_cache_size();
  for (int i = 0; i < 3; ++i) F::conv2d(x, w, {}, 1, 1).sum().backward();
  EXPECT_EQ(cg::cuda::conv2d_algorithm_cache_size(), after_first);
  // A new geometry adds one entry per direction run (forward, data, filter).
  F::conv2d(x, w, {}, 2, 1).sum().backward();
  EXPECT_EQ(cg::cuda::conv2d_algorithm_cache_size(), after_first + 3);
}

TEST(Conv2d, DeterministicConvolutionsAreOffUnlessAskedFor) {
  EXPECT_FALSE(cg::cudnn_deterministic());  // CUGRAD_CUDNN_DETERMINISTIC is not set for the tests
  {
    cg::testing::DeterministicConvolutions on;
    EXPECT_TRUE(cg::cudnn_deterministic());
  }
  EXPECT_FALSE(cg::cudnn_deterministic());
  cg::set_cudnn_deterministic(true);
  EXPECT_TRUE(cg::cudnn_deterministic());
  cg::set_cudnn_deterministic(false);
  EXPECT_FALSE(cg::cudnn_deterministic());
}

// The bias gradient's split of the work (host arithmetic, no GPU): whole images per block, about
// 8 blocks per multiprocessor, at least 4096 elements per split block, a workspace only when split.
TEST(Conv2d, ChannelSumPlans) {
  const auto plan = [](std::int64_t n, std::int64_t c, std::int64_t hw, int sms) {
    return cg::cuda::channel_sum_plan(n, c, hw, sms);
  };
  const cg::cuda::ChannelSumPlan conv2 = plan(256, 64, 576, 132);  // the 2-conv CNN's conv2
  EXPECT_EQ(conv2.splits, 17);                                     // ceil(1056 / 64)
  EXPECT_EQ(conv2.workspace_bytes, 64u * 17u * sizeof(float));
  EXPECT_EQ(plan(256, 32, 676, 132).splits, 33);  // conv1
  EXPECT_EQ(plan(3, 5, 7, 132).splits, 1);        // 63 elements: one block per channel
  EXPECT_EQ(plan(3, 5, 7, 132).workspace_bytes, 0u);
  EXPECT_EQ(plan(4, 1, 1 << 20, 132).splits, 4);  // never more splits than images
  EXPECT_EQ(plan(100000, 1, 4096, 132).splits, 1056);
  EXPECT_EQ(plan(1 << 20, 1, 4096, 1 << 20).splits, 65535);  // gridDim.y
  EXPECT_EQ(plan(64, 2048, 49, 132).splits, 1);              // many channels fill the GPU alone
  EXPECT_THROW(plan(0, 5, 7, 132), cg::Error);
  EXPECT_THROW(plan(3, 0, 7, 132), cg::Error);
}

TEST(Conv2d, TimedSearchIsOffUnlessAskedFor) {
  EXPECT_FALSE(cg::cudnn_benchmark());  // CUGRAD_CUDNN_BENCHMARK is not set for the tests
  cg::set_cudnn_benchmark(true);
  EXPECT_TRUE(cg::cudnn_benchmark());
  cg::set_cudnn_benchmark(false);
  EXPECT_FALSE(cg::cudnn_benchmark());
}

// set_cudnn_benchmark(true): cuDNN times the algorithms once per shape and direction (new
// cache entries, none on repeats), and the results match the heuristics' choice.
TEST(Conv2dGPU, TimedSearchIsOptInChosenOncePerShapeAndAgrees) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(118);
  ASSERT_FALSE(cg::cudnn_benchmark());
  const cg::Tensor x = cg::randn({4, 6, 15, 9}, kCuda), w = cg::randn({5, 6, 3, 3}, kCuda),
                   dy = cg::randn({4, 5, 8, 5}, kCuda);
  const auto run = [&] {
    const cg::Tensor xg = x.detach().requires_grad_(), wg = w.detach().requires_grad_();
    const cg::Tensor y = F::conv2d(xg, wg, {}, 2, 1);
    const cg::TensorList g = cg::autograd::grad({y}, {xg, wg}, {dy});
    return cg::TensorList{y.detach(), g[0], g[1]};
  };
  const cg::CudnnSearchStats stats_before = cg::cudnn_search_stats();
  const cg::cuda::CudnnCallStats calls_before = cg::cuda::cudnn_call_stats();
  const cg::TensorList heuristic = run();
  EXPECT_EQ(cg::cudnn_search_stats().searches, stats_before.searches);  // the heuristics search nothing
  EXPECT_EQ(cg::cuda::cudnn_call_stats().calls, calls_before.calls + 3);  // forward, data, filter
  EXPECT_GT(cg::cuda::cudnn_call_stats().seconds, calls_before.seconds);
  {  // the split: descriptors, workspaces and the calls are parts of the whole
    const cg::cuda::CudnnCallStats now = cg::cuda::cudnn_call_stats();
    const double run = now.run_seconds - calls_before.run_seconds,
                 parts = run + (now.descriptor_seconds - calls_before.descriptor_seconds) +
                         (now.workspace_seconds - calls_before.workspace_seconds);
    EXPECT_GT(run, 0.0);
    EXPECT_LE(parts, now.seconds - calls_before.seconds);
  }
  const std::size_t before = cg::cuda::conv2d_algorithm_cache_size();
  cg::set_cudnn_benchmark(true);
  cg::TensorList searched, again;
  try {
    searched = run();
    const std::size_t after = cg::cuda::conv2d_algorithm_cache_size();
    const cg::CudnnSearchStats stats_after = cg::cudnn_search_stats();
    again = run();
    EXPECT_EQ(after, before + 3);  // forward, data and filter, searched once each
    EXPECT_EQ(cg::cuda::conv2d_algorithm_cache_size(), after);
    EXPECT_EQ(stats_after.searches, stats_before.searches + 3);
    EXPECT_GT(stats_after.seconds, stats_before.seconds);
    EXPECT_EQ(cg::cudnn_search_stats().searches, stats_after.searches);  // repeats: no search
    EXPECT_EQ(cg::cudnn_search_stats().seconds, stats_after.seconds);
  } catch (...) {
    cg::set_cudnn_benchmark(false);
    throw;
  }
  cg::set_cudnn_benchmark(false);
  for (std::size_t i = 0; i < heuristic.size(); ++i) {
    EXPECT_TRUE(all_close(searched[i], heuristic[i], {1e-4, 1e-4})) << "output " << i;
    EXPECT_TRUE(all_close(again[i], searched[i], {1e-4, 1e-4})) << "output " << i;
  }
}

// The bias gradient's kernel (cuda/channel_sum.cu) alone against the host, at awkward sizes:
// planes of 1 and of odd sizes (scalar loads), multiples of 4 (float4 loads), a misaligned tensor
// (scalar loads again), one channel over many splits, many channels; the output and the workspace
// poisoned with NaN first. The values are small integers, so every float32 partial sum is exact
// (below 2^24) and the sums must equal the host's exactly: a missed or doubled element shows.
// A second run gives the same bits.
TEST(Conv2dGPU, ChannelSumMatchesTheHostAtAwkwardSizes) {
  CUGRAD_REQUIRE_GPU();
  const cg::Stream stream = cg::Stream::current(kCuda);
  const int sms = cg::runtime::device_properties(0).multiProcessorCount;
  struct Size {
    std::int64_t n, c, hw, offset;  // offset: floats before the tensor in its buffer
  };
  std::uint32_t state = 12345u;
  for (const Size z : {Size{1, 1, 1, 0}, Size{3, 5, 7, 0}, Size{2, 3, 4, 0}, Size{5, 7, 676, 0},
                       Size{33, 9, 576, 1}, Size{129, 3, 100, 0}, Size{4096, 1, 36, 0}, Size{64, 513, 9, 0},
                       Size{256, 2, 1, 3}, Size{7, 1, 100003, 0}, Size{256, 64, 576, 0}}) {
    SCOPED_TRACE(cg::detail::cat("n ", z.n, " c ", z.c, " hw ", z.hw, " offset ", z.offset));
    const std::int64_t numel = z.n * z.c * z.hw;
    std::vector<float> hv(static_cast<std::size_t>(numel + z.offset));
    std::vector<double> want(static_cast<std::size_t>(z.c), 0.0);
    for (std::int64_t i = 0; i < numel + z.offset; ++i) {
      state = state * 1664525u + 1013904223u;
      hv[static_cast<std::size_t>(i)] = static_cast<float>(static_cast<int>(state >> 28) - 7);  // -7..8
      if (i >= z.offset) want[static_cast<std::size_t>(((i - z.offset) / z.hw) % z.c)] += hv[i];
    }
    const cg::Tensor dev_buffer = cg::from_vector(hv, {numel + z.offset}).to(kCuda);
    const float* x = dev_buffer.data_ptr<float>() + z.offset;
    const cg::cuda::ChannelSumPlan plan = cg::cuda::channel_sum_plan(z.n, z.c, z.hw, sms);
    const cg::Tensor ws = cg::full(
        {std::max<std::int64_t>(1, static_cast<std::int64_t>(plan.workspace_bytes / 4))}, NAN, kCuda);
    cg::TensorList outs;
    for (int run = 0; run < 2; ++run) {
      const cg::Tensor out = cg::full({z.c}, NAN, kCuda);
      cg::cuda::channel_sum_f32(x, out.data_ptr<float>(), z.n, z.c, z.hw, plan, ws.data_ptr<float>(),
                                cg::runtime::cuda_stream(stream));
      outs.push_back(out.cpu());
    }
    const std::vector<float> got = outs[0].to_vector<float>();
    for (std::int64_t ch = 0; ch < z.c; ++ch)
      ASSERT_EQ(got[static_cast<std::size_t>(ch)], want[static_cast<std::size_t>(ch)]) << "channel " << ch;
    EXPECT_TRUE(cg::testing::all_equal(outs[0], outs[1])) << "two runs differ";
  }
}

// The forward's bias pass (channel_bias_f32, with and without the ReLU, without a bias) and the
// fused ReLU backward's channel sums (channel_sum_relu_grad_f32) against the host, exactly:
// integer-valued data, so every sum is exact in float32 whatever the order; NaN outputs and
// NaN ReLU outputs included; misaligned views take the scalar path; outputs poisoned with NaN.
TEST(Conv2dGPU, ChannelBiasAndReluGradMatchTheHost) {
  CUGRAD_REQUIRE_GPU();
  const cg::Stream stream = cg::Stream::current(kCuda);
  void* cs = cg::runtime::cuda_stream(stream);
  const int sms = cg::runtime::device_properties(0).multiProcessorCount;
  struct Size {
    std::int64_t n, c, hw, offset;
  };
  std::uint32_t state = 777u;
  const auto next = [&] {
    state = state * 1664525u + 1013904223u;
    return static_cast<float>(static_cast<int>(state >> 28) - 7);  // -7..8
  };
  for (const Size z : {Size{1, 1, 1, 0}, Size{3, 5, 7, 0}, Size{2, 3, 4, 0}, Size{5, 7, 676, 0},
                       Size{33, 9, 576, 1}, Size{129, 3, 100, 0}, Size{64, 513, 9, 0}, Size{256, 2, 1, 3},
                       Size{7, 1, 100003, 0}, Size{16, 32, 676, 2}, Size{16, 64, 576, 0}}) {
    SCOPED_TRACE(cg::detail::cat("n ", z.n, " c ", z.c, " hw ", z.hw, " offset ", z.offset));
    const std::int64_t numel = z.n * z.c * z.hw;
    const auto total = static_cast<std::size_t>(numel + z.offset);
    std::vector<float> yv(total), dyv(total), bv(static_cast<std::size_t>(z.c));
    for (float& v : bv) v = next();
    for (std::size_t i = 0; i < total; ++i) {
      yv[i] = next();
      dyv[i] = next();
    }
    yv[total - 1] = NAN;                       // a NaN output: kept by the ReLU, passes its gradient
    if (total > 2) dyv[total / 2] = INFINITY;  // masked or passed as it is
    const auto channel_of = [&](std::size_t i) {
      return static_cast<std::size_t>(((i - z.offset) / z.hw) % z.c);
    };

    // Forward: y + b, relu(y + b), relu(y).
    for (const int mode : {0, 1, 2}) {
      SCOPED_TRACE(mode == 0 ? "bias" : mode == 1 ? "bias and relu" : "relu only");
      const bool relu = mode != 0, with_bias = mode != 2;
      const cg::Tensor buf = cg::from_vector(yv, {numel + z.offset}).to(kCuda);
      const cg::Tensor bias = cg::from_vector(bv, {z.c}).to(kCuda);
      cg::cuda::channel_bias_f32(buf.data_ptr<float>() + z.offset,
                                 with_bias ? bias.data_ptr<float>() : nullptr, z.n, z.c, z.hw, relu, cs);
      const std::vector<float> got = buf.cpu().to_vector<float>();
      for (std::size_t i = 0; i < total; ++i) {
        float want = yv[i];
        if (i >= static_cast<std::size_t>(z.offset)) {
          if (with_bias) want += bv[channel_of(i)];
          if (relu && !std::isnan(want)) want = want > 0.f ? want : 0.f;
        }
        if (std::isnan(want)) {
          ASSERT_TRUE(std::isnan(got[i])) << "element " << i;
        } else {
          ASSERT_EQ(got[i], want) << "element " << i;
        }
      }
    }

    // Backward: dz = threshold_backward(dy, y), sums of dz per channel; two runs bit for bit.
    std::vector<float> want_dz(static_cast<std::size_t>(numel));
    std::vector<double> want_sum(static_cast<std::size_t>(z.c), 0.0);
    for (std::size_t i = static_cast<std::size_t>(z.offset); i < total; ++i) {
      const float dz = yv[i] <= 0.f ? 0.f : dyv[i];
      want_dz[i - z.offset] = dz;
      want_sum[channel_of(i)] += dz;
    }
    const cg::Tensor ydev = cg::from_vector(yv, {numel + z.offset}).to(kCuda);
    const cg::Tensor dydev = cg::from_vector(dyv, {numel + z.offset}).to(kCuda);
    const cg::cuda::ChannelSumPlan plan = cg::cuda::channel_sum_plan(z.n, z.c, z.hw, sms);
    const cg::Tensor ws = cg::full(
        {std::max<std::int64_t>(1, static_cast<std::int64_t>(plan.workspace_bytes / 4))}, NAN, kCuda);
    cg::TensorList sums, dzs;
    for (int run = 0; run < 2; ++run) {
      const cg::Tensor dz = cg::full({numel + z.offset}, NAN, kCuda);
      const cg::Tensor out = cg::full({z.c}, NAN, kCuda);
      cg::cuda::channel_sum_relu_grad_f32(dydev.data_ptr<float>() + z.offset,
                                          ydev.data_ptr<float>() + z.offset, dz.data_ptr<float>() + z.offset,
                                          out.data_ptr<float>(), z.n, z.c, z.hw, plan, ws.data_ptr<float>(),
                                          cs);
      sums.push_back(out.cpu());
      dzs.push_back(dz.cpu());
    }
    const std::vector<float> got_dz = dzs[0].to_vector<float>(), got_sum = sums[0].to_vector<float>();
    for (std::int64_t i = 0; i < z.offset; ++i) ASSERT_TRUE(std::isnan(got_dz[static_cast<std::size_t>(i)]));
    for (std::int64_t i = 0; i < numel; ++i)
      ASSERT_EQ(got_dz[static_cast<std::size_t>(i + z.offset)], want_dz[static_cast<std::size_t>(i)])
          << "dz element " << i;
    for (std::int64_t ch = 0; ch < z.c; ++ch) {
      const auto k = static_cast<std::size_t>(ch);
      if (std::isinf(want_sum[k]))
        ASSERT_EQ(got_sum[k], static_cast<float>(want_sum[k])) << "channel " << ch;
      else
        ASSERT_EQ(got_sum[k], want_sum[k]) << "channel " << ch;
    }
    EXPECT_TRUE(cg::testing::all_equal(sums[0], sums[1])) << "two runs differ";
    EXPECT_TRUE(cg::testing::all_equal(dzs[0], dzs[1])) << "two runs differ";
  }
}

// conv2d_relu on CUDA: the same bits as conv2d then relu (deterministic algorithms, so the two
// runs of cuDNN agree), at awkward shapes and the 2-conv CNN's, and close to the float64 CPU.
TEST(Conv2dGPU, ReluFusedIsConvThenReluBitForBit) {
  CUGRAD_REQUIRE_GPU();
  cg::testing::DeterministicConvolutions deterministic;
  cg::manual_seed(132);
  std::vector<Cfg> cases = configs();
  cases.push_back({{16, 1, 28, 28}, 32, 3});   // the 2-conv CNN's conv1 (676 pixels: float4 path)
  cases.push_back({{16, 32, 26, 26}, 64, 3});  // its conv2
  cases.push_back({{5, 3, 9, 9}, 7, 3});       // 49 pixels: scalar path
  for (const Cfg& c : cases) {
    const Inputs in = make_inputs(c);
    expect_relu_fusion_changes_nothing(c, in, kCuda);
    const cg::TensorList gpu = relu_conv_results(c, in, kCuda, true, {true, true, true});
    Inputs in64 = in;
    for (cg::Tensor* t : {&in64.x, &in64.w, &in64.b, &in64.dy})
      if (t->defined()) *t = t->to(cg::DType::float64);
    const cg::TensorList cpu = relu_conv_results(c, in64, kCpu, true, {true, true, true});
    ASSERT_EQ(gpu.size(), cpu.size());
    for (std::size_t i = 0; i < gpu.size(); ++i)
      EXPECT_TRUE(norm_close(gpu[i], cpu[i], 1e-4)) << c.name() << " result " << i;
  }
}

// The direct kernels (cuda/conv_direct.h): which shapes they take, and at awkward shapes with
// few input taps (1 to 32: channels 1-3, kernels 1x1 to 5x5, strides, padding, dilation, odd
// images, one pixel, batches that split the parameter sums) their output, weight and bias
// gradients against the float64 CPU reference (the data gradient is cuDNN's), the ReLU's mask
// in the parameter pass against threshold_backward then the pass, and two runs bit for bit.
TEST(Conv2d, DirectKernelsTakeConvolutionsWithFewInputTaps) {
  const auto geom = [](std::int64_t c_in, std::int64_t c_out, std::int64_t k, std::int64_t groups = 1) {
    cg::Conv2dGeometry g;
    g.n = 2;
    g.c_in = c_in;
    g.h = g.w = 28;
    g.c_out = c_out;
    g.kh = g.kw = k;
    g.groups = groups;
    g.out_h = g.out_w = 28 - k + 1;
    return g;
  };
  EXPECT_TRUE(cg::cuda::direct_conv_supported(geom(1, 32, 3)));     // the 2-conv CNN's conv1
  EXPECT_TRUE(cg::cuda::direct_conv_supported(geom(1, 64, 3)));     // the reference CNN's f.0
  EXPECT_TRUE(cg::cuda::direct_conv_supported(geom(3, 64, 3)));     // 27 taps
  EXPECT_FALSE(cg::cuda::direct_conv_supported(geom(32, 64, 3)));   // the 2-conv CNN's conv2: 288 taps
  EXPECT_FALSE(cg::cuda::direct_conv_supported(geom(3, 64, 7)));    // ResNet's stem: 147 taps
  EXPECT_FALSE(cg::cuda::direct_conv_supported(geom(2, 4, 3, 2)));  // groups
  EXPECT_FALSE(cg::cuda::direct_conv_supported(geom(1, 1024, 3)));  // 10240 weights and biases
  EXPECT_TRUE(cg::cuda::direct_conv_supported(geom(1, 512, 3)));
  const cg::cuda::DirectConvPlan p = cg::cuda::direct_conv_plan(geom(1, 32, 3), 132);
  EXPECT_GE(p.splits, 1);
  EXPECT_EQ(p.workspace_bytes, static_cast<std::size_t>(32 * p.splits * 10) * sizeof(float));
  EXPECT_TRUE(cg::cuda::direct_convolutions()) << "on by default";
  const std::string m = message_of([&] { cg::cuda::direct_conv_plan(geom(32, 64, 3), 132); });
  EXPECT_NE(m.find("direct_conv_plan"), std::string::npos) << m;
}

void expect_direct_kernels_match(bool wide_indices);

TEST(Conv2dGPU, DirectKernelsMatchTheCpuAtAwkwardShapes) { expect_direct_kernels_match(false); }

// The same with the kernels' 64-bit pixel indices (otherwise used only above 2^32 pixels).
TEST(Conv2dGPU, DirectKernelsWithWideIndicesMatchTheCpu) { expect_direct_kernels_match(true); }

void expect_direct_kernels_match(bool wide_indices) {
  CUGRAD_REQUIRE_GPU();
  DirectConvolutions on(true);
  const bool wide_before = cg::cuda::set_direct_conv_wide_indices(wide_indices);
  struct Restore {
    bool wide;
    ~Restore() { cg::cuda::set_direct_conv_wide_indices(wide); }
  } restore{wide_before};
  cg::manual_seed(140);
  const std::vector<Cfg> cases = {
      {{3, 1, 28, 28}, 32, 3},                     // the 2-conv CNN's conv1
      {{2, 1, 28, 28}, 64, 3, 1, 1, 1, 1, false},  // the reference CNN's first convolution
      {{5, 3, 9, 7}, 6, 3, 2, 1},                  // 27 taps, stride 2, padding
      {{2, 2, 11, 10}, 5, {3, 2}, {2, 1}, {2, 1}, {2, 2}},
      {{4, 1, 6, 6}, 7, 5, 1, 2},      // 25 taps, padding 2
      {{3, 1, 1, 1}, 3, 3, 1, 1},      // one pixel, mostly padding
      {{2, 4, 5, 5}, 3, 1},            // pointwise, 4 taps
      {{97, 1, 13, 13}, 16, 3, 1, 1},  // 16393 pixels: the parameter sums split
      {{1, 1, 2, 3}, 1, {2, 3}},       // one output
  };
  const int sms = cg::runtime::device_properties(0).multiProcessorCount;
  for (const Cfg& c : cases) {
    const Inputs in = make_inputs(c);
    cg::Conv2dGeometry g;
    g.n = c.x[0];
    g.c_in = c.x[1];
    g.h = c.x[2];
    g.w = c.x[3];
    g.c_out = c.c_out;
    g.kh = c.k.h;
    g.kw = c.k.w;
    g.stride_h = c.stride.h;
    g.stride_w = c.stride.w;
    g.pad_h = c.padding.h;
    g.pad_w = c.padding.w;
    g.dil_h = c.dilation.h;
    g.dil_w = c.dilation.w;
    g.out_h = c.out_h();
    g.out_w = c.out_w();
    ASSERT_TRUE(cg::cuda::direct_conv_supported(g)) << c.name();
    expect_parity(c);

    // The kernels themselves: poisoned outputs, two runs bit for bit, the mask.
    SCOPED_TRACE(c.name());
    const cg::Tensor x = in.x.to(kCuda), w = in.w.to(kCuda), dy = in.dy.to(kCuda);
    const cg::Tensor b = c.bias ? in.b.to(kCuda) : cg::Tensor();
    void* cs = cg::runtime::cuda_stream(cg::Stream::current(kCuda));
    const cg::cuda::DirectConvPlan plan = cg::cuda::direct_conv_plan(g, sms);
    const cg::Tensor ws = cg::full({static_cast<std::int64_t>(plan.workspace_bytes / 4)}, NAN, kCuda);
    cg::TensorList runs;
    for (int run = 0; run < 2; ++run) {
      const cg::Tensor y = cg::full(c.y_shape(), NAN, kCuda), dw = cg::full(c.w_shape(), NAN, kCuda),
                       db = cg::full({c.c_out}, NAN, kCuda);
      cg::cuda::direct_conv2d_forward_f32(x.data_ptr<float>(), w.data_ptr<float>(),
                                          b.defined() ? b.data_ptr<float>() : nullptr, y.data_ptr<float>(), g,
                                          true, cs);
      cg::cuda::direct_conv2d_backward_params_f32(x.data_ptr<float>(), dy.data_ptr<float>(),
                                                  y.data_ptr<float>(), dw.data_ptr<float>(),
                                                  db.data_ptr<float>(), g, plan, ws.data_ptr<float>(), cs);
      runs.push_back(y.cpu());
      runs.push_back(dw.cpu());
      runs.push_back(db.cpu());
    }
    for (std::size_t i = 0; i < 3; ++i)
      EXPECT_TRUE(cg::testing::all_equal(runs[i], runs[i + 3])) << "result " << i;
    // The ReLU forward is relu(conv2d), and the masked pass is the pass over the masked gradient.
    const cg::Tensor plain = F::conv2d(x, w, b, c.stride, c.padding, c.dilation);
    EXPECT_TRUE(cg::testing::all_equal(runs[0], plain.relu().cpu()));
    const cg::Tensor dz = cg::where(cg::le(runs[0], 0.0), cg::zeros_like(in.dy), in.dy).to(kCuda);
    const cg::Tensor dw2 = cg::full(c.w_shape(), NAN, kCuda), db2 = cg::full({c.c_out}, NAN, kCuda);
    cg::cuda::direct_conv2d_backward_params_f32(x.data_ptr<float>(), dz.data_ptr<float>(), nullptr,
                                                dw2.data_ptr<float>(), db2.data_ptr<float>(), g, plan,
                                                ws.data_ptr<float>(), cs);
    EXPECT_TRUE(cg::testing::all_equal(runs[1], dw2.cpu())) << "masked weight gradient";
    EXPECT_TRUE(cg::testing::all_equal(runs[2], db2.cpu())) << "masked bias gradient";
    // Against float64: the masked parameter gradients of relu(conv2d).
    const cg::Tensor dz64 = dz.cpu().to(cg::DType::float64);
    const cg::Tensor x64 = in.x.to(cg::DType::float64).requires_grad_(),
                     w64 = in.w.to(cg::DType::float64).requires_grad_();
    cg::TensorList wrt{x64, w64};
    cg::Tensor b64;
    if (c.bias) {
      b64 = in.b.to(cg::DType::float64).requires_grad_();
      wrt.push_back(b64);
    }
    const cg::TensorList ref = cg::autograd::grad({run_conv(c, x64, w64, b64)}, wrt, {dz64});
    EXPECT_TRUE(norm_close(runs[1], ref[1], 1e-5)) << "weight gradient";
    if (c.bias) {
      EXPECT_TRUE(norm_close(runs[2], ref[2], 1e-5)) << "bias gradient";
    }
  }
}

// set_cudnn_deterministic(true): only algorithms cuDNN reports deterministic, in their own
// cache entries; the input and weight gradients of the 2-conv CNN's conv2 (where the heuristics
// picked wgrad_alg0, whose bits vary, on an H100) are then the same bits on every run.
TEST(Conv2dGPU, DeterministicConvolutionsRepeatBitForBit) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(120);
  const cg::Tensor x = cg::randn({64, 32, 26, 26}, kCuda), w = cg::randn({64, 32, 3, 3}, kCuda) * 0.05f,
                   b = cg::randn({64}, kCuda), dy = cg::randn({64, 64, 24, 24}, kCuda);
  const auto run = [&] {
    const cg::Tensor xg = x.detach().requires_grad_(), wg = w.detach().requires_grad_(),
                     bg = b.detach().requires_grad_();
    const cg::Tensor y = F::conv2d(xg, wg, bg);
    cg::TensorList g = cg::autograd::grad({y}, {xg, wg, bg}, {dy});
    g.push_back(y.detach());
    return g;
  };
  const cg::TensorList loose = run();
  const std::size_t before = cg::cuda::conv2d_algorithm_cache_size();
  cg::testing::DeterministicConvolutions deterministic;
  const cg::TensorList first = run();
  EXPECT_EQ(cg::cuda::conv2d_algorithm_cache_size(), before + 3);  // forward, data, filter: own entries
  for (int i = 0; i < 3; ++i) {
    const cg::TensorList again = run();
    for (std::size_t k = 0; k < first.size(); ++k)
      EXPECT_TRUE(cg::testing::all_equal(again[k].cpu(), first[k].cpu())) << "run " << i << " output " << k;
  }
  for (std::size_t k = 0; k < first.size(); ++k)
    EXPECT_TRUE(norm_close(first[k], loose[k], 1e-5)) << "output " << k;
}

TEST(Conv2dGPU, Tf32IsOptInAndStaysClose) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(114);
  const Cfg c{{8, 64, 20, 20}, 64, 3, 1, 1};
  const Inputs in = make_inputs(c);
  const Ref ref = loop_conv(c, in);
  ASSERT_FALSE(cg::allow_tf32());
  const std::size_t before = cg::cuda::conv2d_algorithm_cache_size();
  cg::set_allow_tf32(true);
  cg::Tensor y;
  try {
    y = run_conv(c, in.x.cuda(), in.w.cuda(), in.b.cuda());
  } catch (...) {
    cg::set_allow_tf32(false);
    throw;
  }
  cg::set_allow_tf32(false);
  EXPECT_TRUE(norm_close(y, ref.y, 1e-2));                     // TF32 keeps 10 mantissa bits
  EXPECT_GT(cg::cuda::conv2d_algorithm_cache_size(), before);  // its own cache entry
  EXPECT_TRUE(norm_close(run_conv(c, in.x.cuda(), in.w.cuda(), in.b.cuda()), ref.y, 1e-5));  // strict again
}

// ---- cuDNN's graph API (cuda/conv_graph.h), opt-in ----

namespace {

// Sets cuda::set_graph_convolutions for its lifetime and restores the previous value.
class GraphConvolutions {
 public:
  explicit GraphConvolutions(bool on) : previous_(cg::cuda::set_graph_convolutions(on)) {}
  ~GraphConvolutions() { cg::cuda::set_graph_convolutions(previous_); }
  GraphConvolutions(const GraphConvolutions&) = delete;
  GraphConvolutions& operator=(const GraphConvolutions&) = delete;

 private:
  bool previous_;
};

bool on_emulator() {
  return std::string(cg::runtime::device_properties(0).name).find("emulator") != std::string::npos;
}

}  // namespace

TEST(Conv2d, GraphConvolutionsAreOffUnlessAskedFor) {
  EXPECT_FALSE(cg::cuda::graph_convolutions());  // CUGRAD_CUDNN_GRAPH is not set for the tests
  {
    GraphConvolutions on(true);
    EXPECT_TRUE(cg::cuda::graph_convolutions());
  }
  EXPECT_FALSE(cg::cuda::graph_convolutions());
}

// Every direction through cached execution plans, against float64 at the strict-float32
// tolerance (a tensor-core engine, TF32, would miss it by orders of magnitude): plans are built
// once per shape and direction, later calls only execute.
TEST(Conv2dGPU, GraphApiMatchesCpuAtAwkwardShapes) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(131);
  DirectConvolutions direct(false);  // every convolution through cuDNN
  GraphConvolutions graph(true);
  const cg::cuda::GraphConvStats before = cg::cuda::graph_conv_stats();
  for (const Cfg& c : configs()) expect_parity(c);
  expect_parity({{129, 16, 13, 13}, 16, 3, 1, 1});            // large batch, odd images
  expect_parity({{7, 32, 9, 9}, 32, 3, 1, 1, 1, 32, false});  // depthwise, no bias
  expect_parity({{3, 5, 17, 1}, 7, {3, 1}, {2, 1}, {1, 0}});  // one-column images
  const cg::cuda::GraphConvStats after = cg::cuda::graph_conv_stats();
  EXPECT_GT(after.calls, before.calls);
  EXPECT_GT(after.plans, before.plans);
  // The same shape again: executes only.
  const Cfg c{{4, 6, 15, 9}, 5, 3, 2, 1};
  const Inputs in = make_inputs(c);
  const auto step = [&] {
    const cg::Tensor x = in.x.cuda().requires_grad_(), w = in.w.cuda().requires_grad_();
    const cg::Tensor y = run_conv(c, x, w, in.b.cuda());
    return cg::autograd::grad({y}, {x, w}, {in.dy.cuda()});
  };
  step();
  const cg::cuda::GraphConvStats warm = cg::cuda::graph_conv_stats();
  const cg::TensorList g = step();
  const cg::cuda::GraphConvStats again = cg::cuda::graph_conv_stats();
  EXPECT_EQ(again.plans, warm.plans);
  EXPECT_EQ(again.calls, warm.calls + 3);  // forward, data, filter
  const Ref ref = loop_conv(c, in);
  EXPECT_TRUE(norm_close(g[0], ref.dx, 1e-5));
  EXPECT_TRUE(norm_close(g[1], ref.dw, 1e-5));
}

// With deterministic convolutions the graph path keeps only engines without cuDNN's
// NONDETERMINISTIC note: the same bits on every run.
TEST(Conv2dGPU, GraphApiDeterministicRepeatsBitForBit) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(132);
  DirectConvolutions direct(false);
  GraphConvolutions graph(true);
  cg::testing::DeterministicConvolutions deterministic;
  const cg::Tensor x = cg::randn({16, 32, 26, 26}, kCuda), w = cg::randn({64, 32, 3, 3}, kCuda) * 0.05f,
                   dy = cg::randn({16, 64, 24, 24}, kCuda);
  const auto run = [&] {
    const cg::Tensor xg = x.detach().requires_grad_(), wg = w.detach().requires_grad_();
    const cg::Tensor y = F::conv2d(xg, wg, {});
    cg::TensorList g = cg::autograd::grad({y}, {xg, wg}, {dy});
    g.push_back(y.detach());
    return g;
  };
  const cg::TensorList first = run();
  for (int i = 0; i < 3; ++i) {
    const cg::TensorList again = run();
    for (std::size_t k = 0; k < first.size(); ++k)
      EXPECT_TRUE(cg::testing::all_equal(again[k].cpu(), first[k].cpu())) << "run " << i << " output " << k;
  }
}

// The timed search of the graph path runs candidates on scratch outputs: the results are right
// on the first call (no candidate's output left behind, none accumulated into a real output), it
// is counted in cudnn_search_stats, and happens once per shape.
TEST(Conv2dGPU, GraphApiTimedSearch) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(133);
  DirectConvolutions direct(false);
  GraphConvolutions graph(true);
  ASSERT_FALSE(cg::cudnn_benchmark());
  const Cfg c{{5, 8, 17, 11}, 12, 3, 1, 1};
  const Inputs in = make_inputs(c);
  const Ref ref = loop_conv(c, in);
  const auto step = [&] {
    const cg::Tensor x = in.x.cuda().requires_grad_(), w = in.w.cuda().requires_grad_();
    const cg::Tensor y = run_conv(c, x, w, in.b.cuda());
    cg::TensorList g = cg::autograd::grad({y}, {x, w}, {in.dy.cuda()});
    g.push_back(y.detach());
    return g;
  };
  cg::set_cudnn_benchmark(true);
  cg::TensorList first, second;
  cg::CudnnSearchStats searched{}, stats_before = cg::cudnn_search_stats();
  const cg::cuda::GraphConvStats plans_before = cg::cuda::graph_conv_stats();
  cg::cuda::GraphConvStats plans_after{};
  try {
    first = step();
    searched = cg::cudnn_search_stats();
    plans_after = cg::cuda::graph_conv_stats();
    second = step();
  } catch (...) {
    cg::set_cudnn_benchmark(false);
    throw;
  }
  cg::set_cudnn_benchmark(false);
  EXPECT_GE(searched.searches, stats_before.searches + (on_emulator() ? 3 : 0));  // the emulator: 2 qualify
  EXPECT_EQ(cg::cudnn_search_stats().searches, searched.searches);                // once per shape
  // The emulator's graph has 5 engines: 0 (tensor cores) and 1 (compiled at run time) do not
  // qualify; 2 and 3 come from the heuristics, 4 only from the search over every engine.
  if (on_emulator()) {
    EXPECT_EQ(plans_after.plans - plans_before.plans, 9u);  // 3 candidates x 3 directions
  }
  int searched_lines = 0;
  for (const std::string& line : cg::cuda::graph_conv_choices())
    if (line.find("[search]") != std::string::npos && line.find("ms in the search") != std::string::npos)
      ++searched_lines;
  EXPECT_GE(searched_lines, 3);
  for (const cg::TensorList& r : {first, second}) {
    EXPECT_TRUE(norm_close(r[2], ref.y, 1e-5));
    EXPECT_TRUE(norm_close(r[0], ref.dx, 1e-5));
    EXPECT_TRUE(norm_close(r[1], ref.dw, 1e-5));
  }
}

// Where cuDNN's graph API has no engine (the emulator's CUGRAD_EMU_CUDNN_GRAPH=0; on a GPU every
// shape here has one), the call is declined with nothing queued and the legacy API runs it.
TEST(Conv2dGPU, GraphApiFallsBackToTheLegacyApi) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(134);
  DirectConvolutions direct(false);
  GraphConvolutions graph(true);
  ::setenv("CUGRAD_EMU_CUDNN_GRAPH", "0", 1);
  const Cfg c{{3, 4, 10, 12}, 6, 3, 1, 2};
  const Inputs in = make_inputs(c);
  const Ref ref = loop_conv(c, in);
  const cg::cuda::GraphConvStats before = cg::cuda::graph_conv_stats();
  const cg::Tensor x = in.x.cuda().requires_grad_(), w = in.w.cuda().requires_grad_();
  const cg::Tensor y = run_conv(c, x, w, in.b.cuda());
  const cg::TensorList g = cg::autograd::grad({y}, {x, w}, {in.dy.cuda()});
  ::unsetenv("CUGRAD_EMU_CUDNN_GRAPH");
  if (on_emulator()) {
    EXPECT_EQ(cg::cuda::graph_conv_stats().declined, before.declined + 3);
  }
  EXPECT_TRUE(norm_close(y, ref.y, 1e-5));
  EXPECT_TRUE(norm_close(g[0], ref.dx, 1e-5));
  EXPECT_TRUE(norm_close(g[1], ref.dw, 1e-5));
}

TEST(Conv2dGPU, RunsOnTheCurrentStream) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(115);
  const Cfg c{{4, 8, 15, 15}, 8, 3, 1, 1};
  const Inputs in = make_inputs(c);
  const Ref ref = loop_conv(c, in);
  const cg::Tensor x = in.x.cuda(), w = in.w.cuda(), b = in.b.cuda(), dy = in.dy.cuda();
  const cg::Stream side = cg::Stream::create(kCuda);
  cg::Tensor y, gw;
  {
    cg::StreamGuard on(side);
    // A slow kernel first: a result read before the side stream finished would be wrong.
    cg::testing::spin_on(side, 20.0);
    const cg::Tensor wl = w.detach().requires_grad_();
    y = run_conv(c, x, wl, b);
    gw = cg::autograd::grad({y}, {wl}, {dy})[0];
  }
  EXPECT_TRUE(norm_close(y, ref.y, 1e-5));
  EXPECT_TRUE(norm_close(gw, ref.dw, 1e-5));
}

TEST(Conv2dGPU, ErrorsOnTheDevice) {
  CUGRAD_REQUIRE_GPU();
  const cg::Tensor x = cg::randn({2, 3, 5, 5}, kCuda);
  EXPECT_TRUE(mentions(message_of([&] { F::conv2d(x, cg::randn({4, 3, 3, 3})); }), "weight is on cpu"));
  EXPECT_TRUE(mentions(message_of([&] {
                         F::conv2d(x, cg::randn({4, 3, 3, 3}, kCuda), cg::ones({4}));
                       }),
                       "bias is on cpu"));
  const std::string m = message_of([&] {
    F::conv2d(cg::randn({2, 3, 5, 5}, kCuda, cg::DType::float64),
              cg::randn({4, 3, 3, 3}, kCuda, cg::DType::float64));
  });
  EXPECT_NE(m.find("float"), std::string::npos) << m;  // float64 is CPU-only (here or at creation)
}
