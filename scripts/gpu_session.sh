#!/usr/bin/env bash
# One-shot GPU session for the library's device tool (one command of at most 10 minutes, 15
# minutes of device time in all): builds for sm_90, then runs stages in order of value, each
# cut to the time left before a global deadline so that a slow stage never eats the next ones
# and the logs are complete when the device tool's limit arrives. Every log goes to $OUT (or
# gpu-out/); summary.txt has one line per stage.
#
# Stages (STAGES, in this order by default):
#   tests      the gpu-labelled CTest entries (GPU tests must run, not skip)
#   kernels    kernels_bench (BatchNorm, cross-entropy, SGD, AdamW against their targets), smoke first
#   benches    train_step_bench, elementwise_bench, inspect_bench, conv_bench, smoke first
#   examples   train (reference recipe), adversarial, finetune, inspect, map_vs_mle, when DATA is a
#              Fashion-MNIST folder
#   profile    ncu's time per kernel for two training steps of ResNet-18 and the reference CNN
#              (train_step_bench with CUGRAD_BENCH_PROFILE; scripts/ncu_summary.py)
#   ncu        Nsight Compute sections for the kernels of the missed targets
#   tf32       train_step_bench, train and adversarial with TF32 tensor cores allowed
#   torch      bench/compare_torch.py (PyTorch's times, cugrad/PyTorch ratios)
#   memcheck   compute-sanitizer memcheck over every test program's GPU tests
#   racecheck, synccheck, initcheck   the other sanitizers, with whatever time is left
#   graph      (not by default) the model tests (GRAPH_TESTS_REGEX), train and adversarial with
#              CUGRAD_CUDNN_GRAPH=1 (cuDNN's graph API)
#   search     (not by default) conv_bench with cuDNN's timed algorithm search
# The first H100 run (2026-11-26) took: build 41-50 s, tests 82 s, kernels_bench 12 s, the
# other benches 12 s, examples 10 s, compare_torch 38 s, memcheck 87 s, racecheck 283 s for 14
# of 21 programs (conv_test alone 81 s, cross_entropy_test 72 s).
# The third (2026-11-27, 15 minutes of device time in all, one call with SESSION_SECONDS=555):
# build 45 s, tests 95 s, kernels 11 s, the other benches 24 s, examples 15 s, compare_torch
# 50 s, ncu 23 s, the 2-conv profile 4 s, then memcheck, initcheck and racecheck on 8 programs
# (SANITIZE_PROGRAMS) in 277 s (racecheck: fusion_test 99 s, models_test 50 s).
# The fourth (2026-11-27, an H200): one call with SESSION_SECONDS=545 (build 52 s, tests 100 s,
# kernels 16 s, the other benches 25 s, examples 14 s, compare_torch 51 s, ncu 34 s, profile
# 3 s, memcheck + initcheck on 6 programs 109 s, racecheck cut), then a fresh machine for a
# 225 s call: STAGES="tests benches graph memcheck racecheck" TESTS_REGEX="conv_test|cross_entropy_test"
# BENCHES="train_step_bench conv_bench" SANITIZE_PROGRAMS="conv_test cross_entropy_test"
# SANITIZE_FILTER="*Graph*:*Staged*:*Direct*" SESSION_SECONDS=230 (start and transfer ~30 s each call).
# A second call on the still-warm machine can run what the first did not reach, e.g.
#   STAGES="racecheck synccheck" bash scripts/gpu_session.sh   (the build is incremental).
#
#   OUT (log folder), BUILD_DIR (default build-gpu), JOBS (default 16), SESSION_SECONDS (deadline
#   from the start, default 540),
#   STAGES, BENCHES (the benches stage's programs), SANITIZE_FILTER (gtest filter of the sanitizer
#   stages, default every GPU test but the timing ones), PROFILE_MODELS (train_step_bench models for the profile stage), TESTS_REGEX (ctest -R for the tests stage), SANITIZE_PROGRAMS (test programs for
#   the sanitizer stages, default all), DATA (Fashion-MNIST folder, e.g. data/fashion-mnist carried with the working tree),
#   DEPS (fallbacks for build dependencies the machine lacks, made by scripts/make_gpu_deps.sh;
#   see scripts/gpu_deps.sh), PACK (a .tgz path: every log packed there on exit, for a tool that
#   brings back only a few files)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${OUT:-gpu-out}
mkdir -p "$out"
build=${BUILD_DIR:-build-gpu}
start=$SECONDS
deadline=$((start + ${SESSION_SECONDS:-540}))
stages=${STAGES:-tests kernels benches examples profile ncu tf32 torch memcheck racecheck synccheck initcheck}
if [[ -n "${PACK:-}" ]]; then
  mkdir -p "$(dirname "$PACK")"
  trap 'tar czf "$PACK" -C "$out" . 2> /dev/null; cp "$out/summary.txt" "$(dirname "$PACK")/" 2> /dev/null' EXIT
