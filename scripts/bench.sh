#!/usr/bin/env bash
# For GPU machines: builds the benchmarks and runs them, then (when PyTorch with CUDA is
# installed) times the same work in PyTorch and prints the cugrad/PyTorch ratios. Everything is
# also written to $BENCH_OUT (default bench/out/) for bench/RESULTS.md.
#   BUILD_DIR (default build), CUDA_ARCHS (default 90), JOBS (default: all cores)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

build_dir=${BUILD_DIR:-build}
out=${BENCH_OUT:-bench/out}
mkdir -p "$out"

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "bench: no NVIDIA GPU is visible (nvidia-smi -L failed); the benchmarks need one" >&2
  exit 1
fi
# GPU hosts are usually offline: check, but do not wait on apt (set CUGRAD_SKIP_APT=0 to allow it).
CUGRAD_SKIP_APT=${CUGRAD_SKIP_APT:-1} bash scripts/setup_deps.sh
bash scripts/configure.sh -DCUGRAD_BUILD_BENCH=ON
cmake --build "$build_dir" --parallel "${JOBS:-$(nproc)}"

{
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
  nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader
  nvcc --version 2>/dev/null | tail -n 2 || true
} | tee "$out/machine.txt"

status=0
for program in kernels_bench elementwise_bench conv_bench inspect_bench train_step_bench; do
  exe="$build_dir/bench/$program"
  [[ -x "$exe" ]] || continue
  echo "== $program"
  "$exe" 2>&1 | tee "$out/$program.txt" || status=1
done
grep -h '^RESULT ' "$out"/*_bench.txt > "$out/cugrad_results.txt" || true

if python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "== PyTorch side by side"
  python3 bench/compare_torch.py --cugrad "$out/cugrad_results.txt" 2>&1 | tee "$out/compare_torch.txt" || status=1
else
  echo "bench: PyTorch with CUDA is not installed here; skipped the side-by-side timings"
fi
exit $status
