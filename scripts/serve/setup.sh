#!/usr/bin/env bash
# Sets up the serving tests (tests/e2e/generate.rs): random-init Hugging Face checkpoints (GPT-2
# and Llama with grouped-query attention, f32) with a byte-level BPE tokenizer.json, and the
# greedy tokens transformers generates from them, in .cache/serve/ (make_checkpoints.py says
# what is where).
#
# The Python side is the model corpus's virtual environment (CPU torch, transformers,
# tokenizers, safetensors; scripts/model-corpus/setup.sh builds it from the wheel cache, and is
# itself idempotent), so serving adds no second 4 GB environment and no second pin list.
#
# Idempotent: when .cache/serve was built from this exact script, make_checkpoints.py and the
# corpus's requirements.txt, it prints one line and does nothing; otherwise it rebuilds it.
# About 20 s once the environment exists.
#
# Usage: scripts/serve/setup.sh
set -euo pipefail

# The paths and the stamp check below share their shape with the other set-up scripts on
# purpose: each names its own cache layout and the inputs its stamp hashes; the shared work
# (building a venv from pinned wheels, skipping a current cache) lives in scripts/lib/.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$here/../.." && pwd)"
cache="$repo_root/.cache/serve"
stamp="$cache/.installed"
python="$repo_root/.cache/model-corpus/venv/bin/python"

want="$(cat "$here/setup.sh" "$here/make_checkpoints.py" "$repo_root/scripts/model-corpus/requirements.txt" | sha256sum | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -f "$cache/reference.json" ]]; then
    echo "serve: test checkpoints present in $cache"
    exit 0
fi

bash "$repo_root/scripts/model-corpus/setup.sh"
started=$SECONDS
echo "serve: building $cache"
rm -rf "$cache"
mkdir -p "$cache"
"$python" "$here/make_checkpoints.py" "$cache" 2>"$cache/make_checkpoints.log" | grep '^serve-data:' \
    || { echo "serve: make_checkpoints.py failed, see $cache/make_checkpoints.log" >&2; tail -20 "$cache/make_checkpoints.log" >&2; exit 1; }
echo "$want" >"$stamp"
echo "serve: done in $((SECONDS - started)) s"
