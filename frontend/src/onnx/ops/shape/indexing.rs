//! Index-driven data movement: `Gather`, `GatherElements`, `ScatterElements`, `OneHot`,
//! `Trilu`, `CumSum`, `CumProd`, `Compress`, `ReverseSequence`, `GatherND`, `ScatterND`,
//! `Unique`.

use super::{scalar_input, slice_axis};
use crate::onnx::import::{Importer, NodeCx, Slot, SymInt};
use crate::onnx::ops::{axis_of, generated_len, invalid, one, unsupported, BuildError, BuildResult, Registry};
use tessera_ir::dtype::DType;
use tessera_ir::graph::ValueId;
use tessera_ir::ops::elementwise::{BinaryOp, CompareOp};
use tessera_ir::ops::indexing::ScatterReduction;
use tessera_ir::ops::reduce::ReduceKind;
use tessera_ir::ops::Op;
use tessera_ir::tensor::Tensor;
use tessera_ir::types::{Dim, TensorType};

pub(super) fn register(r: &mut Registry) {
    r.insert("Gather", gather);
    r.insert("Trilu", trilu);
    r.insert("ScatterElements", scatter_elements);
    r.insert("GatherElements", gather_elements);
    r.insert("CumSum", cum_sum);
    r.insert("CumProd", cum_prod);
    r.insert("OneHot", one_hot);
    r.insert("Compress", compress);
    r.insert("ReverseSequence", reverse_sequence);
    r.insert("GatherND", gather_nd);
    r.insert("ScatterND", scatter_nd);
    r.insert("Unique", unique);
}

/// The static dims of `v`, or unsupported naming `what`.
fn static_shape(imp: &Importer, v: ValueId, what: &str) -> BuildResult<Vec<u64>> {
    let ty = imp.ty(v);
    ty.dims.iter().map(|d| d.as_static().ok_or_else(|| BuildError::Unsupported(format!("{what} of {ty}")))).collect()
}

/// For `GatherND`/`ScatterND` with constant `indices` (last axis `k` long) over `data` whose
/// first `batch_dims` axes are shared with the indices: the flat row, in `data` reshaped to
/// `[prod(dims[..batch_dims + k]), rest...]`, that each index tuple addresses (negative entries
/// count from the end; out-of-range ones are errors).
fn nd_rows(data: &[u64], indices: &Tensor, batch_dims: usize, what: &str) -> BuildResult<Vec<i64>> {
    let Some(&k) = indices.shape.last() else { return invalid(format!("{what}: indices must have rank >= 1")) };
    let q = indices.shape.len();
    if batch_dims >= q || batch_dims + k > data.len() {
        return invalid(format!(
            "{what}: {k} index components and {batch_dims} batch dims do not fit data of rank {}",
            data.len()
        ));
    }
    if indices.shape[..batch_dims].iter().zip(data).any(|(&i, &d)| i as u64 != d) {
        return invalid(format!("{what}: the batch dims of indices {:?} and data {data:?} differ", indices.shape));
    }
    let addressed = &data[batch_dims..batch_dims + k];
    let per_batch: i64 = addressed.iter().product::<u64>() as i64;
    let values = indices.to_i64_vec();
    let tuples_per_batch: usize = indices.shape[batch_dims..q - 1].iter().product();
    let n_tuples: usize = indices.shape[..q - 1].iter().product();
    let mut rows = Vec::with_capacity(n_tuples);
    for t in 0..n_tuples {
        let tuple = &values[t * k..(t + 1) * k];
        let batch = (t / tuples_per_batch.max(1)) as i64;
        let mut row = 0i64;
        for (j, &i) in tuple.iter().enumerate() {
            let n = addressed[j] as i64;
            let i = if i < 0 { i + n } else { i };
            if !(0..n).contains(&i) {
                return invalid(format!("{what}: index {i} is out of range for a dimension of {n}"));
            }
            row = row * n + i;
        }
        rows.push(batch * per_batch + row);
    }
    Ok(rows)
}

