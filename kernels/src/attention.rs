//! Scaled-dot-product attention sites: `softmax(f(q · kᵀ)) · v`, where `f` is a chain of
//! elementwise ops (the scale, an additive or causal mask, ...) and the softmax runs over the
//! key axis. The fusion pass forms one kernel per site; the code generator computes such a
//! kernel flash-style (online softmax over key tiles), never materializing the score matrix.
//!
//! What is matched, and why that is exactly the unfused computation:
//! - `output = matmul(probs, v)` where `probs = softmax(x, axis = last)`, `probs` has exactly one
//!   use (this matmul) and the same batch dimensions as `output`: then
//!   `output[.., i, :] = Σ_j softmax_j(x[.., i, j]) · v[.., j, :]`, which the online softmax
//!   computes for any `x` (it is the same sum, reassociated over key tiles).
//! - `x` is computed from `scores = matmul(q, kt)` by a chain of unary and binary elementwise
//!   ops on the scores' shape; every value on the chain (scores included) has exactly one use,
//!   so nothing outside needs the scores. The chain's other operands (a broadcast scale, a
//!   broadcast mask) are read as they are; a broadcast with no other use joins the kernel.
//! - A transpose producing `q`, `kt` or `v` with no other use joins the kernel too: inside it
//!   is index arithmetic (the key is read in place instead of being transposed into a buffer).
//!
//! Anything else (a dropout on the probabilities, a softmax over another axis, scores used
//! twice) is not a site and keeps today's kernels and library calls.

use tessera_ir::graph::{Graph, NodeId, ValueId};
use tessera_ir::ops::Op;
use tessera_ir::types::normalize_axis;

/// Longest elementwise chain between the scores and the softmax that is matched.
const MAX_CHAIN: usize = 8;

/// One attention site of a graph.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttentionSite {
    /// `scores = matmul(q, kt)`.
    pub scores: NodeId,
    /// The elementwise ops from the scores to the softmax's operand, scores side first.
    pub chain: Vec<NodeId>,
    /// `probs = softmax(x, last axis)`.
    pub softmax: NodeId,
    /// `output = matmul(probs, v)`.
    pub output: NodeId,
    /// Single-use broadcasts and transposes that feed the site and join its kernel, in
    /// program order.
    pub feeders: Vec<NodeId>,
}

impl AttentionSite {
    /// Every node of the site's kernel, in program order.
    pub fn nodes(&self) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self.feeders.iter().chain(&self.chain).copied().collect();
        nodes.extend([self.scores, self.softmax, self.output]);
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }

    /// The softmax's operand `x` (the masked, scaled scores).
    pub fn logits(&self, g: &Graph) -> ValueId {
        g.node(self.softmax).inputs[0]
    }
}

/// Every attention site of `g`, in program order of their output matmuls. Sites never share
/// nodes (each value inside a site has a single use).
pub fn find_attention(g: &Graph) -> Vec<AttentionSite> {
    let uses = g.use_counts();
    let mut is_output = vec![false; g.num_values()];
    for v in g.outputs() {
        is_output[v.index()] = true;
    }
    // A value only the site reads: one use, not returned by the graph.
    let private = |v: ValueId| uses[v.index()] == 1 && !is_output[v.index()];
    let mut sites = Vec::new();
    for (output, node) in g.nodes() {
        if !matches!(node.op, Op::MatMul) {
            continue;
        }
        let (probs, v) = (node.inputs[0], node.inputs[1]);
        let Some(softmax) = g.producer(probs) else { continue };
        let Op::Softmax { axis } = g.node(softmax).op else { continue };
        let probs_ty = &g.value(probs).ty;
        let out_ty = &g.value(node.outputs[0]).ty;
        let rank = probs_ty.rank();
        if rank < 2
            || normalize_axis(axis, rank) != Some(rank - 1)
            || !private(probs)
            || !probs_ty.dtype.is_float()
            || out_ty.rank() != rank
            || probs_ty.dims[..rank - 2] != out_ty.dims[..rank - 2]
            || v == probs
        {
            continue;
        }
        let logits = g.node(softmax).inputs[0];
        let Some((scores, chain, mut feeders)) = chain_to_scores(g, logits, &private) else { continue };
        let score_node = g.node(scores);
        let mut operands = score_node.inputs.clone();
        operands.push(v);
        for operand in operands {
            if let Some(t) = g.producer(operand) {
                if matches!(g.node(t).op, Op::Transpose { .. }) && private(operand) {
                    feeders.push(t);
                }
            }
        }
        feeders.sort_unstable();
        sites.push(AttentionSite { scores, chain, softmax, output, feeders });
    }
    sites
}

