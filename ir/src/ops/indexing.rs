//! Indexing ops: `tsr.gather` (ONNX Gather), `tsr.scatter` (ONNX ScatterElements, with an
//! optional `add` reduction, which is also the gradient of gather), and `tsr.iota` (the
//! coordinate along an axis, which ONNX `Range` over a symbolic length imports to).
//!
//! Reference semantics: an index `k` along an axis of extent `n` is valid in `[-n, n)`, negative
//! ones counting from the end; any other index is an error naming it and the bound. Scatter
//! applies updates in row-major order (with `none`, a repeated index keeps the last update),
//! and `add` accumulates floats in `f64`, rounding once.

use super::elementwise::named_enum;
use super::gradient::{GradContext, GradError, GradResult};
use super::Op;
use super::{expect_arity, ints, num_elements, operand_shape, product, FlopResult, ShapeResult};
use crate::dtype::DType;
use crate::graph::ValueId;
use crate::sharding::ShardingRule;
use crate::tensor::{strides, unravel, Buffer, Tensor};
use crate::types::Dim;
use crate::types::{normalize_axis, TensorType};

named_enum!(
    /// How `scatter` combines an update with the value already there (StableHLO's update
    /// regions and ONNX's `reduction`): replace, add, multiply, maximum, minimum.
    ScatterReduction { None = "none", Add = "add", Mul = "mul", Max = "max", Min = "min" }
);

fn check_indices(t: &TensorType) -> Result<(), String> {
    match t.dtype {
        DType::I64 | DType::I32 => Ok(()),
        other => Err(format!("indices must be i64 or i32, got {other}")),
    }
}

/// `gather(data, indices)` along `axis`: the result is
/// `data.shape[..axis] ++ indices.shape ++ data.shape[axis+1..]`.
pub fn infer_gather(inputs: &[&TensorType], axis: i64) -> ShapeResult {
    expect_arity(inputs, 2)?;
    let (data, indices) = (inputs[0], inputs[1]);
    check_indices(indices)?;
    let ax = normalize_axis(axis, data.rank()).ok_or_else(|| format!("axis {axis} is out of range for {data}"))?;
    let mut dims = data.dims[..ax].to_vec();
    dims.extend(indices.dims.iter().cloned());
    dims.extend(data.dims[ax + 1..].iter().cloned());
    Ok(vec![TensorType::new(data.dtype, dims)])
}

/// `iota(x)` along `axis`: a tensor of `x`'s type whose every element is its own coordinate along
/// `axis` (0, 1, ..., n - 1), so `iota` of a `[seq]` tensor is `[0, 1, ..., seq - 1]`. `x`'s
/// values are not read: it carries the (possibly symbolic) extent, which the interpreter and
/// the compiled program know once the dimensions are bound.
pub fn infer_iota(inputs: &[&TensorType], axis: i64) -> ShapeResult {
    expect_arity(inputs, 1)?;
    let x = inputs[0];
    if !(x.dtype.is_int() || x.dtype.is_float()) || x.dtype == DType::Bool {
        return Err(format!("iota needs an integer or float operand, got {x}"));
    }
    normalize_axis(axis, x.rank()).ok_or_else(|| format!("axis {axis} is out of range for {x}"))?;
    Ok(vec![x.clone()])
}

/// `iota` (see [`infer_iota`]); `out` is the operand's concrete shape.
pub fn eval_iota(x: &Tensor, axis: i64, out: &[usize]) -> Result<Tensor, String> {
    let ax = normalize_axis(axis, out.len()).ok_or_else(|| format!("axis {axis} is out of range for shape {out:?}"))?;
    let (extent, inner) = (out[ax], product(&out[ax + 1..]));
    let coordinate = |flat: usize| ((flat / inner.max(1)) % extent.max(1)) as i64;
    let n = product(out);
    Ok(if x.dtype.is_float() {
        Tensor::from_f64(x.dtype, out.to_vec(), (0..n).map(|i| coordinate(i) as f64).collect())
    } else {
        Tensor::from_i64(x.dtype, out.to_vec(), (0..n).map(coordinate).collect())
    })
}

