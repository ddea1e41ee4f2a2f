//! Reductions: `tsr.reduce_{sum,mean,max,min,prod}` over a set of axes, and `tsr.argmax`.
//!
//! Reference semantics: floats accumulate in `f64` in row-major order and round once, integers
//! wrap; `max`/`min` propagate NaN and are an error over zero elements (they have no identity,
//! as in NumPy); `argmax` gives the first maximal index, a NaN counting as the maximum.

use super::elementwise::named_enum;
use super::elementwise::CompareOp;
use super::elementwise::{max_f64, min_f64};
use super::gradient::{GradContext, GradError};
use super::Op;
use super::{expect_arity, num_elements, product, strided_index, ShapeResult};
use crate::dtype::DType;
use crate::graph::ValueId;
use crate::sharding::{PartialKind, ShardingRule};
use crate::tensor::{strides, Buffer, Tensor};
use crate::types::{normalize_axis, Dim, TensorType};

named_enum!(
    ReduceKind {
        Sum = "reduce_sum", Mean = "reduce_mean", Max = "reduce_max", Min = "reduce_min",
        Prod = "reduce_prod",
    }
);

/// Normalized, sorted, duplicate-free axes; an error names the first bad one.
pub fn normalize_axes(axes: &[i64], rank: usize) -> Result<Vec<usize>, String> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let n = normalize_axis(a, rank).ok_or_else(|| format!("axis {a} is out of range for rank {rank}"))?;
        if out.contains(&n) {
            return Err(format!("axis {a} is repeated"));
        }
        out.push(n);
    }
    out.sort_unstable();
    Ok(out)
}

fn reduced_dims(x: &TensorType, axes: &[usize], keepdims: bool) -> Vec<Dim> {
    let mut dims = Vec::with_capacity(x.rank());
    for (i, d) in x.dims.iter().enumerate() {
        if !axes.contains(&i) {
            dims.push(d.clone());
        } else if keepdims {
            dims.push(Dim::Static(1));
        }
    }
    dims
}

pub fn infer(inputs: &[&TensorType], kind: ReduceKind, axes: &[i64], keepdims: bool) -> ShapeResult {
    expect_arity(inputs, 1)?;
    let x = inputs[0];
    if x.dtype == DType::Bool {
        return Err(format!("'{}' is not defined on i1", kind.mnemonic()));
    }
    if kind == ReduceKind::Mean && !x.dtype.is_float() {
        return Err(format!("reduce_mean needs a float input, got {x}"));
    }
    let axes = normalize_axes(axes, x.rank())?;
    Ok(vec![TensorType::new(x.dtype, reduced_dims(x, &axes, keepdims))])
}

/// `argmax` along one axis; the result holds i64 indices.
pub fn infer_argmax(inputs: &[&TensorType], axis: i64, keepdims: bool) -> ShapeResult {
    expect_arity(inputs, 1)?;
    let x = inputs[0];
    let axes = normalize_axes(&[axis], x.rank())?;
    Ok(vec![TensorType::new(DType::I64, reduced_dims(x, &axes, keepdims))])
}

/// FLOPs of a reduction or `argmax`: 1 per input element.
pub fn flops(inputs: &[&[u64]]) -> u128 {
    inputs.first().map_or(0, |x| num_elements(x))
}

/// `kind` over `axes` of `x`, giving `out` (with or without the kept unit dimensions: the
/// element order is the same).
pub fn eval(x: &Tensor, kind: ReduceKind, axes: &[i64], out: &[usize]) -> Result<Tensor, String> {
    let rank = x.shape.len();
    let axes = normalize_axes(axes, rank)?;
    let kept: Vec<usize> = (0..rank).map(|d| if axes.contains(&d) { 1 } else { x.shape[d] }).collect();
    let kept_strides = strides(&kept);
    let coeffs: Vec<i64> = (0..rank).map(|d| if axes.contains(&d) { 0 } else { kept_strides[d] as i64 }).collect();
    let n_out = product(&kept);
    let n_reduced = product(&axes.iter().map(|&a| x.shape[a]).collect::<Vec<_>>());
    if n_reduced == 0 && n_out > 0 && matches!(kind, ReduceKind::Max | ReduceKind::Min) {
        return Err(format!("'{}' over zero elements has no value", kind.mnemonic()));
    }
    let slot = |i: usize| strided_index(i, &x.shape, &coeffs, 0);
    match &x.data {
        Buffer::Float(_) | Buffer::F32(_) | Buffer::F16(_) | Buffer::BF16(_) => {
            let v = super::floats(x)?;
            let (init, combine): (f64, fn(f64, f64) -> f64) = match kind {
                ReduceKind::Sum | ReduceKind::Mean => (0.0, |a, b| a + b),
                ReduceKind::Prod => (1.0, |a, b| a * b),
                ReduceKind::Max => (f64::NEG_INFINITY, max_f64),
                ReduceKind::Min => (f64::INFINITY, min_f64),
            };
            let mut acc = vec![init; n_out];
            for (i, &a) in v.iter().enumerate() {
                let o = slot(i);
                acc[o] = combine(acc[o], a);
            }
            if kind == ReduceKind::Mean {
                acc.iter_mut().for_each(|a| *a /= n_reduced as f64);
            }
            Ok(Tensor::from_f64(x.dtype, out.to_vec(), acc))
        }
        Buffer::Int(v) => {
            let (init, combine): (i64, fn(i64, i64) -> i64) = match kind {
                ReduceKind::Sum => (0, i64::wrapping_add),
                ReduceKind::Prod => (1, i64::wrapping_mul),
                ReduceKind::Max => (i64::MIN, i64::max),
                ReduceKind::Min => (i64::MAX, i64::min),
                ReduceKind::Mean => return Err(format!("reduce_mean is not defined on {}", x.dtype)),
            };
            let mut acc = vec![init; n_out];
            for (i, &a) in v.iter().enumerate() {
                let o = slot(i);
                acc[o] = combine(acc[o], a);
            }
            Ok(Tensor::from_i64(x.dtype, out.to_vec(), acc))
        }
    }
}

