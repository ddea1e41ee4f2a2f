//! Losses: `NegativeLogLikelihoodLoss` and `SoftmaxCrossEntropyLoss`, decomposed into a one-hot
//! selection of the target class, optional class weights and the reduction.

use super::{invalid, BuildError, BuildResult, Registry};
use crate::onnx::import::{Importer, NodeCx, Slot};
use tessera_ir::dtype::DType;
use tessera_ir::graph::ValueId;
use tessera_ir::ops::elementwise::{BinaryOp, CompareOp, UnaryOp};
use tessera_ir::ops::reduce::ReduceKind;
use tessera_ir::ops::Op;
use tessera_ir::types::Dim;

pub(super) fn register(r: &mut Registry) {
    r.insert("NegativeLogLikelihoodLoss", nll_loss);
    r.insert("SoftmaxCrossEntropyLoss", softmax_cross_entropy);
}

/// The loss attributes shared by both ops.
struct LossAttrs {
    ignore_index: Option<i64>,
    reduction: String,
}

fn loss_attrs(cx: &NodeCx) -> BuildResult<LossAttrs> {
    let reduction = cx.attrs.string("reduction", "mean")?;
    if !matches!(reduction.as_str(), "none" | "sum" | "mean") {
        return invalid(format!("unknown reduction '{reduction}'"));
    }
    Ok(LossAttrs { ignore_index: cx.attrs.opt_int("ignore_index")?, reduction })
}

/// `-x[n, t[n, d...], d...] * w[t]` for log-probabilities `x: [N, C, d...]` and targets
/// `t: [N, d...]`, reduced as asked; ignored targets weigh 0 (and `mean` divides by the weight
/// of the rest).
fn nll(
    imp: &mut Importer,
    x: ValueId,
    target: ValueId,
    weight: Option<ValueId>,
    a: &LossAttrs,
) -> BuildResult<ValueId> {
    let xty = imp.ty(x);
    let tty = imp.ty(target);
    if xty.rank() < 2 || tty.rank() + 1 != xty.rank() || !tty.dtype.is_int() {
        return invalid(format!("input {xty} and target {tty} must be [N, C, d...] and integer [N, d...]"));
    }
    let c = xty.dims[1]
        .as_static()
        .ok_or_else(|| BuildError::Unsupported(format!("a symbolic class dimension in {xty}")))?;
    let t = imp.cast(target, DType::I64)?;
    let valid = match a.ignore_index {
        Some(ii) => {
            let ignore = imp.scalar(DType::I64, ii as f64);
            Some(imp.compare(CompareOp::Ne, t, ignore)?)
        }
        None => None,
    };
    // Ignored targets may lie outside [0, C); 0 stands in for them until they are masked out.
    let t = match valid {
        Some(v) => {
            let zero = imp.scalar(DType::I64, 0.0);
            imp.select(v, t, zero)?
        }
        None => t,
    };
    let mut dims = tty.dims.clone();
    dims.insert(1, Dim::Static(1));
    let t1 = imp.reshape(t, dims)?;
    let iota = super::iota(imp, xty.rank(), 1, c)?;
    let hit = imp.compare(CompareOp::Eq, t1, iota)?;
    let zero = imp.scalar(xty.dtype, 0.0);
    let selected = imp.select(hit, x, zero)?;
    let picked = imp.add(Op::Reduce { kind: ReduceKind::Sum, axes: vec![1], keepdims: false }, &[selected])?;
    let mut loss = imp.unary(UnaryOp::Neg, picked)?;
    let gathered = match weight {
        Some(w) => {
            let w = imp.cast(w, xty.dtype)?;
            let gw = imp.add(Op::Gather { axis: 0 }, &[w, t])?;
            Some(match valid {
                Some(v) => imp.select(v, gw, zero)?,
                None => gw,
            })
        }
        None => match valid {
            Some(v) => Some(imp.cast(v, xty.dtype)?),
            None => None,
        },
    };
    if let Some(gw) = gathered {
        loss = imp.binary(BinaryOp::Mul, loss, gw)?;
    }
    let all: Vec<i64> = (0..tty.rank() as i64).collect();
    let sum = |imp: &mut Importer, v: ValueId| {
        imp.add(Op::Reduce { kind: ReduceKind::Sum, axes: all.clone(), keepdims: false }, &[v])
    };
    match (a.reduction.as_str(), gathered) {
        ("none", _) => Ok(loss),
        ("sum", _) => sum(imp, loss),
        (_, Some(gw)) => {
            let total = sum(imp, loss)?;
            let weight_sum = sum(imp, gw)?;
            imp.binary(BinaryOp::Div, total, weight_sum)
        }
        (_, None) => imp.add(Op::Reduce { kind: ReduceKind::Mean, axes: all.clone(), keepdims: false }, &[loss]),
    }
}

fn nll_loss(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let a = loss_attrs(cx)?;
    let (x, t) = (imp.value(cx, 0)?, imp.value(cx, 1)?);
    let w = imp.opt_value(cx, 2)?;
    Ok(vec![Slot::Value(nll(imp, x, t, w, &a)?)])
}

/// `nll(log_softmax(scores, axis = 1), labels)`; the second output is the log-probabilities.
fn softmax_cross_entropy(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let a = loss_attrs(cx)?;
    let (x, t) = (imp.value(cx, 0)?, imp.value(cx, 1)?);
    let w = imp.opt_value(cx, 2)?;
    if !imp.ty(x).dtype.is_float() || imp.ty(x).rank() < 2 {
        return invalid(format!("scores must be a float [N, C, ...] tensor, got {}", imp.ty(x)));
    }
    let m = imp.add(Op::Reduce { kind: ReduceKind::Max, axes: vec![1], keepdims: true }, &[x])?;
    let s = imp.binary(BinaryOp::Sub, x, m)?;
    let e = imp.unary(UnaryOp::Exp, s)?;
    let sum = imp.add(Op::Reduce { kind: ReduceKind::Sum, axes: vec![1], keepdims: true }, &[e])?;
    let lse = imp.unary(UnaryOp::Log, sum)?;
    let log_prob = imp.binary(BinaryOp::Sub, s, lse)?;
    let loss = nll(imp, log_prob, t, w, &a)?;
    Ok(vec![Slot::Value(loss), Slot::Value(log_prob)])
}
