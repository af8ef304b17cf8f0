// The fused dropout (host/nn/dropout.cpp, cuda/dropout.cu, host/cpu/dropout.cpp): bit for bit the
// composite it replaced (ge(rand_like(x), p) as x's dtype, times 1/(1-p), times x) forward and
// backward, the generator advanced as rand_like(x) advances it, NaN and infinity handled as the
// composite handles them, the one-byte mask saved by the node; and (GPU suite) CUDA against the
// CPU bit for bit at sizes around multiples of four (the kernel's Philox groups), on views at
// every offset modulo four (its scalar path) and with new memory poisoned.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "cugrad/cugrad.h"
#include "tests/support/parity.h"

namespace cg = cugrad;
namespace F = cugrad::nn::functional;
using cg::testing::all_equal;

namespace {

// The composite dropout of before (values and gradient), from the generator's state at the call.
struct Composite {
  cg::Tensor y, dx, next_draw;
};
Composite composite(const cg::Tensor& x, const cg::Tensor& dy, double p, std::uint64_t seed) {
  cg::manual_seed(seed);
  cg::Tensor keep = cg::ge(cg::rand_like(x), p).to(x.dtype());
  keep.mul_(1.0 / (1.0 - p));
  Composite c;
  c.y = x * keep;
  c.dx = dy * keep;
  c.next_draw = cg::rand({5}, x.device());
  return c;
}

Composite fused(const cg::Tensor& x, const cg::Tensor& dy, double p, std::uint64_t seed) {
  cg::manual_seed(seed);
  const cg::Tensor leaf = x.detach().requires_grad_();
  Composite f;
  f.y = F::dropout(leaf, p);
  f.dx = cg::autograd::grad({f.y}, {leaf}, {dy})[0];
  f.y = f.y.detach();
  f.next_draw = cg::rand({5}, x.device());
  return f;
}

void expect_same(const Composite& a, const Composite& b) {
  EXPECT_TRUE(all_equal(a.y, b.y)) << "output";
  EXPECT_TRUE(all_equal(a.dx, b.dx)) << "gradient";
  EXPECT_TRUE(all_equal(a.next_draw, b.next_draw)) << "the generator afterwards";
}

}  // namespace

TEST(DropoutOp, BitwiseTheCompositeOnTheCpu) {
  for (const cg::DType dtype : {cg::DType::float32, cg::DType::float64}) {
    for (const std::int64_t n : {1, 3, 4, 5, 63, 1001}) {
      for (const double p : {0.1, 0.25, 0.5, 0.9}) {
        SCOPED_TRACE(cg::detail::cat(dtype, " n=", n, " p=", p));
        cg::manual_seed(static_cast<std::uint64_t>(n));
        const cg::Tensor x = cg::randn({n}, cg::Device::cpu(), dtype),
                         dy = cg::randn({n}, cg::Device::cpu(), dtype);
        expect_same(fused(x, dy, p, 42), composite(x, dy, p, 42));
      }
    }
  }
}

TEST(DropoutOp, NanAndInfinityAsTheComposite) {
  const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  std::vector<float> v(64);
  for (std::size_t i = 0; i < v.size(); ++i)
    v[i] = static_cast<float>(i % 4 == 0 ? inf : i % 4 == 1 ? -inf : nan);
  const cg::Tensor x = cg::from_vector(v, {64}), dy = cg::from_vector(v, {64});
  const Composite f = fused(x, dy, 0.5, 3), c = composite(x, dy, 0.5, 3);
  expect_same(f, c);
  // A dropped infinity is NaN (inf · 0), as in the composite and in PyTorch.
  const auto y = f.y.to_vector<float>();
  int nans = 0;
  for (float e : y) nans += std::isnan(e);
  EXPECT_GT(nans, 64 / 4 + 5);
}

TEST(DropoutOp, OneNodeOnlyWhenAGradientIsNeeded) {
  cg::manual_seed(1);
  const cg::Tensor x = cg::randn({10, 10}).requires_grad_();
  const cg::Tensor y = F::dropout(x, 0.5);
  EXPECT_EQ(y.grad_fn_name(), "DropoutBackward");
  // No node when nothing needs a gradient.
  EXPECT_EQ(F::dropout(x.detach(), 0.5).grad_fn_name(), "");
}

TEST(DropoutOp, BackwardChecksTheGradientShape) {
  cg::manual_seed(2);
  const cg::Tensor x = cg::randn({6}).requires_grad_();
  const cg::Tensor y = F::dropout(x, 0.5);
  EXPECT_THROW(cg::autograd::grad({y}, {x}, {cg::randn({7})}), cg::Error);
}

TEST(DropoutOpGradcheck, Float64WithAFixedMaskOnAnOddSize) {
  const cg::Tensor x = cg::randn({3, 7}, cg::Device::cpu(), cg::DType::float64).requires_grad_();
  EXPECT_EQ(cg::autograd::gradcheck(
                [](const cg::TensorList& t) {
                  cg::manual_seed(11);  // the same mask at every evaluation
                  return F::dropout(t[0], 0.3);
                },
                {x}),
            "");
}

// ---- GPU ----

TEST(DropoutOpGPU, BitwiseTheCpuAtAwkwardSizesAndOffsets) {
  CUGRAD_REQUIRE_GPU();
  const cg::testing::PoisonGuard poison;
  for (const std::int64_t n : {1, 2, 3, 4, 5, 7, 8, 9, 1023, 1024, 1025, 12289, 1000003}) {
    for (const std::int64_t offset : {0, 1, 2, 3}) {
      if (n > 2000 && offset % 2 == 1) continue;
      SCOPED_TRACE(cg::detail::cat("n=", n, " offset=", offset));
      cg::manual_seed(static_cast<std::uint64_t>(n + offset));
      // Views into a larger tensor: offset % 4 != 0 misaligns x and dy for 128-bit accesses.
      const cg::Tensor xb = cg::randn({n + 4}), gb = cg::randn({n + 4});
      const cg::Tensor x = xb.narrow(0, offset, n), dy = gb.narrow(0, offset, n);
      const Composite on_cpu = fused(x, dy, 0.3, 77);
      const Composite on_gpu = fused(xb.cuda().narrow(0, offset, n), gb.cuda().narrow(0, offset, n), 0.3, 77);
      EXPECT_TRUE(on_gpu.y.is_cuda());
      EXPECT_TRUE(all_equal(on_gpu.y.cpu(), on_cpu.y)) << "output";
      EXPECT_TRUE(all_equal(on_gpu.dx.cpu(), on_cpu.dx)) << "gradient";
      EXPECT_TRUE(all_equal(on_gpu.next_draw.cpu(), on_cpu.next_draw)) << "the generator afterwards";
    }
  }
}

TEST(DropoutOpGPU, BitwiseTheCompositeOnTheDevice) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(5);
  const cg::Tensor x = cg::randn({257, 33}).cuda(), dy = cg::randn({257, 33}).cuda();
  for (const double p : {0.25, 0.5}) expect_same(fused(x, dy, p, 8), composite(x, dy, p, 8));
}
