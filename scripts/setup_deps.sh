#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages that cugrad's build, tests and examples need, when they are
# missing, and checks for the CUDA toolkit. Idempotent and quiet: when everything is present it
# prints nothing and touches nothing, so it also works where apt-get is unavailable or offline.
set -euo pipefail

log() { printf 'setup_deps: %s\n' "$*" >&2; }

tmp_dir=$(mktemp -d)
trap 'rm -rf "$tmp_dir"' EXIT

# What each package provides, as probes: cmd:NAME (a program on PATH), header:PATH (an
# #include the C++ compiler finds), link:LIB (a library the linker finds with -lLIB), file:PATH (a
# file that exists, e.g. a data set). Probing
# for the files rather than asking dpkg also accepts tools installed outside the package
# manager (a GPU image with GoogleTest built into /usr/local, say).
# Required: what the build and the tests use today; without them the build cannot succeed.
required=(
  "cmake|cmd:cmake"
  "ninja-build|cmd:ninja"
  "g++|cmd:g++"
  "python3|cmd:python3"
  "pkg-config|cmd:pkg-config"
  "libgtest-dev|header:gtest/gtest.h link:gtest"
  "libopenblas-dev|header:cblas.h link:openblas"
  "nlohmann-json3-dev|header:nlohmann/json.hpp"
  "zlib1g-dev|header:zlib.h link:z"
  "libpng-dev|header:png.h link:png"
  "libcli11-dev|header:CLI/CLI.hpp"
)
# Wanted: libraries and data sets of the io, example and benchmark parts; a warning when absent.
wanted=(
  "libfmt-dev|header:fmt/core.h"
  "libbenchmark-dev|header:benchmark/benchmark.h link:benchmark"
  "dataset-fashion-mnist|file:/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
)

cxx_for_probes() {
  if [[ -n "${CXX:-}" ]] && command -v "${CXX%% *}" >/dev/null 2>&1; then
    printf '%s' "$CXX"
  elif command -v g++ >/dev/null 2>&1; then
    printf 'g++'
  elif command -v c++ >/dev/null 2>&1; then
    printf 'c++'
  fi
}

