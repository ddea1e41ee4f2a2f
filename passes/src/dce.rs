//! The `dce` pass: removes nodes none of whose results reach a graph output.
//!
//! Every tsr op but communication is pure (no side effects, no state), so such a node is needed
//! exactly when one of its results is a graph output or an operand of a needed node.
//! Communication (`send`, `recv`, collectives) is always needed: a `send` has no result, and a
//! rank that skipped a collective would leave its peers waiting.

use crate::pass::{PassError, PassOptions, PassStats};
use tessera_ir::graph::Graph;

/// Removes dead nodes; `rewrites` is the number removed.
pub fn run(g: &mut Graph, _options: &PassOptions) -> Result<PassStats, PassError> {
    let mut stats = PassStats::default();
    stats.count("removed", remove_dead_nodes(g));
    Ok(stats)
}

/// Removes every node whose results reach no graph output, keeping program order and names.
/// Returns how many were removed.
pub fn remove_dead_nodes(g: &mut Graph) -> usize {
    let live = live_nodes(g);
    g.retain_nodes(|id, _| live[id.index()])
}

/// Which nodes (by index) have a result that reaches a graph output: one backward walk, since
/// every operand is defined before its use.
pub fn live_nodes(g: &Graph) -> Vec<bool> {
    let mut live_value = vec![false; g.num_values()];
    for v in g.outputs() {
        live_value[v.index()] = true;
    }
    let mut live_node = vec![false; g.num_nodes()];
    let nodes: Vec<_> = g.nodes().collect();
    for (id, node) in nodes.into_iter().rev() {
        if node.op.is_communication() || node.outputs.iter().any(|v| live_value[v.index()]) {
            live_node[id.index()] = true;
            for v in &node.inputs {
                live_value[v.index()] = true;
            }
        }
    }
    live_node
}
