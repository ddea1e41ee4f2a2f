"""Batch-1 decode of a compiled serving directory with its row buckets against the same
directory padded to --max-batch rows (BENCHMARKS.md, issue 18 item 1).

Compiles CHECKPOINT with `tessera compile --serve --max-batch 16 --max-seq 256` (programs for
1, 2, 4, 8 and 16 rows), copies the directory and strips the copy to what a directory from
before the buckets holds (its 16-row programs only: no rowsN/, no `row_buckets`), then runs
`tessera generate DIR --json` on both, alternating the order round by round. Prints per run
the decode tokens/s `generate` reports and the process CPU time (user + system of the child,
which also counts binding and prefill), and per round the ratios; checks that both give the
same greedy token ids.

Usage: bench_row_buckets.py TESSERA_BIN CHECKPOINT_DIR [ROUNDS [NEW_TOKENS]]
"""

import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

PROMPT = "A dataflow compiler "


def generate(binary, directory, new_tokens):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [binary, "generate", str(directory), "--prompt", PROMPT, "--max-new-tokens", str(new_tokens), "--json"],
        check=True, capture_output=True, text=True,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result = json.loads(out.stdout)
    return result["decode_tokens_per_second"], cpu, result["generated_ids"]


def main():
    binary, checkpoint = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    new_tokens = int(sys.argv[4]) if len(sys.argv) > 4 else 64
    with tempfile.TemporaryDirectory() as work:
        buckets, padded = Path(work) / "buckets", Path(work) / "padded"
        subprocess.run(
            [binary, "compile", checkpoint, "--serve", "--max-batch", "16", "--max-seq", "256", "-o", str(buckets)],
            check=True, capture_output=True,
        )
        shutil.copytree(buckets, padded)
        manifest = json.loads((padded / "serve.json").read_text())
        for rows in manifest.pop("row_buckets"):
            shutil.rmtree(padded / f"rows{rows}")
        (padded / "serve.json").write_text(json.dumps(manifest, indent=2))
        rate_ratios, cpu_ratios = [], []
        for r in range(rounds):
            order = [("buckets", buckets), ("padded", padded)]
            if r % 2:
                order.reverse()
            results = {name: generate(binary, d, new_tokens) for name, d in order}
            (rate_b, cpu_b, ids_b), (rate_p, cpu_p, ids_p) = results["buckets"], results["padded"]
            if ids_b != ids_p:
                sys.exit(f"round {r + 1}: the greedy tokens differ: {ids_b} vs {ids_p}")
            rate_ratios.append(rate_b / rate_p)
            cpu_ratios.append(cpu_p / cpu_b)
            print(
                f"round {r + 1}: buckets {rate_b:.1f} tok/s ({cpu_b:.2f} s CPU), padded to 16 rows "
                f"{rate_p:.1f} tok/s ({cpu_p:.2f} s CPU): decode {rate_ratios[-1]:.2f}x, CPU {cpu_ratios[-1]:.2f}x"
            )
        print(
            f"decode tokens/s, buckets / padded: median {statistics.median(rate_ratios):.2f}x "
            f"(range {min(rate_ratios):.2f}-{max(rate_ratios):.2f}); process CPU time, padded / buckets: "
            f"median {statistics.median(cpu_ratios):.2f}x (range {min(cpu_ratios):.2f}-{max(cpu_ratios):.2f}); "
            f"same {new_tokens} greedy tokens in every run"
        )


if __name__ == "__main__":
    main()
