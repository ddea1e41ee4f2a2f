//! Data-movement ops that change shape but not values: `tsr.broadcast`, `tsr.reshape`,
//! `tsr.transpose`, `tsr.slice`, `tsr.concat`, `tsr.split`.
//!
//! `broadcast` and `reshape` take their target shape from the result type, so the text form
//! carries it once (including symbolic names).
//!
//! Reference semantics: each op is an index map from result element to operand element
//! (`Tensor::gather_elements` with `super::strided_index`), so values are copied exactly.

use super::gradient::{GradContext, GradError, GradResult};
use super::Op;
use super::{broadcast_coeffs, expect_arity, product, strided_index, ShapeResult};
use crate::dtype::DType;
use crate::graph::ValueId;
use crate::sharding::ShardingRule;
use crate::symbolic::DimExpr;
use crate::tensor::{strides, Buffer, Tensor};
use crate::types::{dims_product, normalize_axis, Dim, TensorType};

/// NumPy-style broadcast of `x` to `target`: trailing dimensions align, each input dimension
/// equals the target's or is 1, or is a symbolic size the symbols cannot decide equal to the
/// target's symbolic size or not (`floordiv(h + 15, 16)` to `2 * floordiv(h + 31, 32)`: equal
/// at some `h` only). That one is checked when the sizes are known, as NumPy's `broadcast_to`
/// does: binding the symbols gives each size, and this rule refuses the pair if they differ
/// (the interpreter infers every node's concrete type at each run; a compile with the sizes
/// bound verifies the bound graph).
pub fn infer_broadcast(inputs: &[&TensorType], target: &[Dim]) -> ShapeResult {
    expect_arity(inputs, 1)?;
    let x = inputs[0];
    let out = TensorType::new(x.dtype, target.to_vec());
    if x.rank() > target.len() {
        return Err(format!("cannot broadcast {x} to lower rank {out}"));
    }
    let offset = target.len() - x.rank();
    for (i, d) in x.dims.iter().enumerate() {
        let t = &target[offset + i];
        if *d != Dim::Static(1) && d != t && !super::checked_at_run_time(d, t) {
            return Err(format!("dimension {i} of {x} does not broadcast to {out}"));
        }
    }
    Ok(vec![out])
}

/// A `tsr.broadcast` dimension the symbols left undecided ([`super::checked_at_run_time`]):
/// the operand's size must equal the target's (or be 1) once the symbols are bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeferredBroadcast {
    /// The broadcast's result value, by name.
    pub value: String,
    pub operand: DimExpr,
    pub target: DimExpr,
}

impl DeferredBroadcast {
    /// Whether the sizes `bindings` give satisfy the check; an expression that does not
    /// evaluate (an unbound symbol, overflow) is an error naming it.
    pub fn holds(&self, bindings: &std::collections::HashMap<String, i64>) -> Result<bool, String> {
        let operand = self.operand.eval(bindings).map_err(|e| e.to_string())?;
        let target = self.target.eval(bindings).map_err(|e| e.to_string())?;
        Ok(operand == target || operand == 1)
    }
}

/// Every broadcast of `graph` (regions included) whose operand and target sizes only some sizes
/// of the symbols make equal: the shape checks a run at given sizes must pass, in node order.
pub fn deferred_broadcasts(graph: &crate::graph::Graph) -> Vec<DeferredBroadcast> {
    let mut out = Vec::new();
    for (_, node) in graph.nodes() {
        match &node.op {
            Op::Broadcast { shape } => {
                let (Some(&x), Some(&result)) = (node.inputs.first(), node.outputs.first()) else { continue };
                let x_dims = &graph.value(x).ty.dims;
                let offset = shape.len().saturating_sub(x_dims.len());
                for (d, t) in x_dims.iter().zip(&shape[offset..]) {
                    if let (Dim::Symbolic(operand), Dim::Symbolic(target)) = (d, t) {
                        if d != t && super::checked_at_run_time(d, t) {
                            out.push(DeferredBroadcast {
                                value: graph.value(result).name.clone(),
                                operand: operand.clone(),
                                target: target.clone(),
                            });
                        }
                    }
                }
            }
            Op::If(regions) => {
                out.extend(deferred_broadcasts(&regions.then_branch));
                out.extend(deferred_broadcasts(&regions.else_branch));
            }
            Op::Loop(regions) => {
                out.extend(deferred_broadcasts(&regions.cond));
                out.extend(deferred_broadcasts(&regions.body));
            }
            _ => {}
        }
    }
    out
}

