// SGD benchmark (GPU): one step of Nesterov momentum + weight decay over ResNet-18's 62
// parameter tensors (11.7M elements), over the same 11.7M elements as one flat tensor (the
// "arena" alternative DESIGN.md weighs), and over one 100M-element tensor. Prints ms, GB/s at
// the minimum 5 passes (read p, g, buf; write p, buf), % of the device-to-device copy
// bandwidth measured in the same run, and PyTorch's fused time from DESIGN.md; then sweeps the
// multi-tensor kernel's chunk size on the ResNet-18 set. Exits 0 with a message without a GPU.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "cuda/sgd.h"
#include "cugrad/cugrad.h"
#include "cugrad/optim.h"

namespace cg = cugrad;

namespace {

using cg::bench::resnet18_parameter_shapes;
using cg::bench::shrunk;
using cg::bench::total_numel;

// One optimizer over fresh parameters of `shapes`, every gradient set, buffers created.
struct Set {
  cg::TensorList params;
  std::unique_ptr<cg::optim::SGD> opt;
};

const cg::optim::SGDOptions kOptions{.lr = 0.1, .momentum = 0.9, .weight_decay = 5e-4, .nesterov = true};

Set make_set(const std::vector<cg::Shape>& shapes, cg::Device dev) {
  Set s;
  for (const auto& shape : shapes) {
    cg::Tensor p = cg::randn(shape, dev);
    p.requires_grad_(true);
    p.set_grad(cg::randn(shape, dev) * 1e-3);
    s.params.push_back(p);
  }
  s.opt = std::make_unique<cg::optim::SGD>(s.params, kOptions);
  s.opt->step();  // the first step creates the momentum buffers (4 passes); time the steady state
  return s;
}

// One step on the GPU against the float64 CPU reference (validate before timing): the largest
// |difference| / (1 + |reference|) over every element after two steps.
double validation_error(const std::vector<cg::Shape>& shapes, cg::Device dev) {
  return cg::bench::optimizer_validation_error(
      shapes, dev, 2, [](const cg::TensorList& p) { return std::make_unique<cg::optim::SGD>(p, kOptions); });
}

void print_row(const char* name, std::size_t tensors, std::int64_t numel, double ms, double copy_gbs,
               const char* torch) {
  const double bytes = 5.0 * 4.0 * static_cast<double>(numel);
  const double gbs = bytes / (ms * 1e-3) / 1e9;
  const double floor_ms = bytes / (copy_gbs * 1e9) * 1e3;
  std::printf("%-44s %4zu %11lld %9.4f %9.1f %7.1f%% %9.4f  %s\n", name, tensors,
              static_cast<long long>(numel), ms, gbs, 100.0 * gbs / copy_gbs, floor_ms, torch);
}

}  // namespace

