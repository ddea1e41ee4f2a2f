//! The `fuse` pass: groups ops into fused kernels and tags each node with its group.
//!
//! Fusion works greedily in program order, producer into consumer (XLA's loop and input
//! fusion): every op a kernel can hold starts as its own group, then merges with the groups of
//! its operands' producers when the union
//! - has at most one reduction-like op (`reduce_*`, `argmax`, `softmax`, `layer_norm`,
//!   `rms_norm`), so a kernel has one reduction structure, with elementwise producers (input
//!   fusion) and consumers (an epilogue) around it;
//! - stays *convex*: no path leaves the group and comes back, so the group can run as one
//!   kernel between its producers and its consumers;
//! - has at most `max-ops` ops; and
//! - is accepted by the code generator (`FusionConfig::can_compile`, which the compiler sets to
//!   `tessera_codegen::supports`; the registered pass, which has no code generator to ask, uses
//!   [`conservative_can_compile`]).
//!
//! Attention sites (`tessera_kernels::attention`: `softmax(f(q kᵀ)) v` with single-use scores
//! and probabilities) are grouped first, whole, as one closed group of kind attention (the code
//! generator computes it flash-style); nothing merges into it afterwards.
//!
//! Other matrix products, convolutions, gathers and scatters stay library calls, reshapes are views
//! (the memory plan aliases them), and constants are weights; none of them joins a group. An op
//! that no kernel can hold alone stays untagged and runs as a library call.
//!
//! Afterwards the nodes are reordered so each group's members are contiguous (possible because
//! groups are convex), groups are numbered in program order, and every member gets a
//! [`FusionTag`]. [`groups`] reads them back and [`extract_kernel`] turns one group into the
//! self-contained kernel graph the code generator compiles.
//!
//! # Fusion
//!
//! The `fuse` pass groups ops into kernels greedily in program order, producer into consumer:
//! elementwise ops, casts and broadcasts chain (XLA loop fusion); a reduction, softmax, layer norm
//! or RMS norm takes its elementwise producers (input fusion) and consumers (epilogue) but never a
//! second reduction-like op. Matmuls, convolutions, gathers and scatters stay library calls,
//! reshapes are views, constants are weights. A merge happens only when the union stays *convex*
//! (no path leaves the group and re-enters it), has at most `max-ops` ops, and the code generator
//! accepts the extracted kernel graph (`FusionConfig::can_compile`; `tessera compile` passes
//! `codegen::supports`, the registered pass a conservative op list since `passes` cannot depend on
//! `codegen`). Invariants:
//! - **Groups are contiguous and numbered in program order.** The pass reorders nodes (a
//!   topological order over groups) so every group is one run of nodes; `Graph` keeps the tags in
//!   a side table (`fusion_tag(NodeId)`), which `retain_nodes`/`reorder_nodes` carry along.
//! - **Communication keeps its order.** No group holds members on both sides of a
//!   communication op (`send`, `recv`, collectives) in program order, so the reordering keeps
//!   every communication op after the work before it and in its original order: a per-rank
//!   program's sends and receives stay in the deadlock-free order `shard` gave them (a group
//!   joining a forward value sent to the next stage with a backward use behind a `recv` would
//!   otherwise move the `send` after the `recv`, and two stages would wait on each other).
//! - **Tags are part of the text form.** The printer writes `// fusion group N (kind, K ops)`
//!   before each group; MLIR ignores comments (so `--check-mlir` passes) and tessera's parser reads
//!   them back, so `parse(print(g)) == g` holds for fused graphs too.
//! - **A group is a kernel graph.** `fuse::extract_kernel` makes a self-contained graph: inputs are
//!   the group's outside operands in first-use order, outputs the member results used outside (or
//!   returned) in program order. That is the kernel ABI's argument order.
//! - **Attention sites are grouped first, whole and closed.** `kernels::attention::find_attention`
//!   matches `matmul(softmax(f(matmul(q, kt)), last axis), v)` where `f` is a chain of unary/binary
//!   elementwise ops on the scores' shape and every value from the scores to the probabilities has
//!   exactly one use (so nothing outside needs them); single-use broadcasts feeding the chain and
//!   transposes producing `q`, `kt`, `v` join. Such a site is one group of kind `attention`;
//!   nothing merges into it. A probability with a second use (attention dropout in training), a
//!   softmax over another axis, or scores returned by the graph is no site and fuses as before.
//!   The code generator's schedule finds the same sites in the kernel graph and keeps scores and
//!   probabilities inline; the output matmul's template (`codegen::emit::attention`) runs the
//!   online softmax over key tiles of 32 (running max and sum, rescaled accumulator row), so the
//!   score matrix is never written; on the GPU one thread per (batch, head, query row).