/// `GatherND` with indices known at import time: a `Gather` of the addressed rows of `data`
/// flattened to `[rows, rest...]`; the result has shape `indices.shape[..-1] + rest`.
fn gather_nd(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let data = imp.value(cx, 0)?;
    let batch_dims = cx.attrs.int("batch_dims", 0)?;
    let indices = match imp.const_input(cx, 1, "indices") {
        Ok(indices) => indices.ok_or_else(|| BuildError::Invalid("missing input 'indices'".into()))?,
        Err(BuildError::NotConstant { .. }) if batch_dims == 0 => {
            let indices = imp.value(cx, 1)?;
            return one(gather_nd_at_run_time(imp, data, indices)?);
        }
        Err(e) => return Err(e),
    };
    let shape = static_shape(imp, data, "GatherND")?;
    let batch_dims =
        usize::try_from(batch_dims).map_err(|_| BuildError::Invalid(format!("batch_dims {batch_dims} is negative")))?;
    let rows = nd_rows(&shape, &indices, batch_dims, "GatherND")?;
    let k = indices.shape.last().copied().unwrap_or(0);
    let lead: u64 = shape[..batch_dims + k].iter().product();
    let rest = &shape[batch_dims + k..];
    let mut flat = vec![Dim::Static(lead)];
    flat.extend(rest.iter().map(|&d| Dim::Static(d)));
    let flat_data = imp.reshape(data, flat)?;
    let q = indices.shape.len();
    let index_shape = indices.shape[..q - 1].to_vec();
    let idx = imp.constant(Tensor::from_i64(DType::I64, index_shape, rows));
    one(imp.add(Op::Gather { axis: 0 }, &[flat_data, idx])?)
}

/// `GatherND` (no batch dims) with indices computed at run time, as exporters emit for advanced
/// indexing (`mask[batch_idx, kv_idx]`): each index tuple becomes a row of `data` flattened to
/// `[d0 * ... * d(k-1), rest...]`, `row = sum_j i_j * stride_j` with negative components counted
/// from the end, then one `gather`. The dims may be symbolic: strides and extents are computed
/// from the bound sizes at run time ([`Importer::dim_values`]); an index still out of range is
/// the gather's run-time error.
fn gather_nd_at_run_time(imp: &mut Importer, data: ValueId, indices: ValueId) -> BuildResult<ValueId> {
    let (data_ty, indices_ty) = (imp.ty(data), imp.ty(indices));
    let Some((last, tuple_dims)) = indices_ty.dims.split_last() else {
        return invalid("GatherND: indices must have rank >= 1");
    };
    let k = last
        .as_static()
        .ok_or_else(|| BuildError::Unsupported(format!("GatherND with a symbolic index length ({indices_ty})")))?
        as usize;
    if k == 0 || k > data_ty.rank() {
        return invalid(format!("GatherND: {k} index components for data {data_ty}"));
    }
    let extents: Vec<SymInt> = data_ty.dims[..k]
        .iter()
        .map(|d| d.to_expr().map_err(|e| BuildError::Invalid(e.to_string())))
        .collect::<BuildResult<_>>()?;
    let symbolic = |e: tessera_ir::symbolic::SymbolicError| BuildError::Invalid(e.to_string());
    let indices = imp.cast(indices, DType::I64)?;
    let zero = imp.constant(Tensor::from_i64(DType::I64, vec![], vec![0]));
    let mut row: Option<ValueId> = None;
    let mut stride = SymInt::constant(1);
    for j in (0..k).rev() {
        let picked = slice_axis(imp, indices, tuple_dims.len(), j as i64, j as i64 + 1, 1)?;
        let mut component = imp.reshape(picked, tuple_dims.to_vec())?;
        let extent = imp.dim_values(std::slice::from_ref(&extents[j]), true)?;
        let negative = imp.compare(CompareOp::Lt, component, zero)?;
        let wrapped = imp.binary(BinaryOp::Add, component, extent)?;
        component = imp.select(negative, wrapped, component)?;
        if stride.as_const() != Some(1) {
            let scale = imp.dim_values(std::slice::from_ref(&stride), true)?;
            component = imp.binary(BinaryOp::Mul, component, scale)?;
        }
        row = Some(match row {
            None => component,
            Some(r) => imp.binary(BinaryOp::Add, r, component)?,
        });
        stride = stride.mul(&extents[j]).map_err(symbolic)?;
    }
    let Some(row) = row else { return invalid("GatherND: no index components") };
    let mut flat = super::dims_of(std::slice::from_ref(&stride))?;
    flat.extend(data_ty.dims[k..].iter().cloned());
    let flat_data = imp.reshape(data, flat)?;
    imp.add(Op::Gather { axis: 0 }, &[flat_data, row])
}

