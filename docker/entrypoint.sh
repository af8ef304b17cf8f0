#!/usr/bin/env bash
# Entry point of the cugrad image: `demo-all` (the default) runs the demo sequence of
# scripts/demo.sh with the installed programs; any other command runs as given (train,
# finetune, adversarial, inspect, map_vs_mle, kernels_bench, cugrad-gpu-tests, bash, ...).
set -euo pipefail
if [[ "${1:-demo-all}" != demo-all ]]; then
  exec "$@"
fi
data=${DATA:-/usr/share/datasets/fashion-mnist}
out=${DEMO_OUT:-/work/demo-out}
common=(--data "$data" --out "$out")
if nvidia-smi -L >/dev/null 2>&1; then
  echo "== demo on the GPU: the reference recipe"
  train=(--epochs 5); finetune=(--epochs 3 --finetune-epochs 2); adversarial=(--images 2000); inspect=(--steps 200)
else
  echo "== demo without a GPU (run with --gpus all for the GPU): a smaller network on subsets"
  train=(--width 8 --epochs 2 --max-train 6000 --max-test 2000)
  finetune=(--width 8 --epochs 2 --finetune-epochs 2 --max-train 4000 --max-test 1000 --timing-steps 5)
  adversarial=(--width 8 --images 500 --pgd-steps 10)
  inspect=(--width 8 --steps 40 --every 20 --max-train 3000)
fi
demo
train "${common[@]}" "${train[@]}"
finetune "${common[@]}" "${finetune[@]}"
adversarial "${common[@]}" "${adversarial[@]}"
inspect "${common[@]}" "${inspect[@]}"