/// `scatter(data, indices, updates)`: a copy of `data` where, for each position `p` of
/// `updates`, the element at `p` with coordinate `axis` replaced by `indices[p]` takes (or, with
/// `add`, accumulates) `updates[p]`.
pub fn infer_scatter(inputs: &[&TensorType], axis: i64) -> ShapeResult {
    expect_arity(inputs, 3)?;
    let (data, indices, updates) = (inputs[0], inputs[1], inputs[2]);
    check_indices(indices)?;
    let ax = normalize_axis(axis, data.rank()).ok_or_else(|| format!("axis {axis} is out of range for {data}"))?;
    if updates.dtype != data.dtype {
        return Err(format!("updates {updates} must have the element type of data {data}"));
    }
    if indices.dims != updates.dims || updates.rank() != data.rank() {
        return Err(format!("indices {indices} and updates {updates} must have one shape, of the rank of data {data}"));
    }
    // Off the scatter axis, every update position must exist in data.
    for (i, (u, d)) in updates.dims.iter().zip(&data.dims).enumerate() {
        let fits = match (u.as_static(), d.as_static()) {
            (Some(u), Some(d)) => u <= d,
            _ => u == d,
        };
        if i != ax && !fits {
            return Err(format!("updates {updates} do not fit in data {data} along dimension {i}"));
        }
    }
    Ok(vec![data.clone()])
}

/// FLOPs of `gather`: none, it only moves data.
pub fn flops_gather() -> u128 {
    0
}

/// FLOPs of `scatter`: 1 per update with a combining reduction, none when it replaces.
pub fn flops_scatter(inputs: &[&[u64]], reduction: ScatterReduction) -> FlopResult {
    match reduction {
        ScatterReduction::Add | ScatterReduction::Mul | ScatterReduction::Max | ScatterReduction::Min => {
            Ok(num_elements(operand_shape(inputs, 2)?))
        }
        ScatterReduction::None => Ok(0),
    }
}

/// `k` as a position along an axis of extent `n`, if it is in `[-n, n)`.
fn resolve_index(k: i64, n: usize) -> Option<usize> {
    let n = i64::try_from(n).ok()?;
    let r = if k < 0 { k.checked_add(n)? } else { k };
    (0..n).contains(&r).then_some(r as usize)
}

fn out_of_range(k: i64, position: Vec<usize>, ax: usize, n: usize) -> String {
    format!("index {k} at indices{position:?} is out of range [-{n}, {n}) for axis {ax} of extent {n}")
}

/// Gather along `axis`, giving `out` (`data[..axis] ++ indices ++ data[axis+1..]`).
pub fn eval_gather(data: &Tensor, indices: &Tensor, axis: i64, out: &[usize]) -> Result<Tensor, String> {
    let ax = normalize_axis(axis, data.shape.len())
        .ok_or_else(|| format!("axis {axis} is out of range for shape {:?}", data.shape))?;
    let n = data.shape[ax];
    let resolved = ints(indices)?
        .iter()
        .enumerate()
        .map(|(q, &k)| resolve_index(k, n).ok_or_else(|| out_of_range(k, unravel(q, &indices.shape), ax, n)))
        .collect::<Result<Vec<usize>, String>>()?;
    let inner = product(&data.shape[ax + 1..]);
    let n_idx = resolved.len();
    if product(out) != product(&data.shape[..ax]) * n_idx * inner {
        return Err(format!("result shape {out:?} does not fit the gather"));
    }
    // The closure only runs for indices of `out`, so `inner` and `n_idx` are non-zero there.
    Ok(data.gather_elements(out.to_vec(), |i| {
        let (rest, in_inner) = (i / inner, i % inner);
        let (o, q) = (rest / n_idx, rest % n_idx);
        (o * n + resolved[q]) * inner + in_inner
    }))
}

