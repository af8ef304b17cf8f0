# Sourced by gpu_session.sh on a machine we cannot install packages on (the device tool's GPU
# machine: no internet, no apt). For each build dependency that the system lacks, it points
# CMake at a fallback carried in $DEPS (see scripts/make_gpu_deps.sh) and says so in the log;
# a dependency the system has is left to CMake's normal search. Results:
#   cugrad_cmake_extra   array of extra cmake arguments
#   LD_LIBRARY_PATH      extended with the fallback libraries' folders (exported)
# Needs: $DEPS (may be empty or missing: then nothing is added), $out (log folder).
cugrad_cmake_extra=()
_deps_log() { echo "deps: $*" | tee -a "$out/deps.txt"; }
_sys_inc=(/usr/include /usr/local/include /usr/include/x86_64-linux-gnu /usr/include/openblas
  /usr/include/libpng16)
_sys_lib=(/usr/lib/x86_64-linux-gnu /lib/x86_64-linux-gnu /usr/lib /usr/local/lib /usr/lib64)
# CUGRAD_DEPS_FORCE=1 takes every fallback but cuDNN's (to test them on a machine that has all).
_has_inc() { [[ -z "${CUGRAD_DEPS_FORCE:-}" ]] || return 1; local d; for d in "${_sys_inc[@]}"; do [[ -e $d/$1 ]] && return 0; done; return 1; }
_has_lib() { [[ -z "${CUGRAD_DEPS_FORCE:-}" ]] || return 1; local d n; for d in "${_sys_lib[@]}"; do for n in "$@"; do compgen -G "$d/$n" > /dev/null && return 0; done; done; return 1; }
_add_ld() { export LD_LIBRARY_PATH="$1${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; }

if [[ -z "${DEPS:-}" || ! -d "$DEPS" ]]; then
  _deps_log "no DEPS folder: CMake searches the system only"
  return 0 2> /dev/null || exit 0
fi
DEPS=$(cd "$DEPS" && pwd)

if ! _has_lib 'cmake/GTest/GTestConfig.cmake' 'libgtest.a' 'libgtest.so'; then
  _deps_log "GoogleTest missing: building the carried source"
  cmake -S "$DEPS/googletest" -B /tmp/gtest-build -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX=/tmp/gtest -DBUILD_GMOCK=OFF > "$out/deps_gtest.log" 2>&1 &&
    cmake --build /tmp/gtest-build --target install >> "$out/deps_gtest.log" 2>&1 ||
    _deps_log "GoogleTest build FAILED (deps_gtest.log)"
  cugrad_cmake_extra+=(-DGTest_DIR=/tmp/gtest/lib/cmake/GTest)
fi
if ! _has_inc nlohmann/json.hpp; then
  _deps_log "nlohmann-json missing: carried header"
  cugrad_cmake_extra+=(-Dnlohmann_json_DIR="$DEPS/json/share/cmake/nlohmann_json")
fi
if ! _has_lib 'libopenblas.so' 'openblas-pthread/libopenblas.so'; then
  _deps_log "OpenBLAS missing: carried netlib BLAS (slow, CPU reference paths only)"
  cugrad_cmake_extra+=(-DCMAKE_LIBRARY_PATH="$DEPS/blas/lib")
  _add_ld "$DEPS/blas/lib"
fi
if ! _has_inc cblas.h; then
  _deps_log "cblas.h missing: carried netlib header"
  cugrad_cmake_extra+=(-DCUGRAD_CBLAS_INCLUDE_DIR="$DEPS/blas/include")
fi
if ! _has_inc zlib.h || ! _has_lib 'libz.so'; then
  _deps_log "zlib development files missing: carried"
  cugrad_cmake_extra+=(-DZLIB_INCLUDE_DIR="$DEPS/zlib/include" -DZLIB_LIBRARY="$DEPS/zlib/lib/libz.so")
fi
if ! _has_inc png.h || ! _has_lib 'libpng.so' 'libpng16.so'; then
  _deps_log "libpng development files missing: carried"
  cugrad_cmake_extra+=(-DPNG_PNG_INCLUDE_DIR="$DEPS/png/include" -DPNG_LIBRARY="$DEPS/png/lib/libpng.so")
  _add_ld "$DEPS/png/lib"
fi
if ! _has_inc CLI/CLI.hpp; then
  _deps_log "CLI11 missing: carried header"
  cugrad_cmake_extra+=(-DCUGRAD_CLI11_INCLUDE_DIR="$DEPS/cli11/include")
fi
if ! CUGRAD_DEPS_FORCE= _has_inc cudnn.h && [[ ! -e /usr/local/cuda/include/cudnn.h ]]; then
  _cudnn=$(python3 -c 'import nvidia.cudnn as m, os; print(os.path.dirname(m.__file__) if m.__file__ else list(m.__path__)[0])' 2> /dev/null)
  if [[ -n "$_cudnn" && -e "$_cudnn/include/cudnn.h" ]]; then
    _deps_log "system cuDNN missing: using PyTorch's wheel at $_cudnn"
    mkdir -p /tmp/cudnn/lib
    ln -sfn "$_cudnn/include" /tmp/cudnn/include
    ln -sf "$_cudnn"/lib/libcudnn.so.9 /tmp/cudnn/lib/libcudnn.so
    cugrad_cmake_extra+=(-DCUDNN_ROOT=/tmp/cudnn)
    _add_ld "$_cudnn/lib"
  else
    _deps_log "cuDNN missing and no wheel found: configure will fail"
  fi
fi
_deps_log "extra cmake arguments: ${cugrad_cmake_extra[*]:-(none)}"