/// `ScatterND` with indices known at import time. `data` is viewed as rows (`[prod(dims[..k]),
/// rest...]`) and `updates` as the matching rows; the updates are applied in index order,
/// `reduction` combining each with the row so far (`none` replaces: with duplicate indices the
/// last one wins, one valid order of the spec's unspecified one). The updates hitting a row are
/// applied in layers (layer `j` holds each row's `j`-th update), so the graph grows with the
/// largest number of updates to one row, not with the number of updates.
fn scatter_nd(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let data = imp.value(cx, 0)?;
    let indices =
        imp.const_input(cx, 1, "indices")?.ok_or_else(|| BuildError::Invalid("missing input 'indices'".into()))?;
    let updates = imp.value(cx, 2)?;
    let reduction = cx.attrs.string("reduction", "none")?;
    let combine = match reduction.as_str() {
        "none" => None,
        "add" => Some(BinaryOp::Add),
        "mul" => Some(BinaryOp::Mul),
        "max" => Some(BinaryOp::Max),
        "min" => Some(BinaryOp::Min),
        other => return invalid(format!("reduction '{other}' is not none, add, mul, max or min")),
    };
    let dty = imp.ty(data);
    if dty.dtype == DType::Bool && combine.is_some() {
        return invalid(format!("reduction '{reduction}' on booleans"));
    }
    let shape = static_shape(imp, data, "ScatterND")?;
    let rows = nd_rows(&shape, &indices, 0, "ScatterND")?;
    let k = indices.shape.last().copied().unwrap_or(0);
    let q = indices.shape.len();
    let rest = &shape[k..];
    let mut expected: Vec<u64> = indices.shape[..q - 1].iter().map(|&d| d as u64).collect();
    expected.extend_from_slice(rest);
    let uty = imp.ty(updates);
    if uty.dims != expected.iter().map(|&d| Dim::Static(d)).collect::<Vec<_>>() || uty.dtype != dty.dtype {
        return invalid(format!("updates {uty} must be {} of shape {expected:?}", dty.dtype));
    }
    let n_rows: u64 = shape[..k].iter().product();
    generated_len(n_rows.saturating_mul(rows.len().max(1) as u64), "ScatterND's row map")?;
    let row_dims: Vec<Dim> = std::iter::once(n_rows).chain(rest.iter().copied()).map(Dim::Static).collect();
    let update_dims: Vec<Dim> =
        std::iter::once(rows.len() as u64).chain(rest.iter().copied()).map(Dim::Static).collect();
    let data_rows = imp.reshape(data, row_dims)?;
    let flat_updates = imp.reshape(updates, update_dims)?;
    let out = apply_row_updates(imp, data_rows, flat_updates, &rows, combine)?;
    one(imp.reshape(out, dty.dims.clone())?)
}

