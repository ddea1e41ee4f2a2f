//! Ops that cut and join along axes: `Concat`, `Split`, `Slice`, `Tile`, `Pad`,
//! `CenterCropPad`.

use crate::onnx::import::{Importer, NodeCx, Slot, SymInt};
use crate::onnx::ops::{axis_of, invalid, one, unsupported, BuildError, BuildResult, Registry};
use tessera_ir::dtype::DType;
use tessera_ir::graph::ValueId;
use tessera_ir::ops::layout::slice_extent;
use tessera_ir::ops::Op;
use tessera_ir::tensor::Tensor;
use tessera_ir::types::Dim;

use super::slice_axis;
pub(super) fn register(r: &mut Registry) {
    r.insert("Concat", concat);
    r.insert("Split", split);
    r.insert("Slice", slice);
    r.insert("Tile", tile);
    r.insert("Pad", pad);
    r.insert("CenterCropPad", center_crop_pad);
}

fn concat(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let axis = cx.attrs.req_int("axis")?;
    let mut slots = Vec::with_capacity(cx.num_inputs());
    for i in 0..cx.num_inputs() {
        if let Some(s) = imp.slot(cx, i)? {
            slots.push(s);
        }
    }
    if slots.iter().any(|s| matches!(s, Slot::Shape { .. })) {
        // Concatenating shape pieces: every piece is a shape value or a constant 1-D integer list.
        let mut elems = Vec::new();
        for s in &slots {
            match s {
                Slot::Shape { elems: e, scalar: false } => elems.extend(e.iter().cloned()),
                Slot::Value(v) => match imp.constant_of(*v) {
                    Some(t) if t.dtype.is_int() && t.shape.len() == 1 => {
                        elems.extend(t.to_i64_vec().into_iter().map(SymInt::constant))
                    }
                    _ => return unsupported("concatenating a symbolic shape with run-time values"),
                },
                Slot::Shape { .. } => return invalid("cannot concatenate a scalar"),
            }
        }
        return Ok(vec![imp.shape_slot(elems, false)]);
    }
    let vs: Vec<ValueId> =
        slots.into_iter().filter_map(|s| if let Slot::Value(v) = s { Some(v) } else { None }).collect();
    if vs.is_empty() {
        return invalid("Concat needs at least one input");
    }
    let rank = imp.ty(vs[0]).rank();
    let axis_index = axis_of(axis, rank)?;
    if vs.len() == 1 {
        return one(vs[0]);
    }
    let vs = take_assumed_units(imp, &vs, axis_index)?;
    let vs = match_concat_operands(imp, &vs, axis_index)?;
    one(imp.add(Op::Concat { axis }, &vs)?)
}

/// Where an operand's extent outside `axis` is a size `e` and another's is 1 there (PP-OCRv4's
/// recognizer concatenates its backbone's `[b, c, floordiv(h + 15, 48), w']` with a
/// `[b, c', 1, w']` made under the assumption that size is 1), the operand takes its first
/// element along that axis when `e = 1` is assumed, and the assumption is requested when not
/// ([`BuildError::AssumesSize`]). A size that is never 1 is left to the shape rule's error, a
/// lone symbol to [`match_concat_operands`].
fn take_assumed_units(imp: &mut Importer, vs: &[ValueId], axis: usize) -> BuildResult<Vec<ValueId>> {
    let rank = imp.ty(vs[0]).rank();
    if vs.iter().any(|&v| imp.ty(v).rank() != rank) {
        return Ok(vs.to_vec());
    }
    let unit_axes: Vec<usize> =
        (0..rank).filter(|&i| i != axis && vs.iter().any(|&v| imp.ty(v).dims[i] == Dim::Static(1))).collect();
    let mut taken = Vec::with_capacity(vs.len());
    for &v in vs {
        let mut v = v;
        for &i in &unit_axes {
            let Dim::Symbolic(size) = imp.ty(v).dims[i].clone() else { continue };
            // A lone symbol there is unified with 1 (the graph proves it), as before.
            if size.as_symbol().is_some() || size.lower_bound().is_none_or(|least| least > 1) {
                continue;
            }
            if !imp.assumed_equal(&size, 1) {
                return Err(BuildError::AssumesSize {
                    refusal: format!("operand {} has extent {size} on axis {i} where another has 1", imp.ty(v)),
                    size,
                    relation: crate::onnx::ops::SizeRelation::Equal,
                    value: 1,
                });
            }
            v = super::reshape::take_first(imp, v, i)?;
        }
        taken.push(v);
    }
    Ok(taken)
}

