// optim::clip_grad_norm_: PyTorch's values for p = 2, 1, 3 and inf, a float64 reference written
// here at awkward sizes, no clipping when the norm is below max_norm, parameters without
// gradients, non-finite norms (with and without error_if_nonfinite), argument errors, and
// (GPU suite) the multi-tensor CUDA path against the float64 CPU path at awkward sizes and
// misaligned views, over several launch tables, its launch counts, determinism, stream
// ordering and the absence of host synchronization.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "cuda/clip_grad.h"
#include "cugrad/cugrad.h"
#include "cugrad/optim.h"
#include "tests/support/gpu.h"
#include "tests/support/parity.h"

namespace cg = cugrad;
using cg::optim::clip_grad_norm_;
using cg::testing::all_close;
using cg::testing::all_equal;

namespace {

const cg::Device kCpu = cg::Device::cpu();
const cg::Device kCuda = cg::Device::cuda(0);
constexpr double kInf = std::numeric_limits<double>::infinity();

cg::Tensor leaf(const cg::Tensor& t) {
  cg::Tensor p = t.detach();
  p.requires_grad_(true);
  return p;
}

std::string message_of(const std::function<void()>& f) { return cg::testing::value_error_message(f); }

::testing::AssertionResult fails_with(const std::function<void()>& f, const std::string& what) {
  const std::string m = message_of(f);
  if (m.find("clip_grad_norm_") != std::string::npos && m.find(what) != std::string::npos &&
      m.find("(not a") == std::string::npos)
    return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "expected a ValueError naming clip_grad_norm_ and containing '" << what << "', got '" << m << "'";
}

std::vector<double> values(const cg::Tensor& t) { return t.cpu().to(cg::DType::float64).to_vector<double>(); }

// The reference, written here from PyTorch's definition: the p-norm of all elements (max |g|
// for inf), coef = min(max_norm / (total + 1e-6), 1), g *= coef.
struct Reference {
  double total = 0;
  std::vector<std::vector<double>> grads;
};

Reference reference(const std::vector<std::vector<double>>& grads, double max_norm, double p) {
  Reference r;
  double acc = 0;
  for (const auto& g : grads)
    for (const double v : g)
      acc = std::isinf(p) ? std::max(acc, std::fabs(v)) : acc + std::pow(std::fabs(v), p);
  r.total = std::isinf(p) ? acc : std::pow(acc, 1 / p);
  const double coef = std::min(max_norm / (r.total + 1e-6), 1.0);
  for (const auto& g : grads) {
    r.grads.push_back(g);
    for (double& v : r.grads.back()) v *= coef;
  }
  return r;
}

::testing::AssertionResult near(const std::vector<double>& actual, const std::vector<double>& expected,
                                double rtol, double atol = 0) {
  if (actual.size() != expected.size())
    return ::testing::AssertionFailure() << "size " << actual.size() << " vs " << expected.size();
  for (std::size_t k = 0; k < actual.size(); ++k)
    if (!(std::fabs(actual[k] - expected[k]) <= atol + rtol * std::fabs(expected[k])))
      return ::testing::AssertionFailure() << "element " << k << ": " << actual[k] << " vs " << expected[k];
  return ::testing::AssertionSuccess();
}

// Parameters of `shapes` (dtype on device) with random gradients scaled by `scale`.
cg::TensorList make_params(const std::vector<cg::Shape>& shapes, cg::Device device, cg::DType dtype,
                           double scale) {
  cg::TensorList params;
  for (const auto& s : shapes) {
    params.push_back(leaf(cg::zeros(s, device, dtype)));
    params.back().set_grad(cg::randn(s, device, dtype) * scale);
  }
  return params;
}

}  // namespace

// ---- CPU ----

