//! Normalizations: `Softmax` (tsr op), `LogSoftmax` and `Hardmax` (decomposed; before opset 13
//! all three normalize a flattened trailing block),
//! `LayerNormalization` and `RMSNormalization` (tsr ops when their parameters have exactly the
//! normalized shape and only `Y` is asked for, decomposed otherwise), and the decomposed
//! `BatchNormalization` (inference), `InstanceNormalization`, `GroupNormalization`,
//! `LpNormalization`, `MeanVarianceNormalization`, `LRN`.

use super::{axis_of, invalid, one, unsupported, BuildResult, Registry};
use crate::onnx::import::{Importer, NodeCx, Slot};
use tessera_ir::graph::ValueId;
use tessera_ir::ops::elementwise::{BinaryOp, CompareOp, UnaryOp};
use tessera_ir::ops::reduce::ReduceKind;
use tessera_ir::ops::Op;
use tessera_ir::types::{Dim, TensorType};

pub(super) fn register(r: &mut Registry) {
    r.insert("Softmax", softmax);
    r.insert("LogSoftmax", log_softmax);
    r.insert("Hardmax", hardmax);
    r.insert("LayerNormalization", layer_norm);
    r.insert("RMSNormalization", rms_norm);
    r.insert("BatchNormalization", batch_norm);
    r.insert("InstanceNormalization", instance_norm);
    r.insert("GroupNormalization", group_norm);
    r.insert("LpNormalization", lp_norm);
    r.insert("MeanVarianceNormalization", mean_variance_norm);
    r.insert("LRN", local_response_norm);
}

/// `LRN` (AlexNet, GoogLeNet): `x / (bias + alpha / size * square_sum) ^ beta`, where
/// `square_sum` at channel `c` sums `x^2` over the channels `c - floor((size - 1) / 2)` to
/// `c + ceil((size - 1) / 2)` that exist. That window sum is an average pool of `x^2` laid out as
/// `[N, 1, C, rest]` with kernel `[size, 1]` over zero padding (which counts, so the average
/// times `size` is the sum).
fn local_response_norm(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = float_value(imp, cx, 0)?;
    let size = cx.attrs.req_int("size")?;
    let (alpha, beta, bias) =
        (cx.attrs.float("alpha", 1e-4)?, cx.attrs.float("beta", 0.75)?, cx.attrs.float("bias", 1.0)?);
    // The bound keeps the padding arithmetic and tsr's window shape rule far from overflow.
    if !(1..=1 << 31).contains(&size) {
        return invalid(format!("size = {size}, not in 1..=2^31"));
    }
    let ty = imp.ty(x);
    if ty.rank() < 3 {
        return invalid(format!("input must be [N, C, spatial...], got {ty}"));
    }
    let Some(shape) = ty.static_shape() else {
        return unsupported(format!("LRN over symbolic dimensions ({ty})"));
    };
    let (n, c, rest) = (shape[0], shape[1], shape[2..].iter().product::<u64>());
    let st = Dim::Static;
    let squares = imp.binary(BinaryOp::Mul, x, x)?;
    let channels_as_rows = imp.reshape(squares, vec![st(n), st(1), st(c), st(rest)])?;
    let (before, after) = ((size - 1) / 2, size / 2);
    let padded = super::shape::slicing::pad_constant(imp, channels_as_rows, &[0, 0, before, 0, 0, 0, after, 0], 0.0)?;
    let window = tessera_ir::ops::conv::Window { strides: [1, 1], pads: [0; 4], dilations: [1, 1] };
    let mean =
        imp.add(Op::Pool2d { kind: tessera_ir::ops::conv::PoolKind::Avg, kernel: [size, 1], window }, &[padded])?;
    let mean = imp.reshape(mean, ty.dims.clone())?;
    // alpha / size * (mean * size) = alpha * mean.
    let scaled = imp.binary_scalar(BinaryOp::Mul, mean, alpha)?;
    let shifted = imp.binary_scalar(BinaryOp::Add, scaled, bias)?;
    let denominator = imp.binary_scalar(BinaryOp::Pow, shifted, beta)?;
    one(imp.binary(BinaryOp::Div, x, denominator)?)
}

