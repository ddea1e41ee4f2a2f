//! The SSA graph: an arena of nodes and values addressed by typed ids.
//!
//! Nodes are kept in program order (every operand is defined by a graph input or an earlier
//! node). Values carry their SSA name (the `%name` of the text form, unique in the graph) and
//! their type. Analyses live in side tables keyed by id, not in the nodes.

use crate::fusion::FusionTag;
use crate::ops::collective::Collective;
use crate::ops::Op;
use crate::sharding::IoShardings;
use crate::symbolic::SymbolicError;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fmt;

/// Id of a value (a graph input or a node result). Prints as its index, e.g. `v3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ValueId(pub u32);

/// Id of a node, its position in program order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub u32);

impl ValueId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl NodeId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for ValueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// Whether a graph input is data fed per step or a trained parameter (weights).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputRole {
    Activation,
    Parameter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueDef {
    /// The `index`-th graph input.
    Input { index: usize, role: InputRole },
    /// Result `index` of `node`.
    Result { node: NodeId, index: usize },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Value {
    pub name: String,
    pub ty: TensorType,
    pub def: ValueDef,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
}

/// Why a node could not be added to a graph.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("tsr.{op}: {message}")]
pub struct AddNodeError {
    pub op: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "GraphRepr", into = "GraphRepr")]
pub struct Graph {
    pub name: String,
    values: Vec<Value>,
    nodes: Vec<Node>,
    inputs: Vec<ValueId>,
    outputs: Vec<ValueId>,
    /// Side table: the fusion group of each node (indexed by `NodeId`), set by the `fuse` pass.
    fusion: Vec<Option<FusionTag>>,
    /// Side table: shardings the graph's inputs and outputs were given (by an importer).
    io_shardings: Option<IoShardings>,
    /// Every value name, for fresh-name generation; derived from `values`.
    names: HashSet<String>,
    next_temp: u64,
}

impl PartialEq for Graph {
    fn eq(&self, other: &Graph) -> bool {
        self.name == other.name
            && self.values == other.values
            && self.nodes == other.nodes
            && self.inputs == other.inputs
            && self.outputs == other.outputs
            && self.fusion == other.fusion
            && self.io_shardings == other.io_shardings
    }
}

impl Graph {
    pub fn new(name: &str) -> Graph {
        Graph {
            name: name.to_string(),
            values: Vec::new(),
            nodes: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            fusion: Vec::new(),
            io_shardings: None,
            names: HashSet::new(),
            next_temp: 0,
        }
    }

    /// A name not yet used by any value: the smallest free decimal number, as MLIR numbers
    /// anonymous values.
    pub fn fresh_name(&mut self) -> String {
        loop {
            let candidate = self.next_temp.to_string();
            self.next_temp += 1;
            if !self.names.contains(&candidate) {
                return candidate;
            }
        }
    }

    /// Whether a value already has `name`.
    /// The shardings the inputs and outputs were given, if any ([`IoShardings`]).
    pub fn io_shardings(&self) -> Option<&IoShardings> {
        self.io_shardings.as_ref()
    }

    /// Sets the boundary shardings; the verifier checks them against the inputs and outputs.
    pub fn set_io_shardings(&mut self, shardings: Option<IoShardings>) {
        self.io_shardings = shardings;
    }

