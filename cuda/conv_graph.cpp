// conv2d through cuDNN's graph (backend) API with cached execution plans (conv_graph.h).
// Compiled by the C++ compiler: host-side cuDNN calls only.
#include "cuda/conv_graph.h"

#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "cuda/cudnn_handle.h"
#include "cugrad/device.h"
#include "cugrad/error.h"
#include "host/runtime/cuda_context.h"

// The handle attributes of the operation graph and the execution plan are deprecated in cuDNN 9
// in favour of a device-properties descriptor that older 9.x releases lack; they still work.
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

namespace cugrad::cuda {

namespace {

bool env_on(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' && std::strcmp(v, "0") != 0;
}

std::atomic<bool>& graph_flag() {
  static std::atomic<bool> flag{env_on("CUGRAD_CUDNN_GRAPH")};
  return flag;
}

std::atomic<std::uint64_t> g_calls{0}, g_ns{0}, g_plans{0}, g_declined{0};

// One backend descriptor (RAII).
class Desc {
 public:
  explicit Desc(cudnnBackendDescriptorType_t type) {
    CUGRAD_CUDNN_CHECK(cudnnBackendCreateDescriptor(type, &d_));
  }
  ~Desc() {
    if (d_) (void)cudnnBackendDestroyDescriptor(d_);
  }
  Desc(const Desc&) = delete;
  Desc& operator=(const Desc&) = delete;
  cudnnBackendDescriptor_t get() const { return d_; }
  cudnnBackendDescriptor_t* ptr() { return &d_; }

  template <class T>
  void set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, std::int64_t count,
           const T* values) {
    CUGRAD_CUDNN_CHECK(cudnnBackendSetAttribute(d_, name, type, count, values));
  }
  void finalize() { CUGRAD_CUDNN_CHECK(cudnnBackendFinalize(d_)); }

