#!/usr/bin/env bash
# Makes the fallback folder that scripts/gpu_deps.sh uses on a GPU machine without apt or
# internet (the device tool's): GoogleTest's source, nlohmann-json and CLI11 headers, netlib
# BLAS/CBLAS (libblas3, libblas-dev), zlib and libpng headers and libraries, from this Debian
# machine's packages. About 9 MB. Usage: scripts/make_gpu_deps.sh [FOLDER] (default data/deps,
# which .gitignore ignores; carry "data" with the device call).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
D=${1:-data/deps}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download libblas3 libblas-dev > /dev/null 2>&1)
for f in "$tmp"/*.deb; do dpkg -x "$f" "$tmp/x"; done
rm -rf "$D"
mkdir -p "$D"/{blas/lib,blas/include,json/include,json/share/cmake,cli11/include,zlib/include,zlib/lib,png/include,png/lib}
cp -r /usr/src/googletest "$D/googletest"
cp -L "$tmp"/x/usr/lib/x86_64-linux-gnu/blas/libblas.so.3 "$D/blas/lib/libopenblas.so"
ln -s libopenblas.so "$D/blas/lib/libblas.so.3"
cp -L /lib/x86_64-linux-gnu/libgfortran.so.5 /lib/x86_64-linux-gnu/libquadmath.so.0 "$D/blas/lib/"
cp "$tmp"/x/usr/include/x86_64-linux-gnu/cblas-netlib.h "$D/blas/include/"
# host/cpu/matmul.cpp names OpenBLAS's index type.
printf '#pragma once\n#include "cblas-netlib.h"\ntypedef CBLAS_INT blasint;\n' > "$D/blas/include/cblas.h"
cp "$tmp"/x/usr/include/x86_64-linux-gnu/cblas_mangling.h "$D/blas/include/"
cp -r /usr/include/nlohmann "$D/json/include/"
cp -r /usr/share/cmake/nlohmann_json "$D/json/share/cmake/"
cp -r /usr/include/CLI "$D/cli11/include/"
cp /usr/include/zlib.h "$D/zlib/include/"
cp /usr/include/zconf.h "$D/zlib/include/" 2> /dev/null || cp /usr/include/x86_64-linux-gnu/zconf.h "$D/zlib/include/"
cp -L /lib/x86_64-linux-gnu/libz.so.1 "$D/zlib/lib/libz.so"
cp /usr/include/libpng16/*.h "$D/png/include/"
cp -L /lib/x86_64-linux-gnu/libpng16.so.16 "$D/png/lib/libpng16.so.16"
ln -s libpng16.so.16 "$D/png/lib/libpng.so"
du -sh "$D"
