//! The `canonicalize` pass: local simplifications applied to a fixed point.
//!
//! Each rule is a small named function in a topic file (`canonicalize/layout.rs`,
//! `canonicalize/arithmetic.rs`, `canonicalize/fold.rs`) with a one-line identity comment. A rule
//! looks at one node (and the producers of its operands) and proposes a [`Rewrite`]:
//! - `Replace`: every use of the node's results becomes a use of existing values, which must
//!   have exactly the results' types and be defined before the node;
//! - `Update`: the node keeps its results (and their names) but computes them with another op
//!   from operands defined before it. Rewriting in place is what keeps program order valid
//!   without ever inserting a node, and the driver checks the new op's shape rule gives the
//!   same result types.
//!
//! The driver sweeps the graph in program order, so when a rule looks at an operand's producer
//! that producer is already simplified; it repeats until a sweep changes nothing (or
//! `max-iterations` sweeps). Like MLIR's greedy driver it also erases nodes that are (or
//! become) dead. Graph outputs keep their names as described in [`crate::rewrite`].

mod arithmetic;
mod fold;
mod layout;

use crate::dce;
use crate::pass::{OptionSpec, OptionValue, PassError, PassOptions, PassStats};
use crate::rewrite::ValueRemap;
use tessera_ir::graph::{Graph, NodeId, ValueId};
use tessera_ir::ops::Op;
use tessera_ir::tensor::{Buffer, Tensor};
use tessera_ir::types::TensorType;

const NAME: &str = "canonicalize";

pub const MAX_ITERATIONS: OptionSpec = OptionSpec {
    name: "max-iterations",
    default: OptionValue::UInt(10),
    help: "most sweeps over the graph before stopping short of a fixed point",
};

pub const FOLD_LIMIT: OptionSpec = OptionSpec {
    name: "fold-limit",
    default: OptionValue::UInt(4096),
    help: "largest result, in elements, that constant folding creates (0 turns folding off)",
};

/// The options of `canonicalize`, by name.
pub const OPTIONS: &[OptionSpec] = &[FOLD_LIMIT, MAX_ITERATIONS];

/// Typed options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub max_iterations: u64,
    pub fold_limit: u64,
}

impl Config {
    pub fn from_options(options: &PassOptions) -> Result<Config, PassError> {
        Ok(Config {
            max_iterations: options.uint(NAME, &MAX_ITERATIONS)?,
            fold_limit: options.uint(NAME, &FOLD_LIMIT)?,
        })
    }
}

impl Default for Config {
    fn default() -> Config {
        Config { max_iterations: 10, fold_limit: 4096 }
    }
}

/// What a rule proposes for a node.
#[derive(Debug, Clone, PartialEq)]
pub enum Rewrite {
    /// Result `i` is replaced by value `i`.
    Replace(Vec<ValueId>),
    /// The node computes its results as `op(inputs)` instead.
    Update { op: Op, inputs: Vec<ValueId> },
}

/// A named local simplification.
pub struct Rule {
    /// Kebab-case; the counter it increments in the pass's stats.
    pub name: &'static str,
    pub apply: fn(&Graph, NodeId, &Config) -> Option<Rewrite>,
}

/// Every rule, in the order they are tried on a node. Folding comes last, so structural rules
/// (which cost nothing) win when both apply.
pub static RULES: &[Rule] = &[
    Rule { name: "transpose-identity", apply: layout::transpose_identity },
    Rule { name: "transpose-of-transpose", apply: layout::transpose_of_transpose },
    Rule { name: "reshape-identity", apply: layout::reshape_identity },
    Rule { name: "reshape-of-reshape", apply: layout::reshape_of_reshape },
    Rule { name: "broadcast-identity", apply: layout::broadcast_identity },
    Rule { name: "broadcast-of-broadcast", apply: layout::broadcast_of_broadcast },
    Rule { name: "slice-identity", apply: layout::slice_identity },
    Rule { name: "slice-of-slice", apply: layout::slice_of_slice },
    Rule { name: "concat-single", apply: layout::concat_single },
    Rule { name: "split-single", apply: layout::split_single },
    Rule { name: "cast-identity", apply: arithmetic::cast_identity },
    Rule { name: "neg-of-neg", apply: arithmetic::neg_of_neg },
    Rule { name: "add-zero", apply: arithmetic::add_zero },
    Rule { name: "sub-zero", apply: arithmetic::sub_zero },
    Rule { name: "mul-one", apply: arithmetic::mul_one },
    Rule { name: "div-one", apply: arithmetic::div_one },
    Rule { name: "where-same-branches", apply: arithmetic::where_same_branches },
    Rule { name: "fold-constant", apply: fold::fold_constant },
];

/// The pass entry point.
pub fn run(g: &mut Graph, options: &PassOptions) -> Result<PassStats, PassError> {
    canonicalize(g, &Config::from_options(options)?)
}

/// Simplifies `g` to a fixed point. Counters: one per rule that fired, `dead-nodes` erased,
/// and `sweeps` (not a rewrite) taken.
pub fn canonicalize(g: &mut Graph, config: &Config) -> Result<PassStats, PassError> {
    let mut stats = PassStats::default();
    let mut sweeps = 0;
    // Dead nodes are erased before each sweep: they would otherwise match again every sweep.
    stats.count("dead-nodes", dce::remove_dead_nodes(g));
    while sweeps < config.max_iterations {
        sweeps += 1;
        if sweep(g, config, &mut stats)? == 0 {
            break;
        }
        stats.count("dead-nodes", dce::remove_dead_nodes(g));
    }
    stats.counters.insert("sweeps", sweeps as usize);
    Ok(stats)
}