/// Concat's operands agree outside `axis`, which the graph thereby proves: two different
/// symbols there become one ([`Importer::unify_dims`]), and sizes the symbols leave undecided
/// (PP-OCRv4-det concatenates a 4x upsampled stride-16 map, `4 * floordiv(h + 15, 16)`, with an
/// 8x upsampled stride-32 one, `8 * floordiv(h + 31, 32)`) take the first operand's through a
/// `tsr.broadcast`, whose shape rule checks them once the sizes are known.
fn match_concat_operands(imp: &mut Importer, vs: &[ValueId], axis: usize) -> BuildResult<Vec<ValueId>> {
    let first = imp.ty(vs[0]);
    if vs.iter().any(|&v| imp.ty(v).rank() != first.rank()) {
        return Ok(vs.to_vec());
    }
    for &v in &vs[1..] {
        for i in (0..first.rank()).filter(|&i| i != axis) {
            let (a, b) = (imp.unified(&imp.ty(vs[0]).dims[i]), imp.unified(&imp.ty(v).dims[i]));
            imp.unify_dims(&a, &b)?;
        }
    }
    let first = imp.ty(vs[0]);
    let mut matched = vec![vs[0]];
    for &v in &vs[1..] {
        let ty = imp.ty(v);
        let deferred = (0..ty.rank()).any(|i| {
            i != axis
                && ty.dims[i] != first.dims[i]
                && tessera_ir::ops::checked_at_run_time(&ty.dims[i], &first.dims[i])
        });
        if !deferred {
            matched.push(v);
            continue;
        }
        let target: Vec<Dim> =
            (0..ty.rank()).map(|i| if i == axis { ty.dims[i].clone() } else { first.dims[i].clone() }).collect();
        matched.push(imp.broadcast(v, &target)?);
    }
    Ok(matched)
}

fn split(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = imp.value(cx, 0)?;
    let ty = imp.ty(x);
    let axis = axis_of(cx.attrs.int("axis", 0)?, ty.rank())?;
    let n = ty.dims[axis]
        .as_static()
        .ok_or_else(|| BuildError::Unsupported(format!("splitting symbolic dimension {}", ty.dims[axis])))?
        as i64;
    let outputs = cx.num_outputs() as i64;
    // The sizes are an attribute before opset 13, an optional input from then on.
    let given = if cx.opset < 13 { cx.attrs.opt_ints("split")? } else { imp.const_ints(cx, 1, "split")? };
    let sizes = match given {
        Some(s) => s,
        None => match cx.attrs.opt_int("num_outputs")? {
            Some(k) if k != outputs => return invalid(format!("num_outputs = {k} for {outputs} outputs")),
            Some(k) if k >= 1 => {
                // Equal chunks of ceil(n / k), the last one smaller.
                let chunk = (n + k - 1) / k;
                (0..k).map(|i| (n - i * chunk).clamp(0, chunk)).collect()
            }
            Some(k) => return invalid(format!("num_outputs = {k}")),
            None if outputs >= 1 && n % outputs == 0 => vec![n / outputs; outputs as usize],
            None => return invalid(format!("{n} elements do not split evenly into {outputs} outputs")),
        },
    };
    if sizes.len() as i64 != outputs {
        return invalid(format!("{} split sizes for {outputs} outputs", sizes.len()));
    }
    let outs = imp.add_n(Op::Split { axis: axis as i64, sizes }, &[x])?;
    Ok(outs.into_iter().map(Slot::Value).collect())
}

