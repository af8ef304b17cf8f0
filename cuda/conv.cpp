// conv2d through cuDNN's convolution API: descriptors per call (cheap host objects), the
// ranked algorithm candidates of each (direction, device, geometry, TF32, search mode) cached
// process-wide, workspaces from the stream-ordered allocator, and the batch split into chunks
// of whole images when a tensor exceeds cuDNN's int sizes. Compiled by the C++ compiler: only
// host-side cuDNN calls live here.
#include "cuda/conv.h"

#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <climits>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "cuda/channel_sum.h"
#include "cuda/conv_direct.h"
#include "cuda/conv_graph.h"
#include "cuda/cudnn_handle.h"
#include "cugrad/device.h"
#include "cugrad/error.h"
#include "host/runtime/cuda_context.h"

namespace cugrad::cuda {

namespace {

// cudnn_search_stats(): searches and their host time, process-wide.
struct SearchStats {
  std::mutex mutex;
  CudnnSearchStats totals;
};
SearchStats& search_stats() {
  static SearchStats* s = new SearchStats();  // leaked: used from static destructors' threads too
  return *s;
}

// cudnn_call_stats(): host time in execute(), process-wide (relaxed atomics: a statistic), in
// all and split into its parts.
std::atomic<std::uint64_t> g_call_count{0};
std::atomic<std::uint64_t> g_call_ns{0};
std::atomic<std::uint64_t> g_descriptor_ns{0};
std::atomic<std::uint64_t> g_workspace_ns{0};
std::atomic<std::uint64_t> g_run_ns{0};

std::uint64_t ns_since(std::chrono::steady_clock::time_point t) {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t).count());
}

// One ranked candidate: the algorithm, the math type to run it with, and the workspace cuDNN
// asks for it (queried once, when ranking: the query costs host time on every call otherwise).
struct Choice {
  int algo = 0;
  cudnnMathType_t math = CUDNN_FMA_MATH;
  std::size_t workspace = 0;
};

using Key = std::array<std::int64_t, 21>;

Key make_key(ConvDirection dir, int device, bool tf32, bool searched, bool deterministic,
             const Conv2dGeometry& g) {
  Key k{static_cast<std::int64_t>(dir), device, tf32 ? 1 : 0, searched ? 1 : 0, deterministic ? 1 : 0};
  const auto f = g.fields();
  std::copy(f.begin(), f.end(), k.begin() + 5);
  return k;
}

// The process-wide cache, leaked on purpose like the handle pool (no teardown order issues).
struct AlgoCache {
  std::mutex mutex;
  std::map<Key, std::vector<Choice>> entries;
};

AlgoCache& algo_cache() {
  static AlgoCache* const cache = new AlgoCache();
  return *cache;
}

// Strict float32 forbids tensor-op math (TF32 on Ampere and later); nothing may down-convert
// float32 inputs to half precision.
bool math_allowed(cudnnMathType_t m, bool tf32) {
  if (m == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) return false;
  return tf32 || m != CUDNN_TENSOR_OP_MATH;
}

bool is_not_supported(cudnnStatus_t s) { return CUDNN_STATUS_CATEGORY(s) == CUDNN_STATUS_NOT_SUPPORTED; }

// Descriptors of one call: x (input or its gradient), w (filter or its gradient), y (output or
// its gradient), and the convolution.
struct ConvDescs {
  TensorDescriptor x;
  FilterDescriptor w;
  TensorDescriptor y;
  ConvolutionDescriptor conv;
  ConvDescs(const Conv2dGeometry& g, cudnnMathType_t math)
      : x(CUDNN_DATA_FLOAT, g.n, g.c_in, g.h, g.w),
        w(CUDNN_DATA_FLOAT, g.c_out, g.c_in_per_group(), g.kh, g.kw),
        y(CUDNN_DATA_FLOAT, g.n, g.c_out, g.out_h, g.out_w) {
    conv.set(g.pad_h, g.pad_w, g.stride_h, g.stride_w, g.dil_h, g.dil_w, g.groups, CUDNN_DATA_FLOAT, math);
  }
};

// Device buffers of one call, matching ConvDescs; inputs are const-cast only because cuDNN's
// Find*Ex signatures are uniform (it reads them).
struct Buffers {
  void* x;
  void* w;
  void* y;
};

