//! `MatMul` (NumPy semantics, including 1-D operands) and `Gemm`
//! (`alpha * op(A) @ op(B) + beta * C`).

use super::{invalid, one, BuildResult, Registry};
use crate::onnx::import::{Importer, NodeCx, Slot};
use tessera_ir::graph::ValueId;
use tessera_ir::ops::elementwise::BinaryOp;
use tessera_ir::ops::Op;
use tessera_ir::types::Dim;

pub(super) fn register(r: &mut Registry) {
    r.insert("MatMul", matmul);
    r.insert("Gemm", gemm);
}

/// `tsr.matmul` needs rank >= 2 on both sides: a 1-D left operand is a row vector and a 1-D
/// right operand a column vector, whose unit dimension is removed again from the result.
pub(crate) fn matmul_numpy(imp: &mut Importer, a: ValueId, b: ValueId) -> BuildResult<ValueId> {
    let (ta, tb) = (imp.ty(a), imp.ty(b));
    if ta.rank() == 0 || tb.rank() == 0 {
        return invalid("MatMul operands must have rank >= 1");
    }
    let a2 = if ta.rank() == 1 { imp.reshape(a, vec![Dim::Static(1), ta.dims[0].clone()])? } else { a };
    let b2 = if tb.rank() == 1 { imp.reshape(b, vec![tb.dims[0].clone(), Dim::Static(1)])? } else { b };
    let y = imp.add(Op::MatMul, &[a2, b2])?;
    if ta.rank() > 1 && tb.rank() > 1 {
        return Ok(y);
    }
    let mut dims = imp.ty(y).dims;
    let r = dims.len();
    if tb.rank() == 1 {
        dims.remove(r - 1);
    }
    if ta.rank() == 1 {
        dims.remove(r - 2);
    }
    imp.reshape(y, dims)
}

fn matmul(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let (a, b) = (imp.value(cx, 0)?, imp.value(cx, 1)?);
    one(matmul_numpy(imp, a, b)?)
}

fn gemm(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let alpha = cx.attrs.float("alpha", 1.0)?;
    let beta = cx.attrs.float("beta", 1.0)?;
    let trans_a = cx.attrs.int("transA", 0)? != 0;
    let trans_b = cx.attrs.int("transB", 0)? != 0;
    let (mut a, mut b) = (imp.value(cx, 0)?, imp.value(cx, 1)?);
    if imp.ty(a).rank() != 2 || imp.ty(b).rank() != 2 {
        return invalid(format!("Gemm needs 2-D A and B, got {} and {}", imp.ty(a), imp.ty(b)));
    }
    if trans_a {
        a = imp.add(Op::Transpose { perm: vec![1, 0] }, &[a])?;
    }
    if trans_b {
        b = imp.add(Op::Transpose { perm: vec![1, 0] }, &[b])?;
    }
    let mut y = imp.add(Op::MatMul, &[a, b])?;
    if alpha != 1.0 {
        y = imp.binary_scalar(BinaryOp::Mul, y, alpha)?;
    }
    if let Some(mut c) = imp.opt_value(cx, 2)? {
        if beta != 1.0 {
            c = imp.binary_scalar(BinaryOp::Mul, c, beta)?;
        }
        // C broadcasts unidirectionally to [M, N].
        let dims = imp.ty(y).dims;
        let c = imp.broadcast(c, &dims)?;
        y = imp.add(Op::Binary(BinaryOp::Add), &[y, c])?;
    }
    one(y)
}
