// Devices: the CPU and CUDA GPUs, and queries that never fail on a machine without a driver.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>

namespace cugrad {

enum class DeviceType : std::uint8_t { cpu, cuda };

/// A place where tensors live and ops run: Device::cpu() or Device::cuda(index).
class Device {
 public:
  constexpr Device() = default;
  static constexpr Device cpu() { return Device(DeviceType::cpu, -1); }
  static constexpr Device cuda(int index = 0) { return Device(DeviceType::cuda, index); }
  /// Parses "cpu", "cuda" or "cuda:N".
  static Device parse(const std::string& text);

  constexpr DeviceType type() const { return type_; }
  constexpr int index() const { return index_; }
  constexpr bool is_cpu() const { return type_ == DeviceType::cpu; }
  constexpr bool is_cuda() const { return type_ == DeviceType::cuda; }
  std::string str() const;

  friend constexpr bool operator==(const Device&, const Device&) = default;

 private:
  constexpr Device(DeviceType t, int i) : type_(t), index_(i) {}
  DeviceType type_ = DeviceType::cpu;
  int index_ = -1;
};

inline std::ostream& operator<<(std::ostream& os, const Device& d) { return os << d.str(); }

/// Number of visible CUDA devices; 0 when there is no driver or no GPU (never throws).
int device_count();
/// True when at least one CUDA device is visible.
bool cuda_is_available();
/// Waits for all work on `device` (every stream), then reports errors kernels found in their
/// inputs (see check_device_errors). No-op for the CPU.
void synchronize(Device device);
/// Waits for all work on every CUDA device cugrad has used.
void synchronize();
/// Throws cugrad::ValueError for an error a CUDA kernel found in its inputs (for example an
/// out-of-range class index in cross_entropy) and reported without stalling the host. Such
/// errors surface at the next host synchronization cugrad performs (item(), to_vector(),
/// to(cpu), synchronize(), Stream::synchronize()), at the next cross_entropy call, or here;
/// this reads host memory only, so it is cheap and never waits for the GPU.
void check_device_errors();
/// Throws cugrad::Error naming `op` unless `device` can be used (a CUDA index in range).
void check_device_available(Device device, const char* op);

/// TF32 for cuBLAS/cuDNN float32 math: off (strict float32) unless enabled here.
void set_allow_tf32(bool allow);
bool allow_tf32();

/// cuDNN's timed algorithm search for convolutions, as torch.backends.cudnn.benchmark: on, the
/// first call of each (direction, shape) times every algorithm cuDNN offers on the call's own
/// buffers (blocking the host once) and later calls use the fastest; off, cuDNN's heuristics
/// choose without running anything. Off by default; CUGRAD_CUDNN_BENCHMARK=1 (any value but
/// empty or 0) in the environment turns it on at start. Worth it for training with fixed shapes:
/// on an H100 (2026-11-26) the reference CNN's step went from 5.32 to 3.91 ms, ResNet-18's
/// (batch 64) from 24.1 to 21.9 ms. During CUDA-graph capture no search runs: a capture uses the
/// rankings searched before it (by the warm-up steps), the heuristics for shapes never searched.
void set_cudnn_benchmark(bool on);
bool cudnn_benchmark();

/// What cuDNN's timed search has cost this process so far: `searches` counts the searches (one
/// per direction and new shape; none with the search off or for shapes already searched) and
/// `seconds` the host time they took, each measured from the moment the stream had finished
/// its earlier work (the search blocks the host) until the ranking was done. For reporting how
/// much of a first epoch or a first attack step the search took.
struct CudnnSearchStats {
  std::uint64_t searches = 0;
  double seconds = 0;
};
CudnnSearchStats cudnn_search_stats();

/// Deterministic convolutions, as torch.backends.cudnn.deterministic: on, every cuDNN
/// convolution (forward, input gradient, weight gradient; heuristics or timed search) uses only
/// algorithms cuDNN reports as deterministic (CUDNN_DETERMINISTIC), so the same inputs give the
/// same bits on every run on the same GPU and library versions; off, cuDNN may pick algorithms
/// that accumulate with atomics (on an H100, 2026-11-27, the heuristics chose the weight-gradient
/// engine wgrad_alg0 for the 2-conv CNN, whose last bits vary from run to run). cugrad's own
/// kernels (bias gradients included) and cuBLAS's GEMMs are deterministic either way. Off by
/// default (faster algorithms may be allowed); CUGRAD_CUDNN_DETERMINISTIC=1 (any value but empty
/// or 0) in the environment turns it on at start.
void set_cudnn_deterministic(bool on);
bool cudnn_deterministic();

}  // namespace cugrad
