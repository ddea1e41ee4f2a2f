//! The `cse` pass: common subexpression elimination.
//!
//! Two nodes compute the same values when they have the same op (mnemonic and attributes;
//! `Op` equality) on the same operands, because every tsr op but communication is pure and
//! deterministic (communication ops are never merged). One walk
//! in program order keeps the first node of each kind, makes the uses of a later duplicate uses
//! of the first, and removes the duplicates. Operands are rewritten as the walk reaches each
//! node, so chains of duplicates (`a1 = f(x); a2 = f(x); b1 = g(a1); b2 = g(a2)`) merge in one
//! walk. Graph outputs keep their names as described in [`crate::rewrite`].

use crate::pass::{PassError, PassOptions, PassStats};
use crate::rewrite::ValueRemap;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use tessera_ir::graph::{Graph, NodeId, ValueId};
use tessera_ir::ops::Op;
use tessera_ir::tensor::{Buffer, Tensor};

/// What nodes are bucketed by; candidates in a bucket are then compared with [`same_op`].
/// Attributes are not hashed (`Op` holds floats and is not `Hash`), except a constant's value,
/// which would otherwise put every constant of a graph in one bucket.
#[derive(PartialEq, Eq, Hash)]
struct Key {
    mnemonic: &'static str,
    inputs: Vec<ValueId>,
    constant_hash: u64,
}

/// Merges duplicate nodes; `rewrites` is the number of nodes removed.
pub fn run(g: &mut Graph, _options: &PassOptions) -> Result<PassStats, PassError> {
    let mut remap = ValueRemap::new(g);
    let mut first_of: HashMap<Key, Vec<NodeId>> = HashMap::new();
    // Whether each node (by index) duplicates an earlier one.
    let mut merged = Vec::with_capacity(g.num_nodes());
    for i in 0..g.num_nodes() {
        let id = NodeId(i as u32);
        remap.apply_to_node(g, id);
        let node = g.node(id);
        // Two equal sends, receives or collectives are two messages, not one value.
        if node.op.is_communication() {
            merged.push(false);
            continue;
        }
        let key =
            Key { mnemonic: node.op.mnemonic(), inputs: node.inputs.clone(), constant_hash: constant_hash(&node.op) };
        let candidates = first_of.entry(key).or_default();
        let earlier = candidates.iter().copied().find(|&m| {
            let other = g.node(m);
            same_op(&other.op, &node.op)
                && other.outputs.len() == node.outputs.len()
                && other.outputs.iter().zip(&node.outputs).all(|(a, b)| g.value(*a).ty == g.value(*b).ty)
        });
        match earlier {
            Some(m) => {
                for (&dup, &kept) in node.outputs.iter().zip(&g.node(m).outputs) {
                    remap.replace(dup, kept);
                }
            }
            None => candidates.push(id),
        }
        merged.push(earlier.is_some());
    }
    remap.apply_to_outputs(g);
    let mut stats = PassStats::default();
    stats.count("merged", g.retain_nodes(|id, _| !merged[id.index()]));
    Ok(stats)
}

/// Op equality, except that constants compare bit for bit: `0.0 == -0.0` as floats, but
/// `x * 0.0` and `x * -0.0` differ in sign, so those constants must not merge (and NaN
/// constants with equal bits may).
pub fn same_op(a: &Op, b: &Op) -> bool {
    match (a, b) {
        (Op::Constant(x), Op::Constant(y)) => same_bits(x, y),
        _ => a == b,
    }
}

/// Whether two tensors have the same dtype, shape and element bits.
pub fn same_bits(a: &Tensor, b: &Tensor) -> bool {
    a.dtype == b.dtype
        && a.shape == b.shape
        && match (&a.data, &b.data) {
            (Buffer::Float(x), Buffer::Float(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits())
            }
            // Shared elements are equal without a look: weights reach here shared.
            (Buffer::F32(x), Buffer::F32(y)) => {
                std::sync::Arc::ptr_eq(x, y)
                    || (x.len() == y.len() && x.iter().zip(y.iter()).all(|(p, q)| p.to_bits() == q.to_bits()))
            }
            (Buffer::F16(x), Buffer::F16(y)) => {
                std::sync::Arc::ptr_eq(x, y)
                    || (x.len() == y.len() && x.iter().zip(y.iter()).all(|(p, q)| p.to_bits() == q.to_bits()))
            }
            (Buffer::BF16(x), Buffer::BF16(y)) => {
                std::sync::Arc::ptr_eq(x, y)
                    || (x.len() == y.len() && x.iter().zip(y.iter()).all(|(p, q)| p.to_bits() == q.to_bits()))
            }
            (Buffer::Int(x), Buffer::Int(y)) => x == y,
            _ => false,
        }
}

