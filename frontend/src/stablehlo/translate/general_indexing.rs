//! `gather` and `scatter` in their general form (operand batching dimensions, several start
//! dimensions with a 2-D index vector, partial windows): what `jnp.take_along_axis`,
//! `x.at[i, j].set(v)` and a `vmap`ped lookup lower to, beyond the one-dimension forms tsr's
//! `gather`/`scatter` take directly.
//!
//! Both become index arithmetic over static shapes: for every element of the result (gather) or
//! of the updates (scatter), its operand coordinate on each dimension is built as an i64 tensor
//! (a start index read from the index tensor, an `iota` for a batching or window dimension),
//! the coordinates are linearized with the operand's strides, and a one-axis tsr `gather` reads
//! the flattened operand, or a one-axis tsr `scatter` writes it. Semantics as StableHLO
//! specifies them: gather start indices are clamped so the slice fits; a scatter update whose
//! coordinate is out of bounds is skipped (sent to a spare element cut off afterwards).

use super::{attr_ints, err, Translator, Val};
use crate::stablehlo::syntax::{Attr, Op as SOp, SResult};
use tessera_ir::dtype::DType;
use tessera_ir::ops::elementwise::{BinaryOp, CompareOp};
use tessera_ir::ops::indexing::ScatterReduction;
use tessera_ir::ops::Op;
use tessera_ir::types::{Dim, TensorType};

/// The dimension numbers of one gather or scatter, named as for gather (a scatter's
/// `update_window_dims` are the `offset_dims`, `inserted_window_dims` the collapsed ones).
pub(super) struct IndexDims {
    pub offset_dims: Vec<i64>,
    pub collapsed: Vec<i64>,
    pub operand_batching: Vec<i64>,
    pub indices_batching: Vec<i64>,
    pub start_map: Vec<i64>,
    pub index_vector_dim: i64,
}

impl IndexDims {
    /// Reads the `#stablehlo.gather<...>` or `#stablehlo.scatter<...>` numbers of `op`.
    pub fn read(op: &SOp, key: &str, indices_rank: usize) -> SResult<IndexDims> {
        let Some(Attr::Dict(numbers)) = op.attr(key) else {
            return err(op.offset, format!("{} needs its {key}", op.name));
        };
        let get = |k: &str| numbers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let list = |k: &str| get(k).as_ref().and_then(attr_ints).unwrap_or_default();
        let scatter = key.starts_with("scatter");
        let (offset, collapsed, batching, indices_batching, start_map) = if scatter {
            (
                "update_window_dims",
                "inserted_window_dims",
                "input_batching_dims",
                "scatter_indices_batching_dims",
                "scatter_dims_to_operand_dims",
            )
        } else {
            (
                "offset_dims",
                "collapsed_slice_dims",
                "operand_batching_dims",
                "start_indices_batching_dims",
                "start_index_map",
            )
        };
        Ok(IndexDims {
            offset_dims: list(offset),
            collapsed: list(collapsed),
            operand_batching: list(batching),
            indices_batching: list(indices_batching),
            start_map: list(start_map),
            index_vector_dim: match get("index_vector_dim") {
                Some(Attr::Int(d)) => d,
                _ => indices_rank as i64,
            },
        })
    }
}

/// The checked layout of one general gather/scatter over static shapes.
struct Layout {
    operand: Vec<u64>,
    /// The shape every coordinate tensor has: the gather's result, the scatter's updates.
    target: Vec<u64>,
    /// Index-tensor dimensions other than the index vector, in order.
    index_batch: Vec<usize>,
    /// Target dimensions that are not window (offset) dimensions, in order: index_batch's.
    target_batch: Vec<usize>,
    /// Operand dimensions with a window, in order: the target's offset dimensions.
    window_operand: Vec<usize>,
}

fn is_increasing(v: &[i64]) -> bool {
    v.windows(2).all(|w| w[0] < w[1])
}

