//! Shape and data-movement ops: `Constant`, `Shape`, `Size`, `Reshape`, `Flatten`,
//! `Unsqueeze`, `Squeeze`, `Transpose`, `Concat`, `Split`, `Slice`, `Gather`, `Expand`,
//! `ConstantOfShape`, `Range`, `Tile`, `Pad`, `Trilu`, `DepthToSpace`, `SpaceToDepth`,
//! `ScatterElements`, `OneHot`, `EyeLike`.
//!
//! Shape arithmetic on static shapes folds to constants. On symbolic shapes, `Shape`, `Gather`,
//! `Unsqueeze`, `Squeeze`, `Concat`, `Slice` and `Cast` produce import-time shape values
//! ([`Slot::Shape`]) that `Reshape`, `Expand` and `ConstantOfShape` accept as targets.

use super::{axis_of, generated_len, invalid, one, unsupported, BuildError, BuildResult, Registry};
use crate::onnx::import::{show_sym, Importer, NodeCx, Slot, SymInt};
use tessera_ir::dtype::DType;
use tessera_ir::graph::ValueId;
use tessera_ir::ops::elementwise::{BinaryOp, CompareOp};
use tessera_ir::ops::indexing::ScatterReduction;
use tessera_ir::ops::layout::slice_extent;
use tessera_ir::ops::{broadcast_dims, Op};
use tessera_ir::tensor::Tensor;
use tessera_ir::types::{Dim, TensorType};

pub(super) fn register(r: &mut Registry) {
    r.insert("Constant", constant);
    r.insert("Shape", shape);
    r.insert("Size", size);
    r.insert("Reshape", reshape);
    r.insert("Flatten", flatten);
    r.insert("Unsqueeze", unsqueeze);
    r.insert("Squeeze", squeeze);
    r.insert("Transpose", transpose);
    r.insert("Concat", concat);
    r.insert("Split", split);
    r.insert("Slice", slice);
    r.insert("Gather", gather);
    r.insert("Expand", expand);
    r.insert("ConstantOfShape", constant_of_shape);
    r.insert("Range", range);
    r.insert("Tile", tile);
    r.insert("Pad", pad);
    r.insert("Trilu", trilu);
    r.insert("DepthToSpace", depth_to_space);
    r.insert("SpaceToDepth", space_to_depth);
    r.insert("ScatterElements", scatter_elements);
    r.insert("GatherElements", gather_elements);
    r.insert("CenterCropPad", center_crop_pad);
    r.insert("CumSum", cum_sum);
    r.insert("OneHot", one_hot);
    r.insert("EyeLike", eye_like);
}

/// The largest dimension a shape input may name.
fn tessera_ir_max_dim() -> i64 {
    crate::onnx::tensor::MAX_DIM
}

fn static_dims(ty: &TensorType, what: &str) -> BuildResult<Vec<u64>> {
    ty.static_shape().ok_or_else(|| BuildError::Unsupported(format!("{what} with symbolic dimensions ({ty})")))
}

