#!/usr/bin/env bash
# Fetches NVIDIA's PTX assembler (ptxas) and libdevice into .cache/cuda-nvcc/ (idempotent).
#
# Why a wheel: the PyPI wheel nvidia-cuda-nvcc-cu12 carries bin/ptxas and nvvm/libdevice/
# libdevice.10.bc without a CUDA installation (no driver, no root). Codegen links libdevice into
# GPU kernels that use math functions (exp, tanh, erf, ...); the tests assemble every emitted
# PTX kernel with `ptxas -arch=sm_80/sm_90` to prove it is valid.
#
# Usage: scripts/fetch-ptxas.sh [CACHE_DIR]   (default: <repo>/.cache/cuda-nvcc)
# Afterwards CACHE_DIR/bin/ptxas and CACHE_DIR/nvvm/libdevice/libdevice.10.bc exist.
set -euo pipefail

NVCC_VERSION="12.8.93"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache_dir="${1:-$repo_root/.cache/cuda-nvcc}"
source "$repo_root/scripts/lib/cache.sh"

# Skip the download when this exact version is already unpacked.
exit_if_current "$cache_dir" .nvcc-version "$NVCC_VERSION" "ptxas and libdevice"

require_tools fetch-ptxas unzip python3

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The x86-64 Linux wheel; --no-deps keeps the download to one file.
python3 -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
    "nvidia-cuda-nvcc-cu12==$NVCC_VERSION" -d "$work/wheel"
wheel="$(ls "$work"/wheel/nvidia_cuda_nvcc_cu12-"$NVCC_VERSION"-*.whl | head -n 1)"
unzip -q "$wheel" 'nvidia/cuda_nvcc/bin/ptxas' 'nvidia/cuda_nvcc/nvvm/libdevice/*' -d "$work/unpacked"

chmod +x "$work/unpacked/nvidia/cuda_nvcc/bin/ptxas"
cache_install "$work/unpacked/nvidia/cuda_nvcc" "$cache_dir" .nvcc-version "$NVCC_VERSION"
echo "ptxas $("$cache_dir/bin/ptxas" --version | tail -n 1) and libdevice in $cache_dir"
