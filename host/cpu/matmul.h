// CPU GEMM (the reference and fallback for matmul and, later, its backward): row-major
// products through CBLAS (OpenBLAS), float32 and float64, single or batched by a loop.
#pragma once

#include <cstdint>

#include "cugrad/dtype.h"

namespace cugrad::cpu {

/// Row-major C = alpha * op(A) @ op(B) + beta * C, where op(A) is m x k and op(B) is k x n.
/// A is stored m x k (k x m when trans_a), B is stored k x n (n x k when trans_b), C is m x n;
/// lda, ldb and ldc are the row strides of the stored matrices, in elements.
/// Requires: dtype float32 or float64 (a, b, c point to it); m, n >= 0; k >= 1 (an empty
/// product is the caller's business: C = beta * C); each leading dimension at least the
/// stored row length; n, k and the leading dimensions within the BLAS integer range.
/// When beta == 0, C is not read (it may hold NaN). m == 0 or n == 0 does nothing.
/// Throws cugrad::ValueError naming "gemm" when a requirement does not hold.
void gemm(DType dtype, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
          double alpha, const void* a, std::int64_t lda, const void* b, std::int64_t ldb, double beta,
          void* c, std::int64_t ldc);

/// `batch` independent gemm() products: matrix i of A starts stride_a elements after matrix
/// i-1 (stride 0 shares one matrix across the batch), likewise B and C.
/// Requires: what gemm() requires; batch >= 0 (0 does nothing); strides >= 0; stride_c > 0
/// when batch > 1; outputs that do not overlap (not checked further).
void gemm_strided_batched(DType dtype, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n,
                          std::int64_t k, double alpha, const void* a, std::int64_t lda,
                          std::int64_t stride_a, const void* b, std::int64_t ldb, std::int64_t stride_b,
                          double beta, void* c, std::int64_t ldc, std::int64_t stride_c, std::int64_t batch);

}  // namespace cugrad::cpu