fn dims_of(elems: &[SymInt]) -> BuildResult<Vec<Dim>> {
    elems
        .iter()
        .map(|e| match e {
            SymInt::Int(n) if (0..=tessera_ir_max_dim()).contains(n) => Ok(Dim::Static(*n as u64)),
            SymInt::Int(n) => invalid(format!("invalid dimension {n} in shape {}", show_sym(elems))),
            SymInt::Sym(s) => Ok(Dim::Symbolic(s.clone())),
        })
        .collect()
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
                vec![SymInt::Int(elems.len() as i64)]
            }
        }
        _ => {
            let x = imp.value(cx, 0)?;
            imp.ty(x)
                .dims
                .iter()
                .map(|d| match d {
                    Dim::Static(n) => SymInt::Int(*n as i64),
                    Dim::Symbolic(s) => SymInt::Sym(s.clone()),
                })
                .collect()
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

/// Element count of `dims` as (product of static dims, sorted symbol names); the product
/// saturates, which only an absurd shape reaches and the shape rule then rejects.
fn count_of(dims: &[Dim]) -> (u64, Vec<String>) {
    let mut syms: Vec<String> = dims
        .iter()
        .filter_map(|d| match d {
            Dim::Symbolic(s) => Some(s.clone()),
            Dim::Static(_) => None,
        })
        .collect();
    syms.sort();
    (dims.iter().filter_map(Dim::as_static).fold(1u64, u64::saturating_mul), syms)
}

/// The ONNX Reshape target: `0` copies the input dimension (unless `allowzero`), one `-1` is
/// inferred from the element count, symbolically when the input has symbolic dimensions.
fn reshape_target(input: &[Dim], shape: &[SymInt], allowzero: bool) -> BuildResult<Vec<Dim>> {
    let mut dims: Vec<Option<Dim>> = Vec::with_capacity(shape.len());
    for (i, e) in shape.iter().enumerate() {
        dims.push(match e {
            SymInt::Int(0) if !allowzero => match input.get(i) {
                Some(d) => Some(d.clone()),
                None => return invalid(format!("shape entry {i} is 0 but the input has rank {}", input.len())),
            },
            SymInt::Int(-1) => None,
            SymInt::Int(n) if (0..=tessera_ir_max_dim()).contains(n) => Some(Dim::Static(*n as u64)),
            SymInt::Int(n) => return invalid(format!("invalid shape entry {n}")),
            SymInt::Sym(s) => Some(Dim::Symbolic(s.clone())),
        });
    }
    let holes = dims.iter().filter(|d| d.is_none()).count();
    if holes > 1 {
        return invalid(format!("shape {} has more than one -1", show_sym(shape)));
    }
    if holes == 1 {
        let known: Vec<Dim> = dims.iter().flatten().cloned().collect();
        let (p_in, mut s_in) = count_of(input);
        let (p_out, s_out) = count_of(&known);
        for s in &s_out {
            match s_in.iter().position(|x| x == s) {
                Some(i) => {
                    s_in.remove(i);
                }
                None => return unsupported(format!("cannot infer -1 in {} from {:?}", show_sym(shape), input)),
            }
        }
        let fill = match s_in.as_slice() {
            [] if p_out != 0 && p_in % p_out == 0 => Dim::Static(p_in / p_out),
            [s] if p_out != 0 && p_in == p_out => Dim::Symbolic(s.clone()),
            _ => {
                let shown: Vec<String> = input.iter().map(Dim::to_string).collect();
                return invalid(format!("cannot reshape [{}] to {}", shown.join(", "), show_sym(shape)));
            }
        };
        return Ok(dims.into_iter().map(|d| d.unwrap_or_else(|| fill.clone())).collect());
    }
    Ok(dims.into_iter().flatten().collect())
}

fn reshape(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let allowzero = cx.attrs.int("allowzero", 0)? != 0;
    let target = imp.shape_input(cx, 1, "shape")?.ok_or_else(|| BuildError::Invalid("missing input 'shape'".into()))?;
    if let Some(Slot::Shape { elems, scalar }) = imp.slot(cx, 0)? {
        // Reshaping a shape value: only between a scalar and a one-element vector, or 1-D to 1-D.
        let input = if scalar { vec![] } else { vec![Dim::Static(elems.len() as u64)] };
        let dims = reshape_target(&input, &target, allowzero)?;
        return match dims.as_slice() {
            [] if elems.len() == 1 => Ok(vec![Slot::Shape { elems, scalar: true }]),
            [Dim::Static(n)] if *n as usize == elems.len() => Ok(vec![Slot::Shape { elems, scalar: false }]),
            _ => unsupported(format!("reshaping the symbolic shape {} to higher rank", show_sym(&elems))),
        };
    }
    let x = imp.value(cx, 0)?;
    let dims = reshape_target(&imp.ty(x).dims, &target, allowzero)?;
    one(imp.reshape(x, dims)?)
}

/// One dimension for the product of `dims`: static, or a lone symbol times 1.
fn product_dim(dims: &[Dim]) -> BuildResult<Dim> {
    match count_of(dims) {
        (p, syms) if syms.is_empty() => Ok(Dim::Static(p)),
        (1, syms) if syms.len() == 1 => Ok(Dim::Symbolic(syms[0].clone())),
        _ => {
            let shown: Vec<String> = dims.iter().map(Dim::to_string).collect();
            unsupported(format!("flattening [{}] (a product of symbolic dimensions)", shown.join(", ")))
        }
    }
}

fn flatten(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = imp.value(cx, 0)?;
    let dims = imp.ty(x).dims;
    let axis = cx.attrs.int("axis", 1)?;
    let axis = if axis == dims.len() as i64 { dims.len() } else { axis_of(axis, dims.len())? };
    let target = vec![product_dim(&dims[..axis])?, product_dim(&dims[axis..])?];
    one(imp.reshape(x, target)?)
}

/// Squeeze/Unsqueeze axes: an attribute before opset 13, a constant input from then on.
fn axes_input(imp: &Importer, cx: &NodeCx) -> BuildResult<Option<Vec<i64>>> {
    if cx.opset < 13 {
        return Ok(cx.attrs.opt_ints("axes")?);
    }
    imp.const_ints(cx, 1, "axes")
}

fn unsqueeze(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let axes = axes_input(imp, cx)?.ok_or_else(|| BuildError::Invalid("missing input 'axes'".into()))?;
    if let Some(Slot::Shape { elems, scalar: true }) = imp.slot(cx, 0)? {
        if axes == [0] || axes == [-1] {
            return Ok(vec![Slot::Shape { elems, scalar: false }]);
        }
    }
    let x = imp.value(cx, 0)?;
    let dims = imp.ty(x).dims;
    let out_rank = dims.len() + axes.len();
    let mut normalized = Vec::with_capacity(axes.len());
    for &a in &axes {
        let a = axis_of(a, out_rank)?;
        if normalized.contains(&a) {
            return invalid(format!("axis {a} is repeated"));
        }
        normalized.push(a);
    }
    let mut rest = dims.into_iter();
    let target: Vec<Dim> = (0..out_rank)
        .map(|i| if normalized.contains(&i) { Dim::Static(1) } else { rest.next().unwrap_or(Dim::Static(1)) })
        .collect();
    one(imp.reshape(x, target)?)
}

fn squeeze(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let axes = axes_input(imp, cx)?;
    if let Some(Slot::Shape { elems, scalar: false }) = imp.slot(cx, 0)? {
        if elems.len() == 1 && axes.as_deref().is_none_or(|a| a == [0] || a == [-1]) {
            return Ok(vec![Slot::Shape { elems, scalar: true }]);
        }
    }
    let x = imp.value(cx, 0)?;
    let ty = imp.ty(x);
    let remove: Vec<usize> = match axes {
        Some(axes) => {
            let mut v = Vec::with_capacity(axes.len());
            for a in axes {
                let a = axis_of(a, ty.rank())?;
                match &ty.dims[a] {
                    Dim::Static(1) => v.push(a),
                    Dim::Static(n) => return invalid(format!("cannot squeeze axis {a} of extent {n}")),
                    Dim::Symbolic(s) => return unsupported(format!("squeezing symbolic dimension '{s}'")),
                }
            }
            v
        }
        None => {
            if let Some(s) = ty.symbols().next() {
                return unsupported(format!("Squeeze without axes on symbolic dimension '{s}'"));
            }
            (0..ty.rank()).filter(|&i| ty.dims[i] == Dim::Static(1)).collect()
        }
    };
    let target = ty.dims.iter().enumerate().filter(|(i, _)| !remove.contains(i)).map(|(_, d)| d.clone()).collect();
    one(imp.reshape(x, target)?)
}

fn transpose(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = imp.value(cx, 0)?;
    let rank = imp.ty(x).rank() as i64;
    let perm = cx.attrs.opt_ints("perm")?.unwrap_or_else(|| (0..rank).rev().collect());
    if perm.iter().copied().eq(0..rank) {
        return one(x);
    }
    one(imp.add(Op::Transpose { perm }, &[x])?)
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
                        elems.extend(t.to_i64_vec().into_iter().map(SymInt::Int))
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
    axis_of(axis, rank)?;
    if vs.len() == 1 {
        return one(vs[0]);
    }
    one(imp.add(Op::Concat { axis }, &vs)?)
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
        imp.const_ints(cx, 1, "starts")?.ok_or_else(|| BuildError::Invalid("missing input 'starts'".into()))?;
    let ends = imp.const_ints(cx, 2, "ends")?.ok_or_else(|| BuildError::Invalid("missing input 'ends'".into()))?;
    let axes = imp.const_ints(cx, 3, "axes")?;
    let steps = imp.const_ints(cx, 4, "steps")?.unwrap_or_else(|| vec![1; starts.len()]);
    let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return invalid("starts, ends, axes and steps must have one length");
    }
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
    // tsr keeps a symbolic dimension only whole; exporters spell "whole" with a huge end.
    let dims = imp.ty(x).dims;
    for a in 0..rank {
        if let Dim::Symbolic(name) = &dims[a] {
            if s[a] == 0 && st[a] == 1 && e[a] >= WHOLE_SLICE_END {
                e[a] = i64::MAX;
            } else if seen[a] {
                return unsupported(format!("slicing part of symbolic dimension '{name}'"));
            }
        }
    }
    if !seen.iter().any(|&b| b) {
        return one(x);
    }
    one(imp.add(Op::Slice { starts: s, ends: e, steps: st }, &[x])?)
}

