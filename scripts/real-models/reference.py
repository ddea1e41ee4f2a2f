"""Reference outputs for the real-model tests: seeded random inputs and onnxruntime's outputs.

Usage (with the interpreter of the environment scripts/real-models/setup.sh builds):

    .cache/real-models/venv/bin/python scripts/real-models/reference.py MODEL.onnx OUTDIR --seed N
        [--shape INPUT=D0,D1,...] [--dim NAME=SIZE] [--range INPUT=LO:HI] [--page INPUT] [--pin]

Writes into OUTDIR:
  inputs/<i>.npy     the i-th graph input (graph inputs without an initializer, in order), drawn
                     from a seeded generator: floats uniform in [LO, HI) (default [0, 1), an image
                     scaled to [0, 1]), integers uniform in [LO, HI] (default [0, 255], bytes),
                     booleans fair coins; in the input's own dtype and a concrete shape;
                     with --page, an image input is a seeded page of dark text-like lines on
                     a light background instead (for text detectors)
  expected/<i>.npy   onnxruntime's i-th output on those inputs
  model.onnx         with --pin: MODEL with its graph inputs' shapes fixed to the concrete ones
                     (weights and nodes untouched), for importers that need static sizes; the
                     reference is then computed on this file
  manifest.json      {"model": the model the outputs belong to, "inputs": [{"name", "file",
                     "dtype", "shape"}], "outputs": [{"name", "file"}]}

Concrete shapes: a static dimension stays; a dynamic one takes --shape (the whole input), else
--dim (by dim_param name), else 1. onnxruntime runs on one thread with graph optimizations that
keep float semantics (basic level), so the reference is reproducible.
"""

import argparse
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort

_NP_OF_ONNX = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.INT8: np.int8,
    onnx.TensorProto.INT16: np.int16,
    onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.UINT8: np.uint8,
    onnx.TensorProto.UINT16: np.uint16,
    onnx.TensorProto.UINT32: np.uint32,
    onnx.TensorProto.UINT64: np.uint64,
    onnx.TensorProto.BOOL: np.bool_,
}


def _pairs(values, what, parse):
    out = {}
    for v in values:
        name, sep, rest = v.rpartition("=")
        if not sep or not name:
            sys.exit(f"reference.py: --{what} '{v}': expected NAME=VALUE")
        try:
            out[name] = parse(rest)
        except ValueError as e:
            sys.exit(f"reference.py: --{what} '{v}': {e}")
    return out


def _range(text):
    lo, sep, hi = text.partition(":")
    if not sep:
        raise ValueError("expected LO:HI")
    return float(lo), float(hi)


def concrete_shape(value_info, shapes, dims):
    """The input's shape with every dynamic dimension given a size."""
    name = value_info.name
    declared = value_info.type.tensor_type.shape.dim
    if name in shapes:
        shape = shapes[name]
        if len(shape) != len(declared):
            sys.exit(f"reference.py: --shape {name}: rank {len(shape)}, the model says {len(declared)}")
        for d, n in zip(declared, shape):
            if d.HasField("dim_value") and d.dim_value > 0 and d.dim_value != n:
                sys.exit(f"reference.py: --shape {name}: {shape} disagrees with static size {d.dim_value}")
        return list(shape)
    shape = []
    for d in declared:
        if d.HasField("dim_value") and d.dim_value > 0:
            shape.append(d.dim_value)
        elif d.HasField("dim_param") and d.dim_param in dims:
            shape.append(dims[d.dim_param])
        else:
            shape.append(1)
    return shape


def random_input(rng, dtype, shape, value_range):
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if np.issubdtype(dtype, np.integer):
        lo, hi = value_range if value_range else (0, 255)
        return rng.integers(int(lo), int(hi), size=shape, endpoint=True).astype(dtype)
    lo, hi = value_range if value_range else (0.0, 1.0)
    return rng.uniform(lo, hi, size=shape).astype(dtype)


