// batch_norm_bench: cugrad's fused BatchNorm beside cuDNN's batch norm (CUDNN_BATCHNORM_SPATIAL)
// on the same shapes in the same run: training forward and forward+backward at 256x64x56x56,
// eval forward at 4096x1024 (1-D), and a few more. CUDA events (bench_util.h: warm-up, then the
// median of many runs); the inputs rotate through enough tensors that every run reads memory
// the L2 cache no longer holds. Prints ms, GB/s on the minimum bytes (forward 3 passes over the
// tensor, forward+backward 8, eval 2), % of the device-to-device copy bandwidth measured in
// this run, and cuDNN's numbers; under each row, cugrad's call queued behind another
// (bench_util.h queued_ms: the device's time without an idle device's launch latency). Before
// timing, each cugrad result is checked against cuDNN's (relative norm difference); the
// program exits 1 when they disagree. Then BatchNorm+ReLU forward+backward, fused and not.
// float32, no TF32 involved.
#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "cugrad/nn/functional.h"

namespace cg = cugrad;
namespace F = cugrad::nn::functional;

namespace {

constexpr double kMomentum = 0.1;
constexpr double kEps = 1e-5;

enum class Mode { train_forward, train_forward_backward, eval_forward };

const char* mode_name(Mode m) {
  switch (m) {
    case Mode::train_forward:
      return "train fwd";
    case Mode::train_forward_backward:
      return "train fwd+bwd";
    case Mode::eval_forward:
      return "eval fwd";
  }
  return "?";
}

// Minimum passes over the tensor: forward reads x twice (statistics, then normalize) and writes
// y; backward reads x and dy for the reduction, then x and dy again and writes dx; eval reads x
// and writes y.
double min_passes(Mode m) {
  switch (m) {
    case Mode::train_forward:
      return 3;
    case Mode::train_forward_backward:
      return 8;
    case Mode::eval_forward:
      return 2;
  }
  return 0;
}

struct CudnnHandle {
  cudnnHandle_t h = nullptr;
  CudnnHandle() { CUGRAD_CUDNN_CHECK(cudnnCreate(&h)); }
  ~CudnnHandle() {
    if (h) cudnnDestroy(h);
  }
  CudnnHandle(const CudnnHandle&) = delete;
  CudnnHandle& operator=(const CudnnHandle&) = delete;
};

struct TensorDesc {
  cudnnTensorDescriptor_t d = nullptr;
  TensorDesc() { CUGRAD_CUDNN_CHECK(cudnnCreateTensorDescriptor(&d)); }
  ~TensorDesc() {
    if (d) cudnnDestroyTensorDescriptor(d);
  }
  TensorDesc(const TensorDesc&) = delete;
  TensorDesc& operator=(const TensorDesc&) = delete;
};

float* fp(const cg::Tensor& t) { return t.data_ptr<float>(); }

double rel_diff(const cg::Tensor& a, const cg::Tensor& b) {
  cg::NoGradGuard ng;
  return (a - b).norm().item<double>() / std::max(b.norm().item<double>(), 1e-30);
}

struct Timing {
  double ms = 0;
  double gbs = 0;
};

Timing timing(double ms, double bytes) { return {ms, bytes / (ms * 1e-3) / 1e9}; }

// One benchmark case: cugrad and cuDNN on the same inputs. Returns false when they disagree.
bool run_case(cg::Device gpu, cudnnHandle_t handle, double copy_gbs, Mode mode, const cg::Shape& shape) {
  const std::int64_t n = shape[0], c = shape[1], h = shape.size() == 4 ? shape[2] : 1,
                     w = shape.size() == 4 ? shape[3] : 1;
  const std::int64_t numel = n * c * h * w;
  const double bytes = static_cast<double>(numel) * 4;
  const bool backward = mode == Mode::train_forward_backward, training = mode != Mode::eval_forward;

  // Rotate through enough inputs that the working set of one round is over twice the L2 size.
  int dev = 0;
  CUGRAD_CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp prop{};
  CUGRAD_CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  const double per_slot = bytes * (backward ? 4 : 2);  // x, y (+ dy, dx)
  const int slots = static_cast<int>(std::clamp(2.0 * prop.l2CacheSize / per_slot + 1.0, 2.0, 16.0));

  std::vector<cg::Tensor> xs, dys, ys_dnn, dxs_dnn;
  for (int i = 0; i < slots; ++i) {
    xs.push_back(cg::randn(shape, gpu) * 1.5 + 0.25);
    if (backward) {
      dys.push_back(cg::randn(shape, gpu));
      dxs_dnn.push_back(cg::empty(shape, gpu));
    }
    ys_dnn.push_back(cg::empty(shape, gpu));
  }
  const cg::Tensor weight = cg::rand({c}, gpu) + 0.5, bias = cg::randn({c}, gpu);
  cg::Tensor rm = cg::zeros({c}, gpu), rv = cg::ones({c}, gpu);
  const cg::Tensor rm_dnn = rm.clone(), rv_dnn = rv.clone(), save_mean = cg::empty({c}, gpu),
                   save_invvar = cg::empty({c}, gpu), dw_dnn = cg::empty({c}, gpu),
                   db_dnn = cg::empty({c}, gpu);
  const cg::Tensor w_leaf = weight.detach().requires_grad_(), b_leaf = bias.detach().requires_grad_();
  std::vector<cg::Tensor> x_leaves;
  for (const auto& x : xs) x_leaves.push_back(x.detach().requires_grad_());

  TensorDesc xd, bnd;
  CUGRAD_CUDNN_CHECK(cudnnSetTensor4dDescriptor(xd.d, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT,
                                                static_cast<int>(n), static_cast<int>(c), static_cast<int>(h),
                                                static_cast<int>(w)));
  CUGRAD_CUDNN_CHECK(cudnnDeriveBNTensorDescriptor(bnd.d, xd.d, CUDNN_BATCHNORM_SPATIAL));
  CUGRAD_CUDNN_CHECK(cudnnSetStream(handle, static_cast<cudaStream_t>(cg::Stream::current(gpu).handle())));
  const float one = 1.f, zero = 0.f;

  // cugrad: returns the output (y, or dx for forward+backward) and, for backward, dweight and
  // dbias.
  int turn = 0;
  cg::Tensor last_out, last_dw, last_db;
  auto cugrad_run = [&](int i) {
    if (backward) {
      const cg::Tensor y = F::batch_norm(x_leaves[i], rm, rv, w_leaf, b_leaf, true, kMomentum, kEps);
      const cg::TensorList g = cg::autograd::grad({y}, {x_leaves[i], w_leaf, b_leaf}, {dys[i]});
      last_out = g[0];
      last_dw = g[1];
      last_db = g[2];
    } else {
      cg::NoGradGuard ng;
      last_out = F::batch_norm(xs[i], rm, rv, weight, bias, training, kMomentum, kEps);
    }
  };
  auto cudnn_run = [&](int i) {
    if (training) {
      CUGRAD_CUDNN_CHECK(cudnnBatchNormalizationForwardTraining(
          handle, CUDNN_BATCHNORM_SPATIAL, &one, &zero, xd.d, fp(xs[i]), xd.d, fp(ys_dnn[i]), bnd.d,
          fp(weight), fp(bias), kMomentum, fp(rm_dnn), fp(rv_dnn), kEps, fp(save_mean), fp(save_invvar)));
    } else {
      CUGRAD_CUDNN_CHECK(cudnnBatchNormalizationForwardInference(
          handle, CUDNN_BATCHNORM_SPATIAL, &one, &zero, xd.d, fp(xs[i]), xd.d, fp(ys_dnn[i]), bnd.d,
          fp(weight), fp(bias), fp(rm_dnn), fp(rv_dnn), kEps));
    }
    if (backward) {
      CUGRAD_CUDNN_CHECK(cudnnBatchNormalizationBackward(
          handle, CUDNN_BATCHNORM_SPATIAL, &one, &zero, &one, &zero, xd.d, fp(xs[i]), xd.d, fp(dys[i]), xd.d,
          fp(dxs_dnn[i]), bnd.d, fp(weight), fp(dw_dnn), fp(db_dnn), kEps, fp(save_mean), fp(save_invvar)));
    }
  };

  // Validate before timing: the same input through both.
  cugrad_run(0);
  cudnn_run(0);
  double diff = rel_diff(last_out, backward ? dxs_dnn[0] : ys_dnn[0]);
  if (backward) diff = std::max({diff, rel_diff(last_dw, dw_dnn), rel_diff(last_db, db_dnn)});
  if (training) diff = std::max({diff, rel_diff(rm, rm_dnn), rel_diff(rv, rv_dnn)});

  const double ms = cg::bench::median_ms(
      gpu, [&] { cugrad_run(turn++ % slots); }, 5, 50);
  const double ms_dnn = cg::bench::median_ms(
      gpu, [&] { cudnn_run(turn++ % slots); }, 5, 50);
  // The same call queued behind another (bench_util.h queued_ms): the device's time without the
  // launch latency an idle device adds to every run above.
  const double ms_queued = cg::bench::queued_ms(
      gpu, [&] { cugrad_run(turn++ % slots); }, 5, 50);
  const Timing t = timing(ms, min_passes(mode) * bytes), td = timing(ms_dnn, min_passes(mode) * bytes);
  std::printf("%-14s %-18s %8.3f %7.0f %5.1f%% | %8.3f %7.0f %5.1f%% | %5.2fx | %.1e (%d inputs)\n",
              mode_name(mode), cg::shape_str(shape).c_str(), t.ms, t.gbs, 100.0 * t.gbs / copy_gbs, td.ms,
              td.gbs, 100.0 * td.gbs / copy_gbs, td.ms / t.ms, diff, slots);
  // Machine-readable line for bench/compare_torch.py --cugrad.
  static const char* const keys[] = {"train_fwd", "train_fwd_bwd", "eval_fwd"};
  std::string dims;
  for (std::size_t i = 0; i < shape.size(); ++i) dims += (i ? "x" : "") + std::to_string(shape[i]);
  const Timing tq = timing(ms_queued, min_passes(mode) * bytes);
  std::printf("%-14s %-18s %8.3f %7.0f %5.1f%%   (cugrad queued behind the previous call)\n", "", "", tq.ms,
              tq.gbs, 100.0 * tq.gbs / copy_gbs);
  std::printf("RESULT batch_norm_%s_%s %.4f\n", keys[static_cast<int>(mode)], dims.c_str(), t.ms);
  std::printf("RESULT batch_norm_%s_%s_queued %.4f\n", keys[static_cast<int>(mode)], dims.c_str(), tq.ms);
  std::printf("RESULT cudnn_batch_norm_%s_%s %.4f\n", keys[static_cast<int>(mode)], dims.c_str(), td.ms);
  return diff < 1e-4;
}

// BatchNorm followed by ReLU, training forward+backward: functional::batch_norm_relu (one op;
// minimum 8 passes: forward 3, backward 5) against batch_norm then relu (13: the ReLU adds a
// read and a write forward, and threshold_backward two reads and a write), both cugrad, the
// same inputs, the same run. Returns false unless both give the same bits.
bool run_relu_case(cg::Device gpu, double copy_gbs, const cg::Shape& shape) {
  const std::int64_t c = shape[1];
  const double bytes = static_cast<double>(shape[0] * c * shape[2] * shape[3]) * 4;
  int dev = 0;
  CUGRAD_CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp prop{};
  CUGRAD_CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  const int slots = static_cast<int>(std::clamp(2.0 * prop.l2CacheSize / (bytes * 4) + 1.0, 2.0, 16.0));
  std::vector<cg::Tensor> xs, dys;
  for (int i = 0; i < slots; ++i) {
    xs.push_back((cg::randn(shape, gpu) * 1.5).detach().requires_grad_());
    dys.push_back(cg::randn(shape, gpu));
  }
  const cg::Tensor w = (cg::rand({c}, gpu) + 0.5).detach().requires_grad_();
  const cg::Tensor b = (cg::randn({c}, gpu) * 0.3).detach().requires_grad_();
  cg::Tensor rm = cg::zeros({c}, gpu), rv = cg::ones({c}, gpu);
  auto run = [&](int i, bool fused) {
    const cg::Tensor y = fused ? F::batch_norm_relu(xs[i], rm, rv, w, b, true, kMomentum, kEps)
                               : cg::relu(F::batch_norm(xs[i], rm, rv, w, b, true, kMomentum, kEps));
    return cg::autograd::grad({y}, {xs[i], w, b}, {dys[i]});
  };
  const cg::TensorList a = run(0, true), u = run(0, false);
  bool same = true;
  for (std::size_t k = 0; k < a.size(); ++k) {
    cg::NoGradGuard ng;
    same = same && cg::ne(a[k], u[k]).sum().item<double>() == 0.0;
  }
  int turn = 0;
  const double fused = cg::bench::median_ms(gpu, [&] { run(turn++ % slots, true); }, 5, 50);
  const double unfused = cg::bench::median_ms(gpu, [&] { run(turn++ % slots, false); }, 5, 50);
  const Timing tf = timing(fused, 8 * bytes), tu = timing(unfused, 13 * bytes);
  std::printf("%-14s %-18s %8.3f %7.0f %5.1f%% | unfused %8.3f %7.0f %5.1f%% | %5.2fx | %s\n", "BN+ReLU f+b",
              cg::shape_str(shape).c_str(), tf.ms, tf.gbs, 100.0 * tf.gbs / copy_gbs, tu.ms, tu.gbs,
              100.0 * tu.gbs / copy_gbs, tu.ms / tf.ms, same ? "same bits" : "RESULTS DIFFER");
  std::string dims;
  for (std::size_t i = 0; i < shape.size(); ++i) dims += (i ? "x" : "") + std::to_string(shape[i]);
  std::printf("RESULT batch_norm_relu_train_fwd_bwd_%s %.4f\n", dims.c_str(), fused);
  std::printf("RESULT batch_norm_then_relu_train_fwd_bwd_%s %.4f\n", dims.c_str(), unfused);
  return same;
}

}  // namespace