fi
stamp() { echo "[$((SECONDS - start))s] $*" | tee -a "$out/summary.txt"; }
left() { echo $((deadline - SECONDS)); }
# within LIMIT CMD...: runs CMD under a timeout of LIMIT seconds or the time left before the
# deadline (less 5 s for the logs), whichever is smaller; status 124 when it was cut.
within() {
  local limit=$1 t
  shift
  t=$(left)
  t=$((t - 5 < limit ? t - 5 : limit))
  ((t > 0)) || return 124
  timeout "$t" "$@"
}
wanted() { [[ " $stages " == *" $1 "* ]]; }

{ date -u; nvidia-smi; nvcc --version; cmake --version; g++ --version; } > "$out/machine.txt" 2>&1
# shellcheck source=scripts/gpu_deps.sh
source scripts/gpu_deps.sh
stamp "configure + build (stages: $stages; deadline ${SESSION_SECONDS:-540}s)"
configure() {
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DCUGRAD_BUILD_TESTS=ON -DCUGRAD_BUILD_BENCH=ON "${cugrad_cmake_extra[@]}" "$@" >> "$out/configure.log" 2>&1
}
if ! configure -DCUGRAD_BUILD_EXAMPLES=ON; then
  stamp "configure with the examples FAILED (configure.log): again without them"
  rm -rf "$build"
  configure -DCUGRAD_BUILD_EXAMPLES=OFF || { stamp "CONFIGURE FAILED"; tail -40 "$out/configure.log"; exit 1; }
fi
# Keep going past a failing target: whatever did build is still worth running.
if cmake --build "$build" --parallel "${JOBS:-16}" -- -k 0 > "$out/build.log" 2>&1; then
  stamp "built"
else
  stamp "BUILD FAILED for some targets (build.log); running what built"
  grep -E -m 40 'error|FAILED:' "$out/build.log" | tee -a "$out/summary.txt"
fi

# run_bench NAME LIMIT: smoke mode first (a bench that fails there is not given the full run).
run_bench() {
  local b=$1 limit=$2
  [[ -x "$build/bench/$b" ]] || { stamp "bench $b: not built"; return; }
  if ! CUGRAD_BENCH_SMOKE=1 within 60 "$build/bench/$b" > "$out/$b.smoke.txt" 2>&1; then
    stamp "bench $b smoke FAILED or cut: full run skipped (see $b.smoke.txt)"
    return
  fi
  within "$limit" "$build/bench/$b" > "$out/$b.txt" 2>&1
  stamp "bench $b rc=$?"
}

