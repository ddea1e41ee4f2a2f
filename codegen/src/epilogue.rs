//! Epilogue fusion: a fusion group that is the only reader of a GEMM's or a convolution's
//! result, and is elementwise over that result (bias add, activation, residual add, in any
//! order and combination), becomes an [`Epilogue`] of the library call
//! ([`LibraryCall::WithEpilogue`]) instead of a kernel step of its own: the runtime applies it
//! to each block of the output right after computing it, while the block is in cache.
//!
//! What a group must be to fold (else it stays a kernel, as before):
//! - its one result used outside it has the call's result shape, and is its last op's result;
//! - the call's result is read by this group only, and is not a program output;
//! - every op is [`Epilogue::supports_unary`] / [`Epilogue::supports_binary`] on f32, or a
//!   `tsr.broadcast` of a value from outside the group to the result shape whose non-1
//!   dimensions are one run of the result's (a bias over a matmul's columns or a convolution's
//!   channels, a scalar); any other outside value read by an op has the result shape (a
//!   residual).

use std::collections::HashMap;
use tessera_ir::artifact::{Epilogue, EpilogueOp, EpilogueOperand, LibraryCall};
use tessera_ir::dtype::DType;
use tessera_ir::graph::{Graph, NodeId, ValueId};
use tessera_ir::ops::Op;

/// A fusion group folded into the library call that produced its operand.
#[derive(Debug, Clone)]
pub(crate) struct Folded {
    /// The GEMM or convolution node the group reads.
    pub producer: NodeId,
    /// The values the runtime reads beside the call's own operands, in operand order.
    pub operands: Vec<ValueId>,
    pub epilogue: Epilogue,
    /// The group's result: what the fused step writes.
    pub output: ValueId,
}

/// Who reads each value, and which values the graph returns.
pub(crate) struct Readers {
    readers: HashMap<ValueId, Vec<NodeId>>,
    returned: std::collections::HashSet<ValueId>,
}

impl Readers {
    pub fn of(g: &Graph) -> Readers {
        let mut readers: HashMap<ValueId, Vec<NodeId>> = HashMap::new();
        for (id, node) in g.nodes() {
            for &v in &node.inputs {
                readers.entry(v).or_default().push(id);
            }
        }
        Readers { readers, returned: g.outputs().iter().copied().collect() }
    }

    fn read_only_by(&self, v: ValueId, inside: &std::collections::HashSet<NodeId>) -> bool {
        !self.returned.contains(&v) && self.readers.get(&v).is_some_and(|r| r.iter().all(|n| inside.contains(n)))
    }
}

/// Folds the fusion group `members` (in program order) into the library call of the node that
/// produces one of its operands, if the group is an epilogue of it (see the module docs).
/// `is_call` says whether a node lowers to a GEMM or convolution library call.
pub(crate) fn fold(
    g: &Graph,
    readers: &Readers,
    members: &[NodeId],
    is_call: &dyn Fn(NodeId) -> bool,
) -> Option<Folded> {
    let inside: std::collections::HashSet<NodeId> = members.iter().copied().collect();
    let produced_inside = |v: ValueId| g.producer(v).is_some_and(|p| inside.contains(&p));
    let results: Vec<ValueId> = members
        .iter()
        .flat_map(|&m| g.node(m).outputs.iter().copied())
        .filter(|&v| !readers.read_only_by(v, &inside))
        .collect();
    let [output] = results[..] else { return None };
    let last = *members.last()?;
    if g.node(last).outputs[..] != [output] {
        return None;
    }
    let shape = f32_shape(g, output)?;
    // The call result: an operand from outside, produced by a GEMM or convolution with one
    // result, of the output's shape, read by nobody else.
    let source = members.iter().flat_map(|&m| g.node(m).inputs.iter().copied()).find(|&v| {
        !produced_inside(v)
            && g.producer(v).is_some_and(|p| is_call(p) && g.node(p).outputs.len() == 1)
            && f32_shape(g, v).as_ref() == Some(&shape)
            && readers.read_only_by(v, &inside)
    })?;
    let producer = g.producer(source)?;
    let mut code = vec![EpilogueOp::Result];
    let mut value_of: HashMap<ValueId, u32> = HashMap::from([(source, 0)]);
    let mut operands: Vec<ValueId> = Vec::new();
    let mut patterns: Vec<EpilogueOperand> = Vec::new();
    // The instruction that reads outside value `v` broadcast by `pattern`.
    let mut operand = |v: ValueId, pattern: EpilogueOperand, code: &mut Vec<EpilogueOp>| -> u32 {
        let index = match operands.iter().position(|&o| o == v) {
            Some(i) if patterns[i] == pattern => i,
            _ => {
                operands.push(v);
                patterns.push(pattern);
                operands.len() - 1
            }
        };
        code.push(EpilogueOp::Operand { index: index as u32 });
        code.len() as u32 - 1
    };
    for &m in members {
        let node = g.node(m);
        let [result] = node.outputs[..] else { return None };
        if f32_shape(g, result).as_ref() != Some(&shape) {
            return None;
        }
        let mut read = |v: ValueId, code: &mut Vec<EpilogueOp>| -> Option<u32> {
            if let Some(&j) = value_of.get(&v) {
                return Some(j);
            }
            if produced_inside(v) || f32_shape(g, v).as_ref() != Some(&shape) {
                return None;
            }
            let full = EpilogueOperand { inner: 1, extent: shape.iter().product() };
            Some(operand(v, full, code))
        };
        let j = match &node.op {
            Op::Broadcast { .. } => {
                let x = node.inputs[0];
                if produced_inside(x) {
                    return None;
                }
                let pattern = broadcast_pattern(&f32_shape(g, x)?, &shape)?;
                operand(x, pattern, &mut code)
            }
            Op::Unary(unary) if Epilogue::supports_unary(*unary) => {
                let x = read(node.inputs[0], &mut code)?;
                code.push(EpilogueOp::Unary { unary: *unary, x });
                code.len() as u32 - 1
            }
            Op::Binary(binary) if Epilogue::supports_binary(*binary) => {
                let a = read(node.inputs[0], &mut code)?;
                let b = read(node.inputs[1], &mut code)?;
                code.push(EpilogueOp::Binary { binary: *binary, a, b });
                code.len() as u32 - 1
            }
            _ => return None,
        };
        value_of.insert(result, j);
    }
    if value_of.get(&output) != Some(&(code.len() as u32 - 1)) {
        return None;
    }
    let epilogue = Epilogue { operands: patterns, code };
    epilogue.check().ok()?;
    Some(Folded { producer, operands, epilogue, output })
}

