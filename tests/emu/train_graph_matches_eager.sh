#!/bin/sh
# train --cuda-graph against train on the emulated GPU: the same run (seed, data, 2 epochs of 7
# full batches and a smaller last one, OneCycle changing lr and momentum every step) trained
# eagerly and with every full batch after the warm-up replayed from one CUDA graph (the
# capturable SGD reading the schedule's values from device memory) must save the same checkpoint,
# bit for bit, and log the same losses and accuracies. Exit 77 (a skip) without the data set.
#   train_graph_matches_eager.sh <train binary> <output folder>
set -u
train=$1
out=$2
rm -rf "$out"
common="--device cuda --width 4 --epochs 2 --max-train 500 --max-test 256 --batch-size 64"
"$train" $common --out "$out/eager" > "$out.eager.log" 2>&1
status=$?
[ $status -eq 77 ] && { cat "$out.eager.log"; exit 77; }
[ $status -eq 0 ] || { cat "$out.eager.log"; echo "eager run failed ($status)"; exit 1; }
"$train" $common --cuda-graph --out "$out/graph" > "$out.graph.log" 2>&1 || {
  cat "$out.graph.log"; echo "--cuda-graph run failed"; exit 1; }
grep "steps replayed from one CUDA graph" "$out.graph.log" || { echo "no replay reported"; exit 1; }
grep -q "^train: 11 steps replayed" "$out.graph.log" || { echo "expected 11 replays (4 + 7)"; exit 1; }
cut -d, -f1-4 "$out/eager/train_metrics.csv" > "$out.eager.csv"
cut -d, -f1-4 "$out/graph/train_metrics.csv" > "$out.graph.csv"
diff "$out.eager.csv" "$out.graph.csv" || { echo "losses or accuracies differ"; exit 1; }
cmp "$out/eager/fashion_cnn.safetensors" "$out/graph/fashion_cnn.safetensors" || {
  echo "the checkpoints differ"; exit 1; }
echo "train --cuda-graph: same metrics and checkpoint as the eager run"