    pub fn has_name(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    fn push_value(&mut self, name: String, ty: TensorType, def: ValueDef) -> ValueId {
        let id = ValueId(self.values.len() as u32);
        self.names.insert(name.clone());
        self.values.push(Value { name, ty, def });
        id
    }

    /// Appends a graph input. The caller keeps names unique (the verifier checks).
    pub fn add_input(&mut self, name: &str, ty: TensorType, role: InputRole) -> ValueId {
        let index = self.inputs.len();
        let id = self.push_value(name.to_string(), ty, ValueDef::Input { index, role });
        self.inputs.push(id);
        id
    }

    /// Appends a node whose result types come from the op's shape rule; results get fresh names.
    pub fn add_node(&mut self, op: Op, inputs: &[ValueId]) -> Result<Vec<ValueId>, AddNodeError> {
        let types = {
            let operand_types: Vec<&TensorType> = inputs.iter().map(|&v| &self.value(v).ty).collect();
            op.infer(&operand_types).map_err(|message| AddNodeError { op: op.mnemonic(), message })?
        };
        let results = types.into_iter().map(|ty| (self.fresh_name(), ty)).collect();
        let node = self.add_node_unchecked(op, inputs.to_vec(), results);
        Ok(self.node(node).outputs.clone())
    }

    /// Like [`Graph::add_node`] for single-result ops.
    pub fn add(&mut self, op: Op, inputs: &[ValueId]) -> Result<ValueId, AddNodeError> {
        let mnemonic = op.mnemonic();
        let outs = self.add_node(op, inputs)?;
        match outs.as_slice() {
            [v] => Ok(*v),
            _ => Err(AddNodeError { op: mnemonic, message: format!("has {} results, not one", outs.len()) }),
        }
    }

    /// Appends a node with the given result names and types, unchecked; the verifier checks
    /// them against the shape rule. This is how parsers build graphs.
    pub fn add_node_unchecked(&mut self, op: Op, inputs: Vec<ValueId>, results: Vec<(String, TensorType)>) -> NodeId {
        let node = NodeId(self.nodes.len() as u32);
        let outputs = results
            .into_iter()
            .enumerate()
            .map(|(index, (name, ty))| self.push_value(name, ty, ValueDef::Result { node, index }))
            .collect();
        self.nodes.push(Node { op, inputs, outputs });
        self.fusion.push(None);
        node
    }

    /// The fusion group of `node`, if the `fuse` pass put it in one.
    pub fn fusion_tag(&self, node: NodeId) -> Option<FusionTag> {
        self.fusion.get(node.index()).copied().flatten()
    }

    /// Puts `node` in a fusion group (or takes it out with `None`).
    pub fn set_fusion_tag(&mut self, node: NodeId, tag: Option<FusionTag>) {
        if let Some(slot) = self.fusion.get_mut(node.index()) {
            *slot = tag;
        }
    }

    /// Whether any node carries a fusion tag.
    pub fn has_fusion_tags(&self) -> bool {
        self.fusion.iter().any(Option::is_some)
    }

    pub fn set_outputs(&mut self, outputs: Vec<ValueId>) {
        self.outputs = outputs;
    }

    pub fn value(&self, id: ValueId) -> &Value {
        &self.values[id.index()]
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    /// Mutable access to a node's op and operands; its results stay as they are.
    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id.index()]
    }

