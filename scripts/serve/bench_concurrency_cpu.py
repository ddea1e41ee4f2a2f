"""16 concurrent requests against one at a time on one `tessera serve`, in output tokens/s and
in the server's process CPU time per output token (BENCHMARKS.md, issue 18).

Starts `tessera serve SERVE_DIR --port 0` once, then runs ROUNDS rounds; each round runs
`tessera bench serve` at concurrency 1 (16 requests) and at concurrency 16 (64 requests), 32
prompt tokens and 64 generated each, all sent at once, swapping which goes first every round.
Around each run it reads the server's user + system CPU time from /proc/PID/stat, so the
client's CPU does not count. A loaded machine gives the server less of a core, but it does so
for both runs of a round; CPU time per token is what batching saves, whatever the load.

Prints per run the output tokens/s and the server's CPU milliseconds per output token, and per
round the two ratios (16 concurrent over 1 at a time: tokens/s, and CPU per token 1 / 16); at
the end their medians and ranges.

Usage: bench_concurrency_cpu.py TESSERA_BIN SERVE_DIR|CHECKPOINT [ROUNDS [SERVE_ARGS...]]
"""

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User + system CPU seconds of process `pid` (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # Fields 14 and 15 (utime, stime), counted from 1 with the pid and the name first.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def bench(binary, url, pid, concurrency, requests):
    before = cpu_seconds(pid)
    out = subprocess.run(
        [binary, "bench", "serve", "--url", url, "--input-len", "32", "--output-len", "64", "--format", "json",
         "--requests", str(requests), "--concurrency", str(concurrency)],
        check=True, capture_output=True, text=True,
    )
    cpu = cpu_seconds(pid) - before
    report = json.loads(out.stdout)
    if report["failed"]:
        sys.exit(f"{report['failed']} requests failed: {report.get('first_error')}")
    tokens = report["total_output_tokens"]
    return report["output_throughput"], cpu * 1000 / tokens


def main():
    binary, model = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    extra = sys.argv[4:]
    with tempfile.TemporaryFile("w+") as log:
        server = subprocess.Popen(
            [binary, "serve", model, "--port", "0", "--max-batch", "16", "--max-seq", "256", *extra],
            stdout=subprocess.PIPE, stderr=log, text=True,
        )
        try:
            line = server.stdout.readline()
            match = re.search(r"listening on (\S+)", line)
            if not match:
                log.seek(0)
                sys.exit(f"the server did not start: {line}{log.read()}")
            url = match.group(1)
            # One short warm-up run, so first-touch costs (page faults in the cache and the
            # programs' arenas) count in neither side.
            bench(binary, url, server.pid, 16, 16)
            ratios, cpu_ratios = [], []
            for r in range(rounds):
                order = [(1, 16), (16, 64)] if r % 2 == 0 else [(16, 64), (1, 16)]
                results = {}
                for concurrency, requests in order:
                    results[concurrency] = bench(binary, url, server.pid, concurrency, requests)
                    rate, cpu = results[concurrency]
                    print(f"round {r + 1} concurrency {concurrency:2}: {rate:8.1f} output tokens/s, "
                          f"server CPU {cpu:7.3f} ms per token", flush=True)
                ratio = results[16][0] / results[1][0]
                cpu_ratio = results[1][1] / results[16][1]
                ratios.append(ratio)
                cpu_ratios.append(cpu_ratio)
                load = os.getloadavg()[0]
                print(f"round {r + 1}: tokens/s 16 / 1 = {ratio:.2f}x, CPU per token 1 / 16 = {cpu_ratio:.2f}x "
                      f"(load {load:.1f})", flush=True)
            for name, values in [("tokens/s 16 / 1", ratios), ("CPU per token 1 / 16", cpu_ratios)]:
                print(f"{name}: median {statistics.median(values):.2f}x "
                      f"(range {min(values):.2f}-{max(values):.2f}x over {len(values)} rounds)")
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