/// A slice end at least this large keeps a symbolic dimension whole. Exporters write different
/// sentinels for "to the end": PyTorch `i64::MAX`, others `i32::MAX`, and tf2onnx `1e9` for a
/// masked `strided_slice` end (Magika's model). Reading them all as "whole" is exact for every
/// dimension below 1e9, far past any a model is run with.
const WHOLE_SLICE_END: i64 = 1_000_000_000;

fn slice(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let starts =
        imp.shape_input(cx, 1, "starts")?.ok_or_else(|| BuildError::Invalid("missing input 'starts'".into()))?;
    let ends = imp.shape_input(cx, 2, "ends")?.ok_or_else(|| BuildError::Invalid("missing input 'ends'".into()))?;
    let axes = imp.const_ints(cx, 3, "axes")?;
    let steps = imp.const_ints(cx, 4, "steps")?.unwrap_or_else(|| vec![1; starts.len()]);
    let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return invalid("starts, ends, axes and steps must have one length");
    }
    if starts.iter().chain(&ends).any(|e| e.as_const().is_none()) {
        let x = imp.value(cx, 0)?;
        return one(symbolic_slice(imp, x, &starts, &ends, &axes, &steps)?);
    }
    let constants = |v: &[SymInt]| -> Vec<i64> { v.iter().filter_map(SymInt::as_const).collect() };
    let (starts, ends) = (constants(&starts), constants(&ends));
    if let Some(Slot::Shape { elems, scalar: false }) = imp.slot(cx, 0)? {
        if axes.len() != 1 || axis_of(axes[0], 1)? != 0 || steps[0] == 0 {
            return invalid("a 1-D shape value is sliced along axis 0");
        }
        let step = steps[0].clamp(-(1 << 42), 1 << 42);
        let (start, count) = slice_extent(elems.len() as i64, starts[0], ends[0], step);
        let picked = (0..count).map(|i| elems[(start + i * step) as usize].clone()).collect();
        return Ok(vec![imp.shape_slot(picked, false)]);
    }
    let x = imp.value(cx, 0)?;
    let rank = imp.ty(x).rank();
    let (mut s, mut e, mut st) = (vec![0; rank], vec![i64::MAX; rank], vec![1; rank]);
    let mut seen = vec![false; rank];
    for i in 0..axes.len() {
        let a = axis_of(axes[i], rank)?;
        if seen[a] {
            return invalid(format!("axis {a} is repeated"));
        }
        if steps[i] == 0 {
            return invalid("slice step 0");
        }
        seen[a] = true;
        // A step beyond any extent selects one element either way; clamping keeps the extent
        // arithmetic from overflowing on hostile values.
        (s[a], e[a], st[a]) = (starts[i], ends[i], steps[i].clamp(-(1 << 42), 1 << 42));
    }
    // Exporters spell "to the end" of a symbolic dimension with a huge end; tsr's slice rule
    // computes the length of the others or says why it cannot.
    let dims = imp.ty(x).dims;
    let mut x = x;
    for a in 0..rank {
        if let Dim::Symbolic(n) = &dims[a] {
            if st[a] > 0 && e[a] >= WHOLE_SLICE_END {
                e[a] = i64::MAX;
            }
            let Err(why) = tessera_ir::ops::layout::symbolic_slice_len(n, s[a], e[a], st[a]) else { continue };
            // A slice of constant length (Swin's roll takes `[0:1]` and `[-1:]` of its padded
            // rows) is a gather of its indices where the axis is long enough for its bounds.
            x = gather_fixed_slice(imp, x, a, n, (s[a], e[a], st[a]), why)?;
            seen[a] = false;
            (s[a], e[a], st[a]) = (0, i64::MAX, 1);
        }
    }
    if !seen.iter().any(|&b| b) {
        return one(x);
    }
    one(imp.add(Op::Slice { starts: s, ends: e, steps: st }, &[x])?)
}

