//! Kernel graphs as the fusion pass forms them, shared by the CPU and PTX tests.

#![allow(dead_code)]

use tessera_ir::dtype::DType;
use tessera_ir::graph::Graph;
use tessera_ir::ops::elementwise::{BinaryOp, UnaryOp};
use tessera_ir::ops::Op;
use tessera_ir::tensor::Tensor;
use tessera_ir::testing::build::{add, broadcast, f32s, input};

/// gelu(x @ w + b) with the matmul inside the kernel, and the tanh form on an elementwise product.
pub fn gelu_bias(rows: u64, k: u64, cols: u64) -> Graph {
    let mut g = Graph::new("gelu_bias");
    let x = input(&mut g, "x", f32s(&[rows, k]));
    let w = input(&mut g, "w", f32s(&[k, cols]));
    let b = input(&mut g, "b", f32s(&[cols]));
    let xw = add(&mut g, Op::MatMul, &[x, w]);
    let bb = broadcast(&mut g, b, &[rows, cols]);
    let s = add(&mut g, Op::Binary(BinaryOp::Add), &[xw, bb]);
    let y = add(&mut g, Op::Unary(UnaryOp::Gelu), &[s]);
    let m = add(&mut g, Op::Binary(BinaryOp::Mul), &[s, bb]);
    let t = add(&mut g, Op::Unary(UnaryOp::GeluTanh), &[m]);
    g.set_outputs(vec![y, t]);
    g
}

/// softmax(scores * scale + causal mask) over the last axis.
pub fn masked_softmax(heads: u64, seq: u64) -> Graph {
    let mut g = Graph::new("masked_softmax");
    let scores = input(&mut g, "scores", f32s(&[heads, seq, seq]));
    let mask = input(&mut g, "mask", f32s(&[seq, seq]));
    let scale = add(&mut g, Op::Constant(Tensor::scalar(DType::F32, 0.125)), &[]);
    let sb = broadcast(&mut g, scale, &[heads, seq, seq]);
    let scaled = add(&mut g, Op::Binary(BinaryOp::Mul), &[scores, sb]);
    let mb = broadcast(&mut g, mask, &[heads, seq, seq]);
    let masked = add(&mut g, Op::Binary(BinaryOp::Add), &[scaled, mb]);
    let p = add(&mut g, Op::Softmax { axis: -1 }, &[masked]);
    g.set_outputs(vec![p]);
    g
}

/// layer_norm(x + residual) and rms_norm(x + residual) sharing the sum.
pub fn residual_norms(rows: u64, width: u64) -> Graph {
    let mut g = Graph::new("residual_norms");
    let x = input(&mut g, "x", f32s(&[rows, width]));
    let r = input(&mut g, "res", f32s(&[rows, width]));
    let scale = input(&mut g, "scale", f32s(&[width]));
    let bias = input(&mut g, "bias", f32s(&[width]));
    let s = add(&mut g, Op::Binary(BinaryOp::Add), &[x, r]);
    let y = add(&mut g, Op::LayerNorm { axis: -1, epsilon: 1e-5 }, &[s, scale, bias]);
    let z = add(&mut g, Op::RmsNorm { axis: -1, epsilon: 1e-6 }, &[s, scale]);
    g.set_outputs(vec![s, y, z]);
    g
}

/// One attention head: softmax(q k^T / sqrt(d) + mask) v, with rope on q and k.
pub fn attention(seq: u64, d: u64) -> Graph {
    let mut g = Graph::new("attention");
    let q = input(&mut g, "q", f32s(&[2, seq, d]));
    let k = input(&mut g, "k", f32s(&[2, seq, d]));
    let v = input(&mut g, "v", f32s(&[2, seq, d]));
    let cos = input(&mut g, "cos", f32s(&[seq, d / 2]));
    let sin = input(&mut g, "sin", f32s(&[seq, d / 2]));
    let mask = input(&mut g, "mask", f32s(&[seq, seq]));
    let qr = add(&mut g, Op::Rope { interleaved: false }, &[q, cos, sin]);
    let kr = add(&mut g, Op::Rope { interleaved: false }, &[k, cos, sin]);
    let kt = add(&mut g, Op::Transpose { perm: vec![0, 2, 1] }, &[kr]);
    let scores = add(&mut g, Op::MatMul, &[qr, kt]);
    let scale = add(&mut g, Op::Constant(Tensor::scalar(DType::F32, 1.0 / (d as f64).sqrt())), &[]);
    let sb = broadcast(&mut g, scale, &[2, seq, seq]);
    let scaled = add(&mut g, Op::Binary(BinaryOp::Mul), &[scores, sb]);
    let mb = broadcast(&mut g, mask, &[2, seq, seq]);
    let masked = add(&mut g, Op::Binary(BinaryOp::Add), &[scaled, mb]);
    let p = add(&mut g, Op::Softmax { axis: -1 }, &[masked]);
    let o = add(&mut g, Op::MatMul, &[p, v]);
    g.set_outputs(vec![o]);
    g
}
