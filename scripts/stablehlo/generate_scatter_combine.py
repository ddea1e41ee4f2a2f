#!/usr/bin/env python3
"""Generates tests/fixtures/stablehlo/scatter_combine/: x.at[idx].max(v), .min(v) and .multiply(v)
(StableHLO scatters whose update regions are maximum, minimum and multiply), with repeated
indices, in the case layout of generate.py (pretty.stablehlo.mlir, inputs/argN.npy,
outputs/outN.npy).

Usage: generate_scatter_combine.py OUT_DIR
"""
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
import jax  # noqa: E402
import numpy as np  # noqa: E402

out = sys.argv[1]


def f(x, idx, v):
    return x.at[idx].max(v), x.at[idx].min(v), x.at[idx].multiply(v)


rng = np.random.default_rng(19)
x = (rng.standard_normal((6, 4)) * 0.5).astype(np.float32)
idx = np.array([1, 4, 1, 0, 5], dtype=np.int32)
v = (rng.standard_normal((5, 4)) * 0.5).astype(np.float32)
os.makedirs(os.path.join(out, "inputs"), exist_ok=True)
os.makedirs(os.path.join(out, "outputs"), exist_ok=True)
lowered = jax.jit(f).lower(x, idx, v)
with open(os.path.join(out, "pretty.stablehlo.mlir"), "w") as fh:
    fh.write(lowered.as_text())
for i, a in enumerate([x, idx, v]):
    np.save(os.path.join(out, "inputs", f"arg{i}.npy"), a)
for i, r in enumerate(jax.jit(f)(x, idx, v)):
    np.save(os.path.join(out, "outputs", f"out{i}.npy"), np.asarray(r))
