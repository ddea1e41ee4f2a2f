//! Shape and data-movement ops: `Constant`, `Shape`, `Size`, `Reshape`, `Flatten`,
//! `Unsqueeze`, `Squeeze`, `Transpose`, `Concat`, `Split`, `Slice`, `Gather`, `Expand`,
//! `ConstantOfShape`, `Range`, `Tile`, `Pad`, `Trilu`, `DepthToSpace`, `SpaceToDepth`,
//! `ScatterElements`, `OneHot`, `EyeLike`.
//!
//! Shape arithmetic on static shapes folds to constants. On symbolic shapes, `Shape`, `Gather`,
//! `Unsqueeze`, `Squeeze`, `Concat`, `Slice` and `Cast` produce import-time shape values
//! ([`Slot::Shape`]) that `Reshape`, `Expand` and `ConstantOfShape` accept as targets.
//!
//! One file per family: [`values`] (constants and shape values), [`reshape`] (views),
//! [`slicing`] (cut and join along axes) and [`indexing`] (index-driven movement); the helpers
//! they share are here.

mod indexing;
mod reshape;
pub(super) mod slicing;
mod values;

use super::{invalid, BuildError, BuildResult, Registry};
use crate::onnx::import::{show_sym, Importer, NodeCx, SymInt};
use tessera_ir::graph::ValueId;
use tessera_ir::ops::Op;
use tessera_ir::tensor::Tensor;
use tessera_ir::types::{Dim, TensorType};

pub(super) fn register(r: &mut Registry) {
    values::register(r);
    reshape::register(r);
    slicing::register(r);
    indexing::register(r);
}

/// The largest dimension a shape input may name.
fn tessera_ir_max_dim() -> i64 {
    crate::onnx::tensor::MAX_DIM
}

fn static_dims(ty: &TensorType, what: &str) -> BuildResult<Vec<u64>> {
    ty.static_shape().ok_or_else(|| BuildError::Unsupported(format!("{what} with symbolic dimensions ({ty})")))
}

pub(super) fn dims_of(elems: &[SymInt]) -> BuildResult<Vec<Dim>> {
    elems
        .iter()
        .map(|e| match e.as_const() {
            Some(n) if (0..=tessera_ir_max_dim()).contains(&n) => Ok(Dim::Static(n as u64)),
            Some(n) => invalid(format!("invalid dimension {n} in shape {}", show_sym(elems))),
            None => Ok(Dim::Symbolic(e.clone())),
        })
        .collect()
}

fn scalar_input(imp: &Importer, cx: &NodeCx, i: usize, what: &str) -> BuildResult<Tensor> {
    let t = imp.const_input(cx, i, what)?.ok_or_else(|| BuildError::Invalid(format!("missing input '{what}'")))?;
    if t.len() != 1 {
        return invalid(format!("input '{what}' must be a scalar"));
    }
    Ok(t)
}

/// Slice `x` along `axis` as `[start:end:step]`.
fn slice_axis(imp: &mut Importer, x: ValueId, axis: usize, start: i64, end: i64, step: i64) -> BuildResult<ValueId> {
    let rank = imp.ty(x).rank();
    let (mut s, mut e, mut st) = (vec![0; rank], vec![i64::MAX; rank], vec![1; rank]);
    (s[axis], e[axis], st[axis]) = (start, end, step);
    imp.add(Op::Slice { starts: s, ends: e, steps: st }, &[x])
}
