//! Reductions: `ReduceSum/Mean/Max/Min/Prod` (tsr ops), `ReduceL1/L2/LogSum/LogSumExp/SumSquare`
//! (decomposed), and `ArgMax`/`ArgMin`. The axes are an attribute before opset 18 (13 for
//! ReduceSum) and an optional constant input from then on.

use super::{axis_of, invalid, one, unsupported, BuildResult, Registry};
use crate::onnx::import::{Importer, NodeCx, Slot};
use tessera_ir::dtype::DType;
use tessera_ir::graph::ValueId;
use tessera_ir::ops::elementwise::{BinaryOp, CompareOp, UnaryOp};
use tessera_ir::ops::reduce::ReduceKind;
use tessera_ir::ops::Op;
use tessera_ir::types::{Dim, TensorType};

/// The decomposed reductions, by what they apply before and after a sum (or max).
#[derive(Clone, Copy, PartialEq)]
enum Composite {
    Plain(ReduceKind),
    L1,
    L2,
    LogSum,
    LogSumExp,
    SumSquare,
}

pub(super) fn register(r: &mut Registry) {
    r.insert("ReduceSum", |imp, cx| reduce(imp, cx, Composite::Plain(ReduceKind::Sum)));
    r.insert("ReduceMean", |imp, cx| reduce(imp, cx, Composite::Plain(ReduceKind::Mean)));
    r.insert("ReduceMax", |imp, cx| reduce(imp, cx, Composite::Plain(ReduceKind::Max)));
    r.insert("ReduceMin", |imp, cx| reduce(imp, cx, Composite::Plain(ReduceKind::Min)));
    r.insert("ReduceProd", |imp, cx| reduce(imp, cx, Composite::Plain(ReduceKind::Prod)));
    r.insert("ReduceL1", |imp, cx| reduce(imp, cx, Composite::L1));
    r.insert("ReduceL2", |imp, cx| reduce(imp, cx, Composite::L2));
    r.insert("ReduceLogSum", |imp, cx| reduce(imp, cx, Composite::LogSum));
    r.insert("ReduceLogSumExp", |imp, cx| reduce(imp, cx, Composite::LogSumExp));
    r.insert("ReduceSumSquare", |imp, cx| reduce(imp, cx, Composite::SumSquare));
    r.insert("ArgMax", |imp, cx| arg_extreme(imp, cx, false));
    r.insert("TopK", top_k);
    r.insert("ArgMin", |imp, cx| arg_extreme(imp, cx, true));
}

/// The normalized axes to reduce, `None` for "no reduction" (`noop_with_empty_axes`).
fn reduce_axes(imp: &Importer, cx: &NodeCx, rank: usize, axes_are_input: bool) -> BuildResult<Option<Vec<i64>>> {
    let axes = if axes_are_input {
        if cx.attrs.has("axes") {
            return invalid("axes is an input from this opset on, not an attribute");
        }
        imp.const_ints(cx, 1, "axes")?
    } else {
        cx.attrs.opt_ints("axes")?
    };
    let axes = axes.unwrap_or_default();
    if axes.is_empty() {
        if cx.attrs.int("noop_with_empty_axes", 0)? != 0 {
            return Ok(None);
        }
        return Ok(Some((0..rank as i64).collect()));
    }
    let mut normalized = Vec::with_capacity(axes.len());
    for a in axes {
        let a = axis_of(a, rank)? as i64;
        if !normalized.contains(&a) {
            normalized.push(a);
        }
    }
    normalized.sort_unstable();
    Ok(Some(normalized))
}