    pub fn nodes(&self) -> impl ExactSizeIterator<Item = (NodeId, &Node)> + '_ {
        self.nodes.iter().enumerate().map(|(i, n)| (NodeId(i as u32), n))
    }

    pub fn values(&self) -> impl ExactSizeIterator<Item = (ValueId, &Value)> + '_ {
        self.values.iter().enumerate().map(|(i, v)| (ValueId(i as u32), v))
    }

    pub fn num_nodes(&self) -> usize {
        self.nodes.len()
    }

    pub fn num_values(&self) -> usize {
        self.values.len()
    }

    pub fn inputs(&self) -> &[ValueId] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[ValueId] {
        &self.outputs
    }

    /// The node defining `v`, if it is not a graph input.
    pub fn producer(&self, v: ValueId) -> Option<NodeId> {
        match self.value(v).def {
            ValueDef::Result { node, .. } => Some(node),
            ValueDef::Input { .. } => None,
        }
    }

    pub fn input_role(&self, v: ValueId) -> Option<InputRole> {
        match self.value(v).def {
            ValueDef::Input { role, .. } => Some(role),
            ValueDef::Result { .. } => None,
        }
    }

    /// Renames a value; the caller keeps names unique.
    pub fn rename_value(&mut self, v: ValueId, name: &str) {
        let old = std::mem::replace(&mut self.values[v.index()].name, name.to_string());
        self.names.remove(&old);
        self.names.insert(name.to_string());
        // Input shardings are keyed by name: the renamed input keeps its sharding.
        if let (Some(io), ValueDef::Input { .. }) = (self.io_shardings.as_mut(), &self.values[v.index()].def) {
            for (input, _) in io.inputs.iter_mut().filter(|(input, _)| *input == old) {
                *input = name.to_string();
            }
        }
    }

    /// Number of uses of each value by nodes and graph outputs, indexed by `ValueId`.
    pub fn use_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.values.len()];
        for node in &self.nodes {
            for v in &node.inputs {
                counts[v.index()] += 1;
            }
        }
        for v in &self.outputs {
            counts[v.index()] += 1;
        }
        counts
    }

    /// Makes every use of `from` (operands and graph outputs) a use of `to`.
    pub fn replace_all_uses(&mut self, from: ValueId, to: ValueId) {
        for node in &mut self.nodes {
            for v in &mut node.inputs {
                if *v == from {
                    *v = to;
                }
            }
        }
        for v in &mut self.outputs {
            if *v == from {
                *v = to;
            }
        }
    }

    /// Keeps the nodes for which `keep` holds and renumbers ids densely, preserving program
    /// order and names. The caller guarantees no kept node or output uses a dropped value.
    /// Returns the number of dropped nodes.
    pub fn retain_nodes(&mut self, keep: impl Fn(NodeId, &Node) -> bool) -> usize {
        let kept: Vec<bool> = self.nodes().map(|(id, n)| keep(id, n)).collect();
        let dropped = kept.iter().filter(|k| !**k).count();
        if dropped == 0 {
            return 0;
        }
        let fresh = Graph::new(&self.name);
        let old = std::mem::replace(self, fresh);
        let mut remap: Vec<Option<ValueId>> = vec![None; old.values.len()];
        for &v in &old.inputs {
            let value = old.value(v);
            let role = old.input_role(v).unwrap_or(InputRole::Activation);
            remap[v.index()] = Some(self.add_input(&value.name, value.ty.clone(), role));
        }
        for (id, node) in old.nodes() {
            if !kept[id.index()] {
                continue;
            }
            let inputs = node.inputs.iter().map(|v| remap[v.index()].unwrap_or(*v)).collect();
            let results = node.outputs.iter().map(|&v| (old.value(v).name.clone(), old.value(v).ty.clone())).collect();
            let new_node = self.add_node_unchecked(node.op.clone(), inputs, results);
            self.set_fusion_tag(new_node, old.fusion_tag(id));
            for (i, &v) in node.outputs.iter().enumerate() {
                remap[v.index()] = Some(self.nodes[new_node.index()].outputs[i]);
            }
        }
        self.outputs = old.outputs.iter().map(|v| remap[v.index()].unwrap_or(*v)).collect();
        self.next_temp = old.next_temp;
        self.io_shardings = old.io_shardings;
        dropped
    }
}

impl Graph {
    /// Puts the nodes in the order `order` (a permutation of all node ids that keeps every
    /// operand defined before its use), renumbering ids and keeping names and fusion tags.
    /// Returns `false`, changing nothing, when `order` is not such a permutation.
    pub fn reorder_nodes(&mut self, order: &[NodeId]) -> bool {
        let n = self.nodes.len();
        let mut seen = vec![false; n];
        let mut defined = vec![false; self.values.len()];
        for &v in &self.inputs {
            defined[v.index()] = true;
        }
        for &id in order {
            let Some(node) = self.nodes.get(id.index()) else { return false };
            if std::mem::replace(&mut seen[id.index()], true) || node.inputs.iter().any(|v| !defined[v.index()]) {
                return false;
            }
            for v in &node.outputs {
                defined[v.index()] = true;
            }
        }
        if order.len() != n {
            return false;
        }
        let fresh = Graph::new(&self.name);
        let old = std::mem::replace(self, fresh);
        let mut remap: Vec<ValueId> = (0..old.values.len() as u32).map(ValueId).collect();
        for &v in &old.inputs {
            let value = old.value(v);
            let role = old.input_role(v).unwrap_or(InputRole::Activation);
            remap[v.index()] = self.add_input(&value.name, value.ty.clone(), role);
        }
        for &id in order {
            let node = old.node(id);
            let inputs = node.inputs.iter().map(|v| remap[v.index()]).collect();
            let results = node.outputs.iter().map(|&v| (old.value(v).name.clone(), old.value(v).ty.clone())).collect();
            let new_node = self.add_node_unchecked(node.op.clone(), inputs, results);
            self.set_fusion_tag(new_node, old.fusion_tag(id));
            for (i, &v) in node.outputs.iter().enumerate() {
                remap[v.index()] = self.nodes[new_node.index()].outputs[i];
            }
        }
        self.outputs = old.outputs.iter().map(|v| remap[v.index()]).collect();
        self.next_temp = old.next_temp;
        self.io_shardings = old.io_shardings;
        true
    }