/// `[start:end:step]` of the symbolic axis `a` (of extent `n`) that the slice rule cannot size
/// (`why`): a slice of constant length (Swin's roll takes `[0:1]` and `[-1:]` of its padded
/// rows) is a gather of its indices where the axis is long enough for its bounds, known or
/// assumed and checked at run time ([`Importer::require_at_least`]); others are unsupported.
fn gather_fixed_slice(
    imp: &mut Importer,
    x: ValueId,
    a: usize,
    n: &SymInt,
    (start, end, step): (i64, i64, i64),
    why: String,
) -> BuildResult<ValueId> {
    // What the symbolic slice rule cannot size is unsupported, not an invalid model.
    let Some((needed, indices)) = fixed_slice_indices(start, end, step) else { return unsupported(why) };
    imp.require_at_least(n, needed, || why)?;
    let count = indices.len();
    let indices = imp.constant(Tensor::from_i64(DType::I64, vec![count], indices));
    imp.add(Op::Gather { axis: a as i64 }, &[x, indices])
}

/// The indices `[start:end:step]` selects (negative ones counting from the end, as `gather`
/// reads them) when that is a fixed number of elements on every axis of length at least the
/// first value returned, the length the bounds need: a positive step with both bounds from the
/// start (`[0:1]`), both from the end (`[-3:-1]`), or from the end to the end (`[-1:]`). `None`
/// for other slices, and for empty ones (which need no gather).
fn fixed_slice_indices(start: i64, end: i64, step: i64) -> Option<(i64, Vec<i64>)> {
    const MAX_FIXED: i64 = 1 << 16;
    if step <= 0 {
        return None;
    }
    let (needed, stop) = match (start >= 0, end) {
        (true, e) if (0..WHOLE_SLICE_END).contains(&e) => (e, e),
        (false, e) if e >= WHOLE_SLICE_END => (start.checked_neg()?, 0),
        (false, e) if e < 0 => (start.checked_neg()?, e),
        _ => return None,
    };
    if stop <= start || needed > MAX_FIXED {
        return None;
    }
    let indices: Vec<i64> = (start..stop).step_by(usize::try_from(step).ok()?).collect();
    Some((needed, indices))
}

