"""Decode tokens/s of `tessera serve` and `transformers` side by side, at batch 1 and at 16, in
one invocation whose rounds alternate between the two so that both see the same machine load
(BENCHMARKS.md, issue 18).

Starts `tessera serve CHECKPOINT_DIR --port 0 --max-batch 16 --max-seq 256`, loads the same
checkpoint into transformers, then per round measures, in this order:
  - tessera, one request at a time: `tessera bench serve` with 8 requests at concurrency 1;
    decode tokens/s = 1000 / mean TPOT (time per output token after the first, in ms);
  - transformers at batch 1: (NEW_TOKENS - 1) / (time of generate(NEW_TOKENS) - generate(1));
  - tessera, 16 concurrent: 32 requests at concurrency 16; 16 x 1000 / mean TPOT;
  - transformers at batch 16: 16 x (NEW_TOKENS - 1) / (generate(NEW_TOKENS) - generate(1)).
Prompts are INPUT_LEN (32) random token ids below 256, NEW_TOKENS (64) greedy tokens, as
`tessera bench serve` sends them and bench_batch_transformers.py times them. At the end it
prints the medians, the server's peak resident set (VmHWM) and its `tessera_weight_bytes`, as
one JSON line, and stops the server with SIGTERM.

Usage (with the model corpus's venv, .cache/model-corpus/venv/bin/python):
  bench_side_by_side.py TESSERA_BIN CHECKPOINT_DIR [ROUNDS [TORCH_THREADS]]
"""

import json
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

import torch

from hf_timing import decode_rate, load_model, timed_generate

INPUT_LEN = 32
NEW_TOKENS = 64


def start_server(binary, path):
    server = subprocess.Popen([binary, "serve", path, "--port", "0", "--max-batch", "16", "--max-seq", "256"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    started = time.perf_counter()
    for line in server.stdout:
        match = re.search(r"listening on (\S+)", line)
        if match:
            # Keep reading what it prints, so that a full pipe never blocks it.
            threading.Thread(target=lambda: [None for _ in server.stdout], daemon=True).start()
            return server, match.group(1), time.perf_counter() - started
    raise SystemExit(f"tessera serve exited with {server.wait()} before listening")


def tessera_rate(binary, url, requests, concurrency):
    out = subprocess.run([binary, "bench", "serve", "--url", url, "--input-len", str(INPUT_LEN),
                          "--output-len", str(NEW_TOKENS), "--requests", str(requests),
                          "--concurrency", str(concurrency), "--format", "json"],
                         check=True, capture_output=True, text=True)
    report = json.loads(out.stdout)
    return concurrency * 1000.0 / report["mean_tpot_ms"]


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


def metric(url, name):
    text = urllib.request.urlopen(f"{url}/metrics").read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def main():
    binary, path = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    if len(sys.argv) > 4:
        torch.set_num_threads(int(sys.argv[4]))
    server, url, startup = start_server(binary, path)
    try:
        model = load_model(path)
        generator = torch.Generator().manual_seed(0)
        ids = {batch: torch.randint(0, 256, (batch, INPUT_LEN), generator=generator) for batch in (1, 16)}
        rates = {key: [] for key in ("tessera_1", "transformers_1", "tessera_16", "transformers_16")}
        with torch.inference_mode():
            for batch in (1, 16):
                timed_generate(model, ids[batch], NEW_TOKENS)  # warm-up
            tessera_rate(binary, url, 4, 4)  # warm-up
            for i in range(rounds):
                rates["tessera_1"].append(tessera_rate(binary, url, 8, 1))
                rates["transformers_1"].append(decode_rate(model, ids[1], NEW_TOKENS)[0])
                rates["tessera_16"].append(tessera_rate(binary, url, 32, 16))
                rates["transformers_16"].append(decode_rate(model, ids[16], NEW_TOKENS)[0])
                print(f"round {i}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rates.items()), flush=True)
        result = {key: statistics.median(values) for key, values in rates.items()}
        result.update({
            "checkpoint": path, "rounds": rounds, "torch_threads": torch.get_num_threads(),
            "server_startup_s": round(startup, 1), "server_peak_rss_kib": peak_rss_kib(server.pid),
            "weight_bytes": metric(url, "tessera_weight_bytes"),
        })
        print(json.dumps(result))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait()


if __name__ == "__main__":
    main()
