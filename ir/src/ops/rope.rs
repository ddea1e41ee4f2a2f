//! `tsr.rope`: rotary position embedding `rope(x, cos, sin)`.
//!
//! `x` is `[..., seq, head_dim]`, `cos` and `sin` are `[seq, head_dim / 2]` (one angle per pair).
//! Non-interleaved (Llama/NeoX) pairs element `i` with `i + head_dim / 2`; interleaved (GPT-J)
//! pairs `2i` with `2i + 1`. Each pair `(a, b)` at position `s` with angle index `i` becomes
//! `(a cos[s, i] - b sin[s, i], a sin[s, i] + b cos[s, i])`, computed in `f64` and rounded once.
//!
//! The op has no attribute choosing the pairing yet: `tsr.rope` is the non-interleaved form.
//! [`eval`] implements both so the attribute can be added without new semantics.

use super::{expect_arity, floats, ShapeResult};
use crate::sharding::ShardingRule;
use crate::tensor::Tensor;
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

/// FLOPs: 3 per element (two multiplies, one add).
pub fn flops(out_elements: u128) -> u128 {
    out_elements.saturating_mul(3)
}

/// Which elements of a head form the rotated pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RopeLayout {
    /// Llama/NeoX: element `i` pairs with `i + head_dim / 2`.
    NonInterleaved,
    /// GPT-J: element `2i` pairs with `2i + 1`.
    Interleaved,
}

/// Rotates every `[..., seq, head_dim]` row of `x` by the angles in `cos`/`sin` (`[seq, head_dim / 2]`).
pub fn eval(x: &Tensor, cos: &Tensor, sin: &Tensor, layout: RopeLayout) -> Result<Tensor, String> {
    let (xv, cv, sv) = (floats(x)?, floats(cos)?, floats(sin)?);
    let rank = x.shape.len();
    if rank < 2 || x.shape[rank - 1] % 2 == 1 {
        return Err(format!("x must be [..., seq, head_dim] with an even head_dim, got {:?}", x.shape));
    }
    let (seq, head_dim) = (x.shape[rank - 2], x.shape[rank - 1]);
    let half = head_dim / 2;
    if cv.len() != seq * half || sv.len() != seq * half {
        return Err(format!("cos and sin must have {seq} x {half} elements"));
    }
    let mut out = vec![0.0; xv.len()];
    for (row, (src, dst)) in xv.chunks_exact(head_dim.max(1)).zip(out.chunks_exact_mut(head_dim.max(1))).enumerate() {
        let s = row % seq.max(1);
        for i in 0..half {
            let (ia, ib) = match layout {
                RopeLayout::NonInterleaved => (i, i + half),
                RopeLayout::Interleaved => (2 * i, 2 * i + 1),
            };
            let (a, b) = (src[ia], src[ib]);
            let (c, sn) = (cv[s * half + i], sv[s * half + i]);
            dst[ia] = a * c - b * sn;
            dst[ib] = a * sn + b * c;
        }
    }
    Ok(Tensor::from_f64(x.dtype, x.shape.clone(), out))
}

/// Sharding rule: the leading dimensions of `x` are parallel, the sequence dimension too
/// (shared with the rows of `cos`/`sin`); the head dimension stays whole (it is rotated in pairs).
pub fn sharding_rule(x: &TensorType, cos: &TensorType, sin: &TensorType) -> ShardingRule {
    let mut rule = ShardingRule::replicated(&[x, cos, sin], std::slice::from_ref(x));
    let r = x.rank();
    for d in 0..r.saturating_sub(1) {
        let f = rule.factor(&x.dims[d]);
        rule.operands[0][d] = Some(f);
        rule.results[0][d] = Some(f);
        if d + 2 == r {
            rule.operands[1][0] = Some(f);
            rule.operands[2][0] = Some(f);
        }
    }
    rule
}

#[cfg(test)]
mod eval_tests {
    use super::super::test_support::{assert_close, eval1, f64s};
    use super::super::Op;
    use crate::dtype::DType;

    /// Position 0 has angle 0 for both pairs; position 1 has 90° for pair 0 and 180° for pair 1.
    fn tables() -> (crate::tensor::Tensor, crate::tensor::Tensor) {
        (f64s(&[2, 2], &[1.0, 1.0, 0.0, -1.0]), f64s(&[2, 2], &[0.0, 0.0, 1.0, 0.0]))
    }

    #[test]
    fn non_interleaved_pairs_i_with_i_plus_half() {
        let (cos, sin) = tables();
        // Two batches, so the position index must restart per batch.
        let x = f64s(&[2, 2, 4], &[1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0]);
        // Position 1: (x0, x2) = (1, 3) turns 90° to (-3, 1); (x1, x3) = (2, 4) turns 180°.
        let row0 = [1.0, 2.0, 3.0, 4.0];
        let row1 = [-3.0, -2.0, 1.0, -4.0];
        let expected: Vec<f64> = [row0, row1, row0, row1].concat();
        assert_close(
            &eval1(&Op::Rope { interleaved: false }, &[&x, &cos, &sin]),
            DType::F64,
            &[2, 2, 4],
            &expected,
            1e-15,
        );
    }

    #[test]
    fn interleaved_pairs_neighbours() {
        let (cos, sin) = tables();
        let x = f64s(&[2, 4], &[1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0]);
        // Position 1: (x0, x1) = (1, 2) turns 90° to (-2, 1); (x2, x3) = (3, 4) turns 180°.
        let t = eval1(&Op::Rope { interleaved: true }, &[&x, &cos, &sin]);
        assert_close(&t, DType::F64, &[2, 4], &[1.0, 2.0, 3.0, 4.0, -2.0, 1.0, -3.0, -4.0], 1e-15);
    }

    #[test]
    fn general_angle() {
        let (c, s) = (0.6f64, 0.8f64);
        let x = f64s(&[1, 2], &[2.0, 1.0]);
        let t = eval1(&Op::Rope { interleaved: false }, &[&x, &f64s(&[1, 1], &[c]), &f64s(&[1, 1], &[s])]);
        assert_close(&t, DType::F64, &[1, 2], &[2.0 * c - s, 2.0 * s + c], 1e-15);
    }
}
