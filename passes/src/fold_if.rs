//! The `fold-if` pass: a `tsr.if` whose condition is a constant is replaced by the region it
//! takes.
//!
//! An importer puts a size check in a `tsr.if` when the model holds only for some sizes (PP-OCRv4's
//! recognizer needs `floordiv(h + 15, 48) = 1`; its else branch is a trap). The condition is
//! computed from the sizes, so once they are bound (a pinned compile, or a range artifact compiled
//! at one size) every operand of its computation is a constant. This pass evaluates that
//! computation with the reference semantics (`Op::eval`, so it agrees with the interpreter bit for
//! bit), and when it gives a constant, copies the taken region's nodes into the enclosing graph in
//! place of the `tsr.if`: block arguments become the captured operands, the results become the
//! values the region yields. The branch not taken (often a trap) is gone, so the program compiles
//! as if the model had no conditional.
//!
//! A condition read from a graph input, a block argument or a communication stays an `if`.
//! Regions of an `if` or `loop` that is kept are folded too (an `if` on a size nested in an `if`
//! on data), and folding repeats until no condition is constant: an inlined region may hold an
//! `if` whose condition it computes from constants.

use crate::pass::{PassError, PassOptions, PassStats};
use std::collections::{HashMap, HashSet};
use tessera_ir::graph::{Graph, InputRole, NodeId, ValueId};
use tessera_ir::ops::control::{IfRegions, LoopRegions};
use tessera_ir::ops::Op;
use tessera_ir::tensor::{Buffer, Tensor};
use tessera_ir::types::TensorType;

const NAME: &str = "fold-if";

/// Largest value, in elements, evaluated while computing a condition: a size is computed as the
/// sum of a broadcast of ones as long as the size, so this bounds the sizes a check folds at.
pub const CONDITION_ELEMENT_LIMIT: u64 = 1 << 22;

/// Most rounds of folding (each folds at least one `if`; an inlined region may expose more).
const MAX_ROUNDS: usize = 64;

/// The pass entry point; counter `folded`: the `if`s replaced by a region.
pub fn run(g: &mut Graph, _options: &PassOptions) -> Result<PassStats, PassError> {
    let mut stats = PassStats::default();
    let folded = fold_constant_ifs(g).map_err(|message| PassError::Failed { pass: NAME, message })?;
    stats.count("folded", folded);
    Ok(stats)
}

/// Replaces every `tsr.if` (in `g` and its regions) whose condition is constant by the region it
/// takes, then removes what only the folded conditions read. Returns how many were folded.
pub fn fold_constant_ifs(g: &mut Graph) -> Result<usize, String> {
    let mut total = 0;
    for _ in 0..MAX_ROUNDS {
        let (next, folded) = fold_round(g)?;
        if folded == 0 {
            return Ok(total);
        }
        *g = next;
        total += folded;
        crate::dce::remove_dead_nodes(g);
    }
    Ok(total)
}

/// One copy of `g` with each `if` whose condition is constant inlined (and the regions of the
/// others folded); the number folded.
fn fold_round(g: &Graph) -> Result<(Graph, usize), String> {
    let mut conditions = ConstantCone::default();
    let mut out = Graph::new(&g.name);
    out.set_io_shardings(g.io_shardings().cloned());
    // Names of every value of `g`: a region's names must not take one of them (a later node's).
    let outer_names: HashSet<&str> = g.values().map(|(_, v)| v.name.as_str()).collect();
    let mut remap: Vec<Option<ValueId>> = vec![None; g.num_values()];
    for &v in g.inputs() {
        let value = g.value(v);
        let role = g.input_role(v).unwrap_or(InputRole::Activation);
        remap[v.index()] = Some(out.add_input(&value.name, value.ty.clone(), role));
    }
    let mapped = |remap: &[Option<ValueId>], v: ValueId| {
        remap[v.index()].ok_or_else(|| format!("%{} is used before it is defined", g.value(v).name))
    };
    let mut folded = 0;
    for (id, node) in g.nodes() {
        let inputs = node.inputs.iter().map(|&v| mapped(&remap, v)).collect::<Result<Vec<_>, _>>()?;
        if let Op::If(regions) = &node.op {
            let taken = conditions.truth(g, node.inputs[0]);
            let region = taken.and_then(|then| taken_region(g, id, regions, then));
            if let Some(region) = region {
                let yields = inline_region(&mut out, &region, &inputs[1..], g, id, &outer_names)?;
                for (&result, value) in node.outputs.iter().zip(yields) {
                    remap[result.index()] = Some(value);
                }
                folded += 1;
                continue;
            }
        }
        let (op, inner) = fold_in_regions(&node.op)?;
        folded += inner;
        let results = node.outputs.iter().map(|&v| (g.value(v).name.clone(), g.value(v).ty.clone())).collect();
        let new_id = out.add_node_unchecked(op, inputs, results);
        out.set_fusion_tag(new_id, g.fusion_tag(id));
        for (&old, &new) in node.outputs.iter().zip(&out.node(new_id).outputs) {
            remap[old.index()] = Some(new);
        }
    }
    let outputs = g.outputs().iter().map(|&v| mapped(&remap, v)).collect::<Result<Vec<_>, _>>()?;
    out.set_outputs(outputs);
    Ok((out, folded))
}

