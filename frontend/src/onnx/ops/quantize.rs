//! Quantization: `QuantizeLinear` and `DequantizeLinear` (per-tensor, per-axis and blocked, every
//! quantized element type), `DynamicQuantizeLinear`, `QLinearMatMul` and `MatMulInteger`, as
//! compositions of casts, elementwise arithmetic and `tsr.matmul`, following onnx's reference
//! implementation step for step (which dtype each step computes in decides the rounding).

use super::elementwise::cast_to;
use super::matmul::matmul_numpy;
use super::{axis_of, invalid, one, unsupported, BuildResult, Registry};
use crate::onnx::import::{Importer, NodeCx, Slot};
use crate::onnx::tensor;
use tessera_ir::dtype::DType;
use tessera_ir::graph::ValueId;
use tessera_ir::ops::elementwise::{BinaryOp, CompareOp, UnaryOp};
use tessera_ir::ops::reduce::ReduceKind;
use tessera_ir::ops::Op;
use tessera_ir::types::Dim;

pub(super) fn register(r: &mut Registry) {
    r.insert("QuantizeLinear", quantize_linear);
    r.insert("DequantizeLinear", dequantize_linear);
    r.insert("DynamicQuantizeLinear", dynamic_quantize_linear);
    r.insert("QLinearMatMul", qlinear_matmul);
    r.insert("MatMulInteger", matmul_integer);
}

/// A scale or zero point made broadcastable to `x`'s shape, as onnx's `_reshape_input` does: a
/// scalar (or one-element tensor) applies everywhere, a 1-D tensor along `axis`, and with a
/// `block_size` each entry along `axis` covers `block_size` consecutive elements of `x`.
fn spread(imp: &mut Importer, p: ValueId, x_dims: &[Dim], axis: i64, block_size: i64) -> BuildResult<ValueId> {
    let pty = imp.ty(p);
    let rank = x_dims.len();
    let count = pty.static_shape().map(|s| s.iter().product::<u64>());
    if pty.rank() == 0 || count == Some(1) {
        let ones = vec![Dim::Static(1); rank];
        let p = imp.reshape(p, ones)?;
        return imp.broadcast(p, x_dims);
    }
    // The axis matters only for per-axis and blocked parameters (a per-tensor one may come
    // with the default axis 1 on a 1-D input).
    let axis = axis_of(axis, rank)?;
    if block_size <= 0 {
        if pty.rank() != 1 {
            return invalid(format!("a per-axis scale or zero point must be 1-D, got {pty}"));
        }
        let mut dims = vec![Dim::Static(1); rank];
        dims[axis] = pty.dims[0].clone();
        let p = imp.reshape(p, dims)?;
        return imp.broadcast(p, x_dims);
    }
    let (Some(pshape), Some(xshape)) = (pty.static_shape(), imp_static(x_dims)) else {
        return unsupported("blocked quantization over symbolic dimensions");
    };
    if pshape.len() != rank {
        return invalid(format!("a blocked scale or zero point must have the rank of the input, got {pty}"));
    }
    let blocks = pshape[axis];
    let bs = block_size as u64;
    if blocks.checked_mul(bs).is_none_or(|n| n < xshape[axis]) || (0..rank).any(|d| d != axis && pshape[d] != xshape[d])
    {
        return invalid(format!("blocked scale {pty} does not cover the input with block_size {block_size}"));
    }
    let mut split: Vec<Dim> = pshape.iter().map(|&n| Dim::Static(n)).collect();
    split.insert(axis + 1, Dim::Static(1));
    let p = imp.reshape(p, split.clone())?;
    split[axis + 1] = Dim::Static(bs);
    let p = imp.broadcast(p, &split)?;
    let mut merged: Vec<Dim> = pshape.iter().map(|&n| Dim::Static(n)).collect();
    merged[axis] = Dim::Static(blocks * bs);
    let p = imp.reshape(p, merged)?;
    if blocks * bs == xshape[axis] {
        return Ok(p);
    }
    let mut ends: Vec<i64> = xshape.iter().map(|&n| n as i64).collect();
    ends[axis] = xshape[axis] as i64;
    imp.add(Op::Slice { starts: vec![0; rank], ends, steps: vec![1; rank] }, &[p])
}

