// What the example programs share: command-line flags, device choice, Fashion-MNIST loading,
// DESIGN.md's reference training recipe (model, loaders, SGD Nesterov + OneCycle, label
// smoothing), a training epoch with progress and metrics, and evaluation.
#pragma once

#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cugrad/cugrad.h"
#include "cugrad/data.h"
#include "cugrad/nn/models.h"
#include "examples/common/progress.h"

namespace cugrad::examples {

/// Flags every example takes.
struct CommonFlags {
  std::string data = data::FashionMnist::kDefaultRoot;
  std::string device = "auto";  // auto | cpu | cuda | cuda:N
  std::uint64_t seed = 0;
  std::string out = "out";  // folder for CSV, PNG and checkpoints
  // cuDNN's timed algorithm search (set_cudnn_benchmark): on for these fixed-shape programs.
  bool cudnn_benchmark = true;
  bool tf32 = false;  // TF32 tensor cores for cuDNN/cuBLAS float32 math (set_allow_tf32)
};
/// Adds --data, --device, --seed, --out, --cudnn-benchmark and --tf32; applies the last two
/// once parsing completes.
void add_common_flags(CLI::App& app, CommonFlags& flags);

/// "auto": the first GPU when one is visible, else the CPU.
Device pick_device(const std::string& name);

/// When Fashion-MNIST is not in `root`: says so (how to get it, naming `program`) and returns
/// 77, the exit status CTest reads as a skip; 0 when the data is there.
int missing_data_status(const std::string& program, const std::string& root);

/// Loads a Fashion-MNIST split, with an error that says how to get the data.
std::shared_ptr<data::FashionMnist> load_fashion_mnist(const std::string& root, data::Split split);

/// DESIGN.md's reference recipe, with the knobs the examples change.
struct Recipe {
  std::int64_t width = 64;     // the network's first width (64, 64, 128, 128, 256)
  int epochs = 5;
  std::int64_t batch_size = 256;
  double max_lr = 0.2;         // OneCycle: 25% warm-up, cosine, div 25, final div 1e4
  double pct_start = 0.25;
  double momentum = 0.9;       // Nesterov; OneCycle cycles it between 0.85 and 0.95
  double weight_decay = 5e-4;
  double label_smoothing = 0.1;
  bool flip = true;            // random horizontal flip of training images
  std::int64_t max_train = -1; // first N training images (after the class filter); -1: all
  std::int64_t max_test = -1;
  std::vector<std::int64_t> classes;  // keep these classes only (empty: all)
  std::int64_t label_offset = 0;      // subtracted from labels (classes 5-9 -> 0-4)
};
void add_recipe_flags(CLI::App& app, Recipe& recipe);

/// Normalization of the recipe: mean 0.2860, std 0.3530.
data::DataLoaderOptions loader_options(const Recipe& r, Device device, std::uint64_t seed, bool train);

struct EpochStats {
  double loss = 0;          // mean training loss over the epoch
  double accuracy = 0;      // training accuracy (of the batches as trained)
  double seconds = 0;       // wall time of the epoch, GPU work included
  std::uint64_t searches = 0;  // cuDNN timed searches during the epoch (new shapes)
  double search_seconds = 0;   // the part of `seconds` they took (cudnn_search_stats)
  double images_per_s = 0;
  std::int64_t images = 0;
};

/// A training step captured once into a CUDA graph and replayed for every full batch (train
/// --cuda-graph): the static tensors each batch is copied into and the step's outputs. The
/// caller keeps it across epochs; the optimizer must be capturable (optim.h), so that the
/// schedule's values reach the replays.
struct GraphedStep {
  static constexpr int kWarmupSteps =
      3;  // eager full-batch steps before the capture (cuDNN's search, buffers)
  CudaGraph graph;
  Tensor x, y, logits, loss;
  int eager_steps = 0;
  std::int64_t replays = 0;
};

/// Runs one epoch over `loader`: forward, label-smoothed cross-entropy, backward, optimizer
/// and scheduler steps. Reads losses back only every few batches (for the progress bar), so
/// the host runs ahead of the GPU. `label_offset` is subtracted from the labels. With `graphed`
/// (CUDA only), full batches after the warm-up run as replays of one captured step; a smaller
/// last batch runs eagerly.
EpochStats train_epoch(nn::Module& model, data::DataLoader& loader, optim::Optimizer& opt,
                       optim::LRScheduler* scheduler, const Recipe& recipe, const std::string& label,
                       GraphedStep* graphed = nullptr);

/// Accuracy and mean negative log-likelihood (cross-entropy without smoothing) of `model`
/// (put in eval mode, no grad) on `loader`; restores the mode after.
struct Evaluation {
  double accuracy = 0;
  double nll = 0;
};
Evaluation evaluate_full(nn::Module& model, data::DataLoader& loader, std::int64_t label_offset = 0);
/// The accuracy of evaluate_full.
double evaluate(nn::Module& model, data::DataLoader& loader, std::int64_t label_offset = 0);

/// Accumulates device-side counts without reading them back each batch.
struct Metrics {
  Tensor loss_sum, correct;
  std::int64_t count = 0;
  void add(const Tensor& loss_mean, const Tensor& logits, const Tensor& y);
  double mean_loss() const;
  double accuracy() const;
};

/// A progress bar's loss, accuracy (%) and images per second: `m`'s values (reading them waits
/// for the GPU) and `images` over the time since `start`.
ProgressMetrics bar_metrics(const Metrics& m, std::int64_t images,
                            std::chrono::steady_clock::time_point start);

/// Subtracts `offset` from int64 labels (no-op for 0).
Tensor shift_labels(const Tensor& y, std::int64_t offset);

/// Creates `path` (and parents); returns it.
std::string ensure_dir(const std::string& path);

}  // namespace cugrad::examples
