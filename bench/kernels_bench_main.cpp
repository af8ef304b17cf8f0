// kernels_bench: the hand-written fused kernels in one run (BatchNorm against cuDNN,
// label-smoothed cross-entropy, multi-tensor SGD and AdamW), each validated before it is timed and
// reported in ms, GB/s and % of the device-to-device copy bandwidth measured in the same run.
// The same cases are available one family at a time as batch_norm_bench, cross_entropy_bench,
// sgd_bench and adam_bench.
#include <cstdio>

int batch_norm_bench_main();
int cross_entropy_bench_main();
int sgd_bench_main();
int adam_bench_main();

int main() {
  int failures = 0;
  std::printf("==== BatchNorm (cugrad vs cuDNN) ====\n");
  failures += batch_norm_bench_main() != 0;
  std::printf("\n==== label-smoothed softmax cross-entropy ====\n");
  failures += cross_entropy_bench_main() != 0;
  std::printf("\n==== SGD (momentum, Nesterov, weight decay) ====\n");
  failures += sgd_bench_main() != 0;
  std::printf("\n==== AdamW ====\n");
  failures += adam_bench_main() != 0;
  if (failures > 0) std::printf("\nkernels_bench: %d benchmark famil%s FAILED validation\n", failures,
                                failures == 1 ? "y" : "ies");
  return failures == 0 ? 0 : 1;
}
