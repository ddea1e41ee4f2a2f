#!/usr/bin/env bash
# `tessera serve` under load, one-at-a-time against 16 concurrent (BENCHMARKS.md, issue 18):
# starts the server on a free port (--max-batch 16 --max-seq 256), runs `tessera bench serve`
# with 16 requests at concurrency 1, then 64 requests at concurrency 16 (32 prompt tokens, 64
# generated, all sent at once), prints both JSON reports and stops the server with SIGTERM.
#
# Usage: scripts/serve/bench_serve.sh TESSERA_BIN CHECKPOINT_DIR
set -euo pipefail
bin=$1
checkpoint=$2
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$bin" serve "$checkpoint" --port 0 --max-batch 16 --max-seq 256 >"$scratch/stdout" 2>"$scratch/stderr" &
server=$!
# Compiling the programs for every row count can take minutes on a loaded machine.
for _ in $(seq 3000); do
    grep -q listening "$scratch/stdout" && break
    kill -0 "$server" 2>/dev/null || { cat "$scratch/stderr" >&2; exit 1; }
    sleep 0.2
done
url=$(sed 's#.*listening on ##' "$scratch/stdout")
common=(--url "$url" --input-len 32 --output-len 64 --format json)
echo "concurrency 1: $("$bin" bench serve "${common[@]}" --requests 16 --concurrency 1)"
echo "concurrency 16: $("$bin" bench serve "${common[@]}" --requests 64 --concurrency 16)"
kill -TERM "$server"
wait "$server"
