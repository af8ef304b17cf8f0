// map_vs_mle: maximum likelihood versus maximum a posteriori on a small training set. Weight
// decay λ in SGD is the gradient of the negative log of a Gaussian prior on the weights
// (λ/2·|w|² per example, a prior N(0, 1/(λ·N)) over N examples), so training with it finds the
// MAP estimate and without it the MLE. Trains both on the same ~1000 images over several
// seeds and prints train and test accuracy and the test negative log-likelihood (mean
// cross-entropy) side by side. On small data the prior's gain shows most in the likelihood:
// the MLE fits the training set perfectly and becomes overconfident on test images.
#include <CLI/CLI.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>

#include "examples/common/csv.h"
#include "examples/common/progress.h"
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
  double train_acc, test_acc, test_nll;
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
  // One bar per run, one step per epoch; the epoch's loss and accuracy are read once at its end.
  ex::ProgressBar bar(epochs, (weight_decay > 0 ? "MAP seed " : "MLE seed ") + std::to_string(seed));
  const auto t0 = std::chrono::steady_clock::now();
  std::int64_t images_seen = 0;
  for (int e = 0; e < epochs; ++e) {
    model->train();
    ex::Metrics m;
    for (auto& [x, y] : train) {
      const cg::Tensor logits = model(x);
      const cg::Tensor loss = nn::functional::cross_entropy(logits, y);
      opt.zero_grad();
      loss.backward();
      opt.step();
      sched.step();
      m.add(loss, logits, y);
    }
    images_seen += m.count;
    bar.update(e + 1, ex::bar_metrics(m, images_seen, t0));  // waits for the epoch
  }
  bar.finish();
  const ex::Evaluation t = ex::evaluate_full(*model, test);
  return {ex::evaluate(*model, train_eval), t.accuracy, t.nll};
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
  double weight_decay = 1e-2, lr = 0.05;
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
  if (const int status = ex::missing_data_status("map_vs_mle", flags.data))
    return status;  // 77: a skip for CTest

  try {
    const cg::Device dev = ex::pick_device(flags.device);
    ex::ensure_dir(flags.out);
    auto train_set = ex::load_fashion_mnist(flags.data, cg::data::Split::train);
    auto test_set = ex::load_fashion_mnist(flags.data, cg::data::Split::test);
    std::printf("map_vs_mle: %s on the first %lld training images, %d epochs, %d seeds, on %s; test on %lld images\n",
                kind.c_str(), static_cast<long long>(images), epochs, seeds, dev.str().c_str(),
                static_cast<long long>(test_set->size()));
    ex::CsvWriter csv(flags.out + "/map_vs_mle.csv", {"estimate", "weight_decay", "seed", "train_accuracy",
                                                       "test_accuracy", "test_nll"});
    std::vector<double> v[6];  // MLE train, test, nll; MAP train, test, nll
    std::printf("  %-4s | %-10s %-10s %-9s | %-10s %-10s %-9s\n", "seed", "MLE train", "MLE test", "test NLL",
                "MAP train", "MAP test", "test NLL");
    for (int s = 0; s < seeds; ++s) {
      const auto seed = static_cast<std::uint64_t>(flags.seed + static_cast<std::uint64_t>(s));
      const Result mle = run(kind, width, 0.0, epochs, lr, seed, train_set, test_set, images, dev);
      const Result map = run(kind, width, weight_decay, epochs, lr, seed, train_set, test_set, images, dev);
      std::printf("  %-4d | %9.2f%% %9.2f%% %9.4f | %9.2f%% %9.2f%% %9.4f\n", s, 100 * mle.train_acc,
                  100 * mle.test_acc, mle.test_nll, 100 * map.train_acc, 100 * map.test_acc, map.test_nll);
      csv.row({"MLE", "0", std::to_string(seed), std::to_string(mle.train_acc), std::to_string(mle.test_acc),
               std::to_string(mle.test_nll)});
      csv.row({"MAP", std::to_string(weight_decay), std::to_string(seed), std::to_string(map.train_acc),
               std::to_string(map.test_acc), std::to_string(map.test_nll)});
      const double values[6] = {mle.train_acc, mle.test_acc, mle.test_nll, map.train_acc, map.test_acc, map.test_nll};
      for (int k = 0; k < 6; ++k) v[k].push_back(values[k]);
    }
    std::pair<double, double> ms[6];
    for (int k = 0; k < 6; ++k) ms[k] = mean_std(v[k]);
    std::printf("  mean | %6.2f±%.2f %6.2f±%.2f %.4f±%.4f | %6.2f±%.2f %6.2f±%.2f %.4f±%.4f\n", 100 * ms[0].first,
                100 * ms[0].second, 100 * ms[1].first, 100 * ms[1].second, ms[2].first, ms[2].second,
                100 * ms[3].first, 100 * ms[3].second, 100 * ms[4].first, 100 * ms[4].second, ms[5].first,
                ms[5].second);
    std::printf("map_vs_mle: with the prior (weight decay %g) test accuracy changes by %+.2f points and the test "
                "negative log-likelihood by %+.4f (%s)\n",
                weight_decay, 100 * (ms[4].first - ms[1].first), ms[5].first - ms[2].first,
                ms[5].first < ms[2].first ? "MAP generalizes better in likelihood" : "no likelihood gain here");
    std::printf("map_vs_mle: wrote %s/map_vs_mle.csv\n", flags.out.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "map_vs_mle: %s\n", e.what());
    return 2;
  }
  return 0;
}