/// A float input `i`.
fn float_value(imp: &mut Importer, cx: &NodeCx, i: usize) -> BuildResult<ValueId> {
    let x = imp.value(cx, i)?;
    if !imp.ty(x).dtype.is_float() {
        return invalid(format!("needs a float input, got {}", imp.ty(x)));
    }
    Ok(x)
}

fn reduce(imp: &mut Importer, kind: ReduceKind, x: ValueId, axes: Vec<i64>) -> BuildResult<ValueId> {
    imp.add(Op::Reduce { kind, axes, keepdims: true }, &[x])
}

/// The operand and axis a softmax-like op normalizes along, and the shape to restore after it.
///
/// From opset 13 on the op normalizes along one `axis` (default -1). Before, it views the input
/// as a matrix `[prod(dims[..axis]), prod(dims[axis..])]` (`axis` defaulting to 1) and normalizes
/// each row: the trailing dimensions are flattened into one here and restored afterwards.
fn rows(imp: &mut Importer, cx: &NodeCx, x: ValueId) -> BuildResult<(ValueId, i64, Option<Vec<Dim>>)> {
    let dims = imp.ty(x).dims;
    if cx.opset >= 13 {
        let axis = cx.attrs.int("axis", -1)?;
        axis_of(axis, dims.len())?;
        return Ok((x, axis, None));
    }
    let axis = axis_of(cx.attrs.int("axis", 1)?, dims.len())?;
    if axis + 1 == dims.len() {
        return Ok((x, axis as i64, None));
    }
    let row: Option<u64> = dims[axis..].iter().map(Dim::as_static).product();
    let row = row.ok_or_else(|| {
        super::BuildError::Unsupported(format!("opset {} {} over symbolic dimensions", cx.opset, cx.proto.op_type()))
    })?;
    let mut flat = dims[..axis].to_vec();
    flat.push(Dim::Static(row));
    Ok((imp.reshape(x, flat)?, axis as i64, Some(dims)))
}

/// `y` back in the shape [`rows`] flattened, if it did.
fn unrows(imp: &mut Importer, y: ValueId, dims: Option<Vec<Dim>>) -> BuildResult<Vec<Slot>> {
    match dims {
        Some(dims) => one(imp.reshape(y, dims)?),
        None => one(y),
    }
}

fn softmax(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = float_value(imp, cx, 0)?;
    let (x, axis, dims) = rows(imp, cx, x)?;
    let y = imp.add(Op::Softmax { axis }, &[x])?;
    unrows(imp, y, dims)
}

/// `s - log(sum(exp(s)))` with `s = x - max(x)` along `axis`.
fn log_softmax(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = float_value(imp, cx, 0)?;
    let (x, axis, dims) = rows(imp, cx, x)?;
    let m = reduce(imp, ReduceKind::Max, x, vec![axis])?;
    let s = imp.binary(BinaryOp::Sub, x, m)?;
    let e = imp.unary(UnaryOp::Exp, s)?;
    let sum = reduce(imp, ReduceKind::Sum, e, vec![axis])?;
    let lse = imp.unary(UnaryOp::Log, sum)?;
    let y = imp.binary(BinaryOp::Sub, s, lse)?;
    unrows(imp, y, dims)
}

/// One-hot of the first maximum along `axis`: `argmax == iota`.
fn hardmax(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = float_value(imp, cx, 0)?;
    let (x, axis, dims) = rows(imp, cx, x)?;
    let ty = imp.ty(x);
    let axis = axis_of(axis, ty.rank())?;
    let n = ty.dims[axis]
        .as_static()
        .ok_or_else(|| super::BuildError::Unsupported("Hardmax along a symbolic dimension".into()))?;
    let arg = imp.add(Op::ArgMax { axis: axis as i64, keepdims: true }, &[x])?;
    let iota = super::iota(imp, ty.rank(), axis, n)?;
    let hit = imp.compare(CompareOp::Eq, arg, iota)?;
    let y = imp.cast(hit, ty.dtype)?;
    unrows(imp, y, dims)
}