/// Reshape to `target`. The element counts, products of dimension expressions, must be equal
/// as polynomials (`[b, 2 * s, 4] -> [b * s, 8]` checks).
pub fn infer_reshape(inputs: &[&TensorType], target: &[Dim]) -> ShapeResult {
    expect_arity(inputs, 1)?;
    let x = inputs[0];
    let out = TensorType::new(x.dtype, target.to_vec());
    let static_product =
        |t: &TensorType| t.dims.iter().filter_map(Dim::as_static).try_fold(1u64, |acc, n| acc.checked_mul(n));
    let (count_in, count_out) = (static_product(x), static_product(&out));
    // A product past u64 is its own error: calling it "differ" hid the overflow.
    if count_in.is_none() || count_out.is_none() {
        let huge = if count_in.is_none() { x } else { &out };
        return Err(format!("cannot reshape {x} to {out}: {huge} has more than 2^64 elements"));
    }
    let (count_in, count_out) = (dims_product(&x.dims), dims_product(&out.dims));
    match (count_in, count_out) {
        (Ok(a), Ok(b)) if a == b => Ok(vec![out]),
        (Ok(a), Ok(b)) => Err(format!("cannot reshape {x} to {out}: element counts differ ({a} vs {b})")),
        (Err(e), _) | (_, Err(e)) => Err(format!("cannot reshape {x} to {out}: {e}")),
    }
}

/// Permutes dimensions: result dimension `i` is input dimension `perm[i]`.
pub fn infer_transpose(inputs: &[&TensorType], perm: &[i64]) -> ShapeResult {
    expect_arity(inputs, 1)?;
    let x = inputs[0];
    let mut seen = vec![false; x.rank()];
    if perm.len() != x.rank() {
        return Err(format!("permutation {perm:?} has {} entries for {x}", perm.len()));
    }
    let mut dims = Vec::with_capacity(x.rank());
    for &p in perm {
        let i = usize::try_from(p).ok().filter(|&i| i < x.rank() && !seen[i]);
        let i = i.ok_or_else(|| format!("{perm:?} is not a permutation of 0..{}", x.rank()))?;
        seen[i] = true;
        dims.push(x.dims[i].clone());
    }
    Ok(vec![TensorType::new(x.dtype, dims)])
}

/// The number of elements Python's `range(len)[start:end:step]` selects, and the first index.
/// Negative `start`/`end` count from the end; both are clamped.
pub fn slice_extent(len: i64, start: i64, end: i64, step: i64) -> (i64, i64) {
    let clamp = |v: i64, lo: i64, hi: i64| v.clamp(lo, hi);
    let norm = |v: i64| if v < 0 { v.saturating_add(len) } else { v };
    if step > 0 {
        let s = clamp(norm(start), 0, len);
        let e = clamp(norm(end), 0, len);
        // ceil((e - s) / step), written so that a huge step cannot overflow.
        let n = if e > s { (e - s - 1) / step + 1 } else { 0 };
        (s, n)
    } else {
        let s = clamp(norm(start), -1, len - 1);
        let e = clamp(norm(end), -1, len - 1);
        // `unsigned_abs` because `-i64::MIN` overflows.
        let n = if s > e { ((s - e - 1) as u64 / step.unsigned_abs()) as i64 + 1 } else { 0 };
        (s, n)
    }
}

/// The length of `[start:end:step]` of a symbolic dimension `n`, for the cases that need no
/// comparison with `n`: a positive step from a non-negative start to the end (`end >= i64::MAX
/// / 2`) or to `end < 0` counted from the end. The slice is assumed to fit (`n >= start`),
/// as ONNX exporters' shape arithmetic does; other cases are an error.
pub fn symbolic_slice_len(n: &DimExpr, start: i64, end: i64, step: i64) -> Result<Dim, String> {
    let why = || format!("cannot slice symbolic dimension {n} as [{start}:{end}:{step}] without knowing its size");
    if step <= 0 || start < 0 {
        return Err(why());
    }
    let stop = if end >= i64::MAX / 2 {
        n.clone()
    } else if end < 0 {
        n.add(&DimExpr::constant(end)).map_err(|e| e.to_string())?
    } else {
        return Err(why());
    };
    let len = stop.sub(&DimExpr::constant(start)).and_then(|v| v.ceildiv(step)).map_err(|e| e.to_string())?;
    Dim::from_expr(len).map_err(|e| e.to_string())
}

/// Strided slice with one `start`, `end`, `step` per dimension. A symbolic dimension takes the
/// length [`symbolic_slice_len`] gives.
pub fn infer_slice(inputs: &[&TensorType], starts: &[i64], ends: &[i64], steps: &[i64]) -> ShapeResult {
    expect_arity(inputs, 1)?;
    let x = inputs[0];
    let r = x.rank();
    if starts.len() != r || ends.len() != r || steps.len() != r {
        return Err(format!("starts, ends and steps need {r} entries each for {x}"));
    }
    let mut dims = Vec::with_capacity(r);
    for i in 0..r {
        if steps[i] == 0 {
            return Err(format!("step of dimension {i} is zero"));
        }
        match &x.dims[i] {
            Dim::Static(n) => {
                let (_, count) = slice_extent(*n as i64, starts[i], ends[i], steps[i]);
                dims.push(Dim::Static(count as u64));
            }
            Dim::Symbolic(s) => dims.push(symbolic_slice_len(s, starts[i], ends[i], steps[i])?),
        }
    }
    Ok(vec![TensorType::new(x.dtype, dims)])
}