/// `op` with the regions of an `if` or `loop` folded in turn; the number folded there.
fn fold_in_regions(op: &Op) -> Result<(Op, usize), String> {
    match op {
        Op::If(regions) => {
            let (mut then_branch, mut else_branch) = (regions.then_branch.clone(), regions.else_branch.clone());
            let folded = fold_constant_ifs(&mut then_branch)? + fold_constant_ifs(&mut else_branch)?;
            Ok((Op::If(Box::new(IfRegions { then_branch, else_branch })), folded))
        }
        Op::Loop(regions) => {
            let (mut cond, mut body) = (regions.cond.clone(), regions.body.clone());
            let folded = fold_constant_ifs(&mut cond)? + fold_constant_ifs(&mut body)?;
            Ok((Op::Loop(Box::new(LoopRegions { cond, body, max_trips: regions.max_trips })), folded))
        }
        other => Ok((other.clone(), 0)),
    }
}

/// The region the `if` at `id` takes, its block arguments typed as the captured operands: as is
/// when they already are, bound from the operands' sizes when the region is symbolic where they
/// are concrete, `None` (the `if` is kept) when neither gives the operands' types.
fn taken_region(g: &Graph, id: NodeId, regions: &IfRegions, then: bool) -> Option<Graph> {
    let region = if then { &regions.then_branch } else { &regions.else_branch };
    let captured = &g.node(id).inputs[1..];
    let agrees = |region: &Graph| {
        region.inputs().len() == captured.len()
            && region.inputs().iter().zip(captured).all(|(&p, &v)| region.value(p).ty == g.value(v).ty)
    };
    if agrees(region) {
        return Some(region.clone());
    }
    let what: Vec<String> = (0..captured.len()).map(|i| format!("block argument {i}")).collect();
    let shapes: Vec<Vec<usize>> = captured
        .iter()
        .map(|&v| Some(g.value(v).ty.static_shape()?.into_iter().map(|n| n as usize).collect()))
        .collect::<Option<_>>()?;
    if region.inputs().len() != captured.len() {
        return None;
    }
    let observed: Vec<(&str, &TensorType, &[usize])> = region
        .inputs()
        .iter()
        .zip(&what)
        .zip(&shapes)
        .map(|((&p, what), shape)| (what.as_str(), &region.value(p).ty, shape.as_slice()))
        .collect();
    let mut bindings = HashMap::new();
    tessera_ir::types::bind_from_shapes(&observed, &mut bindings).ok()?;
    let bound = region.bind_dims(&bindings).ok()?;
    agrees(&bound).then_some(bound)
}