// ---- the three directions, in one shape for the generic planning and execution below ----

struct ForwardOp {
  using Perf = cudnnConvolutionFwdAlgoPerf_t;
  using Algo = cudnnConvolutionFwdAlgo_t;
  static constexpr ConvDirection kDir = ConvDirection::forward;
  static constexpr int kCount = CUDNN_CONVOLUTION_FWD_ALGO_COUNT;
  static constexpr const char* kCall = "cudnnConvolutionForward";
  static constexpr Algo kFallback = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM;  // no workspace
  static cudnnStatus_t heuristics(cudnnHandle_t h, const ConvDescs& d, int* n, Perf* p) {
    return cudnnGetConvolutionForwardAlgorithm_v7(h, d.x.get(), d.w.get(), d.conv.get(), d.y.get(), kCount, n,
                                                  p);
  }
  static cudnnStatus_t find(cudnnHandle_t h, const ConvDescs& d, const Buffers& b, void* ws,
                            std::size_t bytes, int* n, Perf* p) {
    return cudnnFindConvolutionForwardAlgorithmEx(h, d.x.get(), b.x, d.w.get(), b.w, d.conv.get(), d.y.get(),
                                                  b.y, kCount, n, p, ws, bytes);
  }
  static cudnnStatus_t workspace(cudnnHandle_t h, const ConvDescs& d, Algo a, std::size_t* bytes) {
    return cudnnGetConvolutionForwardWorkspaceSize(h, d.x.get(), d.w.get(), d.conv.get(), d.y.get(), a,
                                                   bytes);
  }
  static cudnnStatus_t run(cudnnHandle_t h, const ConvDescs& d, const Buffers& b, Algo a, void* ws,
                           std::size_t bytes, float beta) {
    const float alpha = 1.0f;
    return cudnnConvolutionForward(h, &alpha, d.x.get(), b.x, d.w.get(), b.w, d.conv.get(), a, ws, bytes,
                                   &beta, d.y.get(), b.y);
  }
};

struct BackwardDataOp {
  using Perf = cudnnConvolutionBwdDataAlgoPerf_t;
  using Algo = cudnnConvolutionBwdDataAlgo_t;
  static constexpr ConvDirection kDir = ConvDirection::backward_data;
  static constexpr int kCount = CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT;
  static constexpr const char* kCall = "cudnnConvolutionBackwardData";
  static constexpr Algo kFallback = CUDNN_CONVOLUTION_BWD_DATA_ALGO_1;
  static cudnnStatus_t heuristics(cudnnHandle_t h, const ConvDescs& d, int* n, Perf* p) {
    return cudnnGetConvolutionBackwardDataAlgorithm_v7(h, d.w.get(), d.y.get(), d.conv.get(), d.x.get(),
                                                       kCount, n, p);
  }
  static cudnnStatus_t find(cudnnHandle_t h, const ConvDescs& d, const Buffers& b, void* ws,
                            std::size_t bytes, int* n, Perf* p) {
    return cudnnFindConvolutionBackwardDataAlgorithmEx(h, d.w.get(), b.w, d.y.get(), b.y, d.conv.get(),
                                                       d.x.get(), b.x, kCount, n, p, ws, bytes);
  }
  static cudnnStatus_t workspace(cudnnHandle_t h, const ConvDescs& d, Algo a, std::size_t* bytes) {
    return cudnnGetConvolutionBackwardDataWorkspaceSize(h, d.w.get(), d.y.get(), d.conv.get(), d.x.get(), a,
                                                        bytes);
  }
  static cudnnStatus_t run(cudnnHandle_t h, const ConvDescs& d, const Buffers& b, Algo a, void* ws,
                           std::size_t bytes, float beta) {
    const float alpha = 1.0f;
    return cudnnConvolutionBackwardData(h, &alpha, d.w.get(), b.w, d.y.get(), b.y, d.conv.get(), a, ws, bytes,
                                        &beta, d.x.get(), b.x);
  }
};

