// train_step_bench: one training step (forward, label-smoothed cross-entropy, backward, SGD Nesterov with
// weight decay) of the two-convolution CNN of PyTorch's MNIST example (nn::TwoConvCnn, batch 256, 28×28:
// DESIGN.md's "2-conv CNN" row), of the reference CNN (width 64, batch 256, 28×28) and of ResNet-18 (batch
// 64, 224×224), each plain, with the backbone frozen (classifier trainable), and with forward hooks copying
// every leaf module's activation to the host through an Inspector (flushed every step, so the step includes
// the copies). CUDA-event medians over steps that rotate through several input batches. Everything twice:
// convolution algorithms from cuDNN's heuristics (the default), then from its timed search
// (set_cudnn_benchmark, results named *_search). Prints `RESULT name ms` lines for bench/compare_torch.py.
// The plain step is also run back to back (no synchronization between steps, as in training), and the time
// the host takes to issue one step is measured (bench_util.h, pipelined_ms): whether the step is bound by the
// host or the device.
//
// The plain step is timed once more in the same run with module fusion off
// (nn::set_fusion_enabled(false): BatchNorm or Conv2d and ReLU as two ops; results *_unfused), so
// one call measures what fusing them saves, and (the two CNNs, whose first convolution runs
// cugrad's direct kernels) with every convolution on cuDNN (results *_cudnn_only). The hooks
// variant never fuses (every module is hooked).
//
// The plain step is also captured into a CUDA graph and replayed (cugrad::CudaGraph; results
// *_cuda_graph): what the host's issue time costs the step.
//
// CUGRAD_TF32=1: TF32 tensor cores allowed in cuDNN and cuBLAS (results named *_tf32).
//
// CUGRAD_BENCH_PROFILE=two_conv_cnn_b256, reference_cnn_b256 or resnet18_b64: that model's plain
// step only, with the timed search: 3 warm-up steps (the searches happen there), then 2 steps
// between cudaProfilerStart and cudaProfilerStop, for a kernel profiler started with profiling off
// (scripts/gpu_session.sh's profile stage: ncu --profile-from-start off, then
// scripts/ncu_summary.py sums the time per kernel).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include <cuda_profiler_api.h>

#include "bench/bench_util.h"
#include "cuda/conv.h"
#include "cuda/conv_direct.h"
#include "cuda/conv_graph.h"
#include "cugrad/nn/inspect_hooks.h"
#include "cugrad/nn/models.h"

namespace cg = cugrad;
namespace nn = cugrad::nn;

