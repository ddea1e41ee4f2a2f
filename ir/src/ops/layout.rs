//! Data-movement ops that change shape but not values: `tsr.broadcast`, `tsr.reshape`,
//! `tsr.transpose`, `tsr.slice`, `tsr.concat`, `tsr.split`.
//!
//! `broadcast` and `reshape` take their target shape from the result type, so the text form
//! carries it once (including symbolic names).

use super::{expect_arity, ShapeResult};
use crate::types::{normalize_axis, Dim, TensorType};

/// NumPy-style broadcast of `x` to `target`: trailing dimensions align, each input dimension
/// equals the target's or is 1.
pub fn infer_broadcast(inputs: &[&TensorType], target: &[Dim]) -> ShapeResult {
    expect_arity(inputs, 1)?;
    let x = inputs[0];
    let out = TensorType::new(x.dtype, target.to_vec());
    if x.rank() > target.len() {
        return Err(format!("cannot broadcast {x} to lower rank {out}"));
    }
    let offset = target.len() - x.rank();
    for (i, d) in x.dims.iter().enumerate() {
        if *d != Dim::Static(1) && *d != target[offset + i] {
            return Err(format!("dimension {i} of {x} does not broadcast to {out}"));
        }
    }
    Ok(vec![out])
}

/// Reshape to `target`. With symbolic dimensions the element counts must agree symbol for
/// symbol (the same names on both sides) and in the product of the static dimensions.
pub fn infer_reshape(inputs: &[&TensorType], target: &[Dim]) -> ShapeResult {
    expect_arity(inputs, 1)?;
    let x = inputs[0];
    let out = TensorType::new(x.dtype, target.to_vec());
    let static_product = |t: &TensorType| -> u64 { t.dims.iter().filter_map(Dim::as_static).product() };
    let mut syms_in: Vec<&str> = x.symbols().collect();
    let mut syms_out: Vec<&str> = out.symbols().collect();
    syms_in.sort_unstable();
    syms_out.sort_unstable();
    if syms_in != syms_out || static_product(x) != static_product(&out) {
        return Err(format!("cannot reshape {x} to {out}: element counts differ"));
    }
    Ok(vec![out])
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
        let n = if e > s { (e - s + step - 1) / step } else { 0 };
        (s, n)
    } else {
        let s = clamp(norm(start), -1, len - 1);
        let e = clamp(norm(end), -1, len - 1);
        let n = if s > e { (s - e + (-step) - 1) / (-step) } else { 0 };
        (s, n)
    }
}

/// Strided slice with one `start`, `end`, `step` per dimension. A symbolic dimension may only
/// be kept whole (`start = 0`, `end >= i64::MAX / 2`, `step = 1`).
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
            Dim::Symbolic(s) => {
                if starts[i] != 0 || ends[i] < i64::MAX / 2 || steps[i] != 1 {
                    return Err(format!("symbolic dimension '{s}' can only be kept whole by a slice"));
                }
                dims.push(x.dims[i].clone());
            }
        }
    }
    Ok(vec![TensorType::new(x.dtype, dims)])
}

pub fn infer_concat(inputs: &[&TensorType], axis: i64) -> ShapeResult {
    let first = *inputs.first().ok_or("concat needs at least one operand")?;
    let ax = normalize_axis(axis, first.rank())
        .ok_or_else(|| format!("axis {axis} is out of range for {first}"))?;
    let mut total = 0u64;
    for t in inputs {
        let same_elsewhere = t.rank() == first.rank()
            && t.dtype == first.dtype
            && (0..t.rank()).all(|i| i == ax || t.dims[i] == first.dims[i]);
        if !same_elsewhere {
            return Err(format!("operand {t} does not match {first} outside axis {axis}"));
        }
        match &t.dims[ax] {
            Dim::Static(n) => total += n,
            Dim::Symbolic(_) if inputs.len() == 1 => return Ok(vec![(*t).clone()]),
            Dim::Symbolic(s) => return Err(format!("cannot concatenate along symbolic dimension '{s}'")),
        }
    }
    let mut dims = first.dims.clone();
    dims[ax] = Dim::Static(total);
    Ok(vec![TensorType::new(first.dtype, dims)])
}

pub fn infer_split(inputs: &[&TensorType], axis: i64, sizes: &[i64]) -> ShapeResult {
    expect_arity(inputs, 1)?;
    let x = inputs[0];
    let ax = normalize_axis(axis, x.rank()).ok_or_else(|| format!("axis {axis} is out of range for {x}"))?;
    let n = x.dims[ax].as_static().ok_or_else(|| format!("cannot split symbolic dimension {}", x.dims[ax]))?;
    if sizes.is_empty() || sizes.iter().any(|&s| s < 0) || sizes.iter().sum::<i64>() as u64 != n {
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
