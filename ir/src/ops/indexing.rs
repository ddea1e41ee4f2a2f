//! Indexing ops: `tsr.gather` (ONNX Gather) and `tsr.scatter` (ONNX ScatterElements, with an
//! optional `add` reduction, which is also the gradient of gather).

use super::elementwise::named_enum;
use super::{expect_arity, ShapeResult};
use crate::dtype::DType;
use crate::types::{normalize_axis, TensorType};

named_enum!(
    /// How `scatter` combines an update with the value already there.
    ScatterReduction { None = "none", Add = "add" }
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

/// `scatter(data, indices, updates)`: a copy of `data` where, for each position `p` of
/// `updates`, the element at `p` with coordinate `axis` replaced by `indices[p]` takes (or, with
/// `add`, accumulates) `updates[p]`.
pub fn infer_scatter(inputs: &[&TensorType], axis: i64) -> ShapeResult {
    expect_arity(inputs, 3)?;
    let (data, indices, updates) = (inputs[0], inputs[1], inputs[2]);
    check_indices(indices)?;
    normalize_axis(axis, data.rank()).ok_or_else(|| format!("axis {axis} is out of range for {data}"))?;
    if updates.dtype != data.dtype {
        return Err(format!("updates {updates} must have the element type of data {data}"));
    }
    if indices.dims != updates.dims || updates.rank() != data.rank() {
        return Err(format!(
            "indices {indices} and updates {updates} must have one shape, of the rank of data {data}"
        ));
    }
    Ok(vec![data.clone()])
}