fn imp_static(dims: &[Dim]) -> Option<Vec<u64>> {
    dims.iter().map(Dim::as_static).collect()
}

fn is_small_float(d: DType) -> bool {
    matches!(d, DType::F8E4M3 | DType::F8E5M2 | DType::F8E4M3Fnuz | DType::F8E5M2Fnuz | DType::F4E2M1)
}

fn dtype_attr(cx: &NodeCx, name: &str) -> BuildResult<Option<DType>> {
    match cx.attrs.int(name, 0)? {
        0 => Ok(None),
        code => tensor::dtype_of(code as i32).map(Some).map_err(|e| super::BuildError::Unsupported(e.message)),
    }
}

/// `y = (x - zero_point) * scale`, computed in f32 and rounded to the scale's (or
/// `output_dtype`'s) type; float8/float4 inputs have no zero point to subtract.
fn dequantize_linear(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = imp.value(cx, 0)?;
    let scale = imp.value(cx, 1)?;
    let xty = imp.ty(x);
    let axis = cx.attrs.int("axis", 1)?;
    let block_size = cx.attrs.int("block_size", 0)?;
    let out = dtype_attr(cx, "output_dtype")?.unwrap_or(imp.ty(scale).dtype);
    let mut dx = imp.cast(x, DType::F32)?;
    if let Some(zp) = imp.opt_value(cx, 2)? {
        if !is_small_float(xty.dtype) {
            let zp = spread(imp, zp, &xty.dims, axis, block_size)?;
            let zp = imp.cast(zp, DType::F32)?;
            dx = imp.binary(BinaryOp::Sub, dx, zp)?;
        }
    }
    let s = spread(imp, scale, &xty.dims, axis, block_size)?;
    let s = imp.cast(s, DType::F32)?;
    let y = imp.binary(BinaryOp::Mul, dx, s)?;
    one(imp.cast(y, out)?)
}

/// `y = saturate(round(x / scale) + zero_point)` for integer targets; float8 targets cast
/// `x / scale` (saturating unless `saturate = 0`), float4 adds the zero point and casts.
fn quantize_linear(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = imp.value(cx, 0)?;
    let scale = imp.value(cx, 1)?;
    let zp = imp.opt_value(cx, 2)?;
    let xty = imp.ty(x);
    let axis = cx.attrs.int("axis", 1)?;
    let block_size = cx.attrs.int("block_size", 0)?;
    let saturate = cx.attrs.int("saturate", 1)? != 0;
    let target = match zp {
        Some(z) => imp.ty(z).dtype,
        None => dtype_attr(cx, "output_dtype")?.unwrap_or(DType::U8),
    };
    // NumPy's promotion: x / scale computes in x's type when both agree, else in f32 (or the
    // `precision` type when given).
    let compute = match dtype_attr(cx, "precision")? {
        Some(p) => p,
        None if imp.ty(scale).dtype == xty.dtype => xty.dtype,
        None => DType::F32,
    };
    let s = spread(imp, scale, &xty.dims, axis, block_size)?;
    let s = imp.cast(s, compute)?;
    let xc = imp.cast(x, compute)?;
    let q = imp.binary(BinaryOp::Div, xc, s)?;
    if let Some((lo, hi)) = target.int_range().filter(|_| target != DType::Bool) {
        let r = imp.unary(UnaryOp::Round, q)?;
        // Integer arithmetic as the reference does it (rint, then int32 + zero point).
        let mut r = imp.cast(r, DType::I64)?;
        if let Some(z) = zp {
            let z = spread(imp, z, &xty.dims, axis, block_size)?;
            let z = imp.cast(z, DType::I64)?;
            r = imp.binary(BinaryOp::Add, r, z)?;
        }
        let r = imp.binary_scalar(BinaryOp::Max, r, lo as f64)?;
        let r = imp.binary_scalar(BinaryOp::Min, r, hi as f64)?;
        return one(imp.cast(r, target)?);
    }
    match target {
        DType::F4E2M1 => {
            let mut q = q;
            if let Some(z) = zp {
                let z = spread(imp, z, &xty.dims, axis, block_size)?;
                let z = imp.cast(z, compute)?;
                q = imp.binary(BinaryOp::Add, q, z)?;
            }
            one(imp.cast(q, target)?)
        }
        t if is_small_float(t) => one(cast_to(imp, q, t, saturate)?),
        t => unsupported(format!("QuantizeLinear to {t}")),
    }
}

