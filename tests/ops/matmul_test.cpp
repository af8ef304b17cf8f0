// matmul and the GEMM launchers: the CPU path (CBLAS) against a naive triple loop in double at
// awkward sizes, the errors, and (GPU suites) cuBLAS against the float64 CPU reference, TF32
// opt-in, non-default streams, cross-stream ordering and the per-thread handles.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "cuda/blas.h"
#include "cugrad/cugrad.h"
#include "host/cpu/matmul.h"
#include "tests/support/gpu.h"
#include "tests/support/parity.h"

namespace cg = cugrad;
using cg::testing::all_close;
using cg::testing::all_equal;
using cg::testing::norm_close;

namespace {

const cg::Device kCpu = cg::Device::cpu();
const cg::Device kCuda = cg::Device::cuda(0);

// The product a @ b by the definition, in double, with a batch dimension that is absent or 1
// on one side shared by every product.
cg::Tensor naive_matmul(const cg::Tensor& a, const cg::Tensor& b) {
  const std::vector<double> av = a.cpu().to(cg::DType::float64).to_vector<double>();
  const std::vector<double> bv = b.cpu().to(cg::DType::float64).to_vector<double>();
  const std::int64_t m = a.size(-2), k = a.size(-1), n = b.size(-1);
  const std::int64_t batch_a = a.dim() == 3 ? a.size(0) : 1, batch_b = b.dim() == 3 ? b.size(0) : 1;
  const std::int64_t batch = batch_a == 1 ? batch_b : batch_a;
  std::vector<double> c(static_cast<std::size_t>(batch * m * n));
  for (std::int64_t t = 0; t < batch; ++t) {
    const std::int64_t ta = batch_a == 1 ? 0 : t, tb = batch_b == 1 ? 0 : t;
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (std::int64_t p = 0; p < k; ++p)
          s += av[static_cast<std::size_t>((ta * m + i) * k + p)] *
               bv[static_cast<std::size_t>((tb * k + p) * n + j)];
        c[static_cast<std::size_t>((t * m + i) * n + j)] = s;
      }
  }
  const cg::Shape out = (a.dim() == 3 || b.dim() == 3) ? cg::Shape{batch, m, n} : cg::Shape{m, n};
  return cg::from_vector(c, out);
}

// matmul on the CPU (new memory poisoned) against the naive product: normalized error and,
// to catch a few wrong elements, elementwise closeness.
void expect_matches_naive(const cg::Shape& sa, const cg::Shape& sb, cg::DType dtype) {
  SCOPED_TRACE(cg::detail::cat(dtype, cg::shape_str(sa), " @ ", cg::shape_str(sb)));
  const cg::Tensor a = cg::randn(sa, kCpu, dtype), b = cg::randn(sb, kCpu, dtype);
  cg::Tensor c;
  {
    cg::testing::PoisonGuard poison;
    c = cg::matmul(a, b);
  }
  const cg::Tensor ref = naive_matmul(a, b);
  ASSERT_EQ(c.shape(), ref.shape());
  EXPECT_EQ(c.dtype(), dtype);
  EXPECT_TRUE(c.device().is_cpu());
  if (dtype == cg::DType::float32) {
    EXPECT_TRUE(norm_close(c, ref, 1e-5));
    EXPECT_TRUE(all_close(c, ref, {1e-5, 1e-5}));
  } else {
    EXPECT_TRUE(all_close(c, ref, {1e-12, 1e-12}));
  }
}

std::string error_of(const cg::Tensor& a, const cg::Tensor& b) {
  try {
    (void)cg::matmul(a, b);
  } catch (const cg::ValueError& e) {
    return e.what();
  }
  return "(no cugrad::ValueError thrown)";
}

void expect_mentions(const std::string& message, std::initializer_list<const char*> parts) {
  for (const char* p : parts)
    EXPECT_NE(message.find(p), std::string::npos) << "'" << p << "' not in: " << message;
}

// Reference for the launchers: C = alpha * op(A) op(B) + beta * C0 in double, row-major with
// leading dimensions; returns the m x n result densely.
template <typename T>
std::vector<double> naive_gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
                               double alpha, const std::vector<T>& a, std::int64_t lda,
                               const std::vector<T>& b, std::int64_t ldb, double beta,
                               const std::vector<T>& c0, std::int64_t ldc) {
  std::vector<double> c(static_cast<std::size_t>(m * n));
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (std::int64_t p = 0; p < k; ++p) {
        const double x = a[static_cast<std::size_t>(trans_a ? p * lda + i : i * lda + p)];
        const double y = b[static_cast<std::size_t>(trans_b ? j * ldb + p : p * ldb + j)];
        s += x * y;
      }
      const double old = beta == 0 ? 0.0 : static_cast<double>(c0[static_cast<std::size_t>(i * ldc + j)]);
      c[static_cast<std::size_t>(i * n + j)] = alpha * s + beta * old;
    }
  return c;
}

template <typename T>
std::vector<T> random_values(std::size_t count, cg::DType dtype) {
  return cg::randn({static_cast<std::int64_t>(count)}, kCpu, dtype).to_vector<T>();
}

// Largest |got - ref| / (1 + |ref|) over the m x n result; NaN counts as infinitely wrong.
template <typename T>
double worst_error(const std::vector<T>& c, std::int64_t ldc, const std::vector<double>& ref, std::int64_t m,
                   std::int64_t n) {
  double worst = 0;
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) {
      const double got = c[static_cast<std::size_t>(i * ldc + j)],
                   want = ref[static_cast<std::size_t>(i * n + j)];
      const double e = std::isnan(got) ? std::numeric_limits<double>::infinity()
                                       : std::fabs(got - want) / (1 + std::fabs(want));
      worst = std::max(worst, e);
    }
  return worst;
}

