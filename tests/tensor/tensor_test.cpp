// Tensor basics: factories, conversions, copies, views, printing, versions, and their errors.
#include <gtest/gtest.h>

#include <sstream>

#include "cugrad/cugrad.h"
#include "tests/support/parity.h"

namespace cg = cugrad;
using cg::testing::all_close;
using cg::testing::all_equal;

TEST(Tensor, FactoriesFillValues) {
  auto z = cg::zeros({2, 3});
  EXPECT_EQ(z.shape(), (cg::Shape{2, 3}));
  EXPECT_EQ(z.dtype(), cg::DType::float32);
  EXPECT_EQ(z.device(), cg::Device::cpu());
  for (float v : z.to_vector<float>()) EXPECT_EQ(v, 0.f);
  for (float v : cg::ones({4}).to_vector<float>()) EXPECT_EQ(v, 1.f);
  for (std::int64_t v : cg::full({3}, 7, cg::Device::cpu(), cg::DType::int64).to_vector<std::int64_t>()) EXPECT_EQ(v, 7);
  for (double v : cg::full({5}, -2.5, cg::Device::cpu(), cg::DType::float64).to_vector<double>()) EXPECT_EQ(v, -2.5);
  auto e = cg::empty({0, 4});
  EXPECT_EQ(e.numel(), 0);
  EXPECT_EQ(e.to_vector<float>().size(), 0u);
}

TEST(Tensor, ScalarTensorHasNoDims) {
  auto s = cg::full({}, 3.5);
  EXPECT_EQ(s.dim(), 0);
  EXPECT_EQ(s.numel(), 1);
  EXPECT_FLOAT_EQ(s.item<float>(), 3.5f);
}

