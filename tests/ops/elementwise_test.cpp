// Elementwise ops: semantics on the CPU (broadcasting, NaN, integer dtypes, errors) and
// CUDA against the float64 CPU reference at awkward sizes with poisoned outputs.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "cugrad/cugrad.h"
#include "tests/support/parity.h"

namespace cg = cugrad;
using cg::testing::all_close;
using cg::testing::all_equal;

namespace {
cg::Tensor f32(std::vector<float> v, cg::Shape s) { return cg::from_vector(v, s); }
cg::Tensor i64(std::vector<std::int64_t> v, cg::Shape s) { return cg::from_vector(v, s); }
const float kNaN = std::numeric_limits<float>::quiet_NaN();
}  // namespace

TEST(Elementwise, ArithmeticAndOperators) {
  auto a = f32({1, 2, 3, 4}, {2, 2});
  auto b = f32({10, 20, 30, 40}, {2, 2});
  EXPECT_EQ((a + b).to_vector<float>(), (std::vector<float>{11, 22, 33, 44}));
  EXPECT_EQ((b - a).to_vector<float>(), (std::vector<float>{9, 18, 27, 36}));
  EXPECT_EQ((a * b).to_vector<float>(), (std::vector<float>{10, 40, 90, 160}));
  EXPECT_EQ((b / a).to_vector<float>(), (std::vector<float>{10, 10, 10, 10}));
  EXPECT_EQ((-a).to_vector<float>(), (std::vector<float>{-1, -2, -3, -4}));
  EXPECT_EQ(cg::add(a, b, 2.0).to_vector<float>(), (std::vector<float>{21, 42, 63, 84}));
  EXPECT_EQ((a * 2.0).to_vector<float>(), (std::vector<float>{2, 4, 6, 8}));
  EXPECT_EQ((2.0 * a).to_vector<float>(), (std::vector<float>{2, 4, 6, 8}));
  EXPECT_EQ((a + 1.0).to_vector<float>(), (std::vector<float>{2, 3, 4, 5}));
  EXPECT_EQ((10.0 - a).to_vector<float>(), (std::vector<float>{9, 8, 7, 6}));
  EXPECT_EQ((a - 1.0).to_vector<float>(), (std::vector<float>{0, 1, 2, 3}));
  EXPECT_EQ((a / 2.0).to_vector<float>(), (std::vector<float>{0.5, 1, 1.5, 2}));
  EXPECT_EQ((4.0 / a).to_vector<float>(), (std::vector<float>{4, 2, 4.f / 3.f, 1}));
}

TEST(Elementwise, BroadcastingFollowsNumpy) {
  auto col = f32({1, 2, 3}, {3, 1});
  auto row = f32({10, 20}, {2});
  auto s = col + row;
  EXPECT_EQ(s.shape(), (cg::Shape{3, 2}));
  EXPECT_EQ(s.to_vector<float>(), (std::vector<float>{11, 21, 12, 22, 13, 23}));
  auto x = cg::arange(0.0, 24.0, 1.0, cg::Device::cpu(), cg::DType::float32).reshape({2, 3, 4});
  auto mid = f32({100, 200, 300}, {3, 1});
  auto y = x + mid;
  EXPECT_EQ(y.shape(), (cg::Shape{2, 3, 4}));
  EXPECT_EQ(y.to_vector<float>()[0], 100.f);
  EXPECT_EQ(y.to_vector<float>()[5], 205.f);
  EXPECT_EQ(y.to_vector<float>()[23], 323.f);
  EXPECT_EQ((x * cg::full({}, 2.0)).to_vector<float>()[7], 14.f);
  EXPECT_EQ((cg::full({1, 1, 1}, 1.0) + x).shape(), (cg::Shape{2, 3, 4}));
  try {
    (void)(cg::zeros({2, 3}) + cg::zeros({4}));
    FAIL() << "no throw";
  } catch (const cg::ValueError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("add"), std::string::npos) << m;
    EXPECT_NE(m.find("[2, 3]"), std::string::npos) << m;
    EXPECT_NE(m.find("[4]"), std::string::npos) << m;
  }
}

