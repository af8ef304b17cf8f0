#!/usr/bin/env bash
# The README's test command (and CI's): installs what is missing, builds cugrad with its tests,
# runs the whole suite (GPU tests skip themselves without a GPU), then installs the package into
# a temporary prefix and builds and runs tests/consumer against it; last, it builds the library
# against the CUDA emulator (tests/emu) and runs the GPU suites, the examples on the emulated
# GPU and the benchmarks' smoke mode there, so the CUDA code runs even where no GPU is; then the
# emulator's race check (ThreadSanitizer over the GPU suites).
#   BUILD_DIR (default build), CUDA_ARCHS (default 90), BUILD_TYPE (default Release),
#   JOBS (default: all cores), TEST_TIMEOUT (seconds per test, default 1200),
#   EMU_BUILD_DIR (default build-emu), CUGRAD_SKIP_EMU=1 (leave the emulator stages out),
#   RACE_BUILD_DIR (default build-emu-race), CUGRAD_SKIP_RACECHECK=1 (leave the race check out)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

start=$SECONDS
build_dir=${BUILD_DIR:-build}
jobs=${JOBS:-$(nproc)}
elapsed() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

bash scripts/setup_deps.sh

echo "== configure and build ($build_dir, CUDA architectures ${CUDA_ARCHS:-90}, $jobs jobs)"
build_start=$SECONDS
bash scripts/configure.sh -DCUGRAD_BUILD_TESTS=ON -DCUGRAD_BUILD_EXAMPLES=ON -DCUGRAD_BUILD_BENCH=ON
cmake --build "$build_dir" --parallel "$jobs"
build_time=$((SECONDS - build_start))

echo "== test suite"
test_start=$SECONDS
ctest --test-dir "$build_dir" --output-on-failure --no-tests=error \
  --timeout "${TEST_TIMEOUT:-1200}" --parallel "$jobs"
test_time=$((SECONDS - test_start))

echo "== install and build tests/consumer against the installed package"
work=$(mktemp -d "${TMPDIR:-/tmp}/cugrad-consumer.XXXXXX")
trap 'rm -rf "$work"' EXIT
cmake --install "$build_dir" --prefix "$work/prefix" >/dev/null
cmake -S tests/consumer -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$work/prefix"
# The package must come from the install, not from a build folder found some other way.
if ! grep -q "^cugrad_DIR:PATH=$work/prefix/" "$work/build/CMakeCache.txt"; then
  echo "test: tests/consumer did not find cugrad in $work/prefix" >&2
  grep '^cugrad_DIR' "$work/build/CMakeCache.txt" >&2 || true
  exit 1
fi
cmake --build "$work/build"
"$work/build/app"

emu_time=0
if [[ "${CUGRAD_SKIP_EMU:-0}" != 1 ]]; then
  echo "== CUDA emulator: the kernels and the GPU suites on the CPU (tests/emu; no GPU is used or claimed)"
  emu_start=$SECONDS
  emu_dir=${EMU_BUILD_DIR:-build-emu}
  cmake -S tests/emu -B "$emu_dir" -G Ninja
  cmake --build "$emu_dir" --parallel "$jobs"
  ctest --test-dir "$emu_dir" --output-on-failure --no-tests=error --timeout 1800 --parallel "$jobs"
  emu_time=$((SECONDS - emu_start))
fi

race_time=0
if [[ "${CUGRAD_SKIP_EMU:-0}" != 1 && "${CUGRAD_SKIP_RACECHECK:-0}" != 1 ]]; then
  echo "== CUDA emulator race check: the GPU suites under ThreadSanitizer (tests/emu/emu_tsan.h)"
  race_start=$SECONDS
  race_dir=${RACE_BUILD_DIR:-build-emu-race}
  cmake -S tests/emu -B "$race_dir" -G Ninja -DCUGRAD_EMU_RACECHECK=ON
  cmake --build "$race_dir" --parallel "$jobs"
  race_ctest=(ctest --test-dir "$race_dir" -L racecheck --output-on-failure --no-tests=error --timeout 3600
    --parallel "$jobs")
  # ThreadSanitizer's fixed memory layout can collide with kernels that randomize 32 bits of mmap
  # addresses ("unexpected memory mapping"): run it with address randomization off where allowed.
  if command -v setarch >/dev/null && setarch "$(uname -m)" -R true 2>/dev/null; then
    setarch "$(uname -m)" -R "${race_ctest[@]}"
  else
    "${race_ctest[@]}"
  fi
  race_time=$((SECONDS - race_start))
fi

echo "== done: build $(elapsed "$build_time"), tests $(elapsed "$test_time"), emulator $(elapsed "$emu_time"), race check $(elapsed "$race_time"), total $(elapsed $((SECONDS - start)))"
