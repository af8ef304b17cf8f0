// conv2d and pooling benchmark (GPU): cuDNN forward, input gradient and weight gradient for the
// convolution shapes of ResNet-18 at batch 64 (224x224 images), then the stem max pool and the
// global average pool against the device-to-device copy bandwidth measured in the same run;
// then the two convolutions of the 2-conv CNN (DESIGN.md's train-step row, batch 256, 28x28)
// with their bias, fused ReLU and bias-gradient passes, to split that step's time by op, and
// conv1 through cugrad's direct kernels against cuDNN.
// Validates each convolution against the float64 CPU reference on a small batch first. Prints
// the math mode (strict float32 unless CUGRAD_TF32=1) and the algorithm search mode
// (CUGRAD_CUDNN_BENCHMARK=1: timed search). Exits 0 with a message without a GPU.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_util.h"
#include "cuda/channel_sum.h"
#include "cuda/conv.h"
#include "cuda/conv_direct.h"
#include "cuda/conv_graph.h"
#include "cuda/pool.h"
#include "cugrad/cugrad.h"
#include "cugrad/nn/functional.h"
#include "host/runtime/cuda_context.h"

namespace cg = cugrad;
namespace F = cugrad::nn::functional;

namespace {

struct ConvShape {
  const char* name;
  std::int64_t c_in, hw, c_out, k, stride, pad;
};

// ResNet-18's distinct convolutions (torchvision), inputs of 224x224.
const std::vector<ConvShape> kShapes = {
    {"conv1 7x7/2 3->64 @224", 3, 224, 64, 7, 2, 3},
    {"layer1 3x3 64->64 @56", 64, 56, 64, 3, 1, 1},
    {"layer2.0 3x3/2 64->128 @56", 64, 56, 128, 3, 2, 1},
    {"layer2 3x3 128->128 @28", 128, 28, 128, 3, 1, 1},
    {"layer2.0 down 1x1/2 64->128", 64, 56, 128, 1, 2, 0},
    {"layer3.0 3x3/2 128->256 @28", 128, 28, 256, 3, 2, 1},
    {"layer3 3x3 256->256 @14", 256, 14, 256, 3, 1, 1},
    {"layer4.0 3x3/2 256->512 @14", 256, 14, 512, 3, 2, 1},
    {"layer4 3x3 512->512 @7", 512, 7, 512, 3, 1, 1},
};

// Smoke mode: the same convolutions (kernel, stride, padding) with channels / 8 (3 input
// channels stay 3) on small, mostly odd-sized inputs.
const std::vector<ConvShape> kSmokeShapes = {
    {"conv1 7x7/2 3->64 @224", 3, 29, 8, 7, 2, 3},        // output 15x15
    {"layer1 3x3 64->64 @56", 8, 11, 8, 3, 1, 1},         // 11x11
    {"layer2.0 3x3/2 64->128 @56", 8, 11, 16, 3, 2, 1},   // 6x6
    {"layer2 3x3 128->128 @28", 16, 7, 16, 3, 1, 1},      // 7x7
    {"layer2.0 down 1x1/2 64->128", 8, 11, 16, 1, 2, 0},  // 6x6
    {"layer3.0 3x3/2 128->256 @28", 16, 7, 32, 3, 2, 1},  // 4x4
    {"layer3 3x3 256->256 @14", 32, 5, 32, 3, 1, 1},      // 5x5
    {"layer4.0 3x3/2 256->512 @14", 32, 5, 64, 3, 2, 1},  // 3x3
    {"layer4 3x3 512->512 @7", 64, 3, 64, 3, 1, 1},       // 3x3
};

cg::Conv2dGeometry geometry(const ConvShape& s, std::int64_t batch) {
  cg::Conv2dGeometry g;
  g.n = batch;
  g.c_in = s.c_in;
  g.h = g.w = s.hw;
  g.c_out = s.c_out;
  g.kh = g.kw = s.k;
  g.stride_h = g.stride_w = s.stride;
  g.pad_h = g.pad_w = s.pad;
  g.out_h = g.out_w = cg::Conv2dGeometry::out_size(s.hw, s.k, s.stride, s.pad, 1);
  return g;
}

double rel_error(const cg::Tensor& a, const cg::Tensor& ref) {
  const auto x = a.cpu().to(cg::DType::float64).to_vector<double>(), r = ref.to_vector<double>();
  double num = 0, den = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    num += (x[i] - r[i]) * (x[i] - r[i]);
    den += r[i] * r[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

// y, dx and dweight of one shape at batch 2 against the float64 CPU path; the worst relative norm error.
double validate(const ConvShape& s, cg::Device dev) {
  const cg::Tensor x = cg::randn({2, s.c_in, s.hw, s.hw}), w = cg::randn({s.c_out, s.c_in, s.k, s.k}) * 0.05;
  double worst = 0;
  const auto run = [&](cg::Device d, cg::DType t) {
    const cg::Tensor xl = x.to(t).to(d).requires_grad_(), wl = w.to(t).to(d).requires_grad_();
    const cg::Tensor y = F::conv2d(xl, wl, {}, s.stride, s.pad);
    const cg::TensorList g = cg::autograd::grad({y}, {xl, wl}, {cg::ones(y.shape(), d, t)});
    return cg::TensorList{y, g[0], g[1]};
  };
  const cg::TensorList got = run(dev, cg::DType::float32), ref = run(cg::Device::cpu(), cg::DType::float64);
  for (std::size_t i = 0; i < got.size(); ++i) worst = std::max(worst, rel_error(got[i], ref[i]));
  return worst;
}

// cuDNN's forward, input-gradient and weight-gradient times of one geometry (ms; the forward with
// cugrad's direct kernels off, so that it is cuDNN's for every shape).
struct CudnnTimes {
  double fwd, dgrad, wgrad;
};

// The tensors of one geometry's three directions: x, w, dy random; y, dx, dw written.
struct ConvTensors {
  cg::Tensor x, w, y, dy, dx, dw;
  ConvTensors(const cg::Conv2dGeometry& g, cg::Device dev)
      : x(cg::randn({g.n, g.c_in, g.h, g.w}, dev)),
        w(cg::randn({g.c_out, g.c_in, g.kh, g.kw}, dev)),
        y(cg::randn({g.n, g.c_out, g.out_h, g.out_w}, dev)),
        dy(cg::randn(y.shape(), dev)),
        dx(cg::empty(x.shape(), dev)),
        dw(cg::empty(w.shape(), dev)) {}
};

// Queues direction d (0 forward, 1 input gradient, 2 weight gradient) of g through cugrad's conv2d
// launchers.
void run_direction(int d, const cg::Conv2dGeometry& g, const ConvTensors& t, const cg::Stream& stream) {
  switch (d) {
    case 0:
      cg::cuda::conv2d_forward_f32(t.x.data_ptr<float>(), t.w.data_ptr<float>(), nullptr,
                                   t.y.data_ptr<float>(), g, stream);
      break;
    case 1:
      cg::cuda::conv2d_backward_input_f32(t.dy.data_ptr<float>(), t.w.data_ptr<float>(),
                                          t.dx.data_ptr<float>(), g, stream);
      break;
    default:
      cg::cuda::conv2d_backward_weight_f32(t.x.data_ptr<float>(), t.dy.data_ptr<float>(),
                                           t.dw.data_ptr<float>(), g, stream);
  }
}

CudnnTimes time_cudnn(cg::Device dev, const cg::Conv2dGeometry& g, const ConvTensors& t) {
  const cg::Stream stream = cg::Stream::current(dev);
  CudnnTimes r{};
  const bool direct_before = cg::cuda::set_direct_convolutions(false);
  r.fwd = cg::bench::median_ms(dev, [&] { run_direction(0, g, t, stream); });
  cg::cuda::set_direct_convolutions(direct_before);
  r.dgrad = cg::bench::median_ms(dev, [&] { run_direction(1, g, t, stream); });
  r.wgrad = cg::bench::median_ms(dev, [&] { run_direction(2, g, t, stream); });
  return r;
}

// The 2-conv CNN's convolutions at its training batch (conv1 1->32 @28, conv2 32->64 @26, 3x3,
// bias): cuDNN's passes (conv1's input gradient is never computed in training: its input needs
// none) and cugrad's bias passes, each timed alone; the sum is what the step spends on them.
void two_conv_cnn_rows(cg::Device dev, bool smoke, double copy_gbs) {
  const std::int64_t batch = smoke ? 4 : 256;
  const ConvShape shapes[] = {{"2-conv conv1 3x3 1->32 @28", 1, 28, 32, 3, 1, 0},
                              {"2-conv conv2 3x3 32->64 @26", 32, 26, 64, 3, 1, 0}};
  const cg::Stream stream = cg::Stream::current(dev);
  void* cs = cg::runtime::cuda_stream(stream);
  const int sms = cg::runtime::device_properties(dev.index()).multiProcessorCount;
  std::printf("\n%-30s %9s %9s %9s %9s %9s %9s\n", smoke ? "2-conv CNN (batch 4)" : "2-conv CNN (batch 256)",
              "fwd ms", "TFLOP/s", "dgrad ms", "TFLOP/s", "wgrad ms", "TFLOP/s");
  double convs = 0, passes = 0, cudnn_conv1 = 0, direct_conv1 = 0, cudnn_conv1_passes = 0;
  std::vector<std::string> pass_rows;
  for (int i = 0; i < 2; ++i) {
    const ConvShape& s = shapes[i];
    const cg::Conv2dGeometry g = geometry(s, batch);
    const ConvTensors ct(g, dev);
    const cg::Tensor &x = ct.x, &w = ct.w, &y = ct.y, &dy = ct.dy, &dw = ct.dw;
    const cg::Tensor b = cg::randn({g.c_out}, dev);
    const cg::Tensor dz = cg::empty(y.shape(), dev), db = cg::empty({g.c_out}, dev);
    const double flops = 2.0 * static_cast<double>(g.y_numel()) * static_cast<double>(g.patch());
    const CudnnTimes t = time_cudnn(dev, g, ct);
    const double fwd = t.fwd, dgrad = t.dgrad, wgrad = t.wgrad;
    const auto tflops = [&](double ms) { return flops / (ms * 1e-3) / 1e12; };
    std::printf("%-30s %9.4f %9.2f %9.4f %9.2f %9.4f %9.2f  (cuDNN)\n", s.name, fwd, tflops(fwd), dgrad,
                tflops(dgrad), wgrad, tflops(wgrad));
    convs += fwd + wgrad + (i == 1 ? dgrad : 0.0);
    if (i == 0) cudnn_conv1 = fwd + wgrad;

    // cugrad's direct kernels where they apply (conv1: 9 taps): the forward with bias and ReLU,
    // and the weight and bias gradients through the ReLU's mask, as a training step runs them.
    if (cg::cuda::direct_conv_supported(g)) {
      const double dfwd = cg::bench::median_ms(dev, [&] {
        cg::cuda::direct_conv2d_forward_f32(x.data_ptr<float>(), w.data_ptr<float>(), b.data_ptr<float>(),
                                            y.data_ptr<float>(), g, true, cs);
      });
      const cg::cuda::DirectConvPlan dplan = cg::cuda::direct_conv_plan(g, sms);
      const cg::Tensor dws = cg::empty({static_cast<std::int64_t>(dplan.workspace_bytes / 4)}, dev);
      const double dparams = cg::bench::median_ms(dev, [&] {
        cg::cuda::direct_conv2d_backward_params_f32(
            x.data_ptr<float>(), dy.data_ptr<float>(), y.data_ptr<float>(), dw.data_ptr<float>(),
            db.data_ptr<float>(), g, dplan, dws.data_ptr<float>(), cs);
      });
      const double xb = 4.0 * static_cast<double>(x.numel()), yb = 4.0 * static_cast<double>(y.numel());
      const double fwd_gbs = (xb + yb) / (dfwd * 1e-3) / 1e9,
                   par_gbs = (xb + 2 * yb) / (dparams * 1e-3) / 1e9;
      char row[256];
      std::snprintf(row, sizeof row,
                    "%-30s %-26s %9.4f ms %6.1f%% of copy\n%-30s %-26s %9.4f ms %6.1f%% of copy", s.name,
                    "direct fwd + bias + ReLU", dfwd, 100.0 * fwd_gbs / copy_gbs, s.name,
                    "direct dW + db (masked)", dparams, 100.0 * par_gbs / copy_gbs);
      pass_rows.emplace_back(row);
      direct_conv1 = dfwd + dparams;
    }

    // Bias passes: conv1 adds its bias with the ReLU (conv2d_relu) and takes the masked bias
    // gradient; conv2 adds its bias and sums dy.
    const std::int64_t hw = g.out_h * g.out_w;
    const double bytes = 4.0 * static_cast<double>(y.numel());
    const double bias = cg::bench::median_ms(dev, [&] {
      cg::cuda::channel_bias_f32(y.data_ptr<float>(), b.data_ptr<float>(), g.n, g.c_out, hw, i == 0, cs);
    });
    const cg::cuda::ChannelSumPlan plan = cg::cuda::channel_sum_plan(g.n, g.c_out, hw, sms);
    const cg::Tensor ws =
        cg::empty({std::max<std::int64_t>(1, static_cast<std::int64_t>(plan.workspace_bytes / 4))}, dev);
    const double sum = cg::bench::median_ms(dev, [&] {
      if (i == 0)
        cg::cuda::channel_sum_relu_grad_f32(dy.data_ptr<float>(), y.data_ptr<float>(), dz.data_ptr<float>(),
                                            db.data_ptr<float>(), g.n, g.c_out, hw, plan,
                                            ws.data_ptr<float>(), cs);
      else
        cg::cuda::channel_sum_f32(dy.data_ptr<float>(), db.data_ptr<float>(), g.n, g.c_out, hw, plan,
                                  ws.data_ptr<float>(), cs);
    });
    const double bias_gbs = 2 * bytes / (bias * 1e-3) / 1e9,
                 sum_gbs = (i == 0 ? 3 : 1) * bytes / (sum * 1e-3) / 1e9;
    char row[256];
    std::snprintf(row, sizeof row,
                  "%-30s %-26s %9.4f ms %6.1f%% of copy\n%-30s %-26s %9.4f ms %6.1f%% of copy", s.name,
                  i == 0 ? "bias + ReLU" : "bias", bias, 100.0 * bias_gbs / copy_gbs, s.name,
                  i == 0 ? "ReLU mask + bias gradient" : "bias gradient", sum, 100.0 * sum_gbs / copy_gbs);
    pass_rows.emplace_back(row);
    passes += bias + sum;
    if (i == 0) cudnn_conv1_passes = bias + sum;
  }
  for (const std::string& row : pass_rows) std::printf("%s\n", row.c_str());
  // cuDNN's path for both (what a step took before the direct kernels), and conv1 both ways:
  // cuDNN forward + weight gradient + bias passes against the two direct launches.
  std::printf("RESULT conv_two_conv_cnn_cudnn_convolutions_ms %.4f\n", convs);
  std::printf("RESULT conv_two_conv_cnn_bias_passes_ms %.4f\n", passes);
  std::printf("RESULT conv_two_conv_cnn_conv1_cudnn_ms %.4f\n", cudnn_conv1 + cudnn_conv1_passes);
  std::printf("RESULT conv_two_conv_cnn_conv1_direct_ms %.4f\n", direct_conv1);
}

// The host's time inside one conv2d call of each direction (cuDNN's legacy API, then its graph
// API with cached plans), in microseconds: with the device idle, and with the stream held busy
// for 20 ms by a host function queued just before (cudaLaunchHostFunc). A call whose busy time
// is near 20 ms waited for the device: it synchronizes, and a training step cannot queue work
// ahead of it (and, with a blocking stream, it waits for other streams too, e.g. the
// Inspector's copies). Each after one warm-up call of the same shape (plans and algorithms cached).
void host_call_rows(cg::Device dev, const std::vector<ConvShape>& shapes, std::int64_t batch) {
  const cg::Stream stream = cg::Stream::current(dev);
  const cudaStream_t cs = cg::runtime::cuda_stream(stream);
  std::printf(
      "\nhost time per conv2d call, us (device idle / stream busy 20 ms ahead; direct kernels off)\n");
  std::printf("%-30s %-8s %10s %10s %10s %10s\n", "", "", "legacy", "busy", "graph", "busy");
  const bool direct_before = cg::cuda::set_direct_convolutions(false);
  const bool graph_before = cg::cuda::graph_convolutions();
  double legacy_sum = 0, graph_sum = 0;
  int blocking = 0;
  for (const ConvShape& s : shapes) {
    const cg::Conv2dGeometry g = geometry(s, batch);
    const ConvTensors t(g, dev);
    const auto call = [&](int d) { run_direction(d, g, t, stream); };
    const char* names[3] = {"fwd", "dgrad", "wgrad"};
    for (int d = 0; d < 3; ++d) {
      double us[2][2] = {};  // [legacy, graph][idle, busy]
      for (int mode = 0; mode < 2; ++mode) {
        cg::cuda::set_graph_convolutions(mode == 1);
        call(d);  // warm-up: plans, algorithms
        cg::synchronize(dev);
        std::vector<double> idle;
        for (int r = 0; r < 5; ++r) {
          const auto t0 = std::chrono::steady_clock::now();
          call(d);
          idle.push_back(
              std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
          cg::synchronize(dev);
        }
        std::sort(idle.begin(), idle.end());
        CUGRAD_CUDA_CHECK(cudaLaunchHostFunc(
            cs, [](void*) { std::this_thread::sleep_for(std::chrono::milliseconds(20)); }, nullptr));
        const auto t0 = std::chrono::steady_clock::now();
        call(d);
        us[mode][1] =
            std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
        cg::synchronize(dev);
        us[mode][0] = idle[2];
        if (us[mode][1] > 15000) ++blocking;
      }
      legacy_sum += us[0][0];
      graph_sum += us[1][0];
      std::printf("%-30s %-8s %10.1f %10.1f %10.1f %10.1f\n", s.name, names[d], us[0][0], us[0][1], us[1][0],
                  us[1][1]);
    }
  }
  cg::cuda::set_graph_convolutions(graph_before);
  cg::cuda::set_direct_convolutions(direct_before);
  std::printf("calls that waited for the device: %d\n", blocking);
  std::printf("RESULT conv_host_us_legacy_sum %.1f\nRESULT conv_host_us_graph_sum %.1f\n", legacy_sum,
              graph_sum);
}

int conv_bench_main() {
  if (!cg::cuda_is_available()) {
    std::printf("conv_bench: no CUDA device visible (no driver or no GPU); nothing to time\n");
    return 0;
  }
  const bool smoke = cg::bench::smoke_mode();
  const std::vector<ConvShape>& shapes = smoke ? kSmokeShapes : kShapes;
  const cg::Device dev = cg::Device::cuda(0);
  const char* tf32_env = std::getenv("CUGRAD_TF32");
  cg::set_allow_tf32(tf32_env != nullptr && std::string(tf32_env) == "1");
  std::printf("conv_bench: math %s, algorithm choice %s\n",
              cg::allow_tf32() ? "TF32 allowed" : "strict float32 (CUDNN_FMA_MATH)",
              cg::cudnn_benchmark() ? "timed search (cudnnFind*Ex)" : "cuDNN heuristics (v7)");
  const double copy_gbs = cg::bench::copy_bandwidth_gbs(dev);
  std::printf("device-to-device copy: %.1f GB/s\n\n", copy_gbs);

  cg::manual_seed(0);
  bool valid = true;
  for (const ConvShape& s : shapes) {
    const double err = validate(s, dev);
    const double tol = cg::allow_tf32() ? 1e-2 : 1e-5;
    if (!(err <= tol)) {
      std::fprintf(stderr, "conv_bench: %s does not match the CPU reference (relative error %.2e)\n", s.name,
                   err);
      valid = false;
    }
  }
  if (!valid) return 1;
  std::printf("validation: every shape matches the float64 CPU reference (batch 2)\n\n");

  const std::int64_t kBatch = smoke ? 3 : 64;
  std::printf("%-30s %9s %9s %9s %9s %9s %9s\n", smoke ? "conv (batch 3)" : "conv (batch 64)", "fwd ms",
              "TFLOP/s", "dgrad ms", "TFLOP/s", "wgrad ms", "TFLOP/s");
  double total = 0;
  for (const ConvShape& s : shapes) {
    const cg::Conv2dGeometry g = geometry(s, kBatch);
    const double flops = 2.0 * static_cast<double>(g.y_numel()) * static_cast<double>(g.patch());
    const CudnnTimes t = time_cudnn(dev, g, ConvTensors(g, dev));
    const double fwd = t.fwd, dgrad = t.dgrad, wgrad = t.wgrad;
    const auto tflops = [&](double ms) { return flops / (ms * 1e-3) / 1e12; };
    std::printf("%-30s %9.4f %9.2f %9.4f %9.2f %9.4f %9.2f\n", s.name, fwd, tflops(fwd), dgrad, tflops(dgrad),
                wgrad, tflops(wgrad));
    total += fwd + dgrad + wgrad;
  }
  std::printf("RESULT conv_resnet18_shapes_fwd_bwd_sum_ms %.4f\n\n", total);

  // Pooling: memory-bound; bytes are the minimum (read x once, write y; backward read dy
  // (and indices), write dx).
  std::printf("%-40s %9s %9s %8s\n", smoke ? "pooling (batch 3)" : "pooling (batch 64)", "ms", "GB/s",
              "%copy");
  const auto report = [&](const char* name, double ms, double bytes) {
    const double gbs = bytes / (ms * 1e-3) / 1e9;
    std::printf("%-40s %9.4f %9.1f %7.1f%%\n", name, ms, gbs, 100.0 * gbs / copy_gbs);
  };
  {
    const cg::Tensor x =
        (smoke ? cg::randn({kBatch, 8, 17, 17}, dev) : cg::randn({kBatch, 64, 112, 112}, dev))
            .requires_grad_();
    cg::Tensor y;
    const double fwd = cg::bench::median_ms(dev, [&] { y = F::max_pool2d(x, 3, 2, 1); });
    const double out = static_cast<double>(y.numel()), in = static_cast<double>(x.numel());
    report("max_pool2d 3x3/2 64x112x112 fwd (+idx)", fwd, 4 * in + 12 * out);
    const cg::Tensor dy = cg::randn(y.shape(), dev);
    const double bwd = cg::bench::median_ms(dev, [&] { cg::autograd::grad({y}, {x}, {dy}, true); });
    report("max_pool2d 3x3/2 backward", bwd, 12 * out + 4 * in);
    // The thread-per-element kernel it replaced, in the same run (cuda::set_max_pool_backward_runs).
    const bool before = cg::cuda::set_max_pool_backward_runs(false);
    const double bwd_elem = cg::bench::median_ms(dev, [&] { cg::autograd::grad({y}, {x}, {dy}, true); });
    cg::cuda::set_max_pool_backward_runs(before);
    report("max_pool2d backward, thread per element", bwd_elem, 12 * out + 4 * in);
  }
  {
    const cg::Tensor x = cg::randn({kBatch, smoke ? 64 : 512, 7, 7}, dev).requires_grad_();
    cg::Tensor y;
    const double fwd = cg::bench::median_ms(dev, [&] { y = F::adaptive_avg_pool2d(x, 1); });
    report("adaptive_avg_pool2d 512x7x7 -> 1 fwd", fwd, 4.0 * static_cast<double>(x.numel() + y.numel()));
    const cg::Tensor dy = cg::randn(y.shape(), dev);
    const double bwd = cg::bench::median_ms(dev, [&] { cg::autograd::grad({y}, {x}, {dy}, true); });
    report("adaptive_avg_pool2d backward", bwd, 4.0 * static_cast<double>(x.numel() + y.numel()));
  }
  two_conv_cnn_rows(dev, smoke, copy_gbs);
  host_call_rows(dev, shapes, kBatch);
  return 0;
}

}  // namespace

int main() {
  try {
    return conv_bench_main();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "conv_bench: %s\n", e.what());
    return 1;
  }
}
