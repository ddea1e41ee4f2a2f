//! Gradient checks: every op with a gradient rule against central finite differences in f64,
//! on random shapes and values (proptest), plus the promises about ops without one.
//!
//! Each case builds a graph `op(params..., data...)`, reduces every float result to a scalar
//! with fixed random weights (`loss = sum(w * y)`, so every element's adjoint differs), runs
//! [`autodiff::differentiate`] and compares each gradient element, computed by the reference
//! interpreter, with `(loss(x + h) - loss(x - h)) / 2h`.

use proptest::prelude::*;
use tessera_ir::dtype::DType;
use tessera_ir::graph::{Graph, InputRole, ValueId};
use tessera_ir::ops::conv::{PoolKind, Window};
use tessera_ir::ops::elementwise::{BinaryOp, CompareOp, UnaryOp};
use tessera_ir::ops::indexing::ScatterReduction;
use tessera_ir::ops::optim::AdamW;
use tessera_ir::ops::reduce::ReduceKind;
use tessera_ir::ops::Op;
use tessera_ir::random::SplitMix64;
use tessera_ir::tensor::Tensor;
use tessera_ir::types::{Dim, TensorType};
use tessera_passes::autodiff::{differentiate, AutodiffError};
use tessera_runtime::interpreter;

/// A differentiable operand: its shape and how to draw its values.
#[derive(Clone, Copy)]
enum Values {
    /// Uniform in [-1, 1).
    Signed,
    /// Uniform in [0.5, 2): for log, sqrt, pow's base, division.
    Positive,
    /// Magnitude in [0.2, 1) with a random sign: away from the kinks of abs and relu.
    AwayFromZero,
    /// Uniform in [-0.8, 0.8): acos and asin away from their poles at -1 and 1.
    Inside,
}

fn draw(rng: &mut SplitMix64, shape: &[usize], values: Values) -> Tensor {
    let n: usize = shape.iter().product();
    let data = (0..n)
        .map(|_| {
            let u = rng.next_f64();
            match values {
                Values::Signed => 2.0 * u - 1.0,
                Values::Positive => 0.5 + 1.5 * u,
                Values::Inside => 1.6 * u - 0.8,
                Values::AwayFromZero => {
                    let m = 0.2 + 0.8 * rng.next_f64();
                    if u < 0.5 {
                        -m
                    } else {
                        m
                    }
                }
            }
        })
        .collect();
    Tensor::from_f64(DType::F64, shape.to_vec(), data)
}

fn f64_type(shape: &[usize]) -> TensorType {
    TensorType::of_static(DType::F64, &shape.iter().map(|&n| n as u64).collect::<Vec<_>>())
}

/// A graph under test: parameters with values, data inputs with values.
struct Case {
    g: Graph,
    feeds: Vec<(String, Tensor)>,
    params: Vec<ValueId>,
    rng: SplitMix64,
}

impl Case {
    fn new(seed: u64) -> Case {
        Case { g: Graph::new("case"), feeds: Vec::new(), params: Vec::new(), rng: SplitMix64::new(seed) }
    }

    fn param(&mut self, shape: &[usize], values: Values) -> ValueId {
        let name = format!("p{}", self.params.len());
        let v = self.g.add_input(&name, f64_type(shape), InputRole::Parameter);
        let t = draw(&mut self.rng, shape, values);
        self.feeds.push((name, t));
        self.params.push(v);
        v
    }

    fn data(&mut self, t: Tensor) -> ValueId {
        let name = format!("d{}", self.feeds.len());
        let v = self.g.add_input(&name, t.tensor_type(), InputRole::Activation);
        self.feeds.push((name, t));
        v
    }

    fn op(&mut self, op: Op, inputs: &[ValueId]) -> Vec<ValueId> {
        self.g.add_node(op, inputs).expect("well-typed case")
    }

    /// `sum(w * y)` over every float value in `ys`, with random weights.
    fn finish(mut self, ys: &[ValueId]) -> (Graph, Vec<(String, Tensor)>, Vec<ValueId>, ValueId) {
        let mut loss = None;
        for &y in ys {
            let ty = self.g.value(y).ty.clone();
            if !ty.dtype.is_float() {
                continue;
            }
            let shape: Vec<usize> = ty.static_shape().expect("static").iter().map(|&n| n as usize).collect();
            let w = draw(&mut self.rng, &shape, Values::Signed);
            let w = self.g.add(Op::Constant(w), &[]).expect("weights");
            let prod = self.g.add(Op::Binary(BinaryOp::Mul), &[y, w]).expect("mul");
            let axes: Vec<i64> = (0..ty.rank() as i64).collect();
            let s = if axes.is_empty() {
                prod
            } else {
                self.g.add(Op::Reduce { kind: ReduceKind::Sum, axes, keepdims: false }, &[prod]).expect("sum")
            };
            loss = Some(match loss {
                None => s,
                Some(l) => self.g.add(Op::Binary(BinaryOp::Add), &[l, s]).expect("add"),
            });
        }
        let loss = loss.expect("a float result");
        (self.g, self.feeds, self.params, loss)
    }
}

