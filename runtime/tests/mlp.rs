//! End to end: a two-layer MLP with a symbolic batch dimension, run by the interpreter for two
//! batch sizes and checked against a hand-written loop that rounds to f32 after every op, as
//! the reference semantics do.

use tessera_ir::dtype::DType;
use tessera_ir::graph::Graph;
use tessera_ir::ops::elementwise::{BinaryOp, UnaryOp};
use tessera_ir::ops::Op;
use tessera_ir::tensor::Tensor;
use tessera_ir::testing::build::{add, add_named, f32s, input, param};
use tessera_ir::types::{Dim, TensorType};
use tessera_runtime::interpreter::run;

const D_IN: usize = 4;
const D_HIDDEN: usize = 8;
const D_OUT: usize = 3;

/// `softmax(relu(x @ w1 + b1) @ w2 + b2)` over `x: [batch, 4]`.
fn mlp_graph() -> Graph {
    let mut g = Graph::new("mlp");
    let batch = || Dim::sym("batch");
    let x = input(&mut g, "x", TensorType::new(DType::F32, vec![batch(), Dim::Static(D_IN as u64)]));
    let w1 = param(&mut g, "w1", f32s(&[D_IN as u64, D_HIDDEN as u64]));
    let b1 = param(&mut g, "b1", f32s(&[D_HIDDEN as u64]));
    let w2 = param(&mut g, "w2", f32s(&[D_HIDDEN as u64, D_OUT as u64]));
    let b2 = param(&mut g, "b2", f32s(&[D_OUT as u64]));
    let h = add(&mut g, Op::MatMul, &[x, w1]);
    let b1 = add(&mut g, Op::Broadcast { shape: vec![batch(), Dim::Static(D_HIDDEN as u64)] }, &[b1]);
    let h = add(&mut g, Op::Binary(BinaryOp::Add), &[h, b1]);
    let h = add(&mut g, Op::Unary(UnaryOp::Relu), &[h]);
    let y = add(&mut g, Op::MatMul, &[h, w2]);
    let b2 = add(&mut g, Op::Broadcast { shape: vec![batch(), Dim::Static(D_OUT as u64)] }, &[b2]);
    let y = add(&mut g, Op::Binary(BinaryOp::Add), &[y, b2]);
    let probs = add_named(&mut g, "probs", Op::Softmax { axis: -1 }, &[y]);
    g.set_outputs(vec![probs]);
    g
}

/// Deterministic values in [-1, 1) that exercise both signs.
fn values(n: usize, salt: usize) -> Vec<f64> {
    (0..n).map(|i| ((i * 37 + salt * 11) % 16) as f64 / 8.0 - 1.0).collect()
}

fn f32_round(v: f64) -> f64 {
    v as f32 as f64
}

/// The same computation as plain loops over row-major arrays.
fn mlp_by_hand(batch: usize, x: &[f64], w1: &[f64], b1: &[f64], w2: &[f64], b2: &[f64]) -> Vec<f64> {
    let mut probs = Vec::with_capacity(batch * D_OUT);
    for r in 0..batch {
        let mut hidden = [0.0; D_HIDDEN];
        for (j, h) in hidden.iter_mut().enumerate() {
            let dot = f32_round((0..D_IN).map(|k| x[r * D_IN + k] * w1[k * D_HIDDEN + j]).sum());
            *h = f32_round(dot + b1[j]).max(0.0);
        }
        let mut logits = [0.0; D_OUT];
        for (j, l) in logits.iter_mut().enumerate() {
            let dot = f32_round((0..D_HIDDEN).map(|k| hidden[k] * w2[k * D_OUT + j]).sum());
            *l = f32_round(dot + b2[j]);
        }
        let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let exps: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
        let sum: f64 = exps.iter().sum();
        probs.extend(exps.iter().map(|e| f32_round(e / sum)));
    }
    probs
}

#[test]
fn two_layer_mlp_matches_a_hand_written_loop_for_any_batch() {
    let g = mlp_graph();
    let (w1, b1) = (values(D_IN * D_HIDDEN, 1), values(D_HIDDEN, 2));
    let (w2, b2) = (values(D_HIDDEN * D_OUT, 3), values(D_OUT, 4));
    let tensor = |shape: &[usize], v: &[f64]| Tensor::from_f64(DType::F32, shape.to_vec(), v.to_vec());
    for batch in [1, 3, 5] {
        let x = values(batch * D_IN, batch);
        let feeds = vec![
            ("x".to_string(), tensor(&[batch, D_IN], &x)),
            ("w1".to_string(), tensor(&[D_IN, D_HIDDEN], &w1)),
            ("b1".to_string(), tensor(&[D_HIDDEN], &b1)),
            ("w2".to_string(), tensor(&[D_HIDDEN, D_OUT], &w2)),
            ("b2".to_string(), tensor(&[D_OUT], &b2)),
        ];
        let out = run(&g, &feeds).expect("run");
        assert_eq!(out.len(), 1);
        let (name, probs) = &out[0];
        assert_eq!((name.as_str(), probs.dtype, probs.shape.clone()), ("probs", DType::F32, vec![batch, D_OUT]));
        let expected = mlp_by_hand(batch, &x, &w1, &b1, &w2, &b2);
        // Same operations in the same order with the same rounding: bit-identical.
        assert_eq!(probs.to_f64_vec(), expected, "batch {batch}");
        for row in expected.chunks(D_OUT) {
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-6, "softmax rows sum to one: {row:?}");
        }
    }
}
