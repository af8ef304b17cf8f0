// cuDNN resources for the CUDA path: the calling thread's handle for each device (bound to the
// stream of each call), RAII tensor/filter/convolution descriptors, and a workspace taken from
// cugrad's stream-ordered allocator. Internal header (includes cudnn.h); every call is checked.
#pragma once

#include <cudnn.h>

#include <cstddef>
#include <cstdint>

#include "cugrad/stream.h"

namespace cugrad::cuda {

/// The calling thread's cuDNN handle for the current CUDA device, created on first use and
/// bound to `stream` (a cudaStream_t passed opaquely). Call it right before each cuDNN call:
/// the stream is set again every time.
///
/// Lifetime, as for blas_handle(): one handle per device and thread; when a thread ends its
/// handles go to a process-wide pool (no CUDA call) that later threads reuse. Handles are never
/// destroyed (the pool is leaked at exit on purpose: the driver may already be gone when static
/// destructors run).
cudnnHandle_t cudnn_handle(void* stream);

/// A 4-D NCHW (fully packed) tensor descriptor. Sizes must fit in int (checked).
class TensorDescriptor {
 public:
  TensorDescriptor();
  TensorDescriptor(cudnnDataType_t type, std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w);
  ~TensorDescriptor();
  TensorDescriptor(const TensorDescriptor&) = delete;
  TensorDescriptor& operator=(const TensorDescriptor&) = delete;
  void set(cudnnDataType_t type, std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w);
  cudnnTensorDescriptor_t get() const { return desc_; }

 private:
  cudnnTensorDescriptor_t desc_ = nullptr;
};

/// A 4-D filter descriptor (k = output channels, c = input channels per group, NCHW layout).
class FilterDescriptor {
 public:
  FilterDescriptor();
  FilterDescriptor(cudnnDataType_t type, std::int64_t k, std::int64_t c, std::int64_t h, std::int64_t w);
  ~FilterDescriptor();
  FilterDescriptor(const FilterDescriptor&) = delete;
  FilterDescriptor& operator=(const FilterDescriptor&) = delete;
  void set(cudnnDataType_t type, std::int64_t k, std::int64_t c, std::int64_t h, std::int64_t w);
  cudnnFilterDescriptor_t get() const { return desc_; }

 private:
  cudnnFilterDescriptor_t desc_ = nullptr;
};

/// A 2-D cross-correlation descriptor with a group count and a math type.
class ConvolutionDescriptor {
 public:
  ConvolutionDescriptor();
  ~ConvolutionDescriptor();
  ConvolutionDescriptor(const ConvolutionDescriptor&) = delete;
  ConvolutionDescriptor& operator=(const ConvolutionDescriptor&) = delete;
  void set(std::int64_t pad_h, std::int64_t pad_w, std::int64_t stride_h, std::int64_t stride_w,
           std::int64_t dil_h, std::int64_t dil_w, std::int64_t groups, cudnnDataType_t compute_type,
           cudnnMathType_t math);
  void set_math(cudnnMathType_t math);
  cudnnConvolutionDescriptor_t get() const { return desc_; }

 private:
  cudnnConvolutionDescriptor_t desc_ = nullptr;
};

/// Device scratch for one cuDNN call, from the stream-ordered allocator on `stream` (never
/// cudaMalloc) and returned to it, ordered on the same stream, when destroyed: later work on
/// that stream may reuse it only after the cuDNN call that used it. Zero bytes allocates nothing.
/// Allocation failure throws cugrad::OutOfMemoryError (the engine stays usable).
class Workspace {
 public:
  Workspace(Device device, std::size_t bytes, const Stream& stream);
  ~Workspace();
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  void* data() const { return data_; }
  std::size_t size() const { return bytes_; }

 private:
  Device device_;
  std::size_t bytes_ = 0;
  Stream stream_;
  void* data_ = nullptr;
};

}  // namespace cugrad::cuda
