// CPU GEMM through CBLAS (OpenBLAS). Arguments are checked here, since a bad one makes
// OpenBLAS print a message and return without computing anything.
#include "host/cpu/matmul.h"

#include <cblas.h>

#include <algorithm>
#include <limits>

#include "cugrad/error.h"

namespace cugrad::cpu {

namespace {

constexpr std::int64_t kBlasMax = std::numeric_limits<blasint>::max();

// Validates the arguments; false when the product is empty (m == 0 or n == 0).
bool check_gemm(DType dtype, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
                std::int64_t lda, std::int64_t ldb, std::int64_t ldc) {
  CUGRAD_CHECK(is_floating(dtype), "gemm: dtype ", dtype, " is not supported (float32 or float64)");
  CUGRAD_CHECK(m >= 0 && n >= 0, "gemm: negative size (m=", m, ", n=", n, ")");
  if (m == 0 || n == 0) return false;
  CUGRAD_CHECK(k >= 1, "gemm: k=", k, "; an empty product (k == 0) is the caller's to handle (C = beta * C)");
  const std::int64_t a_row = trans_a ? m : k, b_row = trans_b ? k : n;
  CUGRAD_CHECK(lda >= a_row, "gemm: lda=", lda, " is less than the row length ", a_row, " of A (stored ",
               trans_a ? "k x m" : "m x k", ")");
  CUGRAD_CHECK(ldb >= b_row, "gemm: ldb=", ldb, " is less than the row length ", b_row, " of B (stored ",
               trans_b ? "n x k" : "k x n", ")");
  CUGRAD_CHECK(ldc >= n, "gemm: ldc=", ldc, " is less than the row length ", n, " of C");
  CUGRAD_CHECK(n <= kBlasMax && k <= kBlasMax && lda <= kBlasMax && ldb <= kBlasMax && ldc <= kBlasMax,
               "gemm: n=", n, ", k=", k, ", lda=", lda, ", ldb=", ldb, ", ldc=", ldc,
               " exceed the BLAS integer range (", kBlasMax, ")");
  return true;
}

void blas_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, blasint m, blasint n, blasint k, float alpha,
               const float* a, blasint lda, const float* b, blasint ldb, float beta, float* c, blasint ldc) {
  cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void blas_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, blasint m, blasint n, blasint k, double alpha,
               const double* a, blasint lda, const double* b, blasint ldb, double beta, double* c,
               blasint ldc) {
  cblas_dgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// One checked product. Rows of op(A) and C beyond the BLAS integer range go in chunks.
template <typename T>
void gemm_one(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, double alpha,
              const T* a, std::int64_t lda, const T* b, std::int64_t ldb, double beta, T* c,
              std::int64_t ldc) {
  const CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans, tb = trans_b ? CblasTrans : CblasNoTrans;
  for (std::int64_t r = 0; r < m; r += kBlasMax) {
    const std::int64_t rows = std::min(kBlasMax, m - r);
    // Row r of op(A) is row r of A, or column r of A when A is stored transposed.
    const T* a_rows = a + (trans_a ? r : r * lda);
    blas_gemm(ta, tb, static_cast<blasint>(rows), static_cast<blasint>(n), static_cast<blasint>(k),
              static_cast<T>(alpha), a_rows, static_cast<blasint>(lda), b, static_cast<blasint>(ldb),
              static_cast<T>(beta), c + r * ldc, static_cast<blasint>(ldc));
  }
}

template <typename F>
void dispatch_float(DType dtype, F&& f) {
  if (dtype == DType::float32)
    f(float{});
  else
    f(double{});  // check_gemm admitted only float32 and float64
}

}  // namespace

void gemm(DType dtype, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
          double alpha, const void* a, std::int64_t lda, const void* b, std::int64_t ldb, double beta,
          void* c, std::int64_t ldc) {
  if (!check_gemm(dtype, trans_a, trans_b, m, n, k, lda, ldb, ldc)) return;
  dispatch_float(dtype, [&](auto zero) {
    using T = decltype(zero);
    gemm_one<T>(trans_a, trans_b, m, n, k, alpha, static_cast<const T*>(a), lda, static_cast<const T*>(b),
                ldb, beta, static_cast<T*>(c), ldc);
  });
}

void gemm_strided_batched(DType dtype, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n,
                          std::int64_t k, double alpha, const void* a, std::int64_t lda,
                          std::int64_t stride_a, const void* b, std::int64_t ldb, std::int64_t stride_b,
                          double beta, void* c, std::int64_t ldc, std::int64_t stride_c, std::int64_t batch) {
  CUGRAD_CHECK(batch >= 0, "gemm_strided_batched: negative batch ", batch);
  if (batch == 0 || !check_gemm(dtype, trans_a, trans_b, m, n, k, lda, ldb, ldc)) return;
  CUGRAD_CHECK(stride_a >= 0 && stride_b >= 0 && stride_c >= 0, "gemm_strided_batched: negative stride (a ",
               stride_a, ", b ", stride_b, ", c ", stride_c, ")");
  CUGRAD_CHECK(batch == 1 || stride_c > 0, "gemm_strided_batched: stride_c is 0 for a batch of ", batch,
               ": the outputs would overlap");
  dispatch_float(dtype, [&](auto zero) {
    using T = decltype(zero);
    const T* pa = static_cast<const T*>(a);
    const T* pb = static_cast<const T*>(b);
    T* pc = static_cast<T*>(c);
    for (std::int64_t i = 0; i < batch; ++i)
      gemm_one<T>(trans_a, trans_b, m, n, k, alpha, pa + i * stride_a, lda, pb + i * stride_b, ldb, beta,
                  pc + i * stride_c, ldc);
  });
}

}  // namespace cugrad::cpu