/// `data_rows` (`[n_rows, rest...]`) with update row `u` of `update_rows` applied to row
/// `rows[u]`, in order: combined by `combine`, or replacing (`None`; the last update of a row
/// wins). Layer `j` applies each row's `j`-th update at once, so the graph grows with the
/// largest number of updates to one row.
fn apply_row_updates(
    imp: &mut Importer,
    data_rows: ValueId,
    update_rows: ValueId,
    rows: &[i64],
    combine: Option<BinaryOp>,
) -> BuildResult<ValueId> {
    let row_dims = imp.ty(data_rows).dims;
    let n_rows = row_dims[0].as_static().ok_or_else(|| BuildError::Unsupported("symbolic rows".into()))?;
    let mut out = data_rows;
    let flat_updates = update_rows;
    // layers[j][row] = the j-th update (in index order) that targets `row`.
    let mut per_row: Vec<Vec<i64>> = vec![Vec::new(); n_rows as usize];
    for (u, &row) in rows.iter().enumerate() {
        per_row[row as usize].push(u as i64);
    }
    let depth = per_row.iter().map(Vec::len).max().unwrap_or(0);
    let depth = if combine.is_none() { depth.min(1) } else { depth };
    let mut mask_shape = vec![1usize; row_dims.len()];
    mask_shape[0] = n_rows as usize;
    for j in 0..depth {
        // `none` keeps only the last update of a row.
        let pick = |hits: &Vec<i64>| if combine.is_none() { hits.last().copied() } else { hits.get(j).copied() };
        let picks: Vec<Option<i64>> = per_row.iter().map(pick).collect();
        let hit = imp.constant(Tensor::from_i64(
            DType::Bool,
            mask_shape.clone(),
            picks.iter().map(|p| p.is_some() as i64).collect(),
        ));
        let idx = imp.constant(Tensor::from_i64(
            DType::I64,
            vec![n_rows as usize],
            picks.iter().map(|p| p.unwrap_or(0)).collect(),
        ));
        let gathered = imp.add(Op::Gather { axis: 0 }, &[flat_updates, idx])?;
        let combined = match combine {
            Some(op) => imp.binary(op, out, gathered)?,
            None => gathered,
        };
        out = imp.select(hit, combined, out)?;
    }
    Ok(out)
}

/// `Compress`: the slices along `axis` (of the flattened input without one) whose entry of the
/// 1-D boolean `condition` is true; a condition shorter than the axis drops the rest. The
/// result's length depends on the condition's values, so it must be known at import time; the
/// selection is then a `Gather` of constant indices.
fn compress(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let mut x = imp.value(cx, 0)?;
    let condition =
        imp.const_input(cx, 1, "condition")?.ok_or_else(|| BuildError::Invalid("missing input 'condition'".into()))?;
    if condition.shape.len() != 1 {
        return invalid(format!("condition must be 1-D, got shape {:?}", condition.shape));
    }
    let axis = match cx.attrs.opt_int("axis")? {
        Some(a) => axis_of(a, imp.ty(x).rank())?,
        None => {
            let ty = imp.ty(x);
            let n = ty.num_elements().ok_or_else(|| BuildError::Unsupported(format!("flattening {ty}")))?;
            x = imp.reshape(x, vec![Dim::Static(n)])?;
            0
        }
    };
    let extent = imp.ty(x).dims[axis]
        .as_static()
        .ok_or_else(|| BuildError::Unsupported(format!("Compress along symbolic {}", imp.ty(x).dims[axis])))?;
    if condition.len() as u64 > extent {
        return invalid(format!("condition has {} entries, more than the axis' {extent}", condition.len()));
    }
    let picked: Vec<i64> =
        condition.to_i64_vec().iter().enumerate().filter(|(_, &c)| c != 0).map(|(i, _)| i as i64).collect();
    let indices = imp.constant(Tensor::from_i64(DType::I64, vec![picked.len()], picked));
    one(imp.add(Op::Gather { axis: axis as i64 }, &[x, indices])?)
}

