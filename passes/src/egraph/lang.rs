//! The egg language for tsr graphs, its shape analysis, and the conversions graph → e-graph →
//! graph.
//!
//! Every op of the closed `Op` enum is representable: an e-node is `(op, result index,
//! children)`, so multi-result ops (`split`) become one e-node per result that share an op and
//! operands, and are emitted as one node again. Two things are kept deliberately opaque:
//! graph inputs (`Input` leaves that remember index, role and type) and constants, whose key is
//! the id of the value that defined them (so equal literals are not merged here: that is
//! `cse`'s job, and hashing large literals on every match would be wasteful).
//!
//! Ops are keyed by their `Debug` text after normalisation: `concat`, `split` and `softmax`
//! count their axis from the end, so a rule written with `-1` matches the last axis of any rank.

use super::cost::Weights;
use egg::{Analysis, DidMerge, EGraph, Id, Language};
use std::cmp::Ordering;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use tessera_ir::graph::{Graph, InputRole, ValueId};
use tessera_ir::ops::conv::Window;
use tessera_ir::ops::Op;
use tessera_ir::types::{Dim, TensorType};

/// What an e-node stands for.
#[derive(Debug, Clone)]
pub enum NodeKind {
    /// Graph input `index`; `ty` and `parameter` are facts about it, not part of its identity.
    Input { index: u32, parameter: bool, ty: Arc<TensorType> },
    /// Result `result` of `op`, identified by `key` (the normalised op's text). For a
    /// [`lift`]ed op, `op` is the generic form and the attribute is the last child.
    Op { key: Arc<str>, op: Arc<Op>, result: u32 },
    /// An attribute of a lifted op (a target shape, a convolution window), as a leaf.
    Attr { key: Arc<str>, attr: Arc<AttrValue> },
}

/// An op attribute that lives in the e-graph as a leaf child rather than in the op's key, so
/// that rules can match any value of it (`(reshape ?x ?s)`) and compute new ones
/// (`(shape-of ?y)`).
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// The target dimensions of `reshape` and `broadcast`.
    Shape(Vec<Dim>),
    /// The window and group count of `conv2d`.
    Conv { window: Window, groups: i64 },
}

impl AttrValue {
    /// The leaf e-node of this attribute.
    pub fn node(self) -> TsrNode {
        let key: Arc<str> = Arc::from(format!("{self:?}"));
        TsrNode { kind: NodeKind::Attr { key, attr: Arc::new(self) }, children: vec![] }
    }
}

/// The generic form of an op whose attribute is lifted into a child, and that attribute;
/// `None` for ops that keep their attributes in their key.
pub fn lift(op: &Op) -> Option<(Op, AttrValue)> {
    match op {
        Op::Reshape { shape } => Some((Op::Reshape { shape: vec![] }, AttrValue::Shape(shape.clone()))),
        Op::Broadcast { shape } => Some((Op::Broadcast { shape: vec![] }, AttrValue::Shape(shape.clone()))),
        Op::Conv2d { window, groups } => {
            Some((generic_conv(), AttrValue::Conv { window: window.clone(), groups: *groups }))
        }
        // The input transform reads only the padding of the convolution's window.
        Op::WinogradInput { pads } => Some((
            generic_winograd_input(),
            AttrValue::Conv { window: Window { strides: [1; 2], pads: *pads, dilations: [1; 2] }, groups: 1 },
        )),
        Op::WinogradOutput { shape } => Some((Op::WinogradOutput { shape: vec![] }, AttrValue::Shape(shape.clone()))),
        _ => None,
    }
}

/// The generic `winograd_input` of e-nodes and rules (its window is the attribute child); no
/// concrete one has negative pads.
pub fn generic_winograd_input() -> Op {
    Op::WinogradInput { pads: [-1; 4] }
}

/// The generic `conv2d` of e-nodes and rules (its window is the attribute child).
pub fn generic_conv() -> Op {
    Op::Conv2d { window: Window { strides: [0; 2], pads: [0; 4], dilations: [0; 2] }, groups: 0 }
}

/// Whether `op` is the generic form of a lifted op.
pub fn is_lifted(op: &Op) -> bool {
    lift(op).is_some_and(|(generic, _)| generic == *op)
}

