// Helpers every op uses: input checks with messages that name the op, and OpScope, which
// picks the device and current stream, and applies the cross-stream protocol to the
// storages the op reads and writes.
#pragma once

#include <initializer_list>

#include "cugrad/stream.h"
#include "cugrad/tensor.h"
#include "host/runtime/cuda_context.h"
#include "host/tensor/tensor_impl.h"

namespace cugrad {

void check_defined(const char* op, const Tensor& t, const char* what = "input");
void check_same_device(const char* op, const Tensor& a, const Tensor& b);
void check_same_dtype(const char* op, const Tensor& a, const Tensor& b);
void check_floating(const char* op, const Tensor& t);
/// Normalizes a possibly negative dimension index for a tensor of `ndim` dims.
std::int64_t wrap_dim(const char* op, std::int64_t dim, std::int64_t ndim);
/// Describes a tensor for an error message: "float32[2, 3] on cuda:0".
std::string describe(const Tensor& t);
/// ReLU's gradient from the incoming gradient g and relu's output y: 0 where y <= 0, else g
/// (PyTorch's threshold_backward; a NaN y passes g). One pass, recording nothing (for backward
/// functions, which run with grad mode off).
Tensor threshold_backward(const Tensor& g, const Tensor& y);

/// Scope of one op on one device: sets the CUDA device, resolves the current stream, and
/// orders the op after earlier writes (reads) or earlier reads and writes (writes) made on
/// other streams.
class OpScope {
 public:
  OpScope(const char* op, Device device);
  void reads(const Tensor& t) { t.impl()->storage->prepare_read(stream_); }
  void writes(const Tensor& t) { t.impl()->storage->prepare_write(stream_); }
  /// The cudaStream_t for launchers (nullptr on the CPU).
  void* stream() const { return stream_.handle(); }
  bool cuda() const { return device_.is_cuda(); }
  Device device() const { return device_; }

 private:
  Device device_;
  runtime::DeviceGuard guard_;
  Stream stream_;
};

}  // namespace cugrad
