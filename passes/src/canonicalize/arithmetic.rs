//! Canonicalization rules for elementwise arithmetic: identities that hold for every value,
//! including NaN, infinities and signed zeros, under IEEE 754 and two's complement wrapping.
//!
//! Which float identities are exact: `x * 1`, `x / 1`, `x - (+0)` and `x + (-0)` give `x` for
//! every `x`. `x + (+0)` does not: `-0 + +0 = +0`; LLVM folds it only under `nsz`, and so
//! neither does tessera. `x * 0` is not `0` (NaN and infinity give NaN, negative `x` gives
//! `-0`), so nothing folds it.

use super::{is_splat, producer, Config, Rewrite, Splat};
use tessera_ir::graph::{Graph, NodeId, ValueId};
use tessera_ir::ops::elementwise::{BinaryOp, UnaryOp};
use tessera_ir::ops::Op;

fn operands2(g: &Graph, id: NodeId) -> Option<(ValueId, ValueId)> {
    match g.node(id).inputs.as_slice() {
        [a, b] => Some((*a, *b)),
        _ => None,
    }
}

/// The neutral element of `op` on the dtype of `v`, as a splat: `float` for float dtypes,
/// `int` otherwise.
fn neutral(g: &Graph, v: ValueId, float: f64, int: i64) -> Splat {
    if g.value(v).ty.dtype.is_float() {
        Splat::Float(float)
    } else {
        Splat::Int(int)
    }
}

/// The non-constant operand of the binary node `id` when the other one is a splat of
/// `neutral` (which must be on the right unless `commutes`).
fn identity_operand(g: &Graph, id: NodeId, op: BinaryOp, float: f64, int: i64, commutes: bool) -> Option<Rewrite> {
    if g.node(id).op != Op::Binary(op) {
        return None;
    }
    let (a, b) = operands2(g, id)?;
    if is_splat(g, b, neutral(g, b, float, int)) {
        return Some(Rewrite::Replace(vec![a]));
    }
    if commutes && is_splat(g, a, neutral(g, a, float, int)) {
        return Some(Rewrite::Replace(vec![b]));
    }
    None
}

/// cast(x: T, to = T) → x
pub fn cast_identity(g: &Graph, id: NodeId, _: &Config) -> Option<Rewrite> {
    let Op::Cast { to } = g.node(id).op else {
        return None;
    };
    let x = *g.node(id).inputs.first()?;
    (g.value(x).ty.dtype == to).then(|| Rewrite::Replace(vec![x]))
}

/// neg(neg(x)) → x (also for the most negative integer, which wraps to itself)
pub fn neg_of_neg(g: &Graph, id: NodeId, _: &Config) -> Option<Rewrite> {
    let neg = Op::Unary(UnaryOp::Neg);
    if g.node(id).op != neg {
        return None;
    }
    let (inner, inner_op) = producer(g, *g.node(id).inputs.first()?)?;
    if *inner_op != neg {
        return None;
    }
    Some(Rewrite::Replace(vec![*g.node(inner).inputs.first()?]))
}

/// x + (-0.0) → x, (-0.0) + x → x; x + 0 → x for integers
pub fn add_zero(g: &Graph, id: NodeId, _: &Config) -> Option<Rewrite> {
    identity_operand(g, id, BinaryOp::Add, -0.0, 0, true)
}

/// x - (+0.0) → x; x - 0 → x for integers
pub fn sub_zero(g: &Graph, id: NodeId, _: &Config) -> Option<Rewrite> {
    identity_operand(g, id, BinaryOp::Sub, 0.0, 0, false)
}

/// x * 1 → x, 1 * x → x
pub fn mul_one(g: &Graph, id: NodeId, _: &Config) -> Option<Rewrite> {
    identity_operand(g, id, BinaryOp::Mul, 1.0, 1, true)
}

/// x / 1 → x
pub fn div_one(g: &Graph, id: NodeId, _: &Config) -> Option<Rewrite> {
    identity_operand(g, id, BinaryOp::Div, 1.0, 1, false)
}

/// where(c, x, x) → x
pub fn where_same_branches(g: &Graph, id: NodeId, _: &Config) -> Option<Rewrite> {
    if g.node(id).op != Op::Where {
        return None;
    }
    match g.node(id).inputs.as_slice() {
        [_, a, b] if a == b => Some(Rewrite::Replace(vec![*a])),
        _ => None,
    }
}