pub fn infer_concat(inputs: &[&TensorType], axis: i64) -> ShapeResult {
    let first = *inputs.first().ok_or("concat needs at least one operand")?;
    let ax = normalize_axis(axis, first.rank()).ok_or_else(|| format!("axis {axis} is out of range for {first}"))?;
    let mut total = DimExpr::constant(0);
    for t in inputs {
        let same_elsewhere = t.rank() == first.rank()
            && t.dtype == first.dtype
            && (0..t.rank()).all(|i| i == ax || t.dims[i] == first.dims[i]);
        if !same_elsewhere {
            return Err(format!("operand {t} does not match {first} outside axis {axis}"));
        }
        let extent = t.dims[ax].to_expr().and_then(|e| total.add(&e));
        total = extent.map_err(|_| format!("concatenated extent along axis {axis} overflows"))?;
    }
    let mut dims = first.dims.clone();
    dims[ax] = Dim::from_expr(total).map_err(|e| e.to_string())?;
    Ok(vec![TensorType::new(first.dtype, dims)])
}

pub fn infer_split(inputs: &[&TensorType], axis: i64, sizes: &[i64]) -> ShapeResult {
    expect_arity(inputs, 1)?;
    let x = inputs[0];
    let ax = normalize_axis(axis, x.rank()).ok_or_else(|| format!("axis {axis} is out of range for {x}"))?;
    let n = x.dims[ax].as_static().ok_or_else(|| format!("cannot split symbolic dimension {}", x.dims[ax]))?;
    let total = sizes.iter().try_fold(0i64, |acc, &s| acc.checked_add(s));
    if sizes.is_empty() || sizes.iter().any(|&s| s < 0) || total.map(|t| t as u64) != Some(n) {
        return Err(format!("split sizes {sizes:?} do not partition dimension {ax} of {x}"));
    }
    Ok(sizes
        .iter()
        .map(|&s| {
            let mut dims = x.dims.clone();
            dims[ax] = Dim::Static(s as u64);
            TensorType::new(x.dtype, dims)
        })
        .collect())
}

/// FLOPs of a layout op: none, it only moves data.
pub fn flops() -> u128 {
    0
}

fn axis_of(shape: &[usize], axis: i64) -> Result<usize, String> {
    normalize_axis(axis, shape.len()).ok_or_else(|| format!("axis {axis} is out of range for shape {shape:?}"))
}

/// Broadcast `x` to `out` (NumPy trailing alignment).
pub fn eval_broadcast(x: &Tensor, out: &[usize]) -> Result<Tensor, String> {
    let lead = out.len().checked_sub(x.shape.len());
    let fits = lead.is_some_and(|lead| x.shape.iter().enumerate().all(|(i, &n)| n == 1 || n == out[lead + i]));
    if !fits {
        return Err(format!("shape {:?} does not broadcast to {out:?}", x.shape));
    }
    let coeffs = broadcast_coeffs(&x.shape, out);
    Ok(x.gather_elements(out.to_vec(), |i| strided_index(i, out, &coeffs, 0)))
}

/// The same elements in row-major order under the shape `out`.
pub fn eval_reshape(x: &Tensor, out: &[usize]) -> Result<Tensor, String> {
    if product(out) != x.len() {
        return Err(format!("cannot reshape {} elements to {out:?}", x.len()));
    }
    Ok(x.reshaped(out.to_vec()))
}

/// Result dimension `i` is operand dimension `perm[i]`.
pub fn eval_transpose(x: &Tensor, perm: &[i64], out: &[usize]) -> Result<Tensor, String> {
    let in_strides = strides(&x.shape);
    let coeffs = perm
        .iter()
        .map(|&p| usize::try_from(p).ok().and_then(|p| in_strides.get(p)).map(|&s| s as i64))
        .collect::<Option<Vec<i64>>>()
        .ok_or_else(|| format!("{perm:?} is not a permutation of the dimensions of {:?}", x.shape))?;
    if coeffs.len() != out.len() {
        return Err(format!("permutation {perm:?} does not give shape {out:?}"));
    }
    Ok(x.gather_elements(out.to_vec(), |i| strided_index(i, out, &coeffs, 0)))
}

