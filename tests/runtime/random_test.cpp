// Philox random numbers: reproducible for a seed, distribution sanity on the CPU, and the
// same numbers on the CPU and on CUDA.
#include <gtest/gtest.h>

#include <cmath>

#include "cugrad/cugrad.h"
#include "host/runtime/philox.h"
#include "tests/support/parity.h"

namespace cg = cugrad;

TEST(Random, SeedReproducesSequence) {
  cg::manual_seed(123);
  auto a1 = cg::rand({1000}), b1 = cg::randn({77}), c1 = cg::randint(0, 10, {55});
  cg::manual_seed(123);
  auto a2 = cg::rand({1000}), b2 = cg::randn({77}), c2 = cg::randint(0, 10, {55});
  EXPECT_EQ(a1.to_vector<float>(), a2.to_vector<float>());
  EXPECT_EQ(b1.to_vector<float>(), b2.to_vector<float>());
  EXPECT_EQ(c1.to_vector<std::int64_t>(), c2.to_vector<std::int64_t>());
  cg::manual_seed(124);
  EXPECT_NE(cg::rand({1000}).to_vector<float>(), a1.to_vector<float>());
}

TEST(Random, SuccessiveDrawsDiffer) {
  cg::manual_seed(5);
  auto a = cg::randn({64}).to_vector<float>();
  auto b = cg::randn({64}).to_vector<float>();
  EXPECT_NE(a, b);
}

TEST(Random, StateSaveRestore) {
  cg::manual_seed(9);
  (void)cg::rand({10});
  const auto state = cg::get_rng_state();
  auto a = cg::randn({100}).to_vector<float>();
  cg::set_rng_state(state);
  EXPECT_EQ(cg::randn({100}).to_vector<float>(), a);
}

TEST(Random, PhiloxKnownAnswer) {
  // Random123's published known-answer test for philox4x32-10 with counter 0 and key 0:
  // 6627e8d5 e169c58d bc57ac4c 9b00dbd8.
  const auto r = cg::philox::philox4x32_10(0, 0);
  EXPECT_EQ(r.v[0], 0x6627e8d5u);
  EXPECT_EQ(r.v[1], 0xe169c58du);
  EXPECT_EQ(r.v[2], 0xbc57ac4cu);
  EXPECT_EQ(r.v[3], 0x9b00dbd8u);
}

TEST(Random, DistributionsLookRight) {
  cg::manual_seed(0);
  const int n = 200000;
  auto u = cg::rand({n}).to_vector<float>();
  double s = 0, s2 = 0;
  for (float v : u) {
    ASSERT_GE(v, 0.f);
    ASSERT_LT(v, 1.f);
    s += v;
  }
  EXPECT_NEAR(s / n, 0.5, 0.005);
  auto z = cg::randn({n}).to_vector<float>();
  s = 0;
  for (float v : z) {
    ASSERT_TRUE(std::isfinite(v));
    s += v;
    s2 += static_cast<double>(v) * v;
  }
  EXPECT_NEAR(s / n, 0.0, 0.01);
  EXPECT_NEAR(s2 / n, 1.0, 0.02);
  auto k = cg::randint(-3, 4, {n}).to_vector<std::int64_t>();
  std::vector<int> counts(7, 0);
  for (auto v : k) {
    ASSERT_GE(v, -3);
    ASSERT_LT(v, 4);
    ++counts[static_cast<std::size_t>(v + 3)];
  }
  for (int c : counts) EXPECT_NEAR(c, n / 7.0, n / 7.0 * 0.05);
  auto d = cg::randn({1000}, cg::Device::cpu(), cg::DType::float64);
  EXPECT_EQ(d.dtype(), cg::DType::float64);
  EXPECT_THROW(cg::rand({3}, cg::Device::cpu(), cg::DType::int64), cg::ValueError);
  EXPECT_THROW(cg::randint(5, 5, {3}), cg::ValueError);
  EXPECT_THROW(cg::randint(0, 5, {3}, cg::Device::cpu(), cg::DType::float32), cg::ValueError);
}

TEST(RandomGPU, CpuAndCudaGiveTheSameNumbers) {
  CUGRAD_REQUIRE_GPU();
  const cg::Device gpu = cg::Device::cuda(0);
  for (auto n : {1, 7, 33, 1000003}) {
    cg::manual_seed(42);
    auto u_cpu = cg::rand({n}), z_cpu = cg::randn({n}), k_cpu = cg::randint(-5, 1000, {n});
    cg::manual_seed(42);
    auto u_gpu = cg::rand({n}, gpu), z_gpu = cg::randn({n}, gpu), k_gpu = cg::randint(-5, 1000, {n}, gpu);
    EXPECT_TRUE(cg::testing::all_equal(u_gpu, u_cpu)) << n;
    // Box-Muller runs in double on both sides; allow the last float bit for libm vs CUDA math.
    EXPECT_TRUE(cg::testing::all_close(z_gpu, z_cpu, {1e-6, 1e-6})) << n;
    EXPECT_TRUE(cg::testing::all_equal(k_gpu, k_cpu)) << n;
  }
}