fn eval_loss(g: &Graph, feeds: &[(String, Tensor)]) -> f64 {
    let out = interpreter::run(g, feeds).expect("loss evaluates");
    out[0].1.get_f64(0)
}

/// Checks autodiff against central differences with step `h` and tolerance `tol` (relative to
/// the gradient's magnitude, absolute below 1).
fn check(case: Case, ys: &[ValueId], h: f64, tol: f64) {
    let (mut g, feeds, params, loss) = case.finish(ys);
    let grads = differentiate(&mut g, loss, &params).expect("differentiable");
    let mut with_grads = g.clone();
    let mut outputs = vec![loss];
    outputs.extend(&grads);
    with_grads.set_outputs(outputs);
    tessera_ir::verify::verify(&with_grads).expect("the backward graph verifies");
    let analytic = interpreter::run(&with_grads, &feeds).expect("gradients evaluate");
    let mut loss_only = g.clone();
    loss_only.set_outputs(vec![loss]);
    for (i, &p) in params.iter().enumerate() {
        let name = g.value(p).name.clone();
        let slot = feeds.iter().position(|(n, _)| *n == name).expect("fed");
        let base = feeds[slot].1.clone();
        let got = &analytic[i + 1].1;
        assert_eq!(got.shape, base.shape, "gradient of {name} has the parameter's shape");
        for e in 0..base.len() {
            let mut shifted = feeds.clone();
            let mut values = base.to_f64_vec();
            values[e] = base.get_f64(e) + h;
            shifted[slot].1 = Tensor::from_f64(DType::F64, base.shape.clone(), values.clone());
            let up = eval_loss(&loss_only, &shifted);
            values[e] = base.get_f64(e) - h;
            shifted[slot].1 = Tensor::from_f64(DType::F64, base.shape.clone(), values);
            let down = eval_loss(&loss_only, &shifted);
            let numeric = (up - down) / (2.0 * h);
            let a = got.get_f64(e);
            assert!(
                (a - numeric).abs() <= tol * numeric.abs().max(1.0),
                "d loss / d {name}[{e}]: autodiff {a}, finite differences {numeric}"
            );
        }
    }
}

const H: f64 = 1e-5;
const TOL: f64 = 1e-6;