# sanitize TOOL: every test program's GPU tests (or those of SANITIZE_PROGRAMS, names of test
# programs) under compute-sanitizer TOOL until the deadline. The out-of-memory test is left
# out: the failed allocation it provokes on purpose is an API error to the sanitizer. So are the
# timing tests named *DoesNotWait* (ClipGradNormGPU.DoesNotWaitForTheDevice: the call must return
# within 150 ms behind a 300 ms kernel; initcheck serializes the calls and it failed there,
# 2026-11-26, not an error; InspectorGPU's Release/OverwriteDoesNotWaitForLaterCopies likewise).
gpu_filter=${SANITIZE_FILTER:-'*GPU*:-*OutOfMemory*:*DoesNotWait*'}
sanitize() {
  local tool=$1 san t name rc
  san=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  for t in "$build"/tests/*_test; do
    [[ -z "${SANITIZE_PROGRAMS:-}" || " $SANITIZE_PROGRAMS " == *" $(basename "$t") "* ]] || continue
    # A program without GPU tests has nothing to sanitize (the tool errs on a program that
    # makes no CUDA call).
    "$t" --gtest_list_tests --gtest_filter="$gpu_filter" 2> /dev/null | grep -q '^  ' || continue
    (($(left) > 15)) || { stamp "deadline reached before $tool $(basename "$t")"; return; }
    name="$(basename "$t").$tool"
    within 600 "$san" --tool "$tool" --error-exitcode 1 "$t" --gtest_filter="$gpu_filter" > "$out/$name.log" 2>&1
    rc=$?
    stamp "sanitizer $name rc=$rc $(grep -m1 -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/$name.log")"
  done
}

ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
# profile_step MODEL NAME: ncu's time per kernel of two training steps of MODEL (train_step_bench
# with CUGRAD_BENCH_PROFILE, after warm-up and the timed search; the environment, e.g.
# CUGRAD_TF32, passes through), summed per kernel into profile_NAME.txt by scripts/ncu_summary.py.
profile_step() {
  local model=$1 name=$2 rc
  CUGRAD_BENCH_PROFILE=$model within 150 "$ncu" --profile-from-start off --metrics gpu__time_duration.sum \
    --csv --print-units base --log-file "$out/profile_$name.csv" "$build/bench/train_step_bench" \
    > "$out/profile_$name.log" 2>&1
  rc=$?
  python3 scripts/ncu_summary.py "$out/profile_$name.csv" > "$out/profile_$name.txt" 2>&1
  stamp "profile $name rc=$rc: $(head -1 "$out/profile_$name.txt")"
}

for stage in $stages; do
  (($(left) > 10)) || { stamp "deadline reached: stages from '$stage' on not run"; break; }
  case $stage in
    tests)
      within 240 ctest --test-dir "$build" -L gpu ${TESTS_REGEX:+-R "$TESTS_REGEX"} --output-on-failure > "$out/ctest_gpu.log" 2>&1
      stamp "ctest gpu: rc=$? $(grep -E 'tests passed|tests failed' "$out/ctest_gpu.log")"
      grep -E '\(Failed\)|\(Skipped\)|\(Timeout\)' "$out/ctest_gpu.log" | tee -a "$out/summary.txt"
      ;;
    kernels) run_bench kernels_bench 150 ;;
    memcheck | racecheck | synccheck | initcheck) sanitize "$stage" ;;
    benches)
      for b in ${BENCHES:-train_step_bench elementwise_bench inspect_bench conv_bench}; do run_bench "$b" 120; done
      ;;
    torch)
      grep -h '^RESULT ' "$out"/*_bench.txt > "$out/cugrad_results.txt" 2>/dev/null
      if python3 -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
        within 180 python3 bench/compare_torch.py --cugrad "$out/cugrad_results.txt" > "$out/compare_torch.txt" 2>&1
        stamp "compare_torch rc=$?"
      else
        stamp "compare_torch: no PyTorch with CUDA here"
      fi
      ;;
    examples)
      if [[ -n "${DATA:-}" && -d "$DATA" ]]; then
        within 120 "$build/examples/train" --data "$DATA" --out "$out/train" > "$out/train.txt" 2>&1
        stamp "train rc=$? $(grep -m1 '^train: test accuracy' "$out/train.txt")"
        # The same recipe with every full batch replayed from one captured CUDA graph.
        within 120 "$build/examples/train" --data "$DATA" --cuda-graph --out "$out/train.cuda_graph" \
          > "$out/train.cuda_graph.txt" 2>&1
        stamp "train --cuda-graph rc=$? $(grep -m1 '^train: test accuracy' "$out/train.cuda_graph.txt")"
        within 60 "$build/examples/adversarial" --data "$DATA" --out "$out/train" > "$out/adversarial.txt" 2>&1
        stamp "adversarial rc=$?"
        # The other examples, which had not run on a GPU before (issue 6 asks for every one).
        within 90 "$build/examples/finetune" --data "$DATA" --out "$out/finetune" > "$out/finetune.txt" 2>&1
        stamp "finetune rc=$? $(grep -m1 'step time' "$out/finetune.txt")"
        within 60 "$build/examples/inspect" --data "$DATA" --out "$out/inspect" > "$out/inspect.txt" 2>&1
        stamp "inspect rc=$?"
        within 90 "$build/examples/map_vs_mle" --data "$DATA" --out "$out/map_vs_mle" > "$out/map_vs_mle.txt" 2>&1
        stamp "map_vs_mle rc=$? $(grep -m1 'with the prior' "$out/map_vs_mle.txt")"
      else
        stamp "examples: DATA is not a folder; skipped"
      fi
      ;;
    profile)
      # Kernel time per kernel of two training steps (after warm-up and the timed search),
      # under Nsight Compute with one metric; the sums per kernel in profile_<model>.txt.
      for m in ${PROFILE_MODELS:-two_conv_cnn_b256 resnet18_b64 reference_cnn_b256}; do profile_step "$m" "$m"; done
      ;;
    ncu)
      # Nsight Compute's sections for the kernels of the missed kernel targets, one launch each
      # (after warm-up; boost clocks, caches flushed): duration, DRAM throughput, occupancy,
      # warp stall reasons. BatchNorm eval row mode (4096x1024), the cross-entropy group kernel
      # (32768x1000, its first shape) and the max-pool backward (conv_bench).
      sections=(--section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats
        --section MemoryWorkloadAnalysis --section SchedulerStats)
      ncu_one() {  # ncu_one NAME BENCH REGEX
        within 90 "$ncu" --clock-control none --kernel-name-base demangled --kernel-name "regex:$3" \
          --launch-skip 3 --launch-count 1 "${sections[@]}" "$build/bench/$2" > "$out/ncu_$1.txt" 2>&1
        stamp "ncu $1 rc=$? $(grep -m1 -E 'Duration' "$out/ncu_$1.txt" | tr -s ' ')"
      }
      # ncu's demangled names spell template arguments as (int)4, (bool)1 (the first try, with
      # "<4, 1, 1>" as ncu's CSV writes them, matched nothing).
      ncu_one bn_eval_rows batch_norm_bench 'NormalizeFn<\(int\)4, \(bool\)1, \(bool\)1>'
      ncu_one ce_group cross_entropy_bench 'ce_group_rows_kernel<\(int\)4, \(int\)8'
      # The opt-in staged variant (set_cross_entropy_staged_rows), which the bench times after
      # the group kernel at the shapes it applies to.
      ncu_one ce_staged cross_entropy_bench 'ce_staged_rows_kernel<\(int\)8'
      ncu_one max_pool_bwd conv_bench 'max_pool2d_backward_kernel'
      ;;
    tf32)
      # The same steps and examples with TF32 tensor cores allowed (opt-in; strict float32 is
      # the default): how far the train-step and recipe goals are from the float32 floor.
      CUGRAD_TF32=1 within 90 "$build/bench/train_step_bench" > "$out/train_step_bench.tf32.txt" 2>&1
      stamp "bench train_step_bench (TF32) rc=$?"
      # Which kernels the small CNN's step runs with TF32 allowed: on 2026-11-26 TF32 cut its step
      # by 7% only (ResNet-18's by half), so are its convolutions on tensor cores at all?
      CUGRAD_TF32=1 profile_step reference_cnn_b256 reference_cnn_b256_tf32
      if [[ -n "${DATA:-}" && -d "$DATA" ]]; then
        within 60 "$build/examples/train" --data "$DATA" --out "$out/train_tf32" --tf32 true \
          > "$out/train.tf32.txt" 2>&1
        stamp "train (TF32) rc=$? $(grep -m1 '^train: test accuracy' "$out/train.tf32.txt")"
        within 60 "$build/examples/adversarial" --data "$DATA" --out "$out/train_tf32" --tf32 true \
          > "$out/adversarial.tf32.txt" 2>&1
        stamp "adversarial (TF32) rc=$? $(grep -m1 'PGD' "$out/adversarial.tf32.txt")"
      fi
      ;;
    graph)
      # train and adversarial with conv2d's cuDNN calls through the graph API's cached execution
      # plans (cuda/conv_graph.h; opt-in, CUGRAD_CUDNN_GRAPH=1): what the legacy API's per-call
      # host cost does to the recipe and the attack (train_step_bench times the steps both ways).
      # The model-level GPU tests (numerics against the CPU and PyTorch's golden files, bit-for-bit
      # comparisons under deterministic convolutions) with every cuDNN convolution on the graph API.
      CUGRAD_CUDNN_GRAPH=1 within 150 ctest --test-dir "$build" -L gpu -R "${GRAPH_TESTS_REGEX:-models_test|fusion_test|layers_test}" \
        --output-on-failure > "$out/ctest_gpu.graph.log" 2>&1
      stamp "ctest gpu (graph API): rc=$? $(grep -E 'tests passed|tests failed' "$out/ctest_gpu.graph.log")"
      if [[ -n "${DATA:-}" && -d "$DATA" ]]; then
        CUGRAD_CUDNN_GRAPH=1 within 60 "$build/examples/train" --data "$DATA" --out "$out/train_graph" \
          > "$out/train.graph.txt" 2>&1
        stamp "train (graph API) rc=$? $(grep -m1 '^train: test accuracy' "$out/train.graph.txt")"
        CUGRAD_CUDNN_GRAPH=1 within 60 "$build/examples/adversarial" --data "$DATA" --out "$out/train_graph" \
          > "$out/adversarial.graph.txt" 2>&1
        stamp "adversarial (graph API) rc=$? $(grep -m1 'PGD' "$out/adversarial.graph.txt")"
      fi
      ;;
    search)
      # conv_bench with cuDNN's timed algorithm search (train_step_bench and compare_torch time
      # both choices already; the examples search by default).
      CUGRAD_CUDNN_BENCHMARK=1 within 90 "$build/bench/conv_bench" > "$out/conv_bench.search.txt" 2>&1
      stamp "bench conv_bench (cuDNN search) rc=$?"
      ;;
    *) stamp "unknown stage '$stage'" ;;
  esac
done
stamp "done"
