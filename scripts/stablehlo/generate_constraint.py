#!/usr/bin/env python3
"""Generates tests/fixtures/stablehlo/constraint_{sdy,mhlo}/: a JAX function with
jax.lax.with_sharding_constraint between ops over a 2x2 CPU mesh, lowered with Shardy (the
default: sdy.sharding_constraint) and with GSPMD (custom_call @Sharding with mhlo.sharding), with
inputs and JAX's outputs."""
import os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
out = sys.argv[1]
mesh = jax.make_mesh((2, 2), ("x", "y"), axis_types=(AxisType.Auto, AxisType.Auto))
rng = np.random.default_rng(29)
a, w = [(rng.standard_normal(s) * 0.5).astype(np.float32) for s in [(8, 4), (4, 6)]]
# Shardy splits the hidden columns over y; GSPMD (whose device order tessera reads only in
# order) the rows over x.
for form, spec, shardy in [("sdy", P(None, "y"), True), ("mhlo", P("x", None), False)]:
    jax.config.update("jax_use_shardy_partitioner", shardy)
    def f(a, w):
        h = jnp.tanh(a @ w)
        h = jax.lax.with_sharding_constraint(h, NamedSharding(mesh, spec))
        return h * 2.0 + 1.0
    jitted = jax.jit(f, in_shardings=(NamedSharding(mesh, P("x", None)), NamedSharding(mesh, P())))
    case = os.path.join(out, f"constraint_{form}")
    for sub in ["inputs", "outputs"]:
        os.makedirs(os.path.join(case, sub), exist_ok=True)
    open(os.path.join(case, "pretty.stablehlo.mlir"), "w").write(jitted.lower(a, w).as_text())
    np.save(os.path.join(case, "outputs", "out0.npy"), np.asarray(jitted(a, w)))
    np.save(os.path.join(case, "inputs", "arg0.npy"), a)
    np.save(os.path.join(case, "inputs", "arg1.npy"), w)
