"""GPT-2 small (the ONNX export of gpt2_small_export.py) compiled by tessera against onnxruntime, same input.

Usage (the model-corpus or real-models venv, read-only):

    .cache/model-corpus/venv/bin/python scripts/bench/gpt2_small_vs_ort.py target/tmp/gpt2-small/gpt2-small.onnx \
        --tessera target/rel/release/tessera [--run-with target/rel/release/tessera-rt] \
        [--sequence 128] [--repeat 10] [--rounds 3] [--compile-flags "--epilogues"] \
        [--baseline /tmp/tessera-before]

Compiles the export once with `--dim batch=1 --dim sequence=S` and prints the compile's wall time,
then, in one invocation and alternating within each round, on one seeded input (token ids drawn
with seed 7 from the 50,257-token vocabulary, an all-ones attention mask):
- wall clock with default threads: the median of `--repeat` runs, tessera's from
  `tessera run --timing` (weights resident), onnxruntime's from `session.run` after a warm-up
  (default threads and graph optimizations), as real_models.py measures;
- one-thread CPU time per run, as cpu_time.py measures (tessera with RAYON_NUM_THREADS=1, the
  CPU time of `--repeat N` minus that of `--repeat 1`; onnxruntime with one intra-op and one
  inter-op thread).
With --baseline, a second `tessera` compiles the export too, and each round also measures the
one-thread CPU time of its artifact (run by the same runner), alternating with the first: a
change's before and after in one invocation. Each is the best of --rounds. Prints the ratios, the
load average, and tessera's largest relative error against onnxruntime's logits.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cpu_time  # noqa: E402  (the one-thread CPU time measures)
import real_models  # noqa: E402  (the wall-clock medians and the error measure)

VOCABULARY = 50257
SEED = 7


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="gpt2-small.onnx from scripts/bench/gpt2_small_export.py")
    parser.add_argument("--tessera", default=os.path.join(real_models.ROOT, "target/release/tessera"))
    parser.add_argument("--run-with", help="the binary that runs the artifact (default: --tessera)")
    parser.add_argument("--sequence", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compile-flags", default="", help="extra `tessera compile` flags, space-separated")
    parser.add_argument("--baseline", help="a second `tessera` whose artifact of the export is measured alongside")
    args = parser.parse_args()
    if args.repeat < 2:
        sys.exit("--repeat must be at least 2")
    runner = args.run_with or args.tessera
    rng = np.random.default_rng(SEED)
    feeds = {
        "input_ids": rng.integers(0, VOCABULARY, size=(1, args.sequence), dtype=np.int64),
        "attention_mask": np.ones((1, args.sequence), dtype=np.int64),
    }
    print(f"onnxruntime {ort.__version__}; tessera {runner}; load average {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as work:
        inputs = []
        for name, value in feeds.items():
            path = os.path.join(work, f"{name}.npy")
            np.save(path, value)
            inputs.append((name, path))
        artifact = os.path.join(work, "artifact")
        start = time.perf_counter()
        real_models.run([args.tessera, "compile", args.model, "-o", artifact, "--dim", "batch=1",
                         "--dim", f"sequence={args.sequence}"] + args.compile_flags.split())
        print(f"compile (batch 1, sequence {args.sequence}): {time.perf_counter() - start:.1f} s wall")
        baseline_artifact = os.path.join(work, "baseline")
        if args.baseline:
            real_models.run([args.baseline, "compile", args.model, "-o", baseline_artifact, "--dim", "batch=1",
                             "--dim", f"sequence={args.sequence}"] + args.compile_flags.split())
        default_session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        one_thread_session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
        out_dir = os.path.join(work, "out")
        best = {"tessera wall": float("inf"), "onnxruntime wall": float("inf"),
                "tessera cpu": float("inf"), "onnxruntime cpu": float("inf")}
        for round_index in range(args.rounds):
            ort_wall, outputs = real_models.onnxruntime_wall_median(default_session, feeds, args.repeat)
            tessera_wall = real_models.tessera_median(runner, artifact, inputs, out_dir, args.repeat)
            error = real_models.output_error(out_dir, default_session, outputs)
            ort_cpu, _ = cpu_time.onnxruntime_cpu_ms(one_thread_session, feeds, args.repeat)
            tessera_cpu = cpu_time.tessera_cpu_ms(runner, artifact, inputs, out_dir, args.repeat)
            round_times = {"tessera wall": 1e3 * tessera_wall, "onnxruntime wall": 1e3 * ort_wall,
                           "tessera cpu": tessera_cpu, "onnxruntime cpu": ort_cpu}
            if args.baseline:
                baseline_out = os.path.join(work, "baseline-out")
                round_times["baseline cpu"] = cpu_time.tessera_cpu_ms(runner, baseline_artifact, inputs, baseline_out,
                                                                      args.repeat)
                baseline_error = real_models.output_error(baseline_out, default_session, outputs)
            for key, value in round_times.items():
                best[key] = min(best.get(key, float("inf")), value)
            errors = f"max rel err {error:.1e}" + (f" (baseline {baseline_error:.1e})" if args.baseline else "")
            print(f"round {round_index + 1}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in round_times.items())
                  + f"; {errors}; load average {os.getloadavg()}", flush=True)
        print(f"best of {args.rounds}: wall (default threads) tessera {best['tessera wall']:.1f} ms, onnxruntime "
              f"{best['onnxruntime wall']:.1f} ms, {best['tessera wall'] / best['onnxruntime wall']:.2f}x; "
              f"one-thread CPU tessera {best['tessera cpu']:.1f} ms, onnxruntime {best['onnxruntime cpu']:.1f} ms, "
              f"{best['tessera cpu'] / best['onnxruntime cpu']:.2f}x")
        if args.baseline:
            print(f"baseline one-thread CPU {best['baseline cpu']:.1f} ms, "
                  f"{best['baseline cpu'] / best['onnxruntime cpu']:.2f}x")


if __name__ == "__main__":
    main()
