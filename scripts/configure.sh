#!/usr/bin/env bash
# Configures cugrad's build folder the way the README's commands do (used by test.sh and demo.sh):
# Ninja, Release, CUDA architectures from CUDA_ARCHS (default 90, the H100's).
#   BUILD_DIR   build folder (default: build)
#   CUDA_ARCHS  CMAKE_CUDA_ARCHITECTURES, e.g. "80;90" (default: 90)
#   BUILD_TYPE  CMAKE_BUILD_TYPE (default: Release)
# Extra arguments are passed to cmake.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

build_dir=${BUILD_DIR:-build}
cache="$build_dir/CMakeCache.txt"
if [[ -f "$cache" ]] && ! grep -q '^CMAKE_GENERATOR:INTERNAL=Ninja$' "$cache"; then
  echo "configure: $build_dir was configured with another generator; remove it or set BUILD_DIR" >&2
  exit 1
fi
cmake -S . -B "$build_dir" -G Ninja \
  -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}" \
  -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-90}" \
  "$@"