// Stored shape (rows, row length) of A and B for a product op(A) m x k, op(B) k x n.
std::int64_t a_rows(bool trans_a, std::int64_t m, std::int64_t k) { return trans_a ? k : m; }
std::int64_t a_cols(bool trans_a, std::int64_t m, std::int64_t k) { return trans_a ? m : k; }
std::int64_t b_rows(bool trans_b, std::int64_t k, std::int64_t n) { return trans_b ? n : k; }
std::int64_t b_cols(bool trans_b, std::int64_t k, std::int64_t n) { return trans_b ? k : n; }

template <typename T>
void check_cpu_gemm(cg::DType dtype, double tol) {
  const std::int64_t m = 7, n = 5, k = 33;
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (double beta : {0.0, 2.0}) {
        SCOPED_TRACE(cg::detail::cat(dtype, " trans_a=", ta, " trans_b=", tb, " beta=", beta));
        // Leading dimensions padded beyond the row length, so that a wrong one shows.
        const std::int64_t lda = a_cols(ta, m, k) + 3, ldb = b_cols(tb, k, n) + 2, ldc = n + 4;
        const auto a = random_values<T>(static_cast<std::size_t>(a_rows(ta, m, k) * lda), dtype);
        const auto b = random_values<T>(static_cast<std::size_t>(b_rows(tb, k, n) * ldb), dtype);
        auto c = random_values<T>(static_cast<std::size_t>(m * ldc), dtype);
        if (beta == 0.0)  // beta == 0 must not read C
          for (std::int64_t i = 0; i < m; ++i)
            for (std::int64_t j = 0; j < n; ++j)
              c[static_cast<std::size_t>(i * ldc + j)] = std::numeric_limits<T>::quiet_NaN();
        const auto ref = naive_gemm(ta, tb, m, n, k, 0.5, a, lda, b, ldb, beta, c, ldc);
        const auto before = c;
        cg::cpu::gemm(dtype, ta, tb, m, n, k, 0.5, a.data(), lda, b.data(), ldb, beta, c.data(), ldc);
        EXPECT_LE(worst_error(c, ldc, ref, m, n), tol);
        // The padding of C is not touched.
        for (std::int64_t i = 0; i < m; ++i)
          for (std::int64_t j = n; j < ldc; ++j)
            EXPECT_EQ(c[static_cast<std::size_t>(i * ldc + j)],
                      before[static_cast<std::size_t>(i * ldc + j)]);
      }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// CPU

TEST(Matmul, TwoDimensionalMatchesNaiveAtAwkwardSizes) {
  cg::manual_seed(1);
  for (cg::DType dtype : {cg::DType::float32, cg::DType::float64}) {
    expect_matches_naive({1, 1}, {1, 1}, dtype);
    expect_matches_naive({7, 33}, {33, 5}, dtype);
    expect_matches_naive({33, 1}, {1, 17}, dtype);
    expect_matches_naive({1, 65}, {65, 1}, dtype);
    expect_matches_naive({70, 129}, {129, 31}, dtype);
  }
}

TEST(Matmul, BatchedMatchesNaive) {
  cg::manual_seed(2);
  for (cg::DType dtype : {cg::DType::float32, cg::DType::float64}) {
    expect_matches_naive({3, 7, 9}, {3, 9, 4}, dtype);
    expect_matches_naive({1, 7, 9}, {1, 9, 4}, dtype);
    expect_matches_naive({5, 1, 1}, {5, 1, 1}, dtype);
  }
}

TEST(Matmul, SharedOperandsMatchNaive) {
  cg::manual_seed(3);
  for (cg::DType dtype : {cg::DType::float32, cg::DType::float64}) {
    expect_matches_naive({3, 7, 9}, {9, 4}, dtype);  // weight shared: one (21,9)@(9,4) GEMM
    expect_matches_naive({4, 33, 1}, {1, 17}, dtype);
    expect_matches_naive({7, 9}, {3, 9, 4}, dtype);     // left operand shared
    expect_matches_naive({1, 7, 9}, {3, 9, 4}, dtype);  // batch of one broadcast
    expect_matches_naive({3, 7, 9}, {1, 9, 4}, dtype);
  }
}

TEST(Matmul, ResultShapes) {
  EXPECT_EQ(cg::matmul(cg::ones({2, 3}), cg::ones({3, 4})).shape(), (cg::Shape{2, 4}));
  EXPECT_EQ(cg::matmul(cg::ones({5, 2, 3}), cg::ones({5, 3, 4})).shape(), (cg::Shape{5, 2, 4}));
  EXPECT_EQ(cg::matmul(cg::ones({5, 2, 3}), cg::ones({3, 4})).shape(), (cg::Shape{5, 2, 4}));
  EXPECT_EQ(cg::matmul(cg::ones({2, 3}), cg::ones({5, 3, 4})).shape(), (cg::Shape{5, 2, 4}));
  EXPECT_EQ(cg::matmul(cg::ones({1, 2, 3}), cg::ones({3, 4})).shape(), (cg::Shape{1, 2, 4}));
}

TEST(Matmul, KnownValues) {
  const auto a = cg::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
  const auto b = cg::from_vector(std::vector<float>{7, 8, 9, 10, 11, 12}, {3, 2});
  EXPECT_EQ(cg::matmul(a, b).to_vector<float>(), (std::vector<float>{58, 64, 139, 154}));
  EXPECT_EQ(cg::matmul(b, a).to_vector<float>(), (std::vector<float>{39, 54, 69, 49, 68, 87, 59, 82, 105}));
}

TEST(Matmul, MethodEqualsFunction) {
  cg::manual_seed(4);
  const auto a = cg::randn({3, 7, 9}), b = cg::randn({9, 4});
  EXPECT_TRUE(all_equal(a.matmul(b), cg::matmul(a, b)));
}

TEST(Matmul, ViewsWithAnOffset) {
  cg::manual_seed(5);
  for (cg::DType dtype : {cg::DType::float32, cg::DType::float64}) {
    const auto big = cg::randn({10, 9}, kCpu, dtype), w = cg::randn({4, 9, 5}, kCpu, dtype);
    const auto a = big.narrow(0, 2, 7);  // offset 18 into the storage
    const auto b = w[2];                 // offset 90
    ASSERT_GT(a.storage_offset(), 0);
    ASSERT_GT(b.storage_offset(), 0);
    const auto c = cg::matmul(a, b);
    const double tol = dtype == cg::DType::float32 ? 1e-5 : 1e-12;
    EXPECT_TRUE(all_close(c, naive_matmul(a, b), {tol, tol}));
    const auto batched = big.reshape({2, 5, 9}).narrow(0, 1, 1);  // (1,5,9), offset 45
    EXPECT_TRUE(all_close(cg::matmul(batched, w.narrow(0, 1, 1)), naive_matmul(batched, w.narrow(0, 1, 1)),
                          {tol, tol}));
  }
}

TEST(Matmul, InputsAreNotModified) {
  cg::manual_seed(6);
  const auto a = cg::randn({3, 7, 9}), b = cg::randn({9, 4});
  const auto a0 = a.clone(), b0 = b.clone();
  const auto va = a.version(), vb = b.version();
  (void)cg::matmul(a, b);
  EXPECT_TRUE(all_equal(a, a0));
  EXPECT_TRUE(all_equal(b, b0));
  EXPECT_EQ(a.version(), va);
  EXPECT_EQ(b.version(), vb);
}

TEST(Matmul, EmptyInnerDimensionGivesZeros) {
  cg::testing::PoisonGuard poison;  // the zeros must be written, not found
  for (cg::DType dtype : {cg::DType::float32, cg::DType::float64}) {
    const auto c2 = cg::matmul(cg::empty({4, 0}, kCpu, dtype), cg::empty({0, 5}, kCpu, dtype));
    EXPECT_EQ(c2.shape(), (cg::Shape{4, 5}));
    EXPECT_EQ(c2.dtype(), dtype);
    EXPECT_TRUE(all_equal(c2, cg::zeros({4, 5}, kCpu, dtype)));
    const auto c3 = cg::matmul(cg::empty({2, 3, 0}, kCpu, dtype), cg::empty({2, 0, 4}, kCpu, dtype));
    EXPECT_TRUE(all_equal(c3, cg::zeros({2, 3, 4}, kCpu, dtype)));
    const auto c32 = cg::matmul(cg::empty({2, 3, 0}, kCpu, dtype), cg::empty({0, 4}, kCpu, dtype));
    EXPECT_TRUE(all_equal(c32, cg::zeros({2, 3, 4}, kCpu, dtype)));
  }
}

TEST(Matmul, EmptyOutputs) {
  EXPECT_EQ(cg::matmul(cg::ones({0, 3}), cg::ones({3, 5})).shape(), (cg::Shape{0, 5}));
  EXPECT_EQ(cg::matmul(cg::ones({4, 3}), cg::ones({3, 0})).shape(), (cg::Shape{4, 0}));
  EXPECT_EQ(cg::matmul(cg::ones({0, 2, 3}), cg::ones({0, 3, 4})).shape(), (cg::Shape{0, 2, 4}));
  EXPECT_EQ(cg::matmul(cg::ones({0, 2, 3}), cg::ones({3, 4})).shape(), (cg::Shape{0, 2, 4}));
  EXPECT_EQ(cg::matmul(cg::ones({0, 2, 3}), cg::ones({1, 3, 4})).shape(), (cg::Shape{0, 2, 4}));
  EXPECT_EQ(cg::matmul(cg::ones({0, 0}), cg::ones({0, 0})).numel(), 0);
}

TEST(Matmul, InnerDimensionMismatchIsAnError) {
  expect_mentions(error_of(cg::ones({2, 3}), cg::ones({4, 5})),
                  {"matmul", "inner", "float32[2, 3] on cpu", "float32[4, 5] on cpu"});
  expect_mentions(error_of(cg::ones({6, 2, 3}), cg::ones({6, 4, 5})),
                  {"matmul", "inner", "[6, 2, 3]", "[6, 4, 5]"});
  expect_mentions(error_of(cg::ones({6, 2, 3}), cg::ones({2, 3})),
                  {"matmul", "inner", "[6, 2, 3]", "[2, 3]"});
}

TEST(Matmul, BatchMismatchIsAnError) {
  expect_mentions(error_of(cg::ones({3, 2, 3}), cg::ones({4, 3, 5})),
                  {"matmul", "batch", "[3, 2, 3]", "[4, 3, 5]"});
  expect_mentions(error_of(cg::ones({0, 2, 3}), cg::ones({2, 3, 5})),
                  {"matmul", "batch", "[0, 2, 3]", "[2, 3, 5]"});
}

TEST(Matmul, RanksOtherThanTwoOrThreeAreErrors) {
  expect_mentions(error_of(cg::ones({3}), cg::ones({3, 2})), {"matmul", "2-D", "3-D", "[3]", "[3, 2]"});
  expect_mentions(error_of(cg::ones({2, 3}), cg::ones({3})), {"matmul", "[2, 3]", "[3]"});
  expect_mentions(error_of(cg::ones({1, 2, 3, 4}), cg::ones({4, 5})), {"matmul", "[1, 2, 3, 4]", "[4, 5]"});
  expect_mentions(error_of(cg::ones({2, 3}), cg::ones({1, 1, 3, 4})), {"matmul", "[2, 3]", "[1, 1, 3, 4]"});
  expect_mentions(error_of(cg::full({}, 2.0), cg::full({}, 3.0)), {"matmul", "float32[] on cpu"});
}

TEST(Matmul, IntegerDtypesAreErrors) {
  for (cg::DType dtype : {cg::DType::int64, cg::DType::int32, cg::DType::uint8}) {
    const std::string name(cg::dtype_name(dtype));
    expect_mentions(error_of(cg::ones({2, 3}, kCpu, dtype), cg::ones({3, 2}, kCpu, dtype)),
                    {"matmul", "floating", (name + "[2, 3]").c_str(), (name + "[3, 2]").c_str()});
  }
}

TEST(Matmul, MixedDtypesAreAnError) {
  expect_mentions(error_of(cg::ones({2, 3}), cg::ones({3, 2}, kCpu, cg::DType::float64)),
                  {"matmul", "dtype", "float32[2, 3] on cpu", "float64[3, 2] on cpu"});
}

TEST(Matmul, UndefinedOperandsAreErrors) {
  expect_mentions(error_of(cg::Tensor(), cg::ones({2, 2})), {"matmul", "first operand", "undefined"});
  expect_mentions(error_of(cg::ones({2, 2}), cg::Tensor()), {"matmul", "second operand", "undefined"});
}

TEST(Matmul, CpuGemmTransposesScalesAndAccumulates) {
  cg::manual_seed(7);
  check_cpu_gemm<float>(cg::DType::float32, 1e-5);
  check_cpu_gemm<double>(cg::DType::float64, 1e-12);
}

TEST(Matmul, CpuGemmStridedBatchedWithSharedAndPaddedOperands) {
  cg::manual_seed(8);
  const std::int64_t m = 5, n = 3, k = 9, batch = 4;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      SCOPED_TRACE(cg::detail::cat("trans_a=", ta, " trans_b=", tb));
      const std::int64_t lda = a_cols(ta, m, k) + 1, ldb = b_cols(tb, k, n), ldc = n + 2;
      const std::int64_t size_a = a_rows(ta, m, k) * lda, size_b = b_rows(tb, k, n) * ldb, size_c = m * ldc;
      // A shared by the batch (stride 0); B and C with a gap of 3 elements between matrices.
      const std::int64_t stride_b = size_b + 3, stride_c = size_c + 3;
      const auto a = random_values<double>(static_cast<std::size_t>(size_a), cg::DType::float64);
      const auto b = random_values<double>(static_cast<std::size_t>(stride_b * batch), cg::DType::float64);
      auto c = random_values<double>(static_cast<std::size_t>(stride_c * batch), cg::DType::float64);
      const auto c0 = c;
      cg::cpu::gemm_strided_batched(cg::DType::float64, ta, tb, m, n, k, 1.5, a.data(), lda, 0, b.data(), ldb,
                                    stride_b, -1.0, c.data(), ldc, stride_c, batch);
      for (std::int64_t t = 0; t < batch; ++t) {
        const std::vector<double> bt(b.begin() + t * stride_b, b.begin() + t * stride_b + size_b);
        const std::vector<double> c0t(c0.begin() + t * stride_c, c0.begin() + t * stride_c + size_c);
        const std::vector<double> ct(c.begin() + t * stride_c, c.begin() + t * stride_c + size_c);
        const auto ref = naive_gemm(ta, tb, m, n, k, 1.5, a, lda, bt, ldb, -1.0, c0t, ldc);
        EXPECT_LE(worst_error(ct, ldc, ref, m, n), 1e-12) << "batch " << t;
        for (std::int64_t g = size_c; g < stride_c; ++g)  // the gaps are not touched
          EXPECT_EQ(c[static_cast<std::size_t>(t * stride_c + g)],
                    c0[static_cast<std::size_t>(t * stride_c + g)]);
      }
    }
}