namespace {

// graphed: the plain step captured once into a CUDA graph (cugrad::CudaGraph) after the warm-up
// steps, then each timed step copies its batch into the captured input tensors and replays.
enum class Variant { plain, frozen, hooks, graphed };

// Where the host's time per step goes (time_steps with `host`): pipelined_ms's measurement,
// and the host time inside cuDNN convolution calls per step with their number.
struct HostCost {
  cg::bench::Pipelined pipelined{};
  double cudnn_ms = 0;
  double cudnn_calls = 0;
  // Of cudnn_ms: descriptors, workspace allocation, the cuDNN calls themselves.
  double descriptor_ms = 0, workspace_ms = 0, run_ms = 0;
  // Convolutions through cuDNN's graph API (cuda/conv_graph.h): host time and calls per step.
  double graph_ms = 0, graph_calls = 0;
};

// Blocks the pinned host cache pinned (cudaHostAlloc) while the steps ran: in the warm-up steps
// and in the timed ones. A hooked step that pins a block waits for it (tens of milliseconds for
// a 256 MB block), so growth in the timed steps would show in their times.
struct PinnedGrowth {
  std::uint64_t warmup_blocks = 0, timed_blocks = 0;
  std::size_t timed_bytes = 0;
};

// `copied_bytes` (hooks): the bytes the Inspector delivered in the last step.
double time_steps(cg::Device gpu, nn::Module& model, nn::Module& classifier, const cg::Shape& input,
                  std::int64_t classes, Variant variant, int runs, HostCost* host = nullptr,
                  std::size_t* copied_bytes = nullptr, PinnedGrowth* pinned = nullptr) {
  if (cg::bench::smoke_mode()) runs = 1;  // every path once (the host-cost loop below included)
  model.train();
  model.unfreeze();
  if (variant == Variant::frozen) {
    model.freeze();
    classifier.unfreeze();
  }
  std::vector<cg::Tensor> xs, ys;
  for (int i = 0; i < 3; ++i) {
    xs.push_back(cg::randn(input, gpu));
    ys.push_back(cg::randint(0, classes, {input[0]}, gpu));
  }
  std::vector<cg::Tensor> trainable;
  for (const auto& p : model.parameters())
    if (p.requires_grad()) trainable.push_back(p);
  cg::optim::SGD opt(trainable, {.lr = 0.01, .momentum = 0.9, .weight_decay = 5e-4, .nesterov = true});
  cg::inspect::Inspector insp({.max_pinned_bytes = std::size_t{4} << 30});
  double checksum = 0;
  std::size_t step_bytes = 0;  // written by the Inspector's worker; read after a flush
  std::vector<cg::HookHandle> hooks;
  if (variant == Variant::hooks)
    hooks = cg::inspect::record_activations(model, insp, [&](const cg::HostTensor& t, const cg::inspect::Tag&) {
      checksum += t.data<float>()[0];
      step_bytes += static_cast<std::size_t>(t.numel()) * cg::element_size(t.dtype());
    });
  int turn = 0;
  // The graphed variant's static input tensors: every step reads its batch from them.
  cg::Tensor static_x = cg::empty(input, gpu), static_y = cg::empty({input[0]}, gpu, cg::DType::int64);
  auto eager_step = [&](const cg::Tensor& x, const cg::Tensor& y) {
    step_bytes = 0;  // the previous step's copies have all been delivered (flush below)
    const cg::Tensor loss = nn::functional::cross_entropy(model(x), y, {.label_smoothing = 0.1});
    opt.zero_grad();
    loss.backward();
    opt.step();
    if (variant == Variant::hooks) insp.flush();  // the step ends when every copy has landed
  };
  cg::CudaGraph graph;
  auto step = [&] {
    const int i = turn++ % 3;
    if (variant != Variant::graphed) return eager_step(xs[i], ys[i]);
    static_x.copy_(xs[i]);
    static_y.copy_(ys[i]);
    if (graph.captured())
      graph.replay();
    else
      eager_step(static_x, static_y);
  };
  const cg::PinnedMemoryStats pinned_start = cg::pinned_memory_stats();
  // The warm-up steps (one for the graphed variant in smoke mode: a capture needs one).
  const int warmup = cg::bench::smoke_mode() ? (variant == Variant::graphed ? 1 : 0) : 5;
  for (int i = 0; i < warmup; ++i) step();
  if (variant == Variant::graphed)
    cg::capture(graph, cg::Stream::create(gpu), [&] { eager_step(static_x, static_y); });
  const cg::PinnedMemoryStats pinned_timed = cg::pinned_memory_stats();
  const double ms = cg::bench::median_ms(gpu, step, 0, runs);
  if (pinned != nullptr) {
    const cg::PinnedMemoryStats pinned_end = cg::pinned_memory_stats();
    pinned->warmup_blocks = pinned_timed.allocation_count - pinned_start.allocation_count;
    pinned->timed_blocks = pinned_end.allocation_count - pinned_timed.allocation_count;
    pinned->timed_bytes = pinned_end.bytes_reserved - pinned_timed.bytes_reserved;
  }
  if (host != nullptr) {
    host->pipelined = cg::bench::pipelined_ms(gpu, step, runs);
    // The host's time inside cuDNN convolution calls per step, each step issued onto an idle
    // device (as pipelined_ms's host time), so no launch queue fills up and blocks the host.
    cg::cuda::CudnnCallStats sum;
    cg::cuda::GraphConvStats graph_sum;
    for (int r = 0; r < runs; ++r) {
      cg::synchronize(gpu);
      const cg::cuda::CudnnCallStats before = cg::cuda::cudnn_call_stats();
      const cg::cuda::GraphConvStats graph_before = cg::cuda::graph_conv_stats();
      step();
      const cg::cuda::CudnnCallStats after = cg::cuda::cudnn_call_stats();
      const cg::cuda::GraphConvStats graph_after = cg::cuda::graph_conv_stats();
      graph_sum.calls += graph_after.calls - graph_before.calls;
      graph_sum.seconds += graph_after.seconds - graph_before.seconds;
      sum.calls += after.calls - before.calls;
      sum.seconds += after.seconds - before.seconds;
      sum.descriptor_seconds += after.descriptor_seconds - before.descriptor_seconds;
      sum.workspace_seconds += after.workspace_seconds - before.workspace_seconds;
      sum.run_seconds += after.run_seconds - before.run_seconds;
    }
    cg::synchronize(gpu);
    host->cudnn_ms = 1e3 * sum.seconds / runs;
    host->cudnn_calls = static_cast<double>(sum.calls) / runs;
    host->descriptor_ms = 1e3 * sum.descriptor_seconds / runs;
    host->workspace_ms = 1e3 * sum.workspace_seconds / runs;
    host->run_ms = 1e3 * sum.run_seconds / runs;
    host->graph_ms = 1e3 * graph_sum.seconds / runs;
    host->graph_calls = static_cast<double>(graph_sum.calls) / runs;
  }
  for (auto& h : hooks) h.remove();
  model.unfreeze();
  if (copied_bytes != nullptr) *copied_bytes = step_bytes;
  return ms + 0 * checksum;
}

// `fusable`: the model has BatchNorm+ReLU or Conv2d+ReLU pairs that module fusion joins (timed once
// more without). `direct`: it has a convolution that cugrad's direct kernels run (timed once more
// with cuDNN for it: cuda::set_direct_convolutions(false)).
// `d2h_gbs`: the Inspector's device-to-host rate measured in this run (the hooked step's floor
// is the bytes its hooks copy at that rate).
void run_model(cg::Device gpu, const std::string& name, nn::Module& model, nn::Module& classifier,
               const cg::Shape& input, std::int64_t classes, int runs, double d2h_gbs, bool fusable = true,
               bool direct = false) {
  HostCost host;
  const double plain = time_steps(gpu, model, classifier, input, classes, Variant::plain, runs, &host);
  const cg::bench::Pipelined& pipe = host.pipelined;
  const double frozen = time_steps(gpu, model, classifier, input, classes, Variant::frozen, runs);
  std::size_t hook_bytes = 0;
  PinnedGrowth pinned;
  const double hooks =
      time_steps(gpu, model, classifier, input, classes, Variant::hooks, runs, nullptr, &hook_bytes, &pinned);
  HostCost graphed_host;
  const double graphed =
      time_steps(gpu, model, classifier, input, classes, Variant::graphed, runs, &graphed_host);
  const double copy_ms = static_cast<double>(hook_bytes) / (d2h_gbs * 1e9) * 1e3;
  std::printf("%-32s %9.3f ms | frozen backbone %9.3f ms (%.2fx faster) | hooks copying every activation %9.3f ms "
              "(%+.1f%%)\n",
              name.c_str(), plain, frozen, plain / frozen, hooks, 100.0 * (hooks - plain) / plain);
  std::printf(
      "%-32s %9.3f ms per step back to back (%d steps); the host issues one step in %.3f ms "
      "(%.0f%% of the step), %.3f ms of it in %.0f cuDNN convolution calls (descriptors %.3f, workspaces "
      "%.3f, the calls %.3f)\n",
      "", pipe.total_ms, pipe.runs, pipe.host_ms, 100.0 * pipe.host_ms / plain, host.cudnn_ms,
      host.cudnn_calls, host.descriptor_ms, host.workspace_ms, host.run_ms);
  std::printf(
      "%-32s the hooks copy %.1f MB per step: %.3f ms at %.1f GB/s device to host (%.0f%% of the plain step; "
      "the hooked step cannot be shorter)\n",
      "", static_cast<double>(hook_bytes) / 1e6, copy_ms, d2h_gbs, 100.0 * copy_ms / plain);
  std::printf(
      "%-32s the pinned cache pinned %llu blocks in the hooked warm-up steps, %llu (%.1f MB) in the timed "
      "ones\n",
      "", static_cast<unsigned long long>(pinned.warmup_blocks),
      static_cast<unsigned long long>(pinned.timed_blocks), static_cast<double>(pinned.timed_bytes) / 1e6);
  std::printf(
      "%-32s %9.3f ms replayed as a CUDA graph (%.3f back to back; the host issues a replay and its input "
      "copies in %.3f ms)\n",
      "", graphed, graphed_host.pipelined.total_ms, graphed_host.pipelined.host_ms);
  std::printf("RESULT train_step_%s_cuda_graph %.4f\nRESULT train_step_%s_cuda_graph_back_to_back %.4f\n",
              name.c_str(), graphed, name.c_str(), graphed_host.pipelined.total_ms);
  std::printf("RESULT train_step_%s_cuda_graph_host_issue %.4f\n", name.c_str(),
              graphed_host.pipelined.host_ms);
  std::printf("RESULT train_step_%s %.4f\nRESULT train_step_%s_frozen %.4f\nRESULT train_step_%s_hooks %.4f\n",
              name.c_str(), plain, name.c_str(), frozen, name.c_str(), hooks);
  std::printf("RESULT train_step_%s_back_to_back %.4f\nRESULT train_step_%s_host_issue %.4f\n", name.c_str(),
              pipe.total_ms, name.c_str(), pipe.host_ms);
  std::printf("RESULT train_step_%s_hooks_copy_floor %.4f\nRESULT train_step_%s_host_cudnn %.4f\n",
              name.c_str(), copy_ms, name.c_str(), host.cudnn_ms);
  std::printf("RESULT train_step_%s_host_cudnn_calls %.4f\n", name.c_str(), host.run_ms);
  {
    // The plain step with conv2d's cuDNN calls through the graph API's cached execution plans.
    const bool before = cg::cuda::set_graph_convolutions(true);
    HostCost gh;
    const double graph = time_steps(gpu, model, classifier, input, classes, Variant::plain, runs, &gh);
    cg::cuda::set_graph_convolutions(before);
    std::printf(
        "%-32s %9.3f ms through cuDNN's graph API (%.3f back to back); the host issues a step in %.3f ms, "
        "%.3f ms of it in %.0f plan executions (%.0f legacy calls left, %.3f ms)\n",
        "", graph, gh.pipelined.total_ms, gh.pipelined.host_ms, gh.graph_ms, gh.graph_calls, gh.cudnn_calls,
        gh.cudnn_ms);
    std::printf("RESULT train_step_%s_graph %.4f\nRESULT train_step_%s_graph_back_to_back %.4f\n",
                name.c_str(), graph, name.c_str(), gh.pipelined.total_ms);
    std::printf("RESULT train_step_%s_graph_host_issue %.4f\nRESULT train_step_%s_graph_host_cudnn %.4f\n",
                name.c_str(), gh.pipelined.host_ms, name.c_str(), gh.graph_ms);
  }
  // The hooked step once more, after the other variants: whether its time depends on what ran
  // before it (the pinned buffers, the allocator's cache) or only on the step. Not in smoke mode
  // (the same code path as above; in the CUDA emulator a ResNet-18 variant costs minutes).
  if (!cg::bench::smoke_mode()) {
    PinnedGrowth again;
    const double hooks_again =
        time_steps(gpu, model, classifier, input, classes, Variant::hooks, runs, nullptr, nullptr, &again);
    std::printf(
        "%-32s %9.3f ms hooked, timed again after the other variants (blocks pinned: %llu warm-up, %llu "
        "timed)\n",
        "", hooks_again, static_cast<unsigned long long>(again.warmup_blocks),
        static_cast<unsigned long long>(again.timed_blocks));
    std::printf("RESULT train_step_%s_hooks_again %.4f\n", name.c_str(), hooks_again);
  }
  if (direct) {
    const bool before = cg::cuda::set_direct_convolutions(false);
    const double cudnn_only = time_steps(gpu, model, classifier, input, classes, Variant::plain, runs);
    cg::cuda::set_direct_convolutions(before);
    std::printf("%-32s %9.3f ms with every convolution on cuDNN (direct kernels %s above)\n", "", cudnn_only,
                before ? "on" : "off");
    std::printf("RESULT train_step_%s_cudnn_only %.4f\n", name.c_str(), cudnn_only);
  }
  if (!fusable) return;
  const bool fusion = nn::fusion_enabled();
  nn::set_fusion_enabled(false);
  const double unfused = time_steps(gpu, model, classifier, input, classes, Variant::plain, runs);
  nn::set_fusion_enabled(fusion);
  std::printf(
      "%-32s %9.3f ms with module fusion off (BatchNorm or Conv2d and ReLU as two ops; fusion is %s "
      "above)\n",
      "", unfused, fusion ? "on" : "off");
  std::printf("RESULT train_step_%s_unfused %.4f\n", name.c_str(), unfused);
}

}  // namespace

