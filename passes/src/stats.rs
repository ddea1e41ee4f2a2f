//! Graph statistics for `tessera info`: per-op FLOPs and bytes, parameter and input sizes, and
//! an estimate of peak live memory, with symbolic dimensions bound to sizes.
//!
//! FLOPs follow [`Op::flops`], which states the conventions beside each op's shape rule
//! (one multiply-add is two FLOPs; data movement is free).
//!
//! Bytes of an op are what an unfused kernel moves: each operand read once, each result written
//! once. `reshape` is a view and moves nothing; a `constant` is part of the program image.
//!
//! Counts saturate instead of overflowing (FLOPs are `u128`, bytes and elements `u64`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use tessera_ir::graph::{Graph, InputRole, ValueId};
use tessera_ir::ops::Op;
use tessera_ir::types::{Dim, TensorType};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatsError {
    /// Symbolic dimensions without a size; sorted, each once.
    #[error("unbound symbolic dimension(s): {}; give each a size, e.g. {}=8", .names.join(", "), .names[0])]
    UnboundSymbols { names: Vec<String> },
    /// The graph is not well formed (statistics expect verified graphs).
    #[error("{subject}: {message}")]
    Malformed { subject: String, message: String },
}

/// FLOPs and bytes of one op (or a sum of them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpCost {
    pub flops: u128,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

impl OpCost {
    fn add(&mut self, other: &OpCost) {
        self.flops = self.flops.saturating_add(other.flops);
        self.bytes_read = self.bytes_read.saturating_add(other.bytes_read);
        self.bytes_written = self.bytes_written.saturating_add(other.bytes_written);
    }
}

/// How many tensors of a kind, and their total size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TensorGroup {
    pub count: usize,
    pub elements: u64,
    pub bytes: u64,
}

impl TensorGroup {
    fn add(&mut self, t: &StaticType) {
        self.count += 1;
        self.elements = self.elements.saturating_add(t.elements());
        self.bytes = self.bytes.saturating_add(t.bytes());
    }
}

/// A summary of a graph with its symbolic dimensions bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphStats {
    pub name: String,
    pub num_nodes: usize,
    /// Nodes per op mnemonic.
    pub op_counts: BTreeMap<String, usize>,
    /// Cost per op mnemonic, summed over its nodes.
    pub op_costs: BTreeMap<String, OpCost>,
    /// Graph inputs marked as parameters (weights).
    pub parameters: TensorGroup,
    /// Graph inputs fed per step.
    pub activation_inputs: TensorGroup,
    /// `constant` nodes.
    pub constants: TensorGroup,
    pub outputs: TensorGroup,
    /// All ops together.
    pub total: OpCost,
    /// Sum of the sizes of all node results.
    pub result_bytes: u64,
    /// Estimate of the most memory live at once when nodes run in program order: parameters and
    /// constants stay resident, graph outputs live to the end, every other value (activation
    /// inputs included) is freed after its last use, and a node's operands and results are
    /// live together while it runs.
    pub peak_live_bytes: u64,
    /// Every symbolic dimension the graph uses, with the size it was given.
    pub symbols: BTreeMap<String, u64>,
}

/// A tensor type with every dimension known.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StaticType {
    shape: Vec<u64>,
    elem_bytes: u64,
}

impl StaticType {
    fn elements(&self) -> u64 {
        self.shape.iter().fold(1u64, |acc, &d| acc.saturating_mul(d))
    }

    fn bytes(&self) -> u64 {
        self.elements().saturating_mul(self.elem_bytes)
    }
}

/// Binds `ty`'s symbols; unbound names are added to `unbound`.
fn bind(ty: &TensorType, bindings: &HashMap<String, u64>, unbound: &mut BTreeSet<String>) -> StaticType {
    let shape = ty
        .dims
        .iter()
        .map(|d| match d {
            Dim::Static(n) => *n,
            Dim::Symbolic(_) => match d.bind(bindings) {
                Ok(Dim::Static(n)) => n,
                // An overflowing or negative size counts as unknown, like an unbound symbol.
                _ => {
                    let mut names = BTreeSet::new();
                    d.collect_symbols(&mut names);
                    unbound.extend(names.into_iter().filter(|s| !bindings.contains_key(*s)).map(str::to_string));
                    0
                }
            },
        })
        .collect();
    StaticType { shape, elem_bytes: ty.dtype.size_bytes() as u64 }
}

