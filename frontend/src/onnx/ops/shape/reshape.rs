//! Views that rearrange dimensions without moving data: `Reshape`, `Flatten`, `Unsqueeze`,
//! `Squeeze`, `Transpose`, `Expand`, `DepthToSpace`, `SpaceToDepth`.

use super::{dims_of, static_dims, tessera_ir_max_dim};
use crate::onnx::import::{show_sym, Importer, NodeCx, Slot, SymInt};
use crate::onnx::ops::{axis_of, invalid, one, unsupported, BuildError, BuildResult, Registry};
use tessera_ir::graph::ValueId;
use tessera_ir::ops::{broadcast_dims, Op};
use tessera_ir::symbolic::DimExpr;
use tessera_ir::types::{dims_product, Dim};

pub(super) fn register(r: &mut Registry) {
    r.insert("Reshape", reshape);
    r.insert("Flatten", flatten);
    r.insert("Unsqueeze", unsqueeze);
    r.insert("Squeeze", squeeze);
    r.insert("Transpose", transpose);
    r.insert("Expand", expand);
    r.insert("DepthToSpace", depth_to_space);
    r.insert("SpaceToDepth", space_to_depth);
}

/// Element count of `dims` as an expression.
fn count_of(dims: &[Dim]) -> BuildResult<DimExpr> {
    dims_product(dims).map_err(|e| BuildError::Invalid(e.to_string()))
}

/// The ONNX Reshape target: `0` copies the input dimension (unless `allowzero`), one `-1` is
/// inferred from the element count, symbolically when the input has symbolic dimensions.
fn reshape_target(input: &[Dim], shape: &[SymInt], allowzero: bool) -> BuildResult<Vec<Dim>> {
    let mut dims: Vec<Option<Dim>> = Vec::with_capacity(shape.len());
    for (i, e) in shape.iter().enumerate() {
        dims.push(match e.as_const() {
            Some(0) if !allowzero => match input.get(i) {
                Some(d) => Some(d.clone()),
                None => return invalid(format!("shape entry {i} is 0 but the input has rank {}", input.len())),
            },
            Some(-1) => None,
            Some(n) if (0..=tessera_ir_max_dim()).contains(&n) => Some(Dim::Static(n as u64)),
            Some(n) => return invalid(format!("invalid shape entry {n}")),
            None => Some(Dim::Symbolic(e.clone())),
        });
    }
    let holes = dims.iter().filter(|d| d.is_none()).count();
    if holes > 1 {
        return invalid(format!("shape {} has more than one -1", show_sym(shape)));
    }
    if holes == 1 {
        let known: Vec<Dim> = dims.iter().flatten().cloned().collect();
        let (count_in, count_known) = (count_of(input)?, count_of(&known)?);
        // The -1 is the quotient of the element counts, which must divide exactly.
        let fill = count_in.div_exact(&count_known).and_then(|q| Dim::from_expr(q).ok());
        let Some(fill) = fill else {
            let shown: Vec<String> = input.iter().map(Dim::to_string).collect();
            let reason = if count_known.as_const().is_none() && count_in.as_const().is_none() {
                format!(" ({count_in} is not a multiple of {count_known} as a polynomial)")
            } else {
                String::new()
            };
            return invalid(format!("cannot reshape [{}] to {}{reason}", shown.join(", "), show_sym(shape)));
        };
        return Ok(dims.into_iter().map(|d| d.unwrap_or_else(|| fill.clone())).collect());
    }
    Ok(dims.into_iter().flatten().collect())
}

fn reshape(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let allowzero = cx.attrs.int("allowzero", 0)? != 0;
    let target = imp.shape_input(cx, 1, "shape")?.ok_or_else(|| BuildError::Invalid("missing input 'shape'".into()))?;
    if let Some(Slot::Shape { elems, scalar }) = imp.slot(cx, 0)? {
        // Reshaping a shape value between a scalar and a one-element vector, or 1-D to 1-D, keeps
        // it a shape value. To higher rank (torch's `F.pad` makes (begin, end) rows of its pads)
        // it becomes a run-time tensor whose entries stay known to the layout ops that follow
        // ([`Importer::size_elements`]).
        let input = if scalar { vec![] } else { vec![Dim::Static(elems.len() as u64)] };
        let dims = reshape_target(&input, &target, allowzero)?;
        return match dims.as_slice() {
            [] if elems.len() == 1 => Ok(vec![Slot::Shape { elems, scalar: true }]),
            [Dim::Static(n)] if *n as usize == elems.len() => Ok(vec![Slot::Shape { elems, scalar: false }]),
            _ => {
                let x = imp.dim_values(&elems, scalar)?;
                one(imp.reshape(x, dims)?)
            }
        };
    }
    let x = imp.value(cx, 0)?;
    let dims = reshape_target(&imp.ty(x).dims, &target, allowzero)?;
    let x = drop_assumed_unit_factor(imp, x, &dims)?;
    one(imp.reshape(x, dims)?)
}