/// How often rules may update one node in one sweep before the driver moves on (each update
/// simplifies, so a few is plenty; the bound only guards against rules that undo each other).
const UPDATES_PER_NODE: usize = 8;

/// One walk in program order; returns the number of rewrites applied.
fn sweep(g: &mut Graph, config: &Config, stats: &mut PassStats) -> Result<usize, PassError> {
    let mut remap = ValueRemap::new(g);
    let mut applied = 0;
    for i in 0..g.num_nodes() {
        let id = NodeId(i as u32);
        remap.apply_to_node(g, id);
        'node: for _ in 0..UPDATES_PER_NODE {
            for rule in RULES {
                let Some(rewrite) = (rule.apply)(g, id, config) else {
                    continue;
                };
                stats.count(rule.name, 1);
                applied += 1;
                match rewrite {
                    Rewrite::Replace(values) => {
                        check_replacement(g, id, &values, rule.name)?;
                        for (&result, &value) in g.node(id).outputs.iter().zip(&values) {
                            remap.replace(result, value);
                        }
                        break 'node;
                    }
                    Rewrite::Update { op, inputs } => {
                        check_update(g, id, &op, &inputs, rule.name)?;
                        let node = g.node_mut(id);
                        node.op = op;
                        node.inputs = inputs;
                        continue 'node;
                    }
                }
            }
            break;
        }
    }
    remap.apply_to_outputs(g);
    Ok(applied)
}

fn rule_bug(g: &Graph, id: NodeId, rule: &str, message: String) -> PassError {
    let subject = tessera_ir::verify::node_subject(g, id);
    PassError::Failed { pass: NAME, message: format!("rule '{rule}' on {subject}: {message}") }
}

/// A replacement must match the results one for one, in type, and be defined before the node.
fn check_replacement(g: &Graph, id: NodeId, values: &[ValueId], rule: &str) -> Result<(), PassError> {
    let outputs = &g.node(id).outputs;
    if values.len() != outputs.len() {
        return Err(rule_bug(g, id, rule, format!("{} replacements for {} results", values.len(), outputs.len())));
    }
    for (&result, &value) in outputs.iter().zip(values) {
        let (want, got) = (&g.value(result).ty, &g.value(value).ty);
        if want != got {
            return Err(rule_bug(g, id, rule, format!("replacement has type {got}, the result {want}")));
        }
        if g.producer(value).is_some_and(|p| p >= id) {
            return Err(rule_bug(g, id, rule, format!("replacement {value} is not defined before the node")));
        }
    }
    Ok(())
}

/// An update must keep the result types and use operands defined before the node.
fn check_update(g: &Graph, id: NodeId, op: &Op, inputs: &[ValueId], rule: &str) -> Result<(), PassError> {
    if let Some(&late) = inputs.iter().find(|&&v| g.producer(v).is_some_and(|p| p >= id)) {
        return Err(rule_bug(g, id, rule, format!("operand {late} is not defined before the node")));
    }
    let operand_types: Vec<&TensorType> = inputs.iter().map(|&v| &g.value(v).ty).collect();
    let inferred = op.infer(&operand_types).map_err(|e| rule_bug(g, id, rule, e))?;
    let declared: Vec<&TensorType> = g.node(id).outputs.iter().map(|&v| &g.value(v).ty).collect();
    if inferred.iter().collect::<Vec<_>>() != declared {
        return Err(rule_bug(g, id, rule, "the new op changes the result types".to_string()));
    }
    Ok(())
}

/// The node producing `v` and its op, when `v` is a node result.
pub(crate) fn producer(g: &Graph, v: ValueId) -> Option<(NodeId, &Op)> {
    let id = g.producer(v)?;
    Some((id, &g.node(id).op))
}

/// The constant `v` holds when it is a constant, possibly seen through broadcasts and reshapes
/// (which keep a splat a splat); `None` otherwise.
pub(crate) fn constant_source(g: &Graph, mut v: ValueId) -> Option<&Tensor> {
    loop {
        let (id, op) = producer(g, v)?;
        match op {
            Op::Constant(t) => return Some(t),
            Op::Broadcast { .. } | Op::Reshape { .. } => v = *g.node(id).inputs.first()?,
            _ => return None,
        }
    }
}

/// A scalar compared bit for bit, so `-0.0` and `0.0` stay apart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Splat {
    Float(f64),
    Int(i64),
}

/// Whether every element of `v` is known to equal `value`: `v` is a constant splat, possibly
/// broadcast or reshaped. A float splat matches a `Float` of the same bits, an integer one an
/// `Int`.
pub(crate) fn is_splat(g: &Graph, v: ValueId, value: Splat) -> bool {
    let Some(t) = constant_source(g, v) else {
        return false;
    };
    match (&t.data, value) {
        (Buffer::Float(xs), Splat::Float(s)) => xs.iter().all(|x| x.to_bits() == s.to_bits()),
        (Buffer::F32(xs), Splat::Float(s)) => xs.iter().all(|&x| f64::from(x).to_bits() == s.to_bits()),
        (Buffer::F16(xs), Splat::Float(s)) => xs.iter().all(|&x| f64::from(x).to_bits() == s.to_bits()),
        (Buffer::BF16(xs), Splat::Float(s)) => xs.iter().all(|&x| f64::from(x).to_bits() == s.to_bits()),
        (Buffer::Int(xs), Splat::Int(s)) => xs.iter().all(|&x| x == s),
        _ => false,
    }
}
