// cuBLAS handles (one per device and thread, recycled through a pool that is never torn
// down) and the row-major float32 GEMM launchers.
#include "cuda/blas.h"

#include <cuda_runtime.h>

#include <vector>

#include "cugrad/device.h"
#include "cugrad/error.h"
#include "cuda/handle_pool.h"

namespace cugrad::cuda {

namespace {

cublasHandle_t create_cublas() {
  cublasHandle_t h = nullptr;
  CUGRAD_CUBLAS_CHECK(cublasCreate(&h));
  return h;
}

using Handles = detail::HandlePool<cublasHandle_t, create_cublas>;

cublasOperation_t op_of(bool trans) { return trans ? CUBLAS_OP_T : CUBLAS_OP_N; }

// Validates the arguments; false when the product is empty (m == 0 or n == 0).
bool check_gemm(const char* name, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
                std::int64_t lda, std::int64_t ldb, std::int64_t ldc) {
  CUGRAD_CHECK(m >= 0 && n >= 0, name, ": negative size (m=", m, ", n=", n, ")");
  if (m == 0 || n == 0) return false;
  CUGRAD_CHECK(k >= 1, name, ": k=", k,
               "; an empty product (k == 0) is the caller's to handle (C = beta * C)");
  const std::int64_t a_row = trans_a ? m : k, b_row = trans_b ? k : n;
  CUGRAD_CHECK(lda >= a_row, name, ": lda=", lda, " is less than the row length ", a_row, " of A (stored ",
               trans_a ? "k x m" : "m x k", ")");
  CUGRAD_CHECK(ldb >= b_row, name, ": ldb=", ldb, " is less than the row length ", b_row, " of B (stored ",
               trans_b ? "n x k" : "k x n", ")");
  CUGRAD_CHECK(ldc >= n, name, ": ldc=", ldc, " is less than the row length ", n, " of C");
  return true;
}

}  // namespace

cublasHandle_t blas_handle(void* stream) {
  int device = 0;
  CUGRAD_CUDA_CHECK(cudaGetDevice(&device));
  cublasHandle_t h = Handles::get(device);
  CUGRAD_CUBLAS_CHECK(cublasSetStream(h, static_cast<cudaStream_t>(stream)));
  CUGRAD_CUBLAS_CHECK(cublasSetPointerMode(h, CUBLAS_POINTER_MODE_HOST));
  CUGRAD_CUBLAS_CHECK(cublasSetMathMode(h, allow_tf32() ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
  return h;
}

// Row-major C (m x n) is column-major C^T (n x m) with the same leading dimension; likewise
// the stored A and B. So C^T = op(B)^T op(A)^T is one column-major GEMM with the operands
// swapped, m and n swapped, and the same transpose flags.
void gemm_f32(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
              const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
              std::int64_t ldc, void* stream) {
  if (!check_gemm("gemm_f32", trans_a, trans_b, m, n, k, lda, ldb, ldc)) return;
  cublasHandle_t h = blas_handle(stream);
  CUGRAD_CUBLAS_CHECK(
      cublasSgemm_64(h, op_of(trans_b), op_of(trans_a), n, m, k, &alpha, b, ldb, a, lda, &beta, c, ldc));
}

void gemm_strided_batched_f32(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
                              float alpha, const float* a, std::int64_t lda, std::int64_t stride_a,
                              const float* b, std::int64_t ldb, std::int64_t stride_b, float beta, float* c,
                              std::int64_t ldc, std::int64_t stride_c, std::int64_t batch, void* stream) {
  const char* name = "gemm_strided_batched_f32";
  CUGRAD_CHECK(batch >= 0, name, ": negative batch ", batch);
  if (batch == 0 || !check_gemm(name, trans_a, trans_b, m, n, k, lda, ldb, ldc)) return;
  CUGRAD_CHECK(stride_a >= 0 && stride_b >= 0 && stride_c >= 0, name, ": negative stride (a ", stride_a,
               ", b ", stride_b, ", c ", stride_c, ")");
  CUGRAD_CHECK(batch == 1 || stride_c > 0, name, ": stride_c is 0 for a batch of ", batch,
               ": the outputs would overlap");
  cublasHandle_t h = blas_handle(stream);
  CUGRAD_CUBLAS_CHECK(cublasSgemmStridedBatched_64(h, op_of(trans_b), op_of(trans_a), n, m, k, &alpha, b, ldb,
                                                   stride_b, a, lda, stride_a, &beta, c, ldc, stride_c,
                                                   batch));
}

}  // namespace cugrad::cuda