/// The concrete op of generic `op` with attribute `attr`; `None` on a mismatch.
pub fn lower(op: &Op, attr: &AttrValue) -> Option<Op> {
    match (op, attr) {
        (Op::Reshape { .. }, AttrValue::Shape(shape)) => Some(Op::Reshape { shape: shape.clone() }),
        (Op::Broadcast { .. }, AttrValue::Shape(shape)) => Some(Op::Broadcast { shape: shape.clone() }),
        (Op::Conv2d { .. }, AttrValue::Conv { window, groups }) => {
            Some(Op::Conv2d { window: window.clone(), groups: *groups })
        }
        (Op::WinogradInput { .. }, AttrValue::Conv { window, .. }) => Some(Op::WinogradInput { pads: window.pads }),
        (Op::WinogradOutput { .. }, AttrValue::Shape(shape)) => Some(Op::WinogradOutput { shape: shape.clone() }),
        _ => None,
    }
}

/// The concrete op of `enode` and its tensor operands (the attribute child of a lifted op
/// resolved through `attr_of`); `None` for inputs and attributes, or a missing attribute.
pub fn concrete<'a>(enode: &'a TsrNode, attr_of: &dyn Fn(Id) -> Option<Arc<AttrValue>>) -> Option<(Op, &'a [Id])> {
    let NodeKind::Op { op, .. } = &enode.kind else {
        return None;
    };
    if is_lifted(op) {
        let (&last, operands) = enode.children.split_last()?;
        let attr = attr_of(last)?;
        return Some((lower(op, &attr)?, operands));
    }
    Some(((**op).clone(), &enode.children))
}

/// An e-node: an op (or input) and its operand e-classes.
#[derive(Debug, Clone)]
pub struct TsrNode {
    pub kind: NodeKind,
    pub children: Vec<Id>,
}

/// What identifies an e-node apart from its children, in the order `Ord` uses (egg's matcher
/// relies on nodes with one discriminant being adjacent in that order).
pub type Discriminant = (u8, u32, Arc<str>, u32);

impl TsrNode {
    /// An e-node for result `result` of the (already normalised) `op`.
    pub fn op(op: Op, result: u32, children: Vec<Id>) -> TsrNode {
        let key: Arc<str> = Arc::from(format!("{op:?}"));
        TsrNode { kind: NodeKind::Op { key, op: Arc::new(op), result }, children }
    }

    fn ident(&self) -> (u8, u32, &str, u32) {
        match &self.kind {
            NodeKind::Input { index, .. } => (0, *index, "", 0),
            NodeKind::Op { key, result, .. } => (1, 0, key, *result),
            NodeKind::Attr { key, .. } => (2, 0, key, 0),
        }
    }

    /// The op, unless this is an input or an attribute (generic for a lifted op).
    pub fn as_op(&self) -> Option<(&Op, u32)> {
        match &self.kind {
            NodeKind::Op { op, result, .. } => Some((op, *result)),
            NodeKind::Input { .. } | NodeKind::Attr { .. } => None,
        }
    }
}

impl PartialEq for TsrNode {
    fn eq(&self, other: &TsrNode) -> bool {
        self.ident() == other.ident() && self.children == other.children
    }
}

impl Eq for TsrNode {}

impl PartialOrd for TsrNode {
    fn partial_cmp(&self, other: &TsrNode) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TsrNode {
    fn cmp(&self, other: &TsrNode) -> Ordering {
        (self.ident(), &self.children).cmp(&(other.ident(), &other.children))
    }
}

impl Hash for TsrNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.ident().hash(state);
        self.children.hash(state);
    }
}

impl Language for TsrNode {
    type Discriminant = Discriminant;

    fn discriminant(&self) -> Discriminant {
        let (tag, index, key, result) = self.ident();
        (tag, index, Arc::from(key), result)
    }

    fn matches(&self, other: &TsrNode) -> bool {
        self.ident() == other.ident() && self.children.len() == other.children.len()
    }

    fn children(&self) -> &[Id] {
        &self.children
    }

    fn children_mut(&mut self) -> &mut [Id] {
        &mut self.children
    }
}

/// Facts about an e-class: its type (from `Op::infer`), and whether its value depends on
/// parameters and constants only, so it can be computed once when weights are loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassData {
    /// `None` only for an ill-typed term, which the rule applier never adds.
    pub ty: Option<TensorType>,
    pub folded: bool,
    /// The graph inputs the value depends on, as a bit per input index modulo 64 (an
    /// over-approximation): `disjoint` conditions use it to keep merges from nesting forever.
    pub deps: u64,
    /// The value of an attribute class (`ty` is then `None`).
    pub attr: Option<Arc<AttrValue>>,
}

/// The shape analysis: each class carries its `TensorType`.
#[derive(Debug, Default, Clone)]
pub struct ShapeAnalysis {
    /// How extraction prices a kernel ([`super::cost::node_cost`]); the analysis itself does not
    /// use it, it travels with the e-graph so every extractor sees the same pricing.
    pub kernels: super::cost::KernelCosts,
}

