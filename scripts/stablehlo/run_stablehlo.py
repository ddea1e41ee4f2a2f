"""Runs a StableHLO module on XLA's CPU backend through the jax venv (the round-trip test of
`tessera opt --emit stablehlo`, tests/e2e/stablehlo.rs).

Usage: run_stablehlo.py MODULE.mlir OUT_DIR INPUT.npy...
       run_stablehlo.py --replicas N MODULE.mlir OUT_DIR INPUT.npy...

The inputs are @main's arguments in order, converted to the argument's element type (tessera
writes bf16 and fp8 tensors as f32 .npy files); the results are written as OUT_DIR/0.npy, ...
(narrow floats widened to f32).

With --replicas N the module is a per-rank program (`tessera opt --pipeline 'shard{...}' --emit
stablehlo`) compiled with N replicas on N host CPU devices (XLA_FLAGS
--xla_force_host_platform_device_count=N, set here before jax starts): the inputs are rank 0's
arguments, then rank 1's, ...; replica r runs as rank r and writes OUT_DIR/r<r>.<i>.npy.
The module is parsed by jaxlib's MLIR bindings (with the stablehlo and chlo dialects JAX
registers) and compiled by the XLA client JAX itself uses.
"""

import os
import sys

import ml_dtypes
import numpy as np

REPLICAS = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[1] == "--replicas" else 1
if REPLICAS > 1:
    # The host platform must offer N devices before jax initializes its CPU client.
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={REPLICAS}").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
import jax  # noqa: E402
from jax._src import xla_bridge  # noqa: E402
from jax._src.interpreters import mlir  # noqa: E402
from jax._src.lib import xla_client  # noqa: E402
from jax._src.lib.mlir import ir  # noqa: E402

# Without it device_put narrows i64 inputs (token ids) to i32, which the executable refuses.
jax.config.update("jax_enable_x64", True)


ELEMENT_TYPES = {"f64": np.float64, "f32": np.float32, "f16": np.float16, "bf16": ml_dtypes.bfloat16,
                 "f8E4M3FN": ml_dtypes.float8_e4m3fn, "f8E5M2": ml_dtypes.float8_e5m2, "i64": np.int64,
                 "i32": np.int32, "i8": np.int8, "i1": np.bool_}


def argument_types(module):
    """The element type of each of @main's arguments."""
    for op in module.body.operations:
        if op.operation.name == "func.func" and ir.StringAttr(op.attributes["sym_name"]).value == "main":
            inputs = ir.FunctionType(ir.TypeAttr(op.attributes["function_type"]).value).inputs
            return [ELEMENT_TYPES[str(ir.RankedTensorType(t).element_type)] for t in inputs]
    raise SystemExit("run_stablehlo: the module has no @main")


def save(path, result):
    result = np.asarray(result)
    if result.dtype not in (np.float64, np.float32, np.int64, np.int32, np.int8, np.bool_):
        result = result.astype(np.float32)
    np.save(path, result)


def parse_module(module_path):
    """The argument dtypes of `@main` and the module as MLIR bytecode, for XLA to compile."""
    with open(module_path) as f:
        text = f.read()
    with mlir.make_ir_context():
        module = ir.Module.parse(text)
        return argument_types(module), mlir.module_to_bytecode(module)


def main_replicated(module_path, out_dir, inputs):
    """Runs a per-rank program on REPLICAS devices, replica r as rank r."""
    types, bytecode = parse_module(module_path)
    n = REPLICAS
    if len(inputs) != n * len(types):
        raise SystemExit(f"run_stablehlo: {n} replicas x {len(types)} arguments need {n * len(types)} files, "
                         f"{len(inputs)} given")
    backend = xla_bridge.get_backend("cpu")
    devices = backend.devices()[:n]
    if len(devices) != n:
        raise SystemExit(f"run_stablehlo: {n} replicas but the CPU backend has {len(devices)} devices")
    options = xla_client.CompileOptions()
    options.num_replicas = n
    options.num_partitions = 1
    options.device_assignment = xla_client.DeviceAssignment.create(np.arange(n).reshape(n, 1))
    executable = backend.compile_and_load(bytecode, xla_client.DeviceList(tuple(devices)), options)
    mesh = jax.sharding.Mesh(np.array(devices), ("replica",))
    args = []
    for a, t in enumerate(types):
        blocks = [np.load(inputs[r * len(types) + a]).astype(t) for r in range(n)]
        shards = [jax.device_put(b, d) for b, d in zip(blocks, devices)]
        # The per-replica blocks travel as one array split along its first dimension; a scalar,
        # which cannot be split, as a replicated one (every replica gets its own block anyway).
        if blocks[0].ndim == 0:
            spec, shape = jax.sharding.PartitionSpec(), blocks[0].shape
        else:
            spec, shape = jax.sharding.PartitionSpec("replica"), (n * blocks[0].shape[0],) + blocks[0].shape[1:]
        sharding = jax.sharding.NamedSharding(mesh, spec)
        args.append(jax.make_array_from_single_device_arrays(shape, sharding, shards))
    results = executable.execute_sharded(args).disassemble_into_single_device_arrays()
    os.makedirs(out_dir, exist_ok=True)
    for i, per_device in enumerate(results):
        for r in range(n):
            save(os.path.join(out_dir, f"r{r}.{i}.npy"), per_device[r])
    print(f"run_stablehlo: {len(results)} outputs on {n} replicas")


def main():
    if REPLICAS > 1:
        return main_replicated(sys.argv[3], sys.argv[4], sys.argv[5:])
    module_path, out_dir, inputs = sys.argv[1], sys.argv[2], sys.argv[3:]
    types, bytecode = parse_module(module_path)
    backend = xla_bridge.get_backend("cpu")
    device = backend.devices()[0]
    executable = backend.compile_and_load(bytecode, xla_client.DeviceList((device,)), xla_client.CompileOptions())
    if len(types) != len(inputs):
        raise SystemExit(f"run_stablehlo: @main takes {len(types)} arguments, {len(inputs)} files given")
    args = [jax.device_put(np.load(path).astype(t), device) for path, t in zip(inputs, types)]
    results = executable.execute_sharded(args).disassemble_into_single_device_arrays()
    os.makedirs(out_dir, exist_ok=True)
    for i, per_device in enumerate(results):
        save(os.path.join(out_dir, f"{i}.npy"), per_device[0])
    print(f"run_stablehlo: {len(results)} outputs")


if __name__ == "__main__":
    main()
