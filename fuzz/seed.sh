#!/usr/bin/env bash
# Fills fuzz/corpus/<target>/ with seed inputs from the project's test data (idempotent; the
# fuzzer adds what it finds beside them). Uses target/debug/tessera, when built, to write
# artifacts and .npy files, and the real-model venv's numpy, when present, for the .npy dtypes
# and layouts the reader accepts.
set -euo pipefail
cd "$(dirname "$0")/.."
corpus=fuzz/corpus
mkdir -p "$corpus"/{onnx_import,mlir_parse,npy_read,artifact_load,rule_parse,elf_read,stablehlo_parse}

# ONNX: the node-test models (scripts/fetch-onnx-tests.sh) and the committed fixtures.
find -L .cache/onnx-node-tests tests/fixtures -name '*.onnx' 2>/dev/null | while read -r f; do
  cp "$f" "$corpus/onnx_import/$(sha256sum "$f" | cut -c1-16).onnx"
done
# MLIR: the pass test data and the examples.
find tests/data examples -name '*.mlir' | while read -r f; do
  cp "$f" "$corpus/mlir_parse/$(sha256sum "$f" | cut -c1-16).mlir"
done
# StableHLO: the cases JAX wrote (scripts/stablehlo/setup.sh), both forms, and the export
# test data.
find -L .cache/stablehlo/cases tests/data -name '*.stablehlo.mlir' 2>/dev/null | while read -r f; do
  cp "$f" "$corpus/stablehlo_parse/$(sha256sum "$f" | cut -c1-16).mlir"
done
# Rule files: the built-in rules.
cp passes/rules/*.rules "$corpus/rule_parse/"

tessera=target/debug/tessera
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
if [ -x "$tessera" ]; then
  for model in examples/mlp.mlir examples/transformer_block.mlir; do
    name=$(basename "$model" .mlir)
    for target in cpu cuda:sm_90; do
      out="$scratch/$name-${target%%:*}"
      "$tessera" compile "$model" --target "$target" --dim batch=2 -o "$out" >/dev/null
      { cat "$out/manifest.json"; printf '\0'; cat "$out/rank0/program.json"; } > "$corpus/artifact_load/$name-${target%%:*}"
      # ELF: the CPU kernels objects (the only ELF files an artifact carries for the loader).
      if [ -f "$out/rank0/kernels.so" ]; then cp "$out/rank0/kernels.so" "$corpus/elf_read/$name.so"; fi
    done
    "$tessera" run "$model" --random-inputs 1 --dim batch=2 -o "$scratch/$name-outputs" >/dev/null
    for f in "$scratch/$name-outputs"/*.npy; do cp "$f" "$corpus/npy_read/$name-$(basename "$f")"; done
  done
fi
python=.cache/real-models/venv/bin/python
if [ -x "$python" ]; then
  "$python" - "$corpus/npy_read" <<'PY'
import sys, numpy as np
d = sys.argv[1]
np.save(f"{d}/f32.npy", np.arange(6, dtype=np.float32).reshape(2, 3))
np.save(f"{d}/f64-fortran.npy", np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)))
np.save(f"{d}/i64-big-endian.npy", np.arange(4, dtype=">i8"))
np.save(f"{d}/bool.npy", np.array([True, False, True]))
np.save(f"{d}/f16-scalar.npy", np.float16(1.5))
np.save(f"{d}/i32-empty.npy", np.zeros((0, 3), dtype=np.int32))
np.lib.format.write_array(open(f"{d}/v2.npy", "wb"), np.ones(3, dtype=np.uint8), version=(2, 0))
PY
fi
for t in "$corpus"/*; do echo "$(basename "$t"): $(ls "$t" | wc -l) seeds"; done
