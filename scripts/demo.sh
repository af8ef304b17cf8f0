#!/usr/bin/env bash
# The README's demo command: installs what is missing (including Debian's dataset-fashion-mnist),
# builds cugrad and its examples, and runs train -> finetune -> adversarial -> inspect on
# Fashion-MNIST. With a GPU it uses DESIGN.md's reference recipe (about a minute on an H100);
# without one it announces and uses a smaller network and subset so it still finishes on a
# CPU in a few minutes. Outputs (CSV, PNG, the checkpoint) go to $DEMO_OUT (default demo-out/).
#   BUILD_DIR (default build), CUDA_ARCHS (default 90), BUILD_TYPE (default Release), JOBS,
#   DATA (default /usr/share/datasets/fashion-mnist), DEMO_DEVICE (auto, cpu, cuda)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

build_dir=${BUILD_DIR:-build}
data=${DATA:-/usr/share/datasets/fashion-mnist}
out=${DEMO_OUT:-demo-out}
device=${DEMO_DEVICE:-auto}
bash scripts/setup_deps.sh
if [[ ! -f "$data/train-images-idx3-ubyte.gz" && ! -f "$data/train-images-idx3-ubyte" ]]; then
  echo "demo: Fashion-MNIST is not in $data; install Debian's dataset-fashion-mnist package or set DATA" >&2
  exit 1
fi
bash scripts/configure.sh -DCUGRAD_BUILD_EXAMPLES=ON
cmake --build "$build_dir" --parallel "${JOBS:-$(nproc)}" --target demo train finetune adversarial inspect map_vs_mle

bin="$build_dir/examples"
gpu=0
if [[ "$device" != cpu ]] && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  gpu=1
fi
common=(--data "$data" --out "$out" --device "$device")
if ((gpu)); then
  echo "== demo on the GPU: the reference recipe (width 64, 5 epochs, all 60000 images)"
  train=(--epochs 5)
  finetune=(--epochs 3 --finetune-epochs 2)
  adversarial=(--images 2000)
  inspect=(--steps 200)
else
  echo "== demo without a GPU: a smaller network (width 8) on subsets, so that the CPU finishes in minutes"
  echo "   (the GPU demo trains width 64 on all 60000 images for 5 epochs)"
  train=(--width 8 --epochs 2 --max-train 6000 --max-test 2000)
  finetune=(--width 8 --epochs 2 --finetune-epochs 2 --max-train 4000 --max-test 1000 --timing-steps 5)
  adversarial=(--width 8 --images 500 --pgd-steps 10)
  inspect=(--width 8 --steps 40 --every 20 --max-train 3000)
fi
"$bin/demo"
echo "== train";       "$bin/train" "${common[@]}" "${train[@]}"
echo "== finetune";    "$bin/finetune" "${common[@]}" "${finetune[@]}"
echo "== adversarial"; "$bin/adversarial" "${common[@]}" "${adversarial[@]}"
echo "== inspect";     "$bin/inspect" "${common[@]}" "${inspect[@]}"
echo "demo: outputs in $out/"