/// Mean, centered input and `1 / sqrt(var + eps)` over `axes` (kept as unit dimensions).
struct Moments {
    mean: ValueId,
    centered: ValueId,
    inv_std: ValueId,
}

fn moments(imp: &mut Importer, x: ValueId, axes: Vec<i64>, epsilon: f64) -> BuildResult<Moments> {
    let mean = reduce(imp, ReduceKind::Mean, x, axes.clone())?;
    let centered = imp.binary(BinaryOp::Sub, x, mean)?;
    let sq = imp.binary(BinaryOp::Mul, centered, centered)?;
    let var = reduce(imp, ReduceKind::Mean, sq, axes)?;
    let var_eps = imp.binary_scalar(BinaryOp::Add, var, epsilon)?;
    let inv_std = imp.unary(UnaryOp::Rsqrt, var_eps)?;
    Ok(Moments { mean, centered, inv_std })
}

/// `y * scale (+ bias)` with the parameters broadcast to `y` and cast to its dtype.
fn affine(imp: &mut Importer, y: ValueId, scale: Option<ValueId>, bias: Option<ValueId>) -> BuildResult<ValueId> {
    let dtype = imp.ty(y).dtype;
    let mut y = y;
    if let Some(s) = scale {
        let s = imp.cast(s, dtype)?;
        y = imp.binary(BinaryOp::Mul, y, s)?;
    }
    if let Some(b) = bias {
        let b = imp.cast(b, dtype)?;
        y = imp.binary(BinaryOp::Add, y, b)?;
    }
    Ok(y)
}

fn layer_norm(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = float_value(imp, cx, 0)?;
    let scale = imp.value(cx, 1)?;
    let bias = imp.opt_value(cx, 2)?;
    let ty = imp.ty(x);
    let axis = axis_of(cx.attrs.int("axis", -1)?, ty.rank())?;
    let epsilon = cx.attrs.float("epsilon", 1e-5)?;
    let normalized = TensorType::new(ty.dtype, ty.dims[axis..].to_vec());
    let exact = |v: Option<ValueId>| v.is_some_and(|v| imp.ty(v) == normalized);
    let want_stats = cx.wants_output(1) || cx.wants_output(2);
    if exact(Some(scale)) && exact(bias) && !want_stats {
        let b = bias.unwrap_or(scale);
        return one(imp.add(Op::LayerNorm { axis: axis as i64, epsilon }, &[x, scale, b])?);
    }
    let axes: Vec<i64> = (axis as i64..ty.rank() as i64).collect();
    let m = moments(imp, x, axes, epsilon)?;
    let normed = imp.binary(BinaryOp::Mul, m.centered, m.inv_std)?;
    let y = affine(imp, normed, Some(scale), bias)?;
    Ok(vec![Slot::Value(y), Slot::Value(m.mean), Slot::Value(m.inv_std)])
}

/// `x / sqrt(mean(x^2) + eps) * scale` over the axes from `axis` on.
fn rms_norm(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = float_value(imp, cx, 0)?;
    let scale = imp.value(cx, 1)?;
    let ty = imp.ty(x);
    let axis = axis_of(cx.attrs.int("axis", -1)?, ty.rank())?;
    let epsilon = cx.attrs.float("epsilon", 1e-5)?;
    if imp.ty(scale) == TensorType::new(ty.dtype, ty.dims[axis..].to_vec()) {
        return one(imp.add(Op::RmsNorm { axis: axis as i64, epsilon }, &[x, scale])?);
    }
    let axes: Vec<i64> = (axis as i64..ty.rank() as i64).collect();
    let sq = imp.binary(BinaryOp::Mul, x, x)?;
    let ms = reduce(imp, ReduceKind::Mean, sq, axes)?;
    let ms_eps = imp.binary_scalar(BinaryOp::Add, ms, epsilon)?;
    let inv = imp.unary(UnaryOp::Rsqrt, ms_eps)?;
    let normed = imp.binary(BinaryOp::Mul, x, inv)?;
    one(affine(imp, normed, Some(scale), None)?)
}

