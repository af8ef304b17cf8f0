// cuBLAS for the CUDA path: the calling thread's handle for each device, and row-major
// float32 GEMM launchers (cuBLAS is column-major: they compute C^T = op(B)^T op(A)^T).
// `stream` is a cudaStream_t passed opaquely, as for every launcher; every call is checked.
#pragma once

#include <cublas_v2.h>

#include <cstdint>

namespace cugrad::cuda {

/// The calling thread's cuBLAS handle for the current CUDA device, created on first use,
/// bound to `stream`, with host pointer mode, and math mode CUBLAS_DEFAULT_MATH (strict
/// float32) or, when cugrad::allow_tf32() is true, CUBLAS_TF32_TENSOR_OP_MATH. Call it
/// right before each cuBLAS call: stream and math mode are set again every time.
///
/// Lifetime: one handle per device and thread. When a thread ends its handles go back to a
/// process-wide pool (no CUDA call) and later threads reuse them, so short-lived threads
/// neither leak handles nor pay for cublasCreate each time. Handles are never destroyed:
/// the pool is leaked at exit on purpose, since the driver may already be torn down when
/// static destructors run. cuBLAS uses its default workspace, which is safe when one handle
/// is used on several streams; results of concurrent streams may then differ in the last
/// bits from run to run (cuBLAS's reproducibility note).
cublasHandle_t blas_handle(void* stream);

/// Row-major C = alpha * op(A) @ op(B) + beta * C on the current device, op(A) m x k and
/// op(B) k x n; A is stored m x k (k x m when trans_a), B k x n (n x k when trans_b), C m x n,
/// with row strides lda, ldb, ldc in elements. All pointers are device memory of the current
/// device. Requires: m, n >= 0 (m == 0 or n == 0 does nothing, with no other requirement);
/// k >= 1 (an empty product is the caller's to handle: C = beta * C); each leading dimension
/// at least its stored row length. When beta == 0, C is not read. Throws cugrad::ValueError
/// naming "gemm_f32" when a requirement does not hold, cugrad::CublasError when cuBLAS fails.
/// Sizes are 64-bit (cuBLAS's _64 API): no 2^31 limit.
void gemm_f32(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
              const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
              std::int64_t ldc, void* stream);

/// `batch` independent gemm_f32() products in one cublasSgemmStridedBatched call: matrix i
/// of A starts stride_a elements after matrix i-1 (stride 0 shares one matrix across the
/// batch), likewise B and C. Requires: what gemm_f32() requires; batch >= 0 (0 does nothing);
/// strides >= 0; stride_c > 0 when batch > 1; outputs that do not overlap.
void gemm_strided_batched_f32(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
                              float alpha, const float* a, std::int64_t lda, std::int64_t stride_a,
                              const float* b, std::int64_t ldb, std::int64_t stride_b, float beta, float* c,
                              std::int64_t ldc, std::int64_t stride_c, std::int64_t batch, void* stream);

}  // namespace cugrad::cuda