/// `ReverseSequence`: along `time_axis`, the first `sequence_lens[b]` entries of each batch
/// entry `b` (along `batch_axis`) reversed, the rest kept. The lengths must be known at import
/// time; the permutation is then a gather of constant indices along the time axis.
fn reverse_sequence(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = imp.value(cx, 0)?;
    let lens = imp
        .const_ints(cx, 1, "sequence_lens")?
        .ok_or_else(|| BuildError::Invalid("missing input 'sequence_lens'".into()))?;
    let ty = imp.ty(x);
    if ty.rank() < 2 {
        return invalid(format!("input must have rank >= 2, got {ty}"));
    }
    let (batch_axis, time_axis) = (cx.attrs.int("batch_axis", 1)?, cx.attrs.int("time_axis", 0)?);
    if !matches!((batch_axis, time_axis), (0, 1) | (1, 0)) {
        return invalid(format!("batch_axis {batch_axis} and time_axis {time_axis} must be 0 and 1 in some order"));
    }
    let shape: Vec<u64> = ty
        .dims
        .iter()
        .map(|d| d.as_static().ok_or_else(|| BuildError::Unsupported(format!("ReverseSequence of {ty}"))))
        .collect::<BuildResult<_>>()?;
    let (batch, time) = (shape[batch_axis as usize], shape[time_axis as usize]);
    if lens.len() as u64 != batch || lens.iter().any(|&l| l < 0 || l as u64 > time) {
        return invalid(format!("sequence_lens {lens:?} must give one length in 0..={time} per batch entry ({batch})"));
    }
    let n = generated_len(shape.iter().product(), "ReverseSequence's indices")?;
    let strides = tessera_ir::tensor::strides(&shape.iter().map(|&d| d as usize).collect::<Vec<_>>());
    let indices: Vec<i64> = (0..n)
        .map(|flat| {
            let b = flat / strides[batch_axis as usize] % batch as usize;
            let t = (flat / strides[time_axis as usize] % time as usize) as i64;
            let len = lens[b];
            if t < len {
                len - 1 - t
            } else {
                t
            }
        })
        .collect();
    let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    let indices = imp.constant(Tensor::from_i64(DType::I64, shape, indices));
    one(gather_elements_in_range(imp, x, indices, time_axis as usize)?)
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

fn scatter_elements(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let (data, idx, upd) = (imp.value(cx, 0)?, imp.value(cx, 1)?, imp.value(cx, 2)?);
    let axis = cx.attrs.int("axis", 0)?;
    let reduction = match cx.attrs.string("reduction", "none")?.as_str() {
        "none" => ScatterReduction::None,
        "add" => ScatterReduction::Add,
        "mul" => return scatter_elements_combining(imp, cx, (data, upd), BinaryOp::Mul),
        "max" => return scatter_elements_combining(imp, cx, (data, upd), BinaryOp::Max),
        "min" => return scatter_elements_combining(imp, cx, (data, upd), BinaryOp::Min),
        other => return invalid(format!("reduction '{other}' is not none, add, mul, max or min")),
    };
    one(imp.add(Op::Scatter { axis, reduction }, &[data, idx, upd])?)
}

/// ScatterElements with `reduction` mul, max or min (tsr's scatter has none and add), for
/// indices known at import time: every update addresses one element of `data`, so the elements
/// are rows of one value and the updates are applied as ScatterND's are.
fn scatter_elements_combining(
    imp: &mut Importer,
    cx: &NodeCx,
    (data, updates): (ValueId, ValueId),
    combine: BinaryOp,
) -> BuildResult<Vec<Slot>> {
    let indices =
        imp.const_input(cx, 1, "indices")?.ok_or_else(|| BuildError::Invalid("missing input 'indices'".into()))?;
    let dty = imp.ty(data);
    if dty.dtype == DType::Bool {
        return invalid("a combining reduction on booleans");
    }
    let shape = static_shape(imp, data, "ScatterElements")?;
    let ushape = static_shape(imp, updates, "ScatterElements")?;
    let axis = axis_of(cx.attrs.int("axis", 0)?, shape.len())?;
    let ishape: Vec<u64> = indices.shape.iter().map(|&d| d as u64).collect();
    if ishape != ushape
        || ushape.len() != shape.len()
        || ushape.iter().zip(&shape).enumerate().any(|(d, (u, s))| d != axis && u > s)
    {
        return invalid(format!(
            "indices {ishape:?} and updates {ushape:?} must share one shape that fits data {shape:?}"
        ));
    }
    let data_strides = tessera_ir::tensor::strides(&shape.iter().map(|&d| d as usize).collect::<Vec<_>>());
    let update_strides = tessera_ir::tensor::strides(&indices.shape);
    let n = shape[axis] as i64;
    let mut rows = Vec::with_capacity(indices.len());
    for (p, k) in indices.to_i64_vec().into_iter().enumerate() {
        let k = if k < 0 { k + n } else { k };
        if !(0..n).contains(&k) {
            return invalid(format!("index {k} is out of range for a dimension of {n}"));
        }
        let row: usize = (0..shape.len())
            .map(|d| if d == axis { k as usize } else { p / update_strides[d] % indices.shape[d] } * data_strides[d])
            .sum();
        rows.push(row as i64);
    }
    let total: u64 = shape.iter().product();
    let data_rows = imp.reshape(data, vec![Dim::Static(total)])?;
    let update_rows = imp.reshape(updates, vec![Dim::Static(rows.len() as u64)])?;
    let out = apply_row_updates(imp, data_rows, update_rows, &rows, Some(combine))?;
    one(imp.reshape(out, dty.dims.clone())?)
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
    let iota = crate::onnx::ops::iota(imp, out_rank, axis, depth as u64)?;
    let hit = imp.compare(CompareOp::Eq, idx, iota)?;
    let flat = imp.reshape(values, vec![Dim::Static(2)])?;
    let off = slice_axis(imp, flat, 0, 0, 1, 1)?;
    let on = slice_axis(imp, flat, 0, 1, 2, 1)?;
    let off = imp.reshape(off, vec![])?;
    let on = imp.reshape(on, vec![])?;
    one(imp.select(hit, on, off)?)
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
    one(gather_elements_in_range(imp, data, idx, axis)?)
}

/// `y[.., i, ..] = data[.., idx[.., i, ..], ..]` along `axis`, for int64 indices already in
/// `0..n` and of data's shape: each result sums the one entry of data its index selects.
fn gather_elements_in_range(imp: &mut Importer, data: ValueId, idx: ValueId, axis: usize) -> BuildResult<ValueId> {
    let (dty, ity) = (imp.ty(data), imp.ty(idx));
    let r = dty.rank();
    let n = dty.dims[axis]
        .as_static()
        .ok_or_else(|| BuildError::Unsupported(format!("gathering along symbolic {}", dty.dims[axis])))?;
    let mut idims = ity.dims.clone();
    idims.insert(axis + 1, Dim::Static(1));
    let idx = imp.reshape(idx, idims)?;
    let iota = crate::onnx::ops::iota(imp, r + 1, axis + 1, n)?;
    let hit = imp.compare(CompareOp::Eq, idx, iota)?;
    let mut ddims = dty.dims.clone();
    ddims.insert(axis, Dim::Static(1));
    let data = imp.reshape(data, ddims)?;
    // Sum in a numeric type: booleans go through i64.
    let work = if dty.dtype == DType::Bool { imp.cast(data, DType::I64)? } else { data };
    let zero = imp.scalar(imp.ty(work).dtype, 0.0);
    let selected = imp.select(hit, work, zero)?;
    let y = imp.add(Op::Reduce { kind: ReduceKind::Sum, axes: vec![axis as i64 + 1], keepdims: false }, &[selected])?;
    imp.cast(y, dty.dtype)
}

/// Whether `x[i]` contributes to `y[j]` of a cumulative sum or product along one axis.
fn cumulative_contributes(i: i64, j: i64, exclusive: bool, reverse: bool) -> bool {
    match (reverse, exclusive) {
        (false, false) => i <= j,
        (false, true) => i < j,
        (true, false) => i >= j,
        (true, true) => i > j,
    }
}

/// The operands and attributes `CumSum` and `CumProd` share: the input, its type, the axis
/// (normalized) and its length (static or symbolic), and the `exclusive`/`reverse` flags.
struct Cumulative {
    x: ValueId,
    ty: TensorType,
    axis: usize,
    n: Dim,
    exclusive: bool,
    reverse: bool,
}

impl Cumulative {
    fn read(imp: &mut Importer, cx: &NodeCx, op: &str) -> BuildResult<Cumulative> {
        let x = imp.value(cx, 0)?;
        let axis = scalar_input(imp, cx, 1, "axis")?.get_i64(0);
        let exclusive = cx.attrs.int("exclusive", 0)? != 0;
        let reverse = cx.attrs.int("reverse", 0)? != 0;
        let ty = imp.ty(x);
        if ty.rank() == 0 || ty.dtype == DType::Bool {
            return invalid(format!("{op} of {ty}"));
        }
        let axis = axis_of(axis, ty.rank())?;
        let n = ty.dims[axis].clone();
        Ok(Cumulative { x, ty, axis, n, exclusive, reverse })
    }

    /// The bool `[n (i), n (j)]` matrix of [`cumulative_contributes`]: a constant for a static
    /// length (checked against the generated-size limit), else built at run time from the
    /// positions along both axes (`iota`), so an axis of symbolic length (RoBERTa's position
    /// ids, a cumulative sum of the attention mask along the sequence) imports symbolically.
    fn contributions(&self, imp: &mut Importer, op: &str) -> BuildResult<ValueId> {
        let (exclusive, reverse) = (self.exclusive, self.reverse);
        if let Some(n) = self.n.as_static() {
            generated_len(n.saturating_mul(n), &format!("{op}'s triangular matrix"))?;
            let n = n as i64;
            let mask: Vec<i64> = (0..n)
                .flat_map(|i| (0..n).map(move |j| cumulative_contributes(i, j, exclusive, reverse) as i64))
                .collect();
            return Ok(imp.constant(Tensor::from_i64(DType::Bool, vec![n as usize, n as usize], mask)));
        }
        let zero = imp.constant(Tensor::from_i64(DType::I64, vec![], vec![0]));
        let square = imp.broadcast(zero, &[self.n.clone(), self.n.clone()])?;
        let i = imp.add(Op::Iota { axis: 0 }, &[square])?;
        let j = imp.add(Op::Iota { axis: 1 }, &[square])?;
        let holds = match (reverse, exclusive) {
            (false, false) => CompareOp::Le,
            (false, true) => CompareOp::Lt,
            (true, false) => CompareOp::Ge,
            (true, true) => CompareOp::Gt,
        };
        imp.compare(holds, i, j)
    }
}

/// CumProd (opset 26): `y[j]` is the product of the `x[i]` that `cumulative_contributes`
/// (an empty product, exclusive mode's first element, is 1). Built as `x` spread to
/// `[..., n (i), n (j)]` along the axis, non-contributing entries replaced by 1, and a product
/// over `i`, so it stays exact (no log/exp) and keeps signs and zeros.
fn cum_prod(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let cumulative = Cumulative::read(imp, cx, "CumProd")?;
    let Cumulative { x, ref ty, axis, ref n, .. } = cumulative;
    let r = ty.rank();
    if let (Some(elements), Some(length)) = (ty.num_elements(), n.as_static()) {
        generated_len(elements.saturating_mul(length), "CumProd's spread operand")?;
    }
    // x with a new axis after `axis`: [..., n (i), 1, ...] spread to [..., n (i), n (j), ...].
    let mut with_j = ty.dims.clone();
    with_j.insert(axis + 1, Dim::Static(1));
    let unsqueezed = imp.reshape(x, with_j.clone())?;
    with_j[axis + 1] = n.clone();
    let spread = imp.broadcast(unsqueezed, &with_j)?;
    let mut mask_shape = vec![Dim::Static(1); r + 1];
    (mask_shape[axis], mask_shape[axis + 1]) = (n.clone(), n.clone());
    let square = cumulative.contributions(imp, "CumProd")?;
    let mask = imp.reshape(square, mask_shape)?;
    let ones = imp.full_like(spread, 1.0)?;
    let factors = imp.select(mask, spread, ones)?;
    one(imp.add(Op::Reduce { kind: ReduceKind::Prod, axes: vec![axis as i64], keepdims: false }, &[factors])?)
}

/// Cumulative sum along `axis` as a product with a triangular 0/1 matrix (the axis moved last).
fn cum_sum(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let cumulative = Cumulative::read(imp, cx, "CumSum")?;
    let (x, r, axis) = (cumulative.x, cumulative.ty.rank(), cumulative.axis);
    // y[j] = sum over i of x[i] * m[i][j].
    let contributes = cumulative.contributions(imp, "CumSum")?;
    let m = imp.cast(contributes, cumulative.ty.dtype)?;
    let mut perm: Vec<i64> = (0..r as i64).filter(|&d| d != axis as i64).collect();
    perm.push(axis as i64);
    let moved = if axis + 1 == r { x } else { imp.add(Op::Transpose { perm: perm.clone() }, &[x])? };
    let y = crate::onnx::ops::matmul::matmul_numpy(imp, moved, m)?;
    if axis + 1 == r {
        return one(y);
    }
    let mut inverse = vec![0i64; r];
    for (i, &p) in perm.iter().enumerate() {
        inverse[p as usize] = i as i64;
    }
    one(imp.add(Op::Transpose { perm: inverse }, &[y])?)
}

/// `Unique` of a tensor known at import time (its result's length depends on the values), so
/// every output is a constant. Without `axis` the flattened elements are compared, with it the
/// slices along `axis` (lexicographically, in row-major order). `sorted = 1` orders the unique
/// values ascending, `sorted = 0` by first occurrence. Outputs: the values, the index of each
/// one's first occurrence, each input element's (slice's) index into the values, and counts.
/// Floats compare as numbers (`-0` equals `0`; NaNs compare equal to each other, after every
/// number, as NumPy's `unique` groups them).
fn unique(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let x = imp.const_input(cx, 0, "X")?.ok_or_else(|| BuildError::Invalid("missing input 'X'".into()))?;
    let sorted = cx.attrs.int("sorted", 1)? != 0;
    let (shape, axis) = match cx.attrs.opt_int("axis")? {
        None => (vec![x.len()], 0),
        Some(a) => (x.shape.clone(), axis_of(a, x.shape.len())?),
    };
    let n = shape[axis];
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let element = |s: usize, o: usize, i: usize| (o * n + s) * inner + i;
    let floats = x.to_f64_vec();
    let ints = x.to_i64_vec();
    let compare_at = |a: usize, b: usize| -> std::cmp::Ordering {
        if x.dtype.is_float() {
            let (p, q) = (floats[a], floats[b]);
            match (p.is_nan(), q.is_nan()) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) => std::cmp::Ordering::Greater,
                (false, true) => std::cmp::Ordering::Less,
                (false, false) => p.partial_cmp(&q).unwrap_or(std::cmp::Ordering::Equal),
            }
        } else {
            ints[a].cmp(&ints[b])
        }
    };
    let compare_slices = |s: usize, t: usize| -> std::cmp::Ordering {
        (0..outer)
            .flat_map(|o| (0..inner).map(move |i| (o, i)))
            .map(|(o, i)| compare_at(element(s, o, i), element(t, o, i)))
            .find(|c| c.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    };
    // Slices in value order, ties by index: each run of equal slices is one group, led by its
    // first occurrence.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&s, &t| compare_slices(s, t).then(s.cmp(&t)));
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for s in order {
        match groups.last_mut() {
            Some(group) if compare_slices(group[0], s).is_eq() => group.push(s),
            _ => groups.push(vec![s]),
        }
    }
    if !sorted {
        groups.sort_by_key(|g| g[0]);
    }
    let mut inverse = vec![0i64; n];
    for (g, members) in groups.iter().enumerate() {
        for &s in members {
            inverse[s] = g as i64;
        }
    }
    let picks: Vec<usize> = (0..outer)
        .flat_map(|o| groups.iter().flat_map(move |g| (0..inner).map(move |i| (o, g[0], i))))
        .map(|(o, s, i)| element(s, o, i))
        .collect();
    let mut y_shape = shape.clone();
    y_shape[axis] = groups.len();
    let y = if x.dtype.is_float() {
        Tensor::from_f64(x.dtype, y_shape, picks.iter().map(|&p| floats[p]).collect())
    } else {
        Tensor::from_i64(x.dtype, y_shape, picks.iter().map(|&p| ints[p]).collect())
    };
    let count = groups.len();
    let firsts = Tensor::from_i64(DType::I64, vec![count], groups.iter().map(|g| g[0] as i64).collect());
    let counts = Tensor::from_i64(DType::I64, vec![count], groups.iter().map(|g| g.len() as i64).collect());
    let inverse = Tensor::from_i64(DType::I64, vec![n], inverse);
    Ok([y, firsts, inverse, counts].into_iter().map(|t| Slot::Value(imp.constant(t))).collect())
}