impl GraphStats {
    /// Statistics of `g` with its symbolic dimensions bound by `bindings` (extra bindings are
    /// ignored). Every symbol the graph uses must be bound.
    pub fn compute(g: &Graph, bindings: &HashMap<String, u64>) -> Result<GraphStats, StatsError> {
        let mut unbound = BTreeSet::new();
        let types: Vec<StaticType> = g.values().map(|(_, v)| bind(&v.ty, bindings, &mut unbound)).collect();
        if !unbound.is_empty() {
            return Err(StatsError::UnboundSymbols { names: unbound.into_iter().collect() });
        }
        let ty = |v: ValueId| &types[v.index()];
        let symbols = g
            .values()
            .flat_map(|(_, v)| v.ty.symbols().map(str::to_string).collect::<Vec<_>>())
            .map(|s| {
                let size = bindings.get(&s).copied().unwrap_or(0);
                (s, size)
            })
            .collect();
        let mut stats = GraphStats {
            name: g.name.clone(),
            num_nodes: g.num_nodes(),
            op_counts: BTreeMap::new(),
            op_costs: BTreeMap::new(),
            parameters: TensorGroup::default(),
            activation_inputs: TensorGroup::default(),
            constants: TensorGroup::default(),
            outputs: TensorGroup::default(),
            total: OpCost::default(),
            result_bytes: 0,
            peak_live_bytes: 0,
            symbols,
        };
        for &v in g.inputs() {
            match g.input_role(v) {
                Some(InputRole::Parameter) => stats.parameters.add(ty(v)),
                _ => stats.activation_inputs.add(ty(v)),
            }
        }
        for &v in g.outputs() {
            stats.outputs.add(ty(v));
        }
        for (id, node) in g.nodes() {
            let inputs: Vec<&StaticType> = node.inputs.iter().map(|&v| ty(v)).collect();
            let results: Vec<&StaticType> = node.outputs.iter().map(|&v| ty(v)).collect();
            let cost = op_cost(&node.op, &inputs, &results).map_err(|message| StatsError::Malformed {
                subject: tessera_ir::verify::node_subject(g, id),
                message,
            })?;
            let mnemonic = node.op.mnemonic().to_string();
            *stats.op_counts.entry(mnemonic.clone()).or_insert(0) += 1;
            stats.op_costs.entry(mnemonic).or_default().add(&cost);
            stats.total.add(&cost);
            for r in &results {
                stats.result_bytes = stats.result_bytes.saturating_add(r.bytes());
            }
            if node.op.is_constant() {
                for r in &results {
                    stats.constants.add(r);
                }
            }
        }
        stats.peak_live_bytes = peak_live_bytes(g, &types);
        Ok(stats)
    }
}

/// See [`GraphStats::peak_live_bytes`].
fn peak_live_bytes(g: &Graph, types: &[StaticType]) -> u64 {
    let n_nodes = g.num_nodes();
    // The index of the last node reading each value; `n_nodes` for values that never die.
    let mut last_use: Vec<Option<usize>> = vec![None; g.num_values()];
    for (id, node) in g.nodes() {
        for v in &node.inputs {
            last_use[v.index()] = Some(id.index());
        }
    }
    for v in g.outputs() {
        last_use[v.index()] = Some(n_nodes);
    }
    for &v in g.inputs() {
        if g.input_role(v) == Some(InputRole::Parameter) {
            last_use[v.index()] = Some(n_nodes);
        }
    }
    for (_, node) in g.nodes().filter(|(_, n)| n.op.is_constant()) {
        for v in &node.outputs {
            last_use[v.index()] = Some(n_nodes);
        }
    }
    let mut live: u64 = g.inputs().iter().map(|v| types[v.index()].bytes()).fold(0, u64::saturating_add);
    let mut peak = live;
    let mut freed = vec![false; g.num_values()];
    for (id, node) in g.nodes() {
        for v in &node.outputs {
            live = live.saturating_add(types[v.index()].bytes());
        }
        peak = peak.max(live);
        // Results nobody reads die at once; operands die after their last reader.
        for v in node.inputs.iter().chain(&node.outputs) {
            let dies_here = last_use[v.index()].is_none_or(|last| last == id.index());
            if dies_here && !freed[v.index()] {
                freed[v.index()] = true;
                live = live.saturating_sub(types[v.index()].bytes());
            }
        }
    }
    peak
}

