// Reductions: semantics on the CPU (known values, every dim with and without keepdim, int
// dtypes, NaN, argmax ties, empty and one-element cases, errors) against hand-computed values
// and plain loops, and CUDA against the float64 CPU reference at awkward sizes.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <optional>
#include <string>

#include "cugrad/cugrad.h"
#include "tests/support/parity.h"

namespace cg = cugrad;
using cg::testing::all_close;
using cg::testing::all_equal;

namespace {

cg::Tensor f32(std::vector<float> v, cg::Shape s) { return cg::from_vector(v, s); }
cg::Tensor f64(std::vector<double> v, cg::Shape s) { return cg::from_vector(v, s); }
cg::Tensor i64(std::vector<std::int64_t> v, cg::Shape s) { return cg::from_vector(v, s); }
const float kNaN = std::numeric_limits<float>::quiet_NaN();
const double kInf = std::numeric_limits<double>::infinity();

std::vector<double> values(const cg::Tensor& t) { return t.cpu().to(cg::DType::float64).to_vector<double>(); }

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

// ---- plain-loop references over one slice ----
using SliceFn = std::function<double(const std::vector<double>&)>;

double slice_sum(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s;
}
double slice_mean(const std::vector<double>& v) { return slice_sum(v) / static_cast<double>(v.size()); }
double slice_max(const std::vector<double>& v) {
  double m = -kInf;
  for (double x : v) {
    if (std::isnan(x)) return x;
    m = std::max(m, x);
  }
  return m;
}
double slice_min(const std::vector<double>& v) {
  double m = kInf;
  for (double x : v) {
    if (std::isnan(x)) return x;
    m = std::min(m, x);
  }
  return m;
}
double slice_argmax(const std::vector<double>& v) {
  std::size_t best = 0;
  for (std::size_t k = 0; k < v.size(); ++k) {
    if (std::isnan(v[k])) return static_cast<double>(k);
    if (v[k] > v[best]) best = k;
  }
  return static_cast<double>(best);
}
SliceFn slice_var(bool unbiased) {
  return [unbiased](const std::vector<double>& v) {
    const double m = slice_mean(v);  // two-pass: an independent check of Welford
    double s = 0;
    for (double x : v) s += (x - m) * (x - m);
    const double divisor = static_cast<double>(v.size()) - (unbiased ? 1.0 : 0.0);
    return divisor > 0 ? s / divisor : std::nan("");
  };
}
SliceFn slice_std(bool unbiased) {
  return [unbiased](const std::vector<double>& v) { return std::sqrt(slice_var(unbiased)(v)); };
}
SliceFn slice_norm(double p) {
  return [p](const std::vector<double>& v) {
    if (std::isinf(p)) {
      double m = 0;
      for (double x : v) {
        if (std::isnan(x)) return x;
        m = std::max(m, std::fabs(x));
      }
      return m;
    }
    double s = 0;
    for (double x : v) s += std::pow(std::fabs(x), p);
    return std::pow(s, 1.0 / p);
  };
}

// Reduces `x` along `dim` (all elements when nullopt) with `fn` applied to each slice, by
// gathering every slice explicitly.
std::vector<double> loop_reduce(const cg::Tensor& x, std::optional<std::int64_t> dim, const SliceFn& fn) {
  const auto v = values(x);
  if (!dim || x.dim() == 0) return {fn(v)};
  const auto d = static_cast<std::size_t>(*dim < 0 ? *dim + x.dim() : *dim);
  const cg::Shape& s = x.shape();
  std::int64_t outer = 1, inner = 1;
  for (std::size_t k = 0; k < d; ++k) outer *= s[k];
  for (std::size_t k = d + 1; k < s.size(); ++k) inner *= s[k];
  std::vector<double> out;
  for (std::int64_t o = 0; o < outer; ++o)
    for (std::int64_t i = 0; i < inner; ++i) {
      std::vector<double> slice;
      for (std::int64_t r = 0; r < s[d]; ++r)
        slice.push_back(v[static_cast<std::size_t>((o * s[d] + r) * inner + i)]);
      out.push_back(fn(slice));
    }
  return out;
}

cg::Shape reduced_shape(const cg::Shape& s, std::int64_t dim, bool keepdim) {
  if (s.empty()) return {};
  cg::Shape r = s;
  const auto d = static_cast<std::size_t>(dim < 0 ? dim + static_cast<std::int64_t>(s.size()) : dim);
  if (keepdim)
    r[d] = 1;
  else
    r.erase(r.begin() + static_cast<std::ptrdiff_t>(d));
  return r;
}

::testing::AssertionResult near_values(const std::vector<double>& got, const std::vector<double>& want,
                                       double rtol) {
  if (got.size() != want.size())
    return ::testing::AssertionFailure() << got.size() << " values, expected " << want.size();
  for (std::size_t k = 0; k < got.size(); ++k) {
    const bool ok = std::isnan(want[k]) ? std::isnan(got[k])
                                        : std::fabs(got[k] - want[k]) <= rtol * (1.0 + std::fabs(want[k]));
    if (!ok)
      return ::testing::AssertionFailure() << "at " << k << ": got " << got[k] << ", expected " << want[k];
  }
  return ::testing::AssertionSuccess();
}

struct DimOp {
  const char* name;
  std::function<cg::Tensor(const cg::Tensor&, std::int64_t, bool)> along;
  std::function<cg::Tensor(const cg::Tensor&)> all;
  SliceFn slice;
};

std::vector<DimOp> float_ops() {
  return {
      {"sum", [](const cg::Tensor& t, std::int64_t d, bool k) { return t.sum(d, k); },
       [](const cg::Tensor& t) { return t.sum(); }, slice_sum},
      {"mean", [](const cg::Tensor& t, std::int64_t d, bool k) { return t.mean(d, k); },
       [](const cg::Tensor& t) { return t.mean(); }, slice_mean},
      {"max", [](const cg::Tensor& t, std::int64_t d, bool k) { return t.max(d, k); },
       [](const cg::Tensor& t) { return t.max(); }, slice_max},
      {"amin", [](const cg::Tensor& t, std::int64_t d, bool k) { return cg::amin(t, d, k); },
       [](const cg::Tensor& t) { return cg::amin(t); }, slice_min},
      {"argmax", [](const cg::Tensor& t, std::int64_t d, bool k) { return t.argmax(d, k); },
       [](const cg::Tensor& t) { return t.argmax(); }, slice_argmax},
      {"var", [](const cg::Tensor& t, std::int64_t d, bool k) { return t.var(d, true, k); },
       [](const cg::Tensor& t) { return t.var(); }, slice_var(true)},
      {"var_biased", [](const cg::Tensor& t, std::int64_t d, bool k) { return cg::var(t, d, false, k); },
       [](const cg::Tensor& t) { return cg::var(t, false); }, slice_var(false)},
      {"std", [](const cg::Tensor& t, std::int64_t d, bool k) { return t.std(d, true, k); },
       [](const cg::Tensor& t) { return t.std(); }, slice_std(true)},
      {"norm2", [](const cg::Tensor& t, std::int64_t d, bool k) { return t.norm(2.0, d, k); },
       [](const cg::Tensor& t) { return t.norm(); }, slice_norm(2.0)},
      {"norm1", [](const cg::Tensor& t, std::int64_t d, bool k) { return cg::norm(t, 1.0, d, k); },
       [](const cg::Tensor& t) { return cg::norm(t, 1.0); }, slice_norm(1.0)},
      {"norm3.5", [](const cg::Tensor& t, std::int64_t d, bool k) { return t.norm(3.5, d, k); },
       [](const cg::Tensor& t) { return t.norm(3.5); }, slice_norm(3.5)},
      {"norm_inf", [](const cg::Tensor& t, std::int64_t d, bool k) { return t.norm(kInf, d, k); },
       [](const cg::Tensor& t) { return t.norm(kInf); }, slice_norm(kInf)},
  };
}

cg::DType expected_dtype(const std::string& op, cg::DType in) {
  if (op == "argmax") return cg::DType::int64;
  if (op == "sum" && !cg::is_floating(in)) return cg::DType::int64;
  return in;
}

// Every op along every dim (negative and positive), with and without keepdim, and over all
// elements, against loop_reduce.
void expect_ops_match_loops(const cg::Tensor& x, const std::vector<DimOp>& ops, double rtol) {
  const std::string where = cg::shape_str(x.shape()) + " " + std::string(cg::dtype_name(x.dtype()));
  for (const auto& op : ops) {
    const cg::Tensor all = op.all(x);
    EXPECT_EQ(all.shape(), cg::Shape{}) << op.name << " " << where;
    EXPECT_EQ(all.dtype(), expected_dtype(op.name, x.dtype())) << op.name << " " << where;
    EXPECT_TRUE(near_values(values(all), loop_reduce(x, std::nullopt, op.slice), rtol))
        << op.name << " all " << where;
    const std::int64_t nd = std::max<std::int64_t>(x.dim(), 1);
    for (std::int64_t d = -nd; d < nd; ++d)
      for (bool keepdim : {false, true}) {
        const cg::Tensor got = op.along(x, d, keepdim);
        EXPECT_EQ(got.shape(), reduced_shape(x.shape(), d, keepdim))
            << op.name << " dim " << d << " " << where;
        EXPECT_EQ(got.dtype(), expected_dtype(op.name, x.dtype())) << op.name << " " << where;
        EXPECT_TRUE(near_values(values(got), loop_reduce(x, d, op.slice), rtol))
            << op.name << " dim " << d << " keepdim " << keepdim << " " << where;
      }
  }
}

}  // namespace