/// `Slice` with dimension expressions among its starts or ends (a transformer's
/// `position_ids[:, past:past + seq]`): each such axis becomes a `gather` of the positions
/// `start + step * iota(len)`, a tensor of the symbolic length `len`. Decisions follow the
/// shape-value assumption that every symbol is at least 1: a start must be known to lie in
/// `0..=extent`; an end at or past the extent keeps it whole; an end that may or may not exceed
/// the extent (`seq` over a 512-row table) is taken as within it, and a run where it is not
/// fails in `gather` naming the index and the bound (the interpreter checks every index).
/// Negative and symbolic steps on such axes are refused.
fn symbolic_slice(
    imp: &mut Importer,
    mut x: ValueId,
    starts: &[SymInt],
    ends: &[SymInt],
    axes: &[i64],
    steps: &[i64],
) -> BuildResult<ValueId> {
    let rank = imp.ty(x).rank();
    let symbolic = |e: tessera_ir::symbolic::SymbolicError| BuildError::Invalid(e.to_string());
    let mut seen = vec![false; rank];
    for i in 0..axes.len() {
        let a = axis_of(axes[i], rank)?;
        if std::mem::replace(&mut seen[a], true) {
            return invalid(format!("axis {a} is repeated"));
        }
        let step = steps[i];
        if step == 0 {
            return invalid("slice step 0");
        }
        if let (Some(s), Some(e)) = (starts[i].as_const(), ends[i].as_const()) {
            let step = step.clamp(-(1 << 42), 1 << 42);
            let e = if e >= WHOLE_SLICE_END && step > 0 { i64::MAX } else { e };
            x = match imp.ty(x).dims[a].clone() {
                Dim::Symbolic(n) => match tessera_ir::ops::layout::symbolic_slice_len(&n, s, e, step) {
                    Ok(_) => super::slice_axis(imp, x, a, s, e, step)?,
                    Err(why) => gather_fixed_slice(imp, x, a, &n, (s, e, step), why)?,
                },
                Dim::Static(_) => super::slice_axis(imp, x, a, s, e, step)?,
            };
            continue;
        }
        if step < 0 {
            return unsupported(format!("a negative step over the symbolic bounds {}..{}", starts[i], ends[i]));
        }
        let extent = imp.ty(x).dims[a].to_expr().map_err(|e| BuildError::Invalid(e.to_string()))?;
        // ONNX counts a negative constant bound from the end.
        let from_end = |bound: &SymInt| -> BuildResult<SymInt> {
            match bound.as_const() {
                Some(k) if k < 0 => extent.add(bound).map_err(symbolic),
                _ => Ok(bound.clone()),
            }
        };
        let start = from_end(&starts[i])?;
        let zero = SymInt::constant(0);
        // A start the extent may not reach, a constant (Swin's roll slices `[1 mod height:]`,
        // which is `[1:]` where the height is at least 1) or `extent - k` (its reverse roll
        // slices `[height - 1:]`), is assumed within it where the extent is at least that
        // constant or `k`, checked at run time.
        let least_extent = match (start.as_const(), start.sub(&extent).ok().and_then(|c| c.as_const())) {
            (Some(k), _) if k >= 0 => Some(k),
            (None, Some(c)) if c <= 0 && c > i64::MIN => Some(-c),
            _ => None,
        };
        let start_fits = match least_extent {
            Some(least) if start.decide_less(&zero) != Some(false) || extent.decide_less(&start) != Some(false) => {
                imp.require_at_least(&extent, least, || {
                    format!(
                        "slicing {extent} from {start}: whether the start lies within the extent depends on the sizes"
                    )
                })?;
                true
            }
            _ => false,
        };
        if !start_fits && (start.decide_less(&zero) != Some(false) || extent.decide_less(&start) != Some(false)) {
            return unsupported(format!(
                "slicing {} from {start}: whether the start lies within the extent depends on the sizes",
                imp.ty(x).dims[a]
            ));
        }
        let end = match ends[i].as_const() {
            Some(k) if k >= WHOLE_SLICE_END => extent.clone(),
            _ => {
                let end = from_end(&ends[i])?;
                if end.decide_less(&extent) == Some(false) {
                    extent.clone()
                } else {
                    end
                }
            }
        };
        let len = end.sub(&start).map_err(symbolic)?.ceildiv(step).map_err(symbolic)?;
        // `extent + c` (Swin's reverse roll slices `[0:height - 1]`) is not negative where the
        // extent is at least `-c`, which an assumption may say.
        let extent_plus_const = len.sub(&extent).ok().and_then(|c| c.as_const());
        let len = if len.lower_bound().is_some_and(|b| b >= 0)
            || (start_fits && end == extent)
            || extent_plus_const
                .is_some_and(|c| c.checked_neg().is_some_and(|least| imp.known_at_least(&extent, least)))
        {
            len
        } else if len.decide_less(&SymInt::constant(1)) == Some(true) {
            zero.clone()
        } else {
            return unsupported(format!("slicing {start}..{end}: whether it is empty depends on the sizes"));
        };
        if start == zero && step == 1 && len == extent {
            continue;
        }
        let origin = imp.constant(tessera_ir::tensor::Tensor::from_i64(tessera_ir::dtype::DType::I64, vec![], vec![0]));
        let len_dims = super::dims_of(std::slice::from_ref(&len))?;
        let zeros = imp.broadcast(origin, &len_dims)?;
        let mut positions = imp.add(Op::Iota { axis: 0 }, &[zeros])?;
        if step != 1 {
            let scale =
                imp.constant(tessera_ir::tensor::Tensor::from_i64(tessera_ir::dtype::DType::I64, vec![], vec![step]));
            positions = imp.binary(tessera_ir::ops::elementwise::BinaryOp::Mul, positions, scale)?;
        }
        if start != zero {
            let offset = imp.dim_values(std::slice::from_ref(&start), true)?;
            positions = imp.binary(tessera_ir::ops::elementwise::BinaryOp::Add, positions, offset)?;
        }
        x = imp.add(Op::Gather { axis: a as i64 }, &[x, positions])?;
    }
    Ok(x)
}