fn reduce(imp: &mut Importer, cx: &NodeCx, what: Composite) -> BuildResult<Vec<Slot>> {
    let x = imp.value(cx, 0)?;
    let ty = imp.ty(x);
    let axes_are_input = cx.opset >= 18 || (cx.opset >= 13 && what == Composite::Plain(ReduceKind::Sum));
    let keepdims = cx.attrs.int("keepdims", 1)? != 0;
    let Some(axes) = reduce_axes(imp, cx, ty.rank(), axes_are_input)? else {
        return one(x);
    };
    if ty.dtype == DType::Bool {
        // ReduceMax/ReduceMin take booleans from opset 20 on: any / all, computed on 0/1 bytes.
        let Composite::Plain(kind @ (ReduceKind::Max | ReduceKind::Min)) = what else {
            return unsupported(format!("{} of booleans", cx.proto.op_type()));
        };
        let bytes = imp.cast(x, DType::I8)?;
        let reduced = imp.add(Op::Reduce { kind: ReduceKind::Sum, axes: axes.clone(), keepdims }, &[bytes])?;
        if axes.iter().any(|&a| ty.dims[a as usize] == Dim::Static(0)) {
            // Over nothing, any is false and all is true (the identities of max and min).
            let dims = imp.ty(reduced).dims;
            let s = imp.scalar(DType::Bool, if kind == ReduceKind::Max { 0.0 } else { 1.0 });
            return one(imp.broadcast(s, &dims)?);
        }
        let reduced = imp.add(Op::Reduce { kind, axes, keepdims }, &[bytes])?;
        return one(imp.cast(reduced, DType::Bool)?);
    }
    let sum = |imp: &mut Importer, v: ValueId| {
        imp.add(Op::Reduce { kind: ReduceKind::Sum, axes: axes.clone(), keepdims }, &[v])
    };
    let y = match what {
        Composite::Plain(ReduceKind::Mean) if !ty.dtype.is_float() => {
            // Integer mean: the sum divided by the count, truncated as ONNX's reference does.
            let count: Option<u64> = axes.iter().map(|&a| ty.dims[a as usize].as_static()).product();
            let count =
                count.ok_or_else(|| super::BuildError::Unsupported("integer mean over symbolic dimensions".into()))?;
            let s = sum(imp, x)?;
            imp.binary_scalar(BinaryOp::Div, s, count as f64)?
        }
        Composite::Plain(kind @ (ReduceKind::Max | ReduceKind::Min)) if empty_float(&ty, &axes) => {
            // ONNX defines the max (min) of nothing as -inf (+inf); tsr rejects it at run time.
            let fill = if kind == ReduceKind::Max { f64::NEG_INFINITY } else { f64::INFINITY };
            let shape_of = imp.add(Op::Reduce { kind: ReduceKind::Sum, axes: axes.clone(), keepdims }, &[x])?;
            let dims = imp.ty(shape_of).dims;
            let s = imp.scalar(ty.dtype, fill);
            imp.broadcast(s, &dims)?
        }
        Composite::Plain(kind) => imp.add(Op::Reduce { kind, axes: axes.clone(), keepdims }, &[x])?,
        Composite::L1 => {
            let a = imp.unary(UnaryOp::Abs, x)?;
            sum(imp, a)?
        }
        Composite::SumSquare => {
            let sq = imp.binary(BinaryOp::Mul, x, x)?;
            sum(imp, sq)?
        }
        Composite::L2 => {
            let sq = imp.binary(BinaryOp::Mul, x, x)?;
            let s = sum(imp, sq)?;
            float_only(imp, s)?;
            imp.unary(UnaryOp::Sqrt, s)?
        }
        Composite::LogSum => {
            let s = sum(imp, x)?;
            float_only(imp, s)?;
            imp.unary(UnaryOp::Log, s)?
        }
        Composite::LogSumExp => log_sum_exp(imp, x, &axes, keepdims)?,
    };
    one(y)
}

/// Whether a float reduction over `axes` of `ty` reduces an empty set (a static extent of 0).
fn empty_float(ty: &TensorType, axes: &[i64]) -> bool {
    ty.dtype.is_float() && axes.iter().any(|&a| ty.dims[a as usize] == Dim::Static(0))
}