probe() {  # probe KIND:VALUE -> status 0 when present
  local kind=${1%%:*} value=${1#*:} cxx
  case "$kind" in
    cmd) command -v "$value" >/dev/null 2>&1 ;;
    header)
      cxx=$(cxx_for_probes)
      if [[ -n "$cxx" ]]; then
        printf '#include <%s>\n' "$value" > "$tmp_dir/probe.cpp"
        $cxx -std=c++20 -E -o /dev/null "$tmp_dir/probe.cpp" >/dev/null 2>&1
      else
        local dir
        for dir in /usr/include /usr/local/include /usr/include/*-linux-gnu /usr/include/openblas; do
          [[ -e "$dir/$value" ]] && return 0
        done
        return 1
      fi
      ;;
    link)
      cxx=$(cxx_for_probes)
      [[ -n "$cxx" ]] || return 1
      printf 'int main() { return 0; }\n' > "$tmp_dir/probe_main.cpp"
      $cxx -o "$tmp_dir/probe_main" "$tmp_dir/probe_main.cpp" -Wl,--no-as-needed "-l$value" \
        -L/usr/local/lib >/dev/null 2>&1
      ;;
    file) [[ -f "$value" ]] ;;
    *) log "unknown probe '$1'"; return 1 ;;
  esac
}

missing_of() {  # missing_of ENTRY... -> prints the package names whose probes fail
  local entry pkg probes p
  for entry in "$@"; do
    pkg=${entry%%|*}
    probes=${entry#*|}
    for p in $probes; do
      if ! probe "$p"; then
        printf '%s\n' "$pkg"
        break
      fi
    done
  done
}

run_as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
    sudo -n "$@"
  else
    return 1
  fi
}

install_packages() {  # apt-get install PACKAGES; status 1 when apt is unusable or fails
  # CUGRAD_SKIP_APT=1: never call apt (offline machines, such as the GPU hosts, where apt-get
  # update would only wait for a network that is not there).
  if [[ "${CUGRAD_SKIP_APT:-0}" == 1 ]]; then log "CUGRAD_SKIP_APT=1: not installing $*"; return 1; fi
  command -v apt-get >/dev/null 2>&1 || { log "apt-get is not available"; return 1; }
  local apt_log="$tmp_dir/apt.log"
  log "installing: $*"
  if ! run_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$apt_log" 2>&1 ||
     ! run_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
         "$@" >>"$apt_log" 2>&1; then
    log "apt-get failed (offline, not root, or unknown package); its last lines:"
    tail -n 15 "$apt_log" >&2 || true
    return 1
  fi
}

mapfile -t missing < <(missing_of "${required[@]}" "${wanted[@]}")
if ((${#missing[@]} > 0)); then
  install_packages "${missing[@]}" || true
  mapfile -t missing_required < <(missing_of "${required[@]}")
  mapfile -t missing_wanted < <(missing_of "${wanted[@]}")
  if ((${#missing_wanted[@]} > 0)); then
    log "warning: not found (parts that use them will not build): ${missing_wanted[*]}"
  fi
  if ((${#missing_required[@]} > 0)); then
    log "error: the build needs these and they could not be installed: ${missing_required[*]}"
    log "install them (Debian/Ubuntu: apt-get install ${missing_required[*]}) and run again"
    exit 1
  fi
fi

# CMake 3.24 or newer (CMakeLists.txt's minimum).
cmake_version=$(cmake --version | head -n 1 | grep -Eo '[0-9]+\.[0-9]+(\.[0-9]+)?' | head -n 1)
if [[ "$(printf '%s\n3.24\n' "$cmake_version" | sort -V | head -n 1)" != "3.24" ]]; then
  log "error: CMake $cmake_version is too old; cugrad needs 3.24 or newer"
  exit 1
fi

# The CUDA toolkit (nvcc, cuBLAS, cuRAND) and cuDNN are not Debian packages here: they come
# with NVIDIA's installer or image. The build needs them even on a machine without a GPU.
nvcc=""
if [[ -n "${CUDACXX:-}" && -x "${CUDACXX}" ]]; then
  nvcc=$CUDACXX
elif command -v nvcc >/dev/null 2>&1; then
  nvcc=$(command -v nvcc)
elif [[ -x /usr/local/cuda/bin/nvcc ]]; then
  nvcc=/usr/local/cuda/bin/nvcc
fi
if [[ -z "$nvcc" ]]; then
  log "error: the CUDA toolkit was not found (no nvcc in \$CUDACXX, on PATH or in /usr/local/cuda/bin)."
  log "install CUDA 12 or 13 (https://developer.nvidia.com/cuda-downloads) into /usr/local/cuda,"
  log "or put its bin/ folder on PATH; a GPU is not needed to build and test."
  exit 1
fi
cuda_root=$(cd "$(dirname "$nvcc")/.." && pwd)
cudnn_found=0
for dir in ${CUDNN_ROOT:+"$CUDNN_ROOT/include"} "$cuda_root/include" /usr/local/cuda/include \
           /usr/include /usr/include/*-linux-gnu; do
  if [[ -e "$dir/cudnn.h" ]]; then cudnn_found=1; break; fi
done
if ((cudnn_found == 0)); then
  # A warning, not an error: FindCUDNN also honours CUDNN_ROOT and the CMake search paths.
  log "warning: cuDNN was not found (no cudnn.h in $cuda_root/include or the system include folders)."
  log "install cuDNN 9 for your CUDA version (NVIDIA's cudnn9-cuda-XX package or archive), or set"
  log "CUDNN_ROOT to the folder that holds include/cudnn.h and lib/libcudnn.so"
fi

# cuobjdump and nvdisasm for the static kernel audit (tests: kernel_audit.sm_90); a trimmed
# toolkit lacks them and then they come from NVIDIA's PyPI wheels. Wanted, not required: without
# them that one test reports a skip.
if ! PATH="$cuda_root/bin:$PATH" bash "$(dirname "${BASH_SOURCE[0]}")/fetch_cuda_binutils.sh" >/dev/null; then
  log "warning: no cuobjdump/nvdisasm; the kernel audit test will be skipped"
fi

# huggingface's safetensors package for the interop test (tests/interop: the PyTorch side then
# writes and reads with the format's reference code). Wanted, not required: without it that test
# uses the project's own Python writer and reader and says so.
if ! bash "$(dirname "${BASH_SOURCE[0]}")/fetch_safetensors.sh" >/dev/null; then
  log "warning: no safetensors Python package; resnet18_interop will use the project's own reader"
fi
