// Device-reported errors: the per-device mapped records, and the host-side check that turns a
// pending report into a cugrad::ValueError (see device_errors.h for the protocol).
#include "host/runtime/device_errors.h"

#include <cuda_runtime.h>

#include <array>
#include <atomic>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>

#include "cuda/device_errors.h"
#include "cugrad/error.h"
#include "host/runtime/cuda_context.h"

namespace cugrad::runtime {

namespace {

constexpr int kMaxDevices = 64;

struct Slot {
  DeviceErrorRecord* host = nullptr;  // host view of the mapped record
  DeviceErrorSink sink;
  std::mutex consume;  // one host thread consumes a report
};

// Slots are created once per device and never freed (kernels may hold the pointers until
// the process ends; like the pinned cache, leaked on purpose to avoid teardown-order issues).
std::array<std::atomic<Slot*>, kMaxDevices> g_slots{};
std::mutex g_create;

struct Report {
  DeviceErrorKind kind;
  std::int64_t index, value, bound, extra;
};

std::optional<Report> consume(Slot& slot) {
  DeviceErrorRecord* rec = slot.host;
  std::atomic_ref<std::uint32_t> generation(rec->generation), state(rec->state);
  // Fast path: two loads of host memory.
  if (state.load(std::memory_order_acquire) != generation.load(std::memory_order_relaxed) + 1u)
    return std::nullopt;
  std::lock_guard<std::mutex> lock(slot.consume);
  const std::uint32_t g = generation.load(std::memory_order_relaxed);
  if (state.load(std::memory_order_acquire) != g + 1u) return std::nullopt;
  Report r{
      static_cast<DeviceErrorKind>(std::atomic_ref<std::int32_t>(rec->kind).load(std::memory_order_relaxed)),
      std::atomic_ref<std::int64_t>(rec->index).load(std::memory_order_relaxed),
      std::atomic_ref<std::int64_t>(rec->value).load(std::memory_order_relaxed),
      std::atomic_ref<std::int64_t>(rec->bound).load(std::memory_order_relaxed),
      std::atomic_ref<std::int64_t>(rec->extra).load(std::memory_order_relaxed)};
  // Re-arm: the next error claims generation g + 1.
  generation.store(g + 1u, std::memory_order_release);
  return r;
}

std::string message(const Report& r, Device device) {
  switch (r.kind) {
    case DeviceErrorKind::cross_entropy_target:
      return detail::cat("cross_entropy: target ", r.value, " at row ", r.index, " is out of range for ",
                         r.bound, " classes (expected 0 <= target < ", r.bound, ", or ignore_index ", r.extra,
                         "); found on ", device,
                         " by a kernel queued earlier, which treated that row as ignored");
    case DeviceErrorKind::none:
      break;
  }
  return detail::cat("a kernel on ", device, " reported error kind ", static_cast<int>(r.kind), " (index ",
                     r.index, ", value ", r.value, ")");
}

Slot* slot_if(int d) {
  if (d < 0 || d >= kMaxDevices) return nullptr;
  return g_slots[static_cast<std::size_t>(d)].load(std::memory_order_acquire);
}

}  // namespace

DeviceErrorSink device_error_sink(Device device) {
  CUGRAD_CHECK(device.is_cuda() && device.index() >= 0 && device.index() < kMaxDevices,
               "device_error_sink: needs a CUDA device, got ", device);
  if (Slot* s = slot_if(device.index())) return s->sink;
  std::lock_guard<std::mutex> lock(g_create);
  if (Slot* s = slot_if(device.index())) return s->sink;
  DeviceGuard guard(device);
  void* host = nullptr;
  CUGRAD_CUDA_CHECK(
      cudaHostAlloc(&host, sizeof(DeviceErrorRecord), cudaHostAllocMapped | cudaHostAllocPortable));
  std::memset(host, 0, sizeof(DeviceErrorRecord));
  void* mapped = nullptr;
  cudaError_t err = cudaHostGetDevicePointer(&mapped, host, 0);
  if (err != cudaSuccess) {
    CUGRAD_CUDA_CHECK_NOTHROW(cudaFreeHost(host));
    CUGRAD_CUDA_CHECK(err);
  }
  auto* slot = new Slot();
  slot->host = static_cast<DeviceErrorRecord*>(host);
  slot->sink.record = static_cast<DeviceErrorRecord*>(mapped);
  slot->sink.claim = cuda::device_error_claim_word();
  g_slots[static_cast<std::size_t>(device.index())].store(slot, std::memory_order_release);
  return slot->sink;
}

void check_device_errors(Device device) {
  if (!device.is_cuda()) return;
  Slot* s = slot_if(device.index());
  if (!s) return;
  if (std::optional<Report> r = consume(*s)) throw ValueError(message(*r, device));
}

void check_device_errors() {
  for (int d = 0; d < kMaxDevices; ++d) {
    Slot* s = slot_if(d);
    if (!s) continue;
    if (std::optional<Report> r = consume(*s)) throw ValueError(message(*r, Device::cuda(d)));
  }
}

}  // namespace cugrad::runtime
