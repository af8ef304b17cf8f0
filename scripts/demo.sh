#!/usr/bin/env bash
# The README's demo command: installs what is missing, builds cugrad and runs the demo (tensors on
# the GPU when one is visible, else the CPU). Arguments are passed to the demo.
#   BUILD_DIR (default build), CUDA_ARCHS (default 90), BUILD_TYPE (default Release), JOBS
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

build_dir=${BUILD_DIR:-build}
bash scripts/setup_deps.sh
bash scripts/configure.sh -DCUGRAD_BUILD_EXAMPLES=ON
cmake --build "$build_dir" --parallel "${JOBS:-$(nproc)}" --target demo

demo="$build_dir/examples/demo"
if [[ ! -x "$demo" ]]; then
  demo=$(find "$build_dir" -type f -name demo -perm -u+x -print -quit)
fi
if [[ -z "$demo" ]]; then
  echo "demo: the demo program was not found under $build_dir" >&2
  exit 1
fi
exec "$demo" "$@"
