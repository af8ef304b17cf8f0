// finetune: pre-trains the reference CNN on Fashion-MNIST classes 0-4, then freezes the
// backbone, replaces the classifier with a new one and trains it on classes 5-9. Reports the
// accuracy of each stage and the step-time speedup of the frozen run over fine-tuning the
// whole network, measured over the same number of steps.
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>

#include "examples/common/csv.h"
#include "examples/recipe.h"

namespace cg = cugrad;
namespace ex = cugrad::examples;

namespace {

// The pre-trained network's modules before the classifier, shared (not copied), plus `head`.
cg::nn::Sequential with_new_head(const cg::nn::ReferenceCnn& model, std::shared_ptr<cg::nn::Module> head) {
  std::vector<std::shared_ptr<cg::nn::Module>> layers;
  for (std::size_t i = 0; i < cg::nn::ReferenceCnnImpl::kClassifier; ++i) layers.push_back(model->f[i]);
  layers.push_back(std::move(head));
  return cg::nn::Sequential(layers);
}

// Milliseconds per training step over `steps` steps (after 3 warm-up steps), GPU work included.
double step_ms(cg::nn::Module& net, cg::data::DataLoader& loader, cg::optim::Optimizer& opt, std::int64_t offset,
               int steps) {
  std::vector<cg::data::Batch> batches;
  for (auto& b : loader) {
    batches.push_back(b);
    if (static_cast<int>(batches.size()) == 4) break;
  }
  auto one = [&](int i) {
    const auto& b = batches[static_cast<std::size_t>(i) % batches.size()];
    const cg::Tensor loss = cg::nn::functional::cross_entropy(net(b.x), ex::shift_labels(b.y, offset),
                                                              {.label_smoothing = 0.1});
    opt.zero_grad();
    loss.backward();
    opt.step();
  };
  for (int i = 0; i < 3; ++i) one(i);
  cg::synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < steps; ++i) one(i);
  cg::synchronize();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / steps;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Pre-trains on classes 0-4, then fine-tunes a new classifier on classes 5-9 with the backbone frozen."};
  ex::CommonFlags flags;
  ex::Recipe pre;
  int finetune_epochs = 2, timing_steps = 30;
  ex::add_common_flags(app, flags);
  ex::add_recipe_flags(app, pre);
  app.add_option("--finetune-epochs", finetune_epochs, "epochs of training the new classifier")->capture_default_str();
  app.add_option("--timing-steps", timing_steps, "steps timed for the frozen/unfrozen comparison")
      ->capture_default_str();
  pre.epochs = 3;
  CLI11_PARSE(app, argc, argv);
  if (const int status = ex::missing_data_status("finetune", flags.data))
    return status;  // 77: a skip for CTest