/// ONNX ScatterElements along `axis`.
pub fn eval_scatter(
    data: &Tensor,
    indices: &Tensor,
    updates: &Tensor,
    axis: i64,
    reduction: ScatterReduction,
) -> Result<Tensor, String> {
    let rank = data.shape.len();
    let ax =
        normalize_axis(axis, rank).ok_or_else(|| format!("axis {axis} is out of range for shape {:?}", data.shape))?;
    if indices.shape != updates.shape || updates.shape.len() != rank {
        return Err(format!(
            "indices {:?} and updates {:?} must share one shape of rank {rank}",
            indices.shape, updates.shape
        ));
    }
    let n = data.shape[ax];
    let data_strides = strides(&data.shape);
    let mut targets = Vec::with_capacity(updates.len());
    for (p, &k) in ints(indices)?.iter().enumerate() {
        let mut position = unravel(p, &updates.shape);
        let r = resolve_index(k, n).ok_or_else(|| out_of_range(k, position.clone(), ax, n))?;
        // The shape rule leaves the other extents of `updates` free, so they are checked here.
        if let Some(d) = (0..rank).find(|&d| d != ax && position[d] >= data.shape[d]) {
            return Err(format!("update at {position:?} lies outside data of shape {:?} in dimension {d}", data.shape));
        }
        position[ax] = r;
        targets.push(position.iter().zip(&data_strides).map(|(i, s)| i * s).sum::<usize>());
    }
    match (&data.data, &updates.data) {
        _ if data.has_float_storage() && updates.has_float_storage() => {
            let mut out = data.to_f64_vec();
            for (&t, &v) in targets.iter().zip(super::floats(updates)?.iter()) {
                match reduction {
                    ScatterReduction::None => out[t] = v,
                    ScatterReduction::Add => out[t] += v,
                    ScatterReduction::Mul => out[t] *= v,
                    ScatterReduction::Max => out[t] = out[t].max(v),
                    ScatterReduction::Min => out[t] = out[t].min(v),
                }
            }
            Ok(Tensor::from_f64(data.dtype, data.shape.clone(), out))
        }
        (Buffer::Int(d), Buffer::Int(u)) => {
            let mut out = d.clone();
            for (&t, &v) in targets.iter().zip(u) {
                match reduction {
                    ScatterReduction::None => out[t] = v,
                    ScatterReduction::Add => out[t] = out[t].wrapping_add(v),
                    ScatterReduction::Mul => out[t] = out[t].wrapping_mul(v),
                    ScatterReduction::Max => out[t] = out[t].max(v),
                    ScatterReduction::Min => out[t] = out[t].min(v),
                }
            }
            Ok(Tensor::from_i64(data.dtype, data.shape.clone(), out))
        }
        _ => Err(format!("data {} and updates {} have different storage", data.dtype, updates.dtype)),
    }
}

// ---------------------------------------------------------------------------------------------
// Gradient rules (the indices take none: they are integers)

/// `gather(data, indices)` along `axis`: `g` scatter-added into zeros of `data`'s shape at the
/// gathered positions (repeated indices accumulate).
pub fn grad_gather(
    cx: &mut GradContext,
    data: ValueId,
    indices: ValueId,
    g: ValueId,
    axis: i64,
) -> Result<ValueId, GradError> {
    let dt = cx.ty(data);
    let it = cx.ty(indices);
    let ax = normalize_axis(axis, dt.rank()).ok_or_else(|| cx.unsupported(format!("axis {axis} out of range")))?;
    // Flatten the index dimensions to one, so the adjoint and the indices have data's rank.
    let n = match it.dims.as_slice() {
        [d] => d.clone(),
        _ => Dim::Static(cx.static_count(&it, &(0..it.rank()).collect::<Vec<_>>())?),
    };
    let mut flat = dt.dims[..ax].to_vec();
    flat.push(n.clone());
    flat.extend(dt.dims[ax + 1..].iter().cloned());
    let g_flat = cx.reshape(g, &flat)?;
    let mut index_dims = vec![Dim::Static(1); dt.rank()];
    index_dims[ax] = n;
    let index = cx.reshape(indices, &index_dims)?;
    let index = cx.broadcast(index, &flat)?;
    let zeros = cx.zeros(&dt)?;
    cx.add(Op::Scatter { axis: ax as i64, reduction: ScatterReduction::Add }, &[zeros, index, g_flat])
}

