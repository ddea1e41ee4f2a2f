"""Side-by-side latency: compiled tessera CPU artifacts against onnxruntime on the real models.

Usage (with the interpreter of the environment scripts/real-models/setup.sh builds, after
`cargo build --release`):

    .cache/real-models/venv/bin/python scripts/bench/real_models.py [--tessera target/release/tessera]
        [--run-with target/release/tessera-rt] [--repeat 20] [--models magika,cls,det,rec]

For each model of the real-model corpus (the inputs and pinned shapes of tests/e2e/real_models.rs),
in one invocation: scripts/real-models/reference.py writes seeded inputs (and the pinned model);
`tessera compile` builds a CPU artifact; `tessera run DIR --repeat N --timing` (or `tessera-rt run`, with --run-with: the same executor
without the compiler) reports the median
of N runs with the weights resident; onnxruntime (default threads, default graph optimizations)
runs the same model on the same inputs N times after one warm-up run, median taken. Prints one
line per model and the ratio tessera / onnxruntime (below 1: tessera is faster), and checks that
the two agree (max relative error with the e2e test's floor).
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = os.path.join(ROOT, ".cache/real-models/models")

# name: (file, reference.py options, tessera compile options); as in tests/e2e/real_models.rs.
CASES = {
    "magika": (
        "magika-standard_v3_3.onnx",
        ["--dim", "unk__214=1", "--range", "bytes=0:256"],
        ["--dim", "unk__214=1"],
    ),
    "cls": ("ppocr-mobile-v2.0-cls.onnx", ["--shape", "x=1,3,48,192", "--range", "x=-1:1", "--pin"], []),
    "det": (
        "ppocrv4-det.onnx",
        ["--shape", "x=1,3,64,64", "--range", "x=-2.1:2.6", "--page", "x", "--pin"],
        [],
    ),
    "rec": ("ppocrv4-rec.onnx", ["--shape", "x=1,3,48,16", "--range", "x=-1:1", "--pin"], []),
}


def run(cmd):
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{done.stdout}{done.stderr}")
    return done


def tessera_median(tessera, artifact, inputs, out_dir, repeat):
    """Median seconds of `repeat` runs with the weights resident, as `tessera run --timing` says."""
    cmd = [tessera, "run", artifact, "-o", out_dir, "--repeat", str(repeat), "--timing"]
    for name, path in inputs:
        cmd += ["--input", f"{name}={path}"]
    err = run(cmd).stderr
    m = re.search(r"runs with the parameters resident: min ([0-9.]+) s, median ([0-9.]+) s", err)
    if not m:
        sys.exit(f"no timing line in tessera's output:\n{err}")
    return float(m.group(2))


def max_relative_error(actual, expected):
    scale = np.abs(expected).max()
    floor = max(1e-2 * scale, np.finfo(np.float64).tiny)
    return float((np.abs(actual - expected) / np.maximum(np.abs(expected), floor)).max())


def bench(name, tessera, runner, repeat, work):
    file, reference_args, compile_args = CASES[name]
    model = os.path.join(MODELS, file)
    ref_dir = os.path.join(work, name)
    run([sys.executable, os.path.join(ROOT, "scripts/real-models/reference.py"), model, ref_dir, "--seed", "7"]
        + reference_args)
    with open(os.path.join(ref_dir, "manifest.json")) as f:
        manifest = json.load(f)
    run_model = manifest["model"]
    artifact = os.path.join(work, f"{name}-artifact")
    run([tessera, "compile", run_model, "-o", artifact] + compile_args)

    feeds = {i["name"]: np.load(os.path.join(ref_dir, i["file"])) for i in manifest["inputs"]}
    # tessera's input names are the ONNX ones here (plain identifiers in this corpus).
    inputs = [(i["name"], os.path.join(ref_dir, i["file"])) for i in manifest["inputs"]]
    out_dir = os.path.join(work, f"{name}-out")
    t_tessera = tessera_median(runner, artifact, inputs, out_dir, repeat)

    session = ort.InferenceSession(run_model, providers=["CPUExecutionProvider"])
    session.run(None, feeds)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        outputs = session.run(None, feeds)
        times.append(time.perf_counter() - start)
    t_ort = statistics.median(times)

    # Every model of this corpus has one output; compare it (tessera names files by its names).
    produced = sorted(os.listdir(out_dir))
    error = max(
        max_relative_error(np.load(os.path.join(out_dir, p)).astype(np.float64), o.astype(np.float64))
        for p, o in zip(produced, outputs)
    ) if len(produced) == len(outputs) == 1 else float("nan")
    return t_tessera, t_ort, error


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tessera", default=os.path.join(ROOT, "target/release/tessera"))
    parser.add_argument("--run-with", help="the binary that runs artifacts (default: --tessera)")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--models", default=",".join(CASES))
    args = parser.parse_args()
    runner = args.run_with or args.tessera
    print(f"onnxruntime {ort.__version__}, default threads; {runner} run; median of {args.repeat} runs")
    print(f"{'model':8} {'tessera ms':>11} {'onnxruntime ms':>15} {'ratio':>7} {'max rel err':>12}")
    ratios = []
    with tempfile.TemporaryDirectory() as work:
        for name in args.models.split(","):
            t, o, err = bench(name, args.tessera, runner, args.repeat, work)
            ratios.append(t / o)
            print(f"{name:8} {t * 1e3:11.1f} {o * 1e3:15.2f} {t / o:6.2f}x {err:12.2e}")
    print(f"median ratio {statistics.median(ratios):.2f}x, worst {max(ratios):.2f}x")


if __name__ == "__main__":
    main()
