"""GPT-2 small logits against an f64 reference: which of tessera and onnxruntime loses precision.

Usage (the model-corpus venv, read-only):

    .cache/model-corpus/venv/bin/python scripts/bench/gpt2_small_f64.py /work/data/gpt2-small/gpt2-small.onnx \
        --tessera target/rel/release/tessera [--sequence 128] [--compile-flags "--epilogues"]

Rebuilds the model of gpt2_small_export.py (`GPT2LMHeadModel(GPT2Config())`, torch.manual_seed(7),
so the same weights as the export) in float64, runs it on the input of gpt2_small_vs_ort.py (token
ids drawn with seed 7, an all-ones mask), and prints the largest relative error (the measure of
real_models.py) against those f64 logits of: the same torch model in float32, onnxruntime
(default session) on the export, and tessera's compiled artifact of the export. The f32 torch
model against onnxruntime shows that the weights are the export's.
"""

import argparse
import os
import sys
import tempfile

import numpy as np
import onnxruntime as ort
import torch
from transformers import GPT2Config, GPT2LMHeadModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import real_models  # noqa: E402  (the error measure and the subprocess runner)

VOCABULARY = 50257
SEED = 7


def tessera_logits(tessera, model, feeds, sequence, compile_flags, work):
    """Compiles `model` at batch 1 and `sequence`, runs it once on `feeds`, returns its one output."""
    artifact = os.path.join(work, "artifact")
    real_models.run([tessera, "compile", model, "-o", artifact, "--dim", "batch=1", "--dim",
                     f"sequence={sequence}"] + compile_flags.split())
    command = [tessera, "run", artifact, "-o", os.path.join(work, "out")]
    for name, value in feeds.items():
        path = os.path.join(work, f"{name}.npy")
        np.save(path, value)
        command += ["--input", f"{name}={path}"]
    real_models.run(command)
    files = os.listdir(os.path.join(work, "out"))
    if len(files) != 1:
        sys.exit(f"expected one output file, got {files}")
    return np.load(os.path.join(work, "out", files[0]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="gpt2-small.onnx from scripts/bench/gpt2_small_export.py")
    parser.add_argument("--tessera", default=os.path.join(real_models.ROOT, "target/release/tessera"))
    parser.add_argument("--sequence", type=int, default=128)
    parser.add_argument("--compile-flags", default="")
    args = parser.parse_args()
    rng = np.random.default_rng(SEED)
    feeds = {
        "input_ids": rng.integers(0, VOCABULARY, size=(1, args.sequence), dtype=np.int64),
        "attention_mask": np.ones((1, args.sequence), dtype=np.int64),
    }
    torch.manual_seed(SEED)
    model = GPT2LMHeadModel(GPT2Config(use_cache=False)).eval()
    with torch.no_grad():
        ids, mask = torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feeds["attention_mask"])
        f32 = model(input_ids=ids, attention_mask=mask).logits.numpy()
        f64 = model.double()(input_ids=ids, attention_mask=mask).logits.numpy()
    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    (onnxruntime,) = session.run(None, feeds)
    with tempfile.TemporaryDirectory() as work:
        tessera = tessera_logits(args.tessera, args.model, feeds, args.sequence, args.compile_flags, work)
    error = real_models.max_relative_error
    print(f"torch f32 vs onnxruntime: {error(f32, onnxruntime):.2e} (the weights are the export's)")
    for name, logits in [("torch f32", f32), ("onnxruntime", onnxruntime), ("tessera", tessera)]:
        print(f"{name:12} vs f64: max rel err {error(logits, f64):.2e}, "
              f"max abs err {np.abs(logits - f64).max():.2e}")
    print(f"tessera vs onnxruntime: {error(tessera, onnxruntime):.2e}")


if __name__ == "__main__":
    main()
