//! Training ops: the loss `tsr.cross_entropy` and the optimizer updates `tsr.sgd` and
//! `tsr.adamw`, as graph ops so one graph holds a whole training step.
//!
//! - `cross_entropy(logits [..., V], targets [...]) -> scalar`: the mean over every target
//!   position of `logsumexp(logits) - logits[target]`, computed with the maximum subtracted
//!   (numerically stable); targets are integers in `[0, V)`, anything else is an error. The
//!   result has the logits' float type, rank 0.
//! - `sgd{lr, momentum, weight_decay}(param, grad, velocity) -> (param', velocity')`, PyTorch's
//!   SGD: `d = grad + weight_decay * param`, `velocity' = momentum * velocity + d`,
//!   `param' = param - lr * velocity'` (with `momentum = 0` the velocity is just `d`).
//! - `adamw{lr, beta1, beta2, epsilon, weight_decay}(param, grad, m, v, step) -> (param', m', v')`,
//!   Loshchilov & Hutter's decoupled weight decay with Adam's bias correction, as PyTorch:
//!   `m' = b1 m + (1 - b1) g`, `v' = b2 v + (1 - b2) g^2`, `mhat = m' / (1 - b1^t)`,
//!   `vhat = v' / (1 - b2^t)`, `param' = param - lr * (mhat / (sqrt(vhat) + eps) + wd * param)`,
//!   where `t = step` is a scalar integer counting updates from 1, an operand so that one
//!   graph serves every step.
//!
//! Reference semantics in `f64`, each result rounded once to its dtype.
//!
//! Sharding: the optimizer updates are elementwise over `(param, grad, state...)`, so every
//! operand and result splits like the parameter (AdamW's scalar `step` stays whole); a rank keeps
//! its parameter block and the matching state blocks. `cross_entropy` splits its leading
//! (batch/sequence) dimensions, which it reduces: each rank's local op is the mean over its own
//! rows, so the partitioner scales it by `1 / parts` to make the blocks a partial *sum* of the
//! global mean (see [`local_mean_scale`]). The class dimension stays whole (a split one would need
//! partial maxima and sums inside the op).
//!
//! Gradients: `cross_entropy` is differentiable in its logits,
//! `dlogits = (softmax(logits) - onehot(targets)) * g / N`, built from existing ops (the one-hot
//! is an `eq` against an iota literal); the optimizer updates are not differentiable.

use super::elementwise::CompareOp;
use super::gradient::{GradContext, GradError};
use super::{expect_arity, floats, ints, FlopResult, ShapeResult};
use crate::dtype::DType;
use crate::graph::ValueId;
use crate::sharding::{PartialKind, ShardingRule};
use crate::tensor::Tensor;
use crate::types::{Dim, TensorType};

/// Hyper-parameters of `tsr.sgd`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sgd {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
}

/// Hyper-parameters of `tsr.adamw`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamW {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub epsilon: f64,
    pub weight_decay: f64,
}

impl Default for AdamW {
    /// PyTorch's defaults.
    fn default() -> AdamW {
        AdamW { lr: 1e-3, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weight_decay: 1e-2 }
    }
}

fn check_finite(values: &[(&str, f64)]) -> Result<(), String> {
    for (name, v) in values {
        if !v.is_finite() {
            return Err(format!("{name} must be finite, got {v}"));
        }
    }
    Ok(())
}

pub fn infer_cross_entropy(inputs: &[&TensorType]) -> ShapeResult {
    expect_arity(inputs, 2)?;
    let (logits, targets) = (inputs[0], inputs[1]);
    if !logits.dtype.is_float() || logits.rank() < 1 {
        return Err(format!("logits must be a float tensor [..., vocab], got {logits}"));
    }
    if !matches!(targets.dtype, DType::I64 | DType::I32) {
        return Err(format!("targets must be i64 or i32, got {}", targets.dtype));
    }
    if targets.dims[..] != logits.dims[..logits.rank() - 1] {
        return Err(format!("targets {targets} must have the leading dimensions of logits {logits}"));
    }
    Ok(vec![TensorType::new(logits.dtype, vec![])])
}

