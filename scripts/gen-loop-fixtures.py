"""Writes the loop fixtures in tests/fixtures/onnx-loops/ (ONNX node-test layout: model.onnx and
test_data_set_N/{input,output}_*.pb), outputs computed by onnxruntime.

They cover what the ONNX node tests do not: a Loop whose trip count and condition are both
computed from the data at run time (no scan outputs, so nothing is bound at import), a Loop
whose scan outputs have a symbolic length (`M = Shape(x)[0]`), and a reverse cumulative sum by
Scan along axis 1 of an input with a symbolic scan length. Each has two data sets of different
sizes or trip counts, so one import must serve both.
Run with .cache/real-models/venv/bin/python (numpy, onnx, onnxruntime); the seed is fixed, so
rerunning rewrites the same files.
"""
import os
import shutil

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "onnx-loops")
OPSET = 17


def const(name, value, dtype=np.float32):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(value, dtype=dtype)))


def write(name, graph, data_sets):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    d = os.path.join(ROOT, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    onnx.save(model, os.path.join(d, "model.onnx"))
    for k, feeds in enumerate(data_sets):
        s = os.path.join(d, f"test_data_set_{k}")
        os.makedirs(s)
        outputs = session.run(None, feeds)
        for i, inp in enumerate(graph.input):
            t = numpy_helper.from_array(feeds[inp.name], inp.name)
            open(os.path.join(s, f"input_{i}.pb"), "wb").write(t.SerializeToString())
        for i, (out, v) in enumerate(zip(graph.output, outputs)):
            t = numpy_helper.from_array(np.asarray(v), out.name)
            open(os.path.join(s, f"output_{i}.pb"), "wb").write(t.SerializeToString())


def loop_data_dependent_trips(rng):
    """while sum(s) < threshold and i < max_trips: s = 2 s + x; k += i."""
    body = helper.make_graph(
        [
            const("two", 2.0),
            helper.make_node("Mul", ["s_in", "two"], ["doubled"]),
            helper.make_node("Add", ["doubled", "x"], ["s_out"]),
            helper.make_node("ReduceSum", ["s_out"], ["total"], keepdims=0),
            helper.make_node("Less", ["total", "threshold"], ["cond_out"]),
            helper.make_node("Cast", ["i"], ["i_float"], to=TensorProto.FLOAT),
            helper.make_node("Add", ["k_in", "i_float"], ["k_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("s_in", TensorProto.FLOAT, [4]),
            helper.make_tensor_value_info("k_in", TensorProto.FLOAT, []),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("s_out", TensorProto.FLOAT, [4]),
            helper.make_tensor_value_info("k_out", TensorProto.FLOAT, []),
        ],
    )
    graph = helper.make_graph(
        [
            helper.make_node("ReduceSum", ["x"], ["start_total"], keepdims=0),
            helper.make_node("Less", ["start_total", "threshold"], ["cond0"]),
            const("k0", 0.0),
            helper.make_node("Loop", ["max_trips", "cond0", "x", "k0"], ["s", "k"], body=body),
        ],
        "loop_data_dependent_trips",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [4]),
            helper.make_tensor_value_info("threshold", TensorProto.FLOAT, []),
            helper.make_tensor_value_info("max_trips", TensorProto.INT64, []),
        ],
        [
            helper.make_tensor_value_info("s", TensorProto.FLOAT, [4]),
            helper.make_tensor_value_info("k", TensorProto.FLOAT, []),
        ],
    )
    x = rng.uniform(0.5, 1.5, 4).astype(np.float32)
    # The condition stops the first (after a few trips); the trip count stops the second.
    write("loop_data_dependent_trips", graph, [
        {"x": x, "threshold": np.array(60.0, np.float32), "max_trips": np.array(100, np.int64)},
        {"x": x, "threshold": np.array(1e6, np.float32), "max_trips": np.array(3, np.int64)},
    ])


def loop_symbolic_scan_outputs(rng):
    """for i in range(len(x)): acc += i * x[i]; yield acc."""
    body = helper.make_graph(
        [
            helper.make_node("Gather", ["x", "i"], ["row"], axis=0),
            helper.make_node("Cast", ["i"], ["i_float"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["row", "i_float"], ["weighted"]),
            helper.make_node("Add", ["acc_in", "weighted"], ["acc_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Identity", ["acc_out"], ["scan_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [2]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("scan_out", TensorProto.FLOAT, [2]),
        ],
    )
    graph = helper.make_graph(
        [
            helper.make_node("Shape", ["x"], ["shape"]),
            const("zero", 0, np.int64),
            helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),
            helper.make_node("Loop", ["n", "", "init"], ["acc", "partial_sums"], body=body),
        ],
        "loop_symbolic_scan_outputs",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2]),
            helper.make_tensor_value_info("init", TensorProto.FLOAT, [2]),
        ],
        [
            helper.make_tensor_value_info("acc", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("partial_sums", TensorProto.FLOAT, ["n", 2]),
        ],
    )
    init = rng.standard_normal(2).astype(np.float32)
    write("loop_symbolic_scan_outputs", graph, [
        {"x": rng.standard_normal((3, 2)).astype(np.float32), "init": init},
        {"x": rng.standard_normal((5, 2)).astype(np.float32), "init": init},
    ])


def scan_reverse_cumsum(rng):
    """Suffix sums of each row of x (a cumulative sum from the end along axis 1)."""
    body = helper.make_graph(
        [
            helper.make_node("Add", ["sum_in", "column"], ["sum_out"]),
            helper.make_node("Identity", ["sum_out"], ["scan_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("sum_in", TensorProto.FLOAT, [3]),
            helper.make_tensor_value_info("column", TensorProto.FLOAT, [3]),
        ],
        [
            helper.make_tensor_value_info("sum_out", TensorProto.FLOAT, [3]),
            helper.make_tensor_value_info("scan_out", TensorProto.FLOAT, [3]),
        ],
    )
    graph = helper.make_graph(
        [
            helper.make_node("Scan", ["initial", "x"], ["total", "suffix_sums"], body=body, num_scan_inputs=1,
                             scan_input_axes=[1], scan_input_directions=[1], scan_output_axes=[1],
                             scan_output_directions=[1]),
        ],
        "scan_reverse_cumsum",
        [
            helper.make_tensor_value_info("initial", TensorProto.FLOAT, [3]),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, "steps"]),
        ],
        [
            helper.make_tensor_value_info("total", TensorProto.FLOAT, [3]),
            helper.make_tensor_value_info("suffix_sums", TensorProto.FLOAT, [3, "steps"]),
        ],
    )
    initial = np.zeros(3, np.float32)
    write("scan_reverse_cumsum", graph, [
        {"initial": initial, "x": rng.standard_normal((3, 5)).astype(np.float32)},
        {"initial": initial, "x": rng.standard_normal((3, 2)).astype(np.float32)},
    ])


if __name__ == "__main__":
    rng = np.random.default_rng(0)
    loop_data_dependent_trips(rng)
    loop_symbolic_scan_outputs(rng)
    scan_reverse_cumsum(rng)
