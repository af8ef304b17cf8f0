#!/usr/bin/env bash
# For GPU machines: builds cugrad, runs the gpu-labelled tests (they must run, not skip), then runs
# every test program's GPU tests under compute-sanitizer, one tool after another.
#   BUILD_DIR (default build), CUDA_ARCHS (default 90), JOBS (default: all cores),
#   SANITIZER_TOOLS (default "memcheck racecheck synccheck initcheck")
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

build_dir=${BUILD_DIR:-build}
tools=${SANITIZER_TOOLS:-memcheck racecheck synccheck initcheck}

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_check: no NVIDIA GPU is visible (nvidia-smi -L failed); run scripts/test.sh instead" >&2
  exit 1
fi
sanitizer=$(command -v compute-sanitizer || true)
for candidate in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
  [[ -z "$sanitizer" && -x "$candidate" ]] && sanitizer=$candidate
done
if [[ -z "$sanitizer" ]]; then
  echo "gpu_check: compute-sanitizer was not found (it ships with the CUDA toolkit)" >&2
  exit 1
fi

# GPU hosts are usually offline: check, but do not wait on apt (set CUGRAD_SKIP_APT=0 to allow it).
CUGRAD_SKIP_APT=${CUGRAD_SKIP_APT:-1} bash scripts/setup_deps.sh
bash scripts/configure.sh -DCUGRAD_BUILD_TESTS=ON
cmake --build "$build_dir" --parallel "${JOBS:-$(nproc)}"

echo "== gpu tests"
ctest_log=$(mktemp)
ctest --test-dir "$build_dir" -L gpu --output-on-failure --no-tests=error | tee "$ctest_log"
# A GPU entry that skipped (no device seen) is a failure here.
if grep -q '(Skipped)' "$ctest_log"; then
  echo "gpu_check: some GPU tests skipped themselves on this machine" >&2
  exit 1
fi
rm -f "$ctest_log"

mapfile -t programs < <(find "$build_dir/tests" -maxdepth 1 -type f -name '*_test' -perm -u+x | sort)
if ((${#programs[@]} == 0)); then
  echo "gpu_check: no test programs in $build_dir/tests" >&2
  exit 1
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
failed=()
for tool in $tools; do
  for program in "${programs[@]}"; do
    name="$(basename "$program") ($tool)"
    if "$sanitizer" --tool "$tool" --error-exitcode 1 "$program" --gtest_filter='*GPU*' >"$log" 2>&1 &&
       ! grep -q '^\[  SKIPPED \]' "$log"; then
      echo "ok      $name"
    else
      echo "FAILED  $name"
      tail -n 40 "$log"
      failed+=("$name")
    fi
  done
done
if ((${#failed[@]} > 0)); then
  echo "gpu_check: ${#failed[@]} failed: ${failed[*]}" >&2
  exit 1
fi
echo "gpu_check: gpu tests pass and compute-sanitizer ($tools) reports no errors"
