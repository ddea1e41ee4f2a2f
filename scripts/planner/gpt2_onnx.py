"""Writes a GPT-2-shaped ONNX model with random weights, as `torch.onnx.export` writes a half- or
bfloat16-precision GPT2LMHeadModel with dynamic batch and sequence axes: the weights are
initializers, the token and position ids are `[batch, sequence]` inputs, and the causal mask is
an additive `[sequence, sequence]` input (the graph ends in softmax over float32 logits, as the zoo's
GPT head does, so `tessera plan` prices the same work for the file as for `gpt2`).

Used by the planner's e2e tests (tests/e2e/plan_model_file.rs) and for BENCHMARKS.md; needs only
`onnx` and numpy (the real-models venv has both). No torch: the weights are random, which is all
a plan needs.

Usage: gpt2_onnx.py OUT.onnx [--layers 12 --hidden 768 --heads 12 --vocab 50257 --ctx 1024
                              --dtype bf16|f16|f32 --batch-name batch --seq-name sequence]
"""

import argparse

import numpy as np
import onnx
from onnx import TensorProto, helper

DTYPES = {"bf16": TensorProto.BFLOAT16, "f16": TensorProto.FLOAT16, "f32": TensorProto.FLOAT}


def raw(values, dtype):
    """Raw little-endian bytes of `values` (float32) in the model's dtype."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    if dtype == "bf16":
        return (values.view(np.uint32) >> 16).astype(np.uint16).tobytes()
    if dtype == "f16":
        return values.astype(np.float16).tobytes()
    return values.tobytes()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--vocab", type=int, default=50257)
    p.add_argument("--ctx", type=int, default=1024)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--batch-name", default="batch")
    p.add_argument("--seq-name", default="sequence")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    rng = np.random.default_rng(a.seed)
    elem = DTYPES[a.dtype]
    h, dh = a.hidden, a.hidden // a.heads
    inits, nodes = [], []

    def weight(name, shape, scale=0.02):
        inits.append(helper.make_tensor(name, elem, shape, raw(rng.standard_normal(shape) * scale, a.dtype), raw=True))
        return name

    def ints(name, values):
        inits.append(helper.make_tensor(name, TensorProto.INT64, [len(values)], values))
        return name

    def node(op, inputs, name, **attrs):
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def scalar(name, value):
        inits.append(helper.make_tensor(name, elem, [], raw([value], a.dtype), raw=True))
        return name

    heads_shape = ints("shape.heads", [0, 0, a.heads, dh])
    merged_shape = ints("shape.merged", [0, 0, h])
    qkv_split = ints("split.qkv", [h, h, h])
    inv_sqrt = scalar("attn.inv_sqrt_dh", 1.0 / np.sqrt(dh))

    def layer_norm(x, prefix):
        w = weight(f"{prefix}.weight", [h], 1.0)
        b = weight(f"{prefix}.bias", [h])
        return node("LayerNormalization", [x, w, b], f"{prefix}.out", axis=-1, epsilon=1e-5)

    def linear(x, prefix, n_in, n_out):
        y = node("MatMul", [x, weight(f"{prefix}.weight", [n_in, n_out])], f"{prefix}.mm")
        return node("Add", [y, weight(f"{prefix}.bias", [n_out])], f"{prefix}.out")

    wte = weight("transformer.wte.weight", [a.vocab, h])
    tok = node("Gather", [wte, "input_ids"], "embed.tokens")
    pos = node("Gather", [weight("transformer.wpe.weight", [a.ctx, h]), "position_ids"], "embed.positions")
    x = node("Add", [tok, pos], "embed.out")
    for i in range(a.layers):
        pre = f"transformer.h.{i}"
        normed = layer_norm(x, f"{pre}.ln_1")
        qkv = linear(normed, f"{pre}.attn.c_attn", h, 3 * h)
        q, k, v = f"{pre}.q", f"{pre}.k", f"{pre}.v"
        nodes.append(helper.make_node("Split", [qkv, qkv_split], [q, k, v], name=f"{pre}.split", axis=-1))
        q = node("Transpose", [node("Reshape", [q, heads_shape], f"{pre}.q.heads")], f"{pre}.q.t", perm=[0, 2, 1, 3])
        kt = node("Transpose", [node("Reshape", [k, heads_shape], f"{pre}.k.heads")], f"{pre}.k.t", perm=[0, 2, 3, 1])
        v = node("Transpose", [node("Reshape", [v, heads_shape], f"{pre}.v.heads")], f"{pre}.v.t", perm=[0, 2, 1, 3])
        scores = node("Mul", [node("MatMul", [q, kt], f"{pre}.scores"), inv_sqrt], f"{pre}.scaled")
        probs = node("Softmax", [node("Add", [scores, "causal_mask"], f"{pre}.masked")], f"{pre}.probs", axis=-1)
        ctx = node("Transpose", [node("MatMul", [probs, v], f"{pre}.ctx")], f"{pre}.ctx.t", perm=[0, 2, 1, 3])
        ctx = node("Reshape", [ctx, merged_shape], f"{pre}.ctx.merged")
        x = node("Add", [x, linear(ctx, f"{pre}.attn.c_proj", h, h)], f"{pre}.attn.residual")
        normed = layer_norm(x, f"{pre}.ln_2")
        up = node("Gelu", [linear(normed, f"{pre}.mlp.c_fc", h, 4 * h)], f"{pre}.mlp.gelu", approximate="tanh")
        x = node("Add", [x, linear(up, f"{pre}.mlp.c_proj", 4 * h, h)], f"{pre}.mlp.residual")
    normed = layer_norm(x, "transformer.ln_f")
    logits = node("MatMul", [normed, node("Transpose", [wte], "lm_head.weight.t", perm=[1, 0])], "lm_head.logits")
    logits = node("Cast", [logits], "logits.f32", to=TensorProto.FLOAT)
    node("Softmax", [logits], "probs", axis=-1)

    batch, seq = a.batch_name, a.seq_name
    graph = helper.make_graph(
        nodes,
        "gpt2",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, [batch, seq]),
            helper.make_tensor_value_info("position_ids", TensorProto.INT64, [batch, seq]),
            helper.make_tensor_value_info("causal_mask", elem, [seq, seq]),
        ],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, seq, a.vocab])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], producer_name="gpt2_onnx.py")
    onnx.checker.check_model(model)
    onnx.save(model, a.out)


if __name__ == "__main__":
    main()