TEST(Matmul, CpuGemmArgumentErrors) {
  std::vector<float> a(64, 1.f), b(64, 1.f), c(64, 7.f);
  const auto gemm = [&](cg::DType dtype, std::int64_t m, std::int64_t n, std::int64_t k, std::int64_t lda,
                        std::int64_t ldb, std::int64_t ldc) {
    cg::cpu::gemm(dtype, false, false, m, n, k, 1.0, a.data(), lda, b.data(), ldb, 0.0, c.data(), ldc);
  };
  EXPECT_THROW(gemm(cg::DType::float32, 2, 2, 0, 1, 2, 2), cg::ValueError);   // k == 0
  EXPECT_THROW(gemm(cg::DType::float32, 2, 2, 3, 2, 2, 2), cg::ValueError);   // lda < k
  EXPECT_THROW(gemm(cg::DType::float32, 2, 3, 2, 2, 2, 3), cg::ValueError);   // ldb < n
  EXPECT_THROW(gemm(cg::DType::float32, 2, 3, 2, 2, 3, 2), cg::ValueError);   // ldc < n
  EXPECT_THROW(gemm(cg::DType::float32, -1, 2, 2, 2, 2, 2), cg::ValueError);  // negative m
  EXPECT_THROW(gemm(cg::DType::int32, 2, 2, 2, 2, 2, 2), cg::ValueError);
  EXPECT_THROW(cg::cpu::gemm(cg::DType::float32, true, false, 4, 2, 2, 1.0, a.data(), 3, b.data(), 2, 0.0,
                             c.data(), 2),
               cg::ValueError);  // A stored k x m needs lda >= m
  EXPECT_THROW(cg::cpu::gemm_strided_batched(cg::DType::float32, false, false, 2, 2, 2, 1.0, a.data(), 2, 4,
                                             b.data(), 2, 4, 0.0, c.data(), 2, 0, 2),
               cg::ValueError);  // outputs overlap
  EXPECT_THROW(cg::cpu::gemm_strided_batched(cg::DType::float32, false, false, 2, 2, 2, 1.0, a.data(), 2, 4,
                                             b.data(), 2, 4, 0.0, c.data(), 2, 4, -1),
               cg::ValueError);
  try {
    gemm(cg::DType::float32, 2, 2, 3, 2, 3, 2);
    ADD_FAILURE() << "lda < k was accepted";
  } catch (const cg::ValueError& e) {
    expect_mentions(e.what(), {"gemm", "lda=2"});
  }
  // Empty products do nothing, even with arguments that would otherwise be rejected.
  gemm(cg::DType::float32, 0, 2, 0, 0, 0, 0);
  gemm(cg::DType::float32, 2, 0, 5, 0, 0, 0);
  cg::cpu::gemm_strided_batched(cg::DType::float32, false, false, 2, 2, 2, 1.0, a.data(), 2, 4, b.data(), 2,
                                4, 0.0, c.data(), 2, 4, 0);
  for (float v : c) EXPECT_EQ(v, 7.f);
}

