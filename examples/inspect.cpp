// inspect: trains the reference CNN briefly with forward and backward hooks on every layer
// that copy activations and gradients to the host through an inspect::Inspector (asynchronous,
// the GPU never waits), writes per-layer statistics (CSV) and histogram PNGs, uses
// inspect::summary for on-device statistics, and shows how BatchNorm's output differs between
// train mode (batch statistics) and eval mode (running statistics).
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <mutex>
#include <tuple>

#include "cugrad/nn/inspect_hooks.h"
#include "examples/common/csv.h"
#include "examples/common/plot.h"
#include "examples/common/png.h"
#include "examples/common/progress.h"
#include "examples/recipe.h"

namespace cg = cugrad;
namespace ex = cugrad::examples;
namespace F = cugrad::nn::functional;

namespace {

constexpr int kBins = 40;

struct LayerStats {
  std::int64_t step = 0;
  std::string module, phase;
  std::int64_t count = 0, nan_count = 0;
  double mean = 0, std = 0, min = 0, max = 0, zero_fraction = 0;
  std::vector<std::int64_t> histogram;
};

// Host-side statistics of one delivered tensor (runs on the Inspector's worker thread).
LayerStats host_stats(const cg::HostTensor& t, const cg::inspect::Tag& tag) {
  LayerStats s;
  s.step = tag.step;
  s.module = tag.name;
  s.phase = cg::inspect::phase_name(tag.phase);
  s.count = t.numel();
  const float* v = t.data<float>();
  double sum = 0, sq = 0, lo = std::numeric_limits<double>::infinity(), hi = -lo;
  std::int64_t zeros = 0, finite = 0;
  for (std::int64_t i = 0; i < s.count; ++i) {
    const double x = v[i];
    if (!std::isfinite(x)) {
      ++s.nan_count;
      continue;
    }
    ++finite;
    sum += x;
    sq += x * x;
    lo = std::min(lo, x);
    hi = std::max(hi, x);
    zeros += x == 0;
  }
  if (finite > 0) {
    s.mean = sum / static_cast<double>(finite);
    s.std = std::sqrt(std::max(0.0, sq / static_cast<double>(finite) - s.mean * s.mean));
    s.min = lo;
    s.max = hi;
    s.zero_fraction = static_cast<double>(zeros) / static_cast<double>(finite);
  }
  s.histogram.assign(kBins, 0);
  const double width = (s.max - s.min) > 0 ? (s.max - s.min) / kBins : 1.0;
  for (std::int64_t i = 0; i < s.count; ++i) {
    const double x = v[i];
    if (!std::isfinite(x)) continue;
    const int b = std::clamp(static_cast<int>((x - s.min) / width), 0, kBins - 1);
    ++s.histogram[static_cast<std::size_t>(b)];
  }
  return s;
}

std::string file_safe(std::string s) {
  for (char& c : s)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Trains briefly with hooks on every layer: activation and gradient statistics, histograms, "
               "and BatchNorm in train vs eval mode."};
  ex::CommonFlags flags;
  ex::Recipe recipe;
  int steps = 200, every = 50;
  recipe.width = 16;
  recipe.max_train = 10000;
  ex::add_common_flags(app, flags);
  ex::add_recipe_flags(app, recipe);
  app.add_option("--steps", steps, "training steps")->capture_default_str();
  app.add_option("--every", every, "record every layer's activations and gradients every N steps")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (const int status = ex::missing_data_status("inspect", flags.data))
    return status;  // 77: a skip for CTest

