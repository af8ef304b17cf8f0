// cross_entropy_bench: label-smoothed softmax cross-entropy (label smoothing 0.1, mean) on the
// GPU. For each shape it validates against the CPU reference first, then times with CUDA
// events (warm-up, median), cycling through several logits tensors so that L2 does not hold
// the input between runs:
//  - fwd+bwd: loss = cross_entropy(x, y); loss.backward() through autograd (the user's view;
//    includes the engine's host work, which overlaps the GPU when the GPU is the bottleneck);
//  - queued: the same fwd+bwd issued behind an untimed one (bench_util.h queued_ms): the
//    device's time without the launch latency every run from an idle device includes;
//  - kernel: the fused launch alone (prepare + row kernel, gradient written);
//  - fwd: the loss without a gradient (no grad mode).
// GB/s counts the minimum bytes: 2 passes over the logits (read, write the gradient) for
// fwd+bwd and kernel, 1 for fwd; beside it the % of the device-to-device copy bandwidth
// measured in the same run, and PyTorch 2.11's H100 times from DESIGN.md where known.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "bench/bench_util.h"
#include "cuda/cross_entropy.h"
#include "cugrad/nn/functional.h"
#include "host/runtime/device_errors.h"

namespace cg = cugrad;
namespace F = cugrad::nn::functional;

namespace {

struct BenchShape {
  std::int64_t n, k;
  double torch_eager_ms, torch_compiled_ms;  // fwd+bwd on an H100 (0: not measured)
};

// Relative difference, NaN-aware.
double rel_diff(double a, double b) { return std::fabs(a - b) / std::max(std::fabs(b), 1e-30); }

bool validate(const cg::Tensor& x, const cg::Tensor& y) {
  const F::CrossEntropyOptions opts{.label_smoothing = 0.1};
  // The mean over the whole batch, against the CPU reference (float32 logits, double sums).
  const double gpu_loss = F::cross_entropy(x, y, opts).item<double>();
  const double cpu_loss = F::cross_entropy(x.cpu(), y.cpu(), opts).item<double>();
  // The gradient of the first rows (a slice keeps the CPU side quick).
  const std::int64_t rows = std::min<std::int64_t>(64, x.size(0));
  cg::Tensor xs = x.narrow(0, 0, rows).clone().requires_grad_();
  F::cross_entropy(xs, y.narrow(0, 0, rows), opts).backward();
  cg::Tensor xc = x.narrow(0, 0, rows).cpu().to(cg::DType::float64).requires_grad_();
  F::cross_entropy(xc, y.narrow(0, 0, rows).cpu(), opts).backward();
  const std::vector<double> g = xs.grad().cpu().to(cg::DType::float64).to_vector<double>();
  const std::vector<double> r = xc.grad().to_vector<double>();
  double num = 0, den = 0;
  for (std::size_t i = 0; i < g.size(); ++i) {
    num += (g[i] - r[i]) * (g[i] - r[i]);
    den += r[i] * r[i];
  }
  const double grad_err = std::sqrt(num / std::max(den, 1e-300));
  const double loss_err = rel_diff(gpu_loss, cpu_loss);
  cg::synchronize();
  cg::runtime::check_device_errors();
  const bool ok = loss_err <= 1e-5 && grad_err <= 1e-5;
  std::printf("  check: loss %.8f vs CPU %.8f (rel %.1e), gradient rel norm error %.1e: %s\n", gpu_loss,
              cpu_loss, loss_err, grad_err, ok ? "ok" : "MISMATCH");
  return ok;
}

}  // namespace