/// Index of the first maximum along `axis`, as i64.
pub fn eval_argmax(x: &Tensor, axis: i64, out: &[usize]) -> Result<Tensor, String> {
    let ax = normalize_axes(&[axis], x.shape.len())?[0];
    let (outer, n, inner) = (product(&x.shape[..ax]), x.shape[ax], product(&x.shape[ax + 1..]));
    if n == 0 && outer * inner > 0 {
        return Err(format!("argmax over axis {ax} of extent zero has no value"));
    }
    // Whether element `j` beats the best so far at `best`.
    let beats = |j: usize, best: usize| -> bool {
        match &x.data {
            Buffer::Float(v) => !v[best].is_nan() && (v[j].is_nan() || v[j] > v[best]),
            Buffer::F32(v) => !v[best].is_nan() && (v[j].is_nan() || v[j] > v[best]),
            Buffer::F16(v) => !v[best].is_nan() && (v[j].is_nan() || v[j] > v[best]),
            Buffer::BF16(v) => !v[best].is_nan() && (v[j].is_nan() || v[j] > v[best]),
            Buffer::Int(v) => v[j] > v[best],
        }
    };
    let mut result = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| (o * n + j) * inner + i;
            let mut best = 0;
            for j in 1..n {
                if beats(at(j), at(best)) {
                    best = j;
                }
            }
            result.push(best as i64);
        }
    }
    Ok(Tensor::from_i64(DType::I64, out.to_vec(), result))
}

// ---------------------------------------------------------------------------------------------
// Gradient rules

impl ReduceKind {
    /// `dx` for `y = reduce(x)` over `axes`: `sum` broadcasts `g` back, `mean` also divides by
    /// the count, `max`/`min` share `g` equally among the elements equal to the extremum (as
    /// PyTorch's `amax` does), `prod` is `g * y / x` (undefined where an element is 0).
    pub fn grad(
        self,
        cx: &mut GradContext,
        (x, y, g): (ValueId, ValueId, ValueId),
        axes: &[i64],
    ) -> Result<ValueId, GradError> {
        let t = cx.ty(x);
        let axes = normalize_axes(axes, t.rank()).map_err(|m| cx.unsupported(m))?;
        // The result's shape with the reduced axes kept as 1: reshaping `g` (and `y`) to it
        // lines them up with `x` for an explicit broadcast.
        let kept: Vec<Dim> = t
            .dims
            .iter()
            .enumerate()
            .map(|(i, d)| if axes.contains(&i) { Dim::Static(1) } else { d.clone() })
            .collect();
        let back = |cx: &mut GradContext, v: ValueId| -> Result<ValueId, GradError> {
            let v = cx.reshape(v, &kept)?;
            cx.broadcast(v, &t.dims)
        };
        let gb = back(cx, g)?;
        match self {
            ReduceKind::Sum => Ok(gb),
            ReduceKind::Mean => {
                let n = cx.static_count(&t, &axes)?;
                cx.scale(gb, 1.0 / n as f64)
            }
            ReduceKind::Max | ReduceKind::Min => {
                let yb = back(cx, y)?;
                let hit = cx.compare(CompareOp::Eq, x, yb)?;
                let mask = cx.add(Op::Cast { to: t.dtype }, &[hit])?;
                let count = cx.reduce(ReduceKind::Sum, mask, &axes, true)?;
                let count = cx.broadcast(count, &t.dims)?;
                let share = cx.div(mask, count)?;
                cx.mul(gb, share)
            }
            ReduceKind::Prod => {
                let yb = back(cx, y)?;
                let q = cx.div(yb, x)?;
                cx.mul(gb, q)
            }
        }
    }
}