struct BackwardFilterOp {
  using Perf = cudnnConvolutionBwdFilterAlgoPerf_t;
  using Algo = cudnnConvolutionBwdFilterAlgo_t;
  static constexpr ConvDirection kDir = ConvDirection::backward_filter;
  static constexpr int kCount = CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT;
  static constexpr const char* kCall = "cudnnConvolutionBackwardFilter";
  static constexpr Algo kFallback = CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1;
  static cudnnStatus_t heuristics(cudnnHandle_t h, const ConvDescs& d, int* n, Perf* p) {
    return cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, d.x.get(), d.y.get(), d.conv.get(), d.w.get(),
                                                         kCount, n, p);
  }
  static cudnnStatus_t find(cudnnHandle_t h, const ConvDescs& d, const Buffers& b, void* ws,
                            std::size_t bytes, int* n, Perf* p) {
    return cudnnFindConvolutionBackwardFilterAlgorithmEx(h, d.x.get(), b.x, d.y.get(), b.y, d.conv.get(),
                                                         d.w.get(), b.w, kCount, n, p, ws, bytes);
  }
  static cudnnStatus_t workspace(cudnnHandle_t h, const ConvDescs& d, Algo a, std::size_t* bytes) {
    return cudnnGetConvolutionBackwardFilterWorkspaceSize(h, d.x.get(), d.y.get(), d.conv.get(), d.w.get(), a,
                                                          bytes);
  }
  static cudnnStatus_t run(cudnnHandle_t h, const ConvDescs& d, const Buffers& b, Algo a, void* ws,
                           std::size_t bytes, float beta) {
    const float alpha = 1.0f;
    return cudnnConvolutionBackwardFilter(h, &alpha, d.x.get(), b.x, d.y.get(), b.y, d.conv.get(), a, ws,
                                          bytes, &beta, d.w.get(), b.w);
  }
};

// ---- planning: ranked candidates, cached ----

struct Plan {
  Key key;
  std::vector<Choice> ranked;
};

// Ranks the algorithms for one geometry. Search mode puts cuDNN's measured order first; the
// heuristic order follows (so a measured list cut short by the workspace still has fallbacks),
// then an algorithm that works for every geometry (deterministic in every direction).
// `deterministic` keeps only the algorithms cuDNN reports as deterministic.
// Each candidate's workspace is queried here; one cuDNN does not support (NOT_SUPPORTED from the
// query) is left out, any other failure is an error.
template <class Op>
std::vector<Choice> rank_algorithms(cudnnHandle_t h, ConvDescs& d, const Buffers& b, bool tf32, bool search,
                                    bool deterministic, Device dev, const Stream& stream) {
  const std::size_t limit = cudnn_workspace_limit(dev.index());
  std::vector<Choice> out;
  const auto add = [&](int algo, cudnnMathType_t reported) {
    const cudnnMathType_t math = tf32 ? reported : CUDNN_FMA_MATH;
    for (const Choice& c : out)
      if (c.algo == algo && c.math == math) return;
    d.conv.set_math(math);
    std::size_t bytes = 0;
    const cudnnStatus_t status = Op::workspace(h, d, static_cast<typename Op::Algo>(algo), &bytes);
    if (is_not_supported(status)) return;
    if (status != CUDNN_STATUS_SUCCESS)
      detail::throw_cudnn_error(static_cast<int>(status), Op::kCall, __FILE__, __LINE__);
    out.push_back({algo, math, bytes});
  };
  const auto usable = [&](const typename Op::Perf& p) {
    return p.status == CUDNN_STATUS_SUCCESS && math_allowed(p.mathType, tf32) &&
           (!deterministic || p.determinism == CUDNN_DETERMINISTIC);
  };

  std::array<typename Op::Perf, Op::kCount> perf{};
  int count = 0;
  CUGRAD_CUDNN_CHECK(Op::heuristics(h, d, &count, perf.data()));
  count = std::clamp(count, 0, Op::kCount);

  if (search) {
    // The search blocks the host; count from the moment the stream's earlier work is done, so
    // that the time is the search's own.
    CUGRAD_CUDA_CHECK(cudaStreamSynchronize(runtime::cuda_stream(stream)));
    const auto started = std::chrono::steady_clock::now();
    std::size_t want = 0;
    for (int i = 0; i < count; ++i)
      if (usable(perf[i]) && perf[i].memory <= limit) want = std::max(want, perf[i].memory);
    // The largest workspace a ranked candidate wants, halved until the allocator can give it.
    std::optional<Workspace> ws;
    for (;;) {
      try {
        ws.emplace(dev, want, stream);
        break;
      } catch (const OutOfMemoryError&) {
        if (want == 0) throw;
        want /= 2;
      }
    }
    std::array<typename Op::Perf, Op::kCount> found{};
    int found_count = 0;
    CUGRAD_CUDNN_CHECK(Op::find(h, d, b, ws->data(), ws->size(), &found_count, found.data()));
    found_count = std::clamp(found_count, 0, Op::kCount);
    for (int i = 0; i < found_count; ++i)
      if (usable(found[i]) && found[i].memory <= ws->size())
        add(static_cast<int>(found[i].algo), found[i].mathType);
    ws.reset();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    SearchStats& st = search_stats();
    std::lock_guard<std::mutex> lock(st.mutex);
    st.totals.searches++;
    st.totals.seconds += seconds;
  }
  for (int i = 0; i < count; ++i)
    if (usable(perf[i]) && perf[i].memory <= limit) add(static_cast<int>(perf[i].algo), perf[i].mathType);
  add(static_cast<int>(Op::kFallback), tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH);
  CUGRAD_CHECK(!out.empty(), Op::kCall, ": cuDNN supports no algorithm for this convolution, not even ",
               static_cast<int>(Op::kFallback));
  return out;
}