use crate::pass::{OptionSpec, OptionValue, PassError, PassOptions, PassStats};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use tessera_ir::fusion::{FusionKind, FusionTag};
use tessera_ir::graph::{Graph, InputRole, NodeId, ValueId};
use tessera_ir::ops::Op;
use tessera_kernels::attention::find_attention;

const MAX_OPS: OptionSpec =
    OptionSpec { name: "max-ops", default: OptionValue::UInt(64), help: "most ops in one fused kernel" };

pub const OPTIONS: &[OptionSpec] = &[MAX_OPS];

/// How to fuse: the size limit and the code generator's verdict on a candidate kernel.
pub struct FusionConfig<'a> {
    pub max_ops: usize,
    /// Whether a kernel graph (see [`extract_kernel`]) can be compiled.
    pub can_compile: &'a dyn Fn(&Graph) -> bool,
}

/// What fusion produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FusionReport {
    /// Groups per kind.
    pub groups: HashMap<FusionKind, usize>,
    /// Ops inside groups.
    pub fused_ops: usize,
}

/// One fusion group as read back from the tags: members in program order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FusionGroup {
    pub tag: FusionTag,
    pub nodes: Vec<NodeId>,
}

/// A group as a self-contained graph: `graph`'s inputs are the group's operands from outside
/// (`inputs`, values of the original graph, in order of first use) and its outputs the member
/// results used outside the group or returned by the graph (`outputs`, in program order).
#[derive(Debug, Clone)]
pub struct KernelGraph {
    pub graph: Graph,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
}

/// The registered pass: fuses with [`conservative_can_compile`].
pub fn run(g: &mut Graph, options: &PassOptions) -> Result<PassStats, PassError> {
    let max_ops = options.uint("fuse", &MAX_OPS)?;
    let max_ops = usize::try_from(max_ops).unwrap_or(usize::MAX).max(1);
    let config = FusionConfig { max_ops, can_compile: &conservative_can_compile };
    let report = fuse(g, &config)?;
    let mut stats = PassStats::default();
    for kind in FusionKind::ALL {
        let counter = match kind {
            FusionKind::Loop => "loop-groups",
            FusionKind::Input => "input-groups",
            FusionKind::Softmax => "softmax-groups",
            FusionKind::LayerNorm => "layer-norm-groups",
            FusionKind::RmsNorm => "rms-norm-groups",
            FusionKind::Attention => "attention-groups",
        };
        stats.count(counter, report.groups.get(&kind).copied().unwrap_or(0));
    }
    stats.counters.insert("fused-ops", report.fused_ops);
    Ok(stats)
}

/// What a kernel may hold when no code generator is asked: elementwise ops, casts, broadcasts,
/// reductions, softmax and the norms, on float, integer or boolean tensors of static shape, and
/// the matmuls and transposes of an attention site.
pub fn conservative_can_compile(kernel: &Graph) -> bool {
    let static_types = kernel.values().all(|(_, v)| v.ty.static_shape().is_some());
    let attention: std::collections::HashSet<NodeId> =
        find_attention(kernel).iter().flat_map(|site| site.nodes()).collect();
    static_types
        && kernel.nodes().all(|(id, n)| {
            attention.contains(&id)
                || matches!(
                    n.op,
                    Op::Unary(_)
                        | Op::Binary(_)
                        | Op::Compare(_)
                        | Op::Where
                        | Op::Cast { .. }
                        | Op::Broadcast { .. }
                        | Op::Reduce { .. }
                        | Op::Softmax { .. }
                        | Op::LayerNorm { .. }
                        | Op::RmsNorm { .. }
                )
        })
}

