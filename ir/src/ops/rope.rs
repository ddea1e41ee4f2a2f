//! `tsr.rope`: rotary position embedding `rope(x, cos, sin)`.
//!
//! `x` is `[..., seq, head_dim]`, `cos` and `sin` are `[seq, head_dim / 2]` (one angle per pair).
//! Non-interleaved (Llama/NeoX) pairs element `i` with `i + head_dim / 2`; interleaved (GPT-J)
//! pairs `2i` with `2i + 1`. Each pair `(a, b)` becomes `(a cos - b sin, a sin + b cos)`.

use super::{expect_arity, ShapeResult};
use crate::types::{Dim, TensorType};

pub fn infer(inputs: &[&TensorType]) -> ShapeResult {
    expect_arity(inputs, 3)?;
    let (x, cos, sin) = (inputs[0], inputs[1], inputs[2]);
    if x.rank() < 2 || !x.dtype.is_float() {
        return Err(format!("x must be a float tensor [..., seq, head_dim], got {x}"));
    }
    let head_dim = x.dims[x.rank() - 1]
        .as_static()
        .filter(|d| d % 2 == 0)
        .ok_or_else(|| format!("head dimension of {x} must be static and even"))?;
    let table = TensorType::new(x.dtype, vec![x.dims[x.rank() - 2].clone(), Dim::Static(head_dim / 2)]);
    for (t, name) in [(cos, "cos"), (sin, "sin")] {
        if *t != table {
            return Err(format!("{name} must have type {table}, got {t}"));
        }
    }
    Ok(vec![x.clone()])
}