TEST(Tensor, Arange) {
  EXPECT_EQ(cg::arange(5).to_vector<std::int64_t>(), (std::vector<std::int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(cg::arange(1.0, 2.0, 0.25, cg::Device::cpu(), cg::DType::float32).to_vector<float>(),
            (std::vector<float>{1.0f, 1.25f, 1.5f, 1.75f}));
  EXPECT_EQ(cg::arange(5.0, 0.0, -2.0).to_vector<std::int64_t>(), (std::vector<std::int64_t>{5, 3, 1}));
  EXPECT_EQ(cg::arange(0).numel(), 0);
  EXPECT_THROW(cg::arange(0.0, 1.0, 0.0), cg::ValueError);
  EXPECT_THROW(cg::arange(0.0, 5.0, -1.0), cg::ValueError);
}

TEST(Tensor, FromVectorAndBlobCopy) {
  std::vector<float> v{1, 2, 3, 4, 5, 6};
  auto t = cg::from_vector(v, {2, 3});
  v[0] = 100;  // the tensor owns a copy
  EXPECT_EQ(t.to_vector<float>(), (std::vector<float>{1, 2, 3, 4, 5, 6}));
  std::int32_t raw[3] = {9, 8, 7};
  auto b = cg::from_blob(raw, {3}, cg::DType::int32);
  raw[1] = 0;
  EXPECT_EQ(b.to_vector<std::int32_t>(), (std::vector<std::int32_t>{9, 8, 7}));
  EXPECT_THROW(cg::from_vector(v, {4, 2}), cg::ValueError);
  EXPECT_THROW(cg::from_blob(nullptr, {3}, cg::DType::float32), cg::ValueError);
}

TEST(Tensor, LikeFactoriesKeepShapeDtypeDevice) {
  auto t = cg::from_vector(std::vector<std::int32_t>{1, 2, 3, 4}, {2, 2});
  auto z = cg::zeros_like(t), o = cg::ones_like(t), f = cg::full_like(t, 5), e = cg::empty_like(t);
  for (auto* x : {&z, &o, &f, &e}) {
    EXPECT_EQ(x->shape(), t.shape());
    EXPECT_EQ(x->dtype(), cg::DType::int32);
  }
  EXPECT_EQ(f.to_vector<std::int32_t>(), (std::vector<std::int32_t>{5, 5, 5, 5}));
  auto r = cg::randn_like(cg::zeros({3, 4}));
  EXPECT_EQ(r.shape(), (cg::Shape{3, 4}));
  auto u = cg::rand_like(cg::zeros({3, 4}, cg::Device::cpu(), cg::DType::float64));
  EXPECT_EQ(u.dtype(), cg::DType::float64);
}

TEST(Tensor, DtypeConversions) {
  auto t = cg::from_vector(std::vector<float>{1.7f, -2.2f, 3.0f}, {3});
  EXPECT_EQ(t.to(cg::DType::int64).to_vector<std::int64_t>(), (std::vector<std::int64_t>{1, -2, 3}));
  EXPECT_EQ(t.to(cg::DType::float64).to_vector<double>()[0], static_cast<double>(1.7f));
  auto u = cg::from_vector(std::vector<std::uint8_t>{0, 255, 7}, {3});
  EXPECT_EQ(u.to(cg::DType::float32).to_vector<float>(), (std::vector<float>{0, 255, 7}));
  EXPECT_TRUE(t.to(cg::DType::float32).shares_storage(t));  // no-op conversion returns itself
}

// Floating point to uint8 as PyTorch converts (through int64: wraps modulo 256), so that CPU
// and CUDA agree; the values are PyTorch 1.13's output for the same inputs.
TEST(Tensor, FloatToUint8WrapsAsPyTorch) {
  const std::vector<float> v{-2.0f, -1.5f, -0.5f, 0.0f, 3.7f, 255.0f, 256.0f, 300.5f, -300.0f};
  const std::vector<std::uint8_t> want{254, 255, 0, 0, 3, 255, 0, 44, 212};
  const auto x = cg::from_vector(v, {9});
  EXPECT_EQ(x.to(cg::DType::uint8).to_vector<std::uint8_t>(), want);
  EXPECT_EQ(x.to(cg::DType::float64).to(cg::DType::uint8).to_vector<std::uint8_t>(), want);
  EXPECT_EQ(cg::full({2}, -1.0, cg::Device::cpu(), cg::DType::uint8).to_vector<std::uint8_t>(),
            (std::vector<std::uint8_t>{255, 255}));
  EXPECT_EQ(cg::arange(-3.0, 0.0, 1.0, cg::Device::cpu(), cg::DType::uint8).to_vector<std::uint8_t>(),
            (std::vector<std::uint8_t>{253, 254, 255}));
}

TEST(Tensor, ItemAndToVectorCheckTypes) {
  auto t = cg::from_vector(std::vector<std::int64_t>{42}, {1});
  EXPECT_EQ(t.item<int>(), 42);
  EXPECT_DOUBLE_EQ(t.item<double>(), 42.0);
  EXPECT_THROW(cg::zeros({2}).item<float>(), cg::ValueError);
  EXPECT_THROW(t.to_vector<float>(), cg::ValueError);
  EXPECT_THROW(t.data_ptr<float>(), cg::ValueError);
}

TEST(Tensor, CloneAndCopyAreDeep) {
  auto a = cg::from_vector(std::vector<float>{1, 2, 3}, {3});
  auto c = a.clone();
  EXPECT_FALSE(c.shares_storage(a));
  a.fill_(0);
  EXPECT_EQ(c.to_vector<float>(), (std::vector<float>{1, 2, 3}));
  auto d = cg::zeros({3}, cg::Device::cpu(), cg::DType::int32);
  d.copy_(c);  // converts dtype
  EXPECT_EQ(d.to_vector<std::int32_t>(), (std::vector<std::int32_t>{1, 2, 3}));
  EXPECT_THROW(d.copy_(cg::zeros({4})), cg::ValueError);
}

TEST(Tensor, ViewsShareStorageAndKeepContiguity) {
  auto t = cg::arange(0.0, 24.0, 1.0, cg::Device::cpu(), cg::DType::float32).reshape({2, 3, 4});
  EXPECT_EQ(t.shape(), (cg::Shape{2, 3, 4}));
  auto v = t.view({6, -1});
  EXPECT_EQ(v.shape(), (cg::Shape{6, 4}));
  EXPECT_TRUE(v.shares_storage(t));
  EXPECT_EQ(t.flatten().shape(), (cg::Shape{24}));
  EXPECT_EQ(t.flatten(1).shape(), (cg::Shape{2, 12}));
  EXPECT_EQ(t.flatten(0, 1).shape(), (cg::Shape{6, 4}));
  EXPECT_EQ(t.unsqueeze(0).shape(), (cg::Shape{1, 2, 3, 4}));
  EXPECT_EQ(t.unsqueeze(-1).shape(), (cg::Shape{2, 3, 4, 1}));
  EXPECT_EQ(t.unsqueeze(1).squeeze(1).shape(), t.shape());
  EXPECT_EQ(cg::zeros({1, 3, 1}).squeeze().shape(), (cg::Shape{3}));
  EXPECT_EQ(cg::zeros({1, 3, 1}).squeeze(1).shape(), (cg::Shape{1, 3, 1}));  // size != 1: unchanged

  auto rows = t.narrow(0, 1, 1);
  EXPECT_EQ(rows.shape(), (cg::Shape{1, 3, 4}));
  EXPECT_EQ(rows.to_vector<float>()[0], 12.f);
  auto sel = t.select(0, -1).select(0, 2);
  EXPECT_EQ(sel.shape(), (cg::Shape{4}));
  EXPECT_EQ(sel.to_vector<float>(), (std::vector<float>{20, 21, 22, 23}));
  EXPECT_EQ(t[1][0].to_vector<float>(), (std::vector<float>{12, 13, 14, 15}));

  // Writes through a view are seen by the base.
  auto row = t.select(0, 0);
  row.fill_(-1);
  EXPECT_EQ(t.to_vector<float>()[11], -1.f);
  EXPECT_EQ(t.to_vector<float>()[12], 12.f);
}

TEST(Tensor, ViewErrorsNameTheOp) {
  auto t = cg::zeros({2, 3});
  try {
    t.reshape({4, 2});
    FAIL() << "no throw";
  } catch (const cg::ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("reshape"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[2, 3]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(t.reshape({-1, -1}), cg::ValueError);
  EXPECT_THROW(t.narrow(1, 0, 1), cg::ValueError);  // not dim 0
  EXPECT_THROW(t.narrow(0, 1, 2), cg::ValueError);  // out of range
  EXPECT_THROW(t.select(0, 2), cg::ValueError);
  EXPECT_THROW(t.unsqueeze(4), cg::ValueError);
  EXPECT_THROW(t.flatten(1, 0), cg::ValueError);
  EXPECT_THROW(t.size(2), cg::ValueError);
  EXPECT_THROW(cg::zeros({1, 1, 1, 1, 1, 1, 1, 1, 1}), cg::ValueError);  // 9 dims
  EXPECT_THROW(cg::zeros({2, -1}), cg::ValueError);
  cg::Tensor undefined;
  EXPECT_THROW(undefined.shape(), cg::ValueError);
  EXPECT_THROW(undefined.clone(), cg::ValueError);
}

TEST(Tensor, InPlaceOpsBumpVersion) {
  auto t = cg::zeros({4});
  auto view = t.narrow(0, 0, 2);
  const auto v0 = t.version();
  t.fill_(1);
  EXPECT_GT(t.version(), v0);
  const auto v1 = t.version();
  view.add_(1.0);
  EXPECT_GT(t.version(), v1);  // views share the counter
  const auto v2 = t.version();
  t.copy_(cg::ones({4}));
  EXPECT_GT(t.version(), v2);
  const auto v3 = t.version();
  auto r = t + 1.0;  // out of place: no bump
  EXPECT_EQ(t.version(), v3);
}

TEST(Tensor, PrintsShapeDtypeDeviceAndValues) {
  std::ostringstream os;
  os << cg::from_vector(std::vector<std::int64_t>{1, 2, 3, 4}, {2, 2});
  EXPECT_NE(os.str().find("shape=[2, 2]"), std::string::npos) << os.str();
  EXPECT_NE(os.str().find("int64"), std::string::npos);
  EXPECT_NE(os.str().find("cpu"), std::string::npos);
  EXPECT_NE(os.str().find("[[1, 2],"), std::string::npos) << os.str();
  std::ostringstream big;
  big << cg::arange(100);
  EXPECT_NE(big.str().find("..."), std::string::npos) << big.str();
  EXPECT_NE(big.str().find("99"), std::string::npos);
  EXPECT_EQ(big.str().find("50"), std::string::npos);
}

TEST(Tensor, CudaRequestsWithoutGpuAreClearErrors) {
  if (cg::cuda_is_available()) GTEST_SKIP() << "a GPU is visible: this checks the no-GPU behaviour";
  EXPECT_EQ(cg::device_count(), 0);
  try {
    cg::zeros({2}, cg::Device::cuda(0));
    FAIL() << "no throw";
  } catch (const cg::Error& e) {
    EXPECT_NE(std::string(e.what()).find("cuda:0"), std::string::npos) << e.what();
  }
  EXPECT_THROW(cg::zeros({2}).to(cg::Device::cuda(0)), cg::Error);
  EXPECT_THROW(cg::Stream::create(cg::Device::cuda(0)), cg::Error);
  EXPECT_NO_THROW(cg::synchronize());
}

TEST(Device, ParseAndPrint) {
  EXPECT_EQ(cg::Device::parse("cpu"), cg::Device::cpu());
  EXPECT_EQ(cg::Device::parse("cuda"), cg::Device::cuda(0));
  EXPECT_EQ(cg::Device::parse("cuda:3"), cg::Device::cuda(3));
  EXPECT_EQ(cg::Device::cuda(2).str(), "cuda:2");
  EXPECT_THROW(cg::Device::parse("gpu"), cg::ValueError);
  EXPECT_THROW(cg::Device::parse("cuda:x"), cg::ValueError);
}

// ---- GPU ----

TEST(TensorGPU, RoundTripsEveryDtype) {
  CUGRAD_REQUIRE_GPU();
  const cg::Device gpu = cg::Device::cuda(0);
  for (auto n : {1, 7, 33, 1000003}) {
    auto f = cg::randn({n});
    EXPECT_TRUE(all_equal(f.to(gpu).cpu(), f));
    auto i = cg::randint(-1000, 1000, {n});
    EXPECT_TRUE(all_equal(i.to(gpu).cpu(), i));
    auto i32 = i.to(cg::DType::int32);
    EXPECT_TRUE(all_equal(i32.to(gpu).cpu(), i32));
    auto u8 = cg::randint(0, 256, {n}, cg::Device::cpu(), cg::DType::uint8);
    EXPECT_TRUE(all_equal(u8.to(gpu).cpu(), u8));
  }
}

TEST(TensorGPU, Float64IsCpuOnly) {
  CUGRAD_REQUIRE_GPU();
  EXPECT_THROW(cg::zeros({2}, cg::Device::cuda(0), cg::DType::float64), cg::ValueError);
  EXPECT_THROW(cg::zeros({2}, cg::Device::cpu(), cg::DType::float64).cuda(), cg::ValueError);
  EXPECT_THROW(cg::zeros({2}, cg::Device::cuda(0)).to(cg::DType::float64), cg::ValueError);
}

TEST(TensorGPU, FactoriesCastsAndCopiesMatchCpu) {
  CUGRAD_REQUIRE_GPU();
  const cg::Device gpu = cg::Device::cuda(0);
  cg::testing::PoisonGuard poison;
  EXPECT_TRUE(all_equal(cg::full({1000003}, 2.5, gpu), cg::full({1000003}, 2.5)));
  EXPECT_TRUE(all_equal(cg::zeros({33}, gpu, cg::DType::int32), cg::zeros({33}, cg::Device::cpu(), cg::DType::int32)));
  EXPECT_TRUE(all_equal(cg::arange(0.0, 1000003.0, 1.0, gpu), cg::arange(0.0, 1000003.0, 1.0)));
  EXPECT_TRUE(all_equal(cg::arange(-3.0, 4.0, 0.5, gpu, cg::DType::float32),
                        cg::arange(-3.0, 4.0, 0.5, cg::Device::cpu(), cg::DType::float32)));
  auto x = cg::randn({7, 33}) * 100.0;
  for (auto to : {cg::DType::int64, cg::DType::int32, cg::DType::uint8}) {
    EXPECT_TRUE(all_equal(x.cuda().to(to), x.to(to))) << to;
    EXPECT_TRUE(all_equal(x.to(to).cuda().to(cg::DType::float32), x.to(to).to(cg::DType::float32))) << to;
  }
  const auto wrap = cg::from_vector(std::vector<float>{-2.0f, -300.0f, 300.5f, 3.7f}, {4});
  EXPECT_EQ(wrap.cuda().to(cg::DType::uint8).to_vector<std::uint8_t>(),
            (std::vector<std::uint8_t>{254, 212, 44, 3}));
  EXPECT_EQ(cg::full({2}, -1.0, gpu, cg::DType::uint8).to_vector<std::uint8_t>(),
            (std::vector<std::uint8_t>{255, 255}));
  auto dst = cg::empty({7, 33}, gpu);
  dst.copy_(x);  // host to device
  EXPECT_TRUE(all_equal(dst, x));
  auto dst2 = cg::empty({7, 33}, gpu, cg::DType::int64);
  dst2.copy_(dst);  // device to device with conversion
  EXPECT_TRUE(all_equal(dst2, x.to(cg::DType::int64)));
  auto host = cg::empty({7, 33});
  host.copy_(dst);  // device to host
  EXPECT_TRUE(all_equal(host, x));
  auto view = dst.narrow(0, 2, 3);
  EXPECT_TRUE(all_equal(view, x.narrow(0, 2, 3)));
  EXPECT_TRUE(all_equal(dst.clone(), x));
  EXPECT_FLOAT_EQ(dst[3].to_vector<float>()[5], x.to_vector<float>()[3 * 33 + 5]);
  EXPECT_FLOAT_EQ(cg::full({}, 4.25, gpu).item<float>(), 4.25f);
}
