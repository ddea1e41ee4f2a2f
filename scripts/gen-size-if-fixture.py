"""Writes tests/fixtures/size-if/doubled-when-four-wide.onnx: y = x + x when x's width is 4, else
-x, for x [batch, width]. The condition is Equal(Gather(Shape(x), 1), 4): the sizes decide it, so
one symbolic import keeps the If as a run-time tsr.if (both branches hold for every size);
tests/e2e/range_artifact.rs runs it through `tessera run` and one range artifact over width.
Run with .cache/model-corpus/venv/bin/python (onnx); it rewrites the same bytes.
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "size-if", "doubled-when-four-wide.onnx")

then_branch = helper.make_graph(
    [helper.make_node("Add", ["x", "x"], ["doubled"], name="double")],
    "then",
    [],
    [helper.make_tensor_value_info("doubled", TensorProto.FLOAT, None)],
)
else_branch = helper.make_graph(
    [helper.make_node("Neg", ["x"], ["negated"], name="negate")],
    "else",
    [],
    [helper.make_tensor_value_info("negated", TensorProto.FLOAT, None)],
)
graph = helper.make_graph(
    [
        helper.make_node("Shape", ["x"], ["shape"], name="shape"),
        helper.make_node("Gather", ["shape", "one"], ["width"], name="width", axis=0),
        helper.make_node("Equal", ["width", "four"], ["is_four"], name="is_four"),
        helper.make_node("If", ["is_four"], ["y"], name="if_four_wide", then_branch=then_branch, else_branch=else_branch),
    ],
    "size_if",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "width"])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "width"])],
    initializer=[
        numpy_helper.from_array(np.array(1, dtype=np.int64), "one"),
        numpy_helper.from_array(np.array(4, dtype=np.int64), "four"),
    ],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tessera tests")
model.ir_version = 8
onnx.checker.check_model(model)
os.makedirs(os.path.dirname(OUT), exist_ok=True)
onnx.save(model, OUT)