/// Ops that may join a group at all (if the code generator agrees). Library calls, views and
/// weights never do.
fn may_fuse(op: &Op) -> bool {
    !matches!(
        op,
        Op::Constant(_) | Op::MatMul | Op::Conv2d { .. } | Op::Gather { .. } | Op::Scatter { .. } | Op::Reshape { .. }
    )
}

/// The reduction structure an op gives a kernel, if any.
fn reduction_kind(op: &Op) -> Option<FusionKind> {
    match op {
        Op::Softmax { .. } => Some(FusionKind::Softmax),
        Op::LayerNorm { .. } => Some(FusionKind::LayerNorm),
        Op::RmsNorm { .. } => Some(FusionKind::RmsNorm),
        Op::Reduce { .. } | Op::ArgMax { .. } => Some(FusionKind::Input),
        _ => None,
    }
}

/// Groups `g`'s nodes into fused kernels, reorders them so groups are contiguous, and tags
/// them (replacing any earlier tags).
pub fn fuse(g: &mut Graph, config: &FusionConfig<'_>) -> Result<FusionReport, PassError> {
    let n = g.num_nodes();
    for id in 0..n {
        g.set_fusion_tag(NodeId(id as u32), None);
    }
    let producer: Vec<Option<NodeId>> = g.values().map(|(v, _)| g.producer(v)).collect();
    // Per node, the communication ops before it: a group's members must all see the same count.
    let mut comm_before = Vec::with_capacity(n);
    let mut seen = 0usize;
    for (_, node) in g.nodes() {
        comm_before.push(seen);
        seen += usize::from(node.op.is_communication());
    }
    let one_segment = |members: &[NodeId]| {
        let counts = members.iter().map(|m| comm_before[m.index()]);
        counts.clone().min() == counts.max()
    };
    let uses = Uses::of(g);
    // group_of[node] = index into `groups`; merged-away groups become empty.
    let mut group_of: Vec<Option<usize>> = vec![None; n];
    let mut groups: Vec<Vec<NodeId>> = Vec::new();
    let mut stamp = vec![0u32; n];
    let mut generation = 0u32;
    // Attention sites first, each one closed group (sites never share nodes).
    let mut closed: Vec<bool> = Vec::new();
    for site in find_attention(g) {
        let members = site.nodes();
        generation += 1;
        if members.len() > config.max_ops
            || !one_segment(&members)
            || !is_convex(
                g,
                &members,
                &Context { producer: &producer, group_of: &group_of, groups: &groups },
                &mut stamp,
                generation,
            )
            || !can_compile(g, &uses, &members, config)
        {
            continue;
        }
        for m in &members {
            group_of[m.index()] = Some(groups.len());
        }
        groups.push(members);
        closed.push(true);
    }
    for (id, node) in g.nodes() {
        if group_of[id.index()].is_some() {
            continue;
        }
        if !may_fuse(&node.op) || !can_compile(g, &uses, &[id], config) {
            continue;
        }
        groups.push(vec![id]);
        closed.push(false);
        group_of[id.index()] = Some(groups.len() - 1);
        for v in &node.inputs {
            let Some(p) = producer[v.index()] else { continue };
            let (Some(pg), Some(cg)) = (group_of[p.index()], group_of[id.index()]) else { continue };
            if pg == cg || closed[pg] {
                continue;
            }
            let mut union: Vec<NodeId> = groups[pg].iter().chain(&groups[cg]).copied().collect();
            union.sort_unstable();
            if union.len() > config.max_ops
                || !one_segment(&union)
                || union.iter().filter(|m| reduction_kind(&g.node(**m).op).is_some()).count() > 1
            {
                continue;
            }
            generation += 1;
            let context = Context { producer: &producer, group_of: &group_of, groups: &groups };
            if !is_convex(g, &union, &context, &mut stamp, generation) || !can_compile(g, &uses, &union, config) {
                continue;
            }
            for m in &union {
                group_of[m.index()] = Some(pg);
            }
            groups[cg].clear();
            groups[pg] = union;
        }
    }
    let order = contiguous_order(g, &group_of, &producer);
    let kinds: Vec<FusionKind> = groups
        .iter()
        .zip(&closed)
        .map(|(members, &attention)| if attention { FusionKind::Attention } else { group_kind(g, members) })
        .collect();
    // Tag in the new order, numbering groups as they first appear.
    let mut number: HashMap<usize, u32> = HashMap::new();
    let mut tags = Vec::with_capacity(n);
    for id in &order {
        tags.push(group_of[id.index()].map(|gi| {
            let next = number.len() as u32;
            FusionTag { group: *number.entry(gi).or_insert(next), kind: kinds[gi] }
        }));
    }
    if !g.reorder_nodes(&order) {
        return Err(PassError::Failed { pass: "fuse", message: "internal error: group order breaks SSA order".into() });
    }
    let mut report = FusionReport::default();
    for (i, tag) in tags.into_iter().enumerate() {
        g.set_fusion_tag(NodeId(i as u32), tag);
        if tag.is_some() {
            report.fused_ops += 1;
        }
    }
    for (gi, members) in groups.iter().enumerate() {
        if !members.is_empty() && number.contains_key(&gi) {
            *report.groups.entry(kinds[gi]).or_insert(0) += 1;
        }
    }
    Ok(report)
}