/// Where `x` has `q` times the elements of `target` for a size `q` that is 1 for some sizes of
/// the symbols only (PP-OCRv4's recognizer flattens `[b, c, floordiv(h + 15, 48), w']` and
/// reshapes it to `[b, 1, w', c]`): under the assumption `q = 1` ([`BuildError::AssumesSize`]),
/// the factor is split off an axis it divides and its one element taken, which leaves the
/// element count of `target`; without it, the request for that assumption. Otherwise `x`.
fn drop_assumed_unit_factor(imp: &mut Importer, x: ValueId, target: &[Dim]) -> BuildResult<ValueId> {
    let dims = imp.ty(x).dims;
    let (count_in, count_out) = (count_of(&dims)?, count_of(target)?);
    if count_in == count_out {
        return Ok(x);
    }
    let Some(factor) = count_in.div_exact(&count_out) else { return Ok(x) };
    // Only a factor that is not always 1 and may be 1 (0, which no run allows, fails the check).
    if factor.as_const().is_some() || factor.lower_bound().is_none_or(|least| least > 1) {
        return Ok(x);
    }
    if !imp.assumed_equal(&factor, 1) {
        let shown: Vec<String> = dims.iter().map(Dim::to_string).collect();
        let target: Vec<String> = target.iter().map(Dim::to_string).collect();
        return Err(BuildError::AssumesSize {
            refusal: format!(
                "cannot reshape [{}] to [{}]: the element counts are equal only where {factor} = 1",
                shown.join(", "),
                target.join(", ")
            ),
            size: factor,
            relation: crate::onnx::ops::SizeRelation::Equal,
            value: 1,
        });
    }
    let divided = dims.iter().enumerate().find_map(|(axis, d)| match d {
        Dim::Symbolic(e) => e.div_exact(&factor).and_then(|rest| Dim::from_expr(rest).ok()).map(|rest| (axis, rest)),
        Dim::Static(_) => None,
    });
    let Some((axis, rest)) = divided else {
        return invalid(format!("the factor {factor} of the element count divides no one dimension"));
    };
    let mut split = dims.clone();
    split.splice(axis..=axis, [Dim::Symbolic(factor), rest]);
    let x = imp.reshape(x, split)?;
    take_first(imp, x, axis)
}

/// The first element along `axis`, kept as an axis of static extent 1.
pub(crate) fn take_first(imp: &mut Importer, x: ValueId, axis: usize) -> BuildResult<ValueId> {
    let first = imp.constant(tessera_ir::tensor::Tensor::from_i64(tessera_ir::dtype::DType::I64, vec![1], vec![0]));
    imp.add(Op::Gather { axis: axis as i64 }, &[x, first])
}

/// One dimension for the product of `dims`.
fn product_dim(dims: &[Dim]) -> BuildResult<Dim> {
    Dim::from_expr(count_of(dims)?).map_err(|e| BuildError::Invalid(e.to_string()))
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
    let mut x = imp.value(cx, 0)?;
    let ty = imp.ty(x);
    let remove: Vec<usize> = match axes {
        Some(axes) => {
            let mut v = Vec::with_capacity(axes.len());
            for a in axes {
                let a = axis_of(a, ty.rank())?;
                match &ty.dims[a] {
                    Dim::Static(1) => v.push(a),
                    Dim::Static(n) => return invalid(format!("cannot squeeze axis {a} of extent {n}")),
                    // Where the sizes are known to make it 1 (the branch of TorchScript's
                    // `If(Equal(dim, 1))` that squeezes), its one element is taken, which
                    // gives the axis the static extent 1 for every size.
                    Dim::Symbolic(e) if imp.assumed_equal(e, 1) => {
                        x = take_first(imp, x, a)?;
                        v.push(a)
                    }
                    // ONNX requires the axis to have extent 1; the interpreter checks it at run time.
                    Dim::Symbolic(_) => v.push(a),
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
    let ty = imp.ty(x);
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
    // Opset 28 added `mode` (before, only DCR existed): DCR orders the new channels
    // (block row, block column, channel), CRD (channel, block row, block column).
    let perm = match cx.attrs.string("mode", "DCR")?.as_str() {
        "DCR" => vec![0, 3, 5, 1, 2, 4],
        "CRD" => vec![0, 1, 3, 5, 2, 4],
        other => return invalid(format!("mode '{other}' is neither DCR nor CRD")),
    };
    let r = imp.reshape(x, stat(&[n, c, h / b, b, w / b, b]))?;
    let t = imp.add(Op::Transpose { perm }, &[r])?;
    one(imp.reshape(t, stat(&[n, c * b * b, h / b, w / b]))?)
}
