// What one training step asks of the GPU, counted on the CUDA emulator (emu_trace.h): kernel
// launches by kernel, cuBLAS and cuDNN calls, copies, allocations, events and host
// synchronizations, for the steps bench/train_step_bench times (forward, label-smoothed
// cross-entropy, backward, SGD Nesterov with weight decay): the two-convolution CNN, the
// reference CNN and ResNet-18, plain and with the backbone frozen. Small inputs: the counts do
// not depend on the batch or the image size (cuDNN's algorithm choice aside, which happens in
// the warm-up steps).
//
// The assertions are the properties the step's speed rests on: a step never waits on the host
// (no stream, event or device synchronization, no blocking copy), allocates nothing outside the
// stream-ordered pool, asks cuDNN for no algorithm search after the first steps, and issues one
// SGD launch; the launch and allocation counts are printed (CUGRAD_STEP_PROFILE_VERBOSE=1 lists
// every kernel) and held under a budget, so that a change that adds either to the hot path
// shows here. When this was written: reference CNN 43 launches and 94 pool allocations per
// step (25 and 45 frozen), ResNet-18 141 and 341 (74 and 154 frozen); ReLU's backward took
// four launches (fill, compare, cast, multiply) before it became one.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "cugrad/cugrad.h"
#include "tests/emu/emu_trace.h"
#include "tests/emu/train_step.h"

namespace cg = cugrad;
namespace nn = cugrad::nn;
namespace trace = cugrad_emu::trace;

namespace {

struct Profile {
  trace::Counts calls, kernels;
  std::uint64_t launches = 0;