// ---- known values ----

TEST(Reduce, SumMeanOfSmallMatrix) {
  auto x = f32({1, 2, 3, 4, 5, 6}, {2, 3});
  auto s = x.sum();
  EXPECT_EQ(s.shape(), cg::Shape{});
  EXPECT_EQ(s.dtype(), cg::DType::float32);
  EXPECT_EQ(s.item<float>(), 21.f);
  EXPECT_EQ(x.sum(0).to_vector<float>(), (std::vector<float>{5, 7, 9}));
  EXPECT_EQ(x.sum(0).shape(), (cg::Shape{3}));
  EXPECT_EQ(x.sum(1).to_vector<float>(), (std::vector<float>{6, 15}));
  EXPECT_EQ(x.sum(1, true).shape(), (cg::Shape{2, 1}));
  EXPECT_EQ(x.sum(0, true).shape(), (cg::Shape{1, 3}));
  EXPECT_EQ(x.sum(-1).to_vector<float>(), (std::vector<float>{6, 15}));
  EXPECT_EQ(x.sum(-2).to_vector<float>(), (std::vector<float>{5, 7, 9}));
  EXPECT_EQ(cg::sum(x, -1, true).to_vector<float>(), (std::vector<float>{6, 15}));
  EXPECT_EQ(x.mean().item<float>(), 3.5f);
  EXPECT_EQ(x.mean(0).to_vector<float>(), (std::vector<float>{2.5f, 3.5f, 4.5f}));
  EXPECT_EQ(cg::mean(x, 1).to_vector<float>(), (std::vector<float>{2, 5}));
  EXPECT_EQ(cg::mean(x, 1, true).shape(), (cg::Shape{2, 1}));
}

