// cugrad::Error and its subclasses, and the checking macros used on every CUDA, cuBLAS
// and cuDNN call. The macros take the status as an integer, so this header needs no CUDA
// headers; the error text comes from the library itself inside cugrad.
#pragma once

#include <cstddef>
#include <sstream>
#include <stdexcept>
#include <string>

namespace cugrad {

/// Base of every exception cugrad throws. The message names the op and what it got.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

/// A value is of the wrong kind: shape, dtype, device or argument out of range.
class ValueError : public Error {
 public:
  using Error::Error;
};

/// A CUDA runtime call failed (kernel launches included).
class CudaError : public Error {
 public:
  CudaError(const std::string& what, int code) : Error(what), code_(code) {}
  int code() const noexcept { return code_; }

 private:
  int code_;
};

/// A device or pinned-host allocation could not be satisfied. The engine stays usable.
class OutOfMemoryError : public CudaError {
 public:
  OutOfMemoryError(const std::string& what, int code) : CudaError(what, code) {}
};

/// A cuBLAS call failed.
class CublasError : public Error {
 public:
  CublasError(const std::string& what, int code) : Error(what), code_(code) {}
  int code() const noexcept { return code_; }

 private:
  int code_;
};

/// A cuDNN call failed.
class CudnnError : public Error {
 public:
  CudnnError(const std::string& what, int code) : Error(what), code_(code) {}
  int code() const noexcept { return code_; }

 private:
  int code_;
};

namespace detail {
[[noreturn]] void throw_cuda_error(int status, const char* call, const char* file, int line);
[[noreturn]] void throw_cublas_error(int status, const char* call, const char* file, int line);
[[noreturn]] void throw_cudnn_error(int status, const char* call, const char* file, int line);
void log_cuda_error(int status, const char* call, const char* file, int line) noexcept;

/// Builds a message from any streamable pieces: detail::cat("add: ", shape, " vs ", other).
template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail
}  // namespace cugrad

/// Throws cugrad::CudaError (OutOfMemoryError for allocation failures) with the call text,
/// file:line and CUDA's own error string when `call` does not return cudaSuccess.
#define CUGRAD_CUDA_CHECK(call)                                                   \
  do {                                                                            \
    int cugrad_status_ = static_cast<int>(call);                                  \
    if (cugrad_status_ != 0)                                                      \
      ::cugrad::detail::throw_cuda_error(cugrad_status_, #call, __FILE__, __LINE__); \
  } while (0)

/// For destructors: logs to stderr instead of throwing.
#define CUGRAD_CUDA_CHECK_NOTHROW(call)                                           \
  do {                                                                            \
    int cugrad_status_ = static_cast<int>(call);                                  \
    if (cugrad_status_ != 0)                                                      \
      ::cugrad::detail::log_cuda_error(cugrad_status_, #call, __FILE__, __LINE__); \
  } while (0)

#define CUGRAD_CUBLAS_CHECK(call)                                                   \
  do {                                                                              \
    int cugrad_status_ = static_cast<int>(call);                                    \
    if (cugrad_status_ != 0)                                                        \
      ::cugrad::detail::throw_cublas_error(cugrad_status_, #call, __FILE__, __LINE__); \
  } while (0)

#define CUGRAD_CUDNN_CHECK(call)                                                   \
  do {                                                                             \
    int cugrad_status_ = static_cast<int>(call);                                   \
    if (cugrad_status_ != 0)                                                       \
      ::cugrad::detail::throw_cudnn_error(cugrad_status_, #call, __FILE__, __LINE__); \
  } while (0)

/// Argument check for public functions: throws cugrad::ValueError built from the pieces.
#define CUGRAD_CHECK(cond, ...)                                          \
  do {                                                                   \
    if (!(cond)) throw ::cugrad::ValueError(::cugrad::detail::cat(__VA_ARGS__)); \
  } while (0)