/// `scatter(data, indices, updates)`. With `add`: `ddata = g`, `dupdates = g` gathered at the
/// indices. With `none`: overwritten positions of `data` get no adjoint, and of updates that
/// hit one position only the one that lands (the last) gets it: the winners are found by
/// scattering each update's position id and reading it back.
pub fn grad_scatter(
    cx: &mut GradContext,
    (indices, updates, g): (ValueId, ValueId, ValueId),
    axis: i64,
    reduction: ScatterReduction,
    wanted: &[bool],
) -> GradResult {
    use super::elementwise::CompareOp;
    let gt = cx.ty(g);
    let ax = normalize_axis(axis, gt.rank()).ok_or_else(|| cx.unsupported(format!("axis {axis} out of range")))?;
    let gathered = |cx: &mut GradContext| cx.gather_elements(g, indices, ax);
    match reduction {
        ScatterReduction::Mul | ScatterReduction::Max | ScatterReduction::Min => Err(cx.unsupported(format!(
            "scatter with reduction {} (its gradient depends on which updates won; only none and add differentiate)",
            reduction.mnemonic()
        ))),
        ScatterReduction::Add => {
            let dupdates = if wanted[2] { Some(gathered(cx)?) } else { None };
            Ok(vec![wanted[0].then_some(g), None, dupdates])
        }
        ScatterReduction::None => {
            let ddata = if wanted[0] {
                let ut = cx.ty(updates);
                let zeros = cx.zeros(&ut)?;
                Some(cx.add(Op::Scatter { axis, reduction: ScatterReduction::None }, &[g, indices, zeros])?)
            } else {
                None
            };
            let dupdates = if wanted[2] {
                let it = cx.ty(indices);
                let shape = cx.static_shape(&it)?;
                let n = product(&shape);
                let ids = cx.add(Op::Constant(Tensor::from_i64(DType::I64, shape, (0..n as i64).collect())), &[])?;
                let none = cx.splat(DType::I64, &gt.dims, -1.0)?;
                let landed = cx.add(Op::Scatter { axis, reduction: ScatterReduction::None }, &[none, indices, ids])?;
                let winner = cx.gather_elements(landed, indices, ax)?;
                let won = cx.compare(CompareOp::Eq, winner, ids)?;
                let picked = gathered(cx)?;
                let zero = cx.splat_like(picked, 0.0)?;
                Some(cx.select(won, picked, zero)?)
            } else {
                None
            };
            Ok(vec![ddata, None, dupdates])
        }
    }
}

/// Sharding rule of `gather`: the data dimensions other than `axis` and every index dimension
/// are parallel (each maps to its place in the result); the gathered axis stays whole.
/// `scatter` has no rule (replicated).
pub fn sharding_rule_gather(data: &TensorType, indices: &TensorType, out: &TensorType, axis: i64) -> ShardingRule {
    let mut rule = ShardingRule::replicated(&[data, indices], std::slice::from_ref(out));
    let Some(ax) = normalize_axis(axis, data.rank()) else {
        return rule;
    };
    let mut od = 0;
    for d in 0..data.rank() {
        if d == ax {
            for i in 0..indices.rank() {
                let f = rule.factor(&indices.dims[i]);
                rule.operands[1][i] = Some(f);
                rule.results[0][od] = Some(f);
                od += 1;
            }
        } else {
            let f = rule.factor(&data.dims[d]);
            rule.operands[0][d] = Some(f);
            rule.results[0][od] = Some(f);
            od += 1;
        }
    }
    rule
}

#[cfg(test)]
mod eval_tests {
    use super::super::test_support::{assert_close, eval1, eval_err, f32s, i64s};
    use super::super::Op;
    use super::ScatterReduction;
    use crate::dtype::DType;
    use crate::tensor::Tensor;

    #[test]
    fn iota_gives_each_element_its_coordinate_along_the_axis() {
        let x = i64s(&[2, 3], &[9, 9, 9, 9, 9, 9]);
        let rows = eval1(&Op::Iota { axis: 0 }, &[&x]);
        assert_eq!((rows.shape.clone(), rows.to_i64_vec()), (vec![2, 3], vec![0, 0, 0, 1, 1, 1]));
        let columns = eval1(&Op::Iota { axis: -1 }, &[&x]);
        assert_eq!(columns.to_i64_vec(), vec![0, 1, 2, 0, 1, 2]);
        let floats = eval1(&Op::Iota { axis: 0 }, &[&f32s(&[3], &[7.0, 7.0, 7.0])]);
        assert_close(&floats, DType::F32, &[3], &[0.0, 1.0, 2.0], 0.0);
        let empty = eval1(&Op::Iota { axis: 0 }, &[&i64s(&[0], &[])]);
        assert!(empty.to_i64_vec().is_empty());
        assert!(eval_err(&Op::Iota { axis: 2 }, &[&x]).contains("out of range"));
        let flags = Tensor::from_i64(DType::Bool, vec![1], vec![1]);
        assert!(eval_err(&Op::Iota { axis: 0 }, &[&flags]).contains("integer or float"));
    }

