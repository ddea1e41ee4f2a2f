//! Builders of the kernel graphs that fused transformer layers are made of, at any size and
//! float dtype: the shapes the fusion pass forms around GPT-2/BERT/Llama layers, for benchmarks,
//! tests and hand-written kernels. Each returns a verified-by-construction graph whose inputs
//! and outputs are the kernel's arguments in order.

use tessera_ir::dtype::DType;
use tessera_ir::graph::{AddNodeError, Graph, InputRole, ValueId};
use tessera_ir::ops::elementwise::{BinaryOp, UnaryOp};
use tessera_ir::ops::Op;
use tessera_ir::tensor::Tensor;
use tessera_ir::types::{Dim, TensorType};

fn input(g: &mut Graph, name: &str, dtype: DType, shape: &[u64]) -> ValueId {
    g.add_input(name, TensorType::of_static(dtype, shape), InputRole::Activation)
}

fn broadcast(g: &mut Graph, x: ValueId, shape: &[u64]) -> Result<ValueId, AddNodeError> {
    g.add(Op::Broadcast { shape: shape.iter().map(|&d| Dim::Static(d)).collect() }, &[x])
}

/// A scalar constant broadcast to `shape`.
fn scalar(g: &mut Graph, dtype: DType, value: f64, shape: &[u64]) -> Result<ValueId, AddNodeError> {
    let c = g.add(Op::Constant(Tensor::scalar(dtype, value)), &[])?;
    broadcast(g, c, shape)
}

/// `gelu(x + b)` (the tanh form when `approximate`): the epilogue of an MLP's first matmul.
/// Inputs `x: [rows, width]`, `b: [width]`; output `[rows, width]`.
pub fn bias_gelu(rows: u64, width: u64, dtype: DType, approximate: bool) -> Result<Graph, AddNodeError> {
    let mut g = Graph::new("bias_gelu");
    let x = input(&mut g, "x", dtype, &[rows, width]);
    let b = input(&mut g, "b", dtype, &[width]);
    let bb = broadcast(&mut g, b, &[rows, width])?;
    let s = g.add(Op::Binary(BinaryOp::Add), &[x, bb])?;
    let y = g.add(Op::Unary(if approximate { UnaryOp::GeluTanh } else { UnaryOp::Gelu }), &[s])?;
    g.set_outputs(vec![y]);
    Ok(g)
}

/// `softmax(scale * scores + mask)` over the last axis: attention probabilities.
/// Inputs `scores: [heads, seq, seq]`, `mask: [seq, seq]` (0 or a large negative number).
pub fn masked_softmax(heads: u64, seq: u64, scale: f64, dtype: DType) -> Result<Graph, AddNodeError> {
    let mut g = Graph::new("masked_softmax");
    let shape = [heads, seq, seq];
    let scores = input(&mut g, "scores", dtype, &shape);
    let mask = input(&mut g, "mask", dtype, &[seq, seq]);
    let sb = scalar(&mut g, dtype, scale, &shape)?;
    let scaled = g.add(Op::Binary(BinaryOp::Mul), &[scores, sb])?;
    let mb = broadcast(&mut g, mask, &shape)?;
    let masked = g.add(Op::Binary(BinaryOp::Add), &[scaled, mb])?;
    let p = g.add(Op::Softmax { axis: -1 }, &[masked])?;
    g.set_outputs(vec![p]);
    Ok(g)
}

