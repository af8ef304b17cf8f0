// Turns CUDA, cuBLAS and cuDNN status codes into cugrad exceptions with the library's text.
#include "cugrad/error.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <cstdio>

namespace cugrad::detail {

namespace {
std::string where(const char* call, const char* file, int line) {
  return cat(call, " at ", file, ":", line);
}
}  // namespace

void throw_cuda_error(int status, const char* call, const char* file, int line) {
  auto err = static_cast<cudaError_t>(status);
  // Clear the sticky-free error state so that the engine stays usable after e.g. an OOM.
  (void)cudaGetLastError();
  std::string msg = cat("CUDA error ", cudaGetErrorName(err), " (", status, "): ",
                        cudaGetErrorString(err), " in ", where(call, file, line));
  if (err == cudaErrorMemoryAllocation) throw OutOfMemoryError(msg, status);
  throw CudaError(msg, status);
}

void throw_cublas_error(int status, const char* call, const char* file, int line) {
  auto st = static_cast<cublasStatus_t>(status);
  throw CublasError(cat("cuBLAS error ", cublasGetStatusName(st), " (", status, "): ",
                        cublasGetStatusString(st), " in ", where(call, file, line)),
                    status);
}

void throw_cudnn_error(int status, const char* call, const char* file, int line) {
  auto st = static_cast<cudnnStatus_t>(status);
  throw CudnnError(cat("cuDNN error (", status, "): ", cudnnGetErrorString(st), " in ",
                       where(call, file, line)),
                   status);
}

void log_cuda_error(int status, const char* call, const char* file, int line) noexcept {
  auto err = static_cast<cudaError_t>(status);
  std::fprintf(stderr, "cugrad: CUDA error %s: %s in %s at %s:%d (ignored in a destructor)\n",
               cudaGetErrorName(err), cudaGetErrorString(err), call, file, line);
}

}  // namespace cugrad::detail
