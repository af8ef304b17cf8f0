// cuDNN handles (one per device and thread, recycled through a pool that is never torn down),
// the RAII descriptors, and the allocator-backed workspace.
#include "cuda/cudnn_handle.h"

#include <cuda_runtime.h>

#include <climits>
#include <cstdio>
#include <mutex>
#include <vector>

#include "cugrad/error.h"
#include "host/runtime/allocator.h"

namespace cugrad::cuda {

namespace {

// Handles no thread holds, by device index. Created once and never destroyed: a static
// destructor may run after the CUDA driver has shut down, and cudnnDestroy then could crash.
struct IdleHandles {
  std::mutex mutex;
  std::vector<std::vector<cudnnHandle_t>> by_device;
};

IdleHandles& idle_handles() {
  static IdleHandles* const idle = new IdleHandles();
  return *idle;
}

cudnnHandle_t acquire_handle(int device) {
  {
    IdleHandles& idle = idle_handles();
    std::lock_guard<std::mutex> lock(idle.mutex);
    const auto d = static_cast<std::size_t>(device);
    if (d < idle.by_device.size() && !idle.by_device[d].empty()) {
      cudnnHandle_t h = idle.by_device[d].back();
      idle.by_device[d].pop_back();
      return h;
    }
  }
  cudnnHandle_t h = nullptr;
  CUGRAD_CUDNN_CHECK(cudnnCreate(&h));
  return h;
}

// The handles of one thread, by device index; its destructor (thread exit) only moves them to
// the idle pool: no CUDA call, nothing that can throw out of it.
class ThreadHandles {
 public:
  ThreadHandles() = default;
  ThreadHandles(const ThreadHandles&) = delete;
  ThreadHandles& operator=(const ThreadHandles&) = delete;

  ~ThreadHandles() {
    try {
      IdleHandles& idle = idle_handles();
      std::lock_guard<std::mutex> lock(idle.mutex);
      if (idle.by_device.size() < handles_.size()) idle.by_device.resize(handles_.size());
      for (std::size_t d = 0; d < handles_.size(); ++d)
        if (handles_[d] != nullptr) idle.by_device[d].push_back(handles_[d]);
    } catch (...) {
      // Out of memory or a broken mutex while a thread ends: the handles leak, harmlessly.
    }
  }

  cudnnHandle_t get(int device) {
    const auto d = static_cast<std::size_t>(device);
    if (d >= handles_.size()) handles_.resize(d + 1, nullptr);
    if (handles_[d] == nullptr) handles_[d] = acquire_handle(device);
    return handles_[d];
  }

 private:
  std::vector<cudnnHandle_t> handles_;
};

thread_local ThreadHandles t_handles;

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
  cudnnHandle_t h = t_handles.get(device);
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