fn float_only(imp: &Importer, v: ValueId) -> BuildResult<()> {
    let dtype = imp.ty(v).dtype;
    if !dtype.is_float() {
        return unsupported(format!("this reduction of {dtype} values"));
    }
    Ok(())
}

/// `log(sum(exp(x - m))) + m` with `m` the maximum, replaced by 0 where it is infinite so empty
/// and all-infinite slices give what the naive formula gives.
fn log_sum_exp(imp: &mut Importer, x: ValueId, axes: &[i64], keepdims: bool) -> BuildResult<ValueId> {
    float_only(imp, x)?;
    let dtype = imp.ty(x).dtype;
    let ty = imp.ty(x);
    let m = if empty_float(&ty, axes) {
        let sum = imp.add(Op::Reduce { kind: ReduceKind::Sum, axes: axes.to_vec(), keepdims: true }, &[x])?;
        imp.full_like(sum, f64::NEG_INFINITY)?
    } else {
        imp.add(Op::Reduce { kind: ReduceKind::Max, axes: axes.to_vec(), keepdims: true }, &[x])?
    };
    let abs = imp.unary(UnaryOp::Abs, m)?;
    let inf = imp.scalar(dtype, f64::INFINITY);
    let is_inf = imp.compare(CompareOp::Eq, abs, inf)?;
    let zero = imp.scalar(dtype, 0.0);
    let m = imp.select(is_inf, zero, m)?;
    let shifted = imp.binary(BinaryOp::Sub, x, m)?;
    let e = imp.unary(UnaryOp::Exp, shifted)?;
    let s = imp.add(Op::Reduce { kind: ReduceKind::Sum, axes: axes.to_vec(), keepdims: true }, &[e])?;
    let l = imp.unary(UnaryOp::Log, s)?;
    let y = imp.binary(BinaryOp::Add, l, m)?;
    if keepdims {
        return Ok(y);
    }
    let dims: Vec<Dim> = imp
        .ty(y)
        .dims
        .iter()
        .enumerate()
        .filter(|(i, _)| !axes.contains(&(*i as i64)))
        .map(|(_, d)| d.clone())
        .collect();
    imp.reshape(y, dims)
}

/// `ArgMax`, or `ArgMin` as the ArgMax of the negation; `select_last_index` reverses the axis
/// first and maps the index back.
fn arg_extreme(imp: &mut Importer, cx: &NodeCx, min: bool) -> BuildResult<Vec<Slot>> {
    let mut x = imp.value(cx, 0)?;
    let ty = imp.ty(x);
    if ty.dtype == DType::Bool {
        return unsupported("ArgMax/ArgMin of booleans");
    }
    let axis = axis_of(cx.attrs.int("axis", 0)?, ty.rank())?;
    let keepdims = cx.attrs.int("keepdims", 1)? != 0;
    let last = cx.attrs.int("select_last_index", 0)? != 0;
    if min {
        x = imp.unary(UnaryOp::Neg, x)?;
    }
    let n = ty.dims[axis].as_static();
    if last {
        let Some(n) = n else { return unsupported("select_last_index along a symbolic dimension") };
        let r = ty.rank();
        let mut starts = vec![0; r];
        let mut ends = vec![i64::MAX; r];
        let mut steps = vec![1; r];
        starts[axis] = -1;
        ends[axis] = i64::MIN;
        steps[axis] = -1;
        x = imp.add(Op::Slice { starts, ends, steps }, &[x])?;
        let idx = imp.add(Op::ArgMax { axis: axis as i64, keepdims }, &[x])?;
        let top = imp.full_like(idx, (n as i64 - 1) as f64)?;
        return one(imp.add(Op::Binary(BinaryOp::Sub), &[top, idx])?);
    }
    one(imp.add(Op::ArgMax { axis: axis as i64, keepdims }, &[x])?)
}

