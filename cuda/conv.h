// conv2d on CUDA through cuDNN's convolution API (float32, NCHW): forward, input gradient,
// weight gradient and bias gradient, with the algorithm of each direction chosen once per
// geometry and cached. The launchers take the cugrad::Stream the op runs on (not only its
// handle) because they take cuDNN workspaces from the stream-ordered allocator on it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "cugrad/stream.h"
#include "host/cpu/conv.h"

namespace cugrad::cuda {

// Common contract: every pointer is device memory of the current device (the device of
// `stream`), contiguous NCHW float32 as described by `g` (a valid geometry, checked by the op).
// Work is queued on `stream`; nothing synchronizes the host, except the one-time algorithm
// search when cugrad::cudnn_benchmark() is on (below). Tensors above 2^31 - 1 elements are processed
// in chunks of whole images (cuDNN's 4-D descriptors take int sizes); one image must fit.
//
// Algorithm choice, per direction and per (device, geometry, TF32 setting, search mode):
//  - default: cuDNN's heuristics (cudnnGet*Algorithm_v7), which rank the algorithms by
//    expected speed without running anything (no host synchronization; capturable);
//  - cugrad::set_cudnn_benchmark(true) (or CUGRAD_CUDNN_BENCHMARK=1 in the environment):
//    cudnnFind*AlgorithmEx times every algorithm
//    on the call's own buffers once (host-blocking, like torch.backends.cudnn.benchmark), and
//    the ranking is by measured time; during CUDA-graph capture the heuristics are used instead.
// With cugrad::cudnn_deterministic() only algorithms cuDNN reports as deterministic are
// candidates (the fallbacks, implicit GEMM forward and algorithm 1 backward, are).
// Candidates are kept in ranked order, filtered to those cuDNN reports as supported whose
// workspace fits in min(1 GiB, device memory / 16) and whose math is allowed. A candidate that
// cuDNN then refuses (a NOT_SUPPORTED status) is skipped and the next one used and remembered.
// Math: strict float32 (CUDNN_FMA_MATH) unless cugrad::allow_tf32(), then the math type cuDNN
// ranked (TF32 tensor cores allowed; never a down-conversion to half precision).
// Each candidate's workspace size is queried once, with the ranking (the query on every call
// was half of cuDNN's host time per call on an H200). With graph_convolutions() on
// (cuda/conv_graph.h) the calls go through cuDNN's graph API instead, where it has an engine.

/// y = conv(x, weight) + bias (bias may be null), then relu(y) when `relu`. Convolutions with
/// few input taps (direct_conv_supported) run cugrad's direct kernel, bias and ReLU in its
/// store, while direct_convolutions() is on; others run cuDNN's convolution, then the bias and
/// the ReLU in one pass of cugrad's channel_bias kernel (cuda/channel_sum.h). Either way the
/// same bits as adding the bias and running the ReLU kernel separately.
void conv2d_forward_f32(const float* x, const float* weight, const float* bias, float* y,
                        const Conv2dGeometry& g, const Stream& stream, bool relu = false);

/// dx = the input gradient for the output gradient dy (cudnnConvolutionBackwardData), fully written.
void conv2d_backward_input_f32(const float* dy, const float* weight, float* dx, const Conv2dGeometry& g,
                               const Stream& stream);

/// dweight = the weight gradient (cudnnConvolutionBackwardFilter, always: the host op sends
/// supported shapes to direct_conv2d_backward_params_f32 instead), fully written (zeros when
/// n == 0).
void conv2d_backward_weight_f32(const float* x, const float* dy, float* dweight, const Conv2dGeometry& g,
                                const Stream& stream);

/// dbias[o] = Σ dy over images and pixels (cuda/channel_sum.h, deterministic), fully written.
void conv2d_backward_bias_f32(const float* dy, float* dbias, const Conv2dGeometry& g, const Stream& stream);

/// The backward of the fused ReLU with the bias gradient (conv2d_relu): dz =
/// threshold_backward(dy, y) for the ReLU's output y, and dbias[o] = Σ dz, in one pass (the
/// same bits as the two separately). dz is then the gradient the convolution's input and
/// weight gradients take.
void conv2d_backward_bias_relu_f32(const float* dy, const float* y, float* dz, float* dbias,
                                   const Conv2dGeometry& g, const Stream& stream);

/// Number of (direction, geometry, ...) entries in the algorithm cache (tests, diagnostics).
std::size_t conv2d_algorithm_cache_size();

/// The algorithm cache, one line per entry (diagnostics, benchmarks): direction, geometry, the
/// modes it was ranked under, and the first candidate (the one calls use) with its math type
/// and workspace, e.g. "forward 64x64x56x56 -> 64 3x3/1 pad 1 [search] algo 1 FMA 0 B (3 ranked)".
std::vector<std::string> conv2d_algorithm_choices();

/// Host time spent running cuDNN convolutions (forward, input and weight gradients: each call's
/// descriptors, workspace allocation and the cuDNN call itself, timed on the host; workspace
/// sizes are queried once per ranked algorithm, with the ranking;
/// not the algorithm search, see cudnn_search_stats), process-wide: what part of a training
/// step's issue time is cuDNN's (benchmarks).
struct CudnnCallStats {
  std::uint64_t calls = 0;
  double seconds = 0;             // in all
  double descriptor_seconds = 0;  // of it: the handle and the call's descriptors
  double workspace_seconds = 0;   // the workspace from the allocator
  double run_seconds = 0;         // the cuDNN convolution call itself
};
CudnnCallStats cudnn_call_stats();

}  // namespace cugrad::cuda