/// The e-graph type of the pass.
pub type TsrEGraph = EGraph<TsrNode, ShapeAnalysis>;

/// The type of result `result` of `op` on operands of `types`, by the one shape rule.
pub fn infer_result(op: &Op, result: u32, types: &[&TensorType]) -> Result<TensorType, String> {
    let mut results = op.infer(types)?;
    let i = result as usize;
    if i >= results.len() {
        return Err(format!("{} has {} result(s), not {}", op.mnemonic(), results.len(), i + 1));
    }
    Ok(results.swap_remove(i))
}

impl Analysis<TsrNode> for ShapeAnalysis {
    type Data = ClassData;

    fn make(egraph: &mut TsrEGraph, enode: &TsrNode, _id: Id) -> ClassData {
        match &enode.kind {
            NodeKind::Input { index, parameter, ty } => {
                ClassData { ty: Some((**ty).clone()), folded: *parameter, deps: 1u64 << (index % 64), attr: None }
            }
            NodeKind::Attr { attr, .. } => ClassData { ty: None, folded: true, deps: 0, attr: Some(attr.clone()) },
            NodeKind::Op { result, .. } => {
                let attr_of = |c: Id| egraph[c].data.attr.clone();
                let Some((op, operands)) = concrete(enode, &attr_of) else {
                    return ClassData { ty: None, folded: false, deps: 0, attr: None };
                };
                let data: Vec<&ClassData> = operands.iter().map(|&c| &egraph[c].data).collect();
                let folded = data.iter().all(|d| d.folded);
                let deps = data.iter().fold(0, |acc, d| acc | d.deps);
                let types: Option<Vec<&TensorType>> = data.iter().map(|d| d.ty.as_ref()).collect();
                let ty = types.and_then(|types| infer_result(&op, *result, &types).ok());
                ClassData { ty, folded, deps, attr: None }
            }
        }
    }

    fn merge(&mut self, a: &mut ClassData, b: ClassData) -> DidMerge {
        let mut changed_a = false;
        if a.ty.is_none() && b.ty.is_some() {
            a.ty = b.ty.clone();
            changed_a = true;
        }
        if !a.folded && b.folded {
            a.folded = true;
            changed_a = true;
        }
        // Equal values may be written with different inputs (x - x vs 0): keep the smaller set.
        let deps = a.deps & b.deps;
        if deps != a.deps {
            a.deps = deps;
            changed_a = true;
        }
        if a.attr.is_none() && b.attr.is_some() {
            a.attr = b.attr.clone();
            changed_a = true;
        }
        let changed_b = (b.ty.is_none() && a.ty.is_some())
            || (!b.folded && a.folded)
            || deps != b.deps
            || (b.attr.is_none() && a.attr.is_some());
        DidMerge(changed_a, changed_b)
    }
}

/// Counts `concat`, `split` and `softmax` axes from the end (`-1` is the last axis), so that
/// rules are rank-generic; other ops are unchanged.
pub fn normalize(op: &Op, operand_rank: usize) -> Op {
    let from_end = |axis: i64| if axis >= 0 { axis - operand_rank as i64 } else { axis };
    match op {
        Op::Concat { axis } => Op::Concat { axis: from_end(*axis) },
        Op::Softmax { axis } => Op::Softmax { axis: from_end(*axis) },
        Op::Split { axis, sizes } => Op::Split { axis: from_end(*axis), sizes: sizes.clone() },
        other => other.clone(),
    }
}

/// A graph loaded into an e-graph: the class of every graph output, in order.
pub struct Loaded {
    pub egraph: TsrEGraph,
    pub outputs: Vec<Id>,
}

/// Adds every input and node of `g` to a fresh e-graph, weights folded at load.
pub fn load(g: &Graph) -> Loaded {
    load_for(g, Weights::FoldedAtLoad)
}

/// [`load`], with parameter inputs marked as folding (see [`ClassData::folded`]) only when
/// `weights` folds them at load.
pub fn load_for(g: &Graph, weights: Weights) -> Loaded {
    let mut egraph = TsrEGraph::default();
    let outputs = load_into(&mut egraph, g, weights, &|_| None);
    Loaded { egraph, outputs }
}