// The cached candidates for `g` (a chunk's geometry), ranking them on first use. `b` are the
// call's buffers: search mode times the algorithms on them (and overwrites the output).
template <class Op>
Plan plan(const Conv2dGeometry& g, const Buffers& b, Device dev, const Stream& stream, bool allow_search) {
  const bool tf32 = allow_tf32();
  const bool search = allow_search && timed_search_now(stream);
  const bool deterministic = cudnn_deterministic();
  Plan p{make_key(Op::kDir, dev.index(), tf32, search, deterministic, g), {}};
  AlgoCache& cache = algo_cache();
  {
    std::lock_guard<std::mutex> lock(cache.mutex);
    // Inside a CUDA-graph capture with the timed search on, the search cannot run: use the
    // ranking a search made before the capture (the warm-up's), else the heuristics'.
    if (!search && allow_search && cudnn_benchmark()) {
      const Key searched = make_key(Op::kDir, dev.index(), tf32, true, deterministic, g);
      const auto it = cache.entries.find(searched);
      if (it != cache.entries.end()) {
        p.key = searched;
        p.ranked = it->second;
        return p;
      }
    }
    const auto it = cache.entries.find(p.key);
    if (it != cache.entries.end()) {
      p.ranked = it->second;
      return p;
    }
  }
  cudnnHandle_t h = cudnn_handle(stream.handle());
  ConvDescs d(g, tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH);
  std::vector<Choice> ranked = rank_algorithms<Op>(h, d, b, tf32, search, deterministic, dev, stream);
  std::lock_guard<std::mutex> lock(cache.mutex);
  p.ranked = cache.entries.emplace(p.key, std::move(ranked)).first->second;  // first ranking wins a race
  return p;
}

// Moves `c` to the front of the cached ranking (it worked where the ones above it did not).
void promote(const Key& key, const Choice& c) {
  AlgoCache& cache = algo_cache();
  std::lock_guard<std::mutex> lock(cache.mutex);
  const auto it = cache.entries.find(key);
  if (it == cache.entries.end()) return;
  auto& v = it->second;
  const auto pos =
      std::find_if(v.begin(), v.end(), [&](const Choice& x) { return x.algo == c.algo && x.math == c.math; });
  if (pos != v.end()) std::rotate(v.begin(), pos, pos + 1);
}

