#!/usr/bin/env bash
# Runs a command and passes only when it exits 0 and its output (stdout and stderr) matches an
# extended regular expression: the example smoke tests check that each program ends with its
# progress bar's final line (loss, accuracy, images per second), not only that it exits cleanly.
#   expect_output.sh REGEX command [args...]
# A nonzero exit status is passed through (77: the data set is missing, a skip for CTest).
# EXPECT_STATUS=N: the command must exit with status N instead (then the script exits 0 when it
# did and the output matches, 1 otherwise), for tests of an error path.
set -u
pattern=$1
shift
out=$("$@" 2>&1)
rc=$?
printf '%s\n' "$out"
if [ -n "${EXPECT_STATUS:-}" ]; then
  if [ "$rc" -ne "$EXPECT_STATUS" ]; then
    echo "expect_output.sh: exit status $rc, expected $EXPECT_STATUS" >&2
    exit 1
  fi
elif [ "$rc" -ne 0 ]; then
  exit "$rc"
fi
if ! grep -Eq -- "$pattern" <<<"$out"; then
  echo "expect_output.sh: no line of the output matches: $pattern" >&2
  exit 1
fi