fn dims() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..4, 1..4)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn unary_ops(seed in any::<u64>(), shape in dims()) {
        for &u in UnaryOp::ALL {
            let values = match u {
                UnaryOp::Not | UnaryOp::BitNot | UnaryOp::Ceil | UnaryOp::Floor | UnaryOp::Round => continue,
                UnaryOp::Acos | UnaryOp::Asin => Values::Inside,
                UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt | UnaryOp::Reciprocal => Values::Positive,
                UnaryOp::Abs | UnaryOp::Relu => Values::AwayFromZero,
                _ => Values::Signed,
            };
            let mut c = Case::new(seed);
            let x = c.param(&shape, values);
            let y = c.op(Op::Unary(u), &[x]);
            check(c, &y, H, TOL);
        }
    }

    #[test]
    fn binary_ops(seed in any::<u64>(), shape in dims()) {
        for &b in BinaryOp::ALL {
            let (va, vb) = match b {
                BinaryOp::And | BinaryOp::Or => continue,
                b if b.is_bitwise() => continue,
                BinaryOp::Div => (Values::Signed, Values::Positive),
                BinaryOp::Pow => (Values::Positive, Values::Signed),
                _ => (Values::Signed, Values::Signed),
            };
            let mut c = Case::new(seed);
            let x = c.param(&shape, va);
            let y = c.param(&shape, vb);
            let out = c.op(Op::Binary(b), &[x, y]);
            check(c, &out, H, TOL);
        }
        // One operand used twice: adjoints of both uses add up.
        let mut c = Case::new(seed);
        let x = c.param(&shape, Values::Signed);
        let out = c.op(Op::Binary(BinaryOp::Mul), &[x, x]);
        check(c, &out, H, TOL);
    }

    #[test]
    fn where_and_cast(seed in any::<u64>(), shape in dims()) {
        let mut c = Case::new(seed);
        let a = c.param(&shape, Values::Signed);
        let b = c.param(&shape, Values::Signed);
        let mut rng = SplitMix64::new(seed ^ 1);
        let cond = tessera_ir::random::uniform_tensor(&mut rng, DType::Bool, shape.clone());
        let cond = c.data(cond);
        let out = c.op(Op::Where, &[cond, a, b]);
        check(c, &out, H, TOL);
        // f64 -> f32 -> f64: the adjoint is cast back; f32 rounding limits the precision.
        let mut c = Case::new(seed);
        let x = c.param(&shape, Values::Signed);
        let narrow = c.op(Op::Cast { to: DType::F32 }, &[x]);
        let wide = c.op(Op::Cast { to: DType::F64 }, &narrow);
        check(c, &wide, 1e-2, 1e-4);
    }

    #[test]
    fn matmul_with_broadcast_batches(seed in any::<u64>(), m in 1usize..4, k in 1usize..4, n in 1usize..4, batch in 1usize..3, variant in 0usize..3) {
        let mut c = Case::new(seed);
        let (sa, sb): (Vec<usize>, Vec<usize>) = match variant {
            0 => (vec![m, k], vec![k, n]),
            1 => (vec![batch, 2, m, k], vec![k, n]),
            _ => (vec![batch, 1, m, k], vec![2, k, n]),
        };
        let a = c.param(&sa, Values::Signed);
        let b = c.param(&sb, Values::Signed);
        let out = c.op(Op::MatMul, &[a, b]);
        check(c, &out, H, TOL);
    }

    #[test]
    fn normalizations(seed in any::<u64>(), shape in prop::collection::vec(2usize..4, 1..4), axis_pick in 0usize..3) {
        let axis = (axis_pick % shape.len()) as i64;
        let mut c = Case::new(seed);
        let x = c.param(&shape, Values::Signed);
        let out = c.op(Op::Softmax { axis }, &[x]);
        check(c, &out, H, TOL);
        let trailing: Vec<usize> = shape[axis as usize..].to_vec();
        let mut c = Case::new(seed);
        let x = c.param(&shape, Values::Signed);
        let s = c.param(&trailing, Values::Signed);
        let b = c.param(&trailing, Values::Signed);
        let out = c.op(Op::LayerNorm { axis, epsilon: 1e-5 }, &[x, s, b]);
        check(c, &out, H, 1e-5);
        let mut c = Case::new(seed);
        let x = c.param(&shape, Values::Signed);
        let s = c.param(&trailing, Values::Signed);
        let out = c.op(Op::RmsNorm { axis: axis - shape.len() as i64, epsilon: 1e-5 }, &[x, s]);
        check(c, &out, H, 1e-5);
    }

    #[test]
    fn reductions(seed in any::<u64>(), shape in prop::collection::vec(1usize..4, 1..4), axes_mask in 1u32..8, keepdims in any::<bool>()) {
        let axes: Vec<i64> = (0..shape.len() as i64).filter(|&a| axes_mask & (1 << a) != 0).collect();
        let axes = if axes.is_empty() { vec![0] } else { axes };
        for &kind in ReduceKind::ALL {
            let values = if kind == ReduceKind::Prod { Values::Positive } else { Values::Signed };
            let mut c = Case::new(seed);
            let x = c.param(&shape, values);
            let out = c.op(Op::Reduce { kind, axes: axes.clone(), keepdims }, &[x]);
            check(c, &out, H, TOL);
        }
    }

    #[test]
    fn layout_ops(seed in any::<u64>(), a in 1usize..4, b in 1usize..4, c3 in 1usize..4, perm_pick in 0usize..6) {
        // broadcast: [1, b] -> [a, c3, b]... with a size-1 middle dimension kept.
        let mut c = Case::new(seed);
        let x = c.param(&[1, b], Values::Signed);
        let shape = vec![Dim::Static(a as u64), Dim::Static(c3 as u64), Dim::Static(b as u64)];
        let out = c.op(Op::Broadcast { shape }, &[x]);
        check(c, &out, H, TOL);
        let mut c = Case::new(seed);
        let x = c.param(&[a, b, c3], Values::Signed);
        let out = c.op(Op::Reshape { shape: vec![Dim::Static((a * b) as u64), Dim::Static(c3 as u64)] }, &[x]);
        check(c, &out, H, TOL);
        let perms = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
        let mut c = Case::new(seed);
        let x = c.param(&[a, b, c3], Values::Signed);
        let out = c.op(Op::Transpose { perm: perms[perm_pick].to_vec() }, &[x]);
        check(c, &out, H, TOL);
        let mut c = Case::new(seed);
        let x = c.param(&[a, b], Values::Signed);
        let y = c.param(&[a, c3], Values::Signed);
        let out = c.op(Op::Concat { axis: 1 }, &[x, y, x]);
        check(c, &out, H, TOL);
        // split, with one result unused: its adjoint is zero.
        let mut c = Case::new(seed);
        let x = c.param(&[a, b + c3 + 1], Values::Signed);
        let parts = c.op(Op::Split { axis: -1, sizes: vec![b as i64, c3 as i64, 1] }, &[x]);
        check(c, &parts[..2], H, TOL);
    }

    #[test]
    fn slices(seed in any::<u64>(), n in 2usize..6, m in 1usize..4, start in -6i64..6, end in -7i64..7, step in prop::sample::select(vec![-2i64, -1, 1, 2, 3])) {
        let mut c = Case::new(seed);
        let x = c.param(&[n, m], Values::Signed);
        let out = c.op(Op::Slice { starts: vec![start, 0], ends: vec![end, i64::MAX], steps: vec![step, 1] }, &[x]);
        let empty = c.g.value(out[0]).ty.num_elements() == Some(0);
        if !empty {
            check(c, &out, H, TOL);
        }
    }

    #[test]
    fn gather_and_scatter(seed in any::<u64>(), n in 1usize..5, m in 1usize..4, k in 1usize..5, axis in 0i64..2) {
        let mut rng = SplitMix64::new(seed ^ 2);
        let extent = if axis == 0 { n } else { m } as i64;
        // Indices in [-extent, extent), repeats likely: adjoints of repeats accumulate.
        let mut index = |shape: &[usize]| {
            let count: usize = shape.iter().product();
            let v = (0..count).map(|_| (rng.next_u64() % (2 * extent as u64)) as i64 - extent).collect();
            Tensor::from_i64(DType::I64, shape.to_vec(), v)
        };
        let mut c = Case::new(seed);
        let data = c.param(&[n, m], Values::Signed);
        let idx = c.data(index(&[k, 2]));
        let out = c.op(Op::Gather { axis }, &[data, idx]);
        check(c, &out, H, TOL);
        for reduction in [ScatterReduction::Add, ScatterReduction::None] {
            let upd_shape = if axis == 0 { [k, m] } else { [n, k] };
            let mut c = Case::new(seed);
            let data = c.param(&[n, m], Values::Signed);
            let idx = c.data(index(&upd_shape));
            let upd = c.param(&upd_shape, Values::Signed);
            let out = c.op(Op::Scatter { axis, reduction }, &[data, idx, upd]);
            check(c, &out, H, TOL);
        }
    }

    #[test]
    fn rope_in_both_layouts(seed in any::<u64>(), seq in 1usize..4, half in 1usize..3, interleaved in any::<bool>()) {
        let mut c = Case::new(seed);
        let x = c.param(&[2, seq, 2 * half], Values::Signed);
        let cos = c.param(&[seq, half], Values::Signed);
        let sin = c.param(&[seq, half], Values::Signed);
        let out = c.op(Op::Rope { interleaved }, &[x, cos, sin]);
        check(c, &out, H, TOL);
    }

    #[test]
    fn convolution(
        seed in any::<u64>(),
        hw in 2usize..5,
        k in 1usize..3,
        stride in 1i64..3,
        pad in 0i64..2,
        dilation in 1i64..3,
        grouped in any::<bool>(),
    ) {
        let groups: i64 = if grouped { 2 } else { 1 };
        let window = Window { strides: [stride, 1], pads: [pad, 0, 0, pad], dilations: [dilation, 1] };
        let mut c = Case::new(seed);
        let x = c.param(&[2, 2, hw + 2, hw], Values::Signed);
        let w = c.param(&[4, 2 / groups as usize, k, k], Values::Signed);
        let ty = Op::Conv2d { window: window.clone(), groups }.infer(&[&c.g.value(x).ty, &c.g.value(w).ty]);
        if ty.is_ok() {
            let out = c.op(Op::Conv2d { window, groups }, &[x, w]);
            check(c, &out, H, TOL);
        }
    }

    #[test]
    fn pooling(seed in any::<u64>(), hw in 2usize..5, k in 1i64..3, stride in 1i64..3, pad in 0i64..2, max in any::<bool>()) {
        let kind = if max { PoolKind::Max } else { PoolKind::Avg };
        let pad = pad.min(k - 1);
        let window = Window { strides: [stride, stride], pads: [pad, pad, 0, pad], dilations: [1, 1] };
        let op = Op::Pool2d { kind, kernel: [k, k], window };
        let mut c = Case::new(seed);
        let x = c.param(&[1, 2, hw + 1, hw], Values::Signed);
        if op.infer(&[&c.g.value(x).ty]).is_ok() {
            let out = c.op(op, &[x]);
            check(c, &out, H, TOL);
        }
    }

    #[test]
    fn cross_entropy(seed in any::<u64>(), rows in 1usize..4, vocab in 2usize..6) {
        let mut rng = SplitMix64::new(seed ^ 3);
        let targets: Vec<i64> = (0..2 * rows).map(|_| (rng.next_u64() % vocab as u64) as i64).collect();
        let mut c = Case::new(seed);
        let logits = c.param(&[2, rows, vocab], Values::Signed);
        let targets = c.data(Tensor::from_i64(DType::I64, vec![2, rows], targets));
        let out = c.op(Op::CrossEntropy, &[logits, targets]);
        check(c, &out, H, TOL);
    }
}

