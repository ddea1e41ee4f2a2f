#!/usr/bin/env python3
"""Generates tests/fixtures/stablehlo/sharded_mlp.*: a JAX function jitted with NamedSharding
in/out shardings over a 2x2 CPU mesh (Shardy annotations), with inputs and JAX's outputs."""
import os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
out = sys.argv[1]
mesh = jax.make_mesh((2, 2), ("x", "y"))
def f(a, w1, w2):
    return jnp.tanh(a @ w1) @ w2
rng = np.random.default_rng(19)
a, w1, w2 = [(rng.standard_normal(s) * 0.5).astype(np.float32) for s in [(8, 4), (4, 6), (6, 4)]]
ins = (NamedSharding(mesh, P("x", None)), NamedSharding(mesh, P(None, "y")), NamedSharding(mesh, P("y", None)))
jitted = jax.jit(f, in_shardings=ins, out_shardings=NamedSharding(mesh, P("x", None)))
lowered = jitted.lower(a, w1, w2)
open(os.path.join(out, "sharded_mlp.stablehlo.mlir"), "w").write(lowered.as_text())
res = np.asarray(jitted(a, w1, w2))
for i, x in enumerate([a, w1, w2]):
    np.save(os.path.join(out, f"sharded_mlp.arg{i}.npy"), x)
np.save(os.path.join(out, "sharded_mlp.out0.npy"), res)