/// Adds every input and node of `g` to `egraph` (rebuilt afterwards) and returns the classes
/// of its outputs. Inputs are keyed by their index, so a graph with the same inputs as one
/// loaded before shares its input classes: whether its outputs land in the classes of the
/// other's shows whether the e-graph already holds it. `constant_class` may map a literal to
/// a class already in the e-graph (literals are otherwise keyed by their defining value).
pub fn load_into(
    egraph: &mut TsrEGraph,
    g: &Graph,
    weights: Weights,
    constant_class: &dyn Fn(&Op) -> Option<Id>,
) -> Vec<Id> {
    let mut class_of: Vec<Option<Id>> = vec![None; g.num_values()];
    for (index, &v) in g.inputs().iter().enumerate() {
        let parameter = weights == Weights::FoldedAtLoad && g.input_role(v) == Some(InputRole::Parameter);
        let ty = Arc::new(g.value(v).ty.clone());
        let node = TsrNode { kind: NodeKind::Input { index: index as u32, parameter, ty }, children: vec![] };
        class_of[v.index()] = Some(egraph.add(node));
    }
    for (_, node) in g.nodes() {
        // Verified graphs define operands before use; a missing class would be a bug upstream,
        // and the node is then skipped rather than indexing out of bounds.
        let Some(children) = node.inputs.iter().map(|v| class_of[v.index()]).collect::<Option<Vec<Id>>>() else {
            continue;
        };
        let rank = node.inputs.first().map_or(0, |&v| g.value(v).ty.rank());
        for (result, &out) in node.outputs.iter().enumerate() {
            if let Some(class) = constant_class(&node.op) {
                class_of[out.index()] = Some(class);
                continue;
            }
            let enode = match &node.op {
                // Literals are identified by the value that defined them (see the module doc).
                Op::Constant(_) => TsrNode {
                    kind: NodeKind::Op {
                        key: Arc::from(format!("constant#{}", out.0)),
                        op: Arc::new(node.op.clone()),
                        result: 0,
                    },
                    children: vec![],
                },
                op => match lift(op) {
                    Some((generic, attr)) => {
                        let attr = egraph.add(attr.node());
                        let mut children = children.clone();
                        children.push(attr);
                        TsrNode::op(generic, result as u32, children)
                    }
                    None => TsrNode::op(normalize(op, rank), result as u32, children.clone()),
                },
            };
            class_of[out.index()] = Some(egraph.add(enode));
        }
    }
    let outputs = g.outputs().iter().filter_map(|v| class_of[v.index()]).collect();
    egraph.rebuild();
    outputs
}

/// Builds a graph from one chosen e-node per class (`choose`), reachable from `roots`, with
/// the inputs of `original` (names and roles kept) and its output names. `None` when the
/// choice cannot be emitted with the original names (two outputs became one value, or an
/// output became an input).
pub fn build(original: &Graph, roots: &[Id], choose: &dyn Fn(Id) -> TsrNode) -> Option<Graph> {
    build_ranked(original, roots, &|class| vec![choose(class)]).map(|(g, _)| g)
}

/// [`build`] from a ranked list of nodes per class (best first): a class takes the first node
/// none of whose operands is being built above it, so a choice that would close a cycle falls
/// back to the next best. Returns the graph and the node used for every class emitted.
pub fn build_ranked(
    original: &Graph,
    roots: &[Id],
    rank: &dyn Fn(Id) -> Vec<TsrNode>,
) -> Option<(Graph, HashMap<Id, TsrNode>)> {
    // A class whose every node reads a class being built above it is a dead end of the
    // top-down choice: ban the node its parent chose and start again (bounded backtracking).
    let mut banned: std::collections::HashSet<DeadEnd> = std::collections::HashSet::new();
    for _ in 0..MAX_RESTARTS {
        match build_ranked_once(original, roots, rank, &banned) {
            Ok(built) => return built,
            Err(dead_end) => {
                if !banned.insert(dead_end) {
                    return None;
                }
            }
        }
    }
    None
}

/// Most restarts of [`build_ranked`] after dead ends.
const MAX_RESTARTS: usize = 256;

/// A graph and the node used for every class emitted.
type Built = (Graph, HashMap<Id, TsrNode>);

/// A class and the node it had chosen when a class below it reached a dead end.
type DeadEnd = (Id, TsrNode);