    /// A copy with the symbolic dimensions named in `bindings` replaced by their sizes, in every
    /// value type, in the targets `reshape`, `broadcast` and `recv` carry and in the result types
    /// of `trap`; names, roles and
    /// order are kept. The caller verifies the result (a binding can make a reshape ill-typed).
    /// Binding evaluates dimension expressions; one that overflows or turns negative is an error.
    pub fn bind_dims(&self, bindings: &HashMap<String, u64>) -> Result<Graph, SymbolicError> {
        let bind = |dims: &[crate::types::Dim]| crate::types::bind_dims(dims, bindings);
        let mut g = Graph::new(&self.name);
        let mut remap: Vec<ValueId> = (0..self.values.len() as u32).map(ValueId).collect();
        for &v in &self.inputs {
            let value = self.value(v);
            let role = self.input_role(v).unwrap_or(InputRole::Activation);
            remap[v.index()] = g.add_input(&value.name, value.ty.substitute(bindings)?, role);
        }
        for node in &self.nodes {
            let op = match &node.op {
                Op::Reshape { shape } => Op::Reshape { shape: bind(shape)? },
                Op::Broadcast { shape } => Op::Broadcast { shape: bind(shape)? },
                Op::Collective(Collective::Recv { mesh_axis, peer, tag, ty }) => Op::Collective(Collective::Recv {
                    mesh_axis: mesh_axis.clone(),
                    peer: *peer,
                    tag: *tag,
                    ty: ty.substitute(bindings)?,
                }),
                Op::Trap(trap) => Op::Trap(Box::new(crate::ops::control::Trap {
                    message: trap.message.clone(),
                    types: trap.types.iter().map(|t| t.substitute(bindings)).collect::<Result<_, _>>()?,
                })),
                // Regions see the same symbols: a binding holds inside them too.
                Op::If(regions) => Op::If(Box::new(crate::ops::control::IfRegions {
                    then_branch: regions.then_branch.bind_dims(bindings)?,
                    else_branch: regions.else_branch.bind_dims(bindings)?,
                })),
                Op::Loop(regions) => Op::Loop(Box::new(crate::ops::control::LoopRegions {
                    cond: regions.cond.bind_dims(bindings)?,
                    body: regions.body.bind_dims(bindings)?,
                    max_trips: regions.max_trips,
                })),
                other => other.clone(),
            };
            let inputs = node.inputs.iter().map(|v| remap[v.index()]).collect();
            let results = node
                .outputs
                .iter()
                .map(|&v| Ok((self.value(v).name.clone(), self.value(v).ty.substitute(bindings)?)))
                .collect::<Result<Vec<_>, SymbolicError>>()?;
            let id = g.add_node_unchecked(op, inputs, results);
            for (i, &v) in node.outputs.iter().enumerate() {
                remap[v.index()] = g.nodes[id.index()].outputs[i];
            }
        }
        g.outputs = self.outputs.iter().map(|v| remap[v.index()]).collect();
        g.next_temp = self.next_temp;
        g.io_shardings = self.io_shardings.clone();
        Ok(g)
    }
}

