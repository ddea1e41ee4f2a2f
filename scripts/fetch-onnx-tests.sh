#!/usr/bin/env bash
# Generates the ONNX backend node conformance tests of the pinned onnx wheel into
# .cache/onnx-node-tests/ (idempotent).
#
# Why generate: the onnx wheels up to 1.20.x shipped onnx/backend/test/data/node, but from about
# 1.21 on they no longer carry the data, only the case generators (onnx/backend/test/case/node,
# one `export*` function per test, computing expected outputs with onnx's reference
# implementation and NumPy). So the wheel is installed into a throwaway venv, with NumPy and the
# wheel's other dependencies pinned (the expected outputs depend on NumPy's arithmetic), and
# scripts/lib/generate-onnx-node-tests.py writes model.onnx + test_data_set_*/ per case, the
# layout the wheels used to ship. The venv is deleted afterwards; only the data is cached.
#
# Usage: scripts/fetch-onnx-tests.sh [CACHE_DIR]   (default: <repo>/.cache/onnx-node-tests)
# Afterwards CACHE_DIR holds one directory per node test (test_abs/, test_add_bcast/, ...).
set -euo pipefail

ONNX_VERSION="1.23.2"
# What `pip install onnx==1.23.2` resolved on 2026-12-06; pinned so the data is reproducible.
PINNED_DEPS=(numpy==2.4.6 ml_dtypes==0.7.0 protobuf==7.36.2 typing_extensions==4.16.0)
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache_dir="${1:-$repo_root/.cache/onnx-node-tests}"
source "$repo_root/scripts/lib/cache.sh"

# Skip the generation when this exact version is already in place.
exit_if_current "$cache_dir" .onnx-version "$ONNX_VERSION" "onnx node tests"

require_tools fetch-onnx-tests python3

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --only-binary=:all: "onnx==$ONNX_VERSION" "${PINNED_DEPS[@]}"
"$work/venv/bin/python" "$repo_root/scripts/lib/generate-onnx-node-tests.py" "$work/generated" \
    > "$work/generate.log" 2>&1 || { cat "$work/generate.log" >&2; exit 1; }

cache_install "$work/generated/node" "$cache_dir" .onnx-version "$ONNX_VERSION"
echo "onnx node tests $ONNX_VERSION: $(find "$cache_dir" -mindepth 1 -maxdepth 1 -type d | wc -l) tests in $cache_dir"
