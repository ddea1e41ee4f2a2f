//! Reverse-mode automatic differentiation of tsr graphs.
//!
//! [`differentiate`] appends to a graph the nodes computing the gradient of a scalar float
//! value (the loss) with respect to chosen values (usually the graph inputs of role
//! `Parameter`), by walking the original nodes in reverse program order and asking each op's
//! gradient rule ([`tessera_ir::ops::Op::gradient`], beside its shape rule) for the adjoints of
//! its operands. The backward graph is made of ordinary tsr ops, so every later pass, the
//! verifier and the interpreter treat it like any other graph.
//!
//! Invariants:
//! - Only *active* values get adjoints: floats that depend on a differentiated value
//!   (forward) and reach the loss (backward). Integer and boolean values never carry adjoints,
//!   so ops with such results (comparisons, `argmax`, casts to integers) contribute zero, as
//!   their derivative is zero wherever it exists.
//! - An active path through an op that is not differentiable (an optimizer update) is an
//!   error naming the op, never a silent zero.
//! - The adjoint of a value has the value's type; a value used several times receives the sum
//!   of its uses' adjoints (one `add` per extra use), in reverse program order, so the result
//!   is deterministic.
//! - Values that do not reach the loss get a zero gradient (a broadcast literal).
//! - The original nodes are untouched: differentiation only appends.
//! - [`differentiate_traced`] also says, for every appended node, which original node's gradient
//!   rule (or adjoint accumulation) made it: the *primal* it differentiates. The pipeline
//!   partitioner places backward nodes on their primal's stage with it.
//!
//! # Invariant
//!
//! - **Autodiff only appends, and only to active values.** Differentiation never edits the
//!   original nodes. Adjoints exist only for float values that depend on a differentiated value
//!   and reach the loss; integer and boolean values never carry one, so piecewise-constant ops
//!   contribute zero, as math dictates. An active path through a non-differentiable op (an
//!   optimizer update) is an error naming the node, never a silent zero. An adjoint has exactly
//!   its value's type (checked); several uses of a value add their adjoints in reverse program
//!   order, so gradients are deterministic. Every rule is checked against central finite
//!   differences in f64 on random shapes (`passes/tests/gradcheck.rs`).

use std::collections::HashMap;
use tessera_ir::graph::{Graph, NodeId, ValueId};
use tessera_ir::ops::gradient::{carries_gradient, Differentiability, GradContext, GradError};
use tessera_ir::ops::Op;
use tessera_ir::tensor::Tensor;
use tessera_ir::verify::node_subject;

/// Why a graph could not be differentiated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AutodiffError {
    #[error("the loss %{name} must be a float scalar, got {ty}")]
    LossNotScalar { name: String, ty: String },
    #[error("cannot differentiate with respect to %{name}: it is {ty}, not a float")]
    NotFloat { name: String, ty: String },
    /// A gradient rule failed; `subject` is the node as the verifier spells it.
    #[error("{subject}: {source}")]
    Rule { subject: String, source: GradError },
    #[error("{subject}: gradient rule gave operand {operand} an adjoint of type {got}, expected {expected}")]
    AdjointType { subject: String, operand: usize, got: String, expected: String },
}

/// Appends the gradient of `loss` with respect to each of `wrt` to `g` and returns the gradient
/// values, in the order of `wrt`. The graph's outputs are left as they are.
pub fn differentiate(g: &mut Graph, loss: ValueId, wrt: &[ValueId]) -> Result<Vec<ValueId>, AutodiffError> {
    differentiate_traced(g, loss, wrt).map(|(grads, _)| grads)
}