/// The state operands of an update (`grad`, `velocity`, `m`, `v`) share the parameter's type.
fn infer_update(inputs: &[&TensorType], states: usize, results: usize) -> ShapeResult {
    let p = inputs[0];
    if !p.dtype.is_float() {
        return Err(format!("parameter must be a float tensor, got {p}"));
    }
    for (i, t) in inputs[1..=states].iter().enumerate() {
        if *t != p {
            return Err(format!("operand {} must have the parameter's type {p}, got {t}", i + 1));
        }
    }
    Ok(vec![p.clone(); results])
}

pub fn infer_sgd(inputs: &[&TensorType], hyper: &Sgd) -> ShapeResult {
    expect_arity(inputs, 3)?;
    check_finite(&[("lr", hyper.lr), ("momentum", hyper.momentum), ("weight_decay", hyper.weight_decay)])?;
    infer_update(inputs, 2, 2)
}

pub fn infer_adamw(inputs: &[&TensorType], hyper: &AdamW) -> ShapeResult {
    expect_arity(inputs, 5)?;
    check_finite(&[
        ("lr", hyper.lr),
        ("beta1", hyper.beta1),
        ("beta2", hyper.beta2),
        ("epsilon", hyper.epsilon),
        ("weight_decay", hyper.weight_decay),
    ])?;
    if !(0.0..1.0).contains(&hyper.beta1) || !(0.0..1.0).contains(&hyper.beta2) {
        return Err(format!("beta1 and beta2 must lie in [0, 1), got {} and {}", hyper.beta1, hyper.beta2));
    }
    let step = inputs[4];
    if step.rank() != 0 || !matches!(step.dtype, DType::I64 | DType::I32) {
        return Err(format!("step must be a scalar i64 or i32, got {step}"));
    }
    infer_update(inputs, 3, 3)
}

/// FLOPs: `cross_entropy` 5 per logit (max, subtract, exp, sum, pick); `sgd` 5 and `adamw`
/// 15 per parameter element.
pub fn flops_cross_entropy(logit_elements: u128) -> FlopResult {
    Ok(logit_elements.saturating_mul(5))
}

pub fn flops_sgd(elements: u128) -> u128 {
    elements.saturating_mul(5)
}

pub fn flops_adamw(elements: u128) -> u128 {
    elements.saturating_mul(15)
}

/// `cross_entropy(logits [..., V], targets [...])`: each leading dimension is one factor shared
/// by logits and targets, reduced into the scalar (partial sums after [`local_mean_scale`]); the
/// class dimension is whole.
pub fn sharding_rule_cross_entropy(logits: &TensorType, targets: &TensorType) -> ShardingRule {
    let result = [TensorType::new(logits.dtype, vec![])];
    let mut rule = ShardingRule::replicated(&[logits, targets], &result);
    if logits.rank() != targets.rank() + 1 {
        return rule;
    }
    for d in 0..targets.rank() {
        let f = rule.factor(&targets.dims[d]);
        rule.operands[0][d] = Some(f);
        rule.operands[1][d] = Some(f);
    }
    if targets.rank() > 0 {
        rule.reduction = Some(PartialKind::Sum);
    }
    rule
}

/// The factor that turns a rank's local `cross_entropy` (a mean over its `1/parts` of the rows)
/// into its share of a partial sum equal to the global mean: `1 / parts`.
pub fn local_mean_scale(parts: u64) -> f64 {
    1.0 / parts.max(1) as f64
}

/// `sgd`/`adamw`: elementwise over the parameter's dimensions for the parameter, gradient and
/// state operands and for every result; AdamW's `step` (the last operand, a scalar) is whole.
pub fn sharding_rule_update(operands: &[&TensorType], results: &[TensorType]) -> ShardingRule {
    let Some(param) = operands.first() else {
        return ShardingRule::replicated(operands, results);
    };
    let mut rule = ShardingRule::elementwise(operands.len(), param, results.len());
    for (operand, ty) in rule.operands.iter_mut().zip(operands) {
        if ty.rank() != param.rank() {
            *operand = vec![None; ty.rank()];
        }
    }
    rule
}

pub fn eval_cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor, String> {
    let v = *logits.shape.last().ok_or("logits have rank 0")?;
    let loss = mean_negative_log_likelihood(&floats(logits)?, ints(targets)?, v)?;
    Ok(Tensor::from_f64(logits.dtype, vec![], vec![loss]))
}