/// Python-style strided slice per dimension (negative steps walk backwards).
pub fn eval_slice(x: &Tensor, starts: &[i64], ends: &[i64], steps: &[i64], out: &[usize]) -> Result<Tensor, String> {
    let rank = x.shape.len();
    if starts.len() != rank || ends.len() != rank || steps.len() != rank || out.len() != rank {
        return Err(format!("starts, ends and steps need {rank} entries each"));
    }
    let in_strides = strides(&x.shape);
    let mut offset = 0i64;
    let mut coeffs = Vec::with_capacity(rank);
    for d in 0..rank {
        let (start, count) = slice_extent(x.shape[d] as i64, starts[d], ends[d], steps[d]);
        if count as u64 != out[d] as u64 {
            return Err(format!("dimension {d} of the slice has {count} elements, the result type {}", out[d]));
        }
        // An empty dimension may leave `start` just outside the operand; nothing is read then.
        if count > 0 {
            offset += start * in_strides[d] as i64;
        }
        // With one element the step is never applied (and may be huge enough to overflow).
        coeffs.push(if count > 1 { steps[d] * in_strides[d] as i64 } else { 0 });
    }
    Ok(x.gather_elements(out.to_vec(), |i| strided_index(i, out, &coeffs, offset)))
}

/// Concatenation of `xs` along `axis`.
pub fn eval_concat(xs: &[&Tensor], axis: i64, out: &[usize]) -> Result<Tensor, String> {
    let first = xs.first().ok_or("concat needs at least one operand")?;
    let ax = axis_of(&first.shape, axis)?;
    let outer = product(&first.shape[..ax]);
    // Each operand contributes one contiguous chunk per outer index.
    let chunks: Vec<usize> = xs.iter().map(|t| product(&t.shape[ax..])).collect();
    fn gather<T: Copy>(parts: &[&[T]], chunks: &[usize], outer: usize) -> Vec<T> {
        let mut v = Vec::with_capacity(chunks.iter().sum::<usize>() * outer);
        for o in 0..outer {
            for (part, &c) in parts.iter().zip(chunks) {
                v.extend_from_slice(&part[o * c..(o + 1) * c]);
            }
        }
        v
    }
    let floats: Option<Vec<&[f64]>> =
        xs.iter().map(|t| if let Buffer::Float(v) = &t.data { Some(v.as_slice()) } else { None }).collect();
    let floats32: Option<Vec<&[f32]>> =
        xs.iter().map(|t| if let Buffer::F32(v) = &t.data { Some(v.as_slice()) } else { None }).collect();
    let ints: Option<Vec<&[i64]>> =
        xs.iter().map(|t| if let Buffer::Int(v) = &t.data { Some(v.as_slice()) } else { None }).collect();
    let halves: Option<Vec<&[half::f16]>> =
        xs.iter().map(|t| if let Buffer::F16(v) = &t.data { Some(v.as_slice()) } else { None }).collect();
    let brains: Option<Vec<&[half::bf16]>> =
        xs.iter().map(|t| if let Buffer::BF16(v) = &t.data { Some(v.as_slice()) } else { None }).collect();
    let data = match (floats, floats32, ints) {
        (Some(parts), _, _) => Buffer::Float(gather(&parts, &chunks, outer)),
        (_, Some(parts), _) => Buffer::F32(std::sync::Arc::new(gather(&parts, &chunks, outer))),
        (_, _, Some(parts)) => Buffer::Int(gather(&parts, &chunks, outer)),
        _ => match (halves, brains) {
            (Some(parts), _) => Buffer::F16(std::sync::Arc::new(gather(&parts, &chunks, outer))),
            (_, Some(parts)) => Buffer::BF16(std::sync::Arc::new(gather(&parts, &chunks, outer))),
            _ => return Err("operands have different storage".into()),
        },
    };
    let t = Tensor { dtype: first.dtype, shape: out.to_vec(), data };
    if t.len() != product(out) {
        return Err(format!("operands do not concatenate to shape {out:?}"));
    }
    Ok(t)
}

/// Consecutive pieces of `x` along `axis`, of the result shapes `outs`.
pub fn eval_split(x: &Tensor, axis: i64, outs: &[Vec<usize>]) -> Result<Vec<Tensor>, String> {
    let ax = axis_of(&x.shape, axis)?;
    let in_strides = strides(&x.shape);
    let coeffs: Vec<i64> = in_strides.iter().map(|&s| s as i64).collect();
    let mut start = 0usize;
    let mut pieces = Vec::with_capacity(outs.len());
    for out in outs {
        let size = *out.get(ax).ok_or_else(|| format!("result shape {out:?} has no axis {ax}"))?;
        if start + size > x.shape[ax] {
            return Err(format!("pieces overrun the {} elements along axis {ax}", x.shape[ax]));
        }
        let offset = (start * in_strides[ax]) as i64;
        pieces.push(x.gather_elements(out.clone(), |i| strided_index(i, out, &coeffs, offset)));
        start += size;
    }
    if start != x.shape[ax] {
        return Err(format!("pieces cover {start} of the {} elements along axis {ax}", x.shape[ax]));
    }
    Ok(pieces)
}

// ---------------------------------------------------------------------------------------------
// Gradient rules: data movement moves adjoints back the way it moved values.

