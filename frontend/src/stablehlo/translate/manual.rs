//! `jax.shard_map` bodies: Shardy's `sdy.manual_computation` and GSPMD's
//! `custom_call @SPMDFullToShardShape` / `@SPMDShardToFullShape` pair (around a
//! `custom_call @Sharding` that names the layout, and `{manual}` markers).
//!
//! The body is a per-device program over the local blocks, so a module with one is imported as a
//! per-rank program: every rank holds the global values outside the body (the module's inputs,
//! replicated), cuts its block of each operand with `tsr.all_slice` over the mesh axes of the
//! operand's in-sharding, runs the body (its collectives over the manual axes become tsr
//! collectives, [`super::super::collective`]) and puts each result together with `tsr.all_gather`
//! over the axes of its out-sharding; axes an out-sharding leaves out hold equal blocks (JAX's
//! replication check), so any one serves. The graph records the mesh (`Graph::io_shardings`
//! with no inputs or outputs) and runs on tessera's multi-rank executors over it. Only bodies
//! manual over every mesh axis are read: a partly automatic body needs the automatic axes
//! partitioned around it, which no per-rank program states.

use super::{err, Env, Translator, Val};
use crate::stablehlo::sharding::{parse_mhlo_sharding, parse_sdy_mesh, parse_sdy_sharding};
use crate::stablehlo::syntax::{Attr, Op as SOp, SResult, SyntaxError};
use tessera_ir::ops::collective::{Collective, MeshAxes};
use tessera_ir::ops::Op;
use tessera_ir::sharding::{Mesh, Sharding};

/// The `<@mesh, [...]>` items of a sharding list, pretty (`[<@mesh, ...>, ...]`) or generic
/// (`#sdy.sharding_per_value<[<@mesh, ...>, ...]>`).
fn sharding_items(text: &str) -> Vec<String> {
    let mut items = Vec::new();
    let bytes = text.as_bytes();
    let mut start = None;
    let mut depth = 0usize;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'<' if bytes.get(i + 1) == Some(&b'@') && depth == 0 => {
                start = Some(i);
                depth = 1;
            }
            b'<' if depth > 0 => depth += 1,
            b'>' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    if let Some(s) = start.take() {
                        items.push(text[s..=i].to_string());
                    }
                }
            }
            _ => {}
        }
    }
    items
}

/// The quoted axis names of `manual_axes` (`{"x", "y"}` or `#sdy<manual_axes{"x", "y"}>`).
fn quoted_names(text: &str) -> Vec<String> {
    text.split('"').skip(1).step_by(2).map(str::to_string).collect()
}

fn opaque(op: &SOp, key: &str) -> SResult<String> {
    match op.attr(key) {
        Some(Attr::Opaque(t)) | Some(Attr::Str(t)) => Ok(t.clone()),
        Some(other) => err(op.offset, format!("{}: {key} is {other:?}, expected Shardy's text", op.name)),
        None => err(op.offset, format!("{} needs {key}", op.name)),
    }
}

/// The target of a `custom_call`, pretty (`@T(...)`) or generic (`call_target_name`).
pub(super) fn call_target(op: &SOp) -> Option<&str> {
    match (&op.callee, op.attr("call_target_name")) {
        (Some(t), _) | (None, Some(Attr::Str(t))) => Some(t.as_str()),
        _ => None,
    }
}

/// True for a `custom_call @Sharding` whose sharding is `{manual}`: a marker on a value of the
/// body (an identity here).
pub(super) fn is_manual_marker(op: &SOp) -> bool {
    op.name == "stablehlo.custom_call"
        && call_target(op) == Some("Sharding")
        && matches!(op.attr("mhlo.sharding"), Some(Attr::Str(s)) if s.trim() == "{manual}")
}

impl<'m> Translator<'m> {
    /// Records `mesh` (named `key`) as the mesh of the module's manual bodies, which must be the
    /// mesh every sharding of the module names.
    fn manual_mesh(&mut self, key: String, mesh: Mesh, op: &SOp) -> SResult<()> {
        match &self.constraint_mesh {
            Some((first, m)) if *m != mesh => err(
                op.offset,
                format!(
                    "{}: manual over {mesh}, another sharding over {m} ({first}); tessera reads one mesh per module",
                    op.name
                ),
            ),
            Some(_) => Ok(()),
            None => {
                self.constraint_mesh = Some((key, mesh));
                Ok(())
            }
        }
    }