    #[test]
    fn gather_rows_with_a_negative_index() {
        let data = f32s(&[3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let idx = i64s(&[2], &[-1, 0]);
        let t = eval1(&Op::Gather { axis: 0 }, &[&data, &idx]);
        assert_close(&t, DType::F32, &[2, 2], &[5.0, 6.0, 1.0, 2.0], 0.0);
    }

    #[test]
    fn gather_columns_with_matrix_indices() {
        let data = i64s(&[2, 3], &[1, 2, 3, 4, 5, 6]);
        let idx = Tensor::from_i64(DType::I32, vec![2, 2], vec![2, 0, 1, 1]);
        let t = eval1(&Op::Gather { axis: 1 }, &[&data, &idx]);
        assert_eq!((t.shape.clone(), t.to_i64_vec()), (vec![2, 2, 2], vec![3, 1, 2, 2, 6, 4, 5, 5]));
    }

    #[test]
    fn gather_out_of_range_names_the_index_and_the_bound() {
        let data = f32s(&[3], &[1.0, 2.0, 3.0]);
        let message = eval_err(&Op::Gather { axis: 0 }, &[&data, &i64s(&[2], &[0, 3])]);
        assert_eq!(message, "index 3 at indices[1] is out of range [-3, 3) for axis 0 of extent 3");
        let message = eval_err(&Op::Gather { axis: 0 }, &[&data, &i64s(&[1], &[-4])]);
        assert!(message.starts_with("index -4 at indices[0] is out of range [-3, 3)"), "{message}");
    }

    #[test]
    fn scatter_replaces_like_onnx_scatter_elements() {
        // The example of the ONNX ScatterElements specification.
        let data = f32s(&[3, 3], &[0.0; 9]);
        let idx = i64s(&[2, 3], &[1, 0, 2, 0, 2, 1]);
        let updates = f32s(&[2, 3], &[1.0, 1.1, 1.2, 2.0, 2.1, 2.2]);
        let op = Op::Scatter { axis: 0, reduction: ScatterReduction::None };
        let expected = [2.0, 1.1, 0.0, 1.0, 0.0, 2.2, 0.0, 2.1, 1.2];
        assert_close(&eval1(&op, &[&data, &idx, &updates]), DType::F32, &[3, 3], &expected, 1e-7);
    }

    #[test]
    fn scatter_add_accumulates_repeated_and_negative_indices() {
        let data = f64_row(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        let idx = i64s(&[1, 3], &[1, -4, 3]);
        let updates = f64_row(&[1.1, 2.1, 0.5]);
        let op = Op::Scatter { axis: 1, reduction: ScatterReduction::Add };
        let t = eval1(&op, &[&data, &idx, &updates]);
        assert_close(&t, DType::F64, &[1, 5], &[1.0, 5.2, 3.0, 4.5, 5.0], 1e-15);
        let message = eval_err(&op, &[&data, &i64s(&[1, 3], &[1, 5, 0]), &updates]);
        assert_eq!(message, "index 5 at indices[0, 1] is out of range [-5, 5) for axis 1 of extent 5");
    }

    #[test]
    fn scatter_rejects_updates_beyond_the_data_extent() {
        let data = f64_row(&[1.0, 2.0]);
        let idx = i64s(&[2, 1], &[0, 0]);
        let updates = Tensor::from_f64(DType::F64, vec![2, 1], vec![7.0, 8.0]);
        let message = eval_err(&Op::Scatter { axis: 1, reduction: ScatterReduction::None }, &[&data, &idx, &updates]);
        assert_eq!(message, "updates tensor<2x1xf64> do not fit in data tensor<1x2xf64> along dimension 0");
    }

    fn f64_row(values: &[f64]) -> Tensor {
        Tensor::from_f64(DType::F64, vec![1, values.len()], values.to_vec())
    }
}
