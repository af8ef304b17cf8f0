#!/usr/bin/env bash
# Makes cuobjdump and nvdisasm available for scripts/kernel_audit.py (the static audit of the
# compiled kernels: registers, spills, load widths). A full CUDA toolkit has them in its bin/;
# a trimmed one (as on the development machines) lacks them, and then this fetches NVIDIA's
# redistributable wheels from PyPI (pinned versions; they read CUDA 13.0 sm_90 binaries) and
# unpacks the two programs into ${CUGRAD_TOOLS_DIR:-$HOME/.cache/cugrad/cuda-binutils}/bin.
# Prints the folder that holds both on success; status 1 (with a reason on stderr) otherwise.
set -euo pipefail

log() { printf 'fetch_cuda_binutils: %s\n' "$*" >&2; }
have_both() { [[ -x "$1/cuobjdump" && -x "$1/nvdisasm" ]]; }

nvcc_dir=""
if command -v nvcc >/dev/null 2>&1; then nvcc_dir=$(dirname "$(command -v nvcc)"); fi
for dir in ${CUDA_BINUTILS_DIR:+"$CUDA_BINUTILS_DIR"} ${nvcc_dir:+"$nvcc_dir"} /usr/local/cuda/bin; do
  if have_both "$dir"; then printf '%s\n' "$dir"; exit 0; fi
done

dest=${CUGRAD_TOOLS_DIR:-${HOME:-/tmp}/.cache/cugrad/cuda-binutils}
if have_both "$dest/bin"; then printf '%s\n' "$dest/bin"; exit 0; fi

command -v python3 >/dev/null 2>&1 || { log "python3 is needed to fetch the wheels"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
wheels=(nvidia-cuda-cuobjdump==13.2.78 nvidia-cuda-nvdisasm==13.5.37)
if ! timeout 300 python3 -m pip download --quiet --no-deps --only-binary=:all: \
      --dest "$work" "${wheels[@]}" >"$work/pip.log" 2>&1; then
  log "pip could not download ${wheels[*]} (offline?); its last lines:"
  tail -n 5 "$work/pip.log" >&2 || true
  exit 1
fi
mkdir -p "$dest/bin"
for whl in "$work"/*.whl; do
  python3 - "$whl" "$dest/bin" <<'EOF'
import os, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if name.endswith(("/bin/cuobjdump", "/bin/nvdisasm")):
            target = os.path.join(out, base)
            with z.open(name) as src, open(target + ".tmp", "wb") as dst:
                dst.write(src.read())
            os.chmod(target + ".tmp", 0o755)
            os.replace(target + ".tmp", target)
EOF
done
if ! have_both "$dest/bin"; then log "the wheels did not contain cuobjdump and nvdisasm"; exit 1; fi
log "installed cuobjdump and nvdisasm into $dest/bin"
printf '%s\n' "$dest/bin"
