"""Runs a StableHLO module on XLA's CPU backend through the jax venv (the round-trip test of
`tessera opt --emit stablehlo`, tests/e2e/stablehlo.rs).

Usage: run_stablehlo.py MODULE.mlir OUT_DIR INPUT.npy...

The inputs are @main's arguments in order, converted to the argument's element type (tessera
writes bf16 and fp8 tensors as f32 .npy files); the results are written as OUT_DIR/0.npy, ...
(narrow floats widened to f32).
The module is parsed by jaxlib's MLIR bindings (with the stablehlo and chlo dialects JAX
registers) and compiled by the XLA client JAX itself uses.
"""

import os
import sys

import ml_dtypes
import numpy as np

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


def main():
    module_path, out_dir, inputs = sys.argv[1], sys.argv[2], sys.argv[3:]
    with open(module_path) as f:
        text = f.read()
    with mlir.make_ir_context():
        module = ir.Module.parse(text)
        types = argument_types(module)
        bytecode = mlir.module_to_bytecode(module)
    backend = xla_bridge.get_backend("cpu")
    device = backend.devices()[0]
    executable = backend.compile_and_load(bytecode, xla_client.DeviceList((device,)), xla_client.CompileOptions())
    if len(types) != len(inputs):
        raise SystemExit(f"run_stablehlo: @main takes {len(types)} arguments, {len(inputs)} files given")
    args = [jax.device_put(np.load(path).astype(t), device) for path, t in zip(inputs, types)]
    results = executable.execute_sharded(args).disassemble_into_single_device_arrays()
    os.makedirs(out_dir, exist_ok=True)
    for i, per_device in enumerate(results):
        result = np.asarray(per_device[0])
        if result.dtype not in (np.float64, np.float32, np.int64, np.int32, np.int8, np.bool_):
            result = result.astype(np.float32)
        np.save(os.path.join(out_dir, f"{i}.npy"), result)
    print(f"run_stablehlo: {len(results)} outputs")


if __name__ == "__main__":
    main()