// The CUDA launchers check their arguments before any CUDA call, so this runs anywhere.
TEST(Matmul, CudaGemmArgumentErrors) {
  const float* a = nullptr;
  const float* b = nullptr;
  float* c = nullptr;
  EXPECT_THROW(cg::cuda::gemm_f32(false, false, 2, 2, 0, 1.f, a, 1, b, 2, 0.f, c, 2, nullptr),
               cg::ValueError);
  EXPECT_THROW(cg::cuda::gemm_f32(false, false, 2, 2, 3, 1.f, a, 2, b, 2, 0.f, c, 2, nullptr),
               cg::ValueError);
  EXPECT_THROW(cg::cuda::gemm_f32(false, true, 2, 3, 4, 1.f, a, 4, b, 3, 0.f, c, 3, nullptr), cg::ValueError);
  EXPECT_THROW(cg::cuda::gemm_f32(true, false, 5, 3, 4, 1.f, a, 4, b, 3, 0.f, c, 3, nullptr), cg::ValueError);
  EXPECT_THROW(cg::cuda::gemm_f32(false, false, 2, 3, 4, 1.f, a, 4, b, 3, 0.f, c, 2, nullptr),
               cg::ValueError);
  EXPECT_THROW(cg::cuda::gemm_f32(false, false, -2, 3, 4, 1.f, a, 4, b, 3, 0.f, c, 3, nullptr),
               cg::ValueError);
  EXPECT_THROW(cg::cuda::gemm_strided_batched_f32(false, false, 2, 2, 2, 1.f, a, 2, 4, b, 2, 4, 0.f, c, 2, 0,
                                                  3, nullptr),
               cg::ValueError);
  EXPECT_THROW(cg::cuda::gemm_strided_batched_f32(false, false, 2, 2, 2, 1.f, a, 2, -4, b, 2, 4, 0.f, c, 2, 4,
                                                  3, nullptr),
               cg::ValueError);
  EXPECT_THROW(cg::cuda::gemm_strided_batched_f32(false, false, 2, 2, 2, 1.f, a, 2, 4, b, 2, 4, 0.f, c, 2, 4,
                                                  -1, nullptr),
               cg::ValueError);
  try {
    cg::cuda::gemm_f32(false, false, 2, 2, 0, 1.f, a, 1, b, 2, 0.f, c, 2, nullptr);
    ADD_FAILURE() << "k == 0 was accepted";
  } catch (const cg::ValueError& e) {
    expect_mentions(e.what(), {"gemm_f32", "k=0"});
  }
  // Empty products return before touching the device.
  EXPECT_NO_THROW(cg::cuda::gemm_f32(false, false, 0, 3, 0, 1.f, a, 0, b, 0, 0.f, c, 0, nullptr));
  EXPECT_NO_THROW(cg::cuda::gemm_f32(false, false, 3, 0, 2, 1.f, a, 0, b, 0, 0.f, c, 0, nullptr));
  EXPECT_NO_THROW(cg::cuda::gemm_strided_batched_f32(false, false, 2, 2, 2, 1.f, a, 2, 4, b, 2, 4, 0.f, c, 2,
                                                     4, 0, nullptr));
}