/// Tiling repeats the input along each axis: `[.., d, ..]` viewed as `[.., 1, d, ..]`, broadcast
/// to `[.., r, d, ..]` and merged to `[.., r * d, ..]`, so nothing is materialized.
fn tile(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let mut x = imp.value(cx, 0)?;
    // Constant repeats, or a shape value (DeBERTa-v2 tiles its relative positions by
    // `[batch, 1, 1]`), each repeat a dimension expression.
    let repeats =
        imp.shape_input(cx, 1, "repeats")?.ok_or_else(|| BuildError::Invalid("missing input 'repeats'".into()))?;
    let rank = imp.ty(x).rank();
    if repeats.len() != rank || repeats.iter().any(|r| r.as_const().is_some_and(|r| r < 0)) {
        return invalid(format!("repeats {} for rank {rank}", crate::onnx::import::show_sym(&repeats)));
    }
    let symbolic = |e: tessera_ir::symbolic::SymbolicError| BuildError::Invalid(e.to_string());
    for (axis, r) in repeats.iter().enumerate() {
        if r.as_const() == Some(1) {
            continue;
        }
        // A shape value entry is a size, so at least 0; a symbolic repeat is a dimension.
        let repeat = Dim::from_expr(r.clone()).map_err(symbolic)?;
        let dims = imp.ty(x).dims;
        let mut split = dims.clone();
        split.insert(axis, Dim::Static(1));
        let viewed = imp.reshape(x, split.clone())?;
        split[axis] = repeat;
        let spread = imp.broadcast(viewed, &split)?;
        let mut merged = dims;
        let total = match (merged[axis].as_static(), r.as_const()) {
            (Some(d), Some(r)) => {
                Dim::Static(d.checked_mul(r as u64).ok_or_else(|| BuildError::Invalid("tile too large".into()))?)
            }
            _ => {
                Dim::from_expr(merged[axis].to_expr().map_err(symbolic)?.mul(r).map_err(symbolic)?).map_err(symbolic)?
            }
        };
        merged[axis] = total;
        x = imp.reshape(spread, merged)?;
    }
    one(x)
}

/// Constant padding: `pads` is ONNX's `[begin_0, ..., begin_n, end_0, ..., end_n]`; negative
/// pads crop.
pub(crate) fn pad_constant(imp: &mut Importer, x: ValueId, pads: &[i64], value: f64) -> BuildResult<ValueId> {
    pad_with(imp, x, pads, |imp, x, axis, before, width| {
        let mut dims = imp.ty(x).dims;
        dims[axis] = Dim::Static(width as u64);
        let _ = before;
        let s = imp.scalar(imp.ty(x).dtype, value);
        imp.broadcast(s, &dims)
    })
}

/// Constant padding by amounts that are size expressions (ONNX's pads layout, as in
/// [`pad_constant`]). Each amount must be at least 0 for every size, as the expression shows
/// (a `mod` is): a pad that may crop is refused, since the crop's extent would depend on the sign.
/// An amount that is 0 at some size attaches an empty block there.
fn pad_constant_symbolic(imp: &mut Importer, x: ValueId, pads: &[SymInt], value: f64) -> BuildResult<ValueId> {
    let rank = imp.ty(x).rank();
    let symbolic = |e: tessera_ir::symbolic::SymbolicError| BuildError::Invalid(e.to_string());
    let mut x = x;
    for axis in 0..rank {
        let mut parts = Vec::with_capacity(3);
        for (before, amount) in [(true, &pads[axis]), (false, &pads[rank + axis])] {
            if amount.as_const() == Some(0) {
                continue;
            }
            if amount.lower_bound().is_none_or(|least| least < 0) {
                return unsupported(format!(
                    "a pad of {} on axis {axis} that may be negative (a crop by a size known only at run time)",
                    amount
                ));
            }
            let mut dims = imp.ty(x).dims;
            dims[axis] = Dim::from_expr(amount.clone()).map_err(symbolic)?;
            let s = imp.scalar(imp.ty(x).dtype, value);
            parts.push((before, imp.broadcast(s, &dims)?));
        }
        if parts.is_empty() {
            continue;
        }
        let mut joined: Vec<ValueId> = parts.iter().filter(|(before, _)| *before).map(|&(_, b)| b).collect();
        joined.push(x);
        joined.extend(parts.iter().filter(|(before, _)| !*before).map(|&(_, b)| b));
        x = imp.add(Op::Concat { axis: axis as i64 }, &joined)?;
    }
    Ok(x)
}