/// The static shape of an f32 value.
fn f32_shape(g: &Graph, v: ValueId) -> Option<Vec<u64>> {
    let ty = &g.value(v).ty;
    if ty.dtype != DType::F32 {
        return None;
    }
    ty.static_shape()
}

/// How an operand of shape `from`, broadcast (NumPy trailing alignment) to `to`, is read at a
/// flat index of the result, if its non-1 dimensions are one run of `to`'s.
fn broadcast_pattern(from: &[u64], to: &[u64]) -> Option<EpilogueOperand> {
    let offset = to.len().checked_sub(from.len())?;
    let dim = |i: usize| if i < offset { 1 } else { from[i - offset] };
    if (0..to.len()).any(|i| dim(i) != 1 && dim(i) != to[i]) {
        return None;
    }
    let varying: Vec<usize> = (0..to.len()).filter(|&i| dim(i) != 1).collect();
    let (Some(&first), Some(&last)) = (varying.first(), varying.last()) else {
        return Some(EpilogueOperand { inner: 1, extent: 1 });
    };
    if (first..=last).any(|i| dim(i) != to[i]) {
        return None;
    }
    Some(EpilogueOperand { inner: to[last + 1..].iter().product(), extent: to[first..=last].iter().product() })
}

/// Whether `call` is one an epilogue may follow.
pub(crate) fn takes_epilogue(call: &LibraryCall) -> bool {
    matches!(call, LibraryCall::MatMul | LibraryCall::MatMulTransposedB | LibraryCall::Conv2d { .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_patterns_follow_the_run_of_varying_dimensions() {
        let p = |inner, extent| Some(EpilogueOperand { inner, extent });
        // Bias over a matmul's columns, over a convolution's channels, a scalar, a residual.
        assert_eq!(broadcast_pattern(&[8], &[4, 8]), p(1, 8));
        assert_eq!(broadcast_pattern(&[16, 1, 1], &[1, 16, 5, 7]), p(35, 16));
        assert_eq!(broadcast_pattern(&[1], &[2, 3]), p(1, 1));
        assert_eq!(broadcast_pattern(&[], &[2, 3]), p(1, 1));
        assert_eq!(broadcast_pattern(&[2, 3], &[2, 3]), p(1, 6));
        // A run with a broadcast dimension inside it is not one pattern; neither is a mismatch.
        assert_eq!(broadcast_pattern(&[2, 1, 3], &[2, 4, 3]), None);
        assert_eq!(broadcast_pattern(&[5], &[2, 3]), None);
        assert_eq!(broadcast_pattern(&[2, 3, 4], &[3, 4]), None);
    }
}