/// A per-channel parameter `[C]` as `[C, 1, ...]`, broadcastable over `[N, C, spatial...]`.
fn per_channel(imp: &mut Importer, p: ValueId, rank: usize) -> BuildResult<ValueId> {
    let mut dims = imp.ty(p).dims;
    if dims.len() != 1 {
        return invalid(format!("per-channel parameter must be 1-D, got {}", imp.ty(p)));
    }
    dims.extend(std::iter::repeat_n(Dim::Static(1), rank.saturating_sub(2)));
    imp.reshape(p, dims)
}

/// Inference: `x * (scale / sqrt(var + eps)) + (bias - mean * scale / sqrt(var + eps))`; with
/// constant parameters the two factors fold into constants.
fn batch_norm(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    if cx.attrs.int("training_mode", 0)? != 0 || cx.wants_output(1) || cx.wants_output(2) {
        return unsupported("training-mode BatchNormalization");
    }
    let x = float_value(imp, cx, 0)?;
    let rank = imp.ty(x).rank();
    if rank < 2 {
        return invalid(format!("input must be [N, C, ...], got {}", imp.ty(x)));
    }
    let dtype = imp.ty(x).dtype;
    let epsilon = cx.attrs.float("epsilon", 1e-5)?;
    let mut params = Vec::with_capacity(4);
    for i in 1..5 {
        let p = imp.value(cx, i)?;
        params.push(imp.cast(p, dtype)?);
    }
    let (scale, bias, mean, var) = (params[0], params[1], params[2], params[3]);
    let var_eps = imp.binary_scalar(BinaryOp::Add, var, epsilon)?;
    let inv_std = imp.unary(UnaryOp::Rsqrt, var_eps)?;
    let factor = imp.binary(BinaryOp::Mul, scale, inv_std)?;
    let mf = imp.binary(BinaryOp::Mul, mean, factor)?;
    let shift = imp.binary(BinaryOp::Sub, bias, mf)?;
    let factor = per_channel(imp, factor, rank)?;
    let shift = per_channel(imp, shift, rank)?;
    let y = imp.binary(BinaryOp::Mul, x, factor)?;
    one(imp.binary(BinaryOp::Add, y, shift)?)
}

fn instance_norm(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = float_value(imp, cx, 0)?;
    let (scale, bias) = (imp.value(cx, 1)?, imp.value(cx, 2)?);
    let rank = imp.ty(x).rank();
    if rank < 3 {
        return invalid(format!("input must be [N, C, spatial...], got {}", imp.ty(x)));
    }
    let epsilon = cx.attrs.float("epsilon", 1e-5)?;
    let m = moments(imp, x, (2..rank as i64).collect(), epsilon)?;
    let normed = imp.binary(BinaryOp::Mul, m.centered, m.inv_std)?;
    let (s, b) = (per_channel(imp, scale, rank)?, per_channel(imp, bias, rank)?);
    one(affine(imp, normed, Some(s), Some(b))?)
}

