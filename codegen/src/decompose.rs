//! Optimizer updates (`tsr.sgd`, `tsr.adamw`) rewritten as elementwise ops, so that a compiled
//! training step fuses them into kernels instead of running each parameter's update as a
//! `reference` library call (on a GPU: a host round trip per parameter).
//!
//! The rewrite follows the ops' reference semantics (`tessera_ir::ops::optim`):
//! - SGD: `d = g + wd·p`, `vel' = momentum·vel + d`, `p' = p - lr·vel'`;
//! - AdamW at step `t`: `m' = β1·m + (1-β1)·g`, `v' = β2·v + (1-β2)·g²`,
//!   `p' = p - lr·((m'/(1-β1ᵗ)) / (sqrt(v'/(1-β2ᵗ)) + ε) + wd·p)`, with `β^t` computed as a
//!   scalar `pow` of the step counter cast to the parameter's dtype.
//!
//! The rebuilt graph keeps every input, every other node, and the names of the update's results
//! (the step's `NAME.next` outputs); intermediates are named `opt.NAME.next.K`.
//!
//! # Training steps in artifacts
//!
//! - **Training steps** (`tessera compile MODEL --train [--optimizer adamw|sgd --lr X
//!   --micro-batches N --batch B --seq S]`): the CLI builds the step graph (`tessera::train::
//!   build_step`, i.e. `passes::train_step`) and compiles it like any model; the training options
//!   go into the manifest's options and the input hash (`train:...`). Program inputs are the
//!   step graph's: master weights, optimizer state (`NAME.m`, `NAME.v`, `NAME.velocity`), `step`
//!   (AdamW), and per micro-batch `tokens` (and masks) and `targets` (`mbK.` prefixes for several
//!   micro-batches); outputs are the loss, then `NAME.next` for every weight and state tensor.
//!   Before lowering, `codegen::decompose` rewrites every `tsr.sgd`/`tsr.adamw` into elementwise
//!   ops (bias corrections `1 - β^t` as a scalar `pow` of the step counter), so the updates fuse
//!   into kernels; the rebuilt graph keeps all inputs and the `NAME.next` result names. They then
//!   compute in f32 (like PyTorch's capturable AdamW) where the interpreter evaluates the fused op
//!   in f64; `1 - β2` in f32 costs about 5e-5 relative in the first steps' update size. What still
//!   has no kernel (cross-entropy, the embedding gradient's scatter-add) runs as `reference`
//!   library calls: 3 of them in a one-layer GPT step, down from 19.

use std::collections::HashMap;
use tessera_ir::dtype::DType;
use tessera_ir::graph::{AddNodeError, Graph, ValueId};
use tessera_ir::ops::elementwise::{BinaryOp, UnaryOp};
use tessera_ir::ops::Op;
use tessera_ir::tensor::Tensor;
use tessera_ir::types::{Dim, TensorType};

/// Whether `g` has an optimizer update to decompose.
pub fn has_optimizer_updates(g: &Graph) -> bool {
    g.nodes().any(|(_, n)| matches!(n.op, Op::Sgd(_) | Op::AdamW(_)))
}

