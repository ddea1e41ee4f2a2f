//! Normalizing ops: `tsr.softmax`, `tsr.layer_norm`, `tsr.rms_norm`.
//!
//! Layer and RMS norm normalize over the dimensions from `axis` to the end (ONNX's convention);
//! their scale (and bias) have exactly those trailing dimensions.

use super::{expect_arity, ShapeResult};
use crate::types::{normalize_axis, TensorType};

pub fn infer_softmax(inputs: &[&TensorType], axis: i64) -> ShapeResult {
    expect_arity(inputs, 1)?;
    let x = inputs[0];
    check_float_axis(x, axis)?;
    Ok(vec![x.clone()])
}

/// `layer_norm(x, scale, bias)` when `with_bias`, `rms_norm(x, scale)` otherwise.
pub fn infer_norm(inputs: &[&TensorType], axis: i64, with_bias: bool) -> ShapeResult {
    expect_arity(inputs, if with_bias { 3 } else { 2 })?;
    let x = inputs[0];
    let axis = check_float_axis(x, axis)?;
    let normalized = TensorType::new(x.dtype, x.dims[axis..].to_vec());
    for (param, name) in inputs[1..].iter().zip(["scale", "bias"]) {
        if **param != normalized {
            return Err(format!("{name} must have type {normalized}, got {param}"));
        }
    }
    Ok(vec![x.clone()])
}

fn check_float_axis(x: &TensorType, axis: i64) -> Result<usize, String> {
    if !x.dtype.is_float() {
        return Err(format!("input must be a float tensor, got {x}"));
    }
    normalize_axis(axis, x.rank()).ok_or_else(|| format!("axis {axis} is out of range for {x}"))
}
