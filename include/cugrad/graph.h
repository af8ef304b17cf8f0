// CUDA graphs: capture the work a piece of code queues on a stream once, replay it with one
// launch (PyTorch's torch.cuda.CUDAGraph). What it saves is the host's time: every op's checks,
// autograd bookkeeping and cuDNN's per-call cost are paid once at capture, and a replay costs
// one cudaGraphLaunch whatever the number of kernels.
//
// Rules (as CUDA's and PyTorch's):
// - Warm up first: run the code eagerly a few times before capturing it, so that everything it
//   creates once (optimizer momentum buffers, cuBLAS/cuDNN handles, cuDNN's algorithm choices,
//   pinned buffers) exists before the capture. State that must survive from one replay to the
//   next has to be allocated outside the capture: memory allocated during the capture is the
//   graph's, recreated at every replay (a tensor created during the capture and still alive
//   afterwards, such as the loss or a gradient, holds the result of the latest replay).
// - Static inputs and outputs: a replay reads and writes the same memory as the capture did.
//   Copy new inputs into the tensors the capture read (Tensor::copy_), read results from the
//   tensors it produced, and keep both alive while the graph may be replayed.
// - Nothing that needs the host may run during the capture: synchronizations, item(), copies to
//   or from CPU tensors, the Inspector's activation copies, cuDNN's timed algorithm search
//   (a capture uses what the warm-up searched; shapes never searched get cuDNN's heuristics).
//   Those that would run throw cugrad::Error naming the op; the
//   capture is then abandoned (capture() does this for you) and the engine stays usable.
// - Values are captured as they were: hyperparameters (a learning rate passed by value) and
//   shapes are fixed in the graph; capture again to change them, or make the optimizer with
//   `capturable = true` (include/cugrad/optim.h: its hyperparameters, and Adam's step counts,
//   live in device memory, so schedules stepped between replays take effect; a plain Adam
//   refuses to be captured). Random numbers are not:
//   each replay draws new ones from the global generator (dropout masks differ per replay and
//   match an eager run from the same generator state).
// - One capture at a time per process, on one thread, on a stream other than the default one;
//   work on other streams that waits for captured work joins the capture and is rejoined at
//   capture_end.
// - replay() is ordered after the work queued so far on the current stream of the graph's
//   device, and that stream's later work after the replay.
#pragma once

#include <memory>

#include "cugrad/stream.h"

namespace cugrad {

class CudaGraph {
 public:
  CudaGraph();
  ~CudaGraph();  // abandons an unfinished capture
  CudaGraph(CudaGraph&&) noexcept;
  CudaGraph& operator=(CudaGraph&&) noexcept;
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;

  /// Starts capturing the work queued on `stream` (a CUDA stream from Stream::create), which
  /// becomes the current stream of its device for this thread until capture_end. Synchronizes
  /// the device first.
  void capture_begin(const Stream& stream);
  /// Ends the capture and instantiates the graph; throws (and leaves nothing captured) when CUDA
  /// refused something during the capture.
  void capture_end();
  /// Stops a capture without keeping anything (after an exception in the captured code).
  void capture_abandon();
  /// Launches the captured work once.
  void replay();
  /// Drops the captured graph (memory it allocated is released once no tensor holds it).
  void reset();

  bool captured() const;
  bool capturing() const;
  Stream stream() const;
  /// Kernels, copies and other nodes in the captured graph (0 before capture_end).
  std::size_t node_count() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Captures what `f()` queues on `stream` into `graph`; abandons the capture and rethrows when
/// f or the capture fails.
template <class F>
void capture(CudaGraph& graph, const Stream& stream, F&& f) {
  graph.capture_begin(stream);
  try {
    f();
  } catch (...) {
    graph.capture_abandon();
    throw;
  }
  graph.capture_end();
}

}  // namespace cugrad