/// Elements of a constant that [`constant_hash`] reads: all of a small constant, an evenly
/// strided sample of a large one.
const HASHED_ELEMENTS: usize = 4096;

/// A bucket key for a constant: its dtype, shape and at most [`HASHED_ELEMENTS`] of its elements
/// (bits), evenly strided. Bucketing only has to tell constants apart; equality is decided by
/// [`same_bits`] over every element. Hashing every element of a model's weights (SipHash over
/// 163 M floats for GPT-2 small) was a large part of compiling it (BENCHMARKS.md, "GPT-2 small:
/// import and compile"); two weights that agree on the sample but differ elsewhere only meet in
/// one bucket, where the comparison stops at their first difference.
fn constant_hash(op: &Op) -> u64 {
    let Op::Constant(t) = op else { return 0 };
    let mut h = DefaultHasher::new();
    t.dtype.hash(&mut h);
    t.shape.hash(&mut h);
    let len = t.len();
    let stride = len.div_ceil(HASHED_ELEMENTS).max(1);
    match &t.data {
        Buffer::Float(v) => v.iter().step_by(stride).for_each(|x| x.to_bits().hash(&mut h)),
        Buffer::F32(v) => v.iter().step_by(stride).for_each(|x| x.to_bits().hash(&mut h)),
        Buffer::F16(v) => v.iter().step_by(stride).for_each(|x| x.to_bits().hash(&mut h)),
        Buffer::BF16(v) => v.iter().step_by(stride).for_each(|x| x.to_bits().hash(&mut h)),
        Buffer::Int(v) => v.iter().step_by(stride).for_each(|x| x.hash(&mut h)),
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two receives with the same attributes are two messages: merging them would leave the
    /// sender's second message unread and use the first twice.
    #[test]
    fn equal_communication_ops_are_never_merged() {
        let text = r#"func.func @f(%x: tensor<4xf32>) -> (tensor<4xf32>) {
  %a = "tsr.recv"() {mesh_axis = "pp", peer = 0 : i64, tag = 3 : i64} : () -> tensor<4xf32>
  %b = "tsr.recv"() {mesh_axis = "pp", peer = 0 : i64, tag = 3 : i64} : () -> tensor<4xf32>
  %ea = "tsr.exp"(%x) : (tensor<4xf32>) -> tensor<4xf32>
  %eb = "tsr.exp"(%x) : (tensor<4xf32>) -> tensor<4xf32>
  %s = "tsr.add"(%a, %b) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  %t = "tsr.add"(%s, %ea) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  %u = "tsr.add"(%t, %eb) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  return %u : tensor<4xf32>
}
"#;
        let mut g = tessera_ir::mlir::parse_verified(text).expect("parse");
        let stats = run(&mut g, &PassOptions::default()).expect("cse");
        // The second exp merges; both receives stay.
        assert_eq!(stats.counters.get("merged"), Some(&1));
        let ops: Vec<&str> = g.nodes().map(|(_, n)| n.op.mnemonic()).collect();
        assert_eq!(ops, ["recv", "recv", "exp", "add", "add", "add"]);
    }

    /// Large constants are bucketed by a sample of their elements, but merged only when every
    /// element agrees: two weights equal on the sample and different at one unsampled element
    /// stay apart; an equal copy (its own storage, not shared) merges.
    #[test]
    fn large_constants_merge_only_when_every_element_agrees() {
        let n = HASHED_ELEMENTS * 8;
        let base: Vec<f32> = (0..n).map(|i| i as f32 * 0.25).collect();
        let mut differs = base.clone();
        // Index 1 is off the sample's stride (8), so only the full comparison sees it.
        differs[1] = -1.0;
        let constants = [base.clone(), differs, base];
        let mut g = Graph::new("weights");
        let mut outputs = Vec::new();
        for values in constants {
            let t = Tensor::from_f32(vec![n], values);
            outputs.extend(g.add_node(Op::Constant(t), &[]).expect("constant"));
        }
        g.set_outputs(outputs);
        assert_eq!(constant_hash(&g.node(NodeId(0)).op), constant_hash(&g.node(NodeId(1)).op));
        let stats = run(&mut g, &PassOptions::default()).expect("cse");
        assert_eq!(stats.counters.get("merged"), Some(&1));
        let kept: Vec<f32> = g
            .nodes()
            .map(|(_, node)| match &node.op {
                Op::Constant(t) => t.to_f64_vec()[1] as f32,
                other => panic!("unexpected {}", other.mnemonic()),
            })
            .collect();
        assert_eq!(kept, [0.25, -1.0]);
        assert_eq!(g.outputs()[0], g.outputs()[2]);
    }
}