int sgd_bench_main() {
  if (!cg::cuda_is_available()) {
    std::printf("sgd_bench: no CUDA device visible (no driver or no GPU); nothing to time\n");
    return 0;
  }
  const bool smoke = cg::bench::smoke_mode();
  const cg::Device dev = cg::Device::cuda(0);
  cudaDeviceProp prop{};
  int driver = 0, runtime = 0;
  CUGRAD_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  CUGRAD_CUDA_CHECK(cudaDriverGetVersion(&driver));
  CUGRAD_CUDA_CHECK(cudaRuntimeGetVersion(&runtime));
  std::printf(
      "sgd_bench on %s (%d SMs), driver %d, runtime %d; float32, Nesterov momentum 0.9, weight decay 5e-4\n",
      prop.name, prop.multiProcessorCount, driver, runtime);
  cg::manual_seed(0);
  const double copy_gbs = cg::bench::copy_bandwidth_gbs(dev);
  std::printf("device-to-device copy: %.1f GB/s\n\n", copy_gbs);

  const std::vector<cg::Shape> resnet18 = resnet18_parameter_shapes();
  if (resnet18.size() != 62 || total_numel(resnet18) != 11689512) {
    std::fprintf(stderr, "sgd_bench: ResNet-18 shape list is wrong (%zu tensors, %lld elements)\n",
                 resnet18.size(), static_cast<long long>(total_numel(resnet18)));
    return 1;
  }
  // Smoke mode: ResNet-18's 62 tensors with every channel count / 16 (46,851 elements; the
  // largest, 9,216, spans several chunks at the sweep's smaller chunk sizes), and 50,001
  // elements (4 chunks, not a multiple of 4) for the 100M tensor.
  const std::vector<cg::Shape> resnet = smoke ? shrunk(resnet18) : resnet18;
  const std::int64_t resnet_numel = total_numel(resnet);
  const std::int64_t big_numel = smoke ? 50'001 : 100'000'000;
  const double err = validation_error(resnet, dev);
  std::printf("validation (ResNet-18 set, 2 steps vs the float64 CPU reference): max relative error %.2e\n\n",
              err);
  if (!(err <= 1e-5)) {
    std::fprintf(stderr, "sgd_bench: the CUDA step does not match the CPU reference\n");
    return 1;
  }
  struct Case {
    const char* name;
    std::vector<cg::Shape> shapes;
    const char* torch;
  };
  const Case cases[] = {
      {"ResNet-18, 62 tensors", resnet, "PyTorch fused 0.20 ms, compiled 0.39 ms"},
      {"ResNet-18 as one flat arena tensor", {{resnet_numel}}, "(arena alternative)"},
      {"one 100M tensor", {{big_numel}}, "PyTorch fused 0.78 ms"},
  };

  std::printf("%-44s %4s %11s %9s %9s %8s %9s  %s\n", "work", "tens", "elements", "ms", "GB/s", "%copy",
              "floor ms", "baseline (H100, DESIGN.md)");
  constexpr int kSets = 3;  // steps rotate over 3 copies so the 50 MB L2 does not flatter
  constexpr int kBurst = 10;
  for (const Case& c : cases) {
    std::vector<Set> sets;
    for (int i = 0; i < kSets; ++i) sets.push_back(make_set(c.shapes, dev));
    const std::int64_t numel = total_numel(c.shapes);
    int next = 0;
    // One step per timed interval: includes step()'s host work (checks, table, enqueue).
    const double single = cg::bench::median_ms(
        dev, [&] { sets[next++ % kSets].opt->step(); }, 5, 50);
    // Steps back to back (as in training, where the host runs ahead): device time per step.
    const double burst = cg::bench::median_ms(
                             dev,
                             [&] {
                               for (int k = 0; k < kBurst; ++k) sets[next++ % kSets].opt->step();
                             },
                             2, 20) /
                         kBurst;
    print_row((std::string(c.name) + ", one step").c_str(), c.shapes.size(), numel, single, copy_gbs,
              c.torch);
    print_row((std::string(c.name) + ", back to back").c_str(), c.shapes.size(), numel, burst, copy_gbs, "");
    // Machine-readable lines for bench/compare_torch.py --cugrad (one step, host work included).
    if (&c == &cases[0]) std::printf("RESULT sgd_resnet18_62_tensors %.4f\n", single);
    if (&c == &cases[2]) std::printf("RESULT sgd_one_100M_tensor %.4f\n", single);
    cg::synchronize(dev);
  }

  // The kernel's chunk size (elements per block) on the ResNet-18 set, through the launcher.
  std::printf("\nchunk-size sweep, ResNet-18 set, launcher only (default %d elements per block):\n",
              cugrad::cuda::kSgdChunkElements);
  std::vector<Set> sets;
  for (int i = 0; i < kSets; ++i) sets.push_back(make_set(resnet, dev));
  std::vector<std::vector<cugrad::cuda::SgdTensorArgs>> tables(kSets);
  for (int i = 0; i < kSets; ++i)
    for (std::size_t k = 0; k < resnet.size(); ++k) {
      const cg::Tensor& p = sets[i].params[k];
      tables[i].push_back({p.data_ptr<float>(), p.grad().data_ptr<float>(),
                           sets[i].opt->momentum_buffer(k).data_ptr<float>(), p.numel(), false});
    }
  const cg::cpu::SgdHyper h{kOptions.lr,           kOptions.momentum, kOptions.dampening,
                            kOptions.weight_decay, kOptions.nesterov, kOptions.maximize};
  void* stream = cg::Stream::current(dev).handle();
  for (const int chunk : {2048, 4096, 8192, 16384, 32768, 65536}) {
    int next = 0;
    const double ms = cg::bench::median_ms(
                          dev,
                          [&] {
                            for (int k = 0; k < kBurst; ++k) {
                              const auto& t = tables[next++ % kSets];
                              cugrad::cuda::sgd_step(t.data(), t.size(), h, stream, chunk);
                            }
                          },
                          2, 20) /
                      kBurst;
    const std::string name = "chunk " + std::to_string(chunk);
    print_row(name.c_str(), resnet.size(), resnet_numel, ms, copy_gbs, "");
  }
  cg::synchronize(dev);
  return 0;
}

#ifndef CUGRAD_KERNELS_BENCH  // kernels_bench links every kernel benchmark into one program
int main() { return sgd_bench_main(); }
#endif