    /// Rank's block of `v` (global) under `sharding`: one `tsr.all_slice` per split dimension.
    fn cut_block(&mut self, v: &Val, sharding: &Sharding, mesh: Option<&Mesh>, op: &SOp) -> SResult<Val> {
        let mut block = v.clone();
        for (dim, axes) in sharding.dims.iter().enumerate() {
            if axes.is_empty() {
                continue;
            }
            let group = self.group(axes, mesh, op)?;
            block = self.emit(Op::Collective(Collective::AllSlice { dim: dim as i64, group }), &[&block], op.offset)?;
        }
        Ok(block)
    }

    /// The global value of the blocks `v` of every rank under `sharding`: one `tsr.all_gather`
    /// per split dimension.
    fn join_blocks(&mut self, v: &Val, sharding: &Sharding, mesh: Option<&Mesh>, op: &SOp) -> SResult<Val> {
        let mut whole = v.clone();
        for (dim, axes) in sharding.dims.iter().enumerate().rev() {
            if axes.is_empty() {
                continue;
            }
            let group = self.group(axes, mesh, op)?;
            whole =
                self.emit(Op::Collective(Collective::AllGather { dim: dim as i64, group }), &[&whole], op.offset)?;
        }
        Ok(whole)
    }

    fn group(&self, axes: &[String], mesh: Option<&Mesh>, op: &SOp) -> SResult<MeshAxes> {
        let Some(mesh) = mesh else {
            return err(op.offset, format!("{}: no sharding of the module names the device grid", op.name));
        };
        let size = mesh
            .group_size(axes)
            .map_err(|m| SyntaxError { offset: op.offset, message: format!("{}: {m}", op.name) })?;
        Ok(MeshAxes { axes: axes.to_vec(), size })
    }

    /// `sdy.manual_computation`: cut the operands' blocks, run the body, join the results.
    pub(super) fn manual_computation(&mut self, op: &'m SOp, env: &Env, args: Vec<Val>) -> SResult<Vec<Val>> {
        let at = op.offset;
        let fail = |m: String| SyntaxError { offset: at, message: format!("{}: {m}", op.name) };
        let ins = sharding_items(&opaque(op, "in_shardings")?);
        let outs = sharding_items(&opaque(op, "out_shardings")?);
        if ins.len() != args.len() {
            return Err(fail(format!("{} in_shardings for {} operands", ins.len(), args.len())));
        }
        if outs.len() != op.result_types.len() {
            return Err(fail(format!("{} out_shardings for {} results", outs.len(), op.result_types.len())));
        }
        let read = |item: &String| parse_sdy_sharding(&format!("#sdy.sharding{item}")).map_err(fail);
        let ins: Vec<(String, Sharding)> = ins.iter().map(read).collect::<SResult<_>>()?;
        let outs: Vec<(String, Sharding)> = outs.iter().map(read).collect::<SResult<_>>()?;
        let Some((mesh_name, _)) = ins.first().or(outs.first()) else {
            return Err(fail("has neither operands nor results".into()));
        };
        if let Some((other, _)) = ins.iter().chain(&outs).find(|(n, _)| n != mesh_name) {
            return Err(fail(format!("shardings name @{mesh_name} and @{other}; one body runs on one mesh")));
        }
        let Some((_, axes)) = self.sdy_meshes.iter().find(|(n, _)| n == mesh_name) else {
            return Err(fail(format!("names @{mesh_name}, which no sdy.mesh defines")));
        };
        let mesh = parse_sdy_mesh(axes).map_err(fail)?;
        let manual = quoted_names(&opaque(op, "manual_axes")?);
        let automatic: Vec<&str> =
            mesh.axes().iter().map(|a| a.name.as_str()).filter(|a| !manual.iter().any(|m| m == a)).collect();
        if !automatic.is_empty() {
            return Err(fail(format!(
                "manual_axes {manual:?} leave {automatic:?} of @{mesh_name} automatic; tessera reads bodies manual over every mesh axis (shard_map without axis_names)"
            )));
        }
        if let Some(unknown) = manual.iter().find(|m| mesh.axis_size(m).is_none()) {
            return Err(fail(format!("manual axis '{unknown}' is not an axis of @{mesh_name} ({mesh})")));
        }
        self.manual_mesh(format!("@{mesh_name}"), mesh.clone(), op)?;
        let mut blocks = Vec::with_capacity(args.len());
        for (i, (v, (_, sharding))) in args.iter().zip(&ins).enumerate() {
            check_rank("in_sharding", i, sharding, v).map_err(fail)?;
            blocks.push(self.cut_block(v, sharding, Some(&mesh), op)?);
        }
        let Some(body) = op.regions.first() else { return Err(fail("has no body".into())) };
        let results = self.block(body, env, blocks)?;
        if results.len() != outs.len() {
            return Err(fail(format!("the body returns {} values for {} out_shardings", results.len(), outs.len())));
        }
        let mut joined = Vec::with_capacity(results.len());
        for (i, (v, (_, sharding))) in results.iter().zip(&outs).enumerate() {
            check_rank("out_sharding", i, sharding, v).map_err(fail)?;
            joined.push(self.join_blocks(v, sharding, Some(&mesh), op)?);
        }
        Ok(joined)
    }

