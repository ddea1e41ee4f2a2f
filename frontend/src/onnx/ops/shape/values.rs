//! Shape-valued and constant ops: `Constant`, `Shape`, `Size`, `ConstantOfShape`, `Range`,
//! `EyeLike`. On symbolic shapes `Shape` produces an import-time shape value ([`Slot::Shape`]).

use super::{dims_of, scalar_input, static_dims};
use crate::onnx::import::{Importer, NodeCx, ShapeOperand, Slot, SymInt};
use crate::onnx::ops::{generated_len, invalid, one, unsupported, BuildError, BuildResult, Registry};
use tessera_ir::dtype::DType;
use tessera_ir::ops::elementwise::BinaryOp;
use tessera_ir::tensor::Tensor;
use tessera_ir::types::Dim;

pub(super) fn register(r: &mut Registry) {
    r.insert("Constant", constant);
    r.insert("Shape", shape);
    r.insert("Size", size);
    r.insert("ConstantOfShape", constant_of_shape);
    r.insert("Range", range);
    r.insert("EyeLike", eye_like);
}

fn constant(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let a = &cx.attrs;
    let t = if let Some(t) = a.opt_tensor("value")? {
        imp.decode_tensor(t)?
    } else if let Some(x) = a.opt_float("value_float")? {
        Tensor::scalar(DType::F32, x)
    } else if let Some(v) = a.opt_floats("value_floats")? {
        Tensor::from_f64(DType::F32, vec![v.len()], v)
    } else if let Some(x) = a.opt_int("value_int")? {
        Tensor::from_i64(DType::I64, vec![], vec![x])
    } else if let Some(v) = a.opt_ints("value_ints")? {
        Tensor::from_i64(DType::I64, vec![v.len()], v)
    } else if a.has("sparse_value") || a.has("value_string") || a.has("value_strings") {
        return unsupported("sparse and string constants");
    } else {
        return invalid("Constant has no value attribute");
    };
    one(imp.constant(t))
}

fn shape(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let dims: Vec<SymInt> = match imp.slot(cx, 0)? {
        Some(Slot::Shape { elems, scalar }) => {
            if scalar {
                vec![]
            } else {
                vec![SymInt::constant(elems.len() as i64)]
            }
        }
        _ => {
            let x = imp.value(cx, 0)?;
            imp.ty(x)
                .dims
                .iter()
                .map(|d| d.to_expr().map_err(|e| BuildError::Invalid(e.to_string())))
                .collect::<BuildResult<Vec<SymInt>>>()?
        }
    };
    let rank = dims.len() as i64;
    let clamp = |v: i64| if v < 0 { (v + rank).max(0) } else { v.min(rank) } as usize;
    let start = clamp(cx.attrs.int("start", 0)?);
    let end = clamp(cx.attrs.int("end", rank)?);
    let elems = if start < end { dims[start..end].to_vec() } else { vec![] };
    Ok(vec![imp.shape_slot(elems, false)])
}

fn size(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = imp.value(cx, 0)?;
    let n: u64 = static_dims(&imp.ty(x), "Size of a value")?.iter().product();
    one(imp.constant(Tensor::from_i64(DType::I64, vec![], vec![n as i64])))
}

fn constant_of_shape(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let target = imp.shape_input(cx, 0, "input")?.ok_or_else(|| BuildError::Invalid("missing input".into()))?;
    let dims = dims_of(&target)?;
    let value = match cx.attrs.opt_tensor("value")? {
        Some(t) => imp.decode_tensor(t)?,
        None => Tensor::scalar(DType::F32, 0.0),
    };
    if value.len() != 1 {
        return invalid(format!("value must hold one element, got {}", value.len()));
    }
    let scalar = value.reshaped(vec![]);
    match dims.iter().map(Dim::as_static).collect::<Option<Vec<u64>>>() {
        Some(shape) => {
            let total = shape.iter().try_fold(1u64, |acc, &n| acc.checked_mul(n)).unwrap_or(u64::MAX);
            let n = generated_len(total, "ConstantOfShape")?;
            let shape: Vec<usize> = shape.iter().map(|&n| n as usize).collect();
            let t = match scalar.dtype.is_float() {
                true => Tensor::from_f64(scalar.dtype, shape, vec![scalar.get_f64(0); n]),
                false => Tensor::from_i64(scalar.dtype, shape, vec![scalar.get_i64(0); n]),
            };
            one(imp.constant(t))
        }
        None => {
            let s = imp.constant(scalar);
            one(imp.broadcast(s, &dims)?)
        }
    }
}

