// The shared pieces of the example programs (see recipe.h).
#include "examples/recipe.h"

#include <chrono>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "examples/common/progress.h"

namespace cugrad::examples {

void add_common_flags(CLI::App& app, CommonFlags& f) {
  app.add_option("--data", f.data, "Fashion-MNIST folder (the *-ubyte.gz files)")->capture_default_str();
  app.add_option("--device", f.device, "auto, cpu, cuda or cuda:N")->capture_default_str();
  app.add_option("--seed", f.seed, "random seed (initialization, shuffling, augmentation)")->capture_default_str();
  app.add_option("--out", f.out, "folder for CSV metrics, PNG images and checkpoints")->capture_default_str();
  app.add_option("--cudnn-benchmark", f.cudnn_benchmark,
                 "time cuDNN's convolution algorithms once per shape and use the fastest (false: its heuristics)")
      ->capture_default_str();
  app.add_option("--tf32", f.tf32, "allow TF32 tensor cores in convolutions and matrix products (false: strict float32)")
      ->capture_default_str();
  app.parse_complete_callback([&f] {
    set_cudnn_benchmark(f.cudnn_benchmark);
    set_allow_tf32(f.tf32);
  });
}

void add_recipe_flags(CLI::App& app, Recipe& r) {
  app.add_option("--epochs", r.epochs, "training epochs")->capture_default_str();
  app.add_option("--batch-size", r.batch_size, "images per batch")->capture_default_str();
  app.add_option("--width", r.width, "width of the first convolutions (the network doubles it twice)")
      ->capture_default_str();
  app.add_option("--max-lr", r.max_lr, "OneCycle peak learning rate")->capture_default_str();
  app.add_option("--weight-decay", r.weight_decay, "SGD weight decay (L2, a Gaussian prior)")->capture_default_str();
  app.add_option("--label-smoothing", r.label_smoothing, "cross-entropy label smoothing")->capture_default_str();
  app.add_option("--max-train", r.max_train, "use only the first N training images (-1: all)")
      ->capture_default_str();
  app.add_option("--max-test", r.max_test, "use only the first N test images (-1: all)")->capture_default_str();
}

Device pick_device(const std::string& name) {
  if (name == "auto") return cuda_is_available() ? Device::cuda(0) : Device::cpu();
  if (name == "cpu") return Device::cpu();
  int index = 0;
  if (name == "cuda") {
    index = 0;
  } else if (name.rfind("cuda:", 0) == 0) {
    index = std::stoi(name.substr(5));
  } else {
    throw ValueError(detail::cat("--device: expected auto, cpu, cuda or cuda:N, got '", name, "'"));
  }
  const Device d = Device::cuda(index);
  check_device_available(d, "--device");
  return d;
}

int missing_data_status(const std::string& program, const std::string& root) {
  if (data::FashionMnist::available(root)) return 0;
  std::cerr << program << ": Fashion-MNIST is not in " << root
            << " (install Debian's dataset-fashion-mnist or pass --data)\n";
  return 77;
}

std::shared_ptr<data::FashionMnist> load_fashion_mnist(const std::string& root, data::Split split) {
  return std::make_shared<data::FashionMnist>(root, split);
}

data::DataLoaderOptions loader_options(const Recipe& r, Device device, std::uint64_t seed, bool train) {
  data::DataLoaderOptions o;
  o.batch_size = r.batch_size;
  o.shuffle = train;
  o.drop_last = false;
  o.seed = seed;
  o.prefetch = 4;
  o.device = device;
  o.random_horizontal_flip = train && r.flip;
  o.mean = {0.2860};
  o.stddev = {0.3530};
  o.classes = r.classes;
  o.max_samples = train ? r.max_train : r.max_test;
  return o;
}

Tensor shift_labels(const Tensor& y, std::int64_t offset) {
  return offset == 0 ? y : sub(y, static_cast<double>(offset));
}

void Metrics::add(const Tensor& loss_mean, const Tensor& logits, const Tensor& y) {
  NoGradGuard ng;
  const std::int64_t n = y.size(0);
  const Tensor l = loss_mean.detach() * static_cast<double>(n);
  const Tensor c = eq(logits.argmax(1), y).sum();  // int64
  loss_sum = loss_sum.defined() ? loss_sum + l : l;
  correct = correct.defined() ? correct + c : c;
  count += n;
}

ProgressMetrics bar_metrics(const Metrics& m, std::int64_t images,
                            std::chrono::steady_clock::time_point start) {
  const double loss = m.mean_loss(), acc = m.accuracy();  // wait for the GPU before reading the clock
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return {
      {"loss", loss}, {"acc", 100.0 * acc}, {"img/s", static_cast<double>(images) / std::max(secs, 1e-9)}};
}

double Metrics::mean_loss() const { return count ? loss_sum.item<double>() / static_cast<double>(count) : 0.0; }
double Metrics::accuracy() const {
  return count ? static_cast<double>(correct.item<std::int64_t>()) / static_cast<double>(count) : 0.0;
}

EpochStats train_epoch(nn::Module& model, data::DataLoader& loader, optim::Optimizer& opt,
                       optim::LRScheduler* scheduler, const Recipe& recipe, const std::string& label,
                       GraphedStep* graphed) {
  using clock = std::chrono::steady_clock;
  model.train();
  Metrics m;
  ProgressBar bar(loader.num_batches(), label);
  const CudnnSearchStats searched_before = cudnn_search_stats();
  const auto start = clock::now();
  std::int64_t step = 0;
  // Read the running metrics back only this often: each read waits for the GPU.
  const std::int64_t report_every = std::max<std::int64_t>(1, loader.num_batches() / 10);
  const auto forward_backward = [&](const Tensor& x, const Tensor& y, Tensor& logits, Tensor& loss) {
    logits = model(x);
    loss = nn::functional::cross_entropy(logits, y, {.label_smoothing = recipe.label_smoothing});
    opt.zero_grad();
    loss.backward();
    opt.step();
  };
  for (auto& [x, y_raw] : loader) {
    Tensor y = shift_labels(y_raw, recipe.label_offset);
    Tensor logits, loss;
    const bool replayable = graphed != nullptr && x.is_cuda() && x.size(0) == recipe.batch_size;
    if (replayable && !graphed->graph.captured() && graphed->eager_steps >= GraphedStep::kWarmupSteps) {
      graphed->x = x.clone();
      graphed->y = y.clone();
      capture(graphed->graph, Stream::create(x.device()),
              [&] { forward_backward(graphed->x, graphed->y, graphed->logits, graphed->loss); });
    }
    if (replayable && graphed->graph.captured()) {
      graphed->x.copy_(x);
      graphed->y.copy_(y);
      graphed->graph.replay();
      ++graphed->replays;
      logits = graphed->logits;
      loss = graphed->loss;
      y = graphed->y;
    } else {
      forward_backward(x, y, logits, loss);
      if (replayable) ++graphed->eager_steps;
    }
    if (scheduler) scheduler->step();
    m.add(loss, logits, y);
    ++step;
    if (step % report_every == 0 || step == loader.num_batches()) {
      ProgressMetrics shown = bar_metrics(m, m.count, start);
      shown.emplace_back("lr", opt.lr());
      bar.update(step, shown);
    }
  }
  EpochStats s;
  s.loss = m.mean_loss();  // waits for the GPU: the epoch's time includes all its work
  s.accuracy = m.accuracy();
  s.seconds = std::chrono::duration<double>(clock::now() - start).count();
  const CudnnSearchStats searched_after = cudnn_search_stats();
  s.searches = searched_after.searches - searched_before.searches;
  s.search_seconds = searched_after.seconds - searched_before.seconds;
  s.images = m.count;
  s.images_per_s = static_cast<double>(m.count) / std::max(s.seconds, 1e-9);
  bar.finish();
  return s;
}

Evaluation evaluate_full(nn::Module& model, data::DataLoader& loader, std::int64_t label_offset) {
  const bool was_training = model.is_training();
  model.eval();
  NoGradGuard ng;
  Metrics m;
  for (auto& [x, y] : loader) {
    const Tensor yy = shift_labels(y, label_offset);
    const Tensor logits = model(x);
    m.add(nn::functional::cross_entropy(logits, yy), logits, yy);
  }
  model.train(was_training);
  return {m.accuracy(), m.mean_loss()};
}

double evaluate(nn::Module& model, data::DataLoader& loader, std::int64_t label_offset) {
  return evaluate_full(model, loader, label_offset).accuracy;
}

std::string ensure_dir(const std::string& path) {
  std::filesystem::create_directories(path);
  return path;
}

}  // namespace cugrad::examples