/// The mean over rows of `-log softmax(row)[target]`, in f64, for logits `x` laid out as rows of
/// `classes` values and one class index per row in `targets`; NaN for no rows (the mean over no
/// tokens is undefined, as in PyTorch). The reference semantics and the CPU library call both
/// compute the loss here, so they agree bit for bit (f32 logits widen exactly).
pub fn mean_negative_log_likelihood<T: Copy + Into<f64>>(
    x: &[T],
    targets: &[i64],
    classes: usize,
) -> Result<f64, String> {
    if targets.is_empty() {
        return Ok(f64::NAN);
    }
    if x.len() != targets.len() * classes {
        return Err(format!("{} logits for {} targets of {classes} classes", x.len(), targets.len()));
    }
    let mut total = 0.0;
    for (r, &target) in targets.iter().enumerate() {
        let k = usize::try_from(target)
            .ok()
            .filter(|&k| k < classes)
            .ok_or_else(|| format!("target {target} at position {r} is out of range for {classes} classes"))?;
        let row = &x[r * classes..(r + 1) * classes];
        let max = row.iter().map(|&z| z.into()).fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = row.iter().map(|&z| (z.into() - max).exp()).sum();
        total += max + sum.ln() - row[k].into();
    }
    Ok(total / targets.len() as f64)
}

pub fn eval_sgd(p: &Tensor, g: &Tensor, velocity: &Tensor, hyper: &Sgd) -> Result<Vec<Tensor>, String> {
    let (pv, gv, vv) = (floats(p)?, floats(g)?, floats(velocity)?);
    let (pv, gv, vv) = (&*pv, &*gv, &*vv);
    let mut new_p = Vec::with_capacity(pv.len());
    let mut new_v = Vec::with_capacity(pv.len());
    for ((&p, &g), &v) in pv.iter().zip(gv).zip(vv) {
        let d = g + hyper.weight_decay * p;
        let v = hyper.momentum * v + d;
        new_v.push(v);
        new_p.push(p - hyper.lr * v);
    }
    Ok(vec![Tensor::from_f64(p.dtype, p.shape.clone(), new_p), Tensor::from_f64(p.dtype, p.shape.clone(), new_v)])
}

pub fn eval_adamw(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    step: &Tensor,
    hyper: &AdamW,
) -> Result<Vec<Tensor>, String> {
    let (pv, gv, mv, vv) = (floats(p)?, floats(g)?, floats(m)?, floats(v)?);
    let (pv, gv, mv, vv) = (&*pv, &*gv, &*mv, &*vv);
    let t = ints(step)?.first().copied().ok_or("step is empty")?;
    if t < 1 {
        return Err(format!("adamw step counts updates from 1, got {t}"));
    }
    let t = i32::try_from(t).map_err(|_| format!("adamw step {t} is too large"))?;
    let correction1 = 1.0 - hyper.beta1.powi(t);
    let correction2 = 1.0 - hyper.beta2.powi(t);
    let n = pv.len();
    let (mut new_p, mut new_m, mut new_v) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        // Moments are rounded to their dtype as stored, and the update uses the stored values.
        let m = p.dtype.round_float(hyper.beta1 * mv[i] + (1.0 - hyper.beta1) * gv[i]);
        let v = p.dtype.round_float(hyper.beta2 * vv[i] + (1.0 - hyper.beta2) * gv[i] * gv[i]);
        let update = (m / correction1) / ((v / correction2).sqrt() + hyper.epsilon);
        new_p.push(pv[i] - hyper.lr * (update + hyper.weight_decay * pv[i]));
        new_m.push(m);
        new_v.push(v);
    }
    let tensor = |values| Tensor::from_f64(p.dtype, p.shape.clone(), values);
    Ok(vec![tensor(new_p), tensor(new_m), tensor(new_v)])
}