fn gather(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let axis = cx.attrs.int("axis", 0)?;
    if let Some(Slot::Shape { elems, scalar: false }) = imp.slot(cx, 0)? {
        let indices =
            imp.const_input(cx, 1, "indices")?.ok_or_else(|| BuildError::Invalid("missing input 'indices'".into()))?;
        if indices.shape.len() > 1 || axis_of(axis, 1)? != 0 {
            return unsupported("gathering a symbolic shape with multi-dimensional indices");
        }
        let n = elems.len() as i64;
        let mut picked = Vec::with_capacity(indices.len());
        for k in indices.to_i64_vec() {
            let i = if k < 0 { k + n } else { k };
            if !(0..n).contains(&i) {
                return invalid(format!("index {k} is out of range for a shape of {n} entries"));
            }
            picked.push(elems[i as usize].clone());
        }
        return Ok(vec![imp.shape_slot(picked, indices.shape.is_empty())]);
    }
    let (x, idx) = (imp.value(cx, 0)?, imp.value(cx, 1)?);
    axis_of(axis, imp.ty(x).rank())?;
    one(imp.add(Op::Gather { axis }, &[x, idx])?)
}

fn expand(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = imp.value(cx, 0)?;
    let target = imp.shape_input(cx, 1, "shape")?.ok_or_else(|| BuildError::Invalid("missing input 'shape'".into()))?;
    let target = dims_of(&target)?;
    let ty = imp.ty(x);
    let dims = broadcast_dims(&ty.dims, &target).ok_or_else(|| {
        let shown: Vec<String> = target.iter().map(Dim::to_string).collect();
        BuildError::Invalid(format!("{ty} does not broadcast to [{}]", shown.join(", ")))
    })?;
    one(imp.broadcast(x, &dims)?)
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

fn scalar_input(imp: &Importer, cx: &NodeCx, i: usize, what: &str) -> BuildResult<Tensor> {
    let t = imp.const_input(cx, i, what)?.ok_or_else(|| BuildError::Invalid(format!("missing input '{what}'")))?;
    if t.len() != 1 {
        return invalid(format!("input '{what}' must be a scalar"));
    }
    Ok(t)
}

fn range(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let start = scalar_input(imp, cx, 0, "start")?;
    let limit = scalar_input(imp, cx, 1, "limit")?;
    let delta = scalar_input(imp, cx, 2, "delta")?;
    let dtype = start.dtype;
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

/// Tiling repeats the input along each axis: `[.., d, ..]` viewed as `[.., 1, d, ..]`, broadcast
/// to `[.., r, d, ..]` and merged to `[.., r * d, ..]`, so nothing is materialized.
fn tile(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let mut x = imp.value(cx, 0)?;
    let repeats =
        imp.const_ints(cx, 1, "repeats")?.ok_or_else(|| BuildError::Invalid("missing input 'repeats'".into()))?;
    let rank = imp.ty(x).rank();
    if repeats.len() != rank || repeats.iter().any(|&r| r < 0) {
        return invalid(format!("repeats {repeats:?} for rank {rank}"));
    }
    for (axis, &r) in repeats.iter().enumerate() {
        if r == 1 {
            continue;
        }
        let dims = imp.ty(x).dims;
        let d =
            dims[axis].as_static().ok_or_else(|| BuildError::Unsupported(format!("tiling symbolic {}", dims[axis])))?;
        let mut split = dims.clone();
        split.insert(axis, Dim::Static(1));
        let viewed = imp.reshape(x, split.clone())?;
        split[axis] = Dim::Static(r as u64);
        let spread = imp.broadcast(viewed, &split)?;
        let mut merged = dims;
        merged[axis] =
            Dim::Static(d.checked_mul(r as u64).ok_or_else(|| BuildError::Invalid("tile too large".into()))?);
        x = imp.reshape(spread, merged)?;
    }
    one(x)
}

/// Slice `x` along `axis` as `[start:end:step]`.
fn slice_axis(imp: &mut Importer, x: ValueId, axis: usize, start: i64, end: i64, step: i64) -> BuildResult<ValueId> {
    let rank = imp.ty(x).rank();
    let (mut s, mut e, mut st) = (vec![0; rank], vec![i64::MAX; rank], vec![1; rank]);
    (s[axis], e[axis], st[axis]) = (start, end, step);
    imp.add(Op::Slice { starts: s, ends: e, steps: st }, &[x])
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
        let n = imp.ty(x).dims[axis]
            .as_static()
            .ok_or_else(|| BuildError::Unsupported(format!("padding symbolic dimension {}", imp.ty(x).dims[axis])))?
            as i64;
        // Crop first (negative pads), then attach the padding blocks.
        if b < 0 || e < 0 {
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
    let given = imp.const_ints(cx, 1, "pads")?.ok_or_else(|| BuildError::Invalid("missing input 'pads'".into()))?;
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
    let mut pads = vec![0; 2 * rank];
    for (i, &a) in axes.iter().enumerate() {
        pads[a] = given[i];
        pads[rank + a] = given[axes.len() + i];
    }
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
            let n = imp.ty(x).dims[axis].as_static().unwrap_or(0) as i64;
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

/// Keeps the upper (or lower) triangle from diagonal `k` and zeroes the rest, with a constant mask.
fn trilu(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = imp.value(cx, 0)?;
    let ty = imp.ty(x);
    if ty.rank() < 2 {
        return invalid(format!("input must have rank >= 2, got {ty}"));
    }
    let k = match imp.const_input(cx, 1, "k")? {
        Some(t) if t.len() == 1 => t.get_i64(0),
        Some(_) => return invalid("k must be a scalar"),
        None => 0,
    };
    let upper = cx.attrs.int("upper", 1)? != 0;
    let r = ty.rank();
    let (n, m) = match (ty.dims[r - 2].as_static(), ty.dims[r - 1].as_static()) {
        (Some(n), Some(m)) => (n as i64, m as i64),
        _ => return unsupported(format!("Trilu of symbolic matrix dimensions in {ty}")),
    };
    generated_len((n as u64).saturating_mul(m as u64), "Trilu's mask")?;
    let mask: Vec<i64> =
        (0..n).flat_map(|i| (0..m).map(move |j| if upper { j - i >= k } else { j - i <= k } as i64)).collect();
    let mask = imp.constant(Tensor::from_i64(DType::Bool, vec![n as usize, m as usize], mask));
    let zero = imp.scalar(ty.dtype, 0.0);
    one(imp.select(mask, x, zero)?)
}

fn nchw(imp: &Importer, x: ValueId) -> BuildResult<[u64; 4]> {
    let ty = imp.ty(x);
    let s = static_dims(&ty, "DepthToSpace/SpaceToDepth")?;
    match s.as_slice() {
        [n, c, h, w] => Ok([*n, *c, *h, *w]),
        _ => invalid(format!("input must be NCHW, got {ty}")),
    }
}

fn stat(v: &[u64]) -> Vec<Dim> {
    v.iter().map(|&n| Dim::Static(n)).collect()
}

fn depth_to_space(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = imp.value(cx, 0)?;
    let [n, c, h, w] = nchw(imp, x)?;
    let b = cx.attrs.req_int("blocksize")?;
    if b < 1 || c % (b * b) as u64 != 0 {
        return invalid(format!("blocksize {b} does not divide {c} channels"));
    }
    let b = b as u64;
    let (shape, perm) = match cx.attrs.string("mode", "DCR")?.as_str() {
        "DCR" => (vec![n, b, b, c / (b * b), h, w], vec![0, 3, 4, 1, 5, 2]),
        "CRD" => (vec![n, c / (b * b), b, b, h, w], vec![0, 1, 4, 2, 5, 3]),
        other => return invalid(format!("unknown mode '{other}'")),
    };
    let r = imp.reshape(x, stat(&shape))?;
    let t = imp.add(Op::Transpose { perm }, &[r])?;
    one(imp.reshape(t, stat(&[n, c / (b * b), h * b, w * b]))?)
}

fn space_to_depth(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = imp.value(cx, 0)?;
    let [n, c, h, w] = nchw(imp, x)?;
    let b = cx.attrs.req_int("blocksize")?;
    if b < 1 || h % b as u64 != 0 || w % b as u64 != 0 {
        return invalid(format!("blocksize {b} does not divide {h}x{w}"));
    }
    let b = b as u64;
    let r = imp.reshape(x, stat(&[n, c, h / b, b, w / b, b]))?;
    let t = imp.add(Op::Transpose { perm: vec![0, 3, 5, 1, 2, 4] }, &[r])?;
    one(imp.reshape(t, stat(&[n, c * b * b, h / b, w / b]))?)
}

fn scatter_elements(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let (data, idx, upd) = (imp.value(cx, 0)?, imp.value(cx, 1)?, imp.value(cx, 2)?);
    let axis = cx.attrs.int("axis", 0)?;
    let reduction = match cx.attrs.string("reduction", "none")?.as_str() {
        "none" => ScatterReduction::None,
        "add" => ScatterReduction::Add,
        other => return unsupported(format!("reduction = '{other}'")),
    };
    one(imp.add(Op::Scatter { axis, reduction }, &[data, idx, upd])?)
}

/// `where(indices (made non-negative) == iota, on, off)` along a new `axis`.
fn one_hot(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let indices = imp.value(cx, 0)?;
    let depth = scalar_input(imp, cx, 1, "depth")?.get_f64(0) as i64;
    let values = imp.value(cx, 2)?;
    let ity = imp.ty(indices);
    let vty = imp.ty(values);
    if vty.num_elements() != Some(2) || depth < 1 {
        return invalid("values must hold [off, on] and depth must be positive");
    }
    let out_rank = ity.rank() + 1;
    let axis = axis_of(cx.attrs.int("axis", -1)?, out_rank)?;
    let idx = imp.cast(indices, DType::I64)?;
    let zero = imp.scalar(DType::I64, 0.0);
    let neg = imp.compare(CompareOp::Lt, idx, zero)?;
    let wrapped = imp.binary_scalar(BinaryOp::Add, idx, depth as f64)?;
    let idx = imp.select(neg, wrapped, idx)?;
    let mut dims = ity.dims.clone();
    dims.insert(axis, Dim::Static(1));
    let idx = imp.reshape(idx, dims)?;
    let iota = super::iota(imp, out_rank, axis, depth as u64)?;
    let hit = imp.compare(CompareOp::Eq, idx, iota)?;
    let flat = imp.reshape(values, vec![Dim::Static(2)])?;
    let off = slice_axis(imp, flat, 0, 0, 1, 1)?;
    let on = slice_axis(imp, flat, 0, 1, 2, 1)?;
    let off = imp.reshape(off, vec![])?;
    let on = imp.reshape(on, vec![])?;
    one(imp.select(hit, on, off)?)
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

/// `out[p] = data[p with coordinate axis replaced by indices[p]]`, as a one-hot selection:
/// compare the indices with an iota along a new axis, select, and sum that axis away.
fn gather_elements(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let (data, indices) = (imp.value(cx, 0)?, imp.value(cx, 1)?);
    let (dty, ity) = (imp.ty(data), imp.ty(indices));
    if dty.rank() != ity.rank() || !ity.dtype.is_int() {
        return invalid(format!("data {dty} and integer indices {ity} must have one rank"));
    }
    let r = dty.rank();
    let axis = axis_of(cx.attrs.int("axis", 0)?, r)?;
    let n = dty.dims[axis]
        .as_static()
        .ok_or_else(|| BuildError::Unsupported(format!("gathering along symbolic {}", dty.dims[axis])))?;
    // Other axes: the indices may cover a leading part of the data.
    let mut data = data;
    for d in 0..r {
        if d != axis && dty.dims[d] != ity.dims[d] {
            let m =
                ity.dims[d].as_static().ok_or_else(|| BuildError::Unsupported("symbolic index dimensions".into()))?;
            data = slice_axis(imp, data, d, 0, m as i64, 1)?;
        }
    }
    let idx = imp.cast(indices, DType::I64)?;
    let zero_i = imp.scalar(DType::I64, 0.0);
    let neg = imp.compare(CompareOp::Lt, idx, zero_i)?;
    let wrapped = imp.binary_scalar(BinaryOp::Add, idx, n as f64)?;
    let idx = imp.select(neg, wrapped, idx)?;
    let mut idims = ity.dims.clone();
    idims.insert(axis + 1, Dim::Static(1));
    let idx = imp.reshape(idx, idims)?;
    let iota = super::iota(imp, r + 1, axis + 1, n)?;
    let hit = imp.compare(CompareOp::Eq, idx, iota)?;
    let mut ddims = imp.ty(data).dims;
    ddims.insert(axis, Dim::Static(1));
    let data = imp.reshape(data, ddims)?;
    // Sum in a numeric type: booleans go through i64.
    let work = if dty.dtype == DType::Bool { imp.cast(data, DType::I64)? } else { data };
    let zero = imp.scalar(imp.ty(work).dtype, 0.0);
    let selected = imp.select(hit, work, zero)?;
    let kind = tessera_ir::ops::reduce::ReduceKind::Sum;
    let y = imp.add(Op::Reduce { kind, axes: vec![axis as i64 + 1], keepdims: false }, &[selected])?;
    one(imp.cast(y, dty.dtype)?)
}

/// Cumulative sum along `axis` as a product with a triangular 0/1 matrix (the axis moved last).
fn cum_sum(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = imp.value(cx, 0)?;
    let axis = scalar_input(imp, cx, 1, "axis")?.get_i64(0);
    let exclusive = cx.attrs.int("exclusive", 0)? != 0;
    let reverse = cx.attrs.int("reverse", 0)? != 0;
    let ty = imp.ty(x);
    if ty.rank() == 0 || ty.dtype == DType::Bool {
        return invalid(format!("CumSum of {ty}"));
    }
    let r = ty.rank();
    let axis = axis_of(axis, r)?;
    let n = ty.dims[axis]
        .as_static()
        .ok_or_else(|| BuildError::Unsupported(format!("CumSum along symbolic {}", ty.dims[axis])))? as i64;
    generated_len((n as u64).saturating_mul(n as u64), "CumSum's triangular matrix")?;
    // y[j] = sum over i of x[i] * m[i][j].
    let m: Vec<i64> = (0..n)
        .flat_map(|i| {
            (0..n).map(move |j| match (reverse, exclusive) {
                (false, false) => i <= j,
                (false, true) => i < j,
                (true, false) => i >= j,
                (true, true) => i > j,
            } as i64)
        })
        .collect();
    let m = imp.constant(Tensor::from_i64(ty.dtype, vec![n as usize, n as usize], m));
    let mut perm: Vec<i64> = (0..r as i64).filter(|&d| d != axis as i64).collect();
    perm.push(axis as i64);
    let moved = if axis + 1 == r { x } else { imp.add(Op::Transpose { perm: perm.clone() }, &[x])? };
    let y = super::matmul::matmul_numpy(imp, moved, m)?;
    if axis + 1 == r {
        return one(y);
    }
    let mut inverse = vec![0i64; r];
    for (i, &p) in perm.iter().enumerate() {
        inverse[p as usize] = i as i64;
    }
    one(imp.add(Op::Transpose { perm: inverse }, &[y])?)
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