TEST(Elementwise, UnaryMath) {
  auto x = f32({0.25f, 1.f, 4.f}, {3});
  EXPECT_TRUE(all_close(x.sqrt(), f32({0.5f, 1.f, 2.f}, {3})));
  EXPECT_TRUE(all_close(x.rsqrt(), f32({2.f, 1.f, 0.5f}, {3})));
  EXPECT_TRUE(all_close(x.log(), f32({std::log(0.25f), 0.f, std::log(4.f)}, {3})));
  EXPECT_TRUE(all_close(x.exp(), f32({std::exp(0.25f), std::exp(1.f), std::exp(4.f)}, {3})));
  EXPECT_TRUE(all_close(x.pow(3.0), f32({0.015625f, 1.f, 64.f}, {3})));
  EXPECT_TRUE(all_close(x.pow(2.0), f32({0.0625f, 1.f, 16.f}, {3})));
  auto y = f32({-2.f, 0.f, 3.f, kNaN}, {4});
  EXPECT_TRUE(all_close(y.abs(), f32({2.f, 0.f, 3.f, kNaN}, {4})));
  EXPECT_TRUE(all_close(y.sign(), f32({-1.f, 0.f, 1.f, kNaN}, {4})));
  EXPECT_TRUE(all_close(y.relu(), f32({0.f, 0.f, 3.f, kNaN}, {4})));
  EXPECT_TRUE(all_close(y.neg(), f32({2.f, -0.f, -3.f, kNaN}, {4})));
  EXPECT_TRUE(all_close(y.clamp(-1.0, 1.0), f32({-1.f, 0.f, 1.f, kNaN}, {4})));
  EXPECT_TRUE(all_close(y.clamp(std::nullopt, 1.0), f32({-2.f, 0.f, 1.f, kNaN}, {4})));
  EXPECT_TRUE(all_close(y.clamp(0.5, std::nullopt), f32({0.5f, 0.5f, 3.f, kNaN}, {4})));
  EXPECT_THROW(y.clamp(std::nullopt, std::nullopt), cg::ValueError);
  EXPECT_TRUE(std::isnan(f32({-1.f}, {1}).log().item<float>()));  // NaN, as in PyTorch, not an error
  EXPECT_TRUE(std::isnan(f32({-1.f}, {1}).sqrt().item<float>()));
}

TEST(Elementwise, MaximumMinimumPropagateNaN) {
  auto a = f32({1, kNaN, 3, -1}, {4});
  auto b = f32({2, 0, kNaN, -5}, {4});
  EXPECT_TRUE(all_close(cg::maximum(a, b), f32({2, kNaN, kNaN, -1}, {4})));
  EXPECT_TRUE(all_close(cg::minimum(a, b), f32({1, kNaN, kNaN, -5}, {4})));
}

TEST(Elementwise, ComparisonsAndWhere) {
  auto a = f32({1, 2, 3, kNaN}, {4});
  auto b = f32({3, 2, 1, kNaN}, {4});
  auto u8 = [](std::vector<std::uint8_t> v) { return cg::from_vector(v, {4}); };
  EXPECT_EQ(cg::eq(a, b).dtype(), cg::DType::uint8);
  EXPECT_TRUE(all_equal(cg::eq(a, b), u8({0, 1, 0, 0})));
  EXPECT_TRUE(all_equal(cg::ne(a, b), u8({1, 0, 1, 1})));
  EXPECT_TRUE(all_equal(cg::lt(a, b), u8({1, 0, 0, 0})));
  EXPECT_TRUE(all_equal(cg::le(a, b), u8({1, 1, 0, 0})));
  EXPECT_TRUE(all_equal(cg::gt(a, b), u8({0, 0, 1, 0})));
  EXPECT_TRUE(all_equal(cg::ge(a, b), u8({0, 1, 1, 0})));
  EXPECT_TRUE(all_equal(cg::gt(a, 1.5), u8({0, 1, 1, 0})));
  EXPECT_TRUE(all_equal(cg::eq(a, 3.0), u8({0, 0, 1, 0})));
  auto w = cg::where(cg::gt(a, 1.5), a, cg::full({}, -1.0));
  EXPECT_TRUE(all_close(w, f32({-1, 2, 3, -1}, {4})));
  auto cond = cg::from_vector(std::vector<std::uint8_t>{1, 0}, {2, 1});
  auto w2 = cg::where(cond, f32({1, 2, 3}, {3}), f32({-1}, {1}));
  EXPECT_EQ(w2.shape(), (cg::Shape{2, 3}));
  EXPECT_EQ(w2.to_vector<float>(), (std::vector<float>{1, 2, 3, -1, -1, -1}));
  EXPECT_THROW(cg::where(a, a, b), cg::ValueError);  // condition must be uint8
}

