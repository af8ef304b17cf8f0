// Elementwise benchmark (GPU): the elementwise work of a ResNet step at its largest activation
// (64×64×112×112 float32, 205 MB, well over the L2): ReLU forward (unary), ReLU backward
// (threshold_backward: binary, same shapes), add of two activations (the residual), and a
// per-channel broadcast multiply (the general broadcasting path), and dropout (p 0.5: the fused
// forward, which reads x and writes y and a one-byte mask, 2.25 passes; its backward, the same;
// and the five-launch composite it replaced, ge(rand_like(x), p) · scale · x, at the fused
// forward's minimum bytes, so its % of copy shows what fusing saves). Prints ms, GB/s at the
// minimum bytes (each input read once, the output written once) and % of the device-to-device
// copy bandwidth measured in the same run. Exits 0 with a message without a GPU.
#include <cstdio>
#include <functional>
#include <string>

#include "bench/bench_util.h"
#include "cuda/dropout.h"
#include "cuda/elementwise.h"
#include "host/ops/broadcast.h"

namespace cg = cugrad;

int main() {
  if (!cg::cuda_is_available()) {
    std::printf("elementwise_bench: no CUDA device visible; nothing to measure\n");
    return 0;
  }
  const bool smoke = cg::bench::smoke_mode();
  const cg::Device gpu = cg::Device::cuda(0);
  const double copy_gbs = cg::bench::copy_bandwidth_gbs(gpu);
  std::printf("elementwise_bench: float32; device-to-device copy: %.0f GB/s\n", copy_gbs);
  cg::manual_seed(0);
  // Smoke mode: an odd size (the float4 paths' tail) and a misaligned view.
  const cg::Shape shape = smoke ? cg::Shape{3, 5, 7, 9} : cg::Shape{64, 64, 112, 112};
  const cg::Tensor x = cg::randn(shape, gpu), g = cg::randn(shape, gpu), y = x.relu();
  const cg::Tensor scale = cg::randn({shape[1], 1, 1}, gpu);
  cg::Tensor out = cg::empty(shape, gpu), mask = cg::empty(shape, gpu, cg::DType::uint8);
  const std::int64_t n = x.numel();
  const double bytes1 = static_cast<double>(n) * sizeof(float);
  void* const stream = cg::Stream::current(gpu).handle();

  // A same-shape index (every operand contiguous with the output's shape).
  const cg::Shape& s = shape;
  const cg::Shape* inputs[2] = {&s, &s};
  const cugrad::BroadcastIndex same = cugrad::make_broadcast_index(shape, inputs, 2);

  struct Case {
    const char* name;
    double passes;
    std::function<void()> fn;
  };
  const Case cases[] = {
      {"relu forward (unary)", 2, [&] { (void)x.relu(); }},
      {"relu backward (threshold_backward)", 3,
       [&] {
         cugrad::cuda::binary(cugrad::BinaryOp::threshold_backward, cg::DType::float32, g.raw_data(), y.raw_data(),
                              out.raw_data(), n, same, 1.0, stream);
       }},
      {"add, same shapes (residual)", 3, [&] { (void)(x + g); }},
      {"mul by a per-channel scale (broadcast)", 2, [&] { (void)(x * scale); }},
      {"relu on a misaligned view (scalar path)", 2,
       [&] { (void)x.reshape({n}).narrow(0, 1, n - 1).relu(); }},
      {"dropout forward, fused (x -> y, mask)", 2.25,
       [&] {
         cugrad::cuda::dropout_forward(x.data_ptr<float>(), out.data_ptr<float>(),
                                       mask.data_ptr<std::uint8_t>(), n, 1, 0, nullptr, 0.5f, 2.0f, stream);
       }},
      {"dropout backward, fused (dy, mask -> dx)", 2.25,
       [&] {
         cugrad::cuda::dropout_backward(g.data_ptr<float>(), mask.data_ptr<std::uint8_t>(), out.data_ptr<float>(), n,
                                        2.0f, stream);
       }},
      {"dropout forward, the old composite", 2.25,
       [&] {
         cg::Tensor keep = cg::ge(cg::rand_like(x), 0.5).to(cg::DType::float32);
         keep.mul_(2.0);
         (void)(x * keep);
       }},
  };
  std::printf("%-42s %10s %9s %7s\n", "op", "ms", "GB/s", "%copy");
  for (const Case& c : cases) {
    const double ms = cg::bench::median_ms(gpu, c.fn, 5, 30);
    const double gbs = c.passes * bytes1 / (ms * 1e-3) / 1e9;
    std::printf("%-42s %10.4f %9.0f %6.1f%%\n", c.name, ms, gbs, 100.0 * gbs / copy_gbs);
  }
  cg::synchronize(gpu);
  return 0;
}