// Runs one chunk with the first candidate cuDNN accepts, with the workspace its ranking
// recorded. Statuses other than NOT_SUPPORTED are errors at once (the library's text, the call,
// file:line).
template <class Op>
void execute(const Conv2dGeometry& g, const Buffers& b, float beta, const Plan& p, Device dev,
             const Stream& stream) {
  const auto started = std::chrono::steady_clock::now();
  struct Count {  // on every exit, errors included
    std::chrono::steady_clock::time_point started;
    ~Count() {
      g_call_ns.fetch_add(ns_since(started), std::memory_order_relaxed);
      g_call_count.fetch_add(1, std::memory_order_relaxed);
    }
  } count{started};
  cudnnHandle_t h = cudnn_handle(stream.handle());
  ConvDescs d(g, CUDNN_FMA_MATH);
  g_descriptor_ns.fetch_add(ns_since(started), std::memory_order_relaxed);
  cudnnStatus_t last = CUDNN_STATUS_NOT_SUPPORTED;
  for (std::size_t i = 0; i < p.ranked.size(); ++i) {
    const Choice& c = p.ranked[i];
    d.conv.set_math(c.math);
    const auto algo = static_cast<typename Op::Algo>(c.algo);
    const auto allocating = std::chrono::steady_clock::now();
    Workspace ws(dev, c.workspace, stream);
    const auto running = std::chrono::steady_clock::now();
    g_workspace_ns.fetch_add(ns_since(allocating), std::memory_order_relaxed);
    const cudnnStatus_t status = Op::run(h, d, b, algo, ws.data(), c.workspace, beta);
    g_run_ns.fetch_add(ns_since(running), std::memory_order_relaxed);
    if (status == CUDNN_STATUS_SUCCESS) {
      if (i > 0) promote(p.key, c);
      return;
    }
    if (!is_not_supported(status))
      detail::throw_cudnn_error(static_cast<int>(status), Op::kCall, __FILE__, __LINE__);
    last = status;
  }
  detail::throw_cudnn_error(static_cast<int>(last), Op::kCall, __FILE__, __LINE__);
}

// ---- batch chunks ----

// Images per cuDNN call: every tensor of a call must have at most INT_MAX elements.
std::int64_t chunk_images(const Conv2dGeometry& g) {
  const std::int64_t per = std::max(g.c_in * g.h * g.w, g.c_out * g.out_h * g.out_w);
  CUGRAD_CHECK(per <= INT_MAX, "conv2d: one image of input or output has ", per,
               " elements; cuDNN's 4-D descriptors take at most 2^31 - 1 per tensor");
  return std::max<std::int64_t>(1, std::min<std::int64_t>(g.n, INT_MAX / per));
}

Conv2dGeometry with_images(const Conv2dGeometry& g, std::int64_t n) {
  Conv2dGeometry c = g;
  c.n = n;
  return c;
}

// Runs the convolution chunk by chunk (chunks of whole images; buffers(start) gives a chunk's
// buffers; with `accumulate`, chunks after the first add to the output: beta = 1).
// Through cuDNN's graph API while graph_convolutions() is on (conv_graph.h) and it has an engine;
// otherwise through the legacy API, planning every distinct chunk shape (at most two) first:
// its timed search writes into the output buffers, which must not happen after a chunk has
// accumulated into them (so the legacy chunks after a graph-API chunk use the heuristics).
template <class Op, class MakeBuffers>
void run_chunks(const Conv2dGeometry& g, MakeBuffers&& buffers, bool accumulate, Device dev,
                const Stream& stream) {
  const std::int64_t chunk = chunk_images(g);
  const auto beta = [&](std::int64_t start) { return accumulate && start > 0 ? 1.0f : 0.0f; };
  std::int64_t start = 0;
  if (graph_convolutions()) {
    for (; start < g.n; start += chunk) {
      const Buffers b = buffers(start);
      if (!graph_convolution(Op::kDir, with_images(g, std::min(chunk, g.n - start)), static_cast<float*>(b.x),
                             static_cast<float*>(b.w), static_cast<float*>(b.y), beta(start), stream))
        break;
    }
    if (start >= g.n) return;
  }
  const bool search = start == 0;
  const std::int64_t tail = g.n % chunk;
  std::optional<Plan> full, last;
  if (g.n - start >= chunk) full = plan<Op>(with_images(g, chunk), buffers(start), dev, stream, search);
  if (tail != 0) last = plan<Op>(with_images(g, tail), buffers(g.n - tail), dev, stream, search);
  for (; start < g.n; start += chunk) {
    const std::int64_t count = std::min(chunk, g.n - start);
    execute<Op>(with_images(g, count), buffers(start), beta(start), count == chunk ? *full : *last, dev,
                stream);
  }
}

void check_stream(const Stream& stream, const char* name) {
  CUGRAD_CHECK(stream.device().is_cuda(), name, ": needs a CUDA stream, got one on ", stream.device());
}

}  // namespace

