// CPU emulation of the part of the cuBLAS C API that cugrad uses (cuda/blas.cpp,
// host/runtime/error.cpp), linked in place of libcublas when the GPU code paths run on the CPU.
//
// Emulation model (shared with the rest of tests/emu): "device pointers" are host pointers,
// every product is queued on the handle's stream through the emulated runtime
// (tests/emu/emu_state.h), so it runs at once, or in stream order when the emulator is
// asynchronous (CUGRAD_EMU_ASYNC=1). Every product accumulates in double and rounds
// once to float. The emulated GPU has TF32 tensor cores (the runtime emulation reports sm_90):
// under CUBLAS_TF32_TENSOR_OP_MATH the elements of A and B are first rounded to TF32 (10
// mantissa bits, round to nearest even), as the tensor cores do, unless the environment sets
// NVIDIA_TF32_OVERRIDE=0 (read on every call). Every other math mode is strict float32.
//
// Defined symbols (what <cublas_v2.h> maps the names to):
//   cublasCreate_v2, cublasDestroy_v2, cublasSetStream_v2, cublasGetStream_v2,
//   cublasSetMathMode, cublasGetMathMode, cublasSetPointerMode_v2, cublasGetPointerMode_v2,
//   cublasSgemm_v2, cublasSgemm_v2_64, cublasSgemmStridedBatched, cublasSgemmStridedBatched_64,
//   cublasGetStatusName, cublasGetStatusString.
//
// Argument checking follows cuBLAS's documented rules: a null or unknown (never created, or
// destroyed) handle gives CUBLAS_STATUS_NOT_INITIALIZED; negative sizes, an invalid operation,
// a leading dimension below max(1, rows of the stored matrix), null alpha/beta, a negative
// batch count, an invalid math or pointer mode give CUBLAS_STATUS_INVALID_VALUE. GEMM follows
// BLAS: m == 0 or n == 0 (or batch == 0) returns at once; k == 0 or alpha == 0 leaves
// C = beta * C without reading A or B; beta == 0 never reads C (it may hold NaN).
#include <cublas_v2.h>

#include "tests/emu/emu_math.h"
#include "tests/emu/emu_state.h"
#include "tests/emu/emu_trace.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <unordered_set>
#include <vector>

struct cublasContext {
  cudaStream_t stream = nullptr;
  cublasMath_t math = CUBLAS_DEFAULT_MATH;
  cublasPointerMode_t pointer_mode = CUBLAS_POINTER_MODE_HOST;
};