/// `TopK` with `k` known at import time, by ranks instead of a sort: element `i` of a slice
/// along `axis` has rank `#{j : x[j] beats x[i]}`, where `x[j]` beats `x[i]` when it is larger
/// (smaller with `largest = 0`) or equal at a lower index, so ties keep index order as the spec
/// requires. Output position `p < k` takes the element of rank `p` (values and int64 indices);
/// the result is sorted either way, which `sorted = 0` (any order) allows. The pairwise
/// comparison is `n^2` per slice, capped like the importer's generated constants.
fn top_k(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = imp.value(cx, 0)?;
    let k = match imp.const_ints(cx, 1, "k")?.as_deref() {
        Some([k]) => *k,
        Some(other) => return invalid(format!("k must hold one value, got {other:?}")),
        None => return invalid("missing input 'k'"),
    };
    let ty = imp.ty(x);
    if ty.dtype == DType::Bool {
        return invalid(format!("TopK of {ty}"));
    }
    let axis = axis_of(cx.attrs.int("axis", -1)?, ty.rank())?;
    let largest = cx.attrs.int("largest", 1)? != 0;
    let n = ty.dims[axis]
        .as_static()
        .ok_or_else(|| super::BuildError::Unsupported(format!("TopK along symbolic {}", ty.dims[axis])))?;
    if k < 0 || k as u64 > n {
        return invalid(format!("k = {k} is outside 0..={n}"));
    }
    let count = ty.num_elements().map(|e| e.saturating_mul(n)).unwrap_or(u64::MAX);
    super::generated_len(count, "TopK's pairwise comparison")?;
    let with_one_at = |pos: usize| {
        let mut d = ty.dims.clone();
        d.insert(pos, Dim::Static(1));
        d
    };
    // x_i along `axis`, x_j along `axis + 1`.
    let xi = imp.reshape(x, with_one_at(axis + 1))?;
    let xj = imp.reshape(x, with_one_at(axis))?;
    let better = imp.compare(if largest { CompareOp::Gt } else { CompareOp::Lt }, xj, xi)?;
    let equal = imp.compare(CompareOp::Eq, xj, xi)?;
    let mut order_shape = vec![1usize; ty.rank() + 1];
    (order_shape[axis], order_shape[axis + 1]) = (n as usize, n as usize);
    let lower_index: Vec<i64> = (0..n).flat_map(|i| (0..n).map(move |j| (j < i) as i64)).collect();
    let lower_index = imp.constant(tessera_ir::tensor::Tensor::from_i64(DType::Bool, order_shape, lower_index));
    let tie = imp.binary(BinaryOp::And, equal, lower_index)?;
    let beats = imp.binary(BinaryOp::Or, better, tie)?;
    let beats = imp.cast(beats, DType::I64)?;
    let rank = imp.add(Op::Reduce { kind: ReduceKind::Sum, axes: vec![axis as i64 + 1], keepdims: true }, &[beats])?;
    // hit[.., i, p, ..] = rank_i == p for the k output positions p.
    let positions = super::iota(imp, ty.rank() + 1, axis + 1, k as u64)?;
    let hit = imp.compare(CompareOp::Eq, rank, positions)?;
    let index_of_i = super::iota(imp, ty.rank() + 1, axis, n)?;
    let zero_i = imp.scalar(DType::I64, 0.0);
    let picked_index = imp.select(hit, index_of_i, zero_i)?;
    let indices =
        imp.add(Op::Reduce { kind: ReduceKind::Sum, axes: vec![axis as i64], keepdims: false }, &[picked_index])?;
    let zero = imp.scalar(ty.dtype, 0.0);
    let picked_value = imp.select(hit, xi, zero)?;
    let values =
        imp.add(Op::Reduce { kind: ReduceKind::Sum, axes: vec![axis as i64], keepdims: false }, &[picked_value])?;
    Ok(vec![Slot::Value(values), Slot::Value(indices)])
}