 private:
  cudnnBackendDescriptor_t d_ = nullptr;
};

constexpr std::int64_t kUidX = 1, kUidW = 2, kUidY = 3;

std::unique_ptr<Desc> make_tensor(std::int64_t uid, std::array<std::int64_t, 4> dims,
                                  std::int64_t alignment) {
  auto t = std::make_unique<Desc>(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
  const std::array<std::int64_t, 4> strides{dims[1] * dims[2] * dims[3], dims[2] * dims[3], dims[3], 1};
  const cudnnDataType_t type = CUDNN_DATA_FLOAT;
  t->set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type);
  t->set(CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims.data());
  t->set(CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides.data());
  t->set(CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid);
  t->set(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment);
  t->finalize();
  return t;
}

// The descriptors of one convolution's graph, kept alive with its plan.
struct Graph {
  std::unique_ptr<Desc> x, w, y, conv, op, graph;
};

Graph make_graph(ConvDirection dir, const Conv2dGeometry& g, float beta, std::int64_t alignment,
                 cudnnHandle_t handle) {
  Graph gr;
  gr.x = make_tensor(kUidX, {g.n, g.c_in, g.h, g.w}, alignment);
  gr.w = make_tensor(kUidW, {g.c_out, g.c_in_per_group(), g.kh, g.kw}, alignment);
  gr.y = make_tensor(kUidY, {g.n, g.c_out, g.out_h, g.out_w}, alignment);
  gr.conv = std::make_unique<Desc>(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR);
  const cudnnDataType_t compute = CUDNN_DATA_FLOAT;
  const cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
  const std::int64_t dims = 2;
  const std::array<std::int64_t, 2> dil{g.dil_h, g.dil_w}, stride{g.stride_h, g.stride_w},
      pad{g.pad_h, g.pad_w};
  // The output size decides the padding after the input; PyTorch's floor rule leaves
  // (in + 2·pad − dil·(k − 1) − 1) mod stride rows unused, which cuDNN accepts as the same padding.
  gr.conv->set(CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &compute);
  gr.conv->set(CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode);
  gr.conv->set(CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1, &dims);
  gr.conv->set(CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, 2, dil.data());
  gr.conv->set(CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, 2, stride.data());
  gr.conv->set(CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, 2, pad.data());
  gr.conv->set(CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, 2, pad.data());
  gr.conv->finalize();

  // The operation's descriptor type and attribute names (x, w, y, convolution, alpha, beta) per
  // direction: backward data's x is dx, backward filter's w is dw, and both backward y are dy.
  struct OpNames {
    cudnnBackendDescriptorType_t type;
    cudnnBackendAttributeName_t x, w, y, conv, alpha, beta;
  };
  static constexpr OpNames kOps[] = {
      {CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X,
       CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y,
       CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA,
       CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA},
      {CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR,
       CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W,
       CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC,
       CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA},
      {CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR,
       CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW,
       CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC,
       CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA},
  };
  const OpNames& names = kOps[static_cast<int>(dir)];
  const float alpha = 1.0f;
  cudnnBackendDescriptor_t xd = gr.x->get(), wd = gr.w->get(), yd = gr.y->get(), cd = gr.conv->get();
  gr.op = std::make_unique<Desc>(names.type);
  gr.op->set(names.x, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &xd);
  gr.op->set(names.w, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &wd);
  gr.op->set(names.y, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &yd);
  gr.op->set(names.conv, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cd);
  gr.op->set(names.alpha, CUDNN_TYPE_FLOAT, 1, &alpha);
  gr.op->set(names.beta, CUDNN_TYPE_FLOAT, 1, &beta);
  gr.op->finalize();
  gr.graph = std::make_unique<Desc>(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
  cudnnBackendDescriptor_t od = gr.op->get();
  gr.graph->set(CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &od);
  gr.graph->set(CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
  gr.graph->finalize();
  return gr;
}

// The engine configurations cuDNN's heuristics propose for `graph`, best first (empty when the
// mode offers none).
std::vector<std::unique_ptr<Desc>> heuristic_configs(const Desc& graph, cudnnBackendHeurMode_t mode) {
  Desc heur(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
  cudnnBackendDescriptor_t gd = graph.get();
  heur.set(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &gd);
  heur.set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
  if (cudnnBackendFinalize(heur.get()) != CUDNN_STATUS_SUCCESS) return {};
  std::int64_t count = 0;
  if (cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0,
                               &count, nullptr) != CUDNN_STATUS_SUCCESS ||
      count <= 0)
    return {};
  std::vector<std::unique_ptr<Desc>> configs;
  std::vector<cudnnBackendDescriptor_t> raw;
  for (std::int64_t i = 0; i < count; ++i) {
    configs.push_back(std::make_unique<Desc>(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR));
    raw.push_back(configs.back()->get());
  }
  std::int64_t got = 0;
  CUGRAD_CUDNN_CHECK(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                              CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &got, raw.data()));
  configs.resize(static_cast<std::size_t>(std::clamp<std::int64_t>(got, 0, count)));
  return configs;
}

// Whether the engine of `config` is allowed under cugrad's math rules (conv_graph.h); its
// global index in *index (the fallback list may repeat an engine of mode A).
bool engine_allowed(const Desc& config, bool tf32, bool deterministic, std::int64_t* index) {
  Desc engine(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
  std::int64_t n = 0;
  cudnnBackendDescriptor_t ed = engine.get();
  if (cudnnBackendGetAttribute(config.get(), CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                               &n, &ed) != CUDNN_STATUS_SUCCESS ||
      cudnnBackendGetAttribute(ed, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &n, index) !=
          CUDNN_STATUS_SUCCESS)
    return false;
  std::array<cudnnBackendNumericalNote_t, CUDNN_NUMERICAL_NOTE_TYPE_COUNT> notes{};
  n = 0;
  if (cudnnBackendGetAttribute(ed, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
                               static_cast<std::int64_t>(notes.size()), &n,
                               notes.data()) != CUDNN_STATUS_SUCCESS)
    return false;
  for (std::int64_t i = 0; i < std::min<std::int64_t>(n, static_cast<std::int64_t>(notes.size())); ++i) {
    const cudnnBackendNumericalNote_t note = notes[static_cast<std::size_t>(i)];
    if (note == CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS ||
        note == CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION)
      return false;
    if (note == CUDNN_NUMERICAL_NOTE_TENSOR_CORE && !tf32) return false;
    if (note == CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC && deterministic) return false;
  }
  std::array<cudnnBackendBehaviorNote_t, CUDNN_BEHAVIOR_NOTE_TYPE_COUNT> behavior{};
  n = 0;
  if (cudnnBackendGetAttribute(ed, CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE, CUDNN_TYPE_BEHAVIOR_NOTE,
                               static_cast<std::int64_t>(behavior.size()), &n,
                               behavior.data()) != CUDNN_STATUS_SUCCESS)
    return false;
  for (std::int64_t i = 0; i < std::min<std::int64_t>(n, static_cast<std::int64_t>(behavior.size())); ++i)
    if (behavior[static_cast<std::size_t>(i)] == CUDNN_BEHAVIOR_NOTE_RUNTIME_COMPILATION) return false;
  return true;
}

// A finalized execution plan and its workspace.
struct Plan {
  std::shared_ptr<const Graph> graph;  // the configuration and the plan were made from it
  std::unique_ptr<Desc> engine;        // the engine of a configuration made here (not by the heuristics)
  std::unique_ptr<Desc> config;
  std::unique_ptr<Desc> plan;
  std::size_t workspace = 0;
  std::int64_t engine_index = -1;  // cuDNN's global index of the engine
  float ms = -1;                   // its time in the search (-1: not timed)
};

// The engine configuration of engine `index` of `graph` with its default knobs, or nothing when
// cuDNN cannot make one (the engine does not apply to the graph). *engine keeps the engine.
std::unique_ptr<Desc> engine_config(const Desc& graph, std::int64_t index, std::unique_ptr<Desc>* engine) {
  auto e = std::make_unique<Desc>(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
  cudnnBackendDescriptor_t gd = graph.get();
  e->set(CUDNN_ATTR_ENGINE_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &gd);
  e->set(CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &index);
  if (cudnnBackendFinalize(e->get()) != CUDNN_STATUS_SUCCESS) return nullptr;
  auto config = std::make_unique<Desc>(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
  cudnnBackendDescriptor_t ed = e->get();
  config->set(CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &ed);
  if (cudnnBackendFinalize(config->get()) != CUDNN_STATUS_SUCCESS) return nullptr;
  *engine = std::move(e);
  return config;
}

// How many engines cuDNN has for `graph` (0 when it does not say).
std::int64_t engine_count(const Desc& graph) {
  std::int64_t count = 0, n = 0;
  if (cudnnBackendGetAttribute(graph.get(), CUDNN_ATTR_OPERATIONGRAPH_ENGINE_GLOBAL_COUNT, CUDNN_TYPE_INT64,
                               1, &n, &count) != CUDNN_STATUS_SUCCESS)
    return 0;
  return std::max<std::int64_t>(count, 0);
}

// The plan for `config`, or nothing when cuDNN cannot finalize it (or its workspace is above
// `limit`).
std::unique_ptr<Desc> finalize_plan(const Desc& config, cudnnHandle_t handle, std::size_t limit,
                                    std::size_t* workspace) {
  auto plan = std::make_unique<Desc>(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
  cudnnBackendDescriptor_t cd = config.get();
  plan->set(CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
  plan->set(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cd);
  if (cudnnBackendFinalize(plan->get()) != CUDNN_STATUS_SUCCESS) return nullptr;
  std::int64_t bytes = 0, n = 0;
  if (cudnnBackendGetAttribute(plan->get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n,
                               &bytes) != CUDNN_STATUS_SUCCESS ||
      bytes < 0 || static_cast<std::size_t>(bytes) > limit)
    return nullptr;
  *workspace = static_cast<std::size_t>(bytes);
  return plan;
}

cudnnStatus_t execute_plan(cudnnHandle_t handle, const Desc& plan, void* x, void* w, void* y,
                           void* workspace) {
  Desc pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
  const std::array<std::int64_t, 3> uids{kUidX, kUidW, kUidY};
  std::array<void*, 3> ptrs{x, w, y};
  pack.set(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, 3, uids.data());
  pack.set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, 3, ptrs.data());
  pack.set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace);
  pack.finalize();
  return cudnnBackendExecute(handle, plan.get(), pack.get());
}

struct CacheKey {
  std::array<std::int64_t, 23> v;
  cudnnHandle_t handle;
  bool operator<(const CacheKey& o) const { return v != o.v ? v < o.v : handle < o.handle; }
};

struct Cache {
  std::mutex mutex;
  std::map<CacheKey, std::shared_ptr<const Plan>> plans;  // null: no engine qualified
};

Cache& cache() {
  static Cache* c = new Cache();  // leaked on purpose, like the legacy algorithm cache
  return *c;
}

// Times `plan` on the call's inputs and a scratch output: the median of 3 runs after one warm-up,
// in milliseconds.
float time_plan(cudnnHandle_t handle, const Plan& p, ConvDirection dir, void* x, void* w, void* y,
                void* scratch_out, const Stream& stream, Device dev) {
  void* xs = dir == ConvDirection::backward_data ? scratch_out : x;
  void* ws_ = dir == ConvDirection::backward_filter ? scratch_out : w;
  void* ys = dir == ConvDirection::forward ? scratch_out : y;
  Workspace workspace(dev, p.workspace, stream);
  if (execute_plan(handle, *p.plan, xs, ws_, ys, workspace.data()) != CUDNN_STATUS_SUCCESS) return -1.0f;
  std::array<float, 3> ms{};
  for (float& m : ms) {
    Event start(true), stop(true);
    start.record(stream);
    if (execute_plan(handle, *p.plan, xs, ws_, ys, workspace.data()) != CUDNN_STATUS_SUCCESS) return -1.0f;
    stop.record(stream);
    stop.synchronize();
    m = stop.elapsed_ms(start);
  }
  std::sort(ms.begin(), ms.end());
  return ms[1];
}

std::size_t output_bytes(ConvDirection dir, const Conv2dGeometry& g) {
  const std::int64_t n = dir == ConvDirection::forward         ? g.y_numel()
                         : dir == ConvDirection::backward_data ? g.x_numel()
                                                               : g.w_numel();
  return static_cast<std::size_t>(n) * sizeof(float);
}

// Builds the plan for one key: heuristics order (mode A, then the fallback list), allowed
// engines only; with `search`, the fastest of the first 8 that finalize and of every other engine
// the graph offers (by global index, default knobs), up to 32 candidates in all.
std::shared_ptr<const Plan> build(ConvDirection dir, const Conv2dGeometry& g, float beta,
                                  std::int64_t alignment, bool tf32, bool deterministic, bool search,
                                  cudnnHandle_t handle, void* x, void* w, void* y, const Stream& stream) {
  const Device dev = stream.device();
  const std::size_t limit = cudnn_workspace_limit(dev.index());
  std::vector<std::shared_ptr<Plan>> candidates;
  std::vector<std::int64_t> engines;  // global indices of the candidates' engines
  // Adds the configuration's plan to the candidates when its engine is allowed, new, and finalizes.
  const auto consider = [&](const std::shared_ptr<const Graph>& graph, std::unique_ptr<Desc> config,
                            std::unique_ptr<Desc> engine_desc) {
    std::int64_t engine = -1;
    if (!engine_allowed(*config, tf32, deterministic, &engine) ||
        std::find(engines.begin(), engines.end(), engine) != engines.end())
      return;
    std::size_t bytes = 0;
    std::unique_ptr<Desc> plan = finalize_plan(*config, handle, limit, &bytes);
    if (!plan) return;
    auto p = std::make_shared<Plan>();
    p->graph = graph;
    p->engine = std::move(engine_desc);
    p->config = std::move(config);
    p->plan = std::move(plan);
    p->workspace = bytes;
    p->engine_index = engine;
    candidates.push_back(std::move(p));
    engines.push_back(engine);
    g_plans.fetch_add(1, std::memory_order_relaxed);
  };
  // The operation graph, or null when cuDNN's graph API refuses to describe this convolution
  // (then the legacy API runs it, and reports whatever is wrong with it).
  const auto graph_or_null = [&]() -> std::shared_ptr<const Graph> {
    try {
      return std::make_shared<const Graph>(make_graph(dir, g, beta, alignment, handle));
    } catch (const Error&) {
      return nullptr;
    }
  };
  const std::size_t want = search ? 8 : 1;
  for (const cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
    if (candidates.size() >= want) break;
    const auto graph = graph_or_null();
    if (!graph) return nullptr;
    for (auto& config : heuristic_configs(*graph->graph, mode)) {
      if (candidates.size() >= want) break;
      consider(graph, std::move(config), nullptr);
    }
  }
  if (search) {
    // Every engine of the graph, not only the heuristics' first few: the legacy API's search
    // picks FFT and Winograd algorithms for ResNet-18's 3x3 layers that the first candidates
    // did not reach (H200, 2026-11-27: steps 17.2 ms legacy against 21.2 ms here before this).
    const auto graph = graph_or_null();
    const std::int64_t count = graph ? engine_count(*graph->graph) : 0;
    for (std::int64_t i = 0; i < count && candidates.size() < 32; ++i) {
      if (std::find(engines.begin(), engines.end(), i) != engines.end()) continue;
      std::unique_ptr<Desc> engine_desc;
      std::unique_ptr<Desc> config = engine_config(*graph->graph, i, &engine_desc);
      if (config) consider(graph, std::move(config), std::move(engine_desc));
    }
  }
  if (candidates.empty()) return nullptr;
  if (!search || candidates.size() == 1) return candidates.front();
  // The timed search blocks the host (as the legacy path's cudnnFind*): count from the moment
  // the stream's earlier work is done.
  CUGRAD_CUDA_CHECK(cudaStreamSynchronize(runtime::cuda_stream(stream)));
  const auto started = std::chrono::steady_clock::now();
  Workspace scratch(dev, output_bytes(dir, g), stream);
  std::shared_ptr<Plan> best;
  float best_ms = 0;
  for (const auto& p : candidates) {
    const float ms = time_plan(handle, *p, dir, x, w, y, scratch.data(), stream, dev);
    p->ms = ms;
    if (ms >= 0 && (!best || ms < best_ms)) {
      best = p;
      best_ms = ms;
    }
  }
  record_cudnn_search(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  return best ? best : candidates.front();
}

}  // namespace

bool graph_convolution(ConvDirection dir, const Conv2dGeometry& g, float* x, float* w, float* y, float beta,
                       const Stream& stream) {
  const auto started = std::chrono::steady_clock::now();
  cudnnHandle_t handle = cudnn_handle(stream.handle());
  const bool tf32 = allow_tf32();
  const bool deterministic = cudnn_deterministic();
  const bool search = timed_search_now(stream);
  const auto aligned = [](const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; };
  const std::int64_t alignment = aligned(x) && aligned(w) && aligned(y) ? 16 : 4;
  CacheKey key{{static_cast<std::int64_t>(dir), stream.device().index(), tf32, search, deterministic,
                beta != 0.0f, alignment},
               handle};
  const auto fields = g.fields();
  std::copy(fields.begin(), fields.end(), key.v.begin() + 7);
  Cache& c = cache();
  std::shared_ptr<const Plan> plan;
  bool known = false;
  {
    std::lock_guard<std::mutex> lock(c.mutex);
    // Inside a CUDA-graph capture with the timed search on (no search can run there): the plan
    // a search chose before the capture, when there is one.
    if (!search && cudnn_benchmark()) {
      CacheKey searched = key;
      searched.v[3] = 1;
      if (const auto it = c.plans.find(searched); it != c.plans.end()) {
        plan = it->second;
        known = true;
      }
    }
    if (!known)
      if (const auto it = c.plans.find(key); it != c.plans.end()) {
        plan = it->second;
        known = true;
      }
  }
  if (!known) {
    plan = build(dir, g, beta, alignment, tf32, deterministic, search, handle, x, w, y, stream);
    std::lock_guard<std::mutex> lock(c.mutex);
    plan = c.plans.emplace(key, plan).first->second;  // the first build wins a race
  }
  if (!plan) {
    g_declined.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  const auto executing = std::chrono::steady_clock::now();
  Workspace workspace(stream.device(), plan->workspace, stream);
  handle = cudnn_handle(stream.handle());  // the search may have used the handle: bind the stream again
  const cudnnStatus_t status = execute_plan(handle, *plan->plan, x, w, y, workspace.data());
  if (status != CUDNN_STATUS_SUCCESS)
    detail::throw_cudnn_error(static_cast<int>(status), "cudnnBackendExecute (conv2d)", __FILE__, __LINE__);
  g_calls.fetch_add(1, std::memory_order_relaxed);
  g_ns.fetch_add(
      static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                     std::chrono::steady_clock::now() - (known ? started : executing))
                                     .count()),
      std::memory_order_relaxed);
  return true;
}

bool set_graph_convolutions(bool on) { return graph_flag().exchange(on); }
bool graph_convolutions() { return graph_flag().load(); }

std::vector<std::string> graph_conv_choices() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  std::vector<std::string> out;
  for (const auto& [key, plan] : c.plans) {
    // v: direction, device, tf32, search, deterministic, beta != 0, alignment, then
    // Conv2dGeometry::fields(): n, c_in, h, w, c_out, kh, kw, stride h/w, pad h/w, dilation
    // h/w, groups, out h/w.
    const auto& v = key.v;
    std::string line = detail::cat(conv_direction_name(static_cast<ConvDirection>(v[0])), " ", v[7], "x",
                                   v[8], "x", v[9], "x", v[10], " -> ", v[11], " ", v[12], "x", v[13], "/",
                                   v[14], " pad ", v[16], v[3] ? " [search]" : "", v[2] ? " [tf32]" : "",
                                   v[4] ? " [deterministic]" : "", v[5] ? " [beta 1]" : "");
    if (!plan)
      line += " declined (no engine qualified)";
    else
      line += detail::cat(" engine ", plan->engine_index, ", ", plan->workspace, " B",
                          plan->ms >= 0 ? detail::cat(", ", plan->ms, " ms in the search") : std::string());
    out.push_back(std::move(line));
  }
  return out;
}

GraphConvStats graph_conv_stats() {
  return {g_calls.load(), static_cast<double>(g_ns.load()) * 1e-9, g_plans.load(), g_declined.load()};
}

}  // namespace cugrad::cuda