namespace {

// Live handles, so that a destroyed or made-up handle is refused instead of dereferenced.
struct Registry {
  std::mutex mutex;
  std::unordered_set<const cublasContext*> live;
};

Registry& registry() {
  static Registry* const r = new Registry();  // leaked: usable from static destructors
  return *r;
}

bool is_live(const cublasContext* h) {
  if (h == nullptr) return false;
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  return r.live.count(h) != 0;
}

bool valid_op(cublasOperation_t op) { return op == CUBLAS_OP_N || op == CUBLAS_OP_T || op == CUBLAS_OP_C; }

// For real data CUBLAS_OP_C is CUBLAS_OP_T.
bool transposed(cublasOperation_t op) { return op != CUBLAS_OP_N; }

std::int64_t max1(std::int64_t v) { return v < 1 ? 1 : v; }

cublasStatus_t check_gemm(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                          std::int64_t m, std::int64_t n, std::int64_t k, const float* alpha,
                          std::int64_t lda, std::int64_t ldb, const float* beta, std::int64_t ldc) {
  if (!is_live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!valid_op(transa) || !valid_op(transb)) return CUBLAS_STATUS_INVALID_VALUE;
  if (m < 0 || n < 0 || k < 0) return CUBLAS_STATUS_INVALID_VALUE;
  // Rows of the stored (column-major) matrices: A is m x k (k x m when transposed), B is
  // k x n (n x k when transposed), C is m x n.
  if (lda < max1(transposed(transa) ? k : m)) return CUBLAS_STATUS_INVALID_VALUE;
  if (ldb < max1(transposed(transb) ? n : k)) return CUBLAS_STATUS_INVALID_VALUE;
  if (ldc < max1(m)) return CUBLAS_STATUS_INVALID_VALUE;
  if (alpha == nullptr || beta == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  return CUBLAS_STATUS_SUCCESS;
}

using cugrad_emu::to_tf32;

// Whether GEMMs on `h` round their inputs to TF32.
bool uses_tf32(const cublasContext* h) {
  const int base =
      static_cast<int>(h->math) & ~static_cast<int>(CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION);
  if (base != CUBLAS_TF32_TENSOR_OP_MATH) return false;
  const char* env = std::getenv("NVIDIA_TF32_OVERRIDE");
  return !(env != nullptr && std::strcmp(env, "0") == 0);
}

// An input element as the multiplier sees it.
template <bool kTf32>
double load(const float* p) {
  return static_cast<double>(kTf32 ? to_tf32(*p) : *p);
}

// Column-major C = alpha * op(A) op(B) + beta * C, arguments already checked and m, n > 0.
// Each element is a double sum over k, scaled and rounded to float once.
template <bool kTf32>
void gemm_core(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, float alpha_f,
               const float* A, std::int64_t lda, const float* B, std::int64_t ldb, float beta_f, float* C,
               std::int64_t ldc) {
  const double alpha = alpha_f, beta = beta_f;
  const bool product = k > 0 && alpha_f != 0.0f;  // BLAS: A and B are not read otherwise
  std::vector<double> acc(static_cast<std::size_t>(m));
  std::vector<double> bcol(product ? static_cast<std::size_t>(k) : 0);
  for (std::int64_t j = 0; j < n; ++j) {
    float* c = C + j * ldc;
    if (!product) {
      for (std::int64_t i = 0; i < m; ++i) c[i] = beta_f == 0.0f ? 0.0f : static_cast<float>(beta * c[i]);
      continue;
    }
    // Column j of op(B): B(l, j) = B[l + j*ldb], or B(j, l) = B[j + l*ldb] when transposed.
    for (std::int64_t l = 0; l < k; ++l) bcol[l] = load<kTf32>(tb ? B + j + l * ldb : B + l + j * ldb);
    if (!ta) {
      // op(A)(i, l) = A[i + l*lda]: axpy over the contiguous columns of A.
      std::fill(acc.begin(), acc.end(), 0.0);
      for (std::int64_t l = 0; l < k; ++l) {
        const float* a = A + l * lda;
        const double b = bcol[l];
        for (std::int64_t i = 0; i < m; ++i) acc[i] += load<kTf32>(a + i) * b;
      }
    } else {
      // op(A)(i, l) = A[l + i*lda]: dot products with the contiguous columns of A.
      for (std::int64_t i = 0; i < m; ++i) {
        const float* a = A + i * lda;
        double s = 0.0;
        for (std::int64_t l = 0; l < k; ++l) s += load<kTf32>(a + l) * bcol[l];
        acc[i] = s;
      }
    }
    for (std::int64_t i = 0; i < m; ++i)
      c[i] = static_cast<float>(beta_f == 0.0f ? alpha * acc[i] : alpha * acc[i] + beta * c[i]);
  }
}

cublasStatus_t sgemm_strided(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                             std::int64_t m, std::int64_t n, std::int64_t k, const float* alpha,
                             const float* A, std::int64_t lda, long long strideA, const float* B,
                             std::int64_t ldb, long long strideB, const float* beta, float* C,
                             std::int64_t ldc, long long strideC, std::int64_t batch) {
  const cublasStatus_t st = check_gemm(handle, transa, transb, m, n, k, alpha, lda, ldb, beta, ldc);
  if (st != CUBLAS_STATUS_SUCCESS) return st;
  if (batch < 0) return CUBLAS_STATUS_INVALID_VALUE;
  if (m == 0 || n == 0 || batch == 0) return CUBLAS_STATUS_SUCCESS;
  // The product is queued on the handle's stream (tests/emu/emu_state.h: run at once unless the
  // emulator is asynchronous). Host-mode scalars are read now, device-mode ones when it runs.
  const bool device_scalars = handle->pointer_mode == CUBLAS_POINTER_MODE_DEVICE;
  const float a_now = device_scalars ? 0.0f : *alpha, b_now = device_scalars ? 0.0f : *beta;
  if (C == nullptr || (k > 0 && (device_scalars || a_now != 0.0f) && (A == nullptr || B == nullptr)))
    return CUBLAS_STATUS_INVALID_VALUE;
  const auto core = uses_tf32(handle) ? gemm_core<true> : gemm_core<false>;
  const bool ta = transposed(transa), tb = transposed(transb);
  if (cugrad_emu::state::null_compute()) return CUBLAS_STATUS_SUCCESS;
  const cudaError_t queued = cugrad_emu::state::submit(handle->stream, [=] {
    const float a = device_scalars ? *alpha : a_now, b = device_scalars ? *beta : b_now;
    const bool reads_ab = k > 0 && a != 0.0f;
    for (std::int64_t i = 0; i < batch; ++i)
      core(ta, tb, m, n, k, a, reads_ab ? A + i * strideA : nullptr, lda,
           reads_ab ? B + i * strideB : nullptr, ldb, b, C + i * strideC, ldc);
  });
  // A launch the stream refuses (an invalidated capture, the legacy stream during a capture).
  return queued == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}

}  // namespace

extern "C" {

cublasStatus_t CUBLASWINAPI cublasCreate_v2(cublasHandle_t* handle) {
  if (handle == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  cublasContext* h = new (std::nothrow) cublasContext();
  if (h == nullptr) return CUBLAS_STATUS_ALLOC_FAILED;
  Registry& r = registry();
  {
    std::lock_guard<std::mutex> lock(r.mutex);
    r.live.insert(h);
  }
  *handle = h;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasDestroy_v2(cublasHandle_t handle) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  Registry& r = registry();
  {
    std::lock_guard<std::mutex> lock(r.mutex);
    if (r.live.erase(handle) == 0) return CUBLAS_STATUS_NOT_INITIALIZED;
  }
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasSetStream_v2(cublasHandle_t handle, cudaStream_t streamId) {
  if (!is_live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = streamId;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasGetStream_v2(cublasHandle_t handle, cudaStream_t* streamId) {
  if (!is_live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (streamId == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *streamId = handle->stream;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasGetPointerMode_v2(cublasHandle_t handle, cublasPointerMode_t* mode) {
  if (!is_live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (mode == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *mode = handle->pointer_mode;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasSetPointerMode_v2(cublasHandle_t handle, cublasPointerMode_t mode) {
  if (!is_live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (mode != CUBLAS_POINTER_MODE_HOST && mode != CUBLAS_POINTER_MODE_DEVICE)
    return CUBLAS_STATUS_INVALID_VALUE;
  handle->pointer_mode = mode;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasGetMathMode(cublasHandle_t handle, cublasMath_t* mode) {
  if (!is_live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (mode == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *mode = handle->math;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
  if (!is_live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  // A base mode, optionally or'ed with CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION.
  const int base =
      static_cast<int>(mode) & ~static_cast<int>(CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION);
  switch (base) {
    case CUBLAS_DEFAULT_MATH:
    case CUBLAS_TENSOR_OP_MATH:
    case CUBLAS_PEDANTIC_MATH:
    case CUBLAS_TF32_TENSOR_OP_MATH:
    case CUBLAS_FP32_EMULATED_BF16X9_MATH:
    case CUBLAS_FP64_EMULATED_FIXEDPOINT_MATH:
      break;
    default:
      return CUBLAS_STATUS_INVALID_VALUE;
  }
  handle->math = mode;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasSgemm_v2(cublasHandle_t handle, cublasOperation_t transa,
                                           cublasOperation_t transb, int m, int n, int k, const float* alpha,
                                           const float* A, int lda, const float* B, int ldb,
                                           const float* beta, float* C, int ldc) {
  cugrad_emu::trace::count(__func__);
  return sgemm_strided(handle, transa, transb, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
}

cublasStatus_t CUBLASWINAPI cublasSgemm_v2_64(cublasHandle_t handle, cublasOperation_t transa,
                                              cublasOperation_t transb, int64_t m, int64_t n, int64_t k,
                                              const float* alpha, const float* A, int64_t lda, const float* B,
                                              int64_t ldb, const float* beta, float* C, int64_t ldc) {
  cugrad_emu::trace::count(__func__);
  return sgemm_strided(handle, transa, transb, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
}

cublasStatus_t CUBLASWINAPI cublasSgemmStridedBatched(cublasHandle_t handle, cublasOperation_t transa,
                                                      cublasOperation_t transb, int m, int n, int k,
                                                      const float* alpha, const float* A, int lda,
                                                      long long int strideA, const float* B, int ldb,
                                                      long long int strideB, const float* beta, float* C,
                                                      int ldc, long long int strideC, int batchCount) {
  cugrad_emu::trace::count(__func__);
  return sgemm_strided(handle, transa, transb, m, n, k, alpha, A, lda, strideA, B, ldb, strideB, beta, C, ldc,
                       strideC, batchCount);
}

cublasStatus_t CUBLASWINAPI cublasSgemmStridedBatched_64(cublasHandle_t handle, cublasOperation_t transa,
                                                         cublasOperation_t transb, int64_t m, int64_t n,
                                                         int64_t k, const float* alpha, const float* A,
                                                         int64_t lda, long long int strideA, const float* B,
                                                         int64_t ldb, long long int strideB,
                                                         const float* beta, float* C, int64_t ldc,
                                                         long long int strideC, int64_t batchCount) {
  cugrad_emu::trace::count(__func__);
  return sgemm_strided(handle, transa, transb, m, n, k, alpha, A, lda, strideA, B, ldb, strideB, beta, C, ldc,
                       strideC, batchCount);
}

const char* CUBLASWINAPI cublasGetStatusName(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS:
      return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED:
      return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR:
      return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR:
      return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR:
      return "CUBLAS_STATUS_LICENSE_ERROR";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}

const char* CUBLASWINAPI cublasGetStatusString(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS:
      return "the operation completed successfully";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED:
      return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return "an absent device architectural feature is required";
    case CUBLAS_STATUS_MAPPING_ERROR:
      return "an access to GPU memory space failed";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "the GPU program failed to execute";
    case CUBLAS_STATUS_INTERNAL_ERROR:
      return "an internal operation failed";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "the functionality requested is not supported";
    case CUBLAS_STATUS_LICENSE_ERROR:
      return "error detected trying to check the license";
  }
  return "unknown error";
}

}  // extern "C"