/// `broadcast`: `g` summed over the broadcast dimensions.
pub fn grad_broadcast(cx: &mut GradContext, x: ValueId, g: ValueId) -> Result<ValueId, GradError> {
    let t = cx.ty(x);
    cx.sum_to(g, &t)
}

/// `reshape`: `g` reshaped back.
pub fn grad_reshape(cx: &mut GradContext, x: ValueId, g: ValueId) -> Result<ValueId, GradError> {
    let dims = cx.ty(x).dims;
    cx.reshape(g, &dims)
}

/// `transpose`: `g` transposed by the inverse permutation.
pub fn grad_transpose(cx: &mut GradContext, g: ValueId, perm: &[i64]) -> Result<ValueId, GradError> {
    let mut inverse = vec![0i64; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        let slot = usize::try_from(p).ok().filter(|&p| p < perm.len()).ok_or_else(|| cx.unsupported("bad perm"))?;
        inverse[slot] = i as i64;
    }
    cx.add(Op::Transpose { perm: inverse }, &[g])
}

/// `slice`: `g` placed at the selected positions of a zero tensor of the operand's shape, one
/// sliced dimension at a time, each a `scatter` along that dimension with the positions
/// `start + i * step` (static shapes only).
pub fn grad_slice(
    cx: &mut GradContext,
    x: ValueId,
    g: ValueId,
    (starts, ends, steps): (&[i64], &[i64], &[i64]),
) -> Result<ValueId, GradError> {
    let full = cx.static_shape(&cx.ty(x))?;
    let mut current = g;
    for d in (0..full.len()).rev() {
        let (first, count) = slice_extent(full[d] as i64, starts[d], ends[d], steps[d]);
        if count == full[d] as i64 && steps[d] == 1 {
            continue;
        }
        let shape = cx.static_shape(&cx.ty(current))?;
        let positions: Vec<i64> =
            (0..product(&shape)).map(|p| first + crate::tensor::unravel(p, &shape)[d] as i64 * steps[d]).collect();
        let index = cx.add(Op::Constant(Tensor::from_i64(DType::I64, shape.clone(), positions)), &[])?;
        let mut expanded = shape.clone();
        expanded[d] = full[d];
        let dtype = cx.ty(g).dtype;
        let zeros = cx.zeros(&TensorType::of_static(dtype, &expanded.iter().map(|&n| n as u64).collect::<Vec<_>>()))?;
        current = cx.add(
            Op::Scatter { axis: d as i64, reduction: super::indexing::ScatterReduction::None },
            &[zeros, index, current],
        )?;
    }
    Ok(current)
}

/// `concat`: `g` split back into the operands' extents along `axis`.
pub fn grad_concat(cx: &mut GradContext, inputs: &[ValueId], g: ValueId, axis: i64, wanted: &[bool]) -> GradResult {
    let t = cx.ty(g);
    let ax = normalize_axis(axis, t.rank()).ok_or_else(|| cx.unsupported(format!("axis {axis} out of range")))?;
    let sizes =
        inputs.iter().map(|&v| cx.static_count(&cx.ty(v), &[ax]).map(|n| n as i64)).collect::<Result<Vec<_>, _>>()?;
    if inputs.len() == 1 {
        return Ok(vec![Some(g)]);
    }
    let parts = cx.graph.add_node(Op::Split { axis: ax as i64, sizes }, &[g])?;
    Ok(parts.into_iter().zip(wanted).map(|(p, &w)| w.then_some(p)).collect())
}

/// `split`: the results' adjoints concatenated (zeros for results that do not reach the loss).
pub fn grad_split(cx: &mut GradContext, outputs: &[ValueId], grads: &[Option<ValueId>], axis: i64) -> GradResult {
    let mut parts = Vec::with_capacity(outputs.len());
    for (&out, g) in outputs.iter().zip(grads) {
        parts.push(match g {
            Some(g) => *g,
            None => {
                let t = cx.ty(out);
                cx.zeros(&t)?
            }
        });
    }
    if parts.len() == 1 {
        return Ok(vec![Some(parts[0])]);
    }
    Ok(vec![Some(cx.add(Op::Concat { axis }, &parts)?)])
}

/// Sharding rule of `broadcast`: result dimensions are parallel; an operand dimension that is
/// not stretched shares its result dimension's factor.
pub fn sharding_rule_broadcast(x: &TensorType, out: &TensorType) -> ShardingRule {
    let mut rule = ShardingRule::replicated(&[x], std::slice::from_ref(out));
    let offset = out.rank().saturating_sub(x.rank());
    for d in 0..out.rank() {
        let f = rule.factor(&out.dims[d]);
        rule.results[0][d] = Some(f);
        if let Some(xd) = d.checked_sub(offset) {
            if x.dims[xd] == out.dims[d] {
                rule.operands[0][xd] = Some(f);
            }
        }
    }
    rule
}