TEST(Reduce, MaxMinArgmaxOfSmallMatrix) {
  auto x = f32({3, -1, 7, 2, 9, -4}, {2, 3});
  EXPECT_EQ(x.max().item<float>(), 9.f);
  EXPECT_EQ(cg::amax(x).item<float>(), 9.f);
  EXPECT_EQ(x.min().item<float>(), -4.f);
  EXPECT_EQ(cg::amin(x).item<float>(), -4.f);
  EXPECT_EQ(x.max(0).to_vector<float>(), (std::vector<float>{3, 9, 7}));
  EXPECT_EQ(x.max(1).to_vector<float>(), (std::vector<float>{7, 9}));
  EXPECT_EQ(x.min(0).to_vector<float>(), (std::vector<float>{2, -1, -4}));
  EXPECT_EQ(x.min(-1, true).to_vector<float>(), (std::vector<float>{-1, -4}));
  EXPECT_EQ(x.min(-1, true).shape(), (cg::Shape{2, 1}));
  auto am = x.argmax();
  EXPECT_EQ(am.dtype(), cg::DType::int64);
  EXPECT_EQ(am.shape(), cg::Shape{});
  EXPECT_EQ(am.item<std::int64_t>(), 4);
  EXPECT_EQ(x.argmax(0).to_vector<std::int64_t>(), (std::vector<std::int64_t>{0, 1, 0}));
  EXPECT_EQ(x.argmax(1).to_vector<std::int64_t>(), (std::vector<std::int64_t>{2, 1}));
  EXPECT_EQ(cg::argmax(x, 1, true).shape(), (cg::Shape{2, 1}));
}

TEST(Reduce, VarStdKnownValues) {
  auto x = f64({1, 2, 3, 4}, {4});
  EXPECT_NEAR(x.var().item<double>(), 5.0 / 3.0, 1e-15);
  EXPECT_NEAR(x.var(false).item<double>(), 1.25, 1e-15);
  EXPECT_NEAR(x.std().item<double>(), std::sqrt(5.0 / 3.0), 1e-15);
  EXPECT_NEAR(cg::std(x, false).item<double>(), std::sqrt(1.25), 1e-15);
  auto m = f32({1, 2, 3, 10, 20, 30}, {2, 3});
  EXPECT_TRUE(all_close(m.var(std::int64_t{1}), f32({1, 100}, {2})));
  EXPECT_TRUE(all_close(m.var(0, false), f32({20.25f, 81, 182.25f}, {3})));
  EXPECT_TRUE(all_close(m.std(1, true, true), f32({1, 10}, {2, 1})));
  EXPECT_EQ(m.std(1, true, true).shape(), (cg::Shape{2, 1}));
}

TEST(Reduce, VarHasNoCancellationForLargeOffsets) {
  // E[x²] - E[x]² loses every digit here; Welford keeps them.
  auto x = f64({1e9 + 1, 1e9 + 2, 1e9 + 3, 1e9 + 4}, {4});
  EXPECT_NEAR(x.var().item<double>(), 5.0 / 3.0, 1e-6);
  auto y = f32({10000.5f, 10001.5f, 10002.5f, 10003.5f}, {4});
  EXPECT_NEAR(y.var().item<double>(), 5.0 / 3.0, 1e-5);
}