/// Pads `x` axis by axis; `block(imp, x, axis, before, width)` makes the piece to attach.
fn pad_with(
    imp: &mut Importer,
    x: ValueId,
    pads: &[i64],
    block: impl Fn(&mut Importer, ValueId, usize, bool, i64) -> BuildResult<ValueId>,
) -> BuildResult<ValueId> {
    let rank = imp.ty(x).rank();
    if pads.len() != 2 * rank {
        return invalid(format!("{} pads for rank {rank}", pads.len()));
    }
    let mut x = x;
    for axis in 0..rank {
        let (b, e) = (pads[axis], pads[rank + axis]);
        if b == 0 && e == 0 {
            continue;
        }
        // Crop first (negative pads), then attach the padding blocks. A symbolic extent is
        // cropped by counting the end from the back (tsr's slice rule keeps it an expression).
        let extent = imp.ty(x).dims[axis].as_static();
        if (b < 0 || e < 0) && extent.is_none() {
            let end = if e < 0 { e } else { i64::MAX };
            x = slice_axis(imp, x, axis, (-b).max(0), end, 1)?;
        }
        if let (true, Some(n)) = (b < 0 || e < 0, extent) {
            let n = n as i64;
            let start = (-b).max(0);
            let end = n - (-e).max(0);
            if end < start {
                return invalid(format!("pads {b}, {e} crop more than the {n} elements of axis {axis}"));
            }
            x = slice_axis(imp, x, axis, start, end, 1)?;
        }
        let mut parts = Vec::with_capacity(3);
        if b > 0 {
            parts.push(block(imp, x, axis, true, b)?);
        }
        parts.push(x);
        if e > 0 {
            parts.push(block(imp, x, axis, false, e)?);
        }
        if parts.len() > 1 {
            x = imp.add(Op::Concat { axis: axis as i64 }, &parts)?;
        }
    }
    Ok(x)
}

