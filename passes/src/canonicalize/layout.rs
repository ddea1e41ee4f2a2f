//! Canonicalization rules for data-movement ops: transpose, reshape, broadcast, slice, concat,
//! split. Each removes an op that moves nothing or merges two moves into one.

use super::{producer, Config, Rewrite};
use tessera_ir::graph::{Graph, NodeId, ValueId};
use tessera_ir::ops::layout::slice_extent;
use tessera_ir::ops::Op;
use tessera_ir::types::Dim;

/// The only operand of `id` when its op is unary in data.
fn only_input(g: &Graph, id: NodeId) -> Option<ValueId> {
    match g.node(id).inputs.as_slice() {
        [x] => Some(*x),
        _ => None,
    }
}

/// Whether the single result of `id` has exactly the type of its only operand.
fn keeps_type(g: &Graph, id: NodeId) -> Option<ValueId> {
    let x = only_input(g, id)?;
    let node = g.node(id);
    (node.outputs.len() == 1 && g.value(node.outputs[0]).ty == g.value(x).ty).then_some(x)
}

fn is_identity_perm(perm: &[i64]) -> bool {
    perm.iter().enumerate().all(|(i, &p)| p == i as i64)
}

/// transpose(x, [0, 1, ..., n-1]) → x
pub fn transpose_identity(g: &Graph, id: NodeId, _: &Config) -> Option<Rewrite> {
    let Op::Transpose { perm } = &g.node(id).op else {
        return None;
    };
    if !is_identity_perm(perm) {
        return None;
    }
    Some(Rewrite::Replace(vec![only_input(g, id)?]))
}

/// transpose(transpose(x, p), q) → transpose(x, [p[q[0]], ..., p[q[n-1]]]), or x when that is
/// the identity
pub fn transpose_of_transpose(g: &Graph, id: NodeId, _: &Config) -> Option<Rewrite> {
    let Op::Transpose { perm: q } = &g.node(id).op else {
        return None;
    };
    let (inner, inner_op) = producer(g, only_input(g, id)?)?;
    let Op::Transpose { perm: p } = inner_op else {
        return None;
    };
    // Result dimension i is the inner result's dimension q[i], which is x's dimension p[q[i]].
    let composed: Vec<i64> = q.iter().map(|&qi| p.get(usize::try_from(qi).ok()?).copied()).collect::<Option<_>>()?;
    let x = only_input(g, inner)?;
    if is_identity_perm(&composed) {
        return Some(Rewrite::Replace(vec![x]));
    }
    Some(Rewrite::Update { op: Op::Transpose { perm: composed }, inputs: vec![x] })
}

/// reshape(x) → x when the target type is x's type
pub fn reshape_identity(g: &Graph, id: NodeId, _: &Config) -> Option<Rewrite> {
    let Op::Reshape { .. } = g.node(id).op else {
        return None;
    };
    Some(Rewrite::Replace(vec![keeps_type(g, id)?]))
}

/// reshape(reshape(x, s1), s2) → reshape(x, s2): both are row-major reinterpretations
pub fn reshape_of_reshape(g: &Graph, id: NodeId, _: &Config) -> Option<Rewrite> {
    let Op::Reshape { shape } = &g.node(id).op else {
        return None;
    };
    let (inner, inner_op) = producer(g, only_input(g, id)?)?;
    let Op::Reshape { .. } = inner_op else {
        return None;
    };
    Some(Rewrite::Update { op: Op::Reshape { shape: shape.clone() }, inputs: vec![only_input(g, inner)?] })
}

/// broadcast(x) → x when the target type is x's type
pub fn broadcast_identity(g: &Graph, id: NodeId, _: &Config) -> Option<Rewrite> {
    let Op::Broadcast { .. } = g.node(id).op else {
        return None;
    };
    Some(Rewrite::Replace(vec![keeps_type(g, id)?]))
}

