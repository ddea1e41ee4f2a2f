#!/usr/bin/env bash
# `tessera serve` under load, one-at-a-time against 16 concurrent (BENCHMARKS.md, issue 18):
# starts the server on a free port (--max-batch 16 --max-seq 256), runs `tessera bench serve`
# with 16 requests at concurrency 1, then 64 requests at concurrency 16 (32 prompt tokens, 64
# generated, all sent at once), prints both JSON reports and the server's all-reduce seconds
# after each (tensor parallelism; 0 for one rank), and stops the server with SIGTERM. Further
# arguments go to `tessera serve` (`--mesh tp=2`). SERVE_LAUNCHER, if set, starts the server
# (`SERVE_LAUNCHER="mpirun -n 2" ... DIR` for ranks as processes on a `--mesh tp=2` directory;
# a compiled directory keeps its own --max-batch and --max-seq, so pass the ones it has).
#
# Usage: scripts/serve/bench_serve.sh TESSERA_BIN CHECKPOINT_DIR|SERVE_DIR [SERVE_ARGS...]
set -euo pipefail
bin=$1
checkpoint=$2
shift 2
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
read -r -a launcher <<<"${SERVE_LAUNCHER:-}"
"${launcher[@]}" "$bin" serve "$checkpoint" --port 0 --max-batch 16 --max-seq 256 "$@" >"$scratch/stdout" 2>"$scratch/stderr" &
server=$!
# Compiling the programs for every row count can take minutes on a loaded machine.
for _ in $(seq 3000); do
    grep -q listening "$scratch/stdout" && break
    kill -0 "$server" 2>/dev/null || { cat "$scratch/stderr" >&2; exit 1; }
    sleep 0.2
done
url=$(sed 's#.*listening on ##' "$scratch/stdout")
common=(--url "$url" --input-len 32 --output-len 64 --format json)
all_reduce_seconds() {
    # GET /metrics over bash's /dev/tcp (no curl needed).
    local hostport=${url#http://}
    exec 3<>"/dev/tcp/${hostport%:*}/${hostport##*:}"
    printf 'GET /metrics HTTP/1.0\r\nHost: %s\r\n\r\n' "$hostport" >&3
    grep '^tessera_all_reduce_seconds_total ' <&3 | cut -d' ' -f2
    exec 3<&-
}
echo "concurrency 1: $("$bin" bench serve "${common[@]}" --requests 16 --concurrency 1)"
echo "all-reduce seconds so far: $(all_reduce_seconds)"
echo "concurrency 16: $("$bin" bench serve "${common[@]}" --requests 64 --concurrency 16)"
echo "all-reduce seconds so far: $(all_reduce_seconds)"
kill -TERM "$server"
wait "$server"