void conv2d_forward_f32(const float* x, const float* weight, const float* bias, float* y,
                        const Conv2dGeometry& g, const Stream& stream, bool relu) {
  check_stream(stream, "conv2d_forward_f32");
  if (g.n == 0) return;
  if (direct_convolutions() && direct_conv_supported(g)) {  // few input taps: cuda/conv_direct.h
    direct_conv2d_forward_f32(x, weight, bias, y, g, relu, runtime::cuda_stream(stream));
    return;
  }
  const Device dev = stream.device();
  const std::int64_t xs = g.c_in * g.h * g.w, ys = g.c_out * g.out_h * g.out_w;
  const auto buffers = [&](std::int64_t start) {
    return Buffers{const_cast<float*>(x + start * xs), const_cast<float*>(weight), y + start * ys};
  };
  run_chunks<ForwardOp>(g, buffers, /*accumulate=*/false, dev, stream);
  // The bias (and the fused ReLU) in one pass of cugrad's kernel over the whole output (int64
  // indices, so no chunks); it replaced cudnnAddTensor, which the ReLU could not join.
  if (bias || relu)
    channel_bias_f32(y, bias, g.n, g.c_out, g.out_h * g.out_w, relu, runtime::cuda_stream(stream));
}

void conv2d_backward_input_f32(const float* dy, const float* weight, float* dx, const Conv2dGeometry& g,
                               const Stream& stream) {
  check_stream(stream, "conv2d_backward_input_f32");
  if (g.n == 0) return;
  const Device dev = stream.device();
  const std::int64_t xs = g.c_in * g.h * g.w, ys = g.c_out * g.out_h * g.out_w;
  const auto buffers = [&](std::int64_t start) {
    return Buffers{dx + start * xs, const_cast<float*>(weight), const_cast<float*>(dy + start * ys)};
  };
  run_chunks<BackwardDataOp>(g, buffers, /*accumulate=*/false, dev, stream);
}

void conv2d_backward_weight_f32(const float* x, const float* dy, float* dweight, const Conv2dGeometry& g,
                                const Stream& stream) {
  check_stream(stream, "conv2d_backward_weight_f32");
  if (g.n == 0) {
    CUGRAD_CUDA_CHECK(cudaMemsetAsync(dweight, 0, static_cast<std::size_t>(g.w_numel()) * sizeof(float),
                                      runtime::cuda_stream(stream)));
    return;
  }
  const Device dev = stream.device();
  const std::int64_t xs = g.c_in * g.h * g.w, ys = g.c_out * g.out_h * g.out_w;
  const auto buffers = [&](std::int64_t start) {
    return Buffers{const_cast<float*>(x + start * xs), dweight, const_cast<float*>(dy + start * ys)};
  };
  run_chunks<BackwardFilterOp>(g, buffers, /*accumulate=*/true, dev, stream);  // chunks add to the gradient
}

namespace {

// The bias gradient's channel sums, plain (y null) or through the ReLU's mask (dz written).
void bias_gradient(const float* dy, const float* y, float* dz, float* dbias, const Conv2dGeometry& g,
                   const Stream& stream) {
  // cugrad's per-channel sum, not cudnnConvolutionBackwardBias, which took 240 us a call on an
  // H100 for the 2-conv CNN's conv2 gradient (37.7 MB, 13 us at copy rate); int64 indices, so
  // no chunking.
  const Device dev = stream.device();
  const std::int64_t hw = g.out_h * g.out_w;
  const ChannelSumPlan plan =
      channel_sum_plan(g.n, g.c_out, hw, runtime::device_properties(dev.index()).multiProcessorCount);
  std::optional<Workspace> ws;
  if (plan.workspace_bytes > 0) ws.emplace(dev, plan.workspace_bytes, stream);
  float* partials = ws ? static_cast<float*>(ws->data()) : nullptr;
  if (y)
    channel_sum_relu_grad_f32(dy, y, dz, dbias, g.n, g.c_out, hw, plan, partials,
                              runtime::cuda_stream(stream));
  else
    channel_sum_f32(dy, dbias, g.n, g.c_out, hw, plan, partials, runtime::cuda_stream(stream));
}

void zero_bias_gradient(float* dbias, const Conv2dGeometry& g, const Stream& stream) {
  CUGRAD_CUDA_CHECK(cudaMemsetAsync(dbias, 0, static_cast<std::size_t>(g.c_out) * sizeof(float),
                                    runtime::cuda_stream(stream)));
}

}  // namespace

