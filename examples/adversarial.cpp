// adversarial: loads a checkpoint from `train` and attacks it on the GPU with FGSM (a list of
// epsilons) and PGD (steps, step size, epsilon), both through autograd::grad with respect to
// the input images. Prints accuracy under attack per epsilon, writes CSV and a PNG grid of
// original, perturbation and adversarial images with their predicted labels.
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <sstream>

#include "examples/common/csv.h"
#include "examples/common/plot.h"
#include "examples/common/png.h"
#include "examples/common/progress.h"
#include "examples/recipe.h"

namespace cg = cugrad;
namespace ex = cugrad::examples;
namespace F = cugrad::nn::functional;

namespace {

// Inputs are normalized, x = (pixel - mean) / std: an epsilon in pixel units is epsilon / std
// in input units, and pixels stay in [0, 1].
constexpr double kMean = 0.2860, kStd = 0.3530;
constexpr double kLo = (0.0 - kMean) / kStd, kHi = (1.0 - kMean) / kStd;

cg::Tensor input_gradient(cg::nn::Module& model, const cg::Tensor& x, const cg::Tensor& y) {
  cg::Tensor xr = x.detach().requires_grad_();
  const cg::Tensor loss = F::cross_entropy(model(xr), y, {.reduction = cg::nn::Reduction::Sum});
  return cg::autograd::grad({loss}, {xr})[0];
}

// One signed-gradient step of size `eps` pixels (FGSM).
cg::Tensor fgsm(cg::nn::Module& model, const cg::Tensor& x, const cg::Tensor& y, double eps) {
  const cg::Tensor g = input_gradient(model, x, y);
  cg::NoGradGuard ng;
  return (x + g.sign() * (eps / kStd)).clamp(kLo, kHi);
}

// Projected gradient descent: `steps` signed steps of `alpha` pixels, projected back into the
// L-inf ball of `eps` pixels around x and into the pixel range after each.
cg::Tensor pgd(cg::nn::Module& model, const cg::Tensor& x, const cg::Tensor& y, double eps, double alpha, int steps,
               bool random_start) {
  cg::Tensor lo, hi, adv;
  {
    cg::NoGradGuard ng;
    lo = x - eps / kStd;
    hi = x + eps / kStd;
    adv = random_start ? (x + (cg::rand_like(x) * 2.0 - 1.0) * (eps / kStd)).clamp(kLo, kHi) : x;
  }
  for (int s = 0; s < steps; ++s) {
    const cg::Tensor g = input_gradient(model, adv, y);
    cg::NoGradGuard ng;
    adv = cg::minimum(cg::maximum(adv + g.sign() * (alpha / kStd), lo), hi).clamp(kLo, kHi);
  }
  return adv;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"FGSM and PGD attacks on a trained Fashion-MNIST model, on the GPU, through input gradients."};
  ex::CommonFlags flags;
  std::string checkpoint;
  std::int64_t width = 64, images = 2000, batch_size = 500;
  std::vector<double> fgsm_eps = {0.01, 0.03, 0.05, 0.1, 0.2};
  double pgd_eps = 0.1, pgd_alpha = 0.01;
  int pgd_steps = 20;
  bool random_start = false;
  ex::add_common_flags(app, flags);
  app.add_option("--checkpoint", checkpoint, "model saved by train (default <out>/fashion_cnn.safetensors)");
  app.add_option("--width", width, "width of the checkpoint's network")->capture_default_str();
  app.add_option("--images", images, "test images to attack")->capture_default_str();
  app.add_option("--batch-size", batch_size, "images per attack batch")->capture_default_str();
  app.add_option("--fgsm-eps", fgsm_eps, "FGSM epsilons, in pixel units (pixels are in [0, 1])")->capture_default_str();
  app.add_option("--pgd-eps", pgd_eps, "PGD epsilon (L-inf, pixel units)")->capture_default_str();
  app.add_option("--pgd-alpha", pgd_alpha, "PGD step size (pixel units)")->capture_default_str();
  app.add_option("--pgd-steps", pgd_steps, "PGD steps")->capture_default_str();
  app.add_flag("--pgd-random-start", random_start, "start PGD at a random point of the epsilon ball");
  CLI11_PARSE(app, argc, argv);
  if (const int status = ex::missing_data_status("adversarial", flags.data))
    return status;  // 77: a skip for CTest

