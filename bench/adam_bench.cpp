// Adam benchmark (GPU): one AdamW step (betas 0.9/0.999, weight decay 1e-2) over ResNet-18's 62
// parameter tensors (11.7M elements) and over one 100M-element tensor, plain and with amsgrad.
// Prints ms, GB/s at the minimum passes (7: read p, g, m, v; write p, m, v; 9 with amsgrad),
// % of the device-to-device copy bandwidth measured in the same run, and the floor that
// bandwidth gives. Validates against the float64 CPU reference first. PyTorch's fused AdamW on
// the same work: bench/compare_torch.py (adamw_* results). Exits 0 with a message without a GPU.
#include <cuda_runtime.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "cugrad/cugrad.h"
#include "cugrad/optim.h"

namespace cg = cugrad;

namespace {

cg::optim::AdamWOptions options(bool amsgrad) {
  return {.lr = 1e-3, .weight_decay = 1e-2, .amsgrad = amsgrad};
}

// One optimizer over fresh parameters of `shapes`, every gradient set, its state created.
struct Set {
  cg::TensorList params;
  std::unique_ptr<cg::optim::AdamW> opt;
};

Set make_set(const std::vector<cg::Shape>& shapes, cg::Device dev, bool amsgrad) {
  Set s;
  for (const auto& shape : shapes) {
    cg::Tensor p = cg::randn(shape, dev);
    p.requires_grad_(true);
    p.set_grad(cg::randn(shape, dev) * 1e-3);
    s.params.push_back(p);
  }
  s.opt = std::make_unique<cg::optim::AdamW>(s.params, options(amsgrad));
  s.opt->step();  // the first step creates the state without reading it; time the steady state
  return s;
}

// Three steps on the GPU against the float64 CPU reference: the largest
// |difference| / (1 + |reference|) over every parameter element.
double validation_error(const std::vector<cg::Shape>& shapes, cg::Device dev, bool amsgrad) {
  return cg::bench::optimizer_validation_error(shapes, dev, 3, [amsgrad](const cg::TensorList& p) {
    return std::make_unique<cg::optim::AdamW>(p, options(amsgrad));
  });
}

void print_row(const std::string& name, std::size_t tensors, std::int64_t numel, double passes, double ms,
               double copy_gbs) {
  const double bytes = passes * 4.0 * static_cast<double>(numel);
  const double gbs = bytes / (ms * 1e-3) / 1e9;
  const double floor_ms = bytes / (copy_gbs * 1e9) * 1e3;
  std::printf("%-52s %4zu %11lld %9.4f %9.1f %7.1f%% %9.4f\n", name.c_str(), tensors,
              static_cast<long long>(numel), ms, gbs, 100.0 * gbs / copy_gbs, floor_ms);
}

}  // namespace

int adam_bench_main() {
  if (!cg::cuda_is_available()) {
    std::printf("adam_bench: no CUDA device visible (no driver or no GPU); nothing to time\n");
    return 0;
  }
  const bool smoke = cg::bench::smoke_mode();
  const cg::Device dev = cg::Device::cuda(0);
  cudaDeviceProp prop{};
  int driver = 0, runtime = 0;
  CUGRAD_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  CUGRAD_CUDA_CHECK(cudaDriverGetVersion(&driver));
  CUGRAD_CUDA_CHECK(cudaRuntimeGetVersion(&runtime));
  std::printf("adam_bench on %s (%d SMs), driver %d, runtime %d; float32 AdamW, lr 1e-3, weight decay 1e-2\n",
              prop.name, prop.multiProcessorCount, driver, runtime);
  cg::manual_seed(0);
  const double copy_gbs = cg::bench::copy_bandwidth_gbs(dev);
  std::printf("device-to-device copy: %.1f GB/s\n\n", copy_gbs);

  const std::vector<cg::Shape> resnet18 = cg::bench::resnet18_parameter_shapes();
  const std::vector<cg::Shape> resnet = smoke ? cg::bench::shrunk(resnet18) : resnet18;
  const std::int64_t big_numel = smoke ? 50'001 : 100'000'000;
  for (const bool amsgrad : {false, true}) {
    const double err = validation_error(resnet, dev, amsgrad);
    std::printf(
        "validation (ResNet-18 set%s, 3 steps vs the float64 CPU reference): max relative error %.2e\n",
        amsgrad ? ", amsgrad" : "", err);
    if (!(err <= 1e-5)) {
      std::fprintf(stderr, "adam_bench: the CUDA step does not match the CPU reference\n");
      return 1;
    }
  }
  struct Case {
    const char* name;
    const char* result;
    std::vector<cg::Shape> shapes;
  };
  const Case cases[] = {
      {"ResNet-18, 62 tensors", "resnet18_62_tensors", resnet},
      {"one 100M tensor", "one_100M_tensor", {{big_numel}}},
  };
  std::printf("\n%-52s %4s %11s %9s %9s %8s %9s\n", "work", "tens", "elements", "ms", "GB/s", "%copy",
              "floor ms");
  constexpr int kSets = 3;  // steps rotate over 3 copies so the 50 MB L2 does not flatter
  constexpr int kBurst = 10;
  for (const bool amsgrad : {false, true}) {
    for (const Case& c : cases) {
      std::vector<Set> sets;
      for (int i = 0; i < kSets; ++i) sets.push_back(make_set(c.shapes, dev, amsgrad));
      const std::int64_t numel = cg::bench::total_numel(c.shapes);
      const double passes = amsgrad ? 9 : 7;
      int next = 0;
      const double single = cg::bench::median_ms(
          dev, [&] { sets[next++ % kSets].opt->step(); }, 5, 50);
      const double burst = cg::bench::median_ms(
                               dev,
                               [&] {
                                 for (int k = 0; k < kBurst; ++k) sets[next++ % kSets].opt->step();
                               },
                               2, 20) /
                           kBurst;
      const std::string name = std::string("AdamW") + (amsgrad ? " amsgrad" : "") + ", " + c.name;
      print_row(name + ", one step", c.shapes.size(), numel, passes, single, copy_gbs);
      print_row(name + ", back to back", c.shapes.size(), numel, passes, burst, copy_gbs);
      // Machine-readable lines for bench/compare_torch.py --cugrad (one step, host work included).
      std::printf("RESULT adamw%s_%s %.4f\n", amsgrad ? "_amsgrad" : "", c.result, single);
      cg::synchronize(dev);
    }
  }
  return 0;
}

#ifndef CUGRAD_KERNELS_BENCH  // kernels_bench links every kernel benchmark into one program
int main() { return adam_bench_main(); }
#endif
