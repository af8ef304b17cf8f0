// GPU-only test helpers.
#pragma once

#include <memory>

#include "cugrad/device.h"
#include "cugrad/stream.h"

namespace cugrad::testing {

/// Queues a single-thread kernel that spins for about `milliseconds` on `stream`.
void spin_on(const Stream& stream, double milliseconds);

/// Holds `stream` closed: work queued on it after the gate waits until open() or the gate's
/// destruction (a host function on the stream that blocks until then). Unlike a spinning
/// kernel, it keeps the stream busy for exactly as long as a test needs, and no kernel occupies
/// the device meanwhile (the CUDA emulator runs one kernel at a time).
class StreamGate {
 public:
  explicit StreamGate(const Stream& stream);
  ~StreamGate();
  StreamGate(const StreamGate&) = delete;
  StreamGate& operator=(const StreamGate&) = delete;
  void open();

  struct State;

 private:
  std::shared_ptr<State> state_;
};

/// Turns cuDNN's deterministic convolutions on (set_cudnn_deterministic) for its lifetime,
/// for tests that compare two CUDA runs bit for bit: otherwise cuDNN may pick algorithms whose
/// atomics change the last bits from run to run (seen on an H100, 2026-11-27).
struct DeterministicConvolutions {
  bool saved = cudnn_deterministic();
  DeterministicConvolutions() { set_cudnn_deterministic(true); }
  ~DeterministicConvolutions() { set_cudnn_deterministic(saved); }
  DeterministicConvolutions(const DeterministicConvolutions&) = delete;
  DeterministicConvolutions& operator=(const DeterministicConvolutions&) = delete;
};

}  // namespace cugrad::testing