TEST(ClipGradNorm, MatchesPyTorch) {
  // torch 1.13 (/usr/bin/python3), float64: a.grad = [3, -4, 0.5], b.grad = [[1, -2], [7, 0.25]],
  // c without grad; torch.nn.utils.clip_grad_norm_([a, b, c], 1.5, norm_type=p) for each p,
  // printing the returned norm and the gradients after it.
  struct Case {
    double p, total;
    std::vector<double> a, b;
  };
  const std::vector<Case> cases = {
      {2.0,
       8.905756565278438,
       {0.5052910959023291, -0.6737214612031055, 0.08421518265038819},
       {0.16843036530077637, -0.33686073060155275, 1.1790125571054346, 0.042107591325194094}},
      {1.0,
       17.75,
       {0.2535211124776838, -0.33802814997024505, 0.04225351874628063},
       {0.08450703749256126, -0.16901407498512253, 0.5915492624479288, 0.021126759373140316}},
      {3.0,
       7.623958471015903,
       {0.5902444808511513, -0.7869926411348684, 0.09837408014185856},
       {0.1967481602837171, -0.3934963205674342, 1.3772371219860198, 0.04918704007092928}},
      {kInf,
       7.0,
       {0.6428570510204212, -0.8571427346938949, 0.10714284183673686},
       {0.21428568367347373, -0.42857136734694745, 1.4999997857143161, 0.05357142091836843}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE("norm_type " + std::to_string(c.p));
    cg::TensorList params = {leaf(cg::zeros({3}, kCpu, cg::DType::float64)),
                             leaf(cg::zeros({2, 2}, kCpu, cg::DType::float64)),
                             leaf(cg::zeros({1}, kCpu, cg::DType::float64))};
    params[0].set_grad(cg::from_vector(std::vector<double>{3, -4, 0.5}, {3}));
    params[1].set_grad(cg::from_vector(std::vector<double>{1, -2, 7, 0.25}, {2, 2}));
    const cg::Tensor total = clip_grad_norm_(params, 1.5, c.p);
    EXPECT_EQ(total.dim(), 0);
    EXPECT_EQ(total.dtype(), cg::DType::float64);
    EXPECT_EQ(total.device(), kCpu);
    EXPECT_NEAR(total.item<double>(), c.total, 1e-13 * c.total);
    EXPECT_TRUE(near(values(params[0].grad()), c.a, 1e-13));
    EXPECT_TRUE(near(values(params[1].grad()), c.b, 1e-13));
    EXPECT_FALSE(params[2].grad().defined());
  }
}

TEST(ClipGradNorm, MatchesFloat64ReferenceAtAwkwardSizes) {
  cg::manual_seed(21);
  const std::vector<cg::Shape> shapes = {{1}, {7}, {33}, {1000003}, {3, 5, 7}, {0}, {16385}};
  for (const cg::DType dtype : {cg::DType::float32, cg::DType::float64}) {
    for (const double p : {2.0, 1.0, 3.5, kInf}) {
      SCOPED_TRACE(cg::detail::cat(dtype, " norm_type ", p));
      cg::TensorList params = make_params(shapes, kCpu, dtype, 0.01);
      std::vector<std::vector<double>> before;
      for (const auto& q : params) before.push_back(values(q.grad()));
      const Reference r = reference(before, /*max_norm=*/0.01, p);
      ASSERT_GT(r.total, 0.01);  // clips
      const cg::Tensor total = clip_grad_norm_(params, 0.01, p);
      EXPECT_EQ(total.dtype(), dtype);
      const double tol = dtype == cg::DType::float32 ? 1e-6 : 1e-12;
      EXPECT_NEAR(total.item<double>(), r.total, tol * r.total);
      for (std::size_t i = 0; i < params.size(); ++i)
        EXPECT_TRUE(near(values(params[i].grad()), r.grads[i], tol, 1e-12)) << "parameter " << i;
    }
  }
}

TEST(ClipGradNorm, BelowMaxNormLeavesGradientsUnchanged) {
  cg::manual_seed(22);
  cg::TensorList params = make_params({{10}, {4, 4}}, kCpu, cg::DType::float32, 1.0);
  std::vector<cg::Tensor> before;
  std::vector<std::uint64_t> versions;
  for (const auto& p : params) {
    before.push_back(p.grad().clone());
    versions.push_back(p.grad().version());
  }
  const double norm = reference({values(before[0]), values(before[1])}, 1e9, 2).total;
  const cg::Tensor total = clip_grad_norm_(params, norm * 1.01);
  EXPECT_NEAR(total.item<double>(), norm, 1e-6 * norm);
  for (std::size_t i = 0; i < params.size(); ++i) {
    EXPECT_TRUE(all_equal(params[i].grad(), before[i]));
    EXPECT_GT(params[i].grad().version(), versions[i]);  // written in place, as PyTorch's mul_
  }
  // max_norm = inf never clips.
  clip_grad_norm_(params, kInf);
  for (std::size_t i = 0; i < params.size(); ++i) EXPECT_TRUE(all_equal(params[i].grad(), before[i]));
}

TEST(ClipGradNorm, ParametersWithoutGradientsAreSkipped) {
  cg::TensorList params = {leaf(cg::zeros({2})), leaf(cg::zeros({3})), leaf(cg::zeros({1}))};
  params[1].set_grad(cg::from_vector(std::vector<float>{0, 3, 4}, {3}));
  const cg::Tensor total = clip_grad_norm_(params, 1.0);
  EXPECT_NEAR(total.item<double>(), 5.0, 1e-6);
  EXPECT_FALSE(params[0].grad().defined());
  EXPECT_FALSE(params[2].grad().defined());
  EXPECT_TRUE(near(values(params[1].grad()), {0, 3 / (5 + 1e-6), 4 / (5 + 1e-6)}, 1e-6));
  // Without any gradient: nothing to do, a float32 zero (PyTorch's torch.tensor(0.)).
  cg::TensorList none = {leaf(cg::zeros({2}, kCpu, cg::DType::float64))};
  const cg::Tensor zero = clip_grad_norm_(none, 1.0);
  EXPECT_EQ(zero.dim(), 0);
  EXPECT_EQ(zero.dtype(), cg::DType::float32);
  EXPECT_EQ(zero.item<double>(), 0.0);
  EXPECT_EQ(clip_grad_norm_({}, 1.0).item<double>(), 0.0);
  // Empty gradients count as norm 0.
  cg::TensorList empty = {leaf(cg::zeros({0}))};
  empty[0].set_grad(cg::zeros({0}));
  EXPECT_EQ(clip_grad_norm_(empty, 1.0).item<double>(), 0.0);
}

TEST(ClipGradNorm, NonFiniteNorms) {
  const auto make = [](float bad) {
    cg::TensorList params = {leaf(cg::zeros({3})), leaf(cg::zeros({2}))};
    params[0].set_grad(cg::from_vector(std::vector<float>{1, bad, -2}, {3}));
    params[1].set_grad(cg::from_vector(std::vector<float>{0.5, 3}, {2}));
    return params;
  };
  // An infinite gradient: total inf, coef 0 (finite gradients become 0, the infinite one NaN),
  // as PyTorch gives.
  {
    cg::TensorList params = make(INFINITY);
    const cg::Tensor total = clip_grad_norm_(params, 1.0);
    EXPECT_TRUE(std::isinf(total.item<double>()));
    const auto g0 = values(params[0].grad());
    EXPECT_EQ(g0[0], 0.0);
    EXPECT_TRUE(std::isnan(g0[1]));
    EXPECT_EQ(values(params[1].grad()), (std::vector<double>{0, 0}));
  }
  // A NaN: everything becomes NaN (the clamp keeps NaN), for p = 2 and inf alike.
  for (const double p : {2.0, kInf}) {
    cg::TensorList params = make(NAN);
    EXPECT_TRUE(std::isnan(clip_grad_norm_(params, 1.0, p).item<double>())) << p;
    for (const auto& q : params)
      for (const double v : values(q.grad())) EXPECT_TRUE(std::isnan(v)) << p;
  }
  // error_if_nonfinite: an error, gradients untouched.
  for (const float bad : {INFINITY, NAN}) {
    cg::TensorList params = make(bad);
    const cg::Tensor g1 = params[1].grad().clone();
    EXPECT_TRUE(fails_with([&] { clip_grad_norm_(params, 1.0, 2.0, true); }, "is non-finite"));
    EXPECT_TRUE(all_equal(params[1].grad(), g1));
  }
  // A finite norm is no error.
  cg::TensorList fine = make(2.0f);
  EXPECT_NEAR(clip_grad_norm_(fine, 100.0, 2.0, true).item<double>(), std::sqrt(1 + 4 + 4 + 0.25 + 9), 1e-5);
}

TEST(ClipGradNorm, MixedDtypesOnTheCpu) {
  cg::TensorList params = {leaf(cg::zeros({2})), leaf(cg::zeros({1}, kCpu, cg::DType::float64))};
  params[0].set_grad(cg::from_vector(std::vector<float>{3, 0}, {2}));
  params[1].set_grad(cg::from_vector(std::vector<double>{4}, {1}));
  const cg::Tensor total = clip_grad_norm_(params, 10.0);
  EXPECT_EQ(total.dtype(), cg::DType::float64);
  EXPECT_NEAR(total.item<double>(), 5.0, 1e-12);
}

TEST(ClipGradNorm, ArgumentErrors) {
  cg::TensorList params = {leaf(cg::zeros({2})), leaf(cg::zeros({2}))};
  params[0].set_grad(cg::ones({2}));
  EXPECT_TRUE(fails_with([&] { clip_grad_norm_(params, -1.0); }, "max_norm must be >= 0"));
  EXPECT_TRUE(fails_with([&] { clip_grad_norm_(params, NAN); }, "max_norm"));
  for (const double p : {0.0, -1.0, -kInf, static_cast<double>(NAN)})
    EXPECT_TRUE(
        fails_with([&] { clip_grad_norm_(params, 1.0, p); }, "norm_type must be a finite p > 0 or inf"))
        << p;
  EXPECT_TRUE(fails_with(
      [&] {
        clip_grad_norm_({params[0], cg::Tensor()}, 1.0);
      },
      "parameter 1 is an undefined"));
  // One gradient on two parameters would be scaled twice.
  params[1].set_grad(params[0].grad());
  EXPECT_TRUE(fails_with([&] { clip_grad_norm_(params, 1.0); }, "parameters 0 and 1 share memory"));
  EXPECT_TRUE(fails_with([&] { clip_grad_norm_({params[0], params[0]}, 1.0); }, "share memory"));
  // Disjoint views of one storage are fine.
  const cg::Tensor arena = cg::ones({4});
  params[0].set_grad(arena.narrow(0, 0, 2));
  params[1].set_grad(arena.narrow(0, 2, 2));
  EXPECT_NEAR(clip_grad_norm_(params, 1.0).item<double>(), 2.0, 1e-6);
  EXPECT_TRUE(near(values(arena), std::vector<double>(4, 0.5 / (1 + 5e-7)), 1e-6));
}

// ---- CUDA ----

namespace {

struct Twin {
  cg::TensorList gpu, cpu;  // float32 on CUDA; float64 copies on the CPU
};

// Gradients at awkward sizes, chunk boundaries, an empty one, one parameter without a
// gradient, and gradients that are views of one storage at offsets that are not multiples of
// 4 elements (16 bytes), so that the vector path must fall back.
Twin make_awkward_twin(double scale) {
  const std::int64_t chunk = cugrad::cuda::kClipGradChunkElements;
  Twin t;
  const std::vector<cg::Shape> shapes = {
      {1}, {7}, {33}, {1000003}, {4}, {chunk}, {chunk + 1}, {2 * chunk + 5}, {3, 5, 7}, {0}};
  for (const auto& s : shapes) {
    t.gpu.push_back(leaf(cg::zeros(s, kCuda)));
    t.gpu.back().set_grad(cg::randn(s, kCuda) * scale);
  }
  const cg::Tensor arena = cg::randn({5000}, kCuda) * scale;
  const std::pair<std::int64_t, std::int64_t> views[] = {{1, 1001}, {1003, 7}, {1012, 4}, {1016, 3 * 677}};
  for (const auto& [offset, n] : views) {
    t.gpu.push_back(leaf(cg::zeros({n}, kCuda)));
    t.gpu.back().set_grad(arena.narrow(0, offset, n));
  }
  t.gpu.push_back(leaf(cg::zeros({5}, kCuda)));  // no gradient
  for (const auto& p : t.gpu) {
    t.cpu.push_back(leaf(cg::zeros(p.shape(), kCpu, cg::DType::float64)));
    if (p.grad().defined()) t.cpu.back().set_grad(p.grad().cpu().to(cg::DType::float64));
  }
  return t;
}

// clip_grad_norm_ on both, then the totals and every gradient compared.
void expect_parity(Twin& t, double max_norm, double p) {
  cg::testing::PoisonGuard poison;  // an unwritten total would read NaN
  const cg::Tensor gpu_total = clip_grad_norm_(t.gpu, max_norm, p);
  const cg::Tensor cpu_total = clip_grad_norm_(t.cpu, max_norm, p);
  EXPECT_EQ(gpu_total.device(), kCuda);
  EXPECT_EQ(gpu_total.dtype(), cg::DType::float32);
  EXPECT_EQ(gpu_total.dim(), 0);
  EXPECT_TRUE(all_close(gpu_total, cpu_total));
  for (std::size_t i = 0; i < t.gpu.size(); ++i) {
    ASSERT_EQ(t.gpu[i].grad().defined(), t.cpu[i].grad().defined()) << i;
    if (t.gpu[i].grad().defined()) {
      EXPECT_TRUE(all_close(t.gpu[i].grad(), t.cpu[i].grad())) << "gradient " << i;
    }
  }
}

cugrad::cuda::ClipGradLaunchCounts launches_since(const cugrad::cuda::ClipGradLaunchCounts& before) {
  const auto now = cugrad::cuda::clip_grad_launch_counts();
  return {now.reduce - before.reduce, now.finalize - before.finalize, now.scale - before.scale};
}

}  // namespace

TEST(ClipGradNormGPU, MatchesCpuAtAwkwardSizes) {
  CUGRAD_REQUIRE_GPU();
  int seed = 30;
  for (const double p : {2.0, 1.0, 3.5, kInf}) {
    for (const double max_norm : {1e-3, 1e9}) {  // clipping, and not
      SCOPED_TRACE(cg::detail::cat("norm_type ", p, " max_norm ", max_norm));
      cg::manual_seed(seed++);
      Twin t = make_awkward_twin(0.01);
      expect_parity(t, max_norm, p);
    }
  }
}

TEST(ClipGradNormGPU, ManyTensorsOverSeveralLaunchTables) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(40);
  Twin t;
  for (int i = 0; i < 300; ++i) {
    const std::int64_t n = i == 150 ? 1000003 : 1 + (i * 7919) % 300;
    t.gpu.push_back(leaf(cg::zeros({n}, kCuda)));
    t.gpu.back().set_grad(cg::randn({n}, kCuda));
    t.cpu.push_back(leaf(cg::zeros({n}, kCpu, cg::DType::float64)));
    t.cpu.back().set_grad(t.gpu.back().grad().cpu().to(cg::DType::float64));
  }
  const auto before = cugrad::cuda::clip_grad_launch_counts();
  expect_parity(t, 1.0, 2.0);
  const auto n = launches_since(before);
  EXPECT_EQ(n.reduce, 2u);  // 256 + 44 tensors
  EXPECT_EQ(n.finalize, 1u);
  EXPECT_EQ(n.scale, 2u);
}