/// Sharding rule of `transpose`: result dimension `i` is operand dimension `perm[i]`.
pub fn sharding_rule_transpose(x: &TensorType, out: &TensorType, perm: &[i64]) -> ShardingRule {
    let mut rule = ShardingRule::replicated(&[x], std::slice::from_ref(out));
    for (i, &p) in perm.iter().enumerate() {
        let Some(p) = usize::try_from(p).ok().filter(|&p| p < x.rank()) else {
            return ShardingRule::replicated(&[x], std::slice::from_ref(out));
        };
        let f = rule.factor(&out.dims[i]);
        rule.results[0][i] = Some(f);
        rule.operands[0][p] = Some(f);
    }
    rule
}

/// Sharding rule of `slice`: a dimension kept whole (start 0, step 1, end past the extent) is
/// parallel; a sliced one stays whole.
pub fn sharding_rule_slice(
    x: &TensorType,
    out: &TensorType,
    starts: &[i64],
    ends: &[i64],
    steps: &[i64],
) -> ShardingRule {
    let mut rule = ShardingRule::replicated(&[x], std::slice::from_ref(out));
    for d in 0..x.rank() {
        let whole = match x.dims[d] {
            Dim::Static(n) => {
                starts.get(d) == Some(&0) && steps.get(d) == Some(&1) && ends.get(d).is_some_and(|&e| e >= n as i64)
            }
            Dim::Symbolic(_) => false,
        };
        if whole {
            let f = rule.factor(&x.dims[d]);
            rule.operands[0][d] = Some(f);
            rule.results[0][d] = Some(f);
        }
    }
    rule
}

/// Sharding rule of `concat` and `split`: every dimension but `axis` is parallel and shared by
/// all operands and results.
pub fn sharding_rule_concat_split(operands: &[&TensorType], results: &[TensorType], axis: i64) -> ShardingRule {
    let mut rule = ShardingRule::replicated(operands, results);
    let Some(first) = operands.first() else {
        return rule;
    };
    let Some(ax) = normalize_axis(axis, first.rank()) else {
        return rule;
    };
    for d in (0..first.rank()).filter(|&d| d != ax) {
        let f = rule.factor(&first.dims[d]);
        for dims in rule.operands.iter_mut().chain(rule.results.iter_mut()) {
            dims[d] = Some(f);
        }
    }
    rule
}