int main() {
  if (!cg::cuda_is_available()) {
    std::printf("train_step_bench: no CUDA device visible; nothing to measure\n");
    return 0;
  }
  const bool smoke = cg::bench::smoke_mode();
  const cg::Device gpu = cg::Device::cuda(0);
  // CUGRAD_TF32=1: TF32 tensor cores allowed (results then named *_tf32).
  const char* tf32_env = std::getenv("CUGRAD_TF32");
  cg::set_allow_tf32(tf32_env != nullptr && std::string(tf32_env) == "1");
  const std::string tf32_suffix = cg::allow_tf32() ? "_tf32" : "";
  if (const char* profile = std::getenv("CUGRAD_BENCH_PROFILE"); profile != nullptr && *profile != '\0') {
    const std::string name = profile;
    cg::set_cudnn_benchmark(true);
    cg::manual_seed(0);
    std::shared_ptr<nn::Module> model;
    cg::Shape input;
    std::int64_t classes = 0;
    if (name == "two_conv_cnn_b256") {
      model = nn::TwoConvCnn();
      input = {256, 1, 28, 28};
      classes = 10;
    } else if (name == "reference_cnn_b256") {
      model = nn::ReferenceCnn(64);
      input = {256, 1, 28, 28};
      classes = 10;
    } else if (name == "resnet18_b64") {
      model = nn::resnet18(1000, 3);
      input = {64, 3, 224, 224};
      classes = 1000;
    } else {
      std::fprintf(stderr,
                   "train_step_bench: CUGRAD_BENCH_PROFILE=%s: not two_conv_cnn_b256, reference_cnn_b256 or "
                   "resnet18_b64\n",
                   profile);
      return 2;
    }
    model->to(gpu);
    model->train();
    const cg::Tensor x = cg::randn(input, gpu), y = cg::randint(0, classes, {input[0]}, gpu);
    cg::optim::SGD opt(model->parameters(), {.lr = 0.01, .momentum = 0.9, .weight_decay = 5e-4, .nesterov = true});
    const auto step = [&] {
      const cg::Tensor loss = nn::functional::cross_entropy((*model)(x), y, {.label_smoothing = 0.1});
      opt.zero_grad();
      loss.backward();
      opt.step();
    };
    for (int i = 0; i < 3; ++i) step();
    cg::synchronize(gpu);
    CUGRAD_CUDA_CHECK(cudaProfilerStart());
    for (int i = 0; i < 2; ++i) step();
    cg::synchronize(gpu);
    CUGRAD_CUDA_CHECK(cudaProfilerStop());
    std::printf("profile %s: 3 warm-up steps, then 2 steps profiled (timed search)\n", name.c_str());
    return 0;
  }
  std::printf("train_step_bench: float32 (TF32 %s), SGD Nesterov + weight decay, label smoothing 0.1\n",
              cg::allow_tf32() ? "on" : "off");
  std::printf("device-to-device copy: %.0f GB/s\n", cg::bench::copy_bandwidth_gbs(gpu));
  const double d2h_gbs = cg::bench::inspector_copy_gbs(gpu);
  std::printf("device-to-host through an Inspector: %.1f GB/s\n", d2h_gbs);
  cg::manual_seed(0);
  // Smoke mode: the same models on a few small, odd-sized images.
  for (const bool search : {false, true}) {
    cg::set_cudnn_benchmark(search);
    const std::string suffix = (search ? "_search" : "") + tf32_suffix;
    std::printf("convolution algorithms: %s\n",
                search ? "cuDNN timed search (set_cudnn_benchmark)" : "cuDNN heuristics (default)");
    {
      const std::int64_t side = smoke ? 13 : 28;
      nn::TwoConvCnn net(10, 1, side);
      net->to(gpu);
      run_model(gpu, "two_conv_cnn_b256" + suffix, *net, *net->fc2, {smoke ? 3 : 256, 1, side, side}, 10, 50,
                d2h_gbs, /*fusable=*/true, /*direct=*/true);
    }
    {
      nn::ReferenceCnn cnn(64);
      cnn->to(gpu);
      const cg::Shape input = smoke ? cg::Shape{3, 1, 13, 13} : cg::Shape{256, 1, 28, 28};
      run_model(gpu, "reference_cnn_b256" + suffix, *cnn, *cnn->f[nn::ReferenceCnnImpl::kClassifier], input,
                10, 50, d2h_gbs, /*fusable=*/true, /*direct=*/true);
    }
    {
      nn::ResNet resnet = nn::resnet18(1000, 3);
      resnet->to(gpu);
      const cg::Shape input = smoke ? cg::Shape{2, 3, 33, 33} : cg::Shape{64, 3, 224, 224};
      run_model(gpu, "resnet18_b64" + suffix, *resnet, *resnet->fc, input, 1000, 20, d2h_gbs);
    }
  }
  cg::set_cudnn_benchmark(false);
  std::printf("cuDNN's algorithm for each convolution of the steps above (the first ranked candidate):\n");
  for (const std::string& line : cg::cuda::conv2d_algorithm_choices()) std::printf("  %s\n", line.c_str());
  std::printf("cuDNN graph API: the engine of each convolution of the *_graph steps above:\n");
  for (const std::string& line : cg::cuda::graph_conv_choices()) std::printf("  %s\n", line.c_str());
  return 0;
}