fn pad(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = imp.value(cx, 0)?;
    let rank = imp.ty(x).rank();
    let mode = cx.attrs.string("mode", "constant")?;
    let given = imp.shape_input(cx, 1, "pads")?.ok_or_else(|| BuildError::Invalid("missing input 'pads'".into()))?;
    let value = match imp.const_input(cx, 2, "constant_value")? {
        Some(t) if t.len() == 1 => t.get_f64(0),
        Some(_) => return invalid("constant_value must be a scalar"),
        None => 0.0,
    };
    let axes = match imp.const_ints(cx, 3, "axes")? {
        Some(a) => a.iter().map(|&a| axis_of(a, rank)).collect::<BuildResult<Vec<usize>>>()?,
        None => (0..rank).collect(),
    };
    if given.len() != 2 * axes.len() {
        return invalid(format!("{} pads for {} axes", given.len(), axes.len()));
    }
    let mut symbolic_pads = vec![SymInt::constant(0); 2 * rank];
    for (i, &a) in axes.iter().enumerate() {
        symbolic_pads[a] = given[i].clone();
        symbolic_pads[rank + a] = given[axes.len() + i].clone();
    }
    let Some(pads) = symbolic_pads.iter().map(SymInt::as_const).collect::<Option<Vec<i64>>>() else {
        // Pads computed from the input's sizes (Swin pads each feature map to whole windows by
        // `(window - width % window) % window`).
        if mode != "constant" {
            return unsupported(format!(
                "{mode} padding by sizes known only at run time ({})",
                crate::onnx::import::show_sym(&symbolic_pads)
            ));
        }
        return one(pad_constant_symbolic(imp, x, &symbolic_pads, value)?);
    };
    let y = match mode.as_str() {
        "constant" => pad_constant(imp, x, &pads, value)?,
        "edge" => pad_with(imp, x, &pads, |imp, x, axis, before, width| {
            let edge =
                if before { slice_axis(imp, x, axis, 0, 1, 1)? } else { slice_axis(imp, x, axis, -1, i64::MAX, 1)? };
            let mut dims = imp.ty(x).dims;
            dims[axis] = Dim::Static(width as u64);
            imp.broadcast(edge, &dims)
        })?,
        "reflect" => pad_with(imp, x, &pads, |imp, x, axis, before, width| {
            let Some(n) = imp.ty(x).dims[axis].as_static() else {
                // A symbolic extent: the mirrored elements are x[width], ..., x[1] before and
                // x[n-2], ..., x[n-1-width] after, gathered by constant indices (the second
                // counted from the end), so the block's extent is `width` whatever n is. ONNX
                // requires n > width; a smaller bound size is the gather's out-of-range error.
                let indices: Vec<i64> =
                    if before { (1..=width).rev().collect() } else { (0..width).map(|k| -2 - k).collect() };
                let indices = imp.constant(Tensor::from_i64(DType::I64, vec![indices.len()], indices));
                return imp.add(Op::Gather { axis: axis as i64 }, &[x, indices]);
            };
            let n = n as i64;
            if width >= n {
                return invalid(format!("reflect padding of {width} needs more than {n} elements"));
            }
            if before {
                slice_axis(imp, x, axis, width, 0, -1)
            } else {
                slice_axis(imp, x, axis, n - 2, n - 2 - width, -1)
            }
        })?,
        "wrap" => pad_with(imp, x, &pads, |imp, x, axis, before, width| {
            let n = imp.ty(x).dims[axis].as_static().unwrap_or(0) as i64;
            if width > n {
                return unsupported(format!("wrap padding of {width} over {n} elements"));
            }
            if before {
                slice_axis(imp, x, axis, n - width, n, 1)
            } else {
                slice_axis(imp, x, axis, 0, width, 1)
            }
        })?,
        other => return invalid(format!("unknown mode '{other}'")),
    };
    one(y)
}

/// Crops (centered, extra element at the end) or zero-pads (centered, extra at the end) each
/// of `axes` to the target extent.
fn center_crop_pad(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = imp.value(cx, 0)?;
    let target = imp.const_ints(cx, 1, "shape")?.ok_or_else(|| BuildError::Invalid("missing input 'shape'".into()))?;
    let rank = imp.ty(x).rank();
    let axes = match cx.attrs.opt_ints("axes")? {
        Some(a) => a.iter().map(|&a| axis_of(a, rank)).collect::<BuildResult<Vec<usize>>>()?,
        None => (0..rank).collect(),
    };
    if axes.len() != target.len() {
        return invalid(format!("{} target extents for {} axes", target.len(), axes.len()));
    }
    let mut pads = vec![0i64; 2 * rank];
    for (&a, &t) in axes.iter().zip(&target) {
        let n = imp.ty(x).dims[a]
            .as_static()
            .ok_or_else(|| BuildError::Unsupported("cropping a symbolic dimension".into()))? as i64;
        if t < 0 {
            return invalid(format!("target extent {t}"));
        }
        // Cropping is a negative pad: the begin side takes the smaller half either way.
        let (lo, hi) =
            if t < n { (-((n - t) / 2), -(n - t - (n - t) / 2)) } else { ((t - n) / 2, t - n - (t - n) / 2) };
        pads[a] = lo;
        pads[rank + a] = hi;
    }
    one(pad_constant(imp, x, &pads, 0.0)?)
}