/// [`differentiate`], plus the primal of each appended node: entry `i` is for node
/// `n + i` where `n` is the node count before the call; `None` for the loss seed and the zero
/// gradients of values that do not reach the loss (constants, which depend on nothing).
#[allow(clippy::type_complexity)]
pub fn differentiate_traced(
    g: &mut Graph,
    loss: ValueId,
    wrt: &[ValueId],
) -> Result<(Vec<ValueId>, Vec<Option<NodeId>>), AutodiffError> {
    let loss_ty = g.value(loss).ty.clone();
    if loss_ty.rank() != 0 || !loss_ty.dtype.is_float() {
        return Err(AutodiffError::LossNotScalar { name: g.value(loss).name.clone(), ty: loss_ty.to_string() });
    }
    for &w in wrt {
        let v = g.value(w);
        if !carries_gradient(&v.ty) {
            return Err(AutodiffError::NotFloat { name: v.name.clone(), ty: v.ty.to_string() });
        }
    }
    let n_nodes = g.num_nodes();
    let mut primal_of: Vec<Option<NodeId>> = Vec::new();
    let (varied, useful) = activity(g, loss, wrt);
    let active = |v: ValueId| varied[v.index()] && useful[v.index()];

    let mut adjoint: HashMap<ValueId, ValueId> = HashMap::new();
    let mut cx = GradContext::new(g, "loss");
    if active(loss) {
        let seed = cx
            .add(Op::Constant(Tensor::scalar(loss_ty.dtype, 1.0)), &[])
            .map_err(|source| AutodiffError::Rule { subject: "loss".into(), source })?;
        adjoint.insert(loss, seed);
    }
    for index in (0..n_nodes).rev() {
        let id = NodeId(index as u32);
        primal_of.resize(cx.graph.num_nodes() - n_nodes, None);
        let node = cx.graph.node(id).clone();
        if !node.outputs.iter().any(|&v| active(v)) {
            continue;
        }
        let grads: Vec<Option<ValueId>> = node.outputs.iter().map(|v| adjoint.get(v).copied()).collect();
        if grads.iter().all(Option::is_none) {
            continue;
        }
        let wanted: Vec<bool> = node.inputs.iter().map(|&v| active(v)).collect();
        if !wanted.iter().any(|&w| w) {
            continue;
        }
        let subject = node_subject(cx.graph, id);
        if node.op.differentiability() == Differentiability::NotDifferentiable {
            let operand = wanted.iter().position(|&w| w).unwrap_or(0);
            let source = GradError::NotDifferentiable {
                op: node.op.mnemonic(),
                operand,
                reason: "it is an optimizer state update".into(),
            };
            return Err(AutodiffError::Rule { subject, source });
        }
        cx.op = node.op.mnemonic();
        let operand_adjoints = node
            .op
            .gradient(&mut cx, &node.inputs, &node.outputs, &grads, &wanted)
            .map_err(|source| AutodiffError::Rule { subject: subject.clone(), source })?;
        for (operand, (&v, dv)) in node.inputs.iter().zip(operand_adjoints).enumerate() {
            let Some(dv) = dv else { continue };
            if !wanted[operand] {
                continue;
            }
            let (got, expected) = (&cx.graph.value(dv).ty, &cx.graph.value(v).ty);
            if got != expected {
                let (got, expected) = (got.to_string(), expected.to_string());
                return Err(AutodiffError::AdjointType { subject, operand, got, expected });
            }
            let total = match adjoint.get(&v) {
                Some(&previous) => {
                    cx.add2(previous, dv).map_err(|source| AutodiffError::Rule { subject: subject.clone(), source })?
                }
                None => dv,
            };
            adjoint.insert(v, total);
        }
        primal_of.resize(cx.graph.num_nodes() - n_nodes, Some(id));
    }
    primal_of.resize(cx.graph.num_nodes() - n_nodes, None);
    let grads = wrt
        .iter()
        .map(|&w| match adjoint.get(&w) {
            Some(&dv) => Ok(dv),
            None => {
                let ty = cx.graph.value(w).ty.clone();
                cx.zeros(&ty).map_err(|source| AutodiffError::Rule { subject: "zero gradient".into(), source })
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    primal_of.resize(cx.graph.num_nodes() - n_nodes, None);
    Ok((grads, primal_of))
}

/// `(varied, useful)` per value: floats depending on `wrt`, and values the loss depends on.
fn activity(g: &Graph, loss: ValueId, wrt: &[ValueId]) -> (Vec<bool>, Vec<bool>) {
    let mut varied = vec![false; g.num_values()];
    for &w in wrt {
        varied[w.index()] = true;
    }
    for (_, node) in g.nodes() {
        if node.inputs.iter().any(|v| varied[v.index()]) {
            for &out in &node.outputs {
                varied[out.index()] = carries_gradient(&g.value(out).ty);
            }
        }
    }
    let mut useful = vec![false; g.num_values()];
    useful[loss.index()] = true;
    let nodes: Vec<_> = g.nodes().collect();
    for (_, node) in nodes.into_iter().rev() {
        if node.outputs.iter().any(|v| useful[v.index()]) {
            for v in &node.inputs {
                useful[v.index()] = true;
            }
        }
    }
    (varied, useful)
}
