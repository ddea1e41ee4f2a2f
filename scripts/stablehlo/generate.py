"""Writes the StableHLO test cases of tests/e2e/stablehlo.rs from JAX itself.

Usage: generate.py OUT_DIR

For each case NAME, OUT_DIR/NAME/ holds:
  pretty.stablehlo.mlir   jax.jit(f).lower(...).as_text(): the custom assembly JAX prints
  generic.stablehlo.mlir  the same module in MLIR's generic op form, without debug locations
  inputs/argN.npy         the seeded inputs, named as tessera names @main's arguments
  outputs/outN.npy        JAX's outputs on the XLA CPU backend
The dynamic-batch case is exported with a symbolic batch dimension (jax.export), so its text has
`?` dimensions; its inputs fix the batch at 3.

The mesh cases run on 4 host CPU devices over a 2x2 mesh ("x", "y") built from the device array
transposed (jax.sharding.Mesh over devices [[0, 2], [1, 3]]), so the physical order differs from
the logical one the text names:
  shard_map_sdy, shard_map_gspmd  one jax.shard_map body (psum, all_gather, psum_scatter,
                                  all_to_all, ppermute over the manual axes) lowered with Shardy
                                  (sdy.manual_computation) and with GSPMD (custom_call
                                  @SPMDFullToShardShape / @SPMDShardToFullShape)
  gspmd_transposed                a jit with in/out shardings and a sharding constraint over the
                                  minor axis, whose GSPMD text reads <=[2,2]T(1,0); shards/out0.rR.npy
                                  is the output block of the device with logical id R
OUT_DIR/cases.json lists the single-device cases under "cases" and the mesh cases under
"mesh_cases". `generate.py OUT_DIR NAME...` writes only the named cases.
"""

import json
import os
import sys

import numpy as np

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The mesh cases need 4 devices; single-device cases run on the first one as before.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax import export, lax  # noqa: E402


def seeded(seed, *shapes, scale=0.5):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(s) * scale).astype(np.float32) for s in shapes]


def mlp(x, w1, b1, w2, b2):
    h = x @ w1 + b1
    exact = jax.nn.gelu(h, approximate=False)
    tanh_form = jax.nn.gelu(h, approximate=True)
    return (exact + tanh_form) @ w2 + b2, jnp.mean(exact, axis=-1)


def causal_attention(q, k, v):
    scale = 1.0 / np.sqrt(q.shape[-1]).astype(np.float32)
    scores = jnp.einsum("bhqd,bhkd->bhqk", q, k) * scale
    seq = q.shape[2]
    mask = jnp.arange(seq)[:, None] >= jnp.arange(seq)[None, :]
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    return jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(scores, axis=-1), v)


HEADS, HEAD_DIM, HIDDEN, SEQ = 2, 8, 16, 6


def rms_norm(x, g):
    return x * lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + 1e-6) * g


def rope(x):
    # x: [seq, heads, head_dim], rotate-half (Llama) pairing.
    half = HEAD_DIM // 2
    inv = 1.0 / (10000.0 ** (jnp.arange(half, dtype=jnp.float32) / half))
    angles = jnp.arange(x.shape[0], dtype=jnp.float32)[:, None] * inv[None, :]
    cos = jnp.concatenate([jnp.cos(angles)] * 2, axis=-1)[:, None, :]
    sin = jnp.concatenate([jnp.sin(angles)] * 2, axis=-1)[:, None, :]
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def decoder(x, *params):
    for layer in range(2):
        g1, wq, wk, wv, wo, g2, w_up, w_down = params[layer * 8:(layer + 1) * 8]
        h = rms_norm(x, g1)
        q = rope((h @ wq).reshape(SEQ, HEADS, HEAD_DIM))
        k = rope((h @ wk).reshape(SEQ, HEADS, HEAD_DIM))
        v = (h @ wv).reshape(SEQ, HEADS, HEAD_DIM)
        att = causal_attention(q.transpose(1, 0, 2)[None], k.transpose(1, 0, 2)[None], v.transpose(1, 0, 2)[None])
        x = x + att[0].transpose(1, 0, 2).reshape(SEQ, HIDDEN) @ wo
        h = rms_norm(x, g2)
        x = x + jax.nn.silu(h @ w_up) @ w_down
    return x


def decoder_params(seed):
    shapes = []
    for _ in range(2):
        shapes += [(HIDDEN,), (HIDDEN, HIDDEN), (HIDDEN, HIDDEN), (HIDDEN, HIDDEN), (HIDDEN, HIDDEN),
                   (HIDDEN,), (HIDDEN, 32), (32, HIDDEN)]
    return seeded(seed, (SEQ, HIDDEN), *shapes)