void conv2d_backward_bias_f32(const float* dy, float* dbias, const Conv2dGeometry& g, const Stream& stream) {
  check_stream(stream, "conv2d_backward_bias_f32");
  if (g.n == 0) return zero_bias_gradient(dbias, g, stream);
  bias_gradient(dy, nullptr, nullptr, dbias, g, stream);
}

void conv2d_backward_bias_relu_f32(const float* dy, const float* y, float* dz, float* dbias,
                                   const Conv2dGeometry& g, const Stream& stream) {
  check_stream(stream, "conv2d_backward_bias_relu_f32");
  CUGRAD_CHECK(y != nullptr && dz != nullptr,
               "conv2d_backward_bias_relu_f32: needs the ReLU's output and dz");
  if (g.n == 0) return zero_bias_gradient(dbias, g, stream);
  bias_gradient(dy, y, dz, dbias, g, stream);
}

CudnnCallStats cudnn_call_stats() {
  const auto seconds = [](const std::atomic<std::uint64_t>& ns) {
    return static_cast<double>(ns.load(std::memory_order_relaxed)) * 1e-9;
  };
  return {g_call_count.load(std::memory_order_relaxed), seconds(g_call_ns), seconds(g_descriptor_ns),
          seconds(g_workspace_ns), seconds(g_run_ns)};
}

std::vector<std::string> conv2d_algorithm_choices() {
  AlgoCache& cache = algo_cache();
  std::lock_guard<std::mutex> lock(cache.mutex);
  std::vector<std::string> out;
  out.reserve(cache.entries.size());
  for (const auto& [k, ranked] : cache.entries) {
    // k: direction, device, tf32, searched, deterministic, n, c_in, h, w, c_out, kh, kw, stride
    // h/w, pad h/w, dilation h/w, groups, out h/w (make_key).
    std::string line =
        detail::cat(conv_direction_name(static_cast<ConvDirection>(k[0])), " ", k[5], "x", k[6], "x", k[7],
                    "x", k[8], " -> ", k[9], " ", k[10], "x", k[11], "/", k[12], " pad ", k[14],
                    k[18] > 1 ? " groups " : "", k[18] > 1 ? std::to_string(k[18]) : std::string(),
                    k[3] ? " [search]" : "", k[2] ? " [tf32]" : "", k[4] ? " [deterministic]" : "");
    if (ranked.empty()) {
      line += " (no candidate)";
    } else {
      const Choice& c = ranked.front();
      line += detail::cat(" algo ", c.algo, c.math == CUDNN_FMA_MATH ? " FMA " : " tensor-op ", c.workspace,
                          " B (", ranked.size(), " ranked)");
    }
    out.push_back(std::move(line));
  }
  return out;
}

std::size_t conv2d_algorithm_cache_size() {
  AlgoCache& cache = algo_cache();
  std::lock_guard<std::mutex> lock(cache.mutex);
  return cache.entries.size();
}

bool timed_search_now(const Stream& stream) {
  if (!cudnn_benchmark()) return false;
  // A search synchronizes and cannot be captured into a CUDA graph: the heuristics then.
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  CUGRAD_CUDA_CHECK(cudaStreamIsCapturing(runtime::cuda_stream(stream), &capture));
  return capture == cudaStreamCaptureStatusNone;
}

std::size_t cudnn_workspace_limit(int device) {
  const std::size_t total = runtime::device_properties(device).totalGlobalMem;
  return std::min<std::size_t>(std::size_t{1} << 30, total / 16);
}

const char* conv_direction_name(ConvDirection dir) {
  switch (dir) {
    case ConvDirection::forward:
      return "forward";
    case ConvDirection::backward_data:
      return "input gradient";
    case ConvDirection::backward_filter:
      return "weight gradient";
  }
  return "?";
}

void record_cudnn_search(double seconds) {
  SearchStats& st = search_stats();
  std::lock_guard<std::mutex> lock(st.mutex);
  st.totals.searches++;
  st.totals.seconds += seconds;
}

}  // namespace cugrad::cuda

namespace cugrad {

CudnnSearchStats cudnn_search_stats() {
  cuda::SearchStats& st = cuda::search_stats();
  std::lock_guard<std::mutex> lock(st.mutex);
  return st.totals;
}

}  // namespace cugrad