// ---------------------------------------------------------------------------------------------
// GPU

namespace {

cg::Tensor run_matmul(const cg::TensorList& t) { return cg::matmul(t[0], t[1]); }

::testing::AssertionResult cuda_parity(const cg::Shape& sa, const cg::Shape& sb, double tol = 1e-5) {
  const cg::Tensor a = cg::randn(sa), b = cg::randn(sb);
  auto r = cg::testing::cuda_matches_cpu64_norm(run_matmul, {a, b}, tol);
  if (!r) r << " (for " << cg::shape_str(sa) << " @ " << cg::shape_str(sb) << ")";
  return r;
}

// Sets allow_tf32 for its lifetime and restores the previous value, even when a check fails.
class Tf32Guard {
 public:
  explicit Tf32Guard(bool allow) : previous_(cg::allow_tf32()) { cg::set_allow_tf32(allow); }
  ~Tf32Guard() { cg::set_allow_tf32(previous_); }
  Tf32Guard(const Tf32Guard&) = delete;
  Tf32Guard& operator=(const Tf32Guard&) = delete;

 private:
  bool previous_;
};

// Relative norm error of a CUDA matmul against the float64 CPU product.
double relative_error(const cg::Tensor& a, const cg::Tensor& b) {
  const auto got = cg::matmul(a.cuda(), b.cuda()).cpu().to(cg::DType::float64).to_vector<double>();
  const auto ref = cg::matmul(a.to(cg::DType::float64), b.to(cg::DType::float64)).to_vector<double>();
  double num = 0, den = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    num += (got[i] - ref[i]) * (got[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / den);
}

}  // namespace

TEST(MatmulGPU, TwoDimensionalAtAwkwardSizes) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(11);
  EXPECT_TRUE(cuda_parity({1, 1}, {1, 1}));
  EXPECT_TRUE(cuda_parity({7, 33}, {33, 5}));
  EXPECT_TRUE(cuda_parity({33, 1}, {1, 17}));
  EXPECT_TRUE(cuda_parity({1, 65}, {65, 1}));
  EXPECT_TRUE(cuda_parity({70, 129}, {129, 31}));
  EXPECT_TRUE(cuda_parity({257, 33}, {33, 1023}));
}