    /// GSPMD's `@SPMDFullToShardShape` (the block of its operand, laid out by the
    /// `custom_call @Sharding` that makes it) and `@SPMDShardToFullShape` (the global value of
    /// the blocks under its own `mhlo.sharding`).
    pub(super) fn spmd_shape(&mut self, op: &'m SOp, args: Vec<Val>, to_shard: bool) -> SResult<Vec<Val>> {
        let at = op.offset;
        let target = call_target(op).unwrap_or_default().to_string();
        let fail = |m: String| SyntaxError { offset: at, message: format!("custom_call @{target}: {m}") };
        let [v] = &args[..] else { return Err(fail(format!("takes one operand, got {}", args.len()))) };
        let mesh = self.constraint_mesh.as_ref().map(|(_, m)| m.clone());
        if to_shard {
            let Some(sharding) = v.id.get().and_then(|id| constrained_as(self, id)) else {
                return Err(fail("its operand must be the result of custom_call @Sharding (the layout to cut)".into()));
            };
            return Ok(vec![self.cut_block(v, &sharding, mesh.as_ref(), op)?]);
        }
        let text = match op.attr("mhlo.sharding") {
            Some(Attr::Str(s)) => s.clone(),
            _ => return Err(fail("needs mhlo.sharding, the layout of the full value".into())),
        };
        let parsed = parse_mhlo_sharding(&text).map_err(fail)?;
        if let Some(m) = parsed.mesh() {
            self.manual_mesh(format!("the device grid {m}"), m.clone(), op)?;
        }
        let sharding = parsed.to_sharding(v.ty.rank());
        if sharding.dims.len() != v.ty.rank() {
            return Err(fail(format!("{text} has {} dimensions, the value {}", sharding.dims.len(), v.ty.rank())));
        }
        let mesh = parsed.mesh().cloned().or(mesh);
        Ok(vec![self.join_blocks(v, &sharding, mesh.as_ref(), op)?])
    }
}

/// `what` number `i` (an in- or out-sharding) must name one entry per dimension of `v`.
fn check_rank(what: &str, i: usize, sharding: &Sharding, v: &Val) -> Result<(), String> {
    if sharding.dims.len() == v.ty.rank() {
        return Ok(());
    }
    Err(format!("{what} {i} {sharding} has {} dimensions, the value {}", sharding.dims.len(), v.ty.rank()))
}

/// The sharding a `tsr.sharding_constraint` producing `id` asks for.
fn constrained_as(t: &Translator<'_>, id: tessera_ir::graph::ValueId) -> Option<Sharding> {
    let node = t.graph.producer(id)?;
    match &t.graph.node(node).op {
        Op::ShardingConstraint { sharding } => Some(sharding.clone()),
        _ => None,
    }
}
