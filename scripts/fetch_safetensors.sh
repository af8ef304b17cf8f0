#!/usr/bin/env bash
# Makes the reference safetensors implementation (huggingface's `safetensors` Python package)
# importable for tests/interop/resnet18_interop.py, which then writes the PyTorch side's files
# with safetensors.torch.save_file and reads cugrad's with safetensors.torch.load_file (the
# format's own code, not the project's). When python3 already imports it, nothing is done;
# otherwise the pinned wheel is installed from PyPI into
# ${CUGRAD_TOOLS_DIR:-$HOME/.cache/cugrad}/python (no system change). Prints that folder (or
# "system") on success; status 1 with a reason on stderr otherwise (the test then falls back to
# the project's writer and reader and says so).
set -euo pipefail

log() { printf 'fetch_safetensors: %s\n' "$*" >&2; }
# The interpreter with torch (the interop test re-runs itself under /usr/bin/python3, Debian's
# python3-torch, when the python3 on PATH lacks it).
py=${PYTHON:-}
if [[ -z "$py" ]]; then
  for candidate in python3 /usr/bin/python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import torch' >/dev/null 2>&1; then
      py=$candidate
      break
    fi
  done
fi
[[ -n "$py" ]] || { log "no python3 with torch: nothing to fetch for"; exit 1; }
if "$py" -c 'import safetensors.torch' >/dev/null 2>&1; then echo system; exit 0; fi
dest=${CUGRAD_TOOLS_DIR:-${HOME:-/tmp}/.cache/cugrad}/python
if PYTHONPATH="$dest" "$py" -c 'import safetensors.torch' >/dev/null 2>&1; then echo "$dest"; exit 0; fi
mkdir -p "$dest"
log_file=$(mktemp)
trap 'rm -f "$log_file"' EXIT
if ! timeout 300 "$py" -m pip install --quiet --no-deps --only-binary=:all: --target "$dest" \
      safetensors==0.8.0 >"$log_file" 2>&1; then
  log "pip could not install safetensors==0.8.0 (offline?); its last lines:"
  tail -n 5 "$log_file" >&2 || true
  exit 1
fi
if ! PYTHONPATH="$dest" "$py" -c 'import safetensors.torch' >/dev/null 2>&1; then
  log "safetensors installed into $dest but does not import (is torch installed?)"
  exit 1
fi
echo "$dest"
