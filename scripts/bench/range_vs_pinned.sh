#!/usr/bin/env bash
# Range artifact (compile --dim NAME=LO..HI) vs pinned artifact (--dim NAME=N) at the same size,
# on the model corpus (scripts/model-corpus/setup.sh); usage: range_vs_pinned.sh TESSERA [RUNS]
# Range artifact vs pinned artifact at the same size: the range artifact's first call (which
# compiles that size through the pinned pipeline, `tessera run` caches it), then the median of N
# runs with weights resident for both.
set -euo pipefail
T=${1:?tessera binary}
N=${2:-50}
C=$(cd "$(dirname "$0")/../.." && pwd)/.cache/model-corpus/corpus
W=$(mktemp -d)
bench() { # model label pinned-dims range-dims shape inputs...
  local m=$1 label=$2 pinned=$3 range=$4 shape=$5; shift 5
  local ins=()
  for spec in "$@"; do ins+=(--input "${spec%%=*}=$C/$m/$shape/inputs/${spec#*=}"); done
  $T compile $C/$m/model.onnx $pinned -o $W/$m-pinned >/dev/null
  $T compile $C/$m/model.onnx $range -o $W/$m-range >/dev/null
  p=$($T run $W/$m-pinned "${ins[@]}" -o $W/o1 --timing --repeat $N 2>&1 | sed -n 's/.*median \([0-9.]*\) s.*/\1/p')
  rt=$($T run $W/$m-range "${ins[@]}" -o $W/o2 --timing --repeat $N 2>&1)
  f=$(echo "$rt" | sed -n 's/^range artifact (compiled per size): \([0-9.]*\) s.*/\1/p')
  r=$(echo "$rt" | sed -n 's/.*median \([0-9.]*\) s.*/\1/p')
  python3 -c "print(f'| $m | $label | {1e3*$p:.3f} ms | {1e3*$f:.0f} ms | {1e3*$r:.3f} ms | {$r/$p:.2f}x |')"
}
echo "| model | size (range) | pinned median | range first call (compiles) | range median | range / pinned (steady) |"
echo "|---|---|---|---|---|---|"
bench gpt2-dynamo "batch=3, sequence=12 (2..3, 7..12)" "--dim batch=3 --dim sequence=12" "--dim batch=2..3 --dim sequence=7..12" shape2 input_ids=0.npy attention_mask=1.npy
bench bert-torchscript "batch=3, sequence=12 (2..3, 7..12)" "--dim batch=3 --dim sequence=12" "--dim batch=2..3 --dim sequence=7..12" shape2 input_ids=0.npy attention_mask=1.npy
bench vit-dynamo "batch=2, 48x40 (1..2, 32..48, 32..40)" "--dim batch=2 --dim height=48 --dim width=40" "--dim batch=1..2 --dim height=32..48 --dim width=32..40" shape2 pixel_values=0.npy
bench ppocr-mobile-v2.0-cls "2x3x48x96 (1..2, 48, 96..192)" "--dim x_dim0=2 --dim x_dim2=48 --dim x_dim3=96" "--dim x_dim0=1..2 --dim x_dim2=48 --dim x_dim3=96..192" shape2 x=0.npy
rm -rf $W
