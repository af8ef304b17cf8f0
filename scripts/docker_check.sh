#!/usr/bin/env bash
# Checks docker/Dockerfile end to end on a machine without a GPU, as root: builds the image
# (the build stage runs the CPU tests), then in the runtime image checks that every program
# and test binary finds its libraries, runs every test program's CPU tests, runs the default
# command (the demo; without a GPU it takes the small network on subsets) and checks the files
# it writes, and checks that `cugrad-gpu-tests` fails there (no GPU: a skip is a failure).
#
#   bash scripts/docker_check.sh            # installs docker.io and debootstrap if missing
#
# NVIDIA's base images are used when Docker can pull them; otherwise (no access to the
# registry) docker/standin_bases.sh builds stand-ins from Ubuntu's archive and the local CUDA
# toolkit first (STANDIN=1 forces them). A Docker daemon is started if none answers
# (--iptables=false --bridge=none: the build then runs with --network host).
# Logs: $OUT (default /tmp/cugrad-docker-check). Exit status 0 only when every check passed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
out=${OUT:-/tmp/cugrad-docker-check}
rm -rf "$out" && mkdir -p "$out"
tag=${TAG:-cugrad:check}
failed=0
say() { echo "== $*" | tee -a "$out/summary.txt"; }
fail() {
  echo "FAILED: $*" | tee -a "$out/summary.txt"
  failed=1
}

if ! command -v dockerd > /dev/null || ! command -v debootstrap > /dev/null; then
  say "installing docker.io and debootstrap"
  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y docker.io debootstrap; } \
    > "$out/apt.log" 2>&1 || { fail "apt-get install (apt.log)"; exit 1; }
fi
if ! docker info > /dev/null 2>&1; then
  say "starting dockerd"
  nohup dockerd --iptables=false --bridge=none > "$out/dockerd.log" 2>&1 &
  for _ in $(seq 30); do
    docker info > /dev/null 2>&1 && break
    sleep 1
  done
  docker info > /dev/null 2>&1 || { fail "no Docker daemon (dockerd.log)"; exit 1; }
fi

standin=${STANDIN:-0}
if [[ "$standin" != 1 ]]; then
  for image in nvidia/cuda:13.0.0-cudnn-devel-ubuntu24.04 nvidia/cuda:13.0.0-cudnn-runtime-ubuntu24.04; do
    timeout 300 docker pull "$image" >> "$out/pull.log" 2>&1 || standin=1
  done
fi
if [[ "$standin" == 1 ]]; then
  say "building stand-ins for NVIDIA's base images (docker/standin_bases.sh; pull.log says why)"
  bash docker/standin_bases.sh > "$out/standin.log" 2>&1 || { fail "standin_bases.sh (standin.log)"; exit 1; }
else
  say "NVIDIA's base images pulled"
fi

say "docker build (the build stage runs the CPU tests)"
start=$SECONDS
if docker build --network host -f docker/Dockerfile -t "$tag" . > "$out/build.log" 2>&1; then
  say "built in $((SECONDS - start)) s; $(grep -Eo '[0-9]+% tests passed, [0-9]+ tests failed out of [0-9]+' "$out/build.log" | tail -1)"
else
  fail "docker build (build.log)"
  tail -30 "$out/build.log"
  exit 1
fi

say "libraries of every program and test binary in the runtime image"
docker run --rm --network none --entrypoint bash "$tag" -c \
  'for f in /opt/cugrad/bin/* /opt/cugrad/tests/*; do ldd "$f" | grep "not found" | sed "s|^|$f: |"; done' \
  > "$out/ldd.log" 2>&1
[[ -s "$out/ldd.log" ]] && fail "missing libraries (ldd.log)"

say "every test program's CPU tests in the runtime image"
docker run --rm --network none --entrypoint bash "$tag" -c \
  'cd /opt/cugrad/tests; f=0; for t in ./*_test; do if "$t" --gtest_filter=-*GPU* > /tmp/l 2>&1; then echo "ok $t"; else echo "FAILED $t"; tail -20 /tmp/l; f=1; fi; done; exit $f' \
  > "$out/cpu_tests.log" 2>&1 || fail "CPU tests in the runtime image (cpu_tests.log)"
say "$(grep -c '^ok' "$out/cpu_tests.log") test programs passed"

say "the default command (the demo)"
mkdir -p "$out/demo-out"
start=$SECONDS
if docker run --rm --network none -v "$out/demo-out:/work/demo-out" "$tag" > "$out/demo.log" 2>&1; then
  say "demo finished in $((SECONDS - start)) s"
else
  fail "demo (demo.log)"
fi
for f in fashion_cnn.safetensors train_metrics.csv train_loss.png train_accuracy.png finetune.csv \
  adversarial.csv adversarial_grid.png inspect/layer_stats.csv; do
  [[ -s "$out/demo-out/$f" ]] || fail "the demo did not write $f"
done

if ! command -v nvidia-smi > /dev/null; then
  say "cugrad-gpu-tests without a GPU must fail"
  if docker run --rm --network none "$tag" cugrad-gpu-tests > "$out/gpu_tests.log" 2>&1; then
    fail "cugrad-gpu-tests passed without a GPU (gpu_tests.log)"
  fi
fi

if ((failed)); then
  say "docker check FAILED (logs in $out)"
  exit 1
fi
say "docker check passed (logs in $out)"
