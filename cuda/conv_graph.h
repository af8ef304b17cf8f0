// conv2d through cuDNN's graph (backend) API: one convolution operation per graph, its
// execution plan built once per (direction, device, geometry, beta, alignment, modes, cuDNN
// handle) and cached, so that a call costs a variant pack and cudnnBackendExecute instead of the
// legacy API's per-call work (descriptors, and whatever cuDNN 9 does inside
// cudnnConvolutionForward to map the call onto its engines). Internal: conv.cpp uses it while
// graph_convolutions() is on and falls back to the legacy API where it returns false.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "cugrad/stream.h"
#include "host/cpu/conv.h"

namespace cugrad::cuda {

enum class ConvDirection : int { forward = 0, backward_data = 1, backward_filter = 2 };

/// Runs one convolution direction through a cached execution plan: forward y = conv(x, w)
/// (+ beta·y), backward data x = conv_transpose(y, w) (+ beta·x) with y holding dy and x dx,
/// backward filter w = correlate(x, y) (+ beta·w) with y holding dy and w dw. Pointers as in
/// conv.h (contiguous NCHW float32 on the stream's device). Engines are chosen by cuDNN's
/// heuristics (mode A, then the fallback list) or, with cudnn_benchmark(), by timing once the
/// heuristics' first 8 and every other engine of the graph by global index, 32 at most (on
/// scratch outputs, so the call's outputs are never overwritten before they are computed), all
/// filtered as the legacy path's algorithms: strict float32 unless allow_tf32()
/// (no tensor-core engines), never a down-conversion, only deterministic engines with
/// cudnn_deterministic(), no engine that compiles at run time (its first use can take seconds).
/// Returns false, with nothing queued, when no engine qualifies (the caller uses the legacy
/// API; the answer is cached too). Other cuDNN failures throw cugrad::Error.
bool graph_convolution(ConvDirection dir, const Conv2dGeometry& g, float* x, float* w, float* y, float beta,
                       const Stream& stream);

// Shared with the legacy path (defined in conv.cpp):
/// Adds one timed search of `seconds` to cudnn_search_stats() (conv.cpp keeps the totals).
void record_cudnn_search(double seconds);
/// Whether a call on `stream` may run a timed search now: cudnn_benchmark() is on and the stream
/// is not being captured into a CUDA graph (a search synchronizes).
bool timed_search_now(const Stream& stream);
/// The largest workspace a candidate may ask for: 1 GiB, or 1/16 of the device's memory.
std::size_t cudnn_workspace_limit(int device);
/// "forward", "input gradient" or "weight gradient" (diagnostics).
const char* conv_direction_name(ConvDirection dir);

/// Whether conv2d's cuDNN calls go through graph_convolution (default off: on an H200,
/// 2026-11-27, it cut cuDNN's host time per call to a third but its engines, then chosen among
/// the heuristics' first 8 only, made the reference CNN's and ResNet-18's steps slower;
/// CUGRAD_CUDNN_GRAPH=1 in the environment turns it on at start). Returns the previous value.
bool set_graph_convolutions(bool on);
bool graph_convolutions();

/// Host time and counts of graph_convolution (benchmarks): `calls` that ran a plan, the host
/// seconds of those calls (variant pack and execute), `plans` built, and the calls answered
/// false (no engine qualified).
struct GraphConvStats {
  std::uint64_t calls = 0;
  double seconds = 0;
  std::uint64_t plans = 0;
  std::uint64_t declined = 0;
};
GraphConvStats graph_conv_stats();

/// The cached plans, one line per entry (diagnostics, benchmarks): direction, geometry, modes,
/// and cuDNN's global index of the engine chosen, its workspace and (searched) its time.
std::vector<std::string> graph_conv_choices();

}  // namespace cugrad::cuda
