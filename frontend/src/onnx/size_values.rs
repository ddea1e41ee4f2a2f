//! The entries of small integer tensors that are functions of the sizes alone: a shape value
//! made a run-time tensor ([`Importer::dim_values`]) and moved by integer layout ops (`Cast`,
//! `Reshape`, `Transpose`, `Slice`, `Concat`) with constants. TorchScript's `F.pad` export
//! does this to its pads (`Reshape` to pairs, reverse, `Transpose`, flatten), so the pads of a
//! pad by sizes (Swin's pad to whole windows) reach `Pad` as such a tensor. Only the tsr graph
//! is read: nothing here adds nodes.

use super::import::{Importer, SymInt};
use tessera_ir::graph::ValueId;
use tessera_ir::ops::layout::slice_extent;
use tessera_ir::ops::Op;

impl Importer {
    /// The entries of integer value `v` in row-major order, when they follow from constants and
    /// shape values through layout ops; `None` otherwise (data read at run time, a symbolic
    /// extent, any other op).
    pub fn size_elements(&self, v: ValueId) -> Option<Vec<SymInt>> {
        if let Some(elems) = self.size_values.get(&v) {
            return Some(elems.clone());
        }
        let ty = &self.graph.value(v).ty;
        if !ty.dtype.is_int() {
            return None;
        }
        let node = self.graph.node(self.graph.producer(v)?);
        if let Op::Constant(t) = &node.op {
            return Some(t.to_i64_vec().into_iter().map(SymInt::constant).collect());
        }
        let [x] = node.inputs.as_slice() else {
            return match &node.op {
                Op::Concat { axis } => self.concat_elements(&node.inputs, *axis),
                _ => None,
            };
        };
        let x_dims = static_dims(&self.graph.value(*x).ty.dims)?;
        match &node.op {
            // An integer cast keeps sizes as they are (they fit every integer type tsr has).
            Op::Cast { .. } if self.graph.value(*x).ty.dtype.is_int() => self.size_elements(*x),
            Op::Reshape { .. } => self.size_elements(*x),
            Op::Transpose { perm } => {
                let elems = self.size_elements(*x)?;
                let perm: Vec<usize> = perm.iter().map(|&p| usize::try_from(p).ok()).collect::<Option<_>>()?;
                let out_dims: Vec<usize> = perm.iter().map(|&p| x_dims.get(p).copied()).collect::<Option<_>>()?;
                let in_strides = strides(&x_dims);
                Some(
                    (0..elems.len())
                        .map(|flat| {
                            let at = unflatten(flat, &out_dims);
                            let source: usize = at.iter().zip(&perm).map(|(&i, &p)| i * in_strides[p]).sum();
                            elems[source].clone()
                        })
                        .collect(),
                )
            }
            Op::Slice { starts, ends, steps } => {
                let elems = self.size_elements(*x)?;
                // The first index and count per axis, as the slice rule takes them.
                let picks: Vec<(i64, i64, i64)> = x_dims
                    .iter()
                    .enumerate()
                    .map(|(a, &n)| {
                        let (first, count) = slice_extent(n as i64, starts[a], ends[a], steps[a]);
                        (first, count, steps[a])
                    })
                    .collect();
                let out_dims: Vec<usize> = picks.iter().map(|&(_, count, _)| count as usize).collect();
                let in_strides = strides(&x_dims);
                let total: usize = out_dims.iter().product();
                Some(
                    (0..total)
                        .map(|flat| {
                            let at = unflatten(flat, &out_dims);
                            let source: i64 = at
                                .iter()
                                .zip(&picks)
                                .zip(&in_strides)
                                .map(|((&i, &(first, _, step)), &stride)| (first + i as i64 * step) * stride as i64)
                                .sum();
                            elems[source as usize].clone()
                        })
                        .collect(),
                )
            }
            _ => None,
        }
    }

    /// The entries of a `Concat` along `axis` of `inputs`, each known as [`Importer::size_elements`].
    fn concat_elements(&self, inputs: &[ValueId], axis: i64) -> Option<Vec<SymInt>> {
        let parts: Vec<(Vec<usize>, Vec<SymInt>)> = inputs
            .iter()
            .map(|&v| Some((static_dims(&self.graph.value(v).ty.dims)?, self.size_elements(v)?)))
            .collect::<Option<_>>()?;
        let rank = parts.first()?.0.len();
        let axis = usize::try_from(if axis < 0 { axis + rank as i64 } else { axis }).ok()?;
        // Row-major: the outer extent (axes before `axis`) interleaves the parts' blocks.
        let outer: usize = parts[0].0[..axis].iter().product();
        let mut out = Vec::new();
        for o in 0..outer {
            for (dims, elems) in &parts {
                let block: usize = dims[axis..].iter().product();
                out.extend_from_slice(&elems[o * block..(o + 1) * block]);
            }
        }
        Some(out)
    }
}

fn static_dims(dims: &[tessera_ir::types::Dim]) -> Option<Vec<usize>> {
    dims.iter().map(|d| d.as_static().map(|n| n as usize)).collect()
}

/// Row-major strides of `dims`.
fn strides(dims: &[usize]) -> Vec<usize> {
    let mut out = vec![1; dims.len()];
    for a in (0..dims.len().saturating_sub(1)).rev() {
        out[a] = out[a + 1] * dims[a + 1];
    }
    out
}

/// The coordinates of row-major index `flat` in `dims`.
fn unflatten(mut flat: usize, dims: &[usize]) -> Vec<usize> {
    let mut at = vec![0; dims.len()];
    for a in (0..dims.len()).rev() {
        at[a] = flat % dims[a].max(1);
        flat /= dims[a].max(1);
    }
    at
}