  try {
    const cg::Device dev = ex::pick_device(flags.device);
    const std::string out = ex::ensure_dir(flags.out + "/inspect");
    cg::manual_seed(flags.seed);
    auto train_set = ex::load_fashion_mnist(flags.data, cg::data::Split::train);
    cg::data::DataLoader loader(train_set, ex::loader_options(recipe, dev, flags.seed, true));
    cg::nn::ReferenceCnn model(recipe.width);
    model->to(dev);
    cg::optim::SGD opt(model->parameters(), {.lr = recipe.max_lr / 25, .momentum = recipe.momentum,
                                             .weight_decay = recipe.weight_decay, .nesterov = true});
    cg::optim::OneCycleLR sched(opt, recipe.max_lr, steps, {.pct_start = recipe.pct_start});
    std::printf("%s\n", model->parameter_table().c_str());
    std::printf("inspect: %d steps on %s, width %lld; every %d steps each layer's output and output gradient are "
                "copied to the host asynchronously\n",
                steps, dev.str().c_str(), static_cast<long long>(recipe.width), every);

    cg::inspect::Inspector insp;
    std::mutex mu;
    std::vector<LayerStats> rows;
    auto callback = [&](const cg::HostTensor& t, const cg::inspect::Tag& tag) {
      LayerStats s = host_stats(t, tag);
      std::lock_guard<std::mutex> lock(mu);
      rows.push_back(std::move(s));
    };
    std::int64_t step = 0;
    cg::inspect::RecordOptions record;
    record.step = [&] { return step; };
    ex::ProgressBar bar(steps, "inspect");
    const auto t0 = std::chrono::steady_clock::now();
    ex::Metrics metrics;  // since the last recorded step
    std::int64_t images = 0;
    while (step < steps) {
      for (auto& [x, y] : loader) {
        if (step >= steps) break;
        std::vector<cg::HookHandle> handles;
        const bool recording = step % every == 0 || step == steps - 1;
        if (recording) {
          handles = cg::inspect::record_activations(*model, insp, callback, record);
          auto g = cg::inspect::record_gradients(*model, insp, callback, record);
          handles.insert(handles.end(), g.begin(), g.end());
        }
        const cg::Tensor logits = model(x);
        const cg::Tensor loss = F::cross_entropy(logits, y, {.label_smoothing = recipe.label_smoothing});
        opt.zero_grad();
        loss.backward();
        opt.step();
        sched.step();
        for (auto& h : handles) h.remove();
        metrics.add(loss, logits, y);
        images += y.size(0);
        ++step;
        if (recording) {  // the values are read (a wait for the GPU) only on recorded steps
          bar.update(step, ex::bar_metrics(metrics, images, t0));
          metrics = ex::Metrics();
        }
      }
    }
    bar.finish();
    insp.flush();
    const cg::inspect::InspectorStats st = insp.stats();
    std::printf("inspect: %llu copies delivered, %llu dropped, peak pinned %.1f MB\n",
                static_cast<unsigned long long>(st.delivered), static_cast<unsigned long long>(st.dropped),
                static_cast<double>(st.peak_pinned_in_use) / 1e6);

    // Deliveries arrive in submission order (forward: input to output; backward: the reverse);
    // group them by step and phase and keep that order within each group.
    std::stable_sort(rows.begin(), rows.end(), [](const LayerStats& a, const LayerStats& b) {
      return std::tie(a.step, a.phase) < std::tie(b.step, b.phase);
    });
    ex::CsvWriter csv(out + "/layer_stats.csv", {"step", "module", "phase", "count", "mean", "std", "min", "max",
                                                 "zero_fraction", "nonfinite"});
    for (const LayerStats& s : rows)
      csv.row({std::to_string(s.step), s.module, s.phase, std::to_string(s.count), std::to_string(s.mean),
               std::to_string(s.std), std::to_string(s.min), std::to_string(s.max), std::to_string(s.zero_fraction),
               std::to_string(s.nan_count)});
    int pngs = 0;
    for (const LayerStats& s : rows) {
      if (s.step != steps - 1) continue;
      const std::string title = s.phase + " " + s.module + " step " + std::to_string(s.step);
      ex::write_png(ex::bar_histogram(s.histogram, s.min, s.max, title),
                    out + "/hist_" + s.phase + "_" + file_safe(s.module) + ".png");
      ++pngs;
    }
    std::printf("inspect: wrote %s/layer_stats.csv (%zu rows) and %d histogram PNGs\n", out.c_str(), rows.size(), pngs);
    std::printf("  %-8s %-6s %10s %10s %10s %10s %8s\n", "phase", "module", "mean", "std", "min", "max", "zeros");
    for (const LayerStats& s : rows)
      if (s.step == steps - 1)
        std::printf("  %-8s %-6s %10.3g %10.3g %10.3g %10.3g %7.1f%%\n", s.phase.c_str(), s.module.c_str(), s.mean,
                    s.std, s.min, s.max, 100 * s.zero_fraction);

    // On-device statistics: a few hundred bytes come back instead of the tensor.
    const cg::data::Batch batch = *loader.begin();
    const cg::inspect::Summary ws = cg::inspect::summary(model->state_dict().at("f.0.weight"));
    std::printf("inspect: summary(f.0.weight) on %s: mean %.4f std %.4f min %.4f max %.4f\n", dev.str().c_str(),
                ws.mean, ws.std, ws.min, ws.max);

    // BatchNorm: train mode normalizes with the batch's statistics, eval mode with the running
    // ones. The first BatchNorm's output, for the same batch, both ways.
    cg::Tensor bn_train, bn_eval;
    auto bn = model->f[1];
    cg::HookHandle h = bn->register_forward_hook(
        [&](cg::nn::Module& m, const cg::TensorList&, const cg::Tensor& y) {
          (m.is_training() ? bn_train : bn_eval) = y.detach().clone();
        });
    const cg::StateDict saved = [&] {
      cg::StateDict s;
      for (const auto& [k, v] : model->state_dict()) s[k] = v.clone();
      return s;
    }();
    {
      cg::NoGradGuard ng;
      model->train();
      model(batch.x);
      model->load_state_dict(saved);  // undo the running-statistics update of that forward
      model->eval();
      model(batch.x);
    }
    h.remove();
    const cg::inspect::Summary a = cg::inspect::summary(bn_train), b = cg::inspect::summary(bn_eval);
    const double diff = (bn_train - bn_eval).abs().max().item<double>();
    std::printf("inspect: BatchNorm f.1 on one batch: train mode mean %.4f std %.4f; eval mode mean %.4f std %.4f; "
                "largest difference %.4f\n",
                a.mean, a.std, b.mean, b.std, diff);
    ex::CsvWriter bcsv(out + "/batchnorm_train_vs_eval.csv", {"mode", "mean", "std", "min", "max"});
    bcsv.row({"train", std::to_string(a.mean), std::to_string(a.std), std::to_string(a.min), std::to_string(a.max)});
    bcsv.row({"eval", std::to_string(b.mean), std::to_string(b.std), std::to_string(b.min), std::to_string(b.max)});
  } catch (const std::exception& e) {
    std::fprintf(stderr, "inspect: %s\n", e.what());
    return 2;
  }
  return 0;
}
