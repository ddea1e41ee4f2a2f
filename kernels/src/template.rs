//! Which loop template computes each op of a kernel graph.
//!
//! A *pointwise* op computes the element at one index from elements of its operands at indices
//! that are a function of that index alone (elementwise math, casts, `where`, and the layout ops
//! `broadcast`, `reshape`, `transpose`, `slice`, `concat`, `split`, `gather`, `rope`, and `iota`, which reads no operand element). A consumer
//! can therefore compute it inline, inside its own loops, without a buffer in between. The other
//! templates own a loop nest with an inner reduction and always write a buffer.

use tessera_ir::ops::Op;

/// The loop template of an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Template {
    /// One element from operand elements at index-mapped positions; fusable into consumers.
    Pointwise,
    /// `reduce_*` over a set of axes: one accumulator loop nest per output element.
    Reduce,
    /// First index of the maximum along one axis.
    ArgMax,
    /// Three passes per row: max, sum of exponentials (stored), scale.
    Softmax,
    /// Mean, variance, then normalize with scale and bias, over the trailing axes.
    LayerNorm,
    /// Mean square, then normalize with scale, over the trailing axes.
    RmsNorm,
    /// Batched matrix product with broadcast batch dimensions; an inner `k` loop per element.
    MatMul,
    /// Direct NCHW convolution: an inner loop over input channels of the group and the window.
    Conv2d,
    /// Max or average pooling: an inner loop over the window, padding excluded.
    Pool2d,
}

impl Template {
    /// True for templates whose consumers may recompute them inline.
    pub fn is_pointwise(self) -> bool {
        self == Template::Pointwise
    }
}

/// The pattern of the ops no kernel template covers because they run on the interpreter or the
/// runtime (training ops until codegen covers them; communication and control flow): one list
/// for [`template`] and codegen's pointwise emitter, which must both refuse them.
#[macro_export]
macro_rules! interpreter_only_ops {
    () => {
        ::tessera_ir::ops::Op::CrossEntropy
            | ::tessera_ir::ops::Op::Sgd(_)
            | ::tessera_ir::ops::Op::AdamW(_)
            | ::tessera_ir::ops::Op::Recurrent { .. }
            | ::tessera_ir::ops::Op::Collective(_)
            | ::tessera_ir::ops::Op::If(_)
            | ::tessera_ir::ops::Op::Loop(_)
            | ::tessera_ir::ops::Op::Trap(_)
            // Winograd transforms are library calls of the CPU runtime (`executor::winograd`).
            | ::tessera_ir::ops::Op::WinogradInput { .. }
            | ::tessera_ir::ops::Op::WinogradWeight
            | ::tessera_ir::ops::Op::WinogradOutput { .. }
    };
}

/// The template of `op`, or `None` when the code generator has none (`scatter`, whose
/// data-dependent writes need atomics on the GPU; the bitwise ops): the fusion pass keeps such ops out of
/// generated kernels.
pub fn template(op: &Op) -> Option<Template> {
    // Every variant is named (directly or through `tessera_ir::data_movement_ops!` and
    // `interpreter_only_ops!`), with no `_` arm, so that a new op must be given a template or be
    // refused here.
    Some(match op {
        // Bitwise ops and shifts (integer-only; a shift by the width or more is 0 in the
        // reference but poison in MLIR) run on the interpreter.
        Op::Unary(u) if u.is_bitwise() => return None,
        Op::Binary(b) if b.is_bitwise() => return None,
        tessera_ir::data_movement_ops!()
        | Op::Unary(_)
        | Op::Binary(_)
        | Op::Compare(_)
        | Op::Where
        | Op::Cast { .. }
        | Op::Iota { .. }
        | Op::Rope { .. } => Template::Pointwise,
        Op::Reduce { .. } => Template::Reduce,
        Op::ArgMax { .. } => Template::ArgMax,
        Op::Softmax { .. } => Template::Softmax,
        Op::LayerNorm { .. } => Template::LayerNorm,
        Op::RmsNorm { .. } => Template::RmsNorm,
        Op::MatMul => Template::MatMul,
        Op::Conv2d { .. } => Template::Conv2d,
        Op::Pool2d { .. } => Template::Pool2d,
        Op::Scatter { .. } => return None,
        interpreter_only_ops!() => return None,
    })
}

/// True for ops that only move or select data (no arithmetic on the values): recomputing them
/// per use costs index arithmetic and a load, never a transcendental.
pub fn is_data_movement(op: &Op) -> bool {
    matches!(op, tessera_ir::data_movement_ops!())
}

#[cfg(test)]
mod tests {
    use super::{template, Template};
    use tessera_ir::ops::conv::{PoolKind, Window};
    use tessera_ir::ops::elementwise::UnaryOp;
    use tessera_ir::ops::Op;

    #[test]
    fn templates_of_representative_ops() {
        assert_eq!(template(&Op::Unary(UnaryOp::Gelu)), Some(Template::Pointwise));
        assert_eq!(template(&Op::Softmax { axis: -1 }), Some(Template::Softmax));
        assert_eq!(template(&Op::MatMul), Some(Template::MatMul));
        let window = Window { strides: [1, 1], pads: [0; 4], dilations: [1, 1] };
        assert_eq!(template(&Op::Pool2d { kind: PoolKind::Max, kernel: [2, 2], window }), Some(Template::Pool2d));
        let scatter = Op::Scatter { axis: 0, reduction: tessera_ir::ops::indexing::ScatterReduction::Add };
        assert_eq!(template(&scatter), None);
    }
}