TEST(Reduce, NormKnownValues) {
  auto x = f32({3, -4}, {2});
  EXPECT_FLOAT_EQ(x.norm().item<float>(), 5.f);
  EXPECT_FLOAT_EQ(x.norm(1.0).item<float>(), 7.f);
  EXPECT_FLOAT_EQ(x.norm(kInf).item<float>(), 4.f);
  EXPECT_NEAR(x.norm(3.0).item<double>(), std::cbrt(27.0 + 64.0), 1e-5);
  EXPECT_NEAR(x.norm(0.5).item<double>(), std::pow(std::sqrt(3.0) + 2.0, 2.0), 1e-5);
  auto m = f64({3, 4, 0, -5, 12, 0}, {2, 3});
  EXPECT_TRUE(all_close(m.norm(2.0, 1), f64({5, 13}, {2})));
  EXPECT_TRUE(all_close(m.norm(kInf, 0, true), f64({5, 12, 0}, {1, 3})));
}

// ---- every dim, keepdim, negative dims, against plain loops ----

TEST(Reduce, FloatOpsAlongEveryDimMatchLoops) {
  cg::manual_seed(11);
  for (const cg::Shape& shape :
       {cg::Shape{3, 5, 7}, cg::Shape{2, 1, 9, 4}, cg::Shape{7}, cg::Shape{1}, cg::Shape{}}) {
    expect_ops_match_loops(cg::randn(shape, cg::Device::cpu(), cg::DType::float64), float_ops(), 1e-12);
    expect_ops_match_loops(cg::randn(shape), float_ops(), 2e-6);
  }
}

TEST(Reduce, IntegerOpsAlongEveryDimMatchLoops) {
  cg::manual_seed(12);
  const std::vector<DimOp> ops = {float_ops()[0], float_ops()[2], float_ops()[3], float_ops()[4]};
  for (auto dtype : {cg::DType::int64, cg::DType::int32}) {
    expect_ops_match_loops(cg::randint(-20, 20, {3, 5, 7}, cg::Device::cpu(), dtype), ops, 0.0);
    expect_ops_match_loops(cg::randint(-3, 3, {2, 1, 9, 4}, cg::Device::cpu(), dtype), ops,
                           0.0);  // many ties
  }
  expect_ops_match_loops(cg::randint(0, 256, {3, 5, 7}, cg::Device::cpu(), cg::DType::uint8), ops, 0.0);
}

// ---- integer dtypes ----

TEST(Reduce, IntegerSumIsInt64AndDoesNotOverflow) {
  auto u = cg::from_vector(std::vector<std::uint8_t>{200, 100, 255}, {3});
  auto su = u.sum();
  EXPECT_EQ(su.dtype(), cg::DType::int64);
  EXPECT_EQ(su.item<std::int64_t>(), 555);
  EXPECT_EQ(u.max().dtype(), cg::DType::uint8);
  EXPECT_EQ(u.max().item<int>(), 255);
  EXPECT_EQ(u.min().item<int>(), 100);
  auto big = cg::from_vector(std::vector<std::int32_t>{2000000000, 2000000000, -5}, {3});
  EXPECT_EQ(big.sum().dtype(), cg::DType::int64);
  EXPECT_EQ(big.sum().item<std::int64_t>(), 3999999995LL);
  auto m = i64({1, -2, 3, -4, 5, -6}, {3, 2});
  EXPECT_EQ(m.sum(0).to_vector<std::int64_t>(), (std::vector<std::int64_t>{9, -12}));
  EXPECT_EQ(m.max(1).to_vector<std::int64_t>(), (std::vector<std::int64_t>{1, 3, 5}));
  EXPECT_EQ(m.max(1).dtype(), cg::DType::int64);
  EXPECT_EQ(m.argmax(0).to_vector<std::int64_t>(), (std::vector<std::int64_t>{2, 0}));
  auto lowest =
      i64({std::numeric_limits<std::int64_t>::min(), std::numeric_limits<std::int64_t>::min()}, {2});
  EXPECT_EQ(lowest.argmax().item<std::int64_t>(), 0);
  EXPECT_EQ(lowest.max().to_vector<std::int64_t>()[0], std::numeric_limits<std::int64_t>::min());
}

TEST(Reduce, FloatingOnlyOpsRejectIntegers) {
  auto x = i64({1, 2, 3}, {3});
  expect_error([&] { (void)x.mean(); }, {"mean", "floating", "int64"});
  expect_error([&] { (void)x.mean(0); }, {"mean", "int64"});
  expect_error([&] { (void)x.var(); }, {"var", "int64"});
  expect_error([&] { (void)x.std(std::int64_t{0}); }, {"std", "int64"});
  expect_error([&] { (void)x.norm(); }, {"norm", "int64"});
  auto u = cg::from_vector(std::vector<std::uint8_t>{1, 2}, {2});
  expect_error([&] { (void)u.mean(); }, {"mean", "uint8"});
}

// ---- NaN ----