/// Copies `region`'s nodes into `out` with its block arguments replaced by `captured`; returns
/// the values it yields. A value the region yields keeps the name of the `if` result it stands
/// for (so a graph output keeps its name); other names are kept where free, or suffixed.
fn inline_region(
    out: &mut Graph,
    region: &Graph,
    captured: &[ValueId],
    g: &Graph,
    if_node: NodeId,
    outer_names: &HashSet<&str>,
) -> Result<Vec<ValueId>, String> {
    let results = &g.node(if_node).outputs;
    // The `if`'s result names are free once it is gone: the region value yielded first at a
    // position takes that name.
    let mut result_name: HashMap<ValueId, &str> = HashMap::new();
    for (&yielded, &result) in region.outputs().iter().zip(results) {
        result_name.entry(yielded).or_insert(g.value(result).name.as_str());
    }
    let mut remap: Vec<Option<ValueId>> = vec![None; region.num_values()];
    for (&p, &v) in region.inputs().iter().zip(captured) {
        remap[p.index()] = Some(v);
    }
    let mapped = |remap: &[Option<ValueId>], v: ValueId| {
        remap[v.index()].ok_or_else(|| format!("in the region: %{} is used before it is defined", region.value(v).name))
    };
    for (_, node) in region.nodes() {
        let inputs = node.inputs.iter().map(|&v| mapped(&remap, v)).collect::<Result<Vec<_>, _>>()?;
        let names = node
            .outputs
            .iter()
            .map(|&v| match result_name.get(&v) {
                Some(name) => name.to_string(),
                None => free_name(out, &region.value(v).name, outer_names),
            })
            .collect::<Vec<_>>();
        let results = node.outputs.iter().zip(names).map(|(&v, name)| (name, region.value(v).ty.clone())).collect();
        let id = out.add_node_unchecked(node.op.clone(), inputs, results);
        for (&old, &new) in node.outputs.iter().zip(&out.node(id).outputs) {
            remap[old.index()] = Some(new);
        }
    }
    region.outputs().iter().map(|&v| mapped(&remap, v)).collect()
}

/// `name` if neither `out` nor the enclosing graph uses it, else `name_1`, `name_2`, ...
fn free_name(out: &Graph, name: &str, outer_names: &HashSet<&str>) -> String {
    let taken = |n: &str| out.has_name(n) || outer_names.contains(n);
    if !taken(name) {
        return name.to_string();
    }
    (1..).map(|k| format!("{name}_{k}")).find(|n| !taken(n)).unwrap_or_else(|| name.to_string())
}

/// The values of a graph computed from constants alone, evaluated on demand and kept.
#[derive(Default)]
struct ConstantCone {
    known: HashMap<ValueId, Option<Tensor>>,
}

impl ConstantCone {
    /// The truth of the one-element `i1` value `cond`, when it is computed from constants.
    fn truth(&mut self, g: &Graph, cond: ValueId) -> Option<bool> {
        match &self.value(g, cond)?.data {
            Buffer::Int(v) if v.len() == 1 => Some(v[0] != 0),
            _ => None,
        }
    }

    /// `v` when constants alone compute it (through pure ops, each value at most
    /// [`CONDITION_ELEMENT_LIMIT`] elements), walking producers without recursion.
    fn value(&mut self, g: &Graph, v: ValueId) -> Option<&Tensor> {
        let mut pending = vec![v];
        while let Some(&top) = pending.last() {
            if self.known.contains_key(&top) {
                pending.pop();
                continue;
            }
            let Some(id) = g.producer(top) else {
                self.known.insert(top, None);
                continue;
            };
            let node = g.node(id);
            // An operand known not to be constant decides it: no need to evaluate the others.
            let settled_not = node.inputs.iter().any(|input| matches!(self.known.get(input), Some(None)));
            let missing: Vec<ValueId> =
                node.inputs.iter().copied().filter(|input| !self.known.contains_key(input)).collect();
            if !settled_not && !missing.is_empty() {
                pending.extend(missing);
                continue;
            }
            pending.pop();
            let values = self.evaluate(g, id);
            match values {
                Some(values) => {
                    for (&out, t) in node.outputs.iter().zip(values) {
                        self.known.insert(out, Some(t));
                    }
                }
                None => {
                    for &out in &node.outputs {
                        self.known.insert(out, None);
                    }
                }
            }
        }
        self.known.get(&v)?.as_ref()
    }

    /// The results of node `id` when its operands are known constants and it is a pure op
    /// without regions whose results are small enough.
    fn evaluate(&self, g: &Graph, id: NodeId) -> Option<Vec<Tensor>> {
        let node = g.node(id);
        let foldable = !node.op.is_communication() && !matches!(node.op, Op::If(_) | Op::Loop(_) | Op::Trap(_));
        if !foldable {
            return None;
        }
        let results: Vec<TensorType> = node.outputs.iter().map(|&v| g.value(v).ty.clone()).collect();
        if !results.iter().all(|t| t.num_elements().is_some_and(|n| n <= CONDITION_ELEMENT_LIMIT)) {
            return None;
        }
        let operands: Vec<&Tensor> =
            node.inputs.iter().map(|v| self.known.get(v)?.as_ref()).collect::<Option<Vec<_>>>()?;
        node.op.eval(&operands, &results).ok()
    }
}