#[test]
fn piecewise_constant_paths_contribute_zero() {
    // loss = sum(x * cast(x > 0)) + sum(cast(argmax(x))): the comparison and argmax carry no
    // adjoint, so d loss / dx is the mask itself.
    let mut c = Case::new(7);
    let x = c.param(&[2, 3], Values::AwayFromZero);
    let zero = c.op(Op::Constant(Tensor::zeros(DType::F64, vec![2, 3])), &[])[0];
    let positive = c.op(Op::Compare(CompareOp::Gt), &[x, zero])[0];
    let mask = c.op(Op::Cast { to: DType::F64 }, &[positive])[0];
    let masked = c.op(Op::Binary(BinaryOp::Mul), &[x, mask]);
    let arg = c.op(Op::ArgMax { axis: 1, keepdims: false }, &[x])[0];
    let arg = c.op(Op::Cast { to: DType::F64 }, &[arg]);
    let mut ys = masked;
    ys.extend(arg);
    check(c, &ys, H, TOL);
}

#[test]
fn optimizer_updates_are_not_differentiable() {
    let mut c = Case::new(3);
    let p = c.param(&[2], Values::Signed);
    let zeros = c.op(Op::Constant(Tensor::zeros(DType::F64, vec![2])), &[])[0];
    let step = c.op(Op::Constant(Tensor::from_i64(DType::I64, vec![], vec![1])), &[])[0];
    let outs = c.op(Op::AdamW(AdamW::default()), &[p, p, zeros, zeros, step]);
    let (mut g, _, params, loss) = c.finish(&outs[..1]);
    let err = differentiate(&mut g, loss, &params).expect_err("adamw");
    assert!(
        matches!(
            &err,
            AutodiffError::Rule {
                source: tessera_ir::ops::gradient::GradError::NotDifferentiable { op: "adamw", .. },
                ..
            }
        ),
        "{err}"
    );
}