TEST(Reduce, NaNPropagates) {
  auto x = f32({1, kNaN, 3, kNaN, 0}, {5});
  EXPECT_TRUE(std::isnan(x.sum().item<float>()));
  EXPECT_TRUE(std::isnan(x.mean().item<float>()));
  EXPECT_TRUE(std::isnan(x.max().item<float>()));
  EXPECT_TRUE(std::isnan(x.min().item<float>()));
  EXPECT_EQ(x.argmax().item<std::int64_t>(), 1);  // the first NaN
  EXPECT_TRUE(std::isnan(x.var().item<float>()));
  EXPECT_TRUE(std::isnan(x.std().item<float>()));
  EXPECT_TRUE(std::isnan(x.norm().item<float>()));
  EXPECT_TRUE(std::isnan(x.norm(kInf).item<float>()));
  // A NaN after the maximum still wins, in either position.
  auto m = f32({5, 1, kNaN, kNaN, 2, 9}, {2, 3});
  EXPECT_TRUE(all_close(m.max(1), f32({kNaN, kNaN}, {2})));
  EXPECT_TRUE(all_close(m.max(0), f32({kNaN, 2, kNaN}, {3})));
  EXPECT_TRUE(all_close(m.min(0), f32({kNaN, 1, kNaN}, {3})));
  EXPECT_EQ(m.argmax(1).to_vector<std::int64_t>(), (std::vector<std::int64_t>{2, 0}));
  EXPECT_EQ(m.argmax(0).to_vector<std::int64_t>(), (std::vector<std::int64_t>{1, 1, 0}));
  EXPECT_TRUE(all_close(m.sum(1), f32({kNaN, kNaN}, {2})));
  EXPECT_TRUE(all_close(m.sum(0), f32({kNaN, 3, kNaN}, {3})));
}

TEST(Reduce, InfinitiesBehave) {
  auto x = f32({-INFINITY, -INFINITY, -INFINITY}, {3});
  EXPECT_EQ(x.argmax().item<std::int64_t>(), 0);
  EXPECT_EQ(x.max().item<float>(), -INFINITY);
  auto y = f32({1, INFINITY, 2, INFINITY}, {4});
  EXPECT_EQ(y.argmax().item<std::int64_t>(), 1);
  EXPECT_EQ(y.sum().item<float>(), INFINITY);
  EXPECT_EQ(y.min().item<float>(), 1.f);
  EXPECT_EQ(y.norm(kInf).item<float>(), INFINITY);
}

// ---- argmax ties ----

TEST(Reduce, ArgmaxReturnsTheFirstOfTies) {
  EXPECT_EQ(f32({3, 1, 3, 2}, {4}).argmax().item<std::int64_t>(), 0);
  EXPECT_EQ(f32({1, 3, 3, 3}, {4}).argmax().item<std::int64_t>(), 1);
  EXPECT_EQ(f32({0, 0, 0}, {3}).argmax().item<std::int64_t>(), 0);
  auto m = i64({4, 7, 7, 7, 4, 2, 7, 7, 2}, {3, 3});
  EXPECT_EQ(m.argmax(0).to_vector<std::int64_t>(), (std::vector<std::int64_t>{1, 0, 0}));
  EXPECT_EQ(m.argmax(1).to_vector<std::int64_t>(), (std::vector<std::int64_t>{1, 0, 0}));
  EXPECT_EQ(m.argmax().item<std::int64_t>(), 1);
  // A long run of equal values: still the first.
  auto flat = cg::zeros({1000});
  EXPECT_EQ(flat.argmax().item<std::int64_t>(), 0);
  auto ones = cg::ones({10, 300}, cg::Device::cpu(), cg::DType::int32);
  EXPECT_EQ(ones.argmax(1).to_vector<std::int64_t>(), std::vector<std::int64_t>(10, 0));
  EXPECT_EQ(ones.argmax(0).to_vector<std::int64_t>(), std::vector<std::int64_t>(300, 0));
}

// ---- empty and one-element cases ----

TEST(Reduce, EmptyReductions) {
  auto e = cg::zeros({0});
  EXPECT_EQ(e.sum().shape(), cg::Shape{});
  EXPECT_EQ(e.sum().item<float>(), 0.f);
  EXPECT_TRUE(std::isnan(e.mean().item<float>()));
  EXPECT_TRUE(std::isnan(e.var().item<float>()));
  EXPECT_TRUE(std::isnan(e.var(false).item<float>()));
  EXPECT_TRUE(std::isnan(e.std().item<float>()));
  EXPECT_EQ(e.norm().item<float>(), 0.f);
  EXPECT_EQ(e.norm(1.5).item<float>(), 0.f);
  EXPECT_EQ(cg::zeros({0}, cg::Device::cpu(), cg::DType::uint8).sum().item<std::int64_t>(), 0);
  expect_error([&] { (void)e.max(); }, {"amax", "float32[0]"});
  expect_error([&] { (void)e.min(); }, {"amin"});
  expect_error([&] { (void)e.argmax(); }, {"argmax"});
  expect_error([&] { (void)e.norm(kInf); }, {"norm"});

  auto rows = cg::zeros({0, 3});  // reducing the empty dim: 3 empty reductions
  EXPECT_EQ(rows.sum(0).to_vector<float>(), (std::vector<float>{0, 0, 0}));
  EXPECT_EQ(rows.sum(0, true).shape(), (cg::Shape{1, 3}));
  EXPECT_TRUE(all_close(rows.mean(0), f32({kNaN, kNaN, kNaN}, {3})));
  expect_error([&] { (void)rows.max(0); }, {"amax", "dimension 0", "[0, 3]"});
  expect_error([&] { (void)rows.argmax(-2); }, {"argmax", "[0, 3]"});
  // Reducing a non-empty dim of an empty tensor: an empty result, not an error.
  EXPECT_EQ(rows.max(1).shape(), (cg::Shape{0}));
  EXPECT_EQ(rows.argmax(1, true).shape(), (cg::Shape{0, 1}));
  EXPECT_EQ(rows.sum(1).shape(), (cg::Shape{0}));
  EXPECT_EQ(cg::zeros({3, 0}).max(0).shape(), (cg::Shape{0}));
}