/// `g` with every `tsr.sgd` and `tsr.adamw` replaced by elementwise ops (see the module docs).
pub fn decompose_optimizers(g: &Graph) -> Result<Graph, AddNodeError> {
    let mut out = Graph::new(&g.name);
    let mut map: HashMap<ValueId, ValueId> = HashMap::new();
    for &v in g.inputs() {
        let value = g.value(v);
        let role = g.input_role(v).unwrap_or(tessera_ir::graph::InputRole::Activation);
        map.insert(v, out.add_input(&value.name, value.ty.clone(), role));
    }
    for (_, node) in g.nodes() {
        let inputs: Vec<ValueId> = node.inputs.iter().map(|v| map[v]).collect();
        let results = match &node.op {
            Op::Sgd(h) => {
                let mut b = Builder::new(&mut out, g.value(node.inputs[0]).ty.clone());
                let [p, grad, vel] = inputs[..] else { return Err(arity("sgd")) };
                let decay = b.scaled(h.weight_decay, p)?;
                let d = b.binary(BinaryOp::Add, grad, decay)?;
                let momentum = b.scaled(h.momentum, vel)?;
                let vel = b.binary(BinaryOp::Add, momentum, d)?;
                let step = b.scaled(h.lr, vel)?;
                let p = b.binary(BinaryOp::Sub, p, step)?;
                (vec![p, vel], b.created)
            }
            Op::AdamW(h) => {
                let mut b = Builder::new(&mut out, g.value(node.inputs[0]).ty.clone());
                let [p, grad, m, v, t] = inputs[..] else { return Err(arity("adamw")) };
                let m_decayed = b.scaled(h.beta1, m)?;
                let m_new = b.scaled(1.0 - h.beta1, grad)?;
                let m = b.binary(BinaryOp::Add, m_decayed, m_new)?;
                let v_decayed = b.scaled(h.beta2, v)?;
                let g2 = b.binary(BinaryOp::Mul, grad, grad)?;
                let v_new = b.scaled(1.0 - h.beta2, g2)?;
                let v = b.binary(BinaryOp::Add, v_decayed, v_new)?;
                // Bias corrections 1 - β^t, as scalars broadcast to the parameter's shape.
                let dtype = b.ty.dtype;
                let t = b.add(Op::Cast { to: dtype }, &[t])?;
                let correction = |b: &mut Builder, beta: f64| -> Result<ValueId, AddNodeError> {
                    let beta = b.scalar(beta)?;
                    let power = b.add(Op::Binary(BinaryOp::Pow), &[beta, t])?;
                    let one = b.scalar(1.0)?;
                    let c = b.add(Op::Binary(BinaryOp::Sub), &[one, power])?;
                    b.broadcast(c)
                };
                let c1 = correction(&mut b, h.beta1)?;
                let c2 = correction(&mut b, h.beta2)?;
                let m_hat = b.binary(BinaryOp::Div, m, c1)?;
                let v_hat = b.binary(BinaryOp::Div, v, c2)?;
                let root = b.add(Op::Unary(UnaryOp::Sqrt), &[v_hat])?;
                let epsilon = b.constant(h.epsilon)?;
                let denominator = b.binary(BinaryOp::Add, root, epsilon)?;
                let update = b.binary(BinaryOp::Div, m_hat, denominator)?;
                let decay = b.scaled(h.weight_decay, p)?;
                let update = b.binary(BinaryOp::Add, update, decay)?;
                let step = b.scaled(h.lr, update)?;
                let p = b.binary(BinaryOp::Sub, p, step)?;
                (vec![p, m, v], b.created)
            }
            op => {
                let results = node.outputs.iter().map(|&v| (g.value(v).name.clone(), g.value(v).ty.clone())).collect();
                let id = out.add_node_unchecked(op.clone(), inputs, results);
                for (&old, &new) in node.outputs.iter().zip(&out.node(id).outputs) {
                    map.insert(old, new);
                }
                continue;
            }
        };
        let (values, created) = results;
        // Results keep their names; intermediates are named `opt.FIRST.K` after the first result, avoiding
        // every name of the source graph (values not yet copied included).
        let first = g.value(node.outputs[0]).name.clone();
        let mut k = 0;
        for v in created.into_iter().filter(|v| !values.contains(v)) {
            let name = loop {
                let candidate = format!("opt.{first}.{k}");
                k += 1;
                if !g.has_name(&candidate) && !out.has_name(&candidate) {
                    break candidate;
                }
            };
            out.rename_value(v, &name);
        }
        for (&old, &new) in node.outputs.iter().zip(&values) {
            out.rename_value(new, &g.value(old).name);
            map.insert(old, new);
        }
    }
    out.set_outputs(g.outputs().iter().map(|v| map[v]).collect());
    Ok(out)
}

fn arity(op: &'static str) -> AddNodeError {
    AddNodeError { op, message: "wrong number of operands".into() }
}

/// Appends ops of one update, remembering the values it creates.
struct Builder<'a> {
    g: &'a mut Graph,
    /// The parameter's type: every elementwise value has it.
    ty: TensorType,
    created: Vec<ValueId>,
}

