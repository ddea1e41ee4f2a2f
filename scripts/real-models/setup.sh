#!/usr/bin/env bash
# Sets up the real-model tests (tests/e2e/real_models.rs): a Python virtual environment in
# .cache/real-models/venv with the pinned packages of requirements.txt (onnxruntime as the
# reference, and the PyPI packages that ship the models), and the model files copied out of them
# into .cache/real-models/models/.
#
# Idempotent: when the cache was built from this exact script and requirements.txt, it prints one
# line and does nothing. Otherwise it rebuilds the cache from scratch, so an interrupted or older
# install never survives half-updated.
#
# Usage: scripts/real-models/setup.sh
set -euo pipefail

# The paths and the stamp check below share their shape with the other set-up scripts on
# purpose: each names its own cache layout and the inputs its stamp hashes; the shared work
# (building a venv from pinned wheels, skipping a current cache) lives in scripts/lib/.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$here/../.." && pwd)"
cache="$repo_root/.cache/real-models"
venv="$cache/venv"
models="$cache/models"
stamp="$cache/.installed"

want="$(cat "$here/setup.sh" "$here/requirements.txt" | sha256sum | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$venv/bin/python" ]]; then
    echo "real-models: environment present in $cache"
    exit 0
fi

command -v python3 >/dev/null || { echo "real-models: python3 is required" >&2; exit 1; }
if ! python3 -c 'import ensurepip' 2>/dev/null; then
    # Debian splits venv's pip bootstrap into its own package.
    sudo_cmd=()
    [[ "$(id -u)" -ne 0 ]] && sudo_cmd=(sudo)
    echo "real-models: installing python3-venv"
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
fi

echo "real-models: building $cache"
rm -rf "$cache"
mkdir -p "$cache"
python3 -m venv "$venv"
# --no-deps: requirements.txt pins the whole environment, dependencies included, and the model
# packages' own dependencies (OpenCV, Shapely, ...) are not needed to read their .onnx files.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    -r "$here/requirements.txt"

site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
mkdir -p "$models"
# name in models/        <- file inside the installed package
while read -r name source; do
    cp "$site/$source" "$models/$name"
done <<'EOF'
magika-standard_v3_3.onnx          magika/models/standard_v3_3/model.onnx
ppocr-mobile-v2.0-cls.onnx         rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx
ppocrv4-det.onnx                   rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx
ppocrv4-rec.onnx                   rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx
EOF

# Fail here, not in the tests, when the reference cannot start.
"$venv/bin/python" -c 'import numpy, onnx, onnxruntime'

echo "$want" >"$stamp"
echo "real-models: done ($(ls "$models" | wc -l) models)"
