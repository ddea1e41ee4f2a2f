"""Writes the recurrent-op fixtures in tests/fixtures/onnx-recurrent/ (ONNX node-test layout:
model.onnx and test_data_set_0/{input,output}_*.pb), outputs computed by onnxruntime.

They cover what the ONNX node tests do not: bidirectional layers with sequence_lens (reverse
directions read each sequence from its own end), layout = 1, clip, input_forget,
linear_before_reset = 0 and 1, parameterised activations and omitted optional outputs.
Run with .cache/real-models/venv/bin/python (numpy, onnx, onnxruntime); the seed is fixed, so
rerunning rewrites the same files.
"""
import os
import shutil

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "onnx-recurrent")
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def reference(op, node, names, feeds, layout):
    """onnxruntime's outputs; it refuses layout = 1, so batch-major cases run as the layout-0
    node on transposed inputs, with the outputs transposed back (the spec's definition)."""
    feeds = {n: feeds[n] for n in names if n}
    if layout:
        node = onnx.NodeProto.FromString(node.SerializeToString())
        next(a for a in node.attribute if a.name == "layout").i = 0
        for n in ("X", "initial_h", "initial_c"):
            if n in feeds:
                feeds[n] = np.ascontiguousarray(feeds[n].transpose(1, 0, 2))
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT32 if n == "sequence_lens" else TensorProto.FLOAT,
                                            None) for n in feeds]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in node.output if n]
    model = helper.make_model(helper.make_graph([node], "reference", inputs, outs),
                              opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    results = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    if layout:
        results = [np.ascontiguousarray(r.transpose(2, 0, 1, 3) if r.ndim == 4 else r.transpose(1, 0, 2))
                   for r in results]
    return results


def case(name, op, seq, batch, inp, hidden, attrs, seq_lens=None, layout=0, outputs=("Y", "Y_h", "Y_c"),
         initial=True, peepholes=False, seed=0, scale=0.5, bias=None):
    rng = np.random.default_rng(seed)
    dirs = 2 if attrs.get("direction") == "bidirectional" else 1
    g = GATES[op]
    f32 = lambda *shape: (rng.standard_normal(shape) * scale).astype(np.float32)
    x = f32(batch, seq, inp) if layout else f32(seq, batch, inp)
    feeds = {"X": x, "W": f32(dirs, g * hidden, inp), "R": f32(dirs, g * hidden, hidden),
             "B": f32(dirs, 2 * g * hidden)}
    if bias is not None:
        feeds["B"] = np.full((dirs, 2 * g * hidden), bias, dtype=np.float32)
    names = ["X", "W", "R", "B"]
    if seq_lens is not None:
        feeds["sequence_lens"] = np.array(seq_lens, dtype=np.int32)
        names.append("sequence_lens")
    else:
        names.append("")
    state_shape = (batch, dirs, hidden) if layout else (dirs, batch, hidden)
    if initial:
        feeds["initial_h"] = f32(*state_shape)
        names.append("initial_h")
        if op == "LSTM":
            feeds["initial_c"] = f32(*state_shape)
            names.append("initial_c")
    if peepholes:
        if not initial:
            names += ["", ""]
        feeds["P"] = f32(dirs, 3 * hidden)
        names.append("P")
    while names and names[-1] == "":
        names.pop()
    if op != "LSTM":
        outputs = tuple(o for o in outputs if o != "Y_c")
    node_outputs = list(outputs)
    node = helper.make_node(op, names, node_outputs, hidden_size=hidden, layout=layout, **attrs)
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT32 if n == "sequence_lens" else TensorProto.FLOAT,
                                            feeds[n].shape) for n in names if n]
    y_shape = (batch, seq, dirs, hidden) if layout else (seq, dirs, batch, hidden)
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, y_shape if n == "Y" else state_shape)
            for n in node_outputs if n]
    graph = helper.make_graph([node], name, inputs, outs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    results = reference(op, node, names, feeds, layout)
    d = os.path.join(ROOT, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(os.path.join(d, "test_data_set_0"))
    onnx.save(model, os.path.join(d, "model.onnx"))
    for i, n in enumerate(n for n in names if n):
        t = numpy_helper.from_array(feeds[n], n)
        open(os.path.join(d, "test_data_set_0", f"input_{i}.pb"), "wb").write(t.SerializeToString())
    for i, (n, v) in enumerate(zip([n for n in node_outputs if n], results)):
        t = numpy_helper.from_array(v, n)
        open(os.path.join(d, "test_data_set_0", f"output_{i}.pb"), "wb").write(t.SerializeToString())


case("lstm_bidirectional_seq_lens", "LSTM", 5, 3, 4, 3, {"direction": "bidirectional"}, seq_lens=[5, 2, 3],
     peepholes=True, seed=1)
case("lstm_batchwise_bidirectional_seq_lens", "LSTM", 4, 2, 3, 2, {"direction": "bidirectional"}, seq_lens=[1, 4],
     layout=1, peepholes=True, seed=2)
case("lstm_reverse_clip_input_forget", "LSTM", 4, 2, 3, 3,
     {"direction": "reverse", "clip": 0.7, "input_forget": 1,
      "activations": ["HardSigmoid", "ScaledTanh", "Softsign"],
      "activation_alpha": [0.3, 1.5, 0.0], "activation_beta": [0.4, 0.8, 0.0]}, initial=False, seed=3)
# clip 0.5 with large biases: every gate saturates at the clip and the cell state grows past it
# (into h it goes unclipped).
case("lstm_clip_below_cell_state", "LSTM", 6, 2, 2, 2, {"direction": "forward", "clip": 0.5}, seed=11,
     bias=4.0)
case("lstm_no_initial_states_y_h_only", "LSTM", 3, 2, 2, 2, {"direction": "forward"}, outputs=("", "Y_h"),
     initial=False, seed=4)
case("gru_bidirectional_seq_lens", "GRU", 5, 3, 3, 4, {"direction": "bidirectional"}, seq_lens=[3, 5, 1], seed=5)
case("gru_batchwise_linear_before_reset", "GRU", 4, 2, 3, 3,
     {"direction": "bidirectional", "linear_before_reset": 1}, seq_lens=[4, 2], layout=1, seed=6)
# onnxruntime's GRU gives g the parameters of f (entry 0, not entry 1; its LSTM and RNN read
# entry i for function i), so both entries are equal here and either reading gives the same.
case("gru_reverse_activations", "GRU", 3, 2, 2, 3,
     {"direction": "reverse", "activations": ["LeakyRelu", "Affine"], "activation_alpha": [0.9, 0.9],
      "activation_beta": [0.1, 0.1], "clip": 2.0}, seed=7)
case("rnn_bidirectional_seq_lens_batchwise", "RNN", 4, 3, 2, 3,
     {"direction": "bidirectional", "activations": ["Relu", "Elu"], "activation_alpha": [0.0, 0.5]},
     seq_lens=[2, 4, 3], layout=1, seed=8)
case("rnn_reverse_thresholded_softplus", "RNN", 3, 2, 3, 2,
     {"direction": "reverse", "activations": ["ThresholdedRelu"], "activation_alpha": [0.1]}, seed=9)
case("rnn_softplus_sigmoid_bidirectional", "RNN", 3, 2, 3, 2,
     {"direction": "bidirectional", "activations": ["Softplus", "Sigmoid"]}, outputs=("Y",), seed=10)