/// FLOPs ([`Op::flops`]) and bytes of `op` on operands and results of the given static types.
/// Errors only on operands of an impossible rank.
fn op_cost(op: &Op, inputs: &[&StaticType], results: &[&StaticType]) -> Result<OpCost, String> {
    fn shapes<'a>(ts: &[&'a StaticType]) -> Vec<&'a [u64]> {
        ts.iter().map(|t| t.shape.as_slice()).collect()
    }
    let flops = op.flops(&shapes(inputs), &shapes(results))?;
    let moves_data = !matches!(op, Op::Constant(_) | Op::Reshape { .. });
    let sum = |ts: &[&StaticType]| ts.iter().map(|t| t.bytes()).fold(0, u64::saturating_add);
    Ok(OpCost {
        flops,
        bytes_read: if moves_data { sum(inputs) } else { 0 },
        bytes_written: if moves_data { sum(results) } else { 0 },
    })
}

/// `1,234,567`.
fn with_commas(n: u128) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `134.3 G` with SI prefixes, or the plain number below 1000.
fn si(n: u128) -> String {
    const PREFIXES: [&str; 7] = ["k", "M", "G", "T", "P", "E", "Z"];
    if n < 1000 {
        return n.to_string();
    }
    let mut x = n as f64 / 1000.0;
    let mut i = 0;
    while x >= 1000.0 && i + 1 < PREFIXES.len() {
        x /= 1000.0;
        i += 1;
    }
    format!("{x:.1} {}", PREFIXES[i])
}

/// `10.5 MiB` with binary prefixes, or `123 B`.
fn bytes(n: u64) -> String {
    const PREFIXES: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut x = n as f64 / 1024.0;
    let mut i = 0;
    while x >= 1024.0 && i + 1 < PREFIXES.len() {
        x /= 1024.0;
        i += 1;
    }
    format!("{x:.1} {}", PREFIXES[i])
}

fn group(t: &TensorGroup) -> String {
    let noun = if t.count == 1 { "tensor" } else { "tensors" };
    format!("{} {noun}, {} elements, {}", t.count, with_commas(t.elements as u128), bytes(t.bytes))
}

impl fmt::Display for GraphStats {
    /// A summary block and a per-op table, for `tessera info`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "graph @{}", self.name)?;
        if !self.symbols.is_empty() {
            let dims: Vec<String> = self.symbols.iter().map(|(k, v)| format!("{k}={v}")).collect();
            writeln!(f, "  symbolic dims      {}", dims.join(", "))?;
        }
        writeln!(f, "  nodes              {}", self.num_nodes)?;
        writeln!(f, "  parameters         {}", group(&self.parameters))?;
        writeln!(f, "  activation inputs  {}", group(&self.activation_inputs))?;
        writeln!(f, "  constants          {}", group(&self.constants))?;
        writeln!(f, "  outputs            {}", group(&self.outputs))?;
        writeln!(f, "  FLOPs              {} ({})", si(self.total.flops), with_commas(self.total.flops))?;
        writeln!(f, "  node results       {}", bytes(self.result_bytes))?;
        writeln!(f, "  peak live memory   {}", bytes(self.peak_live_bytes))?;
        writeln!(f)?;
        let mut rows: Vec<[String; 5]> =
            vec![["op".into(), "count".into(), "FLOPs".into(), "bytes read".into(), "bytes written".into()]];
        let row = |name: &str, count: usize, c: &OpCost| {
            [name.to_string(), count.to_string(), si(c.flops), bytes(c.bytes_read), bytes(c.bytes_written)]
        };
        for (name, count) in &self.op_counts {
            rows.push(row(name, *count, &self.op_costs.get(name).copied().unwrap_or_default()));
        }
        rows.push(row("total", self.num_nodes, &self.total));
        let mut widths = [0; 5];
        for r in &rows {
            for (w, cell) in widths.iter_mut().zip(r) {
                *w = (*w).max(cell.len());
            }
        }
        for r in &rows {
            write!(f, "  {:<w$}", r[0], w = widths[0])?;
            for (cell, w) in r.iter().zip(widths).skip(1) {
                write!(f, "  {cell:>w$}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formatting() {
        assert_eq!(with_commas(0), "0");
        assert_eq!(with_commas(134_283_264), "134,283,264");
        assert_eq!(with_commas(1000), "1,000");
        assert_eq!(si(999), "999");
        assert_eq!(si(134_283_264), "134.3 M");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(8 * 1024 * 1024), "8.0 MiB");
    }
}