  std::uint64_t call(const std::string& name) const { return trace::count_of(calls, name); }
  std::uint64_t kernel_launches(const std::string& part) const {
    std::uint64_t total = 0;
    for (const auto& [n, c] : kernels)
      if (n.find(part) != std::string::npos) total += c;
    return total;
  }
};

// Warm-up steps, then the counts of one step. No synchronization between the reset and the
// snapshot: whatever the step itself calls is all that is counted.
Profile profile_step(nn::Module& model, nn::Module& classifier, const cg::Shape& input, std::int64_t classes,
                     bool frozen) {
  cugrad_emu::TrainStep step(model, classifier, input, classes, frozen);
  for (int i = 0; i < 3; ++i) step();
  cg::synchronize();
  trace::reset();
  step();
  Profile p;
  p.calls = trace::calls();
  p.kernels = trace::kernels();
  for (const auto& [n, c] : p.kernels) p.launches += c;
  cg::synchronize();
  return p;
}

void print(const char* name, const Profile& p) {
  std::printf("%s: %llu kernel launches in one step\n", name, static_cast<unsigned long long>(p.launches));
  for (const auto& [n, c] : p.calls) std::printf("  %-44s %6llu\n", n.c_str(), static_cast<unsigned long long>(c));
  const char* verbose = std::getenv("CUGRAD_STEP_PROFILE_VERBOSE");
  if (verbose != nullptr && std::string(verbose) == "1")
    for (const auto& [n, c] : p.kernels)
      std::printf("  %6llu  %s\n", static_cast<unsigned long long>(c), n.substr(0, 160).c_str());
}

void expect_no_host_wait(const Profile& p) {
  for (const char* sync : {"cudaDeviceSynchronize", "cudaStreamSynchronize", "cudaEventSynchronize", "cudaMemcpy",
                           "cudaMemset", "cudaMalloc", "cudaFree", "cudaHostAlloc", "cudaFreeHost"})
    EXPECT_EQ(p.call(sync), 0u) << sync << " in a training step";
  EXPECT_EQ(p.call("cudaMemcpyAsync from pageable host memory"), 0u) << "a staged (host-blocking) copy";
  for (const char* search : {"cudnnFindConvolutionForwardAlgorithmEx", "cudnnFindConvolutionBackwardDataAlgorithmEx",
                             "cudnnFindConvolutionBackwardFilterAlgorithmEx"})
    EXPECT_EQ(p.call(search), 0u) << search << " after the warm-up steps";
  // Each ranked algorithm's workspace is asked for once, with the ranking, not on every call.
  for (const char* query :
       {"cudnnGetConvolutionForwardWorkspaceSize", "cudnnGetConvolutionBackwardDataWorkspaceSize",
        "cudnnGetConvolutionBackwardFilterWorkspaceSize"})
    EXPECT_EQ(p.call(query), 0u) << query << " after the warm-up steps";
  EXPECT_EQ(p.kernel_launches("sgd_multi_tensor_kernel"), 1u) << "SGD: one launch for every parameter";
  // Steady state: what a step allocates from the pool it gives back.
  EXPECT_EQ(p.call("cudaMallocFromPoolAsync"), p.call("cudaFreeAsync"));
}

// Budgets: the counts when this test was written (2026-11-26), lowered when BatchNorm and ReLU
// were fused (nn::set_fusion_enabled; reference CNN 43 -> 33 launches, 94 -> 89 allocations;
// ResNet-18 141 -> 123, 341 -> 332; the frozen steps 25 -> 20 / 45 -> 40 and 74 -> 65 / 154 -> 145).
// The two-convolution CNN (added with dropout fused: 31 -> 21 launches, 45 -> 39 allocations;
// frozen 24 -> 14, 26 -> 20) starts at what it took then. Its bias gradients became cugrad's
// channel_sum_kernel instead of cudnnConvolutionBackwardBias (a cuDNN call, not counted as a
// launch here; 240 us a call on an H100): 21 -> 23 launches at these small shapes (one block per
// channel); at batch 256, 28x28, each takes a second launch and a workspace allocation.
// Then (2026-11-27) the convolutions' bias adds became cugrad's channel_bias_kernel instead of
// cudnnAddTensor (a cuDNN call, uncounted), with conv1's ReLU in it (conv2d_relu), and conv1's
// ReLU gradient joined its bias sums: launches 23 -> 23 (conv2's bias add now counted, conv1's
// ReLU forward and threshold_backward gone), allocations 39 -> 38 (no pre-ReLU tensor); frozen
// 14 -> 15 launches (conv2's bias add counted), 20 -> 19 allocations. Then the first
// convolutions of both CNNs (9 taps) became cugrad's direct kernels (cuda/conv_direct.h)
// instead of cuDNN calls (uncounted): reference CNN 33 -> 36 launches (forward, parameter
// gradients and their finishing sums), 89 -> 88 allocations; frozen 20 -> 21, 40 -> 39;
// two-convolution CNN 23 -> 24, 38 -> 36; frozen 15 -> 15, 19 -> 18. Then conv2's bias moved
// into the max-pool (bias_max_pool2d): 24 -> 23 launches, frozen 15 -> 14.
// A change that adds launches or allocations to a training step fails here; if the addition is
// meant, raise the budget.
void expect_within(const Profile& p, std::uint64_t launches, std::uint64_t allocations) {
  EXPECT_LE(p.launches, launches);
  EXPECT_LE(p.call("cudaMallocFromPoolAsync"), allocations);
}

}  // namespace

TEST(StepProfileGPU, ReferenceCnn) {
  cg::manual_seed(0);
  nn::ReferenceCnn cnn(8);
  cnn->to(cg::Device::cuda(0));
  nn::Module& classifier = *cnn->f[nn::ReferenceCnnImpl::kClassifier];
  const cg::Shape input{4, 1, 28, 28};

  const Profile plain = profile_step(*cnn, classifier, input, 10, false);
  print("reference CNN, plain", plain);
  expect_no_host_wait(plain);
  // The first convolution (1 input channel, 3x3: 9 taps) runs cugrad's direct kernels, the
  // other four cuDNN.
  EXPECT_EQ(plain.call("cudnnConvolutionForward"), 4u);
  EXPECT_EQ(plain.kernel_launches("direct_conv_forward_kernel"), 1u);
  EXPECT_EQ(plain.call("cudnnConvolutionBackwardFilter"), 4u);
  EXPECT_EQ(plain.kernel_launches("direct_conv_params_kernel"), 1u);
  expect_within(plain, 36, 88);

  const Profile frozen = profile_step(*cnn, classifier, input, 10, true);
  print("reference CNN, backbone frozen", frozen);
  expect_no_host_wait(frozen);
  // Frozen: no convolution gradient at all, for the weights or the input.
  EXPECT_EQ(frozen.call("cudnnConvolutionBackwardData"), 0u);
  EXPECT_EQ(frozen.call("cudnnConvolutionBackwardFilter"), 0u);
  EXPECT_EQ(frozen.kernel_launches("direct_conv_params_kernel"), 0u);
  expect_within(frozen, 21, 39);
}

