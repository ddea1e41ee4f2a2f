//! Control flow: ONNX `If` as `tsr.if` (its branches become regions whose block arguments are
//! the enclosing values they read); an `If` whose condition is known at import time is
//! replaced by the branch it takes.

use super::{invalid, BuildResult, Registry};
use crate::onnx::import::{Importer, NodeCx, Slot};
use tessera_ir::dtype::DType;
use tessera_ir::graph::BlockArg;
use tessera_ir::ops::control::IfRegions;
use tessera_ir::ops::Op;
use tessera_ir::tensor::Buffer;

pub(super) fn register(r: &mut Registry) {
    r.insert("If", build_if);
}

/// `If(cond)` with `then_branch` and `else_branch` (every opset from 11 on: 13 and later only
/// widen the element types, 16 adds optional types, which tessera refuses elsewhere).
fn build_if(imp: &mut Importer, cx: &NodeCx) -> BuildResult<Vec<Slot>> {
    let then_body = cx.attrs.req_graph("then_branch")?;
    let else_body = cx.attrs.req_graph("else_branch")?;
    let cond = imp.value(cx, 0)?;
    let cond_ty = imp.ty(cond);
    if cond_ty.dtype != DType::Bool {
        return invalid(format!("the condition must be a bool tensor, got {cond_ty}"));
    }
    if cond_ty.num_elements() != Some(1) {
        return invalid(format!("the condition must have exactly one element, got {cond_ty}"));
    }
    // A condition known now (shape arithmetic, a constant) picks its branch at import.
    if let Some(Buffer::Int(v)) = imp.constant_of(cond).map(|t| &t.data) {
        let (what, body) = if v.first().is_some_and(|&c| c != 0) {
            ("the then branch", then_body)
        } else {
            ("the else branch", else_body)
        };
        return check_outputs(cx, imp.import_subgraph(body, cx.opset, what)?);
    }
    let (then_region, then_captures) = imp.import_region(then_body, cx.opset, "the then branch")?;
    let (else_region, else_captures) = imp.import_region(else_body, cx.opset, "the else branch")?;
    // Both regions take the union of what either captures, in one order.
    let mut captured = then_captures.clone();
    for &v in &else_captures {
        if !captured.contains(&v) {
            captured.push(v);
        }
    }
    let args_for = |own: &[tessera_ir::graph::ValueId]| -> Vec<BlockArg> {
        captured
            .iter()
            .map(|v| match own.iter().position(|o| o == v) {
                Some(i) => BlockArg::Input(i),
                None => BlockArg::Unused { name: imp.graph.value(*v).name.clone(), ty: imp.ty(*v) },
            })
            .collect()
    };
    let then_branch = then_region.with_block_args(&args_for(&then_captures))?;
    let else_branch = else_region.with_block_args(&args_for(&else_captures))?;
    let mut operands = vec![cond];
    operands.extend(&captured);
    let outs = imp.add_n(Op::If(Box::new(IfRegions { then_branch, else_branch })), &operands)?;
    check_outputs(cx, outs.into_iter().map(Slot::Value).collect())
}

/// The branches yield what the node's outputs name, one each.
fn check_outputs(cx: &NodeCx, slots: Vec<Slot>) -> BuildResult<Vec<Slot>> {
    if slots.len() != cx.num_outputs() {
        return invalid(format!("the branch yields {} values for {} outputs", slots.len(), cx.num_outputs()));
    }
    Ok(slots)
}
