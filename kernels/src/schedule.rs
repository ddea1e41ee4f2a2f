//! The materialization plan of one kernel graph: which values get a buffer.
//!
//! Codegen walks the nodes in program order and emits one loop nest per *materialized* value;
//! every other value is computed inline, at the index its consumer asks for (loop fusion by
//! index mapping, as XLA's loop and input fusion do). A value is materialized when
//! - it is a graph input or output (its buffer is a kernel argument),
//! - its template is not pointwise (reductions, softmax, norms, matmul write a buffer),
//! - it has more than one use and is computed by arithmetic (recomputing it per use could
//!   repeat transcendentals, and chains of shared values would grow exponentially), or
//! - a matmul or convolution reads it and it is computed by arithmetic (they read each operand
//!   element many times).
//!
//! - Attention sites ([`crate::attention`]) are the exception: their probabilities and scores
//!   are never materialized. The output matmul's template runs the online softmax over key
//!   tiles and computes each score inline (a dot product of a query row and a key column).
//!
//! Data movement (`broadcast`, `transpose`, `slice`, ...) is never materialized for its own
//! sake: recomputing it is index arithmetic and a load.

use crate::attention::{find_attention, AttentionSite};
use crate::template::{is_data_movement, template, Template};
use tessera_ir::graph::{Graph, ValueDef, ValueId};
use tessera_ir::ops::Op;

/// Where a value lives while a kernel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Storage {
    /// The `index`-th kernel argument (graph inputs first, then outputs).
    Argument(usize),
    /// A temporary buffer the kernel allocates and frees.
    Temporary,
    /// Computed inline wherever it is read.
    Inline,
}

/// The storage of every value of a kernel graph, indexed by [`ValueId`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub storage: Vec<Storage>,
    /// Graph outputs whose value already lives in another argument (an input passed through,
    /// or a value listed twice): `(output position, argument holding the value)`; the kernel
    /// copies them at the end.
    pub copies: Vec<(usize, usize)>,
    /// Attention sites, computed flash-style by their output matmul's loop nest.
    pub attention: Vec<AttentionSite>,
}

impl Schedule {
    pub fn storage_of(&self, v: ValueId) -> Storage {
        self.storage[v.index()]
    }

    pub fn is_materialized(&self, v: ValueId) -> bool {
        self.storage_of(v) != Storage::Inline
    }
}

/// Plans storage for `g` (assumed verified and free of unsupported ops: an op without a
/// template is materialized, and codegen reports it).
pub fn schedule(g: &Graph) -> Schedule {
    let n_inputs = g.inputs().len();
    let uses = g.use_counts();
    let mut storage = vec![Storage::Inline; g.num_values()];
    // Operands of matmul and convolution, and through data movement (a transposed key, a
    // reshaped weight) the values those are moved from: all read many times per element.
    let mut matmul_operand = vec![false; g.num_values()];
    let nodes: Vec<_> = g.nodes().collect();
    for (_, node) in nodes.into_iter().rev() {
        let reread = matches!(node.op, Op::MatMul | Op::Conv2d { .. })
            || (is_data_movement(&node.op) && node.outputs.iter().any(|v| matmul_operand[v.index()]));
        if reread {
            for &v in &node.inputs {
                matmul_operand[v.index()] = true;
            }
        }
    }
    for (index, &v) in g.inputs().iter().enumerate() {
        storage[v.index()] = Storage::Argument(index);
    }
    let mut copies = Vec::new();
    for (position, &v) in g.outputs().iter().enumerate() {
        match storage[v.index()] {
            Storage::Argument(holder) => copies.push((position, holder)),
            _ => storage[v.index()] = Storage::Argument(n_inputs + position),
        }
    }
    for (_, node) in g.nodes() {
        let arithmetic = !is_data_movement(&node.op);
        let pointwise = template(&node.op).is_some_and(Template::is_pointwise);
        for &v in &node.outputs {
            let i = v.index();
            if storage[i] != Storage::Inline {
                continue;
            }
            let shared = uses[i] > 1 && arithmetic;
            if !pointwise || shared || (matmul_operand[i] && arithmetic) {
                storage[i] = Storage::Temporary;
            }
        }
    }
    let attention = find_attention(g);
    for site in &attention {
        for node in [site.scores, site.softmax] {
            storage[g.node(node).outputs[0].index()] = Storage::Inline;
        }
    }
    debug_assert!(g.values().all(|(id, value)| match value.def {
        ValueDef::Input { .. } => matches!(storage[id.index()], Storage::Argument(_)),
        ValueDef::Result { .. } => true,
    }));
    Schedule { storage, copies, attention }
}

#[cfg(test)]
mod tests {
    use super::{schedule, Storage};
    use tessera_ir::dtype::DType;
    use tessera_ir::graph::{Graph, InputRole};
    use tessera_ir::ops::elementwise::{BinaryOp, UnaryOp};
    use tessera_ir::ops::Op;
    use tessera_ir::types::TensorType;

    #[test]
    fn chains_fuse_and_shared_or_reduced_values_get_buffers() {
        let ty = TensorType::of_static(DType::F32, &[2, 8]);
        let mut g = Graph::new("k");
        let x = g.add_input("x", ty.clone(), InputRole::Activation);
        let y = g.add_input("y", ty, InputRole::Activation);
        let sum = g.add(Op::Binary(BinaryOp::Add), &[x, y]).expect("add");
        let e = g.add(Op::Unary(UnaryOp::Exp), &[sum]).expect("exp");
        let twice = g.add(Op::Binary(BinaryOp::Mul), &[e, e]).expect("mul");
        let soft = g.add(Op::Softmax { axis: 1 }, &[twice]).expect("softmax");
        let out = g.add(Op::Unary(UnaryOp::Neg), &[soft]).expect("neg");
        g.set_outputs(vec![out, x]);
        let s = schedule(&g);
        assert_eq!(s.storage_of(x), Storage::Argument(0));
        assert_eq!(s.storage_of(sum), Storage::Inline);
        assert_eq!(s.storage_of(e), Storage::Temporary, "two uses");
        assert_eq!(s.storage_of(twice), Storage::Inline);
        assert_eq!(s.storage_of(soft), Storage::Temporary, "softmax writes a buffer");
        assert_eq!(s.storage_of(out), Storage::Argument(2));
        assert_eq!(s.copies, vec![(1, 0)], "input x passes through to output 1");
    }
}