/// Recurrent layers have no gradient rule yet: a loss on `y_h` alone (so `y`'s adjoint is
/// absent) is refused by name, never differentiated as zero.
#[test]
fn recurrent_layers_refuse_gradients_by_name() {
    use tessera_ir::ops::recurrent::{Cell, Direction, RecurrentKind};
    let mut c = Case::new(4);
    let x = c.param(&[2, 1, 2], Values::Signed);
    let w = c.param(&[1, 1, 2], Values::Signed);
    let r = c.param(&[1, 1, 1], Values::Signed);
    let b = c.param(&[1, 2], Values::Signed);
    let h0 = c.param(&[1, 1, 1], Values::Signed);
    let rnn = Op::Recurrent { kind: RecurrentKind::Rnn, cell: Cell::new(RecurrentKind::Rnn, 1, Direction::Forward) };
    let outs = c.op(rnn, &[x, w, r, b, h0]);
    let (mut g, _, params, loss) = c.finish(&outs[1..]);
    let err = differentiate(&mut g, loss, &params).expect_err("rnn");
    assert!(err.to_string().contains("no gradient for tsr.rnn (recurrent ops have no gradient rule yet)"), "{err}");
}

#[test]
fn the_loss_must_be_a_float_scalar() {
    let mut c = Case::new(1);
    let x = c.param(&[2], Values::Signed);
    let err = differentiate(&mut c.g, x, &[x]).expect_err("vector loss");
    assert_eq!(err.to_string(), "the loss %p0 must be a float scalar, got tensor<2xf64>");
}
