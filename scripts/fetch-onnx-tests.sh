#!/usr/bin/env bash
# Fetches the ONNX backend node conformance tests into .cache/onnx-node-tests/ (idempotent).
#
# Why a wheel: the pinned onnx wheel on PyPI still ships onnx/backend/test/data/node (the wheels
# from about 1.21 on no longer do), so a plain `pip download` plus `unzip` of that one directory
# gives the official model.onnx + test_data_set_* files without building onnx or running Python.
#
# Usage: scripts/fetch-onnx-tests.sh [CACHE_DIR]   (default: <repo>/.cache/onnx-node-tests)
# Afterwards CACHE_DIR holds one directory per node test (test_abs/, test_add_bcast/, ...).
set -euo pipefail

ONNX_VERSION="1.20.1"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache_dir="${1:-$repo_root/.cache/onnx-node-tests}"
source "$repo_root/scripts/lib/cache.sh"

# Skip the download when this exact version is already unpacked.
if cache_is_current "$cache_dir" .onnx-version "$ONNX_VERSION"; then
    echo "onnx node tests $ONNX_VERSION already in $cache_dir"
    exit 0
fi

require_tools fetch-onnx-tests unzip python3

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Any wheel of the version carries the same test data; --no-deps keeps the download to one file.
python3 -m pip download --quiet --no-deps "onnx==$ONNX_VERSION" -d "$work/wheel"
wheel="$(ls "$work"/wheel/onnx-"$ONNX_VERSION"-*.whl | head -n 1)"
unzip -q "$wheel" 'onnx/backend/test/data/node/*' -d "$work/unpacked"

cache_install "$work/unpacked/onnx/backend/test/data/node" "$cache_dir" .onnx-version "$ONNX_VERSION"
echo "onnx node tests $ONNX_VERSION: $(find "$cache_dir" -mindepth 1 -maxdepth 1 -type d | wc -l) tests in $cache_dir"