  try {
    const cg::Device dev = ex::pick_device(flags.device);
    ex::ensure_dir(flags.out);
    cg::manual_seed(flags.seed);
    auto train_set = ex::load_fashion_mnist(flags.data, cg::data::Split::train);
    auto test_set = ex::load_fashion_mnist(flags.data, cg::data::Split::test);

    // Stage 1: pre-train a 5-class network on classes 0-4.
    pre.classes = {0, 1, 2, 3, 4};
    cg::data::DataLoader pre_train(train_set, ex::loader_options(pre, dev, flags.seed, true));
    cg::data::DataLoader pre_test(test_set, ex::loader_options(pre, dev, flags.seed, false));
    cg::nn::ReferenceCnn model(pre.width, /*num_classes=*/5);
    model->to(dev);
    {
      cg::optim::SGD opt(model->parameters(), {.lr = pre.max_lr / 25, .momentum = pre.momentum,
                                               .weight_decay = pre.weight_decay, .nesterov = true});
      cg::optim::OneCycleLR sched(opt, pre.max_lr, pre.epochs * pre_train.num_batches(), {.pct_start = pre.pct_start});
      std::printf("finetune: pre-training on classes 0-4 (%lld images) on %s, %d epochs\n",
                  static_cast<long long>(pre_train.size()), dev.str().c_str(), pre.epochs);
      for (int e = 0; e < pre.epochs; ++e)
        ex::train_epoch(*model, pre_train, opt, &sched, pre, "pre-train " + std::to_string(e + 1));
    }
    const double pre_acc = ex::evaluate(*model, pre_test);
    std::printf("finetune: pre-trained accuracy on classes 0-4: %.2f%%\n", 100 * pre_acc);

    // Stage 2: freeze the backbone (eval mode: BatchNorm keeps its pre-trained statistics) and
    // train a new classifier on classes 5-9 (labels 5-9 become 0-4).
    ex::Recipe ft = pre;
    ft.classes = {5, 6, 7, 8, 9};
    ft.label_offset = 5;
    ft.epochs = finetune_epochs;
    cg::data::DataLoader ft_train(train_set, ex::loader_options(ft, dev, flags.seed + 1, true));
    cg::data::DataLoader ft_test(test_set, ex::loader_options(ft, dev, flags.seed, false));
    const double before = ex::evaluate(*model, ft_test, ft.label_offset);
    model->freeze();
    for (std::size_t i = 0; i < cg::nn::ReferenceCnnImpl::kClassifier; ++i) model->f[i]->eval();
    cg::nn::Linear head(4 * pre.width, 5);
    head->to(dev);
    cg::nn::Sequential net = with_new_head(model, head.ptr());
    // Keep the frozen backbone in eval mode while the head trains (train() is recursive).
    auto backbone_eval = [&] {
      for (std::size_t i = 0; i < cg::nn::ReferenceCnnImpl::kClassifier; ++i) net[i]->eval();
    };
    {
      cg::optim::SGD opt(head->parameters(), {.lr = ft.max_lr / 25, .momentum = ft.momentum,
                                              .weight_decay = ft.weight_decay, .nesterov = true});
      cg::optim::OneCycleLR sched(opt, ft.max_lr, ft.epochs * ft_train.num_batches(), {.pct_start = ft.pct_start});
      std::printf("finetune: training a new classifier on classes 5-9 (%lld images), backbone frozen: %lld of %lld "
                  "parameters trainable\n",
                  static_cast<long long>(ft_train.size()), static_cast<long long>(net->num_parameters(true)),
                  static_cast<long long>(net->num_parameters()));
      for (int e = 0; e < ft.epochs; ++e) {
        net->train();
        backbone_eval();
        ex::train_epoch(*net, ft_train, opt, &sched, ft, "fine-tune " + std::to_string(e + 1));
      }
    }
    const double ft_acc = ex::evaluate(*net, ft_test, ft.label_offset);
    std::printf("finetune: accuracy on classes 5-9: %.2f%% with the new classifier (the pre-trained head, blind to "
                "these classes: %.2f%%)\n",
                100 * ft_acc, 100 * before);

    // Step time: frozen backbone vs the whole network trainable, same batches, same steps.
    net->train();
    backbone_eval();
    cg::optim::SGD frozen_opt(head->parameters(), {.lr = 1e-3, .momentum = 0.9, .nesterov = true});
    const double frozen_ms = step_ms(*net, ft_train, frozen_opt, ft.label_offset, timing_steps);
    net->unfreeze();
    net->train();
    cg::optim::SGD full_opt(net->parameters(), {.lr = 1e-3, .momentum = 0.9, .nesterov = true});
    const double full_ms = step_ms(*net, ft_train, full_opt, ft.label_offset, timing_steps);
    std::printf("finetune: step time %.3f ms with the backbone frozen, %.3f ms training everything: %.2fx faster\n",
                frozen_ms, full_ms, full_ms / frozen_ms);

    ex::CsvWriter csv(flags.out + "/finetune.csv", {"stage", "accuracy", "step_ms"});
    csv.row({"pretrain_classes_0_4", std::to_string(pre_acc), ""});
    csv.row({"finetune_frozen_classes_5_9", std::to_string(ft_acc), std::to_string(frozen_ms)});
    csv.row({"train_all_step", "", std::to_string(full_ms)});
    std::printf("finetune: wrote %s/finetune.csv\n", flags.out.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "finetune: %s\n", e.what());
    return 2;
  }
  return 0;
}
