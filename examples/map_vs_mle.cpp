// map_vs_mle: maximum likelihood versus maximum a posteriori on a small training set. Weight
// decay λ in SGD is the gradient of the negative log of a Gaussian prior on the weights
// (λ/2·|w|² per example, a prior N(0, 1/(λ·N)) over N examples), so training with it finds the
// MAP estimate and without it the MLE. Trains both on the same ~1000 images over several
// seeds and prints train and test accuracy side by side.
#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdio>

#include "examples/common/csv.h"
#include "examples/recipe.h"

namespace cg = cugrad;
namespace ex = cugrad::examples;
namespace nn = cugrad::nn;

namespace {

nn::Sequential make_model(const std::string& kind, std::int64_t width) {
  if (kind == "cnn") return nn::Sequential({nn::ReferenceCnn(width)});
  return nn::Sequential({nn::Flatten(), nn::Linear(784, 512), nn::ReLU(), nn::Linear(512, 512), nn::ReLU(),
                         nn::Linear(512, 10)});
}

struct Result {
  double train_acc, test_acc;
};

Result run(const std::string& kind, std::int64_t width, double weight_decay, int epochs, double lr,
           std::uint64_t seed, const std::shared_ptr<cg::data::FashionMnist>& train_set,
           const std::shared_ptr<cg::data::FashionMnist>& test_set, std::int64_t images, cg::Device dev) {
  cg::manual_seed(seed);
  nn::Sequential model = make_model(kind, width);
  model->to(dev);
  ex::Recipe r;
  r.batch_size = 100;
  r.max_train = images;
  r.flip = false;  // no augmentation: the prior is the only regularizer
  r.label_smoothing = 0;
  cg::data::DataLoader train(train_set, ex::loader_options(r, dev, seed, true));
  cg::data::DataLoaderOptions eval_opts = ex::loader_options(r, dev, seed, false);
  eval_opts.max_samples = images;  // train accuracy: the same images, unshuffled
  cg::data::DataLoader train_eval(train_set, eval_opts);
  cg::data::DataLoader test(test_set, ex::loader_options(r, dev, seed, false));
  cg::optim::SGD opt(model->parameters(), {.lr = lr, .momentum = 0.9, .weight_decay = weight_decay});
  cg::optim::CosineAnnealingLR sched(opt, epochs * train.num_batches());
  for (int e = 0; e < epochs; ++e) {
    model->train();
    for (auto& [x, y] : train) {
      const cg::Tensor loss = nn::functional::cross_entropy(model(x), y);
      opt.zero_grad();
      loss.backward();
      opt.step();
      sched.step();
    }
  }
  return {ex::evaluate(*model, train_eval), ex::evaluate(*model, test)};
}

std::pair<double, double> mean_std(const std::vector<double>& v) {
  double m = 0, s = 0;
  for (double x : v) m += x;
  m /= static_cast<double>(v.size());
  for (double x : v) s += (x - m) * (x - m);
  return {m, v.size() > 1 ? std::sqrt(s / static_cast<double>(v.size() - 1)) : 0.0};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"MLE (no weight decay) versus MAP (weight decay = a Gaussian prior) on a small training set."};
  ex::CommonFlags flags;
  std::string kind = "mlp";
  std::int64_t width = 16, images = 1000;
  int seeds = 3, epochs = 60;
  double weight_decay = 5e-3, lr = 0.05;
  ex::add_common_flags(app, flags);
  app.add_option("--model", kind, "mlp (784-512-512-10) or cnn (the reference CNN)")
      ->check(CLI::IsMember({"mlp", "cnn"}))
      ->capture_default_str();
  app.add_option("--width", width, "width of the CNN")->capture_default_str();
  app.add_option("--images", images, "training images (the first N)")->capture_default_str();
  app.add_option("--seeds", seeds, "runs per setting (different initializations and orders)")->capture_default_str();
  app.add_option("--epochs", epochs, "epochs per run")->capture_default_str();
  app.add_option("--weight-decay", weight_decay, "λ of the MAP runs")->capture_default_str();
  app.add_option("--lr", lr, "SGD learning rate (momentum 0.9, cosine schedule)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  try {
    const cg::Device dev = ex::pick_device(flags.device);
    ex::ensure_dir(flags.out);
    auto train_set = ex::load_fashion_mnist(flags.data, cg::data::Split::train);
    auto test_set = ex::load_fashion_mnist(flags.data, cg::data::Split::test);
    std::printf("map_vs_mle: %s on the first %lld training images, %d epochs, %d seeds, on %s; test on %lld images\n",
                kind.c_str(), static_cast<long long>(images), epochs, seeds, dev.str().c_str(),
                static_cast<long long>(test_set->size()));
    ex::CsvWriter csv(flags.out + "/map_vs_mle.csv", {"estimate", "weight_decay", "seed", "train_accuracy",
                                                       "test_accuracy"});
    std::vector<double> mle_train, mle_test, map_train, map_test;
    std::printf("  %-4s %-12s %-12s | %-12s %-12s\n", "seed", "MLE train", "MLE test", "MAP train", "MAP test");
    for (int s = 0; s < seeds; ++s) {
      const auto seed = static_cast<std::uint64_t>(flags.seed + static_cast<std::uint64_t>(s));
      const Result mle = run(kind, width, 0.0, epochs, lr, seed, train_set, test_set, images, dev);
      const Result map = run(kind, width, weight_decay, epochs, lr, seed, train_set, test_set, images, dev);
      std::printf("  %-4d %10.2f%%  %10.2f%%  | %10.2f%%  %10.2f%%\n", s, 100 * mle.train_acc, 100 * mle.test_acc,
                  100 * map.train_acc, 100 * map.test_acc);
      csv.row({"MLE", "0", std::to_string(seed), std::to_string(mle.train_acc), std::to_string(mle.test_acc)});
      csv.row({"MAP", std::to_string(weight_decay), std::to_string(seed), std::to_string(map.train_acc),
               std::to_string(map.test_acc)});
      mle_train.push_back(mle.train_acc);
      mle_test.push_back(mle.test_acc);
      map_train.push_back(map.train_acc);
      map_test.push_back(map.test_acc);
    }
    const auto [a, as] = mean_std(mle_train);
    const auto [b, bs] = mean_std(mle_test);
    const auto [c, cs] = mean_std(map_train);
    const auto [d, ds] = mean_std(map_test);
    std::printf("  mean  %6.2f±%.2f%%  %6.2f±%.2f%% | %6.2f±%.2f%%  %6.2f±%.2f%%\n", 100 * a, 100 * as, 100 * b,
                100 * bs, 100 * c, 100 * cs, 100 * d, 100 * ds);
    std::printf("map_vs_mle: the prior (weight decay %g) changes test accuracy by %+.2f points on average "
                "(train accuracy %+.2f points)\n",
                weight_decay, 100 * (d - b), 100 * (c - a));
    std::printf("map_vs_mle: wrote %s/map_vs_mle.csv\n", flags.out.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "map_vs_mle: %s\n", e.what());
    return 2;
  }
  return 0;
}
