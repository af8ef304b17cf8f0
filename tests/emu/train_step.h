// The training step that bench/train_step_bench times (forward, label-smoothed cross-entropy,
// backward, SGD Nesterov with weight decay), set up on the emulated GPU for the emulator's step
// measurements (step_profile_test.cpp: what a step asks of the GPU; host_overhead.cpp: what it
// costs the host): the model in training mode, optionally with its backbone frozen (only
// `classifier` trainable), one random batch, the optimizer over the trainable parameters.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "cugrad/cugrad.h"

namespace cugrad_emu {

class TrainStep {
 public:
  TrainStep(cugrad::nn::Module& model, cugrad::nn::Module& classifier, const cugrad::Shape& input,
            std::int64_t classes, bool frozen)
      : model_(model) {
    const cugrad::Device gpu = cugrad::Device::cuda(0);
    model.train();
    model.unfreeze();
    if (frozen) {
      model.freeze();
      classifier.unfreeze();
    }
    x_ = cugrad::randn(input, gpu);
    y_ = cugrad::randint(0, classes, {input[0]}, gpu);
    std::vector<cugrad::Tensor> trainable;
    for (const auto& p : model.parameters())
      if (p.requires_grad()) trainable.push_back(p);
    opt_.emplace(trainable,
                 cugrad::optim::SGDOptions{.lr = 0.01, .momentum = 0.9, .weight_decay = 5e-4, .nesterov = true});
  }
  TrainStep(const TrainStep&) = delete;
  TrainStep& operator=(const TrainStep&) = delete;
  ~TrainStep() { model_.unfreeze(); }

  void operator()() {
    const cugrad::Tensor loss =
        cugrad::nn::functional::cross_entropy(model_(x_), y_, {.label_smoothing = 0.1});
    opt_->zero_grad();
    loss.backward();
    opt_->step();
  }

 private:
  cugrad::nn::Module& model_;
  cugrad::Tensor x_, y_;
  std::optional<cugrad::optim::SGD> opt_;
};

}  // namespace cugrad_emu
