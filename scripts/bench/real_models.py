"""Side-by-side latency: compiled tessera CPU artifacts against onnxruntime on the real models.

Usage (with the interpreter of the environment scripts/real-models/setup.sh builds, or that of
scripts/model-corpus/setup.sh, after `cargo build --release`):

    .cache/real-models/venv/bin/python scripts/bench/real_models.py [--tessera target/release/tessera]
        [--run-with target/release/tessera-rt] [--repeat 20] [--models magika,cls,det,rec,gpt2-dynamo,...]

For each model of the real-model corpus (the inputs and pinned shapes of tests/e2e/real_models.rs),
in one invocation: scripts/real-models/reference.py writes seeded inputs (and the pinned model);
`tessera compile` builds a CPU artifact; `tessera run DIR --repeat N --timing` (or `tessera-rt run`, with --run-with: the same executor
without the compiler) reports the median
of N runs with the weights resident; onnxruntime (default threads, default graph optimizations)
runs the same model on the same inputs N times after one warm-up run, median taken. Prints one
line per model and the ratio tessera / onnxruntime (below 1: tessera is faster), and checks that
the two agree (max relative error with the e2e test's floor).

The models of the unpinned corpus (.cache/model-corpus/corpus, built by
scripts/model-corpus/setup.sh) are included by default when it is there, each at its first input
shape, unpinned: the artifact is compiled with `--dim NAME=SIZE` for each named dynamic dimension
of the model's inputs. A model that tessera cannot import (or compile) is reported as
"does not import" (or "does not compile") with the first line of tessera's error, and left out of
the ratios.
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
CORPUS = os.path.join(ROOT, ".cache/model-corpus/corpus")

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


class NotRunnable(Exception):
    """tessera cannot take this model yet: the message says at which step, and its first error."""


def first_error_line(text):
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else "(no message)"


def corpus_models():
    index = os.path.join(CORPUS, "corpus.json")
    if not os.path.isfile(index):
        return []
    with open(index) as f:
        return json.load(f)["models"]


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


def prepare_case(name, tessera, work):
    """A real-model case (tests/e2e/real_models.rs): reference.py's seeded inputs, the pinned model."""
    file, reference_args, compile_args = CASES[name]
    model = os.path.join(MODELS, file)
    ref_dir = os.path.join(work, name)
    run([sys.executable, os.path.join(ROOT, "scripts/real-models/reference.py"), model, ref_dir, "--seed", "7"]
        + reference_args)
    with open(os.path.join(ref_dir, "manifest.json")) as f:
        manifest = json.load(f)
    inputs = [(i["name"], os.path.join(ref_dir, i["file"])) for i in manifest["inputs"]]
    return manifest["model"], inputs, compile_args


def prepare_corpus(name):
    """A corpus model at its first shape, and the --dim options that give its dynamic sizes."""
    model_dir = os.path.join(CORPUS, name)
    with open(os.path.join(model_dir, "manifest.json")) as f:
        manifest = json.load(f)
    shape = manifest["shapes"][0]
    dims = {}
    for declared, given in zip(manifest["inputs"], shape["inputs"]):
        for dim, size in zip(declared["dims"], given["shape"]):
            if isinstance(dim, str):
                dims[dim] = size
    compile_args = []
    for dim, size in dims.items():
        compile_args += ["--dim", f"{dim}={size}"]
    inputs = [(i["name"], os.path.join(model_dir, i["file"])) for i in shape["inputs"]]
    return os.path.join(model_dir, manifest["model"]), inputs, compile_args


def bench(name, tessera, runner, repeat, work):
    if name in CASES:
        run_model, inputs, compile_args = prepare_case(name, tessera, work)
    else:
        run_model, inputs, compile_args = prepare_corpus(name)
    imported = subprocess.run([tessera, "import", run_model], capture_output=True, text=True)
    if imported.returncode != 0:
        raise NotRunnable(f"does not import: {first_error_line(imported.stderr)}")
    artifact = os.path.join(work, f"{name}-artifact")
    compiled = subprocess.run([tessera, "compile", run_model, "-o", artifact] + compile_args, capture_output=True, text=True)
    if compiled.returncode != 0:
        raise NotRunnable(f"does not compile: {first_error_line(compiled.stderr)}")

    feeds = {input_name: np.load(path) for input_name, path in inputs}
    # tessera's input names are the ONNX ones here (plain identifiers in both corpora).
    out_dir = os.path.join(work, f"{name}-out")
    t_tessera = tessera_median(runner, artifact, inputs, out_dir, repeat)

    session = ort.InferenceSession(run_model, providers=["CPUExecutionProvider"])
    t_ort, outputs = onnxruntime_wall_median(session, feeds, repeat)

    return t_tessera, t_ort, output_error(out_dir, session, outputs)


def onnxruntime_wall_median(session, feeds, repeat):
    """Median wall seconds of `repeat` runs of `session` after one warm-up run, and the outputs."""
    session.run(None, feeds)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        outputs = session.run(None, feeds)
        times.append(time.perf_counter() - start)
    return statistics.median(times), outputs


def output_error(out_dir, session, outputs):
    """The largest relative error of tessera's output files in `out_dir` against onnxruntime's
    `outputs` (also used by cpu_time.py).

    tessera names its output files by its (sanitized) output names: they are matched to
    onnxruntime's by name, or the only one is taken; an output that cannot be matched makes the
    error NaN, one of another shape infinite.
    """
    produced = sorted(os.listdir(out_dir))
    errors = []
    for output, value in zip(session.get_outputs(), outputs):
        file = f"{output.name}.npy"
        if file not in produced and len(produced) == len(outputs) == 1:
            file = produced[0]
        if file not in produced:
            return float("nan")
        actual = np.load(os.path.join(out_dir, file)).astype(np.float64)
        if actual.shape != value.shape:
            return float("inf")
        errors.append(max_relative_error(actual, value.astype(np.float64)))
    return max(errors)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tessera", default=os.path.join(ROOT, "target/release/tessera"))
    parser.add_argument("--run-with", help="the binary that runs artifacts (default: --tessera)")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--models", default=",".join(list(CASES) + corpus_models()))
    args = parser.parse_args()
    runner = args.run_with or args.tessera
    known = set(CASES) | set(corpus_models())
    for name in args.models.split(","):
        if name not in known:
            sys.exit(f"unknown model '{name}': the real-model cases are {', '.join(CASES)}; the corpus "
                     f"models are listed in {os.path.join(CORPUS, 'corpus.json')} (scripts/model-corpus/setup.sh)")
    width = max(len(name) for name in args.models.split(","))
    print(f"onnxruntime {ort.__version__}, default threads; {runner} run; median of {args.repeat} runs")
    print(f"{'model':{width}} {'tessera ms':>11} {'onnxruntime ms':>15} {'ratio':>7} {'max rel err':>12}")
    ratios = []
    with tempfile.TemporaryDirectory() as work:
        for name in args.models.split(","):
            try:
                t, o, err = bench(name, args.tessera, runner, args.repeat, work)
            except NotRunnable as e:
                print(f"{name:{width}} {e}")
                continue
            ratios.append(t / o)
            print(f"{name:{width}} {t * 1e3:11.1f} {o * 1e3:15.2f} {t / o:6.2f}x {err:12.2e}")
    if ratios:
        print(f"median ratio {statistics.median(ratios):.2f}x, worst {max(ratios):.2f}x ({len(ratios)} models ran)")
    else:
        print("no model ran")


if __name__ == "__main__":
    main()
