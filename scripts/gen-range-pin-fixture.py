"""Writes tests/fixtures/range-pin/width-must-be-4.onnx: x [batch, width] reshaped to [batch, 4],
then tanh. The reshape holds only at width 4, so the model does not import with both symbols
free; tests/e2e/range_artifact.rs compiles it with `--dim width=4..4` (bound at import) and a
batch range. Run with .cache/model-corpus/venv/bin/python (onnx); it rewrites the same bytes.
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "range-pin", "width-must-be-4.onnx")

graph = helper.make_graph(
    [
        helper.make_node("Reshape", ["x", "target"], ["r"], name="to_width_4"),
        helper.make_node("Tanh", ["r"], ["y"], name="tanh"),
    ],
    "pinned_width",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "width"])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    initializer=[numpy_helper.from_array(np.array([0, 4], dtype=np.int64), "target")],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tessera tests")
model.ir_version = 8
onnx.checker.check_model(model)
os.makedirs(os.path.dirname(OUT), exist_ok=True)
onnx.save(model, OUT)
