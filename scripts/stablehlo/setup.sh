#!/usr/bin/env bash
# Sets up the StableHLO cases (tests/e2e/stablehlo.rs): a Python virtual environment in
# .cache/stablehlo/venv with CPU jax/jaxlib pinned by requirements.txt, then
# .cache/stablehlo/cases/ written by generate.py: each case as JAX prints it (custom assembly and
# generic op form), with seeded inputs and JAX's outputs (see generate.py for the layout).
#
# Wheels come from the shared wheel cache (scripts/lib/venv.sh); the cost is recorded in
# BENCHMARKS.md. Idempotent: when the cache was built from this exact script, requirements.txt
# and generate.py, it prints one line and does nothing; otherwise it rebuilds it from scratch.
#
# Usage: scripts/stablehlo/setup.sh
set -euo pipefail

# The paths and the stamp check below share their shape with the other set-up scripts on
# purpose: each names its own cache layout and the inputs its stamp hashes; the shared work
# (building a venv from pinned wheels, skipping a current cache) lives in scripts/lib/.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$here/../.." && pwd)"
# shellcheck source=../lib/venv.sh
source "$repo_root/scripts/lib/venv.sh"
cache="$repo_root/.cache/stablehlo"
venv="$cache/venv"
cases="$cache/cases"
stamp="$cache/.installed"

want="$(cat "$here/setup.sh" "$here/requirements.txt" "$here/generate.py" "$repo_root/scripts/lib/venv.sh" | sha256sum | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$venv/bin/python" && -f "$cases/cases.json" ]]; then
    echo "stablehlo: present in $cache"
    exit 0
fi

venv_require_python stablehlo
started=$SECONDS
echo "stablehlo: building $cache"
rm -rf "$cache"
mkdir -p "$cache"
venv_install_pinned stablehlo "$venv" "$here/requirements.txt"
installed=$SECONDS

JAX_PLATFORMS=cpu "$venv/bin/python" "$here/generate.py" "$cases" 2>"$cache/generate.log" | grep '^stablehlo:' \
    || { echo "stablehlo: generate.py failed, see $cache/generate.log" >&2; tail -20 "$cache/generate.log" >&2; exit 1; }
[[ -f "$cases/cases.json" ]] || { echo "stablehlo: generate.py wrote no cases.json, see $cache/generate.log" >&2; exit 1; }

echo "$want" >"$stamp"
echo "stablehlo: done ($(ls -d "$cases"/*/ | wc -l) cases; install $((installed - started)) s, generate $((SECONDS - installed)) s; venv $(du -sh "$venv" | cut -f1))"
