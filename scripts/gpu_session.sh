#!/usr/bin/env bash
# One-shot GPU session for the library's device tool (15 minutes of device time): builds for
# sm_90, runs the gpu-labelled tests, compute-sanitizer on the GPU tests (memcheck first, then
# racecheck and synccheck, while time remains), then the benchmarks, writing every log to
# $OUT (or gpu-out/). Each stage has a time limit so that later stages still run.
#   OUT (log folder), JOBS (default 16), SANITIZER_SECONDS (default 240), DATA (Fashion-MNIST
#   folder for the example runs, e.g. data/fashion-mnist carried with the working tree)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${OUT:-gpu-out}
mkdir -p "$out"
build=build-gpu
start=$SECONDS
stamp() { echo "[$((SECONDS - start))s] $*" | tee -a "$out/summary.txt"; }

{ date -u; nvidia-smi; nvcc --version; } > "$out/machine.txt" 2>&1
stamp "configure + build"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DCUGRAD_BUILD_TESTS=ON -DCUGRAD_BUILD_BENCH=ON -DCUGRAD_BUILD_EXAMPLES=ON > "$out/configure.log" 2>&1
cmake --build "$build" --parallel "${JOBS:-16}" > "$out/build.log" 2>&1 || { stamp "BUILD FAILED"; tail -50 "$out/build.log"; exit 1; }

stamp "gpu tests"
timeout 300 ctest --test-dir "$build" -L gpu --output-on-failure > "$out/ctest_gpu.log" 2>&1
stamp "ctest gpu: rc=$? $(grep -E 'tests passed|tests failed' "$out/ctest_gpu.log")"
grep -E '\(Failed\)|\(Skipped\)|\(Timeout\)' "$out/ctest_gpu.log" | tee -a "$out/summary.txt"

san=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
budget=${SANITIZER_SECONDS:-240}
san_end=$((SECONDS + budget))
for tool in memcheck racecheck synccheck; do
  for t in "$build"/tests/*_test; do
    left=$((san_end - SECONDS))
    ((left > 5)) || { stamp "sanitizer budget spent before $tool $(basename "$t")"; break 2; }
    name="$(basename "$t").$tool"
    timeout "$left" "$san" --tool "$tool" --error-exitcode 1 "$t" --gtest_filter='*GPU*' > "$out/$name.log" 2>&1
    rc=$?
    stamp "sanitizer $name rc=$rc $(grep -m1 -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/$name.log")"
  done
done

for b in kernels_bench inspect_bench train_step_bench conv_bench; do
  [[ -x "$build/bench/$b" ]] || continue
  # Smoke mode first (seconds): a bench that fails there is not given the full run's minutes.
  if ! CUGRAD_BENCH_SMOKE=1 timeout 60 "$build/bench/$b" > "$out/$b.smoke.txt" 2>&1; then
    stamp "bench $b smoke FAILED: full run skipped (see $b.smoke.txt)"
    continue
  fi
  stamp "bench $b"
  timeout 180 "$build/bench/$b" > "$out/$b.txt" 2>&1
  stamp "bench $b rc=$?"
done
grep -h '^RESULT ' "$out"/*_bench.txt > "$out/cugrad_results.txt" 2>/dev/null
if python3 -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  stamp "compare_torch"
  timeout 240 python3 bench/compare_torch.py --cugrad "$out/cugrad_results.txt" > "$out/compare_torch.txt" 2>&1
  stamp "compare_torch rc=$?"
fi
if [[ -n "${DATA:-}" && -d "$DATA" ]]; then
  stamp "train (reference recipe)"
  timeout 120 "$build/examples/train" --data "$DATA" --out "$out/train" > "$out/train.txt" 2>&1
  stamp "train rc=$? $(grep -m1 '^train: test accuracy' "$out/train.txt")"
  timeout 60 "$build/examples/adversarial" --data "$DATA" --out "$out/train" > "$out/adversarial.txt" 2>&1
  stamp "adversarial rc=$?"
fi
stamp "done"