impl Graph {
    /// Replaces symbol `name` by the expression `by` in place, wherever a dimension can hold it:
    /// every value type, the targets `reshape`, `broadcast` and `recv` carry, `trap`'s result
    /// types, and the regions of
    /// `if`/`loop` (they see the enclosing symbols). Names, ids and order are kept. This is how
    /// an importer unifies two symbols the graph proves equal. Substituting multiplies out
    /// products, so it can overflow (an error; the graph may then be partly substituted).
    pub fn substitute_symbol(&mut self, name: &str, by: &crate::symbolic::DimExpr) -> Result<(), SymbolicError> {
        fn dims(
            dims: &mut [crate::types::Dim],
            name: &str,
            by: &crate::symbolic::DimExpr,
        ) -> Result<(), SymbolicError> {
            for d in dims.iter_mut() {
                if let crate::types::Dim::Symbolic(e) = d {
                    if e.symbols().contains(name) {
                        let replaced = e.substitute_with(&|s| (s == name).then(|| by.clone()))?;
                        *d = crate::types::Dim::from_expr(replaced)?;
                    }
                }
            }
            Ok(())
        }
        for value in &mut self.values {
            dims(&mut value.ty.dims, name, by)?;
        }
        for node in &mut self.nodes {
            match &mut node.op {
                Op::Reshape { shape } | Op::Broadcast { shape } => dims(shape, name, by)?,
                Op::Collective(Collective::Recv { ty, .. }) => dims(&mut ty.dims, name, by)?,
                Op::Trap(trap) => {
                    for ty in &mut trap.types {
                        dims(&mut ty.dims, name, by)?;
                    }
                }
                Op::If(regions) => {
                    regions.then_branch.substitute_symbol(name, by)?;
                    regions.else_branch.substitute_symbol(name, by)?;
                }
                Op::Loop(regions) => {
                    regions.cond.substitute_symbol(name, by)?;
                    regions.body.substitute_symbol(name, by)?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl Graph {
    /// Moves the nodes from `first` on (and the values they define, which must be the values
    /// from `first`'s first result on: the nodes were appended last) out of this graph into a
    /// region yielding `yields`. Values of this graph the moved nodes read, or that are yielded
    /// without being computed there, become the region's block arguments, listed in the
    /// returned captures in the same order. This is how an importer builds a branch: it imports
    /// the branch's nodes into the enclosing graph, then moves them into the region.
    pub fn split_off_region(
        &mut self,
        first: NodeId,
        name: &str,
        yields: &[ValueId],
    ) -> Result<(Graph, Vec<ValueId>), String> {
        let first_value = match self.nodes.get(first.index()) {
            None => self.values.len(),
            Some(node) => node.outputs.first().map_or(self.values.len(), |v| v.index()),
        };
        let moved_values_ok = self.values[first_value..].iter().all(|v| match v.def {
            ValueDef::Result { node, .. } => node.index() >= first.index(),
            ValueDef::Input { .. } => false,
        });
        if !moved_values_ok || self.nodes.len() < first.index() {
            return Err("the region's nodes are not the last ones added".into());
        }
        let mut region = Graph::new(name);
        let mut remap: HashMap<ValueId, ValueId> = HashMap::new();
        let mut captures = Vec::new();
        let mut capture = |region: &mut Graph, remap: &mut HashMap<ValueId, ValueId>, outer: &Graph, v: ValueId| {
            if let Some(&inner) = remap.get(&v) {
                return inner;
            }
            let value = outer.value(v);
            let inner = region.add_input(&value.name, value.ty.clone(), InputRole::Activation);
            remap.insert(v, inner);
            captures.push(v);
            inner
        };
        let moved: Vec<Node> = self.nodes.drain(first.index()..).collect();
        self.fusion.truncate(first.index());
        for node in &moved {
            let inputs = node
                .inputs
                .iter()
                .map(|&v| if v.index() >= first_value { remap[&v] } else { capture(&mut region, &mut remap, self, v) })
                .collect();
            let results =
                node.outputs.iter().map(|&v| (self.value(v).name.clone(), self.value(v).ty.clone())).collect();
            let id = region.add_node_unchecked(node.op.clone(), inputs, results);
            for (&old, &new) in node.outputs.iter().zip(&region.nodes[id.index()].outputs) {
                remap.insert(old, new);
            }
        }
        let outputs = yields
            .iter()
            .map(|&v| if v.index() >= first_value { remap[&v] } else { capture(&mut region, &mut remap, self, v) })
            .collect();
        region.set_outputs(outputs);
        for value in self.values.drain(first_value..) {
            self.names.remove(&value.name);
        }
        Ok((region, captures))
    }
}

/// One block argument of a rebuilt region ([`Graph::with_block_args`]).
#[derive(Debug, Clone)]
pub enum BlockArg {
    /// The region's input at this index.
    Input(usize),
    /// A new argument the region does not read (the other branch's capture).
    Unused { name: String, ty: TensorType },
    /// The region's input at this index, replaced by a constant node holding `value`.
    Literal { input: usize, value: crate::tensor::Tensor },
}

impl Graph {
    /// A copy of this region with its inputs rearranged as `args` says (every input of this
    /// graph should appear once, as `Input` or `Literal`; one left out must be unread). Nodes,
    /// names and outputs are kept; literals become constant nodes before the others.
    pub fn with_block_args(&self, args: &[BlockArg]) -> Result<Graph, String> {
        let mut g = Graph::new(&self.name);
        let mut remap: Vec<Option<ValueId>> = vec![None; self.values.len()];
        let input = |index: usize| -> Result<ValueId, String> {
            self.inputs.get(index).copied().ok_or_else(|| format!("the region has no input {index}"))
        };
        for arg in args {
            match arg {
                BlockArg::Input(index) => {
                    let v = input(*index)?;
                    remap[v.index()] =
                        Some(g.add_input(&self.value(v).name, self.value(v).ty.clone(), InputRole::Activation));
                }
                BlockArg::Unused { name, ty } => {
                    let mut unique = name.clone();
                    let mut k = 1;
                    while self.names.contains(&unique) || g.names.contains(&unique) {
                        unique = format!("{name}_{k}");
                        k += 1;
                    }
                    g.add_input(&unique, ty.clone(), InputRole::Activation);
                }
                BlockArg::Literal { .. } => {}
            }
        }
        for arg in args {
            if let BlockArg::Literal { input: index, value } = arg {
                let v = input(*index)?;
                let node = g.add_node_unchecked(
                    Op::Constant(value.clone()),
                    vec![],
                    vec![(self.value(v).name.clone(), self.value(v).ty.clone())],
                );
                remap[v.index()] = Some(g.nodes[node.index()].outputs[0]);
            }
        }
        for node in &self.nodes {
            let inputs = node
                .inputs
                .iter()
                .map(|v| {
                    remap[v.index()]
                        .ok_or_else(|| format!("block argument %{} is read but not kept", self.value(*v).name))
                })
                .collect::<Result<Vec<_>, String>>()?;
            let results =
                node.outputs.iter().map(|&v| (self.value(v).name.clone(), self.value(v).ty.clone())).collect();
            let id = g.add_node_unchecked(node.op.clone(), inputs, results);
            for (i, &v) in node.outputs.iter().enumerate() {
                remap[v.index()] = Some(g.nodes[id.index()].outputs[i]);
            }
        }
        g.outputs = self
            .outputs
            .iter()
            .map(|v| remap[v.index()].ok_or_else(|| format!("yielded %{} is not kept", self.value(*v).name)))
            .collect::<Result<Vec<_>, String>>()?;
        g.next_temp = self.next_temp;
        Ok(g)
    }
}

/// The serialized form of a graph: the arena as plain lists. Deserializing checks that every
/// id is in range and every definition is consistent, so a loaded graph never indexes out of
/// bounds; types are the verifier's business.
#[derive(Serialize, Deserialize)]
struct GraphRepr {
    name: String,
    values: Vec<Value>,
    nodes: Vec<Node>,
    inputs: Vec<ValueId>,
    outputs: Vec<ValueId>,
    /// Fusion tags per node; absent when no node has one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    fusion: Vec<Option<FusionTag>>,
    /// Boundary shardings in their text forms; absent when the graph has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    io_shardings: Option<IoShardingsRepr>,
}

/// [`IoShardings`] as text: the mesh (`dp=2,tp=4`), shardings (`[{dp}, {}]`) by input name and
/// by output position.
#[derive(Serialize, Deserialize)]
struct IoShardingsRepr {
    mesh: String,
    inputs: Vec<(String, String)>,
    outputs: Vec<(usize, String)>,
}

impl From<&IoShardings> for IoShardingsRepr {
    fn from(io: &IoShardings) -> IoShardingsRepr {
        IoShardingsRepr {
            mesh: io.mesh.to_string(),
            inputs: io.inputs.iter().map(|(n, s)| (n.clone(), s.to_string())).collect(),
            outputs: io.outputs.iter().map(|(i, s)| (*i, s.to_string())).collect(),
        }
    }
}

impl TryFrom<IoShardingsRepr> for IoShardings {
    type Error = String;

    fn try_from(r: IoShardingsRepr) -> Result<IoShardings, String> {
        let mesh = crate::sharding::Mesh::parse(&r.mesh).map_err(|e| e.to_string())?;
        let sharding = |text: &str| crate::sharding::Sharding::parse(text);
        Ok(IoShardings {
            mesh,
            inputs: r.inputs.iter().map(|(n, t)| Ok((n.clone(), sharding(t)?))).collect::<Result<_, String>>()?,
            outputs: r.outputs.iter().map(|(i, t)| Ok((*i, sharding(t)?))).collect::<Result<_, String>>()?,
        })
    }
}

impl From<Graph> for GraphRepr {
    fn from(g: Graph) -> GraphRepr {
        let fusion = if g.has_fusion_tags() { g.fusion } else { Vec::new() };
        let io_shardings = g.io_shardings.as_ref().map(IoShardingsRepr::from);
        GraphRepr {
            name: g.name,
            values: g.values,
            nodes: g.nodes,
            inputs: g.inputs,
            outputs: g.outputs,
            fusion,
            io_shardings,
        }
    }
}

impl TryFrom<GraphRepr> for Graph {
    type Error = String;

    fn try_from(r: GraphRepr) -> Result<Graph, String> {
        let n_values = r.values.len();
        let check = |v: &ValueId, what: &str| -> Result<(), String> {
            if v.index() >= n_values {
                return Err(format!("{what} refers to value {v}, but the graph has {n_values} values"));
            }
            Ok(())
        };
        for (i, v) in r.inputs.iter().enumerate() {
            check(v, "an input")?;
            if !matches!(r.values[v.index()].def, ValueDef::Input { index, .. } if index == i) {
                return Err(format!("value {v} is listed as input {i} but not defined as it"));
            }
        }
        for (n, node) in r.nodes.iter().enumerate() {
            for v in &node.inputs {
                check(v, &format!("node n{n}"))?;
            }
            for (i, v) in node.outputs.iter().enumerate() {
                check(v, &format!("node n{n}"))?;
                let expected = ValueDef::Result { node: NodeId(n as u32), index: i };
                if r.values[v.index()].def != expected {
                    return Err(format!("value {v} is result {i} of node n{n} but not defined as it"));
                }
            }
        }
        for v in &r.outputs {
            check(v, "a graph output")?;
        }
        for (i, value) in r.values.iter().enumerate() {
            let listed = match value.def {
                ValueDef::Input { index, .. } => r.inputs.get(index).map(|v| v.index()) == Some(i),
                ValueDef::Result { node, index } => {
                    r.nodes.get(node.index()).and_then(|n| n.outputs.get(index)).map(|v| v.index()) == Some(i)
                }
            };
            if !listed {
                return Err(format!("value v{i} ('{}') is defined by nothing in the graph", value.name));
            }
        }
        let fusion = match r.fusion.len() {
            0 => vec![None; r.nodes.len()],
            n if n == r.nodes.len() => r.fusion,
            n => return Err(format!("{n} fusion tags for {} nodes", r.nodes.len())),
        };
        let names = r.values.iter().map(|v| v.name.clone()).collect();
        Ok(Graph {
            name: r.name,
            values: r.values,
            nodes: r.nodes,
            inputs: r.inputs,
            outputs: r.outputs,
            fusion,
            io_shardings: r.io_shardings.map(IoShardings::try_from).transpose()?,
            names,
            next_temp: 0,
        })
    }
}

#[cfg(test)]
mod substitute_tests {
    use super::{Graph, InputRole};
    use crate::dtype::DType;
    use crate::ops::Op;
    use crate::symbolic::DimExpr;
    use crate::types::{Dim, TensorType};

    /// Unifying `b` into `a` rewrites every type and reshape target that mentions `b`, products
    /// included, and leaves a verified graph whose input types share one symbol.
    #[test]
    fn substituting_a_symbol_rewrites_types_and_targets() {
        let mut g = Graph::new("g");
        let x =
            g.add_input("x", TensorType::new(DType::F32, vec![Dim::sym("a"), Dim::Static(4)]), InputRole::Activation);
        let y =
            g.add_input("y", TensorType::new(DType::F32, vec![Dim::sym("b"), Dim::Static(4)]), InputRole::Activation);
        let ab = Dim::Symbolic(DimExpr::parse("4 * b").expect("4 * b"));
        let flat = g.add_node(Op::Reshape { shape: vec![ab] }, &[y]).expect("reshape")[0];
        g.set_outputs(vec![x, flat]);
        assert!(g.add_node(Op::Concat { axis: 1 }, &[x, y]).is_err(), "a and b are different symbols");
        g.substitute_symbol("b", &DimExpr::symbol("a")).expect("substitute");
        assert_eq!(g.value(y).ty, g.value(x).ty);
        assert_eq!(g.value(flat).ty.dims, vec![Dim::Symbolic(DimExpr::parse("4 * a").expect("4 * a"))]);
        g.add_node(Op::Concat { axis: 1 }, &[x, y]).expect("one symbol now");
        crate::verify::verify(&g).expect("verified");
        let symbols: Vec<&str> = g.values().flat_map(|(_, v)| v.ty.symbols()).collect();
        assert!(symbols.iter().all(|&s| s == "a"), "{symbols:?}");
    }
}