int cross_entropy_bench_main() {
  if (!cg::cuda_is_available()) {
    std::printf("cross_entropy_bench: no CUDA device visible; nothing to measure\n");
    return 0;
  }
  const bool smoke = cg::bench::smoke_mode();
  const cg::Device gpu = cg::Device::cuda(0);
  cg::manual_seed(0);
  const double copy_gbs = cg::bench::copy_bandwidth_gbs(gpu);
  std::printf("device-to-device copy: %.0f GB/s (float32 math, label smoothing 0.1, reduction mean)\n",
              copy_gbs);

  // 1024 x 128256 (a Llama-3-sized vocabulary) is the one shape whose rows exceed registers plus
  // shared memory: it times ce_online_rows_kernel, which reads each row twice (the second read
  // from L2 only while the rows in flight fit there; see cuda/cross_entropy.cu).
  const std::vector<BenchShape> full = {{32768, 1000, 1.17, 0.51}, {8192, 32000, 5.46, 3.75},
                                        {4096, 50257, 0, 0},        {65536, 128, 0, 0},
                                        {1024, 128256, 0, 0}};
  // Smoke mode: every k (k picks the row kernel and its register / shared-memory split), few rows.
  const std::vector<BenchShape> small = {
      {67, 1000, 0, 0}, {3, 32000, 0, 0}, {2, 50257, 0, 0}, {91, 128, 0, 0}, {2, 128256, 0, 0}};
  const std::vector<BenchShape>& shapes = smoke ? small : full;
  bool all_ok = true;
  for (const BenchShape& s : shapes) {
    const double pass_bytes = static_cast<double>(s.n) * static_cast<double>(s.k) * sizeof(float);
    // At least 3 inputs and 300 MB in all, so each run reads logits that are not in L2 (3 in
    // smoke mode).
    const int copies = smoke ? 3 : std::max(3, static_cast<int>(std::ceil(300e6 / pass_bytes)));
    std::vector<cg::Tensor> xs;
    for (int i = 0; i < copies; ++i) xs.push_back((cg::randn({s.n, s.k}, gpu) * 2.0).requires_grad_());
    const cg::Tensor y = cg::randint(0, s.k, {s.n}, gpu);
    std::printf("%lld x %lld (%d inputs of %.0f MB)\n", static_cast<long long>(s.n),
                static_cast<long long>(s.k), copies, pass_bytes / 1e6);
    all_ok = validate(xs[0].detach(), y) && all_ok;
    const F::CrossEntropyOptions opts{.label_smoothing = 0.1};
    int next = 0;

    const double fwd_bwd = cg::bench::median_ms(gpu, [&] {
      cg::Tensor& x = xs[static_cast<std::size_t>(next++ % copies)];
      F::cross_entropy(x, y, opts).backward();
      x.set_grad(cg::Tensor());
    });

    // The fused launch alone, into preallocated buffers.
    cugrad::CrossEntropyProblem p;
    p.n = s.n;
    p.k = s.k;
    p.label_smoothing = 0.1;
    p.reduction = cg::nn::Reduction::Mean;
    const cg::Tensor loss = cg::empty({}, gpu), grad = cg::empty({s.n, s.k}, gpu);
    const std::size_t ws_bytes = cg::cuda::cross_entropy_workspace_bytes(p);
    const cg::Tensor ws = cg::empty({static_cast<std::int64_t>(ws_bytes)}, gpu, cg::DType::uint8);
    const auto sink = cg::runtime::device_error_sink(gpu);
    const double kernel = cg::bench::median_ms(gpu, [&] {
      const cg::Tensor& x = xs[static_cast<std::size_t>(next++ % copies)];
      cg::cuda::cross_entropy_forward(x.data_ptr<float>(), y.data_ptr<std::int64_t>(), nullptr, p,
                                      loss.data_ptr<float>(), grad.data_ptr<float>(), ws.raw_data(), ws_bytes,
                                      sink, cg::Stream::current(gpu).handle());
    });

    // The same fwd+bwd queued behind another (bench_util.h queued_ms): the device's time
    // without the launch latency an idle device adds to every run above.
    const double fwd_bwd_queued = cg::bench::queued_ms(gpu, [&] {
      cg::Tensor& x = xs[static_cast<std::size_t>(next++ % copies)];
      F::cross_entropy(x, y, opts).backward();
      x.set_grad(cg::Tensor());
    });

    double fwd = 0;
    {
      cg::NoGradGuard ng;
      fwd = cg::bench::median_ms(
          gpu, [&] { F::cross_entropy(xs[static_cast<std::size_t>(next++ % copies)], y, opts); });
    }
    cg::synchronize();
    cg::runtime::check_device_errors();

    auto report = [&](const char* what, double ms, double passes) {
      const double gbs = passes * pass_bytes / (ms * 1e-3) / 1e9;
      std::printf("  %-9s %8.3f ms  %6.0f GB/s  %5.1f%% of copy", what, ms, gbs, 100.0 * gbs / copy_gbs);
    };
    report("fwd+bwd", fwd_bwd, 2);
    if (s.torch_eager_ms > 0)
      std::printf("   PyTorch eager %.2f ms (x%.1f), compiled %.2f ms (x%.1f)", s.torch_eager_ms,
                  s.torch_eager_ms / fwd_bwd, s.torch_compiled_ms, s.torch_compiled_ms / fwd_bwd);
    std::printf("\n");
    report("queued", fwd_bwd_queued, 2);
    std::printf("   fwd+bwd queued behind the previous call\n");
    report("kernel", kernel, 2);
    std::printf("   floor %.3f ms\n", 2 * pass_bytes / (copy_gbs * 1e9) * 1e3);
    report("fwd", fwd, 1);
    std::printf("\n");
    std::printf("RESULT cross_entropy_fwd_bwd_%lldx%lld %.4f\n", static_cast<long long>(s.n),
                static_cast<long long>(s.k), fwd_bwd);
    std::printf("RESULT cross_entropy_fwd_bwd_%lldx%lld_queued %.4f\n", static_cast<long long>(s.n),
                static_cast<long long>(s.k), fwd_bwd_queued);
    // The k <= 1024 kernel's grid: blocks per SM (default 32: a short-lived block per group of
    // rows, each ending with a block reduction), against grids of fewer, longer-lived blocks.
    if (s.k <= 1024) {
      std::printf("  group-kernel grid sweep (launch alone, fwd+grad):");
      for (const int b : {2, 3, 4, 6, 8, 16, 32}) {
        const int previous = cg::cuda::set_cross_entropy_group_blocks_per_sm(b);
        const double ms = cg::bench::median_ms(gpu, [&] {
          const cg::Tensor& x = xs[static_cast<std::size_t>(next++ % copies)];
          cg::cuda::cross_entropy_forward(x.data_ptr<float>(), y.data_ptr<std::int64_t>(), nullptr, p,
                                          loss.data_ptr<float>(), grad.data_ptr<float>(), ws.raw_data(),
                                          ws_bytes, sink, cg::Stream::current(gpu).handle());
        });
        cg::cuda::set_cross_entropy_group_blocks_per_sm(previous);
        std::printf(" %d/SM %.4f ms;", b, ms);
      }
      std::printf("\n");
    }
    // The opt-in staged kernel (set_cross_entropy_staged_rows: rows copied into shared memory
    // ahead of use) where it applies, checked bit for bit against the default kernel first.
    if (s.k > 256 && s.k <= 1024 && s.k % 4 == 0) {
      const auto launch = [&](const cg::Tensor& x, const cg::Tensor& into) {
        cg::cuda::cross_entropy_forward(x.data_ptr<float>(), y.data_ptr<std::int64_t>(), nullptr, p,
                                        loss.data_ptr<float>(), into.data_ptr<float>(), ws.raw_data(),
                                        ws_bytes, sink, cg::Stream::current(gpu).handle());
      };
      const cg::Tensor reference = cg::empty({s.n, s.k}, gpu);
      launch(xs[0], reference);
      const bool previous = cg::cuda::set_cross_entropy_staged_rows(true);
      launch(xs[0], grad);
      const bool same = grad.cpu().to_vector<float>() == reference.cpu().to_vector<float>();
      const double staged_kernel =
          cg::bench::median_ms(gpu, [&] { launch(xs[static_cast<std::size_t>(next++ % copies)], grad); });
      const double staged = cg::bench::median_ms(gpu, [&] {
        cg::Tensor& x = xs[static_cast<std::size_t>(next++ % copies)];
        F::cross_entropy(x, y, opts).backward();
        x.set_grad(cg::Tensor());
      });
      cg::cuda::set_cross_entropy_staged_rows(previous);
      if (!same) std::printf("  staged kernel: gradient differs from the default kernel's: FAILED\n");
      all_ok = same && all_ok;
      report("staged", staged, 2);
      std::printf("   fwd+bwd with ce_staged_rows_kernel (opt-in); kernel alone %.4f ms; same bits: %s\n",
                  staged_kernel, same ? "yes" : "NO");
      std::printf("RESULT cross_entropy_fwd_bwd_%lldx%lld_staged %.4f\n", static_cast<long long>(s.n),
                  static_cast<long long>(s.k), staged);
    }
  }
  return all_ok ? 0 : 1;
}

#ifndef CUGRAD_KERNELS_BENCH  // kernels_bench links every kernel benchmark into one program
int main() { return cross_entropy_bench_main(); }
#endif