/// broadcast(broadcast(x, s1), s2) → broadcast(x, s2): every dimension of x is 1 or already
/// the final extent
pub fn broadcast_of_broadcast(g: &Graph, id: NodeId, _: &Config) -> Option<Rewrite> {
    let Op::Broadcast { shape } = &g.node(id).op else {
        return None;
    };
    let (inner, inner_op) = producer(g, only_input(g, id)?)?;
    let Op::Broadcast { .. } = inner_op else {
        return None;
    };
    Some(Rewrite::Update { op: Op::Broadcast { shape: shape.clone() }, inputs: vec![only_input(g, inner)?] })
}

/// slice(x) → x when it selects every element in order
pub fn slice_identity(g: &Graph, id: NodeId, _: &Config) -> Option<Rewrite> {
    let Op::Slice { steps, .. } = &g.node(id).op else {
        return None;
    };
    let x = keeps_type(g, id)?;
    // Equal types mean each dimension keeps its extent n. With step 1 that is 0..n in order;
    // with n <= 1 any step selects the same elements; a step of -1 over n > 1 would reverse.
    let in_order = g.value(x).ty.dims.iter().zip(steps).all(|(d, &step)| match d {
        Dim::Static(n) => *n <= 1 || step == 1,
        Dim::Symbolic(_) => step == 1,
    });
    in_order.then(|| Rewrite::Replace(vec![x]))
}

/// slice(slice(x, s1, e1, t1), s2, e2, t2) → slice(x, s1 + t1·s2, .., t1·t2) per dimension,
/// for positive steps (the e-graph's merged projections come out as such pairs)
pub fn slice_of_slice(g: &Graph, id: NodeId, _: &Config) -> Option<Rewrite> {
    let Op::Slice { starts: s2, ends: e2, steps: t2 } = &g.node(id).op else {
        return None;
    };
    let (inner, inner_op) = producer(g, only_input(g, id)?)?;
    let Op::Slice { starts: s1, ends: e1, steps: t1 } = inner_op else {
        return None;
    };
    let x = only_input(g, inner)?;
    let dims = &g.value(x).ty.dims;
    let (mut starts, mut ends, mut steps) = (Vec::new(), Vec::new(), Vec::new());
    for (i, d) in dims.iter().enumerate() {
        let (t1, t2) = (*t1.get(i)?, *t2.get(i)?);
        if t1 <= 0 || t2 <= 0 {
            return None;
        }
        match d {
            // The shape rule only lets a symbolic dimension through whole, so both keep it.
            Dim::Symbolic(_) => {
                starts.push(0);
                ends.push(i64::MAX);
                steps.push(1);
            }
            Dim::Static(n) => {
                let (a1, c1) = slice_extent(i64::try_from(*n).ok()?, *s1.get(i)?, *e1.get(i)?, t1);
                let (a2, c2) = slice_extent(c1, *s2.get(i)?, *e2.get(i)?, t2);
                let start = a1.checked_add(t1.checked_mul(a2)?)?;
                let step = t1.checked_mul(t2)?;
                // One past the last selected element selects exactly c2 elements.
                let end =
                    if c2 == 0 { start } else { start.checked_add((c2 - 1).checked_mul(step)?)?.checked_add(1)? };
                starts.push(start);
                ends.push(end);
                steps.push(step);
            }
        }
    }
    Some(Rewrite::Update { op: Op::Slice { starts, ends, steps }, inputs: vec![x] })
}

/// concat(x) → x
pub fn concat_single(g: &Graph, id: NodeId, _: &Config) -> Option<Rewrite> {
    let Op::Concat { .. } = g.node(id).op else {
        return None;
    };
    Some(Rewrite::Replace(vec![keeps_type(g, id)?]))
}

/// split(x, sizes = [n]) → x
pub fn split_single(g: &Graph, id: NodeId, _: &Config) -> Option<Rewrite> {
    let Op::Split { sizes, .. } = &g.node(id).op else {
        return None;
    };
    if sizes.len() != 1 {
        return None;
    }
    Some(Rewrite::Replace(vec![keeps_type(g, id)?]))
}
