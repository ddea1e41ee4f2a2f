//! `tsr.matmul`: (batched) matrix multiplication `[..., m, k] x [..., k, n] -> [..., m, n]`.
//!
//! Leading batch dimensions broadcast as in NumPy (a dimension of 1 stretches), so a weight
//! `[k, n]` multiplies activations `[batch, seq, k]` without a reshape.

use super::{broadcast_dims, expect_arity, ShapeResult};
use crate::types::TensorType;

pub fn infer(inputs: &[&TensorType]) -> ShapeResult {
    expect_arity(inputs, 2)?;
    let (a, b) = (inputs[0], inputs[1]);
    if a.rank() < 2 || b.rank() < 2 {
        return Err(format!("operands must have rank >= 2, got {a} and {b}"));
    }
    if a.dtype != b.dtype {
        return Err(format!("operand element types differ: {} and {}", a.dtype, b.dtype));
    }
    if !a.dtype.is_float() && !a.dtype.is_int() {
        return Err(format!("matmul is not defined on {}", a.dtype));
    }
    let (ra, rb) = (a.rank(), b.rank());
    let k_a = &a.dims[ra - 1];
    let k_b = &b.dims[rb - 2];
    if k_a != k_b {
        return Err(format!("contracting dimensions differ: {k_a} (of {a}) vs {k_b} (of {b})"));
    }
    let mut dims = broadcast_dims(&a.dims[..ra - 2], &b.dims[..rb - 2])
        .ok_or_else(|| format!("batch dimensions of {a} and {b} do not broadcast"))?;
    dims.push(a.dims[ra - 2].clone());
    dims.push(b.dims[rb - 1].clone());
    Ok(vec![TensorType::new(a.dtype, dims)])
}