fn can_compile(g: &Graph, uses: &Uses, members: &[NodeId], config: &FusionConfig<'_>) -> bool {
    extract_kernel_using(g, uses, members, "candidate").is_ok_and(|k| (config.can_compile)(&k.graph))
}

fn group_kind(g: &Graph, members: &[NodeId]) -> FusionKind {
    members.iter().find_map(|m| reduction_kind(&g.node(*m).op)).unwrap_or(FusionKind::Loop)
}

/// The grouping so far, as [`is_convex`] reads it.
struct Context<'a> {
    producer: &'a [Option<NodeId>],
    group_of: &'a [Option<usize>],
    groups: &'a [Vec<NodeId>],
}

/// No path from a member back to a member through non-members, where every other group counts
/// as one unit: a path that enters another group anywhere may leave it from any of its nodes,
/// because that group runs as one kernel. Convexity over nodes alone is not enough: groups
/// `{a, d}` and `{b, c}` with edges `a -> c` and `b -> d` are each convex, yet neither kernel can
/// run first (the training step of a two-layer GPT has such a pair).
///
/// Nodes are in program order, so a path back to a member lies between the first node of the
/// members or of a group the path enters, and the last member; the scan starts at the first
/// member and moves back whenever it finds a reached group starting earlier.
fn is_convex(g: &Graph, members: &[NodeId], context: &Context<'_>, stamp: &mut [u32], generation: u32) -> bool {
    let (Some(first), Some(last)) = (members.first(), members.last()) else { return true };
    for m in members {
        stamp[m.index()] = generation;
    }
    // Groups some path from a member enters (never a member's own group: members are not reached).
    let mut reached_groups: Vec<usize> = Vec::new();
    let mut start = first.index();
    loop {
        let mut reached = vec![false; last.index() - start + 1];
        let mut grew = false;
        for i in start..=last.index() {
            let is_member = stamp[i] == generation;
            let mut reads_member = false;
            let mut reads_reached = false;
            for v in &g.node(NodeId(i as u32)).inputs {
                let Some(p) = context.producer[v.index()] else { continue };
                let p = p.index();
                if (start..=last.index()).contains(&p) {
                    reads_member |= stamp[p] == generation;
                    reads_reached |= reached[p - start];
                }
                reads_reached |= context.group_of[p].is_some_and(|pg| reached_groups.contains(&pg));
            }
            if is_member && reads_reached {
                return false;
            }
            if !is_member && (reads_member || reads_reached) {
                reached[i - start] = true;
                if let Some(group) = context.group_of[i].filter(|gi| !reached_groups.contains(gi)) {
                    reached_groups.push(group);
                    grew = true;
                }
            }
        }
        if !grew {
            return true;
        }
        let earliest = reached_groups.iter().flat_map(|&gi| &context.groups[gi]).map(|n| n.index()).min();
        start = earliest.map_or(start, |e| e.min(start));
    }
}

