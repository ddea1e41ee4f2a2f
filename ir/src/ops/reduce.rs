//! Reductions: `tsr.reduce_{sum,mean,max,min,prod}` over a set of axes, and `tsr.argmax`.

use super::elementwise::named_enum;
use super::{expect_arity, ShapeResult};
use crate::dtype::DType;
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