TEST(StepProfileGPU, TwoConvCnn) {
  cg::manual_seed(0);
  nn::TwoConvCnn net(10, 1, 12);
  net->to(cg::Device::cuda(0));
  const cg::Shape input{4, 1, 12, 12};

  const Profile plain = profile_step(*net, *net->fc2, input, 10, false);
  print("two-convolution CNN, plain", plain);
  expect_no_host_wait(plain);
  // conv1 (9 taps) runs cugrad's direct kernels: its forward with bias and ReLU, and its weight
  // and bias gradients through the ReLU's mask in one pass (conv1's input needs no gradient, so
  // the masked gradient is never written); conv2 runs cuDNN (one data gradient, conv2's).
  EXPECT_EQ(plain.call("cudnnConvolutionForward"), 1u);
  EXPECT_EQ(plain.kernel_launches("direct_conv_forward_kernel"), 1u);
  EXPECT_EQ(plain.call("cudnnConvolutionBackwardData"), 1u);
  EXPECT_EQ(plain.call("cudnnConvolutionBackwardFilter"), 1u);
  EXPECT_EQ(plain.kernel_launches("direct_conv_params_kernel"), 1u);
  // Dropout: one launch forward and one backward each (its composite took five and one).
  EXPECT_EQ(plain.kernel_launches("dropout_forward_kernel"), 2u);
  EXPECT_EQ(plain.kernel_launches("dropout_backward_kernel"), 2u);
  // conv2's bias gradient: cugrad's channel sums, one launch at these shapes; its bias add is
  // inside the max-pool (bias_max_pool2d): no pass of its own.
  EXPECT_EQ(plain.kernel_launches("channel_sum_kernel"), 1u);
  EXPECT_EQ(plain.call("cudnnConvolutionBackwardBias"), 0u);
  EXPECT_EQ(plain.kernel_launches("channel_bias_kernel"), 0u);
  EXPECT_EQ(plain.call("cudnnAddTensor"), 0u);
  expect_within(plain, 23, 36);

  const Profile frozen = profile_step(*net, *net->fc2, input, 10, true);
  print("two-convolution CNN, backbone frozen", frozen);
  expect_no_host_wait(frozen);
  EXPECT_EQ(frozen.call("cudnnConvolutionBackwardData"), 0u);
  EXPECT_EQ(frozen.call("cudnnConvolutionBackwardFilter"), 0u);
  expect_within(frozen, 14, 18);
}

TEST(StepProfileGPU, ResNet18) {
  cg::manual_seed(0);
  nn::ResNet resnet = nn::resnet18(10, 3);
  resnet->to(cg::Device::cuda(0));
  const cg::Shape input{2, 3, 32, 32};

  const Profile plain = profile_step(*resnet, *resnet->fc, input, 10, false);
  print("ResNet-18, plain", plain);
  expect_no_host_wait(plain);
  EXPECT_EQ(plain.call("cudnnConvolutionForward"), 20u);  // 17 3x3/7x7 + 3 downsample 1x1
  expect_within(plain, 123, 332);

  const Profile frozen = profile_step(*resnet, *resnet->fc, input, 10, true);
  print("ResNet-18, backbone frozen", frozen);
  expect_no_host_wait(frozen);
  EXPECT_EQ(frozen.call("cudnnConvolutionBackwardData"), 0u);
  EXPECT_EQ(frozen.call("cudnnConvolutionBackwardFilter"), 0u);
  expect_within(frozen, 65, 145);
}