TEST(ClipGradNormGPU, OneReductionOneFinalizeOneScale) {
  CUGRAD_REQUIRE_GPU();
  for (const int count : {1, 64, 65, 256, 257}) {
    cg::TensorList params;
    for (int i = 0; i < count; ++i) {
      params.push_back(leaf(cg::zeros({1 + i % 37}, kCuda)));
      params.back().set_grad(cg::randn({1 + i % 37}, kCuda));
    }
    params.push_back(leaf(cg::zeros({3}, kCuda)));  // no gradient: takes no table entry
    const auto before = cugrad::cuda::clip_grad_launch_counts();
    clip_grad_norm_(params, 0.5);
    const auto n = launches_since(before);
    const std::uint64_t tables = count <= 256 ? 1 : 2;
    EXPECT_EQ(n.reduce, tables) << count;
    EXPECT_EQ(n.finalize, 1u) << count;
    EXPECT_EQ(n.scale, tables) << count;
  }
}

TEST(ClipGradNormGPU, DeterministicTotal) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(41);
  const std::vector<cg::Shape> shapes = {{1000003}, {4097}, {3}, {250000}};
  cg::TensorList params = make_params(shapes, kCuda, cg::DType::float32, 1.0);
  std::vector<cg::Tensor> grads;
  for (const auto& p : params) grads.push_back(p.grad().clone());
  std::vector<float> totals;
  for (int run = 0; run < 5; ++run) {
    for (std::size_t i = 0; i < params.size(); ++i) params[i].set_grad(grads[i].clone());
    totals.push_back(clip_grad_norm_(params, 1.0).item<float>());
  }
  for (const float v : totals) EXPECT_EQ(v, totals[0]);  // bit for bit
}