/// A topological order of the nodes in which each group's members are adjacent: Kahn's
/// algorithm over units (a group, or an ungrouped node), always emitting the ready unit whose
/// first node came earliest, so unfused graphs keep their order.
fn contiguous_order(g: &Graph, group_of: &[Option<usize>], producer: &[Option<NodeId>]) -> Vec<NodeId> {
    let n = g.num_nodes();
    // unit_of[node]: ungrouped nodes are their own unit.
    let mut unit_index: HashMap<(bool, usize), usize> = HashMap::new();
    let mut unit_of = vec![0usize; n];
    let mut members: Vec<Vec<NodeId>> = Vec::new();
    for (id, _) in g.nodes() {
        let key = match group_of[id.index()] {
            Some(gi) => (true, gi),
            None => (false, id.index()),
        };
        let next = members.len();
        let u = *unit_index.entry(key).or_insert(next);
        if u == members.len() {
            members.push(Vec::new());
        }
        members[u].push(id);
        unit_of[id.index()] = u;
    }
    let units = members.len();
    let mut pending = vec![0usize; units];
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); units];
    for (u, nodes) in members.iter().enumerate() {
        let mut deps: Vec<usize> = nodes
            .iter()
            .flat_map(|m| g.node(*m).inputs.iter())
            .filter_map(|v| producer[v.index()])
            .map(|p| unit_of[p.index()])
            .filter(|&pu| pu != u)
            .collect();
        deps.sort_unstable();
        deps.dedup();
        pending[u] = deps.len();
        for d in deps {
            consumers[d].push(u);
        }
    }
    // Units are numbered by their first node, so the unit number is the priority.
    let mut ready: BinaryHeap<Reverse<usize>> = (0..units).filter(|&u| pending[u] == 0).map(Reverse).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse(u)) = ready.pop() {
        order.extend(&members[u]);
        for &c in &consumers[u] {
            pending[c] -= 1;
            if pending[c] == 0 {
                ready.push(Reverse(c));
            }
        }
    }
    order
}

/// The fusion groups of a tagged graph, by group number, members in program order.
pub fn groups(g: &Graph) -> Vec<FusionGroup> {
    let mut by_number: std::collections::BTreeMap<u32, FusionGroup> = std::collections::BTreeMap::new();
    for (id, _) in g.nodes() {
        if let Some(tag) = g.fusion_tag(id) {
            by_number.entry(tag.group).or_insert_with(|| FusionGroup { tag, nodes: Vec::new() }).nodes.push(id);
        }
    }
    by_number.into_values().collect()
}

/// Why a set of nodes cannot be extracted as a kernel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    #[error("a kernel needs at least one op")]
    Empty,
    #[error("kernel '{name}' has no result used outside it")]
    NoOutputs { name: String },
}

/// Turns `members` (in program order) into a self-contained kernel graph named `name`. Values
/// keep their names; the operands become inputs with the activation role.
pub fn extract_kernel(g: &Graph, members: &[NodeId], name: &str) -> Result<KernelGraph, ExtractError> {
    extract_kernel_using(g, &Uses::of(g), members, name)
}

/// Who reads each value of a graph: what [`extract_kernel_using`] needs to find a group's
/// outputs without scanning the whole graph per group (which made fusion quadratic).
pub struct Uses {
    /// Per value, the nodes that read it (a node once per operand that reads it).
    consumers: Vec<Vec<NodeId>>,
    /// Per value, whether the graph returns it.
    returned: Vec<bool>,
}

impl Uses {
    pub fn of(g: &Graph) -> Uses {
        let mut consumers = vec![Vec::new(); g.num_values()];
        for (id, node) in g.nodes() {
            for v in &node.inputs {
                consumers[v.index()].push(id);
            }
        }
        let mut returned = vec![false; g.num_values()];
        for v in g.outputs() {
            returned[v.index()] = true;
        }
        Uses { consumers, returned }
    }
}