TEST(Elementwise, IntegerDtypes) {
  auto a = i64({5, -3, 7}, {3});
  auto b = i64({2, 2, -7}, {3});
  EXPECT_EQ((a + b).to_vector<std::int64_t>(), (std::vector<std::int64_t>{7, -1, 0}));
  EXPECT_EQ((a * b).to_vector<std::int64_t>(), (std::vector<std::int64_t>{10, -6, -49}));
  EXPECT_EQ((a * 3.0).to_vector<std::int64_t>(), (std::vector<std::int64_t>{15, -9, 21}));
  EXPECT_EQ(a.abs().to_vector<std::int64_t>(), (std::vector<std::int64_t>{5, 3, 7}));
  EXPECT_EQ(a.sign().to_vector<std::int64_t>(), (std::vector<std::int64_t>{1, -1, 1}));
  EXPECT_EQ(a.relu().to_vector<std::int64_t>(), (std::vector<std::int64_t>{5, 0, 7}));
  EXPECT_EQ(a.clamp(-1.0, 6.0).to_vector<std::int64_t>(), (std::vector<std::int64_t>{5, -1, 6}));
  EXPECT_EQ(cg::maximum(a, b).to_vector<std::int64_t>(), (std::vector<std::int64_t>{5, 2, 7}));
  auto u = cg::from_vector(std::vector<std::uint8_t>{0, 3, 250}, {3});
  EXPECT_EQ(u.abs().to_vector<std::uint8_t>(), (std::vector<std::uint8_t>{0, 3, 250}));
  EXPECT_EQ(u.sign().to_vector<std::uint8_t>(), (std::vector<std::uint8_t>{0, 1, 1}));
  // Float-only math and non-integral scalars are clear errors on integer tensors.
  EXPECT_THROW(a / b, cg::ValueError);
  EXPECT_THROW(a.exp(), cg::ValueError);
  EXPECT_THROW(a.sqrt(), cg::ValueError);
  EXPECT_THROW(a * 0.5, cg::ValueError);
  EXPECT_THROW(a + 0.5, cg::ValueError);
  EXPECT_THROW(a.fill_(1.5), cg::ValueError);
}

TEST(Elementwise, MismatchesAreErrorsNamingTheOp) {
  auto f = cg::zeros({3});
  auto i = cg::zeros({3}, cg::Device::cpu(), cg::DType::int64);
  try {
    (void)(f * i);
    FAIL() << "no throw";
  } catch (const cg::ValueError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("mul"), std::string::npos) << m;
    EXPECT_NE(m.find("float32"), std::string::npos) << m;
    EXPECT_NE(m.find("int64"), std::string::npos) << m;
  }
  cg::Tensor undefined;
  EXPECT_THROW(f + undefined, cg::ValueError);
  EXPECT_THROW(undefined.relu(), cg::ValueError);
}

TEST(Elementwise, InPlaceVariants) {
  auto a = f32({1, 2, 3}, {3});
  auto b = f32({1, 1, 1}, {3});
  a.add_(b, 2.0);
  EXPECT_EQ(a.to_vector<float>(), (std::vector<float>{3, 4, 5}));
  a.sub_(b);
  a.mul_(f32({2}, {1}));
  a.div_(f32({4, 4, 4}, {3}));
  EXPECT_EQ(a.to_vector<float>(), (std::vector<float>{1, 1.5, 2}));
  a.mul_(2.0).add_(-1.0);
  EXPECT_EQ(a.to_vector<float>(), (std::vector<float>{1, 2, 3}));
  a.neg_().relu_();
  EXPECT_EQ(a.to_vector<float>(), (std::vector<float>{0, 0, 0}));
  a += b;
  a *= 3.0;
  a.exp_();
  EXPECT_TRUE(all_close(a, cg::full({3}, std::exp(3.0))));
  a.clamp_(0.0, 1.0);
  EXPECT_EQ(a.to_vector<float>(), (std::vector<float>{1, 1, 1}));
  auto small = cg::zeros({3});
  EXPECT_THROW(small.add_(cg::zeros({2, 3})), cg::ValueError);  // result does not fit
}

// ---- GPU: CUDA vs the float64 CPU reference ----

namespace {
using Fn = cg::testing::TensorFn;

std::vector<cg::Shape> parity_shapes() { return cg::testing::awkward_shapes(); }

void expect_unary_parity(const char* name, const Fn& fn, bool positive) {
  for (const auto& shape : parity_shapes()) {
    auto x = cg::randn(shape);
    if (positive) x = x.abs() + 0.1;
    EXPECT_TRUE(cg::testing::cuda_matches_cpu64(fn, {x})) << name << " at " << cg::shape_str(shape);
  }
}
}  // namespace

TEST(ElementwiseGPU, UnaryOpsMatchCpu) {
  CUGRAD_REQUIRE_GPU();
  expect_unary_parity("neg", [](const cg::TensorList& t) { return -t[0]; }, false);
  expect_unary_parity("exp", [](const cg::TensorList& t) { return t[0].exp(); }, false);
  expect_unary_parity("log", [](const cg::TensorList& t) { return t[0].log(); }, true);
  expect_unary_parity("sqrt", [](const cg::TensorList& t) { return t[0].sqrt(); }, true);
  expect_unary_parity("rsqrt", [](const cg::TensorList& t) { return t[0].rsqrt(); }, true);
  expect_unary_parity("abs", [](const cg::TensorList& t) { return t[0].abs(); }, false);
  expect_unary_parity("sign", [](const cg::TensorList& t) { return t[0].sign(); }, false);
  expect_unary_parity("relu", [](const cg::TensorList& t) { return t[0].relu(); }, false);
  expect_unary_parity("pow", [](const cg::TensorList& t) { return t[0].pow(1.7); }, true);
  expect_unary_parity("clamp", [](const cg::TensorList& t) { return t[0].clamp(-0.5, 0.7); }, false);
  expect_unary_parity("scalar", [](const cg::TensorList& t) { return (3.0 - t[0] * 2.0 + 1.5) / 4.0; }, false);
  expect_unary_parity("rdiv", [](const cg::TensorList& t) { return 2.0 / t[0]; }, true);
}