TEST(MatmulGPU, BatchedAndSharedOperands) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(12);
  EXPECT_TRUE(cuda_parity({3, 7, 9}, {3, 9, 4}));
  EXPECT_TRUE(cuda_parity({5, 1, 1}, {5, 1, 1}));
  EXPECT_TRUE(cuda_parity({3, 7, 9}, {9, 4}));  // one (21,9)@(9,4) GEMM
  EXPECT_TRUE(cuda_parity({7, 9}, {3, 9, 4}));  // strided batched, A stride 0
  EXPECT_TRUE(cuda_parity({1, 7, 9}, {3, 9, 4}));
  EXPECT_TRUE(cuda_parity({3, 7, 9}, {1, 9, 4}));
  EXPECT_TRUE(cuda_parity({1, 7, 9}, {1, 9, 4}));
}

TEST(MatmulGPU, LargeSizesFillTheDevice) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(13);
  EXPECT_TRUE(cuda_parity({1000, 1000}, {1000, 1000}));
  EXPECT_TRUE(cuda_parity({16, 257, 129}, {16, 129, 65}));
  EXPECT_TRUE(cuda_parity({16, 257, 129}, {129, 65}));
  EXPECT_TRUE(cuda_parity({257, 129}, {16, 129, 65}));
}

TEST(MatmulGPU, ViewsWithAnOffset) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(14);
  const auto big = cg::randn({10, 9}, kCuda), w = cg::randn({4, 9, 5}, kCuda);
  const auto a = big.narrow(0, 2, 7), b = w[2];
  EXPECT_TRUE(norm_close(cg::matmul(a, b), naive_matmul(a, b)));
  const auto a3 = big.reshape({2, 5, 9}).narrow(0, 1, 1), b3 = w.narrow(0, 1, 2);  // offsets 45 and 45
  EXPECT_TRUE(norm_close(cg::matmul(a3, b3), naive_matmul(a3, b3)));
}

TEST(MatmulGPU, ZeroSizes) {
  CUGRAD_REQUIRE_GPU();
  cg::testing::PoisonGuard poison;
  const auto c = cg::matmul(cg::empty({4, 0}, kCuda), cg::empty({0, 5}, kCuda));
  EXPECT_TRUE(c.is_cuda());
  EXPECT_TRUE(all_equal(c, cg::zeros({4, 5})));
  EXPECT_TRUE(
      all_equal(cg::matmul(cg::empty({2, 3, 0}, kCuda), cg::empty({0, 4}, kCuda)), cg::zeros({2, 3, 4})));
  EXPECT_TRUE(
      all_equal(cg::matmul(cg::empty({2, 3, 0}, kCuda), cg::empty({2, 0, 4}, kCuda)), cg::zeros({2, 3, 4})));
  const auto e = cg::matmul(cg::ones({0, 3}, kCuda), cg::ones({3, 5}, kCuda));
  EXPECT_TRUE(e.is_cuda());
  EXPECT_EQ(e.shape(), (cg::Shape{0, 5}));
  EXPECT_EQ(cg::matmul(cg::ones({0, 2, 3}, kCuda), cg::ones({0, 3, 4}, kCuda)).shape(), (cg::Shape{0, 2, 4}));
}

TEST(MatmulGPU, DifferentDevicesAreAnError) {
  CUGRAD_REQUIRE_GPU();
  expect_mentions(error_of(cg::ones({2, 3}), cg::ones({3, 2}, kCuda)),
                  {"matmul", "different devices", "float32[2, 3] on cpu", "float32[3, 2] on cuda:0"});
  expect_mentions(error_of(cg::ones({2, 3}, kCuda), cg::ones({3, 2})), {"matmul", "on cuda:0", "on cpu"});
}