def conv_block(x, w, b):
    y = lax.conv_general_dilated(x, w, window_strides=(1, 1), padding=((1, 1), (1, 1)),
                                 dimension_numbers=("NCHW", "OIHW", "NCHW"))
    y = jax.nn.relu(y + b[None, :, None, None])
    pooled = lax.reduce_window(y, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
    return pooled, jnp.sum(pooled, axis=(2, 3))


def scan_rnn(xs, h0, wx, wh):
    def step(h, x):
        h = jnp.tanh(x @ wx + h @ wh)
        return h, h
    last, hs = lax.scan(step, h0, xs)
    return last, hs


def while_growth(x, limit):
    # The trip count depends on the data: grow x until its magnitude passes the limit.
    def cond(carry):
        i, v = carry
        return jnp.sum(jnp.abs(v)) < limit[0]

    def body(carry):
        i, v = carry
        return i + 1, jnp.tanh(v) * 1.5 + v

    trips, grown = lax.while_loop(cond, body, (jnp.int32(0), x))
    return grown, trips


def switch_branches(x, k):
    # The branch index is data: stablehlo.case with three branches.
    branches = [lambda v: jnp.sin(v), lambda v: v * 2.0 + 1.0, lambda v: jnp.tanh(v) - v]
    return lax.switch(k[0], branches, x)


def scatter_add(x, ids, v):
    # Rows of v added into x at ids (a repeated id adds twice): stablehlo.scatter with an add body.
    return x.at[ids].add(v), x.at[ids[1:]].set(v[1:] * 3.0)


def embedding_gather(table, ids, x):
    return table[ids] * 2.0, jnp.take(x, ids[0], axis=1, mode="clip")


def dynamic_mlp(x, w, b):
    return jnp.tanh(x @ w + b).sum(axis=-1)


def generic_text(lowered):
    module = lowered.compiler_ir("stablehlo")
    return module.operation.get_asm(print_generic_op_form=True, enable_debug_info=False)


def write_case(out_dir, name, pretty, generic, inputs, outputs):
    case = os.path.join(out_dir, name)
    os.makedirs(os.path.join(case, "inputs"), exist_ok=True)
    os.makedirs(os.path.join(case, "outputs"), exist_ok=True)
    with open(os.path.join(case, "pretty.stablehlo.mlir"), "w") as f:
        f.write(pretty)
    with open(os.path.join(case, "generic.stablehlo.mlir"), "w") as f:
        f.write(generic)
    for i, x in enumerate(inputs):
        np.save(os.path.join(case, "inputs", f"arg{i}.npy"), np.asarray(x))
    for i, y in enumerate(outputs):
        np.save(os.path.join(case, "outputs", f"out{i}.npy"), np.asarray(y))
    print(f"stablehlo: {name}: {len(inputs)} inputs, {len(outputs)} outputs")


def jit_case(out_dir, name, f, inputs):
    lowered = jax.jit(f).lower(*inputs)
    outputs = jax.jit(f)(*inputs)
    outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    write_case(out_dir, name, lowered.as_text(), generic_text(lowered), inputs, outputs)


def dynamic_case(out_dir):
    (b,) = export.symbolic_shape("batch")
    specs = [jax.ShapeDtypeStruct((b, 16), jnp.float32), jax.ShapeDtypeStruct((16, 8), jnp.float32),
             jax.ShapeDtypeStruct((8,), jnp.float32)]
    exported = export.export(jax.jit(dynamic_mlp))(*specs)
    inputs = seeded(6, (3, 16), (16, 8), (8,))
    outputs = (exported.call(*inputs),)
    module = exported.mlir_module()
    from jax._src.interpreters import mlir as jax_mlir
    with jax_mlir.make_ir_context():
        from jax._src.lib.mlir import ir
        parsed = ir.Module.parse(module)
        generic = parsed.operation.get_asm(print_generic_op_form=True, enable_debug_info=False)
        pretty = parsed.operation.get_asm(enable_debug_info=False)
    write_case(out_dir, "dynamic_batch", pretty, generic, inputs, outputs)


def transposed_mesh():
    """A 2x2 ("x", "y") mesh over the 4 CPU devices in transposed order."""
    from jax.sharding import AxisType, Mesh
    devices = np.array(jax.devices()[:4]).reshape(2, 2).T
    return Mesh(devices, ("x", "y"), axis_types=(AxisType.Auto, AxisType.Auto))


def shard_map_body(a, w):
    """Per device: a is an (8/2)x(4/2) block of a, w a (4/2)x6 block of w."""
    h = lax.psum(a @ w, "y")                                  # all_reduce over y: 4x6
    g = lax.all_gather(h, "x", axis=0, tiled=True)            # all_gather over x: 8x6
    s = lax.psum_scatter(jnp.tanh(g), "x", scatter_dimension=1, tiled=True)  # reduce_scatter: 8x3
    t = lax.all_to_all(s, "y", 0, 1, tiled=True)              # all_to_all over y: 4x6
    p = lax.ppermute(t, "x", perm=[(0, 1), (1, 0)])           # collective_permute over x
    return p * 0.5 + t, h


def shard_map_case(out_dir, name, shardy):
    from jax.sharding import PartitionSpec as P
    mesh = transposed_mesh()
    jax.config.update("jax_use_shardy_partitioner", shardy)
    try:
        f = jax.shard_map(shard_map_body, mesh=mesh, in_specs=(P("x", "y"), P("y", None)),
                          out_specs=(P(("y", "x"), None), P("x", None)), check_vma=False)
        jit_case(out_dir, name, f, seeded(21, (8, 4), (4, 6)))
    finally:
        jax.config.update("jax_use_shardy_partitioner", True)


def gspmd_transposed_case(out_dir):
    from jax.sharding import NamedSharding, PartitionSpec as P
    mesh = transposed_mesh()

    def f(a, w):
        h = jnp.tanh(a @ w)
        h = lax.with_sharding_constraint(h, NamedSharding(mesh, P("y", None)))
        return h * 2.0 + 1.0

    jax.config.update("jax_use_shardy_partitioner", False)
    try:
        jitted = jax.jit(f, in_shardings=(NamedSharding(mesh, P("x", "y")), NamedSharding(mesh, P("y", None))),
                         out_shardings=NamedSharding(mesh, P(None, "y")))
        inputs = seeded(22, (8, 4), (4, 6))
        lowered = jitted.lower(*inputs)
        out = jitted(*inputs)
        write_case(out_dir, "gspmd_transposed", lowered.as_text(), generic_text(lowered), inputs, (out,))
        # The block each device holds, by its logical id (its position in the mesh, the id the
        # text's shardings name), which is not its physical id on the transposed mesh.
        shards = os.path.join(out_dir, "gspmd_transposed", "shards")
        os.makedirs(shards, exist_ok=True)
        logical = {d.id: i for i, d in enumerate(mesh.devices.flat)}
        for shard in out.addressable_shards:
            np.save(os.path.join(shards, f"out0.r{logical[shard.device.id]}.npy"), np.asarray(shard.data))
    finally:
        jax.config.update("jax_use_shardy_partitioner", True)


MESH_CASES = {
    "shard_map_sdy": lambda out_dir: shard_map_case(out_dir, "shard_map_sdy", True),
    "shard_map_gspmd": lambda out_dir: shard_map_case(out_dir, "shard_map_gspmd", False),
    "gspmd_transposed": gspmd_transposed_case,
}


def main():
    out_dir = sys.argv[1]
    only = set(sys.argv[2:])
    os.makedirs(out_dir, exist_ok=True)
    if only:
        unknown = only - set(MESH_CASES)
        if unknown:
            raise SystemExit(f"generate.py: only the mesh cases are written by name, not {sorted(unknown)}")
        for name in sorted(only):
            MESH_CASES[name](out_dir)
        write_index(out_dir)
        return
    jit_case(out_dir, "mlp_gelu", mlp, seeded(1, (4, 16), (16, 32), (32,), (32, 8), (8,)))
    jit_case(out_dir, "causal_attention", causal_attention, seeded(2, (2, 2, 6, 8), (2, 2, 6, 8), (2, 2, 6, 8)))
    jit_case(out_dir, "decoder_rmsnorm_rope", decoder, decoder_params(3))
    jit_case(out_dir, "conv_block", conv_block, seeded(4, (2, 3, 8, 8), (4, 3, 3, 3), (4,)))
    jit_case(out_dir, "scan_rnn", scan_rnn, seeded(5, (5, 2, 4), (2, 8), (4, 8), (8, 8)))
    ids = np.random.default_rng(7).integers(-10, 10, size=(2, 3)).astype(np.int32)
    jit_case(out_dir, "embedding_gather", embedding_gather, seeded(7, (10, 4)) + [ids] + seeded(8, (2, 10, 3)))
    jit_case(out_dir, "while_growth", while_growth, seeded(9, (2, 3)) + [np.array([40.0], dtype=np.float32)])
    jit_case(out_dir, "switch_branches", switch_branches, seeded(10, (3, 4)) + [np.array([1], dtype=np.int32)])
    scatter_ids = np.array([3, 0, 3, 5], dtype=np.int32)
    jit_case(out_dir, "scatter_add", scatter_add, seeded(11, (6, 4)) + [scatter_ids] + seeded(12, (4, 4)))
    dynamic_case(out_dir)
    for make in MESH_CASES.values():
        make(out_dir)
    write_index(out_dir)


def write_index(out_dir):
    names = sorted(d for d in os.listdir(out_dir) if os.path.isdir(os.path.join(out_dir, d)))
    with open(os.path.join(out_dir, "cases.json"), "w") as f:
        json.dump({"jax": jax.__version__, "cases": [n for n in names if n not in MESH_CASES],
                   "mesh_cases": [n for n in names if n in MESH_CASES]}, f, indent=1)


if __name__ == "__main__":
    main()
