//! Constant folding: a node whose operands are all constants becomes a constant, computed with
//! the reference semantics (`Op::eval`), so folding agrees with the interpreter bit for bit.

use super::{producer, Config, Rewrite};
use tessera_ir::graph::{Graph, NodeId};
use tessera_ir::ops::Op;
use tessera_ir::tensor::Tensor;

/// op(c1, ..., cn) → constant(op(c1, ..., cn)) when every operand is a constant and the single
/// result has at most `fold-limit` elements
///
/// Multi-result ops (`split`) are not folded: their results would need new constant nodes
/// before their first use, and rewrites only change nodes in place. An op the reference
/// semantics rejects (integer division by zero, an index out of range) is left for the
/// runtime to report.
pub fn fold_constant(g: &Graph, id: NodeId, config: &Config) -> Option<Rewrite> {
    let node = g.node(id);
    if node.op.is_constant() || node.inputs.is_empty() || node.outputs.len() != 1 {
        return None;
    }
    let result = &g.value(node.outputs[0]).ty;
    if result.num_elements()? > config.fold_limit {
        return None;
    }
    let operands: Vec<&Tensor> = node
        .inputs
        .iter()
        .map(|&v| match producer(g, v)? {
            (_, Op::Constant(t)) => Some(t),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let mut values = node.op.eval(&operands, std::slice::from_ref(result)).ok()?;
    match (values.pop(), values.is_empty()) {
        (Some(value), true) => Some(Rewrite::Update { op: Op::Constant(value), inputs: vec![] }),
        _ => None,
    }
}