def random_page(rng, dtype, shape, value_range):
    """An image batch [N, C, H, W] that looks like a page to a text detector: a light background
    (near HI) with lines of dark "characters" (near LO), at seeded random places and sizes. Pure
    noise makes a detector's probability map underflow to 0 everywhere, which checks nothing."""
    if len(shape) != 4:
        sys.exit(f"reference.py: --page needs an [N, C, H, W] input, not {shape}")
    lo, hi = value_range if value_range else (0.0, 1.0)
    n, c, h, w = shape
    spread = 0.05 * (hi - lo)
    page = rng.uniform(hi - spread, hi, size=shape)
    y = int(rng.integers(1, 6))
    while y + 6 < h:
        line_height = int(rng.integers(3, 6))
        x, end = int(rng.integers(0, max(1, w // 4))), int(rng.integers(w // 2, w))
        while x < end:
            char_width = min(int(rng.integers(1, 4)), w - x)
            page[:, :, y : y + line_height, x : x + char_width] = rng.uniform(
                lo, lo + spread, size=(n, c, line_height, char_width)
            )
            x += char_width + int(rng.integers(1, 3))
        y += line_height + int(rng.integers(3, 9))
    return page.astype(dtype)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("outdir")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--shape", action="append", default=[], metavar="INPUT=D0,D1,...")
    p.add_argument("--dim", action="append", default=[], metavar="NAME=SIZE")
    p.add_argument("--range", action="append", default=[], metavar="INPUT=LO:HI")
    p.add_argument("--page", action="append", default=[], metavar="INPUT", help="draw INPUT as a page (see random_page)")
    p.add_argument("--pin", action="store_true", help="write OUTDIR/model.onnx with static input shapes")
    args = p.parse_args()

    shapes = _pairs(args.shape, "shape", lambda s: [int(x) for x in s.split(",")])
    dims = _pairs(args.dim, "dim", int)
    ranges = _pairs(args.range, "range", _range)

    model = onnx.load(args.model)
    initializers = {t.name for t in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in initializers]
    for name in list(shapes) + list(ranges) + args.page:
        if name not in {i.name for i in graph_inputs}:
            sys.exit(f"reference.py: the model has no input '{name}'")

    rng = np.random.default_rng(args.seed)
    os.makedirs(os.path.join(args.outdir, "inputs"), exist_ok=True)
    os.makedirs(os.path.join(args.outdir, "expected"), exist_ok=True)
    feeds, manifest_inputs = {}, []
    for i, vi in enumerate(graph_inputs):
        elem = vi.type.tensor_type.elem_type
        if elem not in _NP_OF_ONNX:
            sys.exit(f"reference.py: input '{vi.name}' has ONNX element type {elem}, which has no .npy dtype")
        shape = concrete_shape(vi, shapes, dims)
        if vi.name in args.page:
            x = random_page(rng, _NP_OF_ONNX[elem], shape, ranges.get(vi.name))
        else:
            x = random_input(rng, _NP_OF_ONNX[elem], shape, ranges.get(vi.name))
        feeds[vi.name] = x
        file = os.path.join("inputs", f"{i}.npy")
        np.save(os.path.join(args.outdir, file), x)
        manifest_inputs.append({"name": vi.name, "file": file, "dtype": str(x.dtype), "shape": list(x.shape)})
        if args.pin:
            for d, n in zip(vi.type.tensor_type.shape.dim, shape):
                d.Clear()
                d.dim_value = n

    model_path = os.path.abspath(args.model)
    if args.pin:
        model_path = os.path.abspath(os.path.join(args.outdir, "model.onnx"))
        onnx.save(model, model_path)

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    results = session.run(names, feeds)
    manifest_outputs = []
    for i, (name, y) in enumerate(zip(names, results)):
        file = os.path.join("expected", f"{i}.npy")
        np.save(os.path.join(args.outdir, file), y)
        manifest_outputs.append({"name": name, "file": file})

    manifest = {"model": model_path, "inputs": manifest_inputs, "outputs": manifest_outputs}
    with open(os.path.join(args.outdir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


if __name__ == "__main__":
    main()