/// Sharding rule of `reshape`. Dimensions are grouped into runs with equal element counts
/// (`[b, s, h*d] -> [b, s, h, d]` gives `b|b`, `s|s`, `h*d|h,d`); in each group the first operand
/// dimension and the first result dimension share a factor whose extent is the gcd of theirs
/// (splitting the major dimension of a group into `k` blocks is the same contiguous split on
/// both sides when `k` divides both); leading unit dimensions of a group are skipped. Other
/// dimensions stay whole; symbolic dimensions only match themselves.
pub fn sharding_rule_reshape(x: &TensorType, out: &TensorType) -> ShardingRule {
    let mut rule = ShardingRule::replicated(&[x], std::slice::from_ref(out));
    let (a, b) = (&x.dims, &out.dims);
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (gi, gj) = (i, j);
        match (&a[i], &b[j]) {
            (Dim::Symbolic(s), Dim::Symbolic(t)) if s == t => {
                let f = rule.factor(&a[i]);
                rule.operands[0][i] = Some(f);
                rule.results[0][j] = Some(f);
                i += 1;
                j += 1;
                continue;
            }
            (Dim::Static(_), Dim::Static(_)) => {}
            _ => return rule,
        }
        let (mut pa, mut pb) = (a[i].as_static().unwrap_or(1), b[j].as_static().unwrap_or(1));
        while pa != pb {
            if pa < pb {
                i += 1;
                match a.get(i).and_then(Dim::as_static) {
                    Some(n) => pa = pa.saturating_mul(n),
                    None => return rule,
                }
            } else {
                j += 1;
                match b.get(j).and_then(Dim::as_static) {
                    Some(n) => pb = pb.saturating_mul(n),
                    None => return rule,
                }
            }
        }
        // Unit dimensions in front of a group do not change its layout: the group's major
        // dimension is its first non-unit one (`[1, 1, h] -> [h]` keeps a split of `h`).
        let gi = (gi..=i).find(|&k| a[k].as_static() != Some(1)).unwrap_or(gi);
        let gj = (gj..=j).find(|&k| b[k].as_static() != Some(1)).unwrap_or(gj);
        let (sa, sb) = (a[gi].as_static().unwrap_or(1), b[gj].as_static().unwrap_or(1));
        let shared = gcd(sa, sb);
        if shared > 1 {
            let f = rule.factor(&Dim::Static(shared));
            rule.operands[0][gi] = Some(f);
            rule.results[0][gj] = Some(f);
        }
        i += 1;
        j += 1;
    }
    rule
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod eval_tests {
    use super::super::test_support::{eval, eval1, f32s, i64s};
    use super::super::Op;
    use crate::types::Dim;

    fn dims(shape: &[u64]) -> Vec<Dim> {
        shape.iter().map(|&n| Dim::Static(n)).collect()
    }

    fn slice(starts: &[i64], ends: &[i64], steps: &[i64]) -> Op {
        Op::Slice { starts: starts.to_vec(), ends: ends.to_vec(), steps: steps.to_vec() }
    }

    #[test]
    fn broadcast_aligns_trailing_dimensions() {
        let row = i64s(&[3], &[1, 2, 3]);
        let t = eval1(&Op::Broadcast { shape: dims(&[2, 3]) }, &[&row]);
        assert_eq!((t.shape.clone(), t.to_i64_vec()), (vec![2, 3], vec![1, 2, 3, 1, 2, 3]));
        let col = i64s(&[2, 1], &[1, 2]);
        let t = eval1(&Op::Broadcast { shape: dims(&[2, 2, 3]) }, &[&col]);
        assert_eq!(t.to_i64_vec(), [1, 1, 1, 2, 2, 2, 1, 1, 1, 2, 2, 2]);
    }

    #[test]
    fn reshape_keeps_row_major_order() {
        let x = i64s(&[2, 3], &[1, 2, 3, 4, 5, 6]);
        let t = eval1(&Op::Reshape { shape: dims(&[3, 2]) }, &[&x]);
        assert_eq!((t.shape.clone(), t.to_i64_vec()), (vec![3, 2], vec![1, 2, 3, 4, 5, 6]));
    }

    #[test]
    fn transpose_permutes_dimensions() {
        let x = i64s(&[2, 3], &[1, 2, 3, 4, 5, 6]);
        let t = eval1(&Op::Transpose { perm: vec![1, 0] }, &[&x]);
        assert_eq!((t.shape.clone(), t.to_i64_vec()), (vec![3, 2], vec![1, 4, 2, 5, 3, 6]));
        // [2, 2, 2] with perm [2, 0, 1]: result[i, j, k] = x[j, k, i].
        let x = i64s(&[2, 2, 2], &[0, 1, 2, 3, 4, 5, 6, 7]);
        let t = eval1(&Op::Transpose { perm: vec![2, 0, 1] }, &[&x]);
        assert_eq!(t.to_i64_vec(), [0, 2, 4, 6, 1, 3, 5, 7]);
    }

    #[test]
    fn slice_with_positive_and_negative_steps() {
        let x = i64s(&[5], &[0, 1, 2, 3, 4]);
        let reversed = eval1(&slice(&[-1], &[i64::MIN], &[-1]), &[&x]);
        assert_eq!(reversed.to_i64_vec(), [4, 3, 2, 1, 0]);
        assert_eq!(eval1(&slice(&[4], &[-6], &[-2]), &[&x]).to_i64_vec(), [4, 2, 0]);
        assert_eq!(eval1(&slice(&[1], &[100], &[2]), &[&x]).to_i64_vec(), [1, 3]);
        assert_eq!(eval1(&slice(&[3], &[1], &[1]), &[&x]).shape, [0]);
        // Extreme steps take one element instead of overflowing.
        assert_eq!(eval1(&slice(&[1], &[5], &[i64::MAX]), &[&x]).to_i64_vec(), [1]);
        assert_eq!(eval1(&slice(&[3], &[0], &[i64::MIN]), &[&x]).to_i64_vec(), [3]);
        // Rows 1..3 of a [3, 3] matrix, columns reversed.
        let m = i64s(&[3, 3], &[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        let t = eval1(&slice(&[1, -1], &[3, i64::MIN], &[1, -1]), &[&m]);
        assert_eq!((t.shape.clone(), t.to_i64_vec()), (vec![2, 3], vec![6, 5, 4, 9, 8, 7]));
    }

    #[test]
    fn concat_and_split_are_inverse() {
        let a = f32s(&[2, 1], &[1.0, 2.0]);
        let b = f32s(&[2, 2], &[3.0, 4.0, 5.0, 6.0]);
        let t = eval1(&Op::Concat { axis: 1 }, &[&a, &b]);
        assert_eq!((t.shape.clone(), t.to_f64_vec()), (vec![2, 3], vec![1.0, 3.0, 4.0, 2.0, 5.0, 6.0]));
        let pieces = eval(&Op::Split { axis: -1, sizes: vec![1, 2] }, &[&t]).expect("split");
        assert_eq!(pieces, [a, b]);
        let rows = i64s(&[3, 2], &[1, 2, 3, 4, 5, 6]);
        let pieces = eval(&Op::Split { axis: 0, sizes: vec![2, 0, 1] }, &[&rows]).expect("split");
        let got: Vec<(Vec<usize>, Vec<i64>)> = pieces.iter().map(|p| (p.shape.clone(), p.to_i64_vec())).collect();
        assert_eq!(got, [(vec![2, 2], vec![1, 2, 3, 4]), (vec![0, 2], vec![]), (vec![1, 2], vec![5, 6])]);
        let t = eval1(&Op::Concat { axis: 0 }, &[&pieces[2], &pieces[0]]);
        assert_eq!(t.to_i64_vec(), [5, 6, 1, 2, 3, 4]);
    }

    #[test]
    fn shape_rules_reject_overflowing_attributes_instead_of_panicking() {
        use crate::dtype::DType;
        use crate::types::TensorType;
        let x = TensorType::of_static(DType::F32, &[4]);
        let err = Op::Split { axis: 0, sizes: vec![i64::MAX, i64::MAX, 2] }.infer(&[&x]).expect_err("split");
        assert!(err.starts_with("split sizes"), "{err}");
        let huge = TensorType::of_static(DType::F32, &[u64::MAX, 2]);
        let err =
            Op::Reshape { shape: vec![Dim::Static(2), Dim::Static(u64::MAX)] }.infer(&[&huge]).expect_err("reshape");
        assert!(err.ends_with("tensor<18446744073709551615x2xf32> has more than 2^64 elements"), "{err}");
        // The overflow is named even when the input is small and the target is huge.
        let small = TensorType::of_static(DType::F32, &[1024, 1024]);
        let target = vec![Dim::Static(1 << 40), Dim::Static(1 << 40)];
        let err = Op::Reshape { shape: target }.infer(&[&small]).expect_err("reshape");
        assert!(err.ends_with("tensor<1099511627776x1099511627776xf32> has more than 2^64 elements"), "{err}");
    }
}

/// `tsr.broadcast` between symbolic sizes the symbols cannot decide: accepted symbolically,
/// decided once the symbols are bound.
#[cfg(test)]
mod run_time_broadcast_tests {
    use super::super::{broadcast_dims, Op};
    use crate::dtype::DType;
    use crate::symbolic::DimExpr;
    use crate::types::{Dim, TensorType};
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// PP-OCRv4-det's pair: a stride-32 map upsampled 2x against a stride-16 map.
    fn pair() -> (Dim, Dim) {
        let h = DimExpr::parse("h").expect("h");
        let upsampled = h.add(&DimExpr::constant(31)).and_then(|e| e.floordiv(32)).and_then(|e| e.scale(2));
        let stride16 = h.add(&DimExpr::constant(15)).and_then(|e| e.floordiv(16));
        (Dim::Symbolic(upsampled.expect("expr")), Dim::Symbolic(stride16.expect("expr")))
    }

    #[test]
    fn undecidable_symbolic_sizes_broadcast_and_provably_different_ones_do_not() {
        let (upsampled, stride16) = pair();
        let x = TensorType::new(DType::F32, vec![Dim::Static(2), stride16.clone()]);
        let op = Op::Broadcast { shape: vec![Dim::Static(2), upsampled.clone()] };
        assert_eq!(op.infer(&[&x]).expect("undecidable pair")[0].dims[1], upsampled);
        assert_eq!(
            broadcast_dims(std::slice::from_ref(&stride16), std::slice::from_ref(&upsampled)),
            Some(vec![stride16.clone()])
        );
        // h + 1 is never h: refused symbolically.
        let h = Dim::sym("h");
        let h1 = Dim::Symbolic(DimExpr::parse("h + 1").expect("h + 1"));
        let x = TensorType::new(DType::F32, vec![h.clone()]);
        assert!(Op::Broadcast { shape: vec![h1.clone()] }.infer(&[&x]).is_err());
        assert_eq!(broadcast_dims(std::slice::from_ref(&h), &[h1]), None);
        // A symbol against a static size other than 1 stays an import-time refusal.
        assert!(Op::Broadcast { shape: vec![Dim::Static(5)] }.infer(&[&x]).is_err());
        assert_eq!(broadcast_dims(&[h], &[Dim::Static(5)]), None);
    }

    proptest! {
        /// Binding `h` decides the pair: the bound broadcast is accepted exactly where the two
        /// sizes agree (or the operand's is 1), so a run at a size where they differ is refused.
        #[test]
        fn binding_decides_the_run_time_check(h in 1u64..400) {
            let (upsampled, stride16) = pair();
            let bindings = HashMap::from([("h".to_string(), h)]);
            let (target, operand) = (upsampled.bind(&bindings).expect("bind"), stride16.bind(&bindings).expect("bind"));
            let x = TensorType::new(DType::F32, vec![operand.clone()]);
            let bound = Op::Broadcast { shape: vec![target.clone()] }.infer(&[&x]);
            prop_assert_eq!(bound.is_ok(), operand == target || operand == Dim::Static(1));
        }
    }
}