TEST(Reduce, OneElementAndZeroDim) {
  auto one = f32({5}, {1});
  EXPECT_EQ(one.sum().item<float>(), 5.f);
  EXPECT_EQ(one.mean(0).to_vector<float>(), (std::vector<float>{5}));
  EXPECT_EQ(one.argmax().item<std::int64_t>(), 0);
  EXPECT_TRUE(std::isnan(one.var().item<float>()));  // n - 1 = 0, as PyTorch
  EXPECT_TRUE(std::isnan(one.std(std::int64_t{0}).to_vector<float>()[0]));
  EXPECT_EQ(one.var(false).item<float>(), 0.f);
  EXPECT_EQ(one.norm().item<float>(), 5.f);

  auto s = cg::full({}, -3.0);
  EXPECT_EQ(s.sum().shape(), cg::Shape{});
  EXPECT_EQ(s.sum().item<float>(), -3.f);
  EXPECT_EQ(s.sum(0).shape(), cg::Shape{});
  EXPECT_EQ(s.sum(-1, true).shape(), cg::Shape{});
  EXPECT_EQ(s.max(0).item<float>(), -3.f);
  EXPECT_EQ(s.argmax(0).item<std::int64_t>(), 0);
  EXPECT_EQ(s.norm(1.0, 0).item<float>(), 3.f);
  expect_error([&] { (void)s.sum(1); }, {"sum", "dimension 1"});
}

// ---- errors ----

TEST(Reduce, BadArgumentsAreReported) {
  auto x = cg::zeros({2, 3});
  expect_error([&] { (void)x.sum(2); }, {"sum", "dimension 2", "2 dimensions"});
  expect_error([&] { (void)x.mean(-3); }, {"mean", "dimension -3"});
  expect_error([&] { (void)cg::amax(x, 5); }, {"amax", "dimension 5"});
  expect_error([&] { (void)x.argmax(7, true); }, {"argmax", "dimension 7"});
  expect_error([&] { (void)x.var(std::int64_t{2}); }, {"var", "dimension 2"});
  expect_error([&] { (void)x.std(-4, false); }, {"std", "dimension -4"});
  expect_error([&] { (void)x.norm(2.0, 2); }, {"norm", "dimension 2"});
  expect_error([&] { (void)x.norm(0.0); }, {"norm", "p must be positive"});
  expect_error([&] { (void)x.norm(-1.0, 0); }, {"norm", "-1"});
  expect_error([&] { (void)x.norm(std::nan("")); }, {"norm"});
  expect_error([&] { (void)x.norm(-kInf); }, {"norm"});
  cg::Tensor undefined;
  expect_error([&] { (void)cg::sum(undefined); }, {"sum", "undefined"});
  expect_error([&] { (void)cg::argmax(undefined, 0); }, {"argmax", "undefined"});
  expect_error([&] { (void)cg::norm(undefined); }, {"norm", "undefined"});
}

TEST(Reduce, ResultsAreFreshTensors) {
  auto x = f32({1, 2, 3}, {3, 1});
  auto s = x.sum(1);  // reducing a size-1 dim copies
  EXPECT_FALSE(s.shares_storage(x));
  s.fill_(0.0);
  EXPECT_EQ(x.to_vector<float>(), (std::vector<float>{1, 2, 3}));
}

// ---- GPU: CUDA vs the float64 CPU reference ----

