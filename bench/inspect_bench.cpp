// inspect_bench: the cost of copying every activation to the host through the Inspector.
// A chain of conv-sized activations (ResNet-18 stage shapes at batch 64) is computed with
// elementwise ops, once plain and once with every activation handed to an Inspector whose
// callback reads it (as a hook would). Prints ms per chain, the overhead, the bytes copied and
// the device-to-host rate achieved, beside the device-to-device copy bandwidth of this run.
#include <cstdio>

#include "bench/bench_util.h"

namespace cg = cugrad;

int main() {
  if (!cg::cuda_is_available()) {
    std::printf("inspect_bench: no CUDA device visible; nothing to measure\n");
    return 0;
  }
  const bool smoke = cg::bench::smoke_mode();
  const cg::Device gpu = cg::Device::cuda(0);
  const double copy_gbs = cg::bench::copy_bandwidth_gbs(gpu);
  std::printf("device-to-device copy: %.0f GB/s\n", copy_gbs);

  // Activation shapes of ResNet-18's stages at batch 64 (N, C, H, W), each visited twice.
  const std::vector<cg::Shape> full = {{64, 64, 112, 112}, {64, 64, 56, 56},  {64, 64, 56, 56},
                                       {64, 128, 28, 28},  {64, 128, 28, 28}, {64, 256, 14, 14},
                                       {64, 256, 14, 14},  {64, 512, 7, 7},   {64, 512, 7, 7}};
  // Smoke mode: batch 2, channels / 16, sides / 4 (rounded up).
  const std::vector<cg::Shape> small = {{2, 4, 28, 28}, {2, 4, 14, 14}, {2, 4, 14, 14},
                                        {2, 8, 7, 7},   {2, 8, 7, 7},   {2, 16, 4, 4},
                                        {2, 16, 4, 4},  {2, 32, 2, 2},  {2, 32, 2, 2}};
  const std::vector<cg::Shape>& shapes = smoke ? small : full;
  std::vector<cg::Tensor> inputs;
  std::size_t bytes = 0;
  for (const auto& s : shapes) {
    inputs.push_back(cg::randn(s, gpu));
    bytes += inputs.back().nbytes();
  }
  cg::inspect::Inspector insp({.max_pinned_bytes = std::size_t{2} << 30});
  double checksum = 0;
  auto chain = [&](bool hooks) {
    for (const auto& x : inputs) {
      cg::Tensor a = (x * 1.5 + 0.25).relu();  // two kernels, like conv+bn+relu's elementwise tail
      if (hooks)
        insp.copy(a, "act", [&](const cg::HostTensor& h, const cg::inspect::Tag&) { checksum += h.data<float>()[0]; });
    }
  };
  const double plain = cg::bench::median_ms(gpu, [&] { chain(false); }, 3, 15);
  const double with_copies = cg::bench::median_ms(gpu, [&] {
    chain(true);
    insp.flush();  // the step is not done until every activation has reached the host
  }, 3, 15);
  const double plain_gbs = 3.0 * static_cast<double>(bytes) / (plain * 1e-3) / 1e9;
  std::printf("chain of %zu activations, %.1f MB in all\n", shapes.size(), static_cast<double>(bytes) / 1e6);
  std::printf("plain:            %8.3f ms  (%.0f GB/s, %.0f%% of copy bandwidth)\n", plain, plain_gbs,
              100.0 * plain_gbs / copy_gbs);
  std::printf("copy every act.:  %8.3f ms  (+%.1f%%), device-to-host %.1f GB/s\n", with_copies,
              100.0 * (with_copies - plain) / plain, static_cast<double>(bytes) / (with_copies * 1e-3) / 1e9);
  const auto s = insp.stats();
  std::printf("inspector: %llu delivered, %llu blocked, %llu dropped, peak pinned %.1f MB (checksum %g)\n",
              static_cast<unsigned long long>(s.delivered), static_cast<unsigned long long>(s.blocked),
              static_cast<unsigned long long>(s.dropped), static_cast<double>(s.peak_pinned_in_use) / 1e6, checksum);
  return 0;
}