/// Normalizes `[N, G, C/G * spatial]` groups; the scale and bias are per channel from opset 21
/// on and per group before.
fn group_norm(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = float_value(imp, cx, 0)?;
    let (scale, bias) = (imp.value(cx, 1)?, imp.value(cx, 2)?);
    let ty = imp.ty(x);
    let groups = cx.attrs.req_int("num_groups")?;
    let epsilon = cx.attrs.float("epsilon", 1e-5)?;
    if ty.rank() < 3 {
        return invalid(format!("input must be [N, C, spatial...], got {ty}"));
    }
    let rest: Option<u64> = ty.dims[1..].iter().map(Dim::as_static).product();
    let c = ty.dims[1].as_static();
    let (Some(rest), Some(c)) = (rest, c) else {
        return unsupported(format!("GroupNormalization of {ty} with symbolic channel or spatial dimensions"));
    };
    if groups < 1 || c % groups as u64 != 0 {
        return invalid(format!("num_groups = {groups} does not divide {c} channels"));
    }
    let g = groups as u64;
    let grouped = imp.reshape(x, vec![ty.dims[0].clone(), Dim::Static(g), Dim::Static(rest / g)])?;
    let m = moments(imp, grouped, vec![2], epsilon)?;
    let normed = imp.binary(BinaryOp::Mul, m.centered, m.inv_std)?;
    if cx.opset < 21 {
        let s = imp.reshape(scale, vec![Dim::Static(g), Dim::Static(1)])?;
        let b = imp.reshape(bias, vec![Dim::Static(g), Dim::Static(1)])?;
        let y = affine(imp, normed, Some(s), Some(b))?;
        return one(imp.reshape(y, ty.dims.clone())?);
    }
    let y = imp.reshape(normed, ty.dims.clone())?;
    let (s, b) = (per_channel(imp, scale, ty.rank())?, per_channel(imp, bias, ty.rank())?);
    one(affine(imp, y, Some(s), Some(b))?)
}

/// `x / ||x||_p` along `axis` (p = 1 or 2).
fn lp_norm(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = float_value(imp, cx, 0)?;
    let axis = cx.attrs.int("axis", -1)?;
    axis_of(axis, imp.ty(x).rank())?;
    let norm = match cx.attrs.int("p", 2)? {
        1 => {
            let a = imp.unary(UnaryOp::Abs, x)?;
            reduce(imp, ReduceKind::Sum, a, vec![axis])?
        }
        2 => {
            let sq = imp.binary(BinaryOp::Mul, x, x)?;
            let s = reduce(imp, ReduceKind::Sum, sq, vec![axis])?;
            imp.unary(UnaryOp::Sqrt, s)?
        }
        p => return invalid(format!("p = {p} (must be 1 or 2)")),
    };
    // A slice whose norm is 0 (all zeros) normalizes to 0, not 0/0 = NaN (the reference does
    // the same since onnx 1.21).
    let quotient = imp.binary(BinaryOp::Div, x, norm)?;
    let zero = imp.full_like(norm, 0.0)?;
    let norm_is_zero = imp.compare(CompareOp::Eq, norm, zero)?;
    let zeros = imp.full_like(x, 0.0)?;
    one(imp.select(norm_is_zero, zeros, quotient)?)
}

/// `(x - E[x]) / (sqrt(E[x^2] - E[x]^2) + 1e-9)` over `axes` (ONNX's function body).
fn mean_variance_norm(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = float_value(imp, cx, 0)?;
    let axes = cx.attrs.opt_ints("axes")?.unwrap_or_else(|| vec![0, 2, 3]);
    let mean = reduce(imp, ReduceKind::Mean, x, axes.clone())?;
    let mean_sq = imp.binary(BinaryOp::Mul, mean, mean)?;
    let sq = imp.binary(BinaryOp::Mul, x, x)?;
    let sq_mean = reduce(imp, ReduceKind::Mean, sq, axes)?;
    let var = imp.binary(BinaryOp::Sub, sq_mean, mean_sq)?;
    let std = imp.unary(UnaryOp::Sqrt, var)?;
    let std_eps = imp.binary_scalar(BinaryOp::Add, std, 1e-9)?;
    let centered = imp.binary(BinaryOp::Sub, x, mean)?;
    one(imp.binary(BinaryOp::Div, centered, std_eps)?)
}