  try {
    const cg::Device dev = ex::pick_device(flags.device);
    ex::ensure_dir(flags.out);
    if (checkpoint.empty()) checkpoint = flags.out + "/fashion_cnn.safetensors";
    cg::manual_seed(flags.seed);
    cg::nn::ReferenceCnn model(width);
    model->load_state_dict(cg::io::load_safetensors(checkpoint));
    model->to(dev);
    model->eval();
    model->freeze();  // only input gradients are wanted: no weight gradient is computed

    auto test_set = ex::load_fashion_mnist(flags.data, cg::data::Split::test);
    ex::Recipe r;
    r.batch_size = batch_size;
    r.max_test = images;
    cg::data::DataLoader test(test_set, ex::loader_options(r, dev, flags.seed, false));
    std::vector<cg::data::Batch> batches;
    for (auto& b : test) batches.push_back(b);
    const std::int64_t n = test.size();
    std::printf("adversarial: %s on %s, %lld test images\n", checkpoint.c_str(), dev.str().c_str(),
                static_cast<long long>(n));

    ex::CsvWriter csv(flags.out + "/adversarial.csv", {"attack", "epsilon", "steps", "accuracy", "seconds"});
    auto run = [&](const std::string& name, double eps, int steps,
                   const std::function<cg::Tensor(const cg::Tensor&, const cg::Tensor&)>& attack) {
      std::ostringstream label;
      label << name << " eps " << eps;
      ex::ProgressBar bar(static_cast<std::int64_t>(batches.size()), label.str());
      cg::synchronize();
      const auto t0 = std::chrono::steady_clock::now();
      ex::Metrics m;  // loss and accuracy on the attacked images
      std::int64_t done = 0;
      for (const auto& b : batches) {
        const cg::Tensor adv = attack(b.x, b.y);
        cg::NoGradGuard ng;
        const cg::Tensor logits = model(adv);
        m.add(F::cross_entropy(logits, b.y), logits, b.y);
        // One read per batch (a few per run): the bar shows measured values, and the GPU idles
        // only while the host issues the next batch's first kernels.
        bar.update(++done, ex::bar_metrics(m, m.count, t0));
      }
      const double acc = m.accuracy();  // waits for the last batch
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      bar.finish();
      std::printf("  %-6s eps %.3f%s: accuracy %6.2f%%  (%.3f s)\n", name.c_str(), eps,
                  steps > 1 ? (" steps " + std::to_string(steps)).c_str() : "", 100 * acc, secs);
      csv.row({name, std::to_string(eps), std::to_string(steps), std::to_string(acc), std::to_string(secs)});
    };
    run("clean", 0.0, 0, [](const cg::Tensor& x, const cg::Tensor&) { return x; });
    for (double eps : fgsm_eps)
      run("FGSM", eps, 1, [&](const cg::Tensor& x, const cg::Tensor& y) { return fgsm(*model, x, y, eps); });
    run("PGD", pgd_eps, pgd_steps, [&](const cg::Tensor& x, const cg::Tensor& y) {
      return pgd(*model, x, y, pgd_eps, pgd_alpha, pgd_steps, random_start);
    });

    // The grid: 8 images, each as original / perturbation / adversarial (FGSM at pgd_eps).
    const std::int64_t k = std::min<std::int64_t>(8, batches.front().x.size(0));
    const cg::Tensor x = batches.front().x.narrow(0, 0, k), y = batches.front().y.narrow(0, 0, k);
    const cg::Tensor adv = fgsm(*model, x, y, pgd_eps);
    cg::Tensor pred_clean, pred_adv;
    {
      cg::NoGradGuard ng;
      pred_clean = model(x).argmax(1).cpu();
      pred_adv = model(adv).argmax(1).cpu();
    }
    const auto& names = cg::data::FashionMnist::class_names();
    const std::vector<float> px = ((x * kStd) + kMean).cpu().to_vector<float>();
    const std::vector<float> pa = ((adv * kStd) + kMean).cpu().to_vector<float>();
    const auto yc = pred_clean.to_vector<std::int64_t>(), ya = pred_adv.to_vector<std::int64_t>();
    std::vector<std::vector<ex::GridCell>> rows(3);
    for (std::int64_t i = 0; i < k; ++i) {
      std::vector<float> o(px.begin() + i * 784, px.begin() + (i + 1) * 784);
      std::vector<float> a(pa.begin() + i * 784, pa.begin() + (i + 1) * 784);
      std::vector<float> d(784);
      for (int j = 0; j < 784; ++j) d[j] = a[j] - o[j];
      rows[0].push_back({28, 28, o, 0.0f, 1.0f, names[yc[i]]});
      rows[1].push_back({28, 28, d, static_cast<float>(-pgd_eps), static_cast<float>(pgd_eps), "delta"});
      rows[2].push_back({28, 28, a, 0.0f, 1.0f, names[ya[i]]});
    }
    ex::write_png(ex::image_grid(rows, 4), flags.out + "/adversarial_grid.png");
    std::printf("adversarial: wrote %s/adversarial.csv and adversarial_grid.png\n", flags.out.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "adversarial: %s\n", e.what());
    return 2;
  }
  return 0;
}