namespace {

using Fn = cg::testing::TensorFn;

struct NamedFn {
  const char* name;
  std::function<cg::Tensor(const cg::Tensor&)> all;
  std::function<cg::Tensor(const cg::Tensor&, std::int64_t, bool)> along;
};

std::vector<NamedFn> gpu_float_ops() {
  std::vector<NamedFn> ops;
  for (const auto& op : float_ops())
    if (std::string(op.name) != "argmax") ops.push_back({op.name, op.all, op.along});
  return ops;
}

// Shapes for the parity suites: the awkward sizes, plus shapes that take every CUDA plan
// (short rows, warp rows, block rows split over many blocks, split columns).
std::vector<cg::Shape> gpu_shapes() {
  auto shapes = cg::testing::awkward_shapes();
  for (const cg::Shape& s :
       {cg::Shape{7, 1000}, cg::Shape{1000, 7}, cg::Shape{3, 333334}, cg::Shape{300001, 3},
        cg::Shape{3, 20001, 5}, cg::Shape{9001, 1100}, cg::Shape{40000, 33}})
    shapes.push_back(s);
  return shapes;
}

// Runs `fn` along every dim (alternating keepdim) and over all elements of x.
template <typename Check>
void for_each_reduction(const cg::Tensor& x, Check check) {
  check(std::optional<std::int64_t>{}, false);
  for (std::int64_t d = 0; d < std::max<std::int64_t>(x.dim(), 1); ++d)
    check(std::optional<std::int64_t>{d}, d % 2 == 1);
}

}  // namespace

TEST(ReduceGPU, FloatOpsMatchCpu) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(21);
  for (const auto& shape : gpu_shapes()) {
    // Offset from zero so that sums over many elements are far from 0 (relative errors stay
    // meaningful); the variance sees the offset too, which Welford must not mind.
    const cg::Tensor x = cg::randn(shape) + 0.25;
    for (const auto& op : gpu_float_ops()) {
      for_each_reduction(x, [&](std::optional<std::int64_t> dim, bool keepdim) {
        const Fn fn = [&](const cg::TensorList& t) {
          return dim ? op.along(t[0], *dim, keepdim) : op.all(t[0]);
        };
        EXPECT_TRUE(cg::testing::cuda_matches_cpu64_norm(fn, {x}))
            << op.name << " of " << cg::shape_str(shape)
            << (dim ? " along " + std::to_string(*dim) : " over all");
      });
    }
  }
}

TEST(ReduceGPU, ArgmaxMatchesCpuExactly) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(22);
  const cg::testing::Tolerance exact{0.0, 0.0};
  for (const auto& shape : gpu_shapes()) {
    // Distinct values, then few values (ties everywhere: the first index must win).
    for (const cg::Tensor& x : {cg::randn(shape), cg::randint(0, 3, shape).to(cg::DType::float32)}) {
      for_each_reduction(x, [&](std::optional<std::int64_t> dim, bool keepdim) {
        const Fn fn = [&](const cg::TensorList& t) {
          return dim ? t[0].argmax(*dim, keepdim) : t[0].argmax();
        };
        EXPECT_TRUE(cg::testing::cuda_matches_cpu64(fn, {x}, exact))
            << "argmax of " << cg::shape_str(shape) << (dim ? " along " + std::to_string(*dim) : " over all");
      });
    }
  }
}

TEST(ReduceGPU, IntegerOpsMatchCpuExactly) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(23);
  const cg::testing::Tolerance exact{0.0, 0.0};
  const std::vector<
      std::pair<const char*, std::function<cg::Tensor(const cg::Tensor&, std::optional<std::int64_t>, bool)>>>
      ops = {
          {"sum", [](const cg::Tensor& t, auto d, bool k) { return d ? t.sum(*d, k) : t.sum(); }},
          {"amax", [](const cg::Tensor& t, auto d, bool k) { return d ? t.max(*d, k) : t.max(); }},
          {"amin", [](const cg::Tensor& t, auto d, bool k) { return d ? t.min(*d, k) : t.min(); }},
          {"argmax", [](const cg::Tensor& t, auto d, bool k) { return d ? t.argmax(*d, k) : t.argmax(); }},
      };
  for (auto dtype : {cg::DType::int64, cg::DType::int32, cg::DType::uint8}) {
    for (const auto& shape : gpu_shapes()) {
      const cg::Tensor x = dtype == cg::DType::uint8
                               ? cg::randint(0, 256, shape, cg::Device::cpu(), dtype)
                               : cg::randint(-1000, 1000, shape, cg::Device::cpu(), dtype);
      for (const auto& [name, op] : ops) {
        for_each_reduction(x, [&](std::optional<std::int64_t> dim, bool keepdim) {
          const Fn fn = [&](const cg::TensorList& t) { return op(t[0], dim, keepdim); };
          EXPECT_TRUE(cg::testing::cuda_matches_cpu64(fn, {x}, exact))
              << name << " of " << dtype << cg::shape_str(shape)
              << (dim ? " along " + std::to_string(*dim) : " over all");
        });
      }
    }
  }
  // Sums that overflow int32 and uint8 must not.
  auto big = cg::full({1000003}, 2000000000.0, cg::Device::cpu(), cg::DType::int32);
  EXPECT_EQ(big.cuda().sum().item<std::int64_t>(), 2000000000LL * 1000003LL);
  auto bytes = cg::full({1000003}, 255.0, cg::Device::cpu(), cg::DType::uint8);
  EXPECT_EQ(bytes.cuda().sum().item<std::int64_t>(), 255LL * 1000003LL);
  EXPECT_EQ(bytes.cuda().sum().dtype(), cg::DType::int64);
}