TEST(ClipGradNormGPU, NonFiniteNorms) {
  CUGRAD_REQUIRE_GPU();
  const auto make = [](float bad) {
    cg::TensorList params = {leaf(cg::zeros({40000}, kCuda)), leaf(cg::zeros({2}, kCuda))};
    cg::Tensor g0 = cg::ones({40000});
    g0.data_ptr<float>()[20001] = bad;
    params[0].set_grad(g0.to(kCuda));
    params[1].set_grad(cg::from_vector(std::vector<float>{0.5, 3}, {2}, kCuda));
    return params;
  };
  {
    cg::TensorList params = make(INFINITY);
    EXPECT_TRUE(std::isinf(clip_grad_norm_(params, 1.0).item<double>()));
    const auto g0 = values(params[0].grad());
    EXPECT_EQ(g0[0], 0.0);
    EXPECT_TRUE(std::isnan(g0[20001]));
    EXPECT_EQ(values(params[1].grad()), (std::vector<double>{0, 0}));
  }
  for (const double p : {2.0, kInf}) {
    cg::TensorList params = make(NAN);
    EXPECT_TRUE(std::isnan(clip_grad_norm_(params, 1.0, p).item<double>())) << p;
    for (const double v : values(params[1].grad())) EXPECT_TRUE(std::isnan(v)) << p;
  }
  for (const float bad : {INFINITY, NAN}) {
    cg::TensorList params = make(bad);
    const cg::Tensor g1 = params[1].grad().clone();
    EXPECT_TRUE(fails_with([&] { clip_grad_norm_(params, 1.0, 2.0, true); }, "is non-finite"));
    EXPECT_TRUE(all_equal(params[1].grad(), g1));
  }
}