/// The residual add and the norm after it: outputs `x + res` (the next residual) and
/// `layer_norm(x + res)` (or `rms_norm` when `rms`, which takes no bias input).
/// Inputs `x, res: [rows, width]`, `scale: [width]`, and `bias: [width]` for layer norm.
pub fn residual_norm(rows: u64, width: u64, epsilon: f64, rms: bool, dtype: DType) -> Result<Graph, AddNodeError> {
    let mut g = Graph::new(if rms { "residual_rms_norm" } else { "residual_layer_norm" });
    let x = input(&mut g, "x", dtype, &[rows, width]);
    let r = input(&mut g, "res", dtype, &[rows, width]);
    let scale = input(&mut g, "scale", dtype, &[width]);
    let sum = g.add(Op::Binary(BinaryOp::Add), &[x, r])?;
    let normed = if rms {
        g.add(Op::RmsNorm { axis: -1, epsilon }, &[sum, scale])?
    } else {
        let bias = input(&mut g, "bias", dtype, &[width]);
        g.add(Op::LayerNorm { axis: -1, epsilon }, &[sum, scale, bias])?
    };
    g.set_outputs(vec![sum, normed]);
    Ok(g)
}

/// One attention head over a batch, fused whole (flash-attention's unit of work, without its
/// tiling): `softmax(rope(q) rope(k)^T / sqrt(d) + mask) v`.
/// Inputs `q, k, v: [batch, seq, d]`, `cos, sin: [seq, d / 2]`, `mask: [seq, seq]`; `d` even.
pub fn attention_head(batch: u64, seq: u64, head_dim: u64, dtype: DType) -> Result<Graph, AddNodeError> {
    let mut g = Graph::new("attention_head");
    let qkv = [batch, seq, head_dim];
    let q = input(&mut g, "q", dtype, &qkv);
    let k = input(&mut g, "k", dtype, &qkv);
    let v = input(&mut g, "v", dtype, &qkv);
    let cos = input(&mut g, "cos", dtype, &[seq, head_dim / 2]);
    let sin = input(&mut g, "sin", dtype, &[seq, head_dim / 2]);
    let mask = input(&mut g, "mask", dtype, &[seq, seq]);
    let qr = g.add(Op::Rope { interleaved: false }, &[q, cos, sin])?;
    let kr = g.add(Op::Rope { interleaved: false }, &[k, cos, sin])?;
    let kt = g.add(Op::Transpose { perm: vec![0, 2, 1] }, &[kr])?;
    let scores = g.add(Op::MatMul, &[qr, kt])?;
    let probs_shape = [batch, seq, seq];
    let sb = scalar(&mut g, dtype, 1.0 / (head_dim as f64).sqrt(), &probs_shape)?;
    let scaled = g.add(Op::Binary(BinaryOp::Mul), &[scores, sb])?;
    let mb = broadcast(&mut g, mask, &probs_shape)?;
    let masked = g.add(Op::Binary(BinaryOp::Add), &[scaled, mb])?;
    let p = g.add(Op::Softmax { axis: -1 }, &[masked])?;
    let o = g.add(Op::MatMul, &[p, v])?;
    g.set_outputs(vec![o]);
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::{attention_head, bias_gelu, masked_softmax, residual_norm};
    use tessera_ir::dtype::DType;
    use tessera_ir::verify::verify;

    #[test]
    fn builders_give_verified_graphs_with_the_documented_arguments() {
        let graphs = [
            bias_gelu(4, 8, DType::F32, true).expect("bias_gelu"),
            masked_softmax(2, 5, 0.125, DType::BF16).expect("masked_softmax"),
            residual_norm(3, 8, 1e-5, false, DType::F32).expect("layer norm"),
            residual_norm(3, 8, 1e-6, true, DType::F16).expect("rms norm"),
            attention_head(2, 6, 4, DType::F32).expect("attention"),
        ];
        let arity: Vec<(usize, usize)> = graphs.iter().map(|g| (g.inputs().len(), g.outputs().len())).collect();
        assert_eq!(arity, vec![(2, 1), (2, 1), (4, 2), (3, 2), (6, 1)]);
        for g in &graphs {
            verify(g).unwrap_or_else(|e| panic!("{}: {e}", g.name));
        }
        assert!(attention_head(1, 4, 3, DType::F32).is_err(), "odd head dimension");
    }
}