/// One top-down pass of [`build_ranked`] that avoids the `banned` choices: the result, or the
/// choice above a dead end.
fn build_ranked_once(
    original: &Graph,
    roots: &[Id],
    rank: &dyn Fn(Id) -> Vec<TsrNode>,
    banned: &std::collections::HashSet<DeadEnd>,
) -> Result<Option<Built>, DeadEnd> {
    let mut g = Graph::new(&original.name);
    let inputs: Vec<ValueId> = original
        .inputs()
        .iter()
        .map(|&v| {
            let value = original.value(v);
            let role = original.input_role(v).unwrap_or(InputRole::Activation);
            g.add_input(&value.name, value.ty.clone(), role)
        })
        .collect();
    let mut value_of: HashMap<Id, ValueId> = HashMap::new();
    // One graph node per (op, operand values): the results of a `split` share it.
    let mut emitted: HashMap<(String, Vec<ValueId>), Vec<ValueId>> = HashMap::new();
    let attr_of = |class: Id| {
        rank(class).into_iter().find_map(|n| match n.kind {
            NodeKind::Attr { attr, .. } => Some(attr),
            _ => None,
        })
    };
    let mut chosen: HashMap<Id, TsrNode> = HashMap::new();
    // Iterative post-order, so deep graphs do not overflow the stack.
    let mut stack: Vec<(Id, bool)> = roots.iter().map(|&r| (r, false)).collect();
    let mut on_path: std::collections::HashSet<Id> = std::collections::HashSet::new();
    while let Some((class, expanded)) = stack.pop() {
        if value_of.contains_key(&class) {
            continue;
        }
        let node = match chosen.get(&class) {
            Some(node) => node.clone(),
            None => {
                // The best node whose operands are not being built above this class.
                let usable = |n: &TsrNode| {
                    let operands = match &n.kind {
                        NodeKind::Op { .. } => concrete(n, &attr_of).map(|(_, o)| o.to_vec()),
                        NodeKind::Input { .. } => Some(vec![]),
                        NodeKind::Attr { .. } => None,
                    };
                    operands.is_some_and(|o| o.iter().all(|c| !on_path.contains(c) && *c != class))
                        && !banned.contains(&(class, n.clone()))
                };
                let Some(node) = rank(class).into_iter().find(usable) else {
                    // The parent is the nearest class on the stack that is being expanded.
                    let parent = stack.iter().rev().find(|(_, expanded)| *expanded).map(|&(c, _)| c);
                    return match parent.and_then(|p| chosen.get(&p).map(|n| (p, n.clone()))) {
                        Some(dead_end) => Err(dead_end),
                        None => Ok(None),
                    };
                };
                chosen.insert(class, node.clone());
                node
            }
        };
        let lowered = match &node.kind {
            NodeKind::Op { .. } => match concrete(&node, &attr_of) {
                Some(lowered) => Some(lowered),
                None => return Ok(None),
            },
            NodeKind::Input { .. } => None,
            NodeKind::Attr { .. } => return Ok(None), // an attribute is never a value
        };
        let operands: &[Id] = lowered.as_ref().map_or(&[], |(_, operands)| operands);
        if !expanded {
            if !on_path.insert(class) {
                return Ok(None); // a cyclic choice: never emitted
            }
            stack.push((class, true));
            for &c in operands.iter().rev() {
                if !value_of.contains_key(&c) {
                    stack.push((c, false));
                }
            }
            continue;
        }
        on_path.remove(&class);
        let value = (|| -> Option<ValueId> {
            Some(match &node.kind {
                NodeKind::Input { index, .. } => *inputs.get(*index as usize)?,
                NodeKind::Attr { .. } => return None,
                NodeKind::Op { result, .. } => {
                    let op = lowered.as_ref().map(|(op, _)| op.clone())?;
                    let operands: Vec<ValueId> =
                        operands.iter().map(|c| value_of.get(c).copied()).collect::<Option<_>>()?;
                    let entry = (format!("{op:?}"), operands.clone());
                    let outs = match emitted.get(&entry) {
                        Some(outs) => outs.clone(),
                        None => {
                            let outs = g.add_node(op, &operands).ok()?;
                            emitted.insert(entry, outs.clone());
                            outs
                        }
                    };
                    *outs.get(*result as usize)?
                }
            })
        })();
        let Some(value) = value else { return Ok(None) };
        value_of.insert(class, value);
    }
    let Some(outputs) = roots.iter().map(|r| value_of.get(r).copied()).collect::<Option<Vec<ValueId>>>() else {
        return Ok(None);
    };
    let mut seen = std::collections::HashSet::new();
    for (&v, &orig) in outputs.iter().zip(original.outputs()) {
        if !seen.insert(v) || g.input_role(v).is_some() {
            return Ok(None);
        }
        let name = &original.value(orig).name;
        // A fresh numeric name may already hold an output's name: move it aside first.
        let holder = g.values().find(|(_, val)| &val.name == name).map(|(id, _)| id);
        if let Some(holder) = holder {
            if holder != v {
                let fresh = g.fresh_name();
                g.rename_value(holder, &fresh);
            }
        }
        g.rename_value(v, name);
    }
    g.set_outputs(outputs);
    chosen.retain(|class, _| value_of.contains_key(class));
    Ok(Some((g, chosen)))
}