fn range(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    if let Some(operands) = imp.shape_operands(cx, 0..3)? {
        return symbolic_range(imp, &operands);
    }
    let start = scalar_input(imp, cx, 0, "start")?;
    let limit = scalar_input(imp, cx, 1, "limit")?;
    let delta = scalar_input(imp, cx, 2, "delta")?;
    let dtype = start.dtype;
    // Opset 27 allows float16/bfloat16 with `stash_type` (1 = float, 11 = double), the type the
    // values are computed in before rounding to T. tessera computes `start + i * delta` in f64
    // and rounds once to T; a float stash could differ only where its f32 rounding lands a value
    // exactly on a T rounding tie.
    let stash_type = cx.attrs.int("stash_type", 1)?;
    if ![1, 11].contains(&stash_type) {
        return unsupported(format!("stash_type {stash_type} (only 1, float, and 11, double, are defined)"));
    }
    let t = if dtype.is_float() {
        let (s, l, d) = (start.get_f64(0), limit.get_f64(0), delta.get_f64(0));
        if d == 0.0 || !d.is_finite() {
            return invalid("delta must be finite and non-zero");
        }
        let n = ((l - s) / d).ceil().max(0.0);
        let n = generated_len(if n.is_finite() { n as u64 } else { u64::MAX }, "Range")?;
        Tensor::from_f64(dtype, vec![n], (0..n).map(|i| s + i as f64 * d).collect())
    } else {
        let (s, l, d) = (start.get_i64(0), limit.get_i64(0), delta.get_i64(0));
        if d == 0 {
            return invalid("delta must be non-zero");
        }
        let span = l.saturating_sub(s);
        let n = if (span > 0) == (d > 0) && span != 0 { (span.unsigned_abs()).div_ceil(d.unsigned_abs()) } else { 0 };
        let n = generated_len(n, "Range")?;
        Tensor::from_i64(dtype, vec![n], (0..n as i64).map(|i| s.wrapping_add(i.wrapping_mul(d))).collect())
    };
    one(imp.constant(t))
}

/// `Range(start, limit, delta)` where `start` or `limit` is a dimension expression (the
/// positions `Range(0, seq, 1)` of a transformer): `start + delta * iota(n)` over a tensor of
/// the symbolic length `n = ceil((limit - start) / delta)`, which the run computes once its
/// dimensions are bound. `n` must be known non-negative, or known empty, under the assumption
/// that every symbol is at least 1; `delta` must be a constant.
fn symbolic_range(imp: &mut Importer, operands: &[ShapeOperand]) -> BuildResult<Vec<Slot>> {
    let scalar = |i: usize, what: &str| -> BuildResult<SymInt> {
        match &operands[i] {
            (elems, _) if elems.len() == 1 => Ok(elems[0].clone()),
            _ => invalid(format!("input '{what}' must be a scalar")),
        }
    };
    let (start, limit, delta) = (scalar(0, "start")?, scalar(1, "limit")?, scalar(2, "delta")?);
    let step = match delta.as_const() {
        Some(0) => return invalid("delta must be non-zero"),
        Some(step) => step,
        None => return unsupported(format!("Range with the symbolic step {delta}")),
    };
    let symbolic = |e: tessera_ir::symbolic::SymbolicError| BuildError::Invalid(e.to_string());
    let span = if step > 0 { limit.sub(&start) } else { start.sub(&limit) }.map_err(symbolic)?;
    let len = span.ceildiv(step.checked_abs().unwrap_or(i64::MAX)).map_err(symbolic)?;
    let len = if len.lower_bound().is_some_and(|b| b >= 0) {
        len
    } else if len.decide_less(&SymInt::constant(1)) == Some(true) {
        SymInt::constant(0)
    } else {
        return unsupported(format!(
            "Range from {start} to {limit} by {step}: whether it is empty depends on the sizes"
        ));
    };
    let zero = imp.constant(Tensor::from_i64(DType::I64, vec![], vec![0]));
    let zeros = imp.broadcast(zero, &dims_of(&[len])?)?;
    let mut values = imp.add(tessera_ir::ops::Op::Iota { axis: 0 }, &[zeros])?;
    if step != 1 {
        let scale = imp.constant(Tensor::from_i64(DType::I64, vec![], vec![step]));
        values = imp.binary(BinaryOp::Mul, values, scale)?;
    }
    if start.as_const() != Some(0) {
        let offset = imp.dim_values(&[start], true)?;
        values = imp.binary(BinaryOp::Add, values, offset)?;
    }
    one(values)
}

fn eye_like(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = imp.value(cx, 0)?;
    let ty = imp.ty(x);
    let s = static_dims(&ty, "EyeLike")?;
    let [n, m] = s.as_slice() else { return invalid(format!("input must be 2-D, got {ty}")) };
    let k = cx.attrs.int("k", 0)?;
    let dtype = match cx.attrs.opt_int("dtype")? {
        Some(code) => crate::onnx::tensor::dtype_of(code as i32).map_err(|e| BuildError::Unsupported(e.message))?,
        None => ty.dtype,
    };
    generated_len(n.saturating_mul(*m), "EyeLike")?;
    let (n, m) = (*n as i64, *m as i64);
    let v: Vec<i64> = (0..n).flat_map(|i| (0..m).map(move |j| (j - i == k) as i64)).collect();
    one(imp.constant(Tensor::from_i64(dtype, vec![n as usize, m as usize], v)))
}