/// Walks from the softmax's operand back to the score matmul: returns it, the elementwise
/// chain (scores side first) and the single-use broadcasts the chain reads.
fn chain_to_scores(
    g: &Graph,
    logits: ValueId,
    private: &dyn Fn(ValueId) -> bool,
) -> Option<(NodeId, Vec<NodeId>, Vec<NodeId>)> {
    let shape = &g.value(logits).ty.dims;
    let mut chain = Vec::new();
    let mut feeders = Vec::new();
    let mut current = logits;
    loop {
        if !private(current) || &g.value(current).ty.dims != shape || !g.value(current).ty.dtype.is_float() {
            return None;
        }
        let producer = g.producer(current)?;
        let node = g.node(producer);
        match node.op {
            Op::MatMul => {
                chain.reverse();
                feeders.reverse();
                return Some((producer, chain, feeders));
            }
            Op::Unary(_) => current = node.inputs[0],
            Op::Binary(_) => {
                // Exactly one operand continues towards the scores; the other is read as is.
                let continues = |v: ValueId| {
                    private(v)
                        && g.producer(v)
                            .is_some_and(|p| matches!(g.node(p).op, Op::MatMul | Op::Unary(_) | Op::Binary(_)))
                };
                let (next, side) = match (continues(node.inputs[0]), continues(node.inputs[1])) {
                    (true, false) => (node.inputs[0], node.inputs[1]),
                    (false, true) => (node.inputs[1], node.inputs[0]),
                    _ => return None,
                };
                if let Some(b) = g.producer(side) {
                    if matches!(g.node(b).op, Op::Broadcast { .. }) && private(side) {
                        feeders.push(b);
                    }
                }
                current = next;
            }
            _ => return None,
        }
        chain.push(producer);
        if chain.len() > MAX_CHAIN {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::find_attention;
    use crate::builders::{attention_head, masked_softmax};
    use tessera_ir::dtype::DType;
    use tessera_ir::ops::Op;

    #[test]
    fn an_attention_head_is_one_site_and_a_lone_softmax_none() {
        let g = attention_head(2, 6, 4, DType::F32).expect("attention");
        let sites = find_attention(&g);
        assert_eq!(sites.len(), 1);
        let site = &sites[0];
        let mnemonics =
            |ids: &[tessera_ir::graph::NodeId]| ids.iter().map(|n| g.node(*n).op.mnemonic()).collect::<Vec<_>>();
        assert_eq!(mnemonics(&site.chain), vec!["mul", "add"]);
        assert_eq!(mnemonics(&site.feeders), vec!["transpose", "broadcast", "broadcast"], "program order");
        assert_eq!(site.nodes().len(), 8);
        assert!(find_attention(&masked_softmax(2, 5, 0.5, DType::F32).expect("softmax")).is_empty());
    }

    #[test]
    fn scores_used_twice_or_a_softmax_over_queries_are_not_sites() {
        let mut g = attention_head(1, 4, 2, DType::F32).expect("attention");
        let scaled = g.nodes().find(|(_, n)| n.op.mnemonic() == "mul").map(|(_, n)| n.outputs[0]).expect("mul");
        let mut outputs = g.outputs().to_vec();
        outputs.push(scaled);
        g.set_outputs(outputs);
        assert!(find_attention(&g).is_empty(), "the scaled scores are an output");
        let mut g = attention_head(1, 4, 2, DType::F32).expect("attention");
        let softmax = g.nodes().find(|(_, n)| matches!(n.op, Op::Softmax { .. })).map(|(id, _)| id).expect("softmax");
        g.node_mut(softmax).op = Op::Softmax { axis: 1 };
        assert!(find_attention(&g).is_empty(), "softmax over the query axis");
    }
}
