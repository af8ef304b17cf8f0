// Device queries. A machine without a driver answers cudaErrorInsufficientDriver (or
// cudaErrorNoDevice): that means "no GPU", never a crash.
#include <cuda_runtime.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

#include "cugrad/device.h"
#include "cugrad/error.h"
#include "host/runtime/capture.h"
#include "host/runtime/cuda_context.h"
#include "host/runtime/device_errors.h"

namespace cugrad {

Device Device::parse(const std::string& text) {
  if (text == "cpu") return Device::cpu();
  if (text == "cuda") return Device::cuda(0);
  if (text.rfind("cuda:", 0) == 0) {
    const std::string idx = text.substr(5);
    CUGRAD_CHECK(!idx.empty() && idx.find_first_not_of("0123456789") == std::string::npos,
                 "Device::parse: bad device string '", text, "' (expected cpu, cuda or cuda:N)");
    return Device::cuda(std::stoi(idx));
  }
  throw ValueError(detail::cat("Device::parse: bad device string '", text,
                               "' (expected cpu, cuda or cuda:N)"));
}

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index_);
}

int device_count() {
  static const int count = [] {
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      return 0;
    }
    return n;
  }();
  return count;
}

bool cuda_is_available() { return device_count() > 0; }

void check_device_available(Device device, const char* op) {
  if (device.is_cpu()) return;
  const int n = device_count();
  CUGRAD_CHECK(n > 0, op, ": ", device, " requested but no CUDA device is available (no driver or no GPU)");
  CUGRAD_CHECK(device.index() >= 0 && device.index() < n, op, ": ", device,
               " is out of range (", n, " CUDA device", n == 1 ? "" : "s", " visible)");
}

void synchronize(Device device) {
  if (device.is_cpu()) return;
  check_device_available(device, "synchronize");
  runtime::check_not_capturing("synchronize", device);
  runtime::DeviceGuard guard(device);
  CUGRAD_CUDA_CHECK(cudaDeviceSynchronize());
  runtime::check_device_errors(device);
}

void synchronize() {
  for (int i = 0; i < device_count(); ++i) synchronize(Device::cuda(i));
}

void check_device_errors() { runtime::check_device_errors(); }

namespace {
std::atomic<bool> g_allow_tf32{false};
}
void set_allow_tf32(bool allow) { g_allow_tf32 = allow; }
bool allow_tf32() { return g_allow_tf32; }

namespace {
// A switch read from the environment at first use: on for any value but empty or "0".
bool env_switch(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' && std::strcmp(v, "0") != 0;
}
std::atomic<bool>& cudnn_benchmark_flag() {
  static std::atomic<bool> flag{env_switch("CUGRAD_CUDNN_BENCHMARK")};
  return flag;
}
std::atomic<bool>& cudnn_deterministic_flag() {
  static std::atomic<bool> flag{env_switch("CUGRAD_CUDNN_DETERMINISTIC")};
  return flag;
}
}  // namespace
void set_cudnn_benchmark(bool on) { cudnn_benchmark_flag() = on; }
bool cudnn_benchmark() { return cudnn_benchmark_flag(); }
void set_cudnn_deterministic(bool on) { cudnn_deterministic_flag() = on; }
bool cudnn_deterministic() { return cudnn_deterministic_flag(); }

namespace runtime {

namespace {
thread_local int t_current_device = -1;  // cache of cudaGetDevice for this thread
int get_device() {
  if (t_current_device < 0) CUGRAD_CUDA_CHECK(cudaGetDevice(&t_current_device));
  return t_current_device;
}
void set_device(int d) {
  if (d != get_device()) {
    CUGRAD_CUDA_CHECK(cudaSetDevice(d));
    t_current_device = d;
  }
}
}  // namespace

DeviceGuard::DeviceGuard(Device device) {
  if (!device.is_cuda()) return;
  previous_ = get_device();
  set_device(device.index());
}

DeviceGuard::~DeviceGuard() {
  if (previous_ >= 0 && previous_ != t_current_device) {
    CUGRAD_CUDA_CHECK_NOTHROW(cudaSetDevice(previous_));
    t_current_device = previous_;
  }
}

const cudaDeviceProp& device_properties(int device) {
  static std::mutex mu;
  static std::vector<std::unique_ptr<cudaDeviceProp>> props;
  std::lock_guard<std::mutex> lock(mu);
  if (props.empty()) props.resize(static_cast<std::size_t>(device_count()));
  CUGRAD_CHECK(device >= 0 && device < static_cast<int>(props.size()), "device_properties: cuda:",
               device, " is out of range");
  auto& p = props[static_cast<std::size_t>(device)];
  if (!p) {
    p = std::make_unique<cudaDeviceProp>();
    CUGRAD_CUDA_CHECK(cudaGetDeviceProperties(p.get(), device));
  }
  return *p;
}

}  // namespace runtime
}  // namespace cugrad