TEST(MatmulGPU, Tf32IsOptInAndTheFlagIsRestored) {
  CUGRAD_REQUIRE_GPU();
  ASSERT_FALSE(cg::allow_tf32()) << "TF32 must be off by default";
  cg::manual_seed(15);
  const auto a = cg::randn({1000, 1000}), b = cg::randn({1000, 1000});
  const double strict = relative_error(a, b);
  EXPECT_LE(strict, 1e-5);
  double tf32 = 0;
  {
    Tf32Guard on(true);
    ASSERT_TRUE(cg::allow_tf32());
    tf32 = relative_error(a, b);
    EXPECT_LE(tf32, 1e-2);
    // Batched products take the same math mode.
    const auto a3 = cg::randn({4, 100, 300}), b3 = cg::randn({4, 300, 50});
    EXPECT_TRUE(cg::testing::cuda_matches_cpu64_norm(run_matmul, {a3, b3}, 1e-2));
  }
  EXPECT_FALSE(cg::allow_tf32()) << "the flag was not restored";
  // TF32 keeps 10 mantissa bits: on tensor-core GPUs (sm_80+) a 1000-long product loses
  // about 1e-4, so a result as accurate as strict float32 means the flag did not reach cuBLAS.
  const char* override_env = std::getenv("NVIDIA_TF32_OVERRIDE");
  int major = 0;
  ASSERT_EQ(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0), cudaSuccess);
  if (major >= 8 && !(override_env && std::string(override_env) == "0")) {
    EXPECT_GT(tf32, 1e-5) << "TF32 was requested but the result is as exact as strict float32 (" << strict
                          << ")";
  }
  // Back to strict float32: the math mode is set on every call, not left over from the last.
  EXPECT_LE(relative_error(a, b), 1e-5);
}

TEST(MatmulGPU, NonDefaultStreamGivesTheSameResult) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(16);
  const auto a = cg::randn({3, 70, 129}), b = cg::randn({3, 129, 31}), w = cg::randn({129, 31});
  const cg::Tensor on_default = cg::matmul(a.cuda(), b.cuda()).cpu();
  const cg::Stream side = cg::Stream::create(kCuda);
  ASSERT_FALSE(side == cg::Stream::default_stream(kCuda));
  cg::Tensor on_side, shared_on_side;
  {
    cg::StreamGuard guard(side);
    ASSERT_TRUE(cg::Stream::current(kCuda) == side);
    EXPECT_TRUE(cg::testing::cuda_matches_cpu64_norm(run_matmul, {a, b}));
    EXPECT_TRUE(cg::testing::cuda_matches_cpu64_norm(run_matmul, {a, w}));
    on_side = cg::matmul(a.cuda(), b.cuda()).cpu();
    shared_on_side = cg::matmul(a.cuda(), w.cuda());
  }
  EXPECT_TRUE(all_equal(on_side, on_default));
  EXPECT_TRUE(norm_close(shared_on_side, naive_matmul(a, w)));
}

// Inputs last written on the default stream behind a slow kernel: a matmul on another stream
// must wait for that write (OpScope's reads), and its output must be complete before the
// default stream reads it back.
TEST(MatmulGPU, WaitsForInputsWrittenOnAnotherStream) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(17);
  const auto a_cpu = cg::randn({300, 200}), b_cpu = cg::randn({200, 100});
  cg::Tensor a = a_cpu.cuda(), b = b_cpu.cuda();
  const cg::Stream side = cg::Stream::create(kCuda);
  cg::Tensor c;
  for (int round = 0; round < 2; ++round) {
    cg::testing::spin_on(cg::Stream::current(kCuda), 100.0);
    a.mul_(2.0);  // queued behind the spin on the default stream
    {
      cg::StreamGuard guard(side);
      c = cg::matmul(a, b);
    }
    const auto want = naive_matmul(a_cpu * (round == 0 ? 2.0 : 4.0), b_cpu);
    EXPECT_TRUE(norm_close(c, want)) << "round " << round;
  }
  // And the other way: the side stream writes, the default stream multiplies.
  {
    cg::StreamGuard guard(side);
    cg::testing::spin_on(side, 100.0);
    b.mul_(0.5);
  }
  const auto d = cg::matmul(a, b);
  EXPECT_TRUE(norm_close(d, naive_matmul(a_cpu * 4.0, b_cpu * 0.5)));
}

TEST(MatmulGPU, HandlesArePerThreadAndRecycled) {
  CUGRAD_REQUIRE_GPU();
  const cg::Stream s = cg::Stream::current(kCuda);
  const cublasHandle_t mine = cg::cuda::blas_handle(s.handle());
  ASSERT_NE(mine, nullptr);
  EXPECT_EQ(cg::cuda::blas_handle(s.handle()), mine) << "one handle per thread and device";

  cublasHandle_t other = nullptr;
  std::thread([&] { other = cg::cuda::blas_handle(cg::Stream::current(kCuda).handle()); }).join();
  ASSERT_NE(other, nullptr);
  EXPECT_NE(other, mine) << "another thread must not share this thread's handle";

  // The ended thread's handle went back to the pool; the next new thread takes it.
  cublasHandle_t reused = nullptr;
  std::thread([&] { reused = cg::cuda::blas_handle(cg::Stream::current(kCuda).handle()); }).join();
  EXPECT_EQ(reused, other);
}