int batch_norm_bench_main() {
  if (!cg::cuda_is_available()) {
    std::printf("batch_norm_bench: no CUDA device visible; nothing to measure\n");
    return 0;
  }
  const bool smoke = cg::bench::smoke_mode();
  const cg::Device gpu = cg::Device::cuda(0);
  cg::manual_seed(0);
  cudaDeviceProp prop{};
  CUGRAD_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  int driver = 0, runtime = 0;
  CUGRAD_CUDA_CHECK(cudaDriverGetVersion(&driver));
  CUGRAD_CUDA_CHECK(cudaRuntimeGetVersion(&runtime));
  const double copy_gbs = cg::bench::copy_bandwidth_gbs(gpu);
  std::printf("%s, %d SMs, L2 %.0f MB; driver %d, runtime %d, cuDNN %zu; float32\n", prop.name,
              prop.multiProcessorCount, prop.l2CacheSize / 1e6, driver, runtime, cudnnGetVersion());
  std::printf("device-to-device copy: %.0f GB/s\n", copy_gbs);
  std::printf("GB/s counts the minimum bytes: train fwd 3 passes over x, fwd+bwd 8, eval 2\n\n");
  std::printf("%-14s %-18s %8s %7s %6s | %8s %7s %6s | %6s | %s\n", "op", "shape", "ms", "GB/s", "copy",
              "cuDNN ms", "GB/s", "copy", "speedup", "rel. diff vs cuDNN");

  CudnnHandle handle;
  bool ok = true;
  // Smoke mode keeps what picks the kernels' plans: HW a multiple of 4 (float4 planes), HW == 1
  // with C a multiple of 4 (rows), channels split over several blocks (big: N * HW > 4096 per
  // channel; flat: a partial tile of 32 channels).
  const cg::Shape big = smoke ? cg::Shape{6, 4, 28, 36} : cg::Shape{256, 64, 56, 56},
                  mid = smoke ? cg::Shape{4, 24, 6, 6} : cg::Shape{64, 256, 14, 14},
                  flat = smoke ? cg::Shape{300, 40} : cg::Shape{4096, 1024};
  ok &= run_case(gpu, handle.h, copy_gbs, Mode::train_forward, big);
  ok &= run_case(gpu, handle.h, copy_gbs, Mode::train_forward_backward, big);
  ok &= run_case(gpu, handle.h, copy_gbs, Mode::eval_forward, flat);
  ok &= run_case(gpu, handle.h, copy_gbs, Mode::eval_forward, big);
  ok &= run_case(gpu, handle.h, copy_gbs, Mode::train_forward, mid);
  ok &= run_case(gpu, handle.h, copy_gbs, Mode::train_forward_backward, mid);
  ok &= run_case(gpu, handle.h, copy_gbs, Mode::train_forward, flat);
  ok &= run_case(gpu, handle.h, copy_gbs, Mode::train_forward_backward, flat);
  std::printf("\nBatchNorm then ReLU, fused (batch_norm_relu, 8 passes) and not (13 passes):\n");
  ok &= run_relu_case(gpu, copy_gbs, big);
  ok &= run_relu_case(gpu, copy_gbs, smoke ? cg::Shape{3, 8, 7, 7} : cg::Shape{256, 64, 28, 28});
  if (!ok) {
    std::printf("\nFAILED: a cugrad result differs from cuDNN's by more than 1e-4 (relative norm)\n");
    return 1;
  }
  return 0;
}

#ifndef CUGRAD_KERNELS_BENCH  // kernels_bench links every kernel benchmark into one program
int main() { return batch_norm_bench_main(); }
#endif