// Gradient rules share the signature `(cx, operands.., g, attrs..)` by convention (see
// `indexing::grad_gather`): each is a plain function of its op's operands, so they look alike.
/// `dlogits = (softmax(logits) - onehot(targets)) * g / N` with `N` the number of targets.
pub fn grad_cross_entropy(
    cx: &mut GradContext,
    logits: ValueId,
    targets: ValueId,
    g: ValueId,
) -> Result<ValueId, GradError> {
    let lt = cx.ty(logits);
    let tt = cx.ty(targets);
    let r = lt.rank();
    let vocab = cx.static_count(&lt, &[r - 1])?;
    let rows = cx.static_count(&tt, &(0..tt.rank()).collect::<Vec<_>>())?;
    let probs = cx.add(super::Op::Softmax { axis: -1 }, &[logits])?;
    let mut kept = tt.dims.clone();
    kept.push(Dim::Static(1));
    let column = cx.reshape(targets, &kept)?;
    let column = cx.broadcast(column, &lt.dims)?;
    let iota = cx
        .add(super::Op::Constant(Tensor::from_i64(tt.dtype, vec![vocab as usize], (0..vocab as i64).collect())), &[])?;
    let iota = cx.broadcast(iota, &lt.dims)?;
    let hit = cx.compare(CompareOp::Eq, column, iota)?;
    let onehot = cx.add(super::Op::Cast { to: lt.dtype }, &[hit])?;
    let diff = cx.sub(probs, onehot)?;
    let g = cx.broadcast(g, &lt.dims)?;
    let scaled = cx.mul(diff, g)?;
    cx.scale(scaled, 1.0 / rows as f64)
}

#[cfg(test)]
mod eval_tests {
    use super::super::test_support::{assert_close, eval, eval1, f64s, i64s};
    use super::super::Op;
    use super::{AdamW, Sgd};
    use crate::dtype::DType;
    use crate::tensor::Tensor;

    #[test]
    fn cross_entropy_is_the_mean_negative_log_likelihood() {
        // Row 0: logsumexp(0, ln 3) = ln 4, target 1 -> ln 4 - ln 3; row 1: uniform -> ln 2.
        let logits = f64s(&[2, 2], &[0.0, 3f64.ln(), 1000.0, 1000.0]);
        let targets = i64s(&[2], &[1, 0]);
        let expected = ((4f64.ln() - 3f64.ln()) + 2f64.ln()) / 2.0;
        assert_close(&eval1(&Op::CrossEntropy, &[&logits, &targets]), DType::F64, &[], &[expected], 1e-12);
        let bad = i64s(&[2], &[1, 2]);
        let err = super::super::test_support::eval_err(&Op::CrossEntropy, &[&logits, &bad]);
        assert_eq!(err, "target 2 at position 1 is out of range for 2 classes");
    }

    #[test]
    fn sgd_with_momentum_and_weight_decay() {
        let op = Op::Sgd(Sgd { lr: 0.1, momentum: 0.9, weight_decay: 0.5 });
        let p = f64s(&[2], &[1.0, -2.0]);
        let g = f64s(&[2], &[0.5, 0.25]);
        let v = f64s(&[2], &[1.0, 0.0]);
        let out = eval(&op, &[&p, &g, &v]).expect("sgd");
        // d = g + 0.5 p = [1.0, -0.75]; v' = 0.9 v + d = [1.9, -0.75]; p' = p - 0.1 v'.
        assert_close(&out[1], DType::F64, &[2], &[1.9, -0.75], 1e-15);
        assert_close(&out[0], DType::F64, &[2], &[0.81, -1.925], 1e-15);
    }

    #[test]
    fn adamw_first_step_moves_each_weight_by_about_lr() {
        let hyper = AdamW { lr: 0.01, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weight_decay: 0.1 };
        let p = f64s(&[2], &[1.0, -1.0]);
        let g = f64s(&[2], &[3.0, -0.5]);
        let zeros = f64s(&[2], &[0.0, 0.0]);
        let step = Tensor::from_i64(DType::I64, vec![], vec![1]);
        let out = eval(&Op::AdamW(hyper), &[&p, &g, &zeros, &zeros, &step]).expect("adamw");
        // After bias correction mhat = g and vhat = g^2, so the step is lr * (sign(g) + wd * p).
        let expect = |p: f64, g: f64| p - 0.01 * (g / (g.abs() + 1e-8) + 0.1 * p);
        assert_close(&out[0], DType::F64, &[2], &[expect(1.0, 3.0), expect(-1.0, -0.5)], 1e-12);
        assert_close(&out[1], DType::F64, &[2], &[0.3, -0.05], 1e-15);
        assert_close(&out[2], DType::F64, &[2], &[0.009, 0.00025], 1e-15);
        let zero_step = Tensor::from_i64(DType::I64, vec![], vec![0]);
        let err = super::super::test_support::eval_err(&Op::AdamW(hyper), &[&p, &g, &zeros, &zeros, &zero_step]);
        assert_eq!(err, "adamw step counts updates from 1, got 0");
    }
}