TEST(MatmulGPU, ConcurrentThreadsOnTheirOwnStreams) {
  CUGRAD_REQUIRE_GPU();
  constexpr int kThreads = 4;
  std::vector<cg::Tensor> as, bs, outs(kThreads);
  cg::manual_seed(18);
  for (int t = 0; t < kThreads; ++t) {
    as.push_back(cg::randn({5, 65 + t, 33}));
    bs.push_back(cg::randn({5, 33, 17 + t}));
  }
  std::vector<std::string> errors(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      try {
        const cg::Stream own = cg::Stream::create(kCuda);
        cg::StreamGuard guard(own);
        cg::Tensor a = as[static_cast<std::size_t>(t)].cuda(), b = bs[static_cast<std::size_t>(t)].cuda();
        cg::Tensor c;
        for (int i = 0; i < 20; ++i) c = cg::matmul(a, b);
        outs[static_cast<std::size_t>(t)] = c.cpu();
      } catch (const std::exception& e) {
        errors[static_cast<std::size_t>(t)] = e.what();
      }
    });
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) {
    const auto i = static_cast<std::size_t>(t);
    EXPECT_EQ(errors[i], "") << "thread " << t;
    if (errors[i].empty()) {
      EXPECT_TRUE(norm_close(outs[i], naive_matmul(as[i], bs[i]))) << "thread " << t;
    }
  }
}

TEST(MatmulGPU, GemmLauncherTransposesScalesAndAccumulates) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(19);
  const std::int64_t m = 37, n = 29, k = 53;
  const cg::Stream s = cg::Stream::current(kCuda);
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (float beta : {0.f, -0.5f}) {
        SCOPED_TRACE(cg::detail::cat("trans_a=", ta, " trans_b=", tb, " beta=", beta));
        const std::int64_t lda = a_cols(ta, m, k) + 3, ldb = b_cols(tb, k, n) + 1, ldc = n + 2;
        const auto a = cg::randn({a_rows(ta, m, k) * lda}), b = cg::randn({b_rows(tb, k, n) * ldb});
        auto c0 = cg::randn({m * ldc});
        if (beta == 0.f) c0 = cg::full({m * ldc}, std::numeric_limits<double>::quiet_NaN());
        const auto av = a.to_vector<float>(), bv = b.to_vector<float>(), c0v = c0.to_vector<float>();
        const auto ref = naive_gemm(ta, tb, m, n, k, 2.0, av, lda, bv, ldb, beta, c0v, ldc);
        const auto da = a.cuda(), db = b.cuda();
        auto dc = c0.cuda();
        cg::cuda::gemm_f32(ta, tb, m, n, k, 2.f, da.data_ptr<float>(), lda, db.data_ptr<float>(), ldb, beta,
                           dc.data_ptr<float>(), ldc, s.handle());
        const auto cv = dc.to_vector<float>();
        EXPECT_LE(worst_error(cv, ldc, ref, m, n), 1e-5);
        for (std::int64_t i = 0; i < m; ++i)  // padding untouched
          for (std::int64_t j = n; j < ldc; ++j) {
            const auto x = static_cast<std::size_t>(i * ldc + j);
            EXPECT_TRUE(cv[x] == c0v[x] || (std::isnan(cv[x]) && std::isnan(c0v[x])));
          }
      }
}

TEST(MatmulGPU, StridedBatchedLauncherWithSharedAndPaddedOperands) {
  CUGRAD_REQUIRE_GPU();
  cg::manual_seed(20);
  const std::int64_t m = 19, n = 11, k = 23, batch = 5;
  const cg::Stream s = cg::Stream::current(kCuda);
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      SCOPED_TRACE(cg::detail::cat("trans_a=", ta, " trans_b=", tb));
      const std::int64_t lda = a_cols(ta, m, k), ldb = b_cols(tb, k, n) + 2, ldc = n + 1;
      const std::int64_t size_a = a_rows(ta, m, k) * lda, size_b = b_rows(tb, k, n) * ldb, size_c = m * ldc;
      const std::int64_t stride_a = size_a + 5, stride_c = size_c + 7;
      // A batched with gaps; B shared (stride 0); C batched with gaps.
      const auto a = cg::randn({stride_a * batch}), b = cg::randn({size_b}),
                 c0 = cg::randn({stride_c * batch});
      const auto av = a.to_vector<float>(), bv = b.to_vector<float>(), c0v = c0.to_vector<float>();
      const auto da = a.cuda(), db = b.cuda();
      auto dc = c0.cuda();
      cg::cuda::gemm_strided_batched_f32(ta, tb, m, n, k, 0.75f, da.data_ptr<float>(), lda, stride_a,
                                         db.data_ptr<float>(), ldb, 0, 1.f, dc.data_ptr<float>(), ldc,
                                         stride_c, batch, s.handle());
      const auto cv = dc.to_vector<float>();
      for (std::int64_t t = 0; t < batch; ++t) {
        const std::vector<float> at(av.begin() + t * stride_a, av.begin() + t * stride_a + size_a);
        const std::vector<float> c0t(c0v.begin() + t * stride_c, c0v.begin() + t * stride_c + size_c);
        const std::vector<float> ct(cv.begin() + t * stride_c, cv.begin() + t * stride_c + size_c);
        const auto ref = naive_gemm(ta, tb, m, n, k, 0.75, at, lda, bv, ldb, 1.0, c0t, ldc);
        EXPECT_LE(worst_error(ct, ldc, ref, m, n), 1e-5) << "batch " << t;
        for (std::int64_t g = size_c; g < stride_c; ++g) {
          const auto x = static_cast<std::size_t>(t * stride_c + g);
          EXPECT_EQ(cv[x], c0v[x]) << "gap element " << g << " of batch " << t;
        }
      }
    }
}
