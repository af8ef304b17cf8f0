#!/usr/bin/env bash
# Runs every test program's GPU tests in the cugrad image (docker run --gpus all cugrad cugrad-gpu-tests);
# a test that skips for lack of a GPU counts as a failure here.
set -uo pipefail
failed=0
for t in /opt/cugrad/tests/*_test; do
  log=$(mktemp)
  if (cd /opt/cugrad/tests && "$t" --gtest_filter='*GPU*' >"$log" 2>&1) && ! grep -q '^\[  SKIPPED \]' "$log"; then
    echo "ok      $(basename "$t")"
  else
    echo "FAILED  $(basename "$t")"; tail -n 30 "$log"; failed=1
  fi
  rm -f "$log"
done
exit $failed