TEST(ClipGradNormGPU, DoesNotWaitForTheDevice) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(42);
  cg::TensorList params = make_params({{1000003}, {77}}, kCuda, cg::DType::float32, 1.0);
  clip_grad_norm_(params, 1e9);  // warm-up (module loading); does not clip
  Twin t;
  t.gpu = params;
  for (const auto& q : params) {
    t.cpu.push_back(leaf(cg::zeros(q.shape(), kCpu, cg::DType::float64)));
    t.cpu.back().set_grad(q.grad().cpu().to(cg::DType::float64));
  }
  // Behind a 300 ms kernel, the call must return at once: the coefficient stays on the device.
  cg::testing::spin_on(cg::Stream::current(kCuda), 300);
  const auto start = std::chrono::steady_clock::now();
  const cg::Tensor total = clip_grad_norm_(t.gpu, 0.5);
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(ms, 150.0);
  // And the results, read afterwards, are right.
  const cg::Tensor cpu_total = clip_grad_norm_(t.cpu, 0.5);
  EXPECT_TRUE(all_close(total, cpu_total));
  for (std::size_t i = 0; i < t.gpu.size(); ++i)
    EXPECT_TRUE(all_close(t.gpu[i].grad(), t.cpu[i].grad())) << i;
}

TEST(ClipGradNormGPU, WaitsForGradientsProducedOnAnotherStream) {
  CUGRAD_REQUIRE_GPU();
  const std::int64_t n = 1 << 20;
  cg::Tensor p = leaf(cg::zeros({n}, kCuda));
  cg::Tensor g = cg::zeros({n}, kCuda);
  p.set_grad(g);
  // The gradient's final value is written on the default stream behind a slow kernel; the
  // clipping runs on another stream and must wait for it.
  cg::testing::spin_on(cg::Stream::current(kCuda), 50);
  g.fill_(2.0);
  const cg::Stream side = cg::Stream::create(kCuda);
  cg::Tensor total;
  {
    cg::StreamGuard on(side);
    total = clip_grad_norm_({p}, 1.0);
  }
  const double norm = 2.0 * std::sqrt(static_cast<double>(n));
  EXPECT_NEAR(total.item<double>(), norm, 1e-5 * norm);
  EXPECT_TRUE(all_close(g, cg::full({n}, 2.0 / (norm + 1e-6), kCuda)));
}

TEST(ClipGradNormGPU, GradientsOnTwoDevicesAreAnError) {
  CUGRAD_REQUIRE_GPU();
  cg::TensorList params = {leaf(cg::zeros({2})), leaf(cg::zeros({2}, kCuda))};
  params[0].set_grad(cg::ones({2}));
  params[1].set_grad(cg::ones({2}, kCuda));
  EXPECT_TRUE(fails_with([&] { clip_grad_norm_(params, 1.0); }, "all gradients must be on one device"));
}
