//! The verifier: structural SSA checks and every node's types against its shape rule.
//!
//! Errors name the node by its first result (`%y`) and op, so a user can find it in the text;
//! the MLIR parser keeps a side table from node to source location for file:line:col.

use crate::graph::{Graph, NodeId, ValueDef};
use crate::types::TensorType;
use std::collections::HashSet;
use std::fmt;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct VerifyError {
    /// The offending node, when the error is about one.
    pub node: Option<NodeId>,
    /// How the user sees it: `%y = tsr.matmul` or `graph output 0`.
    pub subject: String,
    pub message: String,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.subject, self.message)
    }
}

/// Checks that `g` is well formed: unique, valid names; operands defined before use; result
/// types equal to what each op's shape rule infers; outputs defined. Returns the first error.
pub fn verify(g: &Graph) -> Result<(), VerifyError> {
    let graph_error = |subject: String, message: String| VerifyError { node: None, subject, message };
    let mut names = HashSet::new();
    for (_, v) in g.values() {
        if !is_valid_name(&v.name) {
            return Err(graph_error(format!("value '{}'", v.name), "is not a valid SSA name".into()));
        }
        if !names.insert(v.name.as_str()) {
            return Err(graph_error(format!("%{}", v.name), "is defined more than once".into()));
        }
    }
    let mut defined = vec![false; g.num_values()];
    for &v in g.inputs() {
        defined[v.index()] = true;
    }
    for (id, node) in g.nodes() {
        let subject = node_subject(g, id);
        let node_error = |message: String| VerifyError { node: Some(id), subject: subject.clone(), message };
        for &v in &node.inputs {
            if v.index() >= g.num_values() || !defined[v.index()] {
                return Err(node_error(format!("operand {v} is used before it is defined")));
            }
        }
        if let crate::ops::Op::If(regions) = &node.op {
            for (name, branch) in regions.branches() {
                verify(branch).map_err(|e| node_error(format!("in the {name} region: {e}")))?;
            }
        }
        if let crate::ops::Op::Loop(regions) = &node.op {
            for (name, region) in regions.regions() {
                verify(region).map_err(|e| node_error(format!("in the {name} region: {e}")))?;
            }
        }
        let operand_types: Vec<&TensorType> = node.inputs.iter().map(|&v| &g.value(v).ty).collect();
        let inferred = node.op.infer(&operand_types).map_err(&node_error)?;
        let declared: Vec<&TensorType> = node.outputs.iter().map(|&v| &g.value(v).ty).collect();
        if inferred.len() != declared.len() {
            return Err(node_error(format!("has {} results, the op produces {}", declared.len(), inferred.len())));
        }
        for (i, (want, got)) in inferred.iter().zip(&declared).enumerate() {
            if want != *got {
                return Err(node_error(format!("result {i} is declared {got}, but the op produces {want}")));
            }
        }
        for &v in &node.outputs {
            debug_assert!(matches!(g.value(v).def, ValueDef::Result { node, .. } if node == id));
            defined[v.index()] = true;
        }
    }
    for (i, &v) in g.outputs().iter().enumerate() {
        if v.index() >= g.num_values() || !defined[v.index()] {
            return Err(graph_error(format!("graph output {i}"), format!("refers to undefined value {v}")));
        }
    }
    if let Some(io) = g.io_shardings() {
        verify_io_shardings(g, io)?;
    }
    Ok(())
}

/// Boundary shardings name existing inputs and outputs and fit their types over the mesh.
fn verify_io_shardings(g: &Graph, io: &crate::sharding::IoShardings) -> Result<(), VerifyError> {
    let graph_error = |subject: String, message: String| VerifyError { node: None, subject, message };
    for (name, sharding) in &io.inputs {
        let Some(&v) = g.inputs().iter().find(|&&v| g.value(v).name == *name) else {
            return Err(graph_error(format!("sharding of input %{name}"), "names no graph input".into()));
        };
        sharding.check(&io.mesh, &g.value(v).ty).map_err(|m| graph_error(format!("sharding of input %{name}"), m))?;
    }
    for (index, sharding) in &io.outputs {
        let Some(&v) = g.outputs().get(*index) else {
            return Err(graph_error(format!("sharding of output {index}"), "names no graph output".into()));
        };
        sharding.check(&io.mesh, &g.value(v).ty).map_err(|m| graph_error(format!("sharding of output {index}"), m))?;
    }
    Ok(())
}

/// `%name = tsr.op`, how errors refer to a node.
pub fn node_subject(g: &Graph, id: NodeId) -> String {
    let node = g.node(id);
    match node.outputs.first() {
        Some(&v) => format!("%{} = tsr.{}", g.value(v).name, node.op.mnemonic()),
        None => format!("tsr.{} ({id})", node.op.mnemonic()),
    }
}

/// MLIR's SSA name grammar: `[A-Za-z_$.-][A-Za-z0-9_$.-]*` or a decimal number.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_digit() => name.chars().all(|c| c.is_ascii_digit()),
        Some(c) if c.is_ascii_alphabetic() || "_$.-".contains(c) => {
            chars.all(|c| c.is_ascii_alphanumeric() || "_$.-".contains(c))
        }
        _ => false,
    }
}
