// cuDNN handles (one per device and thread, recycled through a pool that is never torn down),
// the RAII descriptors, and the allocator-backed workspace.
#include "cuda/cudnn_handle.h"

#include <cuda_runtime.h>

#include <climits>
#include <cstdio>
#include <vector>

#include "cugrad/error.h"
#include "cuda/handle_pool.h"
#include "host/runtime/allocator.h"

namespace cugrad::cuda {

namespace {

cudnnHandle_t create_cudnn() {
  cudnnHandle_t h = nullptr;
  CUGRAD_CUDNN_CHECK(cudnnCreate(&h));
  return h;
}

using Handles = detail::HandlePool<cudnnHandle_t, create_cudnn>;

// Destructors must not throw: a failed destroy is reported on stderr.
void log_cudnn_failure(cudnnStatus_t status, const char* call) noexcept {
  if (status != CUDNN_STATUS_SUCCESS)
    std::fprintf(stderr, "cugrad: %s failed: %s\n", call, cudnnGetErrorString(status));
}

int as_int(std::int64_t v, const char* what) {
  CUGRAD_CHECK(v >= 0 && v <= INT_MAX, "cuDNN descriptor: ", what, " = ", v,
               " is outside the int range cuDNN's 4-D descriptors take");
  return static_cast<int>(v);
}

}  // namespace

cudnnHandle_t cudnn_handle(void* stream) {
  int device = 0;
  CUGRAD_CUDA_CHECK(cudaGetDevice(&device));
  cudnnHandle_t h = Handles::get(device);
  CUGRAD_CUDNN_CHECK(cudnnSetStream(h, static_cast<cudaStream_t>(stream)));
  return h;
}

// ---- descriptors ----

TensorDescriptor::TensorDescriptor() { CUGRAD_CUDNN_CHECK(cudnnCreateTensorDescriptor(&desc_)); }

TensorDescriptor::TensorDescriptor(cudnnDataType_t type, std::int64_t n, std::int64_t c, std::int64_t h,
                                   std::int64_t w)
    : TensorDescriptor() {
  set(type, n, c, h, w);
}

TensorDescriptor::~TensorDescriptor() {
  if (desc_) log_cudnn_failure(cudnnDestroyTensorDescriptor(desc_), "cudnnDestroyTensorDescriptor");
}

void TensorDescriptor::set(cudnnDataType_t type, std::int64_t n, std::int64_t c, std::int64_t h,
                           std::int64_t w) {
  CUGRAD_CUDNN_CHECK(cudnnSetTensor4dDescriptor(desc_, CUDNN_TENSOR_NCHW, type, as_int(n, "n"),
                                                as_int(c, "c"), as_int(h, "h"), as_int(w, "w")));
}

FilterDescriptor::FilterDescriptor() { CUGRAD_CUDNN_CHECK(cudnnCreateFilterDescriptor(&desc_)); }

FilterDescriptor::FilterDescriptor(cudnnDataType_t type, std::int64_t k, std::int64_t c, std::int64_t h,
                                   std::int64_t w)
    : FilterDescriptor() {
  set(type, k, c, h, w);
}

FilterDescriptor::~FilterDescriptor() {
  if (desc_) log_cudnn_failure(cudnnDestroyFilterDescriptor(desc_), "cudnnDestroyFilterDescriptor");
}

void FilterDescriptor::set(cudnnDataType_t type, std::int64_t k, std::int64_t c, std::int64_t h,
                           std::int64_t w) {
  CUGRAD_CUDNN_CHECK(cudnnSetFilter4dDescriptor(desc_, type, CUDNN_TENSOR_NCHW, as_int(k, "k"),
                                                as_int(c, "c"), as_int(h, "h"), as_int(w, "w")));
}

ConvolutionDescriptor::ConvolutionDescriptor() {
  CUGRAD_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&desc_));
}

ConvolutionDescriptor::~ConvolutionDescriptor() {
  if (desc_) log_cudnn_failure(cudnnDestroyConvolutionDescriptor(desc_), "cudnnDestroyConvolutionDescriptor");
}

void ConvolutionDescriptor::set(std::int64_t pad_h, std::int64_t pad_w, std::int64_t stride_h,
                                std::int64_t stride_w, std::int64_t dil_h, std::int64_t dil_w,
                                std::int64_t groups, cudnnDataType_t compute_type, cudnnMathType_t math) {
  CUGRAD_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(
      desc_, as_int(pad_h, "pad_h"), as_int(pad_w, "pad_w"), as_int(stride_h, "stride_h"),
      as_int(stride_w, "stride_w"), as_int(dil_h, "dilation_h"), as_int(dil_w, "dilation_w"),
      CUDNN_CROSS_CORRELATION, compute_type));
  CUGRAD_CUDNN_CHECK(cudnnSetConvolutionGroupCount(desc_, as_int(groups, "groups")));
  set_math(math);
}

void ConvolutionDescriptor::set_math(cudnnMathType_t math) {
  CUGRAD_CUDNN_CHECK(cudnnSetConvolutionMathType(desc_, math));
}

// ---- workspace ----

Workspace::Workspace(Device device, std::size_t bytes, const Stream& stream)
    : device_(device), bytes_(bytes), stream_(stream) {
  if (bytes_ > 0) data_ = runtime::allocate(device_, bytes_, stream_);
}

Workspace::~Workspace() {
  if (data_) runtime::deallocate(device_, data_, bytes_, stream_);
}

}  // namespace cugrad::cuda