/// The whole-tensor reduction `kind` of `x` as a rank-0 value.
fn reduce_all(imp: &mut Importer, x: ValueId, kind: ReduceKind) -> BuildResult<ValueId> {
    let axes = (0..imp.ty(x).rank() as i64).collect();
    imp.add(Op::Reduce { kind, axes, keepdims: false }, &[x])
}

/// uint8 quantization with a scale and zero point computed from the input's range (which
/// always includes 0), as onnx's reference computes them.
fn dynamic_quantize_linear(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = imp.value(cx, 0)?;
    if imp.ty(x).dtype != DType::F32 {
        return invalid(format!("DynamicQuantizeLinear takes float32, got {}", imp.ty(x)));
    }
    let hi = reduce_all(imp, x, ReduceKind::Max)?;
    let hi = imp.binary_scalar(BinaryOp::Max, hi, 0.0)?;
    let lo = reduce_all(imp, x, ReduceKind::Min)?;
    let lo = imp.binary_scalar(BinaryOp::Min, lo, 0.0)?;
    let range = imp.binary(BinaryOp::Sub, hi, lo)?;
    let zero = imp.scalar(DType::F32, 0.0);
    let one_ = imp.scalar(DType::F32, 1.0);
    let empty = imp.compare(CompareOp::Eq, range, zero)?;
    let range = imp.select(empty, one_, range)?;
    let scale = imp.binary_scalar(BinaryOp::Div, range, 255.0)?;
    let shifted = imp.binary(BinaryOp::Div, lo, scale)?;
    let zp = imp.binary_scalar(BinaryOp::Mul, shifted, -1.0)?;
    let zp = imp.binary_scalar(BinaryOp::Max, zp, 0.0)?;
    let zp = imp.binary_scalar(BinaryOp::Min, zp, 255.0)?;
    let zp = imp.unary(UnaryOp::Round, zp)?;
    let dims = imp.ty(x).dims;
    let s = imp.broadcast(scale, &dims)?;
    let q = imp.binary(BinaryOp::Div, x, s)?;
    let q = imp.unary(UnaryOp::Round, q)?;
    let z = imp.broadcast(zp, &dims)?;
    let q = imp.binary(BinaryOp::Add, q, z)?;
    let q = imp.binary_scalar(BinaryOp::Max, q, 0.0)?;
    let q = imp.binary_scalar(BinaryOp::Min, q, 255.0)?;
    let y = imp.cast(q, DType::U8)?;
    let zp = imp.cast(zp, DType::U8)?;
    Ok(vec![Slot::Value(y), Slot::Value(scale), Slot::Value(zp)])
}

