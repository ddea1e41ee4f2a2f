#!/usr/bin/env python3
"""Generates tests/fixtures/stablehlo/<case>/ for issue 19's last forms, in the case layout of
generate.py (pretty.stablehlo.mlir, inputs/argN.npy, outputs/outN.npy):

- switch_operands: `lax.switch` on a run-time index with operands (a `case` whose branches
  read the operands from the enclosing function);
- take_along_axis: `jnp.take_along_axis` (a gather with `operand_batching_dims`);
- set_2d: `x.at[i, j].set(v)` (a scatter with a 2-element index vector);
- vmap_gather: `jax.vmap` of a row lookup (a batched gather).

Usage: generate_indexing_cases.py OUT_DIR (one subdirectory per case)
"""
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

rng = np.random.default_rng(19)


def normal(*shape):
    return (rng.standard_normal(shape) * 0.5).astype(np.float32)


def switch_operands(i, x, y):
    branches = [lambda a, b: a * b + 1.0, lambda a, b: jnp.sin(a) - b, lambda a, b: a / (1.0 + b * b)]
    return jax.lax.switch(i, branches, x, y), jax.lax.switch(i + 1, branches, y, x)


def take_along_axis(x, idx):
    return jnp.take_along_axis(x, idx, axis=1)


def set_2d(x, i, j, v):
    return x.at[i, j].set(v), x.at[i, j].add(v)


def vmap_gather(table, ids):
    return jax.vmap(lambda t, k: t[k])(table, ids)


CASES = {
    "switch_operands": (switch_operands, [np.int32(1), normal(2, 3), normal(2, 3)]),
    "take_along_axis": (take_along_axis, [normal(3, 5), np.array([[4, 0], [1, 1], [3, 2]], dtype=np.int32)]),
    "set_2d": (set_2d, [normal(4, 5), np.array([0, 3, 2], dtype=np.int32), np.array([1, 4, 0], dtype=np.int32),
                        normal(3)]),
    "vmap_gather": (vmap_gather, [normal(3, 6, 2), np.array([[5, 0], [2, 2], [1, 3]], dtype=np.int32)]),
}

out = sys.argv[1]
for name, (f, args) in CASES.items():
    case = os.path.join(out, name)
    os.makedirs(os.path.join(case, "inputs"), exist_ok=True)
    os.makedirs(os.path.join(case, "outputs"), exist_ok=True)
    with open(os.path.join(case, "pretty.stablehlo.mlir"), "w") as fh:
        fh.write(jax.jit(f).lower(*args).as_text())
    for i, a in enumerate(args):
        np.save(os.path.join(case, "inputs", f"arg{i}.npy"), np.asarray(a))
    results = jax.jit(f)(*args)
    for i, r in enumerate(results if isinstance(results, tuple) else (results,)):
        np.save(os.path.join(case, "outputs", f"out{i}.npy"), np.asarray(r))