impl Translator<'_> {
    /// Checks `dims` against the operand and index shapes (`target` is the gather result or
    /// the scatter updates; `slice_sizes` only for gather). Every inconsistency is an error
    /// at `op` naming the dimension numbers.
    fn layout(&self, op: &SOp, dims: &IndexDims, operand: &Val, indices: &Val, target: &TensorType) -> SResult<Layout> {
        let at = op.offset;
        let name = &op.name;
        let static_of = |v: &TensorType, what: &str| {
            v.static_shape().ok_or_else(|| crate::stablehlo::syntax::SyntaxError {
                offset: at,
                message: format!("{name} of the general form needs a static {what}, got {v}"),
            })
        };
        let o = static_of(&operand.ty, "operand")?;
        let s = static_of(&indices.ty, "index tensor")?;
        let t = static_of(target, if name.ends_with("gather") { "result" } else { "update tensor" })?;
        let rank = o.len() as i64;
        let ivd = dims.index_vector_dim;
        if ivd < 0 || ivd > s.len() as i64 {
            return err(at, format!("{name}: index_vector_dim {ivd} is out of range for indices {}", indices.ty));
        }
        let vector_len = if ivd as usize == s.len() { 1 } else { s[ivd as usize] as usize };
        let in_operand = |v: &[i64]| v.iter().all(|&d| d >= 0 && d < rank);
        if !in_operand(&dims.collapsed) || !in_operand(&dims.operand_batching) || !in_operand(&dims.start_map) {
            return err(at, format!("{name}: a dimension number is out of range for operand {}", operand.ty));
        }
        if !is_increasing(&dims.collapsed)
            || !is_increasing(&dims.operand_batching)
            || !is_increasing(&dims.offset_dims)
        {
            return err(at, format!("{name}: window, collapsed and batching dimensions must be sorted and distinct"));
        }
        if dims.collapsed.iter().any(|d| dims.operand_batching.contains(d)) {
            return err(at, format!("{name}: {:?} are both collapsed and batching dimensions", dims.collapsed));
        }
        if dims.start_map.len() != vector_len {
            return err(
                at,
                format!("{name}: {} index map entries for index vectors of {vector_len}", dims.start_map.len()),
            );
        }
        let mut seen = dims.start_map.clone();
        seen.sort_unstable();
        if seen.windows(2).any(|w| w[0] == w[1]) || dims.start_map.iter().any(|d| dims.operand_batching.contains(d)) {
            return err(
                at,
                format!("{name}: index map {:?} repeats a dimension or names a batching one", dims.start_map),
            );
        }
        if dims.indices_batching.len() != dims.operand_batching.len()
            || dims.indices_batching.iter().any(|&d| d < 0 || d as usize >= s.len() || d == ivd)
        {
            return err(
                at,
                format!(
                    "{name}: index batching dimensions {:?} do not pair with operand batching dimensions {:?} of indices {}",
                    dims.indices_batching, dims.operand_batching, indices.ty
                ),
            );
        }
        let index_batch: Vec<usize> = (0..s.len()).filter(|&d| d as i64 != ivd).collect();
        let target_batch: Vec<usize> = (0..t.len()).filter(|&d| !dims.offset_dims.contains(&(d as i64))).collect();
        let window_operand: Vec<usize> = (0..o.len())
            .filter(|&d| !dims.collapsed.contains(&(d as i64)) && !dims.operand_batching.contains(&(d as i64)))
            .collect();
        if dims.offset_dims.iter().any(|&d| d < 0 || d as usize >= t.len())
            || window_operand.len() != dims.offset_dims.len()
            || target_batch.len() != index_batch.len()
        {
            return err(
                at,
                format!(
                    "{name}: window dimensions {:?} do not fit operand {}, indices {} and {target}",
                    dims.offset_dims, operand.ty, indices.ty
                ),
            );
        }
        for (&tb, &ib) in target_batch.iter().zip(&index_batch) {
            if t[tb] != s[ib] {
                return err(
                    at,
                    format!("{name}: dimension {tb} of {target} must match dimension {ib} of indices {}", indices.ty),
                );
            }
        }
        for (&od, &wd) in window_operand.iter().zip(&dims.offset_dims) {
            if t[wd as usize] > o[od] {
                return err(
                    at,
                    format!("{name}: window dimension {wd} of {target} is larger than operand dimension {od}"),
                );
            }
        }
        Ok(Layout { operand: o, target: t, index_batch, target_batch, window_operand })
    }

    /// `v` as an i64 tensor of shape `dims`.
    fn full(&mut self, v: i64, dims: &[u64], at: usize) -> SResult<Val> {
        let ty = TensorType::new(DType::I64, dims.iter().map(|&n| Dim::Static(n)).collect());
        self.splat(v as f64, &ty, at)
    }

    /// Coordinates along target dimension `axis`, as an i64 tensor of the target's shape.
    fn coordinates(&mut self, target: &[u64], axis: usize, at: usize) -> SResult<Val> {
        let ty = TensorType::new(DType::I64, target.iter().map(|&n| Dim::Static(n)).collect());
        let zeros = self.splat(0.0, &ty, at)?;
        self.emit(Op::Iota { axis: axis as i64 }, &[&zeros], at)
    }

    /// Entry `k` of every index vector, placed on the target's batch dimensions and broadcast
    /// over its window dimensions.
    fn start_component(&mut self, indices: &Val, l: &Layout, ivd: usize, k: usize, at: usize) -> SResult<Val> {
        let mut column = indices.clone();
        if ivd < indices.ty.rank() {
            let ends: Vec<i64> = indices
                .ty
                .dims
                .iter()
                .enumerate()
                .map(|(d, n)| if d == ivd { k as i64 + 1 } else { n.as_static().unwrap_or(0) as i64 })
                .collect();
            let mut starts = vec![0; indices.ty.rank()];
            starts[ivd] = k as i64;
            column = self.emit(Op::Slice { starts, ends, steps: vec![1; indices.ty.rank()] }, &[&column], at)?;
        }
        if column.ty.dtype != DType::I64 {
            column = self.emit(Op::Cast { to: DType::I64 }, &[&column], at)?;
        }
        let mut placed = vec![Dim::Static(1); l.target.len()];
        for (&tb, &ib) in l.target_batch.iter().zip(&l.index_batch) {
            placed[tb] = indices.ty.dims[ib].clone();
        }
        let column = self.emit(Op::Reshape { shape: placed }, &[&column], at)?;
        let full = l.target.iter().map(|&n| Dim::Static(n)).collect();
        self.emit(Op::Broadcast { shape: full }, &[&column], at)
    }

    /// Every operand coordinate of every target element: start + batching + window parts.
    fn operand_coordinates(
        &mut self,
        dims: &IndexDims,
        indices: &Val,
        l: &Layout,
        clamp_to: Option<&[i64]>,
        at: usize,
    ) -> SResult<Vec<Val>> {
        let ivd = dims.index_vector_dim as usize;
        let mut coords = Vec::with_capacity(l.operand.len());
        for d in 0..l.operand.len() {
            let mut c = self.full(0, &l.target, at)?;
            if let Some(k) = dims.start_map.iter().position(|&m| m as usize == d) {
                let mut start = self.start_component(indices, l, ivd, k, at)?;
                if let Some(sizes) = clamp_to {
                    // StableHLO clamps a gather's start so the whole slice is inside.
                    let low = self.full(0, &l.target, at)?;
                    let high = self.full(l.operand[d] as i64 - sizes[d], &l.target, at)?;
                    start = self.emit(Op::Binary(BinaryOp::Max), &[&start, &low], at)?;
                    start = self.emit(Op::Binary(BinaryOp::Min), &[&start, &high], at)?;
                }
                c = start;
            }
            if let Some(i) = dims.operand_batching.iter().position(|&b| b as usize == d) {
                let index_dim = dims.indices_batching[i] as usize;
                let k = l.index_batch.iter().position(|&ib| ib == index_dim).unwrap_or(0);
                let iota = self.coordinates(&l.target.clone(), l.target_batch[k], at)?;
                c = self.emit(Op::Binary(BinaryOp::Add), &[&c, &iota], at)?;
            }
            if let Some(w) = l.window_operand.iter().position(|&o| o == d) {
                let iota = self.coordinates(&l.target.clone(), dims.offset_dims[w] as usize, at)?;
                c = self.emit(Op::Binary(BinaryOp::Add), &[&c, &iota], at)?;
            }
            coords.push(c);
        }
        Ok(coords)
    }

    /// Row-major linear positions of `coords` in the operand.
    fn linearize(&mut self, coords: &[Val], operand: &[u64], target: &[u64], at: usize) -> SResult<Val> {
        let mut flat: Option<Val> = None;
        let mut stride = 1i64;
        for (c, &n) in coords.iter().zip(operand).rev() {
            let scale = self.full(stride, target, at)?;
            let term = self.emit(Op::Binary(BinaryOp::Mul), &[c, &scale], at)?;
            flat = Some(match flat {
                None => term,
                Some(f) => self.emit(Op::Binary(BinaryOp::Add), &[&f, &term], at)?,
            });
            stride *= n as i64;
        }
        match flat {
            Some(f) => Ok(f),
            None => err(at, "a gather or scatter of a rank-0 operand has no coordinates"),
        }
    }

    fn flattened(&mut self, v: &Val, at: usize) -> SResult<(Val, u64)> {
        let n: u64 = v.ty.static_shape().map_or(0, |s| s.iter().product());
        Ok((self.emit(Op::Reshape { shape: vec![Dim::Static(n)] }, &[v], at)?, n))
    }

    /// A gather in general form (see the module docs).
    pub(super) fn general_gather(&mut self, op: &SOp, dims: &IndexDims, data: &Val, indices: &Val) -> SResult<Val> {
        let at = op.offset;
        let sizes = super::ints_attr(op, &["slice_sizes"])?;
        let o = data.ty.static_shape().unwrap_or_default();
        if sizes.len() != o.len() || sizes.iter().zip(&o).any(|(&s, &n)| s < 0 || s as u64 > n) {
            return err(at, format!("gather slice_sizes {sizes:?} do not fit operand {}", data.ty));
        }
        if dims.collapsed.iter().chain(&dims.operand_batching).any(|&d| sizes.get(d as usize) != Some(&1)) {
            return err(at, format!("gather slice_sizes {sizes:?} must be 1 on collapsed and batching dimensions"));
        }
        let result = super::result_type(op, 0)?;
        let target =
            TensorType::new(result.dtype, result.dims.iter().map(|d| d.map_or(Dim::sym("?"), Dim::Static)).collect());
        let l = self.layout(op, dims, data, indices, &target)?;
        for (&od, &wd) in l.window_operand.iter().zip(&dims.offset_dims) {
            if l.target[wd as usize] as i64 != sizes[od] {
                return err(
                    at,
                    format!("gather result dimension {wd} must be slice size {} of operand dimension {od}", sizes[od]),
                );
            }
        }
        let coords = self.operand_coordinates(dims, indices, &l, Some(&sizes), at)?;
        let flat_index = self.linearize(&coords, &l.operand, &l.target, at)?;
        let (flat_data, _) = self.flattened(data, at)?;
        self.emit(Op::Gather { axis: 0 }, &[&flat_data, &flat_index], at)
    }

    /// A scatter in general form (see the module docs).
    pub(super) fn general_scatter(
        &mut self,
        op: &SOp,
        dims: &IndexDims,
        data: &Val,
        indices: &Val,
        updates: &Val,
        reduction: ScatterReduction,
    ) -> SResult<Val> {
        let at = op.offset;
        let l = self.layout(op, dims, data, indices, &updates.ty.clone())?;
        let coords = self.operand_coordinates(dims, indices, &l, None, at)?;
        let flat_index = self.linearize(&coords, &l.operand, &l.target, at)?;
        // Out of bounds on any dimension: the update goes to the spare element `n`.
        let mut in_bounds: Option<Val> = None;
        for (c, &n) in coords.iter().zip(&l.operand) {
            let (zero, extent) = (self.full(0, &l.target, at)?, self.full(n as i64, &l.target, at)?);
            let low = self.emit(Op::Compare(CompareOp::Ge), &[c, &zero], at)?;
            let high = self.emit(Op::Compare(CompareOp::Lt), &[c, &extent], at)?;
            let both = self.emit(Op::Binary(BinaryOp::And), &[&low, &high], at)?;
            in_bounds = Some(match in_bounds {
                None => both,
                Some(b) => self.emit(Op::Binary(BinaryOp::And), &[&b, &both], at)?,
            });
        }
        let (flat_data, n) = self.flattened(data, at)?;
        let spare_index = self.full(n as i64, &l.target, at)?;
        let flat_index = match in_bounds {
            Some(ok) => self.emit(Op::Where, &[&ok, &flat_index, &spare_index], at)?,
            None => flat_index,
        };
        let m: u64 = l.target.iter().product();
        let flat_index = self.emit(Op::Reshape { shape: vec![Dim::Static(m)] }, &[&flat_index], at)?;
        let flat_updates = self.emit(Op::Reshape { shape: vec![Dim::Static(m)] }, &[updates], at)?;
        let spare = self.splat(0.0, &TensorType::new(data.ty.dtype, vec![Dim::Static(1)]), at)?;
        let padded = self.emit(Op::Concat { axis: 0 }, &[&flat_data, &spare], at)?;
        let scattered = self.emit(Op::Scatter { axis: 0, reduction }, &[&padded, &flat_index, &flat_updates], at)?;
        let cut = self.emit(Op::Slice { starts: vec![0], ends: vec![n as i64], steps: vec![1] }, &[&scattered], at)?;
        self.emit(Op::Reshape { shape: data.ty.dims.clone() }, &[&cut], at)
    }
}