TEST(ElementwiseGPU, BinaryOpsWithBroadcastingMatchCpu) {
  CUGRAD_REQUIRE_GPU();
  const std::vector<std::pair<cg::Shape, cg::Shape>> pairs = {
      {{1}, {1}},           {{7}, {7}},          {{33}, {1}},         {{1000003}, {1000003}}, {{1000003}, {}},
      {{3, 5, 7}, {5, 1}},  {{2, 1, 9, 4}, {3, 1, 1}}, {{7, 1}, {1, 33}}, {{1}, {2, 3}},
  };
  const std::vector<std::pair<const char*, Fn>> ops = {
      {"add", [](const cg::TensorList& t) { return cg::add(t[0], t[1], 0.5); }},
      {"sub", [](const cg::TensorList& t) { return t[0] - t[1]; }},
      {"mul", [](const cg::TensorList& t) { return t[0] * t[1]; }},
      {"div", [](const cg::TensorList& t) { return t[0] / (t[1].abs() + 0.5); }},
      {"maximum", [](const cg::TensorList& t) { return cg::maximum(t[0], t[1]); }},
      {"minimum", [](const cg::TensorList& t) { return cg::minimum(t[0], t[1]); }},
      {"lt", [](const cg::TensorList& t) { return cg::lt(t[0], t[1]); }},
      {"ge", [](const cg::TensorList& t) { return cg::ge(t[0], t[1]); }},
      {"eq", [](const cg::TensorList& t) { return cg::eq(t[0], t[0]); }},
      {"where", [](const cg::TensorList& t) { return cg::where(cg::gt(t[0], t[1]), t[0], t[1] * 2.0); }},
  };
  for (const auto& [sa, sb] : pairs) {
    auto a = cg::randn(sa), b = cg::randn(sb);
    for (const auto& [name, fn] : ops)
      EXPECT_TRUE(cg::testing::cuda_matches_cpu64(fn, {a, b})) << name << " " << cg::shape_str(sa) << " vs "
                                                               << cg::shape_str(sb);
  }
}

// float32 unary ops and same-shape binary ops move float4 when every pointer is 16-byte
// aligned: views starting 0..4 elements into their storage (aligned or not) and lengths around
// multiples of 4 (the n % 4 tail) against the CPU.
TEST(ElementwiseGPU, Float4PathsTailsAndMisalignedViews) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(31);
  for (std::int64_t offset = 0; offset <= 4; ++offset) {
    for (std::int64_t n : {1, 2, 3, 4, 5, 8, 1001, 4099}) {
      const auto x = cg::randn({n + 8}), y = cg::randn({n + 8});
      const auto fn = [offset, n](const cg::TensorList& t) {
        const cg::Tensor a = t[0].narrow(0, offset, n), b = t[1].narrow(0, offset, n);
        return (a.relu() * 2.0 + b * a - b).exp();
      };
      EXPECT_TRUE(cg::testing::cuda_matches_cpu64(fn, {x, y})) << "offset " << offset << ", n " << n;
    }
  }
}

TEST(ElementwiseGPU, IntegerOpsMatchCpu) {
  CUGRAD_REQUIRE_GPU();
  for (auto dtype : {cg::DType::int64, cg::DType::int32, cg::DType::uint8}) {
    auto a = cg::randint(0, 100, {1000003}, cg::Device::cpu(), dtype);
    auto b = cg::randint(0, 100, {1000003}, cg::Device::cpu(), dtype);
    auto fn = [](const cg::TensorList& t) { return cg::maximum(t[0] + t[1] * 2.0, t[1]).clamp(10.0, 150.0); };
    EXPECT_TRUE(cg::testing::cuda_matches_cpu64(fn, {a, b})) << dtype;
  }
}

TEST(ElementwiseGPU, InPlaceOnCudaAndDeviceMismatch) {
  CUGRAD_REQUIRE_GPU();
  auto x = cg::randn({1000003});
  auto g = x.cuda();
  g.mul_(2.0).add_(g, -0.5).relu_();
  EXPECT_TRUE(all_close(g, (x * 2.0 * 0.5).relu()));
  try {
    (void)(x + g);
    FAIL() << "no throw";
  } catch (const cg::ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("different devices"), std::string::npos) << e.what();
  }
}