/// `x - zero_point` in int32, the zero point a scalar or (for `per_axis_from_end` = 2, the
/// rows of a matrix; 1, its columns) a vector along that axis.
fn centered(imp: &mut Importer, x: ValueId, zp: Option<ValueId>, per_axis_from_end: usize) -> BuildResult<ValueId> {
    let xi = imp.cast(x, DType::I32)?;
    let Some(zp) = zp else { return Ok(xi) };
    let dims = imp.ty(xi).dims;
    let rank = dims.len();
    let zty = imp.ty(zp);
    let z = if zty.rank() == 1 && zty.dims[0] != Dim::Static(1) && rank >= per_axis_from_end {
        spread(imp, zp, &dims, (rank - per_axis_from_end) as i64, 0)?
    } else {
        spread(imp, zp, &dims, 0, 0)?
    };
    let z = imp.cast(z, DType::I32)?;
    imp.binary(BinaryOp::Sub, xi, z)
}

/// `(a - a_zero_point) @ (b - b_zero_point)` in int32.
fn matmul_integer(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let (a, b) = (imp.value(cx, 0)?, imp.value(cx, 1)?);
    let (a_zp, b_zp) = (imp.opt_value(cx, 2)?, imp.opt_value(cx, 3)?);
    let a = centered(imp, a, a_zp, 2)?;
    let b = centered(imp, b, b_zp, 1)?;
    one(matmul_numpy(imp, a, b)?)
}

/// The scale of a QLinear op as a single value; per-row/column scales are not imported.
fn scalar_scale(imp: &mut Importer, s: ValueId) -> BuildResult<ValueId> {
    let t = imp.ty(s);
    if t.static_shape().is_none_or(|sh| sh.iter().product::<u64>() != 1) {
        return unsupported(format!("QLinearMatMul with per-axis scale {t} (only per-tensor scales are imported)"));
    }
    imp.reshape(s, vec![])
}

/// onnx's reference: the int32 product of the centered operands, times
/// `a_scale * b_scale / y_scale` (computed in the scales' type), in f64, plus the output zero
/// point, rounded half to even and saturated to the output type (onnx 1.23's test data
/// saturates: -235.7 gives int8 -128).
fn qlinear_matmul(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let a = imp.value(cx, 0)?;
    let a_scale = imp.value(cx, 1)?;
    let a_zp = imp.opt_value(cx, 2)?;
    let b = imp.value(cx, 3)?;
    let b_scale = imp.value(cx, 4)?;
    let b_zp = imp.opt_value(cx, 5)?;
    let y_scale = imp.value(cx, 6)?;
    let y_zp = imp.opt_value(cx, 7)?;
    let out = match y_zp {
        Some(z) => imp.ty(z).dtype,
        None => imp.ty(a).dtype,
    };
    let ac = centered(imp, a, a_zp, 2)?;
    let bc = centered(imp, b, b_zp, 1)?;
    let c = matmul_numpy(imp, ac, bc)?;
    let (sa, sb, sy) = (scalar_scale(imp, a_scale)?, scalar_scale(imp, b_scale)?, scalar_scale(imp, y_scale)?);
    let sab = imp.binary(BinaryOp::Mul, sa, sb)?;
    let factor = imp.binary(BinaryOp::Div, sab, sy)?;
    let factor = imp.cast(factor, DType::F64)?;
    let dims = imp.ty(c).dims;
    let factor = imp.reshape(factor, vec![Dim::Static(1); dims.len()])?;
    let factor = imp.broadcast(factor, &dims)?;
    let c = imp.cast(c, DType::F64)?;
    let mut d = imp.binary(BinaryOp::Mul, c, factor)?;
    if let Some(z) = y_zp {
        let z = spread(imp, z, &dims, 0, 0)?;
        let z = imp.cast(z, DType::F64)?;
        d = imp.binary(BinaryOp::Add, d, z)?;
    }
    let mut d = imp.unary(UnaryOp::Round, d)?;
    if let Some((lo, hi)) = out.int_range() {
        d = imp.binary_scalar(BinaryOp::Max, d, lo as f64)?;
        d = imp.binary_scalar(BinaryOp::Min, d, hi as f64)?;
    }
    one(imp.cast(d, out)?)
}