/// Sharding rule: kept dimensions are parallel; reduced dimensions are a reduction of the same
/// kind for `reduce_sum` and `reduce_max` (partial sums / maxima), and stay whole for the others
/// (a mean, minimum or product of blocks is not combined by our collectives). `argmax` is
/// `kind = None`.
pub fn sharding_rule(
    x: &TensorType,
    out: &TensorType,
    kind: Option<ReduceKind>,
    axes: &[i64],
    keepdims: bool,
) -> ShardingRule {
    let partial = match kind {
        Some(ReduceKind::Sum) => Some(PartialKind::Sum),
        Some(ReduceKind::Max) => Some(PartialKind::Max),
        _ => None,
    };
    let mut rule = ShardingRule::replicated(&[x], std::slice::from_ref(out));
    rule.reduction = partial;
    let Ok(axes) = normalize_axes(axes, x.rank()) else {
        return rule;
    };
    let mut od = 0;
    for d in 0..x.rank() {
        let reduced = axes.contains(&d);
        if !reduced {
            let f = rule.factor(&x.dims[d]);
            rule.operands[0][d] = Some(f);
            if let Some(slot) = rule.results[0].get_mut(od) {
                *slot = Some(f);
            }
        } else if partial.is_some() {
            let f = rule.factor(&x.dims[d]);
            rule.operands[0][d] = Some(f);
        }
        if !reduced || keepdims {
            od += 1;
        }
    }
    rule
}

#[cfg(test)]
mod eval_tests {
    use super::super::test_support::{assert_close, eval1, eval_err, f32s, i64s};
    use super::super::Op;
    use super::ReduceKind;
    use crate::dtype::DType;
    use crate::tensor::Tensor;

    fn reduce(kind: ReduceKind, axes: &[i64], keepdims: bool) -> Op {
        Op::Reduce { kind, axes: axes.to_vec(), keepdims }
    }

    #[test]
    fn every_kind_over_rows_columns_and_all() {
        let x = f32s(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let check =
            |op: Op, shape: &[usize], want: &[f64]| assert_close(&eval1(&op, &[&x]), DType::F32, shape, want, 0.0);
        check(reduce(ReduceKind::Sum, &[0], false), &[3], &[5.0, 7.0, 9.0]);
        check(reduce(ReduceKind::Sum, &[1], true), &[2, 1], &[6.0, 15.0]);
        check(reduce(ReduceKind::Mean, &[0, 1], false), &[], &[3.5]);
        check(reduce(ReduceKind::Mean, &[-1, 0], true), &[1, 1], &[3.5]);
        check(reduce(ReduceKind::Max, &[-1], false), &[2], &[3.0, 6.0]);
        check(reduce(ReduceKind::Min, &[1], false), &[2], &[1.0, 4.0]);
        check(reduce(ReduceKind::Prod, &[1], false), &[2], &[6.0, 120.0]);
        check(reduce(ReduceKind::Min, &[0], true), &[1, 3], &[1.0, 2.0, 3.0]);
    }

    #[test]
    fn middle_axis_of_a_rank_three_tensor() {
        let x = i64s(&[2, 2, 2], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(eval1(&reduce(ReduceKind::Sum, &[1], false), &[&x]).to_i64_vec(), [4, 6, 12, 14]);
        assert_eq!(eval1(&reduce(ReduceKind::Max, &[0, 2], false), &[&x]).to_i64_vec(), [6, 8]);
    }

    #[test]
    fn integer_sums_wrap_and_empty_max_is_an_error() {
        let x = Tensor::from_i64(DType::I8, vec![3], vec![100, 100, 1]);
        assert_eq!(eval1(&reduce(ReduceKind::Sum, &[0], false), &[&x]).to_i64_vec(), [-55]);
        let empty = f32s(&[2, 0], &[]);
        assert_close(&eval1(&reduce(ReduceKind::Sum, &[1], false), &[&empty]), DType::F32, &[2], &[0.0, 0.0], 0.0);
        let message = eval_err(&reduce(ReduceKind::Max, &[1], false), &[&empty]);
        assert_eq!(message, "'reduce_max' over zero elements has no value");
    }

    #[test]
    fn argmax_takes_the_first_maximum() {
        let x = f32s(&[2, 3], &[1.0, 3.0, 3.0, 5.0, 2.0, 5.0]);
        let t = eval1(&Op::ArgMax { axis: 1, keepdims: false }, &[&x]);
        assert_eq!((t.dtype, t.shape.clone(), t.to_i64_vec()), (DType::I64, vec![2], vec![1, 0]));
        let t = eval1(&Op::ArgMax { axis: 0, keepdims: true }, &[&x]);
        assert_eq!((t.shape.clone(), t.to_i64_vec()), (vec![1, 3], vec![1, 0, 1]));
        // NaN counts as the maximum, as in NumPy.
        let nan = f32s(&[3], &[1.0, f64::NAN, 7.0]);
        assert_eq!(eval1(&Op::ArgMax { axis: 0, keepdims: false }, &[&nan]).to_i64_vec(), [1]);
        let ints = i64s(&[4], &[-5, 9, 2, 9]);
        assert_eq!(eval1(&Op::ArgMax { axis: -1, keepdims: false }, &[&ints]).to_i64_vec(), [1]);
    }
}