/// [`extract_kernel`] with the graph's [`Uses`] computed once by the caller: linear in the
/// members and the uses of their results, not in the graph.
pub fn extract_kernel_using(
    g: &Graph,
    uses: &Uses,
    members: &[NodeId],
    name: &str,
) -> Result<KernelGraph, ExtractError> {
    if members.is_empty() {
        return Err(ExtractError::Empty);
    }
    let inside: std::collections::HashSet<NodeId> = members.iter().copied().collect();
    let mut kernel = Graph::new(name);
    let mut map: HashMap<ValueId, ValueId> = HashMap::new();
    let mut inputs = Vec::new();
    for m in members {
        for &v in &g.node(*m).inputs {
            let defined_inside = g.producer(v).is_some_and(|p| inside.contains(&p));
            if !defined_inside && !map.contains_key(&v) {
                let value = g.value(v);
                map.insert(v, kernel.add_input(&value.name, value.ty.clone(), InputRole::Activation));
                inputs.push(v);
            }
        }
    }
    let used_outside =
        |v: ValueId| uses.returned[v.index()] || uses.consumers[v.index()].iter().any(|c| !inside.contains(c));
    let mut outputs = Vec::new();
    for m in members {
        let node = g.node(*m);
        let operands = node.inputs.iter().map(|v| map[v]).collect();
        let results = node.outputs.iter().map(|&v| (g.value(v).name.clone(), g.value(v).ty.clone())).collect();
        let new_node = kernel.add_node_unchecked(node.op.clone(), operands, results);
        for (&old, &new) in node.outputs.iter().zip(&kernel.node(new_node).outputs.clone()) {
            map.insert(old, new);
            if used_outside(old) {
                outputs.push(old);
            }
        }
    }
    if outputs.is_empty() {
        return Err(ExtractError::NoOutputs { name: name.to_string() });
    }
    kernel.set_outputs(outputs.iter().map(|v| map[v]).collect());
    Ok(KernelGraph { graph: kernel, inputs, outputs })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_ir::mlir::{parse_verified, print_graph};

    const MLP: &str = r#"func.func @mlp(%x: tensor<4x8xf32>, %w: tensor<8x8xf32>, %b: tensor<8xf32>) -> (tensor<4x8xf32>) {
  %h = "tsr.matmul"(%x, %w) : (tensor<4x8xf32>, tensor<8x8xf32>) -> tensor<4x8xf32>
  %bb = "tsr.broadcast"(%b) : (tensor<8xf32>) -> tensor<4x8xf32>
  %hb = "tsr.add"(%h, %bb) : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  %g = "tsr.gelu"(%hb) : (tensor<4x8xf32>) -> tensor<4x8xf32>
  %s = "tsr.softmax"(%g) {axis = -1 : i64} : (tensor<4x8xf32>) -> tensor<4x8xf32>
  %t = "tsr.softmax"(%s) {axis = 0 : i64} : (tensor<4x8xf32>) -> tensor<4x8xf32>
  return %t : tensor<4x8xf32>
}
"#;

    fn fused(text: &str, can_compile: &dyn Fn(&Graph) -> bool) -> Graph {
        let mut g = parse_verified(text).expect("parse");
        fuse(&mut g, &FusionConfig { max_ops: 64, can_compile }).expect("fuse");
        tessera_ir::verify::verify(&g).expect("verifies");
        g
    }

    /// A pipeline stage that sends a forward value and later uses it with a received gradient:
    /// fusing the two elementwise ops would run the group (and the `send` after it) behind the
    /// `recv`, and the peer, waiting for the `send` before it sends, would never answer.
    const STAGE: &str = r#"func.func @stage(%x: tensor<4x8xf32>) -> (tensor<4x8xf32>) {
  %a = "tsr.relu"(%x) : (tensor<4x8xf32>) -> tensor<4x8xf32>
  "tsr.send"(%a) {mesh_axis = "pp", peer = 1 : i64, tag = 0 : i64} : (tensor<4x8xf32>) -> ()
  %g = "tsr.recv"() {mesh_axis = "pp", peer = 1 : i64, tag = 1 : i64} : () -> tensor<4x8xf32>
  %y = "tsr.mul"(%a, %g) : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  return %y : tensor<4x8xf32>
}
"#;

    #[test]
    fn groups_never_span_communication_so_sends_stay_before_later_receives() {
        let g = fused(STAGE, &conservative_can_compile);
        let order: Vec<&str> = g.nodes().map(|(_, n)| n.op.mnemonic()).collect();
        assert_eq!(order, ["relu", "send", "recv", "mul"]);
        assert_eq!(groups(&g).iter().map(|gr| gr.nodes.len()).collect::<Vec<_>>(), [1, 1]);
        // Without the communication in between, the same two ops make one kernel.
        let joined = STAGE.replace(
            r#"  "tsr.send"(%a) {mesh_axis = "pp", peer = 1 : i64, tag = 0 : i64} : (tensor<4x8xf32>) -> ()
  %g = "tsr.recv"() {mesh_axis = "pp", peer = 1 : i64, tag = 1 : i64} : () -> tensor<4x8xf32>
"#,
            "  %g = \"tsr.neg\"(%x) : (tensor<4x8xf32>) -> tensor<4x8xf32>\n",
        );
        let g = fused(&joined, &conservative_can_compile);
        assert_eq!(groups(&g).iter().map(|gr| gr.nodes.len()).collect::<Vec<_>>(), [3]);
    }

    #[test]
    fn one_reduction_per_group_and_tags_round_trip_through_text() {
        let g = fused(MLP, &conservative_can_compile);
        let found: Vec<(FusionKind, usize)> = groups(&g).iter().map(|gr| (gr.tag.kind, gr.nodes.len())).collect();
        // broadcast, add, gelu and the first softmax; the second softmax alone.
        assert_eq!(found, vec![(FusionKind::Softmax, 4), (FusionKind::Softmax, 1)]);
        let text = print_graph(&g);
        assert!(text.contains("  // fusion group 0 (softmax, 4 ops)\n"), "{text}");
        assert_eq!(parse_verified(&text).expect("reparse"), g);
    }

    #[test]
    fn the_code_generator_has_the_last_word() {
        let no_gelu = |k: &Graph| conservative_can_compile(k) && k.nodes().all(|(_, n)| n.op.mnemonic() != "gelu");
        let g = fused(MLP, &no_gelu);
        let gelu = g.nodes().find(|(_, n)| n.op.mnemonic() == "gelu").map(|(id, _)| id).expect("gelu");
        assert_eq!(g.fusion_tag(gelu), None);
        let sizes: Vec<usize> = groups(&g).iter().map(|gr| gr.nodes.len()).collect();
        assert_eq!(sizes, vec![2, 1, 1]);
        let size_one = fused(MLP, &|_: &Graph| true);
        assert!(groups(&size_one).iter().all(|gr| gr.nodes.len() <= 4));
    }

    #[test]
    fn extracted_kernels_name_their_operands_and_results() {
        let g = fused(MLP, &conservative_can_compile);
        let first = &groups(&g)[0];
        let k = extract_kernel(&g, &first.nodes, "k0").expect("extract");
        tessera_ir::verify::verify(&k.graph).expect("kernel verifies");
        let names = |vs: &[ValueId]| vs.iter().map(|v| g.value(*v).name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&k.inputs), vec!["b", "h"]);
        assert_eq!(names(&k.outputs), vec!["s"]);
        assert_eq!(k.graph.num_nodes(), 4);
        assert_eq!(extract_kernel(&g, &[], "k").err(), Some(ExtractError::Empty));
    }

    #[test]
    fn an_attention_head_is_one_closed_attention_group() {
        let mut g = tessera_kernels::builders::attention_head(2, 6, 4, tessera_ir::dtype::DType::F32).expect("build");
        let report = fuse(&mut g, &FusionConfig { max_ops: 64, can_compile: &conservative_can_compile }).expect("fuse");
        tessera_ir::verify::verify(&g).expect("verifies");
        let found: Vec<(FusionKind, Vec<&str>)> = groups(&g)
            .iter()
            .map(|gr| (gr.tag.kind, gr.nodes.iter().map(|n| g.node(*n).op.mnemonic()).collect()))
            .collect();
        let attention = found.iter().find(|(kind, _)| *kind == FusionKind::Attention).expect("an attention group");
        assert_eq!(
            attention.1,
            vec!["transpose", "matmul", "broadcast", "mul", "broadcast", "add", "softmax", "matmul"],
            "{found:?}"
        );
        assert_eq!(report.groups.get(&FusionKind::Attention), Some(&1));
        let text = print_graph(&g);
        assert!(text.contains("(attention, 8 ops)"), "{text}");
        assert_eq!(parse_verified(&text).expect("reparse"), g);
    }
}