impl Builder<'_> {
    fn new(g: &mut Graph, ty: TensorType) -> Builder<'_> {
        Builder { g, ty, created: Vec::new() }
    }

    fn add(&mut self, op: Op, inputs: &[ValueId]) -> Result<ValueId, AddNodeError> {
        let v = self.g.add(op, inputs)?;
        self.created.push(v);
        Ok(v)
    }

    fn binary(&mut self, op: BinaryOp, a: ValueId, b: ValueId) -> Result<ValueId, AddNodeError> {
        self.add(Op::Binary(op), &[a, b])
    }

    /// A rank-0 literal of the parameter's dtype.
    fn scalar(&mut self, x: f64) -> Result<ValueId, AddNodeError> {
        let dtype: DType = self.ty.dtype;
        self.add(Op::Constant(Tensor::from_f64(dtype, vec![], vec![x])), &[])
    }

    fn broadcast(&mut self, scalar: ValueId) -> Result<ValueId, AddNodeError> {
        let shape: Vec<Dim> = self.ty.dims.clone();
        self.add(Op::Broadcast { shape }, &[scalar])
    }

    /// `x` as a value of the parameter's type.
    fn constant(&mut self, x: f64) -> Result<ValueId, AddNodeError> {
        let s = self.scalar(x)?;
        self.broadcast(s)
    }

    /// `factor · v`.
    fn scaled(&mut self, factor: f64, v: ValueId) -> Result<ValueId, AddNodeError> {
        let c = self.constant(factor)?;
        self.binary(BinaryOp::Mul, c, v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_ir::graph::InputRole;
    use tessera_ir::ops::optim::{AdamW, Sgd};

    fn close(a: &Tensor, b: &Tensor) {
        for (x, y) in a.to_f64_vec().iter().zip(b.to_f64_vec()) {
            assert!((x - y).abs() <= 1e-12 * (1.0 + y.abs()), "{x} vs {y}");
        }
    }

    /// The decomposed graph gives the fused op's results (f64, several steps t).
    #[test]
    fn decomposed_updates_match_the_ops() {
        let ty = TensorType::of_static(DType::F64, &[3]);
        let scalar = TensorType::of_static(DType::I64, &[]);
        let mut g = Graph::new("step");
        let p = g.add_input("p", ty.clone(), InputRole::Parameter);
        let grad = g.add_input("g", ty.clone(), InputRole::Activation);
        let m = g.add_input("m", ty.clone(), InputRole::Activation);
        let v = g.add_input("v", ty.clone(), InputRole::Activation);
        let t = g.add_input("t", scalar, InputRole::Activation);
        let adamw = AdamW { lr: 0.1, beta1: 0.8, beta2: 0.95, epsilon: 1e-3, weight_decay: 0.01 };
        let a = g.add_node(Op::AdamW(adamw), &[p, grad, m, v, t]).expect("adamw");
        let sgd = Sgd { lr: 0.05, momentum: 0.9, weight_decay: 0.1 };
        let s = g.add_node(Op::Sgd(sgd), &[p, grad, m]).expect("sgd");
        g.set_outputs(a.iter().chain(&s).copied().collect());
        assert!(has_optimizer_updates(&g));
        let d = decompose_optimizers(&g).expect("decompose");
        assert!(!has_optimizer_updates(&d));
        tessera_ir::verify::verify(&d).expect("verifies");
        let names = |g: &Graph| g.outputs().iter().map(|&v| g.value(v).name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&d), names(&g));
        for step in [1, 2, 7] {
            let f = |x: Vec<f64>| Tensor::from_f64(DType::F64, vec![3], x);
            let feeds = vec![
                ("p".to_string(), f(vec![0.5, -1.0, 2.0])),
                ("g".to_string(), f(vec![0.3, 0.0, -4.0])),
                ("m".to_string(), f(vec![0.1, -0.2, 0.0])),
                ("v".to_string(), f(vec![0.01, 0.5, 0.0])),
                ("t".to_string(), Tensor::from_i64(DType::I64, vec![], vec![step])),
            ];
            let want = tessera_runtime::interpreter::run(&g, &feeds).expect("ops");
            let got = tessera_runtime::interpreter::run(&d, &feeds).expect("decomposed");
            assert_eq!(want.len(), got.len());
            for ((wn, w), (gn, x)) in want.iter().zip(&got) {
                assert_eq!(wn, gn);
                close(x, w);
            }
        }
    }
}
