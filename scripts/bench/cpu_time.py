"""One-thread CPU time per run: compiled tessera CPU artifacts against onnxruntime, for a loaded machine.

Usage (the interpreter of scripts/real-models/setup.sh or scripts/model-corpus/setup.sh):

    .cache/real-models/venv/bin/python scripts/bench/cpu_time.py --tessera target/debug/tessera \
        --run-with before=/tmp/tessera-rt-before --run-with after=target/rel/release/tessera-rt \
        [--repeat 100] [--rounds 3] [--models magika,cls,det,rec,gpt2-dynamo,...] \
        [--compile-variant fused=--epilogues] [--compile-with before=/tmp/tessera-before]

Wall-clock medians (scripts/bench/real_models.py) mean nothing on a machine whose load average
is many times its core count: neighbouring runs differ 2-10x. CPU time on one thread is barely
moved by contention, so this measures that: for each model (the cases and inputs of
real_models.py), the artifact is compiled once by --tessera (a debug build writes the same
artifact), then each --run-with binary runs it with RAYON_NUM_THREADS=1, `--repeat N` and
`--repeat 1`, and the child's user + system CPU time of the first minus that of the second,
divided by N - 1, is the CPU time of one run with the weights resident (binding, loading and
process start cancel out). onnxruntime runs the same model and inputs in this process with one
intra-op and one inter-op thread, default graph optimizations, after one warm-up run: its
process CPU time over N runs, divided by N. Each measure is the best of --rounds, and the binaries
alternate within a round. Prints per model the milliseconds and the ratio to onnxruntime, then
the median ratio per binary, and checks each binary's outputs against onnxruntime's.
Each --compile-variant LABEL=FLAGS compiles a second artifact with those extra `tessera compile`
flags (space-separated), which every binary also runs: a column per binary and artifact.
Each --compile-with LABEL=PATH compiles the artifacts that the --run-with binary of that label
runs with another `tessera` (a change to import or code generation measured against the
compiler before it, side by side in one invocation).
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import real_models  # noqa: E402  (the cases, their inputs and the error measure)


def child_cpu_seconds(cmd, env):
    """User + system CPU seconds of one child process (and its threads)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{done.stdout}{done.stderr}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def tessera_cpu_ms(runner, artifact, inputs, out_dir, repeat):
    env = dict(os.environ, RAYON_NUM_THREADS="1")
    cmd = [runner, "run", artifact, "-o", out_dir]
    for name, path in inputs:
        cmd += ["--input", f"{name}={path}"]
    many = child_cpu_seconds(cmd + ["--repeat", str(repeat)], env)
    one = child_cpu_seconds(cmd + ["--repeat", "1"], env)
    return 1e3 * (many - one) / (repeat - 1)


def onnxruntime_cpu_ms(session, feeds, repeat):
    session.run(None, feeds)
    start = time.process_time()
    for _ in range(repeat):
        outputs = session.run(None, feeds)
    return 1e3 * (time.process_time() - start) / repeat, outputs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tessera", default=os.path.join(real_models.ROOT, "target/debug/tessera"))
    parser.add_argument("--run-with", action="append", required=True, help="LABEL=PATH of a tessera-rt or tessera")
    parser.add_argument("--repeat", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", default=",".join(real_models.CASES))
    parser.add_argument("--compile-variant", action="append", default=[],
                        help="LABEL=FLAGS: also compile with these extra flags and run that artifact")
    parser.add_argument("--compile-with", action="append", default=[],
                        help="LABEL=PATH: the tessera that compiles what the --run-with binary LABEL runs")
    args = parser.parse_args()
    if args.repeat < 2:
        sys.exit("--repeat must be at least 2")
    binaries = [tuple(r.split("=", 1)) for r in args.run_with]
    compilers = dict(c.split("=", 1) for c in args.compile_with)
    unknown = set(compilers) - {label for label, _ in binaries}
    if unknown:
        sys.exit(f"--compile-with names no --run-with label: {', '.join(sorted(unknown))}")
    compiler_of = {label: compilers.get(label, args.tessera) for label, _ in binaries}
    variants = [("", [])] + [(v.split("=", 1)[0], v.split("=", 1)[1].split()) for v in args.compile_variant]
    # One column per binary and artifact variant: (label, binary, variant label).
    runners = [(label + (f"/{variant}" if variant else ""), (path, (variant, compiler_of[label])))
               for variant, _ in variants for label, path in binaries]
    print(f"onnxruntime {ort.__version__}, 1 thread; tessera RAYON_NUM_THREADS=1; CPU ms per run, "
          f"best of {args.rounds} rounds of {args.repeat} runs; load average {os.getloadavg()}")
    print(f"{'model':14} {'onnxruntime':>11} " + " ".join(f"{label:>18}" for label, _ in runners) + "  max rel err")
    ratios = {label: [] for label, _ in runners}
    with tempfile.TemporaryDirectory() as work:
        for name in args.models.split(","):
            if name in real_models.CASES:
                model, inputs, compile_args = real_models.prepare_case(name, args.tessera, work)
            else:
                model, inputs, compile_args = real_models.prepare_corpus(name)
            artifacts = {}
            for variant, flags in variants:
                for i, compiler in enumerate(sorted(set(compiler_of.values()))):
                    artifacts[(variant, compiler)] = os.path.join(work, f"{name}-artifact{variant}-{i}")
                    real_models.run([compiler, "compile", model, "-o", artifacts[(variant, compiler)]]
                                    + compile_args + flags)
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
            feeds = {input_name: np.load(path) for input_name, path in inputs}
            best = {label: float("inf") for label, _ in runners}
            best_ort = float("inf")
            errors = {}
            for _ in range(args.rounds):
                ms, outputs = onnxruntime_cpu_ms(session, feeds, args.repeat)
                best_ort = min(best_ort, ms)
                for label, (path, variant) in runners:
                    out_dir = os.path.join(work, f"{name}-{label.replace('/', '-')}-out")
                    ms = tessera_cpu_ms(path, artifacts[variant], inputs, out_dir, args.repeat)
                    best[label] = min(best[label], ms)
                    errors[label] = real_models.output_error(out_dir, session, outputs)
            cells = []
            for label, _ in runners:
                ratios[label].append(best[label] / best_ort)
                cells.append(f"{best[label]:8.2f} ({best[label] / best_ort:5.2f}x)")
            print(f"{name:14} {best_ort:11.2f} " + " ".join(f"{c:>18}" for c in cells) + "  "
                  + " ".join(f"{errors[label]:.1e}" for label, _ in runners), flush=True)
    for label, _ in runners:
        print(f"{label}: median ratio {statistics.median(ratios[label]):.2f}x, worst {max(ratios[label]):.2f}x")
    print(f"load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
