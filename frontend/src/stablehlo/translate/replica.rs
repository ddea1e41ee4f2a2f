//! Values that depend on `stablehlo.replica_id`, and the `all_slice` they index: the form
//! tessera's export writes `tsr.all_slice` in (a table of block offsets read at `replica_id`,
//! then a `dynamic_slice` of the operand at that offset), read back into the collective.
//!
//! A replicated module's replicas are the ranks of the module's mesh ([`super::super::collective`]),
//! so `replica_id` is known at import on every replica: it is carried as one constant per replica
//! and every op whose operands are constants or such values folds once per replica. The value
//! never becomes graph data (a tsr program has no rank id); its one use is the start index of a
//! `dynamic_slice`, which reads as `all_slice` when the offsets are exactly the blocks of a group
//! of mesh axes along one dimension. Anything else that reads it is a located error.

use super::{err, ints_attr, one, Translator, Val};
use crate::stablehlo::collective::axis_orders;
use crate::stablehlo::syntax::{Op as SOp, SResult};
use std::cell::Cell;
use std::rc::Rc;
use tessera_ir::dtype::DType;
use tessera_ir::ops::collective::{Collective, MeshAxes};
use tessera_ir::ops::Op;
use tessera_ir::sharding::Mesh;
use tessera_ir::tensor::Tensor;
use tessera_ir::types::TensorType;

/// Why a replica-dependent value cannot be graph data.
pub(super) const AS_DATA: &str = "a value computed from replica_id is used as data; tessera reads replica_id only \
     as the start index of a dynamic_slice that cuts each replica's block (an all_slice)";

impl<'m> Translator<'m> {
    fn replica_mesh(&self, at: usize, what: &str) -> SResult<Mesh> {
        match &self.mesh {
            Ok(Some(mesh)) => Ok(mesh.clone()),
            Ok(None) => err(
                at,
                format!("{what} needs the mesh its replicas form: the module has no sdy.mesh and no mhlo.num_replicas"),
            ),
            Err(e) => err(at, format!("{what}: {e}")),
        }
    }

    /// `replica_id`: the rank on every replica of the module's mesh.
    pub(super) fn replica_id(&mut self, at: usize) -> SResult<Val> {
        let mesh = self.replica_mesh(at, "stablehlo.replica_id")?;
        let ids = (0..mesh.num_devices()).map(|r| Tensor::from_i64(DType::U32, Vec::new(), vec![r as i64])).collect();
        Ok(Val {
            id: Rc::new(Cell::new(None)),
            konst: None,
            ty: TensorType::new(DType::U32, Vec::new()),
            sizes: None,
            per_replica: Some(Rc::new(ids)),
        })
    }

    /// An op with a replica-dependent operand: folded once per replica when every operand is
    /// known, `all_slice` for a `dynamic_slice` of data at per-replica offsets, else an error.
    pub(super) fn replica_dependent(&mut self, op: &'m SOp, env: &super::Env, args: Vec<Val>) -> SResult<Vec<Val>> {
        let at = op.offset;
        let known = |v: &Val| v.konst.is_some() || v.per_replica.is_some();
        if op.name == "stablehlo.dynamic_slice" && args.first().is_some_and(|x| !known(x)) {
            return one(self.all_slice(op, &args[0], &args[1..])?);
        }
        if !args.iter().all(known) || !op.regions.is_empty() {
            return err(at, format!("{}: {AS_DATA}", op.name));
        }
        let replicas = args.iter().find_map(|v| v.per_replica.as_ref().map(|p| p.len())).unwrap_or(0);
        let mut per_result: Vec<Vec<Tensor>> = Vec::new();
        for r in 0..replicas {
            let on_r: Vec<Val> = args
                .iter()
                .map(|v| match (&v.per_replica, &v.konst) {
                    (Some(p), _) => Val::constant(p[r].clone()),
                    (None, _) => v.clone(),
                })
                .collect();
            let results = self.op_on(op, env, on_r)?;
            for (i, v) in results.into_iter().enumerate() {
                let Some(t) = v.konst else {
                    return err(at, format!("{}: {AS_DATA}", op.name));
                };
                if per_result.len() <= i {
                    per_result.push(Vec::new());
                }
                per_result[i].push((*t).clone());
            }
        }
        Ok(per_result
            .into_iter()
            .map(|ts| Val {
                id: Rc::new(Cell::new(None)),
                konst: None,
                ty: ts[0].tensor_type(),
                sizes: None,
                per_replica: Some(Rc::new(ts)),
            })
            .collect())
    }

