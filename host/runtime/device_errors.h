// Errors that kernels find in their inputs (an out-of-range class index, say) and report
// without a host synchronization: a kernel writes the first error into a small record in
// host-mapped pinned memory, one record per device, and the host reads it later with plain
// loads (no CUDA call, no stall) and throws.
//
// Protocol. The record has a generation G (written by the host only) and a state S (written
// by the device only); a report is pending when S == G + 1. A kernel thread that finds an
// error reads G, claims generation G with atomicMax(claim, G + 1) on a claim word in device
// memory (so no atomic ever targets host memory, which PCIe does not guarantee), and only the
// winner writes the fields, fences (__threadfence_system) and stores S = G + 1. The host, on
// a pending report, copies the fields, stores G + 1 (which re-arms the record) and throws.
// Only the first error of each generation is kept; later ones are dropped until the host has
// consumed it. Errors found by kernels that are still running are reported by a later check.
#pragma once

#include <cstdint>

#include "cugrad/device.h"

namespace cugrad::runtime {

/// What went wrong; each kind has its message in device_errors.cpp.
enum class DeviceErrorKind : std::int32_t {
  none = 0,
  cross_entropy_target = 1,  // index: row, value: target, bound: classes, extra: ignore_index
};

/// The record in host-mapped pinned memory (layout shared by host and device code).
struct alignas(64) DeviceErrorRecord {
  std::uint32_t generation;  // host-written: reports consumed so far
  std::uint32_t state;       // device-written: generation + 1 once the fields below are complete
  std::int32_t kind;         // a DeviceErrorKind
  std::int32_t reserved;
  std::int64_t index;
  std::int64_t value;
  std::int64_t bound;
  std::int64_t extra;
};

/// What a kernel needs to report an error on one device (device pointers, valid there).
struct DeviceErrorSink {
  DeviceErrorRecord* record = nullptr;  // device view of the mapped record
  unsigned int* claim = nullptr;        // claim word in device memory
};

/// The sink of a CUDA device, created on first use (one mapped pinned allocation per device,
/// kept for the life of the process). Kernels report through cuda::report_device_error
/// (cuda/device_errors.h).
DeviceErrorSink device_error_sink(Device device);

/// Throws cugrad::ValueError for an error a kernel on `device` reported since the last
/// check, naming the op and the offending value, and clears it. Reads host memory only: no
/// CUDA call, no synchronization, cheap enough for every op. No-op for the CPU.
void check_device_errors(Device device);
/// The same for every device cugrad has created a sink for.
void check_device_errors();

}  // namespace cugrad::runtime