TEST(ReduceGPU, NaNPropagatesLikeCpu) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(24);
  for (const cg::Shape& shape :
       {cg::Shape{1000003}, cg::Shape{7, 1000}, cg::Shape{1000, 7}, cg::Shape{3, 5, 7}}) {
    auto v = cg::randn(shape).to_vector<float>();
    // NaNs at a few spread-out places (and twice in a row, so argmax must pick the first).
    for (std::size_t k = 5; k < v.size(); k += v.size() / 3 + 1) {
      v[k] = kNaN;
      if (k + 1 < v.size()) v[k + 1] = kNaN;
    }
    const cg::Tensor x = cg::from_vector(v, shape);
    const std::vector<
        std::pair<const char*, std::function<cg::Tensor(const cg::Tensor&, std::optional<std::int64_t>)>>>
        ops = {
            {"sum", [](const cg::Tensor& t, auto d) { return d ? t.sum(*d) : t.sum(); }},
            {"amax", [](const cg::Tensor& t, auto d) { return d ? t.max(*d) : t.max(); }},
            {"amin", [](const cg::Tensor& t, auto d) { return d ? t.min(*d) : t.min(); }},
            {"argmax", [](const cg::Tensor& t, auto d) { return d ? t.argmax(*d) : t.argmax(); }},
            {"var", [](const cg::Tensor& t, auto d) { return d ? t.var(*d) : t.var(); }},
            {"norm_inf", [](const cg::Tensor& t, auto d) { return d ? t.norm(kInf, *d) : t.norm(kInf); }},
        };
    for (const auto& [name, op] : ops)
      for_each_reduction(x, [&](std::optional<std::int64_t> dim, bool) {
        const Fn fn = [&](const cg::TensorList& t) { return op(t[0], dim); };
        EXPECT_TRUE(cg::testing::cuda_matches_cpu64(fn, {x}, cg::testing::Tolerance{1e-4, 1e-4}))
            << name << " of " << cg::shape_str(shape)
            << (dim ? " along " + std::to_string(*dim) : " over all");
      });
  }
}

TEST(ReduceGPU, EmptyAndEdgeCases) {
  CUGRAD_REQUIRE_GPU();
  cg::testing::PoisonGuard poison;
  const auto dev = cg::Device::cuda(0);
  auto e = cg::zeros({0}, dev);
  EXPECT_EQ(e.sum().item<float>(), 0.f);
  EXPECT_TRUE(std::isnan(e.mean().item<float>()));
  EXPECT_TRUE(std::isnan(e.var().item<float>()));
  EXPECT_EQ(e.norm().item<float>(), 0.f);
  expect_error([&] { (void)e.max(); }, {"amax"});
  expect_error([&] { (void)e.argmax(); }, {"argmax"});
  auto rows = cg::zeros({0, 3}, dev);
  EXPECT_EQ(rows.sum(0).to_vector<float>(), (std::vector<float>{0, 0, 0}));
  EXPECT_TRUE(all_close(rows.mean(0), f32({kNaN, kNaN, kNaN}, {3})));
  auto cols = cg::zeros({3, 0}, dev, cg::DType::int32);
  EXPECT_EQ(cols.sum(1).to_vector<std::int64_t>(), (std::vector<std::int64_t>{0, 0, 0}));
  EXPECT_EQ(cols.max(0).shape(), (cg::Shape{0}));
  auto one = cg::full({1}, 4.0, dev);
  EXPECT_TRUE(std::isnan(one.var().item<float>()));
  EXPECT_EQ(one.var(false).item<float>(), 0.f);
  EXPECT_EQ(one.argmax().item<std::int64_t>(), 0);
  auto ints = cg::zeros({3}, dev, cg::DType::int64);
  expect_error([&] { (void)ints.mean(); }, {"mean", "int64"});
  // Welford in float with a large offset: no cancellation.
  cg::manual_seed(25);
  auto off = cg::randn({1000003}) + 1000.0;
  EXPECT_TRUE(
      cg::testing::cuda_matches_cpu64_norm([](const cg::TensorList& t) { return t[0].var(); }, {off}));
  EXPECT_TRUE(cg::testing::cuda_matches_cpu64_norm(
      [](const cg::TensorList& t) { return t[0].std(std::int64_t{0}); }, {off}));
}

TEST(ReduceGPU, RunsOnTheCurrentStream) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(26);
  const auto dev = cg::Device::cuda(0);
  auto x = cg::rand({1000003});
  const double want = x.to(cg::DType::float64).sum().item<double>();
  auto g = x.cuda();
  cg::Stream side = cg::Stream::create(dev);
  cg::Tensor s;
  {
    cg::StreamGuard on(side);
    s = g.sum();  // split over many blocks, workspace allocated and freed on `side`
  }
  EXPECT_NEAR(s.item<double>(), want, 1e-5 * want);
  EXPECT_EQ(g.argmax().item<std::int64_t>(), x.argmax().item<std::int64_t>());
}