    /// `dynamic_slice(x, starts...)` where each replica's starts cut block `i` (its index in a
    /// group of mesh axes) of one dimension: `tsr.all_slice` over those axes.
    fn all_slice(&mut self, op: &SOp, x: &Val, starts: &[Val]) -> SResult<Val> {
        let at = op.offset;
        let mesh = self.replica_mesh(at, "a dynamic_slice at replica_id")?;
        let replicas = mesh.num_devices();
        let sizes = ints_attr(op, &["slice_sizes", "sizes"])?;
        let Some(extents) = x.ty.static_shape() else {
            return err(at, format!("a dynamic_slice at replica_id of the dynamic-shaped {}", x.ty));
        };
        if starts.len() != extents.len() || sizes.len() != extents.len() {
            return err(
                at,
                format!(
                    "{} start indices and {} sizes for an operand of rank {}",
                    starts.len(),
                    sizes.len(),
                    x.ty.rank()
                ),
            );
        }
        // Each dimension's start on every replica, clamped as dynamic_slice clamps.
        let mut offsets: Vec<Vec<i64>> = Vec::new();
        for (i, ((start, &size), &extent)) in starts.iter().zip(&sizes).zip(&extents).enumerate() {
            let extent = extent as i64;
            if size < 0 || size > extent {
                return err(at, format!("slice size {size} does not fit dimension {i} of {}", x.ty));
            }
            let on_each: Vec<i64> = match (&start.per_replica, &start.konst) {
                (Some(p), _) if p.len() == replicas => p.iter().map(|t| t.get_i64(0)).collect(),
                (None, Some(t)) => vec![t.get_i64(0); replicas],
                _ => return err(at, format!("start index {i} is not known at import on every replica")),
            };
            offsets.push(on_each.into_iter().map(|s| s.clamp(0, extent - size)).collect());
        }
        let cut: Vec<usize> = (0..extents.len()).filter(|&i| sizes[i] < extents[i] as i64).collect();
        if cut.is_empty() {
            // The whole operand on every replica.
            return Ok(x.clone());
        }
        let [dim] = cut[..] else {
            return err(
                at,
                format!(
                    "stablehlo.dynamic_slice at replica_id cuts {} dimensions; it reads as tsr.all_slice only when it cuts one",
                    cut.len()
                ),
            );
        };
        let (block, extent) = (sizes[dim], extents[dim] as i64);
        if block == 0 || extent % block != 0 {
            return err(at, format!("slice size {block} does not divide dimension {dim} ({extent}) into blocks"));
        }
        let group_size = (extent / block) as u64;
        let names: Vec<String> = mesh.axes().iter().map(|a| a.name.clone()).collect();
        let blocks_of = |axes: &[String]| -> bool {
            mesh.group_size(axes).ok() == Some(group_size)
                && (0..replicas)
                    .all(|r| mesh.index_in_group(r, axes).is_ok_and(|i| offsets[dim][r] == i as i64 * block))
        };
        let Some(axes) = axis_orders(&names).into_iter().find(|axes| blocks_of(axes)) else {
            return err(
                at,
                format!(
                    "stablehlo.dynamic_slice: the per-replica offsets {:?} along dimension {dim} are not the blocks of any group of axes of the mesh {mesh}",
                    offsets[dim]
                ),
            );
        };
        let xid = self.materialize(x, at)?;
        let collective = Collective::AllSlice { dim: dim as i64, group: MeshAxes { axes, size: group_size } };
        let id = self.add(Op::Collective(collective), &[xid], at)?;
        Ok(Val::node(id, self.graph.value(id).ty.clone()))
    }
}
