//! Replacing values during a pass, in one linear walk, while graph outputs keep their names.
//!
//! Passes record `from -> to` replacements in a [`ValueRemap`], rewrite each node's operands
//! as they reach it in program order, and redirect the graph outputs once at the end. `to`
//! must be defined before every use of `from` (in practice: an operand of the replaced node or
//! a value defined even earlier), so program order stays valid.
//!
//! Output names are the graph's interface (`tessera run` names its output files after them).
//! When an output `%y` is replaced by `%x`:
//! - if `%x` is a node result that is not itself a graph output, `%x` is renamed `y` (and the
//!   dead `%y` gets a fresh numeric name), so the output keeps its name;
//! - if `%x` is a graph input, nothing is inserted: the output becomes the input and so carries
//!   the input's name (input names are the signature and never change);
//! - if `%x` is already a graph output, the outputs now share `%x` and its name.
//!
//! In the last two cases the output's name changes; renaming cannot keep both names unique.

use std::collections::HashSet;
use tessera_ir::graph::{Graph, NodeId, ValueId};

/// Pending replacements of values by earlier values.
#[derive(Debug, Clone)]
pub struct ValueRemap {
    to: Vec<Option<ValueId>>,
    any: bool,
}

impl ValueRemap {
    /// An empty remap for the values of `g` (passes using it add no values).
    pub fn new(g: &Graph) -> ValueRemap {
        ValueRemap { to: vec![None; g.num_values()], any: false }
    }

    pub fn is_empty(&self) -> bool {
        !self.any
    }

    /// Records that every use of `from` becomes a use of `to`.
    pub fn replace(&mut self, from: ValueId, to: ValueId) {
        let to = self.resolve(to);
        if from != to {
            self.to[from.index()] = Some(to);
            self.any = true;
        }
    }

    /// The value `v` stands for after all replacements so far.
    pub fn resolve(&self, mut v: ValueId) -> ValueId {
        // Chains are short (a replacement target is resolved when recorded); the bound only
        // guards against a cycle, which `replace` cannot create.
        for _ in 0..self.to.len() {
            match self.to.get(v.index()).copied().flatten() {
                Some(next) => v = next,
                None => break,
            }
        }
        v
    }

    /// Rewrites the operands of `node`; true when any changed.
    pub fn apply_to_node(&self, g: &mut Graph, node: NodeId) -> bool {
        if !self.any {
            return false;
        }
        let inputs: Vec<ValueId> = g.node(node).inputs.iter().map(|&v| self.resolve(v)).collect();
        if inputs == g.node(node).inputs {
            return false;
        }
        g.node_mut(node).inputs = inputs;
        true
    }

    /// Redirects the graph outputs, moving names as the module doc describes. Call after every
    /// node has been rewritten.
    pub fn apply_to_outputs(&self, g: &mut Graph) {
        if !self.any {
            return;
        }
        let old: Vec<ValueId> = g.outputs().to_vec();
        let was_output: HashSet<ValueId> = old.iter().copied().collect();
        let mut renamed = HashSet::new();
        let mut new = Vec::with_capacity(old.len());
        for &from in &old {
            let to = self.resolve(from);
            if to != from && g.producer(to).is_some() && !was_output.contains(&to) && renamed.insert(to) {
                let name = g.value(from).name.clone();
                let fresh = g.fresh_name();
                g.rename_value(from, &fresh);
                g.rename_value(to, &name);
            }
            new.push(to);
        }
        g.set_outputs(new);
    }

    /// Rewrites every node's operands and the outputs.
    pub fn apply_to_graph(&self, g: &mut Graph) {
        for i in 0..g.num_nodes() {
            self.apply_to_node(g, NodeId(i as u32));
        }
        self.apply_to_outputs(g);
    }
}
