//! `tsr.rope`: rotary position embedding `rope(x, cos, sin)`.
//!
//! `x` is `[..., seq, head_dim]`, `cos` and `sin` are `[seq, head_dim / 2]` (one angle per pair).
//! Non-interleaved (Llama/NeoX) pairs element `i` with `i + head_dim / 2`; interleaved (GPT-J)
//! pairs `2i` with `2i + 1`. Each pair `(a, b)` at position `s` with angle index `i` becomes
//! `(a cos[s, i] - b sin[s, i], a sin[s, i] + b cos[s, i])`, computed in `f64` and rounded once.
//!
//! The op has no attribute choosing the pairing yet: `tsr.rope` is the non-interleaved form.
//! [`eval`] implements both so the attribute can be added without new semantics.

use super::gradient::{GradContext, GradError, GradResult};
use super::Op;
use super::{expect_arity, floats, ShapeResult};
use crate::graph::ValueId;
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
    let (xv, cv, sv) = (&*xv, &*cv, &*sv);
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

// ---------------------------------------------------------------------------------------------
// Gradient rule

/// The rotation is orthogonal, so `dx = rope(g, cos, -sin)`. With `(a, b)` the pairs of `x`
/// and `(ga, gb)` those of `g`: `dcos = sum(ga * a + gb * b)` and `dsin = sum(gb * a - ga * b)`
/// over the leading dimensions.
pub fn grad(
    cx: &mut GradContext,
    (x, cos, sin, g): (ValueId, ValueId, ValueId, ValueId),
    interleaved: bool,
    wanted: &[bool],
) -> GradResult {
    let op = Op::Rope { interleaved };
    let dx = if wanted[0] {
        let minus_sin = cx.neg(sin)?;
        Some(cx.add(op, &[g, cos, minus_sin])?)
    } else {
        None
    };
    if !wanted[1] && !wanted[2] {
        return Ok(vec![dx, None, None]);
    }
    let t = cx.ty(x);
    let r = t.rank();
    let half = t.dims[r - 1].as_static().unwrap_or(0) / 2;
    // The two members of every pair as `[..., seq, head_dim / 2]` tensors.
    let pairs = |cx: &mut GradContext, v: ValueId| -> Result<(ValueId, ValueId), GradError> {
        if interleaved {
            let mut dims = t.dims[..r - 1].to_vec();
            dims.extend([Dim::Static(half), Dim::Static(2)]);
            let v = cx.reshape(v, &dims)?;
            let parts = cx.graph.add_node(Op::Split { axis: r as i64, sizes: vec![1, 1] }, &[v])?;
            let mut out = t.dims[..r - 1].to_vec();
            out.push(Dim::Static(half));
            Ok((cx.reshape(parts[0], &out)?, cx.reshape(parts[1], &out)?))
        } else {
            let parts =
                cx.graph.add_node(Op::Split { axis: (r - 1) as i64, sizes: vec![half as i64, half as i64] }, &[v])?;
            Ok((parts[0], parts[1]))
        }
    };
    let (a, b) = pairs(cx, x)?;
    let (ga, gb) = pairs(cx, g)?;
    let table = cx.ty(cos);
    let dcos = if wanted[1] {
        let p = cx.mul(ga, a)?;
        let q = cx.mul(gb, b)?;
        let s = cx.add2(p, q)?;
        Some(cx.sum_to(s, &table)?)
    } else {
        None
    };
    let dsin = if wanted[2] {
        let p = cx.mul(gb, a)?;
        let q = cx.mul(ga, b)?;
        let s = cx.sub(p, q)?;
        Some(cx.sum_to(s, &table)?)
    } else {
        None
    };
    Ok(vec![dx, dcos, dsin])
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
