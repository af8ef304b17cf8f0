#!/usr/bin/env bash
# Builds stand-ins for the two NVIDIA base images docker/Dockerfile starts from, for a machine
# where Docker runs but NVIDIA's registry (nvcr.io / Docker Hub) cannot be reached and Ubuntu's
# archive can: an Ubuntu 24.04 root file system from debootstrap, plus the local CUDA 13.0
# toolkit and cuDNN 9 laid out as NVIDIA's images lay them out (toolkit in /usr/local/cuda-13.0,
# cuDNN's headers and libraries in the system folders as the libcudnn9-*-cuda-13 packages put
# them, the images' environment variables). Tagged with the real images' names, so the
# unchanged Dockerfile builds on them:
#
#   sudo bash docker/standin_bases.sh           # needs debootstrap, a running Docker daemon
#   docker build --network host -f docker/Dockerfile -t cugrad .
#   docker run --rm cugrad                      # the demo without a GPU
#
# What this checks and what it does not: the Dockerfile's own steps (Ubuntu 24.04 package names,
# the build with Ubuntu's g++ and CMake, the CPU tests, the install, the runtime stage's
# libraries, the entry point and the demo) run for real; NVIDIA's images themselves are not
# used, so a difference between them and these stand-ins would not show (the runtime stand-in
# carries only the CUDA libraries cugrad links: cudart, cuBLAS/cuBLASLt, cuRAND and cuDNN).
set -euo pipefail
cuda=${CUDA_DIR:-/usr/local/cuda}
cuda=$(readlink -f "$cuda")
version=${CUDA_VERSION:-13.0.0}
work=${WORK:-/tmp/cugrad-standin}
mirror=${UBUNTU_MIRROR:-http://archive.ubuntu.com/ubuntu}

command -v debootstrap >/dev/null || { echo "standin_bases: debootstrap is not installed" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "standin_bases: no Docker daemon answers" >&2; exit 1; }
[[ -x "$cuda/bin/nvcc" ]] || { echo "standin_bases: no nvcc in $cuda (set CUDA_DIR)" >&2; exit 1; }
cudnn_h=$(find "$cuda/include" /usr/include /usr/local/include -maxdepth 2 -name cudnn.h 2>/dev/null | head -1)
cudnn_so=$(find "$cuda/lib" "$cuda/lib64" /usr/lib/x86_64-linux-gnu -maxdepth 1 -name 'libcudnn.so.9*' 2>/dev/null | head -1)
[[ -n "$cudnn_h" && -n "$cudnn_so" ]] || { echo "standin_bases: cuDNN 9 not found" >&2; exit 1; }
cudnn_inc=$(dirname "$cudnn_h")
cudnn_lib=$(dirname "$cudnn_so")

# debootstrap releases before 1.0.134 do not know noble; its script is gutsy's, as for every Ubuntu.
scripts=/usr/share/debootstrap/scripts
[[ -e $scripts/noble ]] || ln -s gutsy "$scripts/noble"

rm -rf "$work" && mkdir -p "$work"
base="$work/noble"
echo "== debootstrap Ubuntu 24.04 (minbase) from $mirror"
debootstrap --variant=minbase --no-check-gpg --components=main,universe noble "$base" "$mirror" \
  >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log"; exit 1; }
cat >"$base/etc/apt/sources.list" <<EOF
deb $mirror noble main restricted universe multiverse
deb $mirror noble-updates main restricted universe multiverse
deb $mirror noble-security main restricted universe multiverse
EOF
rm -rf "$base/var/cache/apt/archives/"*.deb "$base/var/lib/apt/lists/"*

env_changes=(
  -c "ENV PATH=/usr/local/nvidia/bin:/usr/local/cuda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  -c "ENV LD_LIBRARY_PATH=/usr/local/nvidia/lib:/usr/local/nvidia/lib64"
  -c "ENV NVIDIA_VISIBLE_DEVICES=all"
  -c "ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility"
  -c "ENV CUDA_VERSION=$version"
  -c "CMD [\"/bin/bash\"]")
major=${version%%.*}
short=${version%.*}

# The devel stand-in: the whole toolkit, cuDNN moved to the system folders.
devel="$work/devel"
cp -a "$base" "$devel"
mkdir -p "$devel/usr/local/cuda-$short"
tar -C "$cuda" --exclude='lib*/libcudnn*' --exclude='include/cudnn*' -cf - . | tar -C "$devel/usr/local/cuda-$short" -xf -
ln -s "cuda-$short" "$devel/usr/local/cuda"
mkdir -p "$devel/usr/include/x86_64-linux-gnu" "$devel/usr/lib/x86_64-linux-gnu"
cp -a "$cudnn_inc"/cudnn*.h "$devel/usr/include/x86_64-linux-gnu/"
for h in "$devel"/usr/include/x86_64-linux-gnu/cudnn*.h; do ln -s "x86_64-linux-gnu/$(basename "$h")" "$devel/usr/include/$(basename "$h")"; done
cp -a "$cudnn_lib"/libcudnn*.so* "$devel/usr/lib/x86_64-linux-gnu/"
echo "/usr/local/cuda-$short/lib64" >"$devel/etc/ld.so.conf.d/988_cuda-$major.conf"
chroot "$devel" ldconfig
tag_devel="nvidia/cuda:$version-cudnn-devel-ubuntu24.04"
echo "== importing $tag_devel (stand-in)"
tar -C "$devel" -cf - . | docker import "${env_changes[@]}" - "$tag_devel" >/dev/null

# The runtime stand-in: the shared libraries cugrad links, cuDNN's runtime libraries.
runtime="$work/runtime"
cp -a "$base" "$runtime"
mkdir -p "$runtime/usr/local/cuda-$short/lib64" "$runtime/usr/lib/x86_64-linux-gnu"
for lib in libcudart libcublas libcublasLt libcurand; do
  cp -a "$(readlink -f "$cuda/lib64")"/$lib.so.* "$runtime/usr/local/cuda-$short/lib64/"
done
cp -a "$cudnn_lib"/libcudnn*.so.* "$runtime/usr/lib/x86_64-linux-gnu/"
ln -s "cuda-$short" "$runtime/usr/local/cuda"
echo "/usr/local/cuda-$short/lib64" >"$runtime/etc/ld.so.conf.d/988_cuda-$major.conf"
chroot "$runtime" ldconfig
tag_runtime="nvidia/cuda:$version-cudnn-runtime-ubuntu24.04"
echo "== importing $tag_runtime (stand-in)"
tar -C "$runtime" -cf - . | docker import "${env_changes[@]}" - "$tag_runtime" >/dev/null

rm -rf "$work"
docker image ls nvidia/cuda
