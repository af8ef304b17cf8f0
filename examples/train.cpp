// train: DESIGN.md's reference recipe on Fashion-MNIST (5 conv-BN-ReLU blocks, SGD Nesterov
// with weight decay, OneCycle, label smoothing 0.1). Prints per-epoch loss, accuracy and
// time, writes CSV metrics and a PNG plot, and saves a safetensors checkpoint.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>

#include "examples/common/csv.h"
#include "examples/common/plot.h"
#include "examples/common/png.h"
#include "examples/recipe.h"

namespace cg = cugrad;
namespace ex = cugrad::examples;

int main(int argc, char** argv) {
  CLI::App app{"Trains the reference CNN on Fashion-MNIST (DESIGN.md's recipe) and saves a checkpoint."};
  ex::CommonFlags flags;
  ex::Recipe recipe;
  std::string checkpoint;
  double min_accuracy = 0;
  ex::add_common_flags(app, flags);
  ex::add_recipe_flags(app, recipe);
  app.add_option("--checkpoint", checkpoint, "where to save the trained model (default <out>/fashion_cnn.safetensors)");
  bool cuda_graph = false;
  app.add_flag("--cuda-graph", cuda_graph,
               "capture one training step into a CUDA graph and replay it for every full batch (CUDA only; "
               "the optimizer is made capturable so the OneCycle schedule reaches the replays)");
  app.add_option("--min-accuracy", min_accuracy, "exit with status 1 when the final test accuracy is below this")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  if (const int status = ex::missing_data_status("train", flags.data)) return status;  // 77: a skip for CTest
  try {
    const cg::Device dev = ex::pick_device(flags.device);
    ex::ensure_dir(flags.out);
    if (checkpoint.empty()) checkpoint = flags.out + "/fashion_cnn.safetensors";
    cg::manual_seed(flags.seed);
    auto train_set = ex::load_fashion_mnist(flags.data, cg::data::Split::train);
    auto test_set = ex::load_fashion_mnist(flags.data, cg::data::Split::test);
    cg::data::DataLoader train(train_set, ex::loader_options(recipe, dev, flags.seed, true));
    cg::data::DataLoader test(test_set, ex::loader_options(recipe, dev, flags.seed, false));

    cg::nn::ReferenceCnn model(recipe.width);
    model->to(dev);
    if (cuda_graph && !dev.is_cuda())
      throw cg::ValueError("--cuda-graph needs a CUDA device (got " + dev.str() + ")");
    cg::optim::SGD opt(model->parameters(), {.lr = recipe.max_lr / 25,
                                             .momentum = recipe.momentum,
                                             .weight_decay = recipe.weight_decay,
                                             .nesterov = true,
                                             .capturable = cuda_graph});
    ex::GraphedStep graphed;
    cg::optim::OneCycleLR sched(opt, recipe.max_lr, recipe.epochs * train.num_batches(),
                                {.pct_start = recipe.pct_start});
    // cuDNN and TF32 apply on CUDA only; on the CPU the convolutions are im2col + BLAS in float32.
    const std::string math = dev.is_cuda() ? std::string("convolution algorithms from cuDNN's ") +
                                                 (cg::cudnn_benchmark() ? "timed search" : "heuristics") +
                                                 ", " + (cg::allow_tf32() ? "TF32 allowed" : "strict float32")
                                           : std::string("CPU convolutions (im2col + BLAS), float32");
    std::printf(
        "train: %lld training and %lld test images on %s; width %lld (%lld parameters), %d epochs, batch "
        "%lld; "
        "%s\n",
        static_cast<long long>(train.size()), static_cast<long long>(test.size()), dev.str().c_str(),
        static_cast<long long>(recipe.width), static_cast<long long>(model->num_parameters()), recipe.epochs,
        static_cast<long long>(recipe.batch_size), math.c_str());

    ex::CsvWriter csv(flags.out + "/train_metrics.csv",
                      {"epoch", "train_loss", "train_accuracy", "test_accuracy", "seconds", "images_per_second"});
    std::vector<double> epochs, losses, train_acc, test_acc;
    double total_seconds = 0, final_accuracy = 0;
    for (int e = 0; e < recipe.epochs; ++e) {
      const ex::EpochStats s =
          ex::train_epoch(*model, train, opt, &sched, recipe, "epoch " + std::to_string(e + 1),
                          cuda_graph ? &graphed : nullptr);
      const double acc = ex::evaluate(*model, test);
      total_seconds += s.seconds;
      final_accuracy = acc;
      std::printf("epoch %d: loss %.4f, train accuracy %.2f%%, test accuracy %.2f%%, %.2f s (%.0f images/s)",
                  e + 1, s.loss, 100 * s.accuracy, 100 * acc, s.seconds, s.images_per_s);
      if (s.searches > 0)
        std::printf(", of which cuDNN's timed search %.2f s (%llu searches)", s.search_seconds,
                    static_cast<unsigned long long>(s.searches));
      std::printf("\n");
      csv.row({std::to_string(e + 1), std::to_string(s.loss), std::to_string(s.accuracy), std::to_string(acc),
               std::to_string(s.seconds), std::to_string(s.images_per_s)});
      epochs.push_back(e + 1);
      losses.push_back(s.loss);
      train_acc.push_back(s.accuracy);
      test_acc.push_back(acc);
    }
    std::printf("train: test accuracy %.2f%% after %d epochs, %.2f s of training on %s\n", 100 * final_accuracy,
                recipe.epochs, total_seconds, dev.str().c_str());
    if (cuda_graph)
      std::printf("train: %lld steps replayed from one CUDA graph (%zu nodes), %d eager warm-up steps\n",
                  static_cast<long long>(graphed.replays), graphed.graph.node_count(), graphed.eager_steps);

    cg::io::save_safetensors(model->state_dict(), checkpoint);
    std::printf("train: saved %s\n", checkpoint.c_str());
    ex::PlotOptions loss_opts;
    loss_opts.title = "training loss";
    ex::write_png(ex::line_plot({{"train loss", epochs, losses}}, loss_opts), flags.out + "/train_loss.png");
    ex::PlotOptions acc_opts;
    acc_opts.title = "accuracy";
    ex::write_png(ex::line_plot({{"train", epochs, train_acc}, {"test", epochs, test_acc}}, acc_opts),
                  flags.out + "/train_accuracy.png");
    std::printf("train: wrote %s/train_metrics.csv, train_loss.png, train_accuracy.png\n", flags.out.c_str());
    if (final_accuracy < min_accuracy) {
      std::fprintf(stderr, "train: test accuracy %.4f is below --min-accuracy %.4f\n", final_accuracy, min_accuracy);
      return 1;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "train: %s\n", e.what());
    return 2;
  }
  return 0;
}
