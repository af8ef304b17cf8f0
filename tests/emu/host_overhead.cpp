// host_overhead: what the host spends issuing one training step, measured on the CUDA
// emulator with nothing computed (CUGRAD_EMU_NULL=1, set here: kernels, cuBLAS products and cuDNN
// convolutions are validated and counted but not run, allocations are not poisoned). What is
// left is cugrad's own host work per step (autograd, tensor bookkeeping, argument checks, the
// stream-ordered allocations and frees, descriptor set-up) plus the emulator's cheap bookkeeping
// of each API call; it leaves out what the CUDA driver and cuDNN themselves cost on a real GPU
// machine (a few µs per launch, more per cuDNN call). So it is a lower bound of the host time
// of a step there, from a machine without a GPU; bench/train_step_bench measures the real one.
//
// The steps are train_step_bench's (forward, label-smoothed cross-entropy, backward, SGD Nesterov
// with weight decay) for the two-convolution CNN, the reference CNN (width 64) and ResNet-18, plain
// and with the backbone frozen; batch 8 (host work does not depend on the batch, except the
// emulator's allocations: each is a malloc, and large ones an mmap that a real memory pool does
// not pay). Prints ms per step and the launches, library calls and allocations it makes; then
// the host time of the single-op calls kernels_bench times (BatchNorm eval, cross-entropy
// forward+backward). Exits 1 when the null mode is not in effect (a kernel ran).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cugrad/cugrad.h"
#include "tests/emu/emu_trace.h"
#include "tests/emu/train_step.h"

namespace cg = cugrad;
namespace nn = cugrad::nn;
namespace trace = cugrad_emu::trace;

namespace {

// Host time of `fn` over `calls` calls, each after a synchronization (5 untimed calls first):
// the median and the fastest, in ms.
struct HostTime {
  double median, min;
};
template <class Fn>
HostTime host_ms(Fn&& fn, int calls = 200) {
  for (int i = 0; i < 5; ++i) fn();
  std::vector<double> ms;
  for (int i = 0; i < calls; ++i) {
    cg::synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms.front()};
}

void time_model(const char* name, nn::Module& model, nn::Module& classifier, const cg::Shape& input,
                std::int64_t classes, bool frozen) {
  cugrad_emu::TrainStep step(model, classifier, input, classes, frozen);
  constexpr int kSteps = 50;
  const HostTime t = host_ms(step, kSteps);
  // The counts of one more step.
  cg::synchronize();
  trace::reset();
  step();
  std::uint64_t launches = 0;
  for (const auto& [n, c] : trace::kernels()) launches += c;
  const trace::Counts calls = trace::calls();
  const std::uint64_t cudnn = trace::count_of(calls, "cudnnConvolutionForward") +
                              trace::count_of(calls, "cudnnConvolutionBackwardData") +
                              trace::count_of(calls, "cudnnConvolutionBackwardFilter");
  std::printf("%-38s %8.3f ms per step (median of %d; min %.3f)  %3llu launches, %2llu cuDNN convolutions, %3llu "
              "allocations\n",
              name, t.median, kSteps, t.min, static_cast<unsigned long long>(launches),
              static_cast<unsigned long long>(cudnn),
              static_cast<unsigned long long>(trace::count_of(calls, "cudaMallocFromPoolAsync")));
}

// The single-op calls kernels_bench times with CUDA events from an idle device, so that the
// host's part of those event times is known: BatchNorm eval forward (4096x1024) and the
// label-smoothed cross-entropy forward+backward (its host work does not depend on the rows;
// 1024x1000 here, so that the emulator's allocations stay on the heap).
void time_ops() {
  namespace F = cugrad::nn::functional;
  const cg::Device gpu = cg::Device::cuda(0);
  const cg::Tensor x = cg::randn({4096, 1024}, gpu), w = cg::rand({1024}, gpu), b = cg::randn({1024}, gpu);
  const cg::Tensor rm = cg::zeros({1024}, gpu), rv = cg::ones({1024}, gpu);
  const HostTime bn = host_ms([&] {
    cg::NoGradGuard ng;
    (void)F::batch_norm(x, rm, rv, w, b, false, 0.1, 1e-5);
  });
  std::printf("%-38s %8.4f ms per call (median of 200; min %.4f)\n", "BatchNorm eval forward", bn.median, bn.min);
  cg::Tensor logits = cg::randn({1024, 1000}, gpu).requires_grad_();
  const cg::Tensor y = cg::randint(0, 1000, {1024}, gpu);
  const HostTime ce = host_ms([&] {
    F::cross_entropy(logits, y, {.label_smoothing = 0.1}).backward();
    logits.set_grad(cg::Tensor());
  });
  std::printf("%-38s %8.4f ms per call (median of 200; min %.4f)\n", "cross-entropy forward+backward", ce.median,
              ce.min);
}

}  // namespace

int main() {
  setenv("CUGRAD_EMU_NULL", "1", 1);  // before the first emulated call reads it
  const cg::Device gpu = cg::Device::cuda(0);
  // The mode is in effect: a fill launched over known bytes leaves them as they were.
  {
    const std::vector<float> ones(64, 1.0f);
    cg::Tensor t = cg::from_vector(ones, {64}, gpu);
    t.fill_(5.0f);
    if (t.to_vector<float>() != ones) {
      std::fprintf(stderr, "host_overhead: CUGRAD_EMU_NULL is not in effect (a kernel ran)\n");
      return 1;
    }
  }
  std::printf("host_overhead: host time of one training step with nothing computed (CUDA emulator, "
              "CUGRAD_EMU_NULL=1), batch 8\n");
  cg::manual_seed(0);
  for (const bool frozen : {false, true}) {
    {
      nn::TwoConvCnn net;
      net->to(gpu);
      time_model(frozen ? "two-convolution CNN, backbone frozen" : "two-convolution CNN", *net, *net->fc2,
                 {8, 1, 28, 28}, 10, frozen);
    }
    {
      nn::ReferenceCnn cnn(64);
      cnn->to(gpu);
      time_model(frozen ? "reference CNN, backbone frozen" : "reference CNN", *cnn,
                 *cnn->f[nn::ReferenceCnnImpl::kClassifier], {8, 1, 28, 28}, 10, frozen);
    }
    {
      nn::ResNet resnet = nn::resnet18(1000, 3);
      resnet->to(gpu);
      time_model(frozen ? "ResNet-18, backbone frozen" : "ResNet-18", *resnet, *resnet->fc, {8, 3, 224, 224},
                 1000, frozen);
    }
  }
  time_ops();
  return 0;
}
