//! Shardings between ops read into `tsr.sharding_constraint`: Shardy's `sdy.sharding_constraint`
//! (what `jax.lax.with_sharding_constraint` writes by default), GSPMD's `custom_call @Sharding`
//! with its `mhlo.sharding`, and an op's own one-result `sdy.sharding`
//! (`#sdy.sharding_per_value<[...]>`) or `mhlo.sharding`, which constrain the op's result.
//!
//! Every constraint of a module must name the mesh its boundary shardings name (one Shardy mesh,
//! or one GSPMD device grid read as axes `d0`, `d1`, ...); a module with constraints and no
//! boundary shardings records that mesh as the graph's (`Graph::io_shardings` with no inputs
//! or outputs), so the export writes the constraints over the same `sdy.mesh` again.

use super::{err, Translator, Val};
use crate::stablehlo::sharding::{parse_mhlo_sharding, parse_sdy_mesh, parse_sdy_sharding};
use crate::stablehlo::syntax::{Attr, Op as SOp, SResult};
use tessera_ir::ops::Op;
use tessera_ir::sharding::{Mesh, Sharding};

/// Where a constraint comes from on `op`, if it carries one.
pub(super) enum Form {
    /// `sdy.sharding_constraint` or `custom_call @Sharding`: the op is the constraint.
    Op,
    /// Another op with its own sharding attribute: its result is constrained.
    OnResult,
}

/// Whether `op` is or carries a sharding between ops.
pub(super) fn form_of(op: &SOp) -> Option<Form> {
    let target = match (&op.callee, op.attr("call_target_name")) {
        (Some(t), _) | (None, Some(Attr::Str(t))) => Some(t.as_str()),
        _ => None,
    };
    if op.name == "sdy.sharding_constraint" || (op.name == "stablehlo.custom_call" && target == Some("Sharding")) {
        return Some(Form::Op);
    }
    // A shard_map's shape changes carry the layout of their full side, read by `manual`.
    if matches!(target, Some("SPMDFullToShardShape" | "SPMDShardToFullShape")) {
        return None;
    }
    (op.attr("mhlo.sharding").is_some() || op.attr("sdy.sharding").is_some()).then_some(Form::OnResult)
}

fn text_of(a: &Attr) -> String {
    match a {
        Attr::Str(s) | Attr::Opaque(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

impl<'m> Translator<'m> {
    /// The sharding `op` asks for its (one) value of rank `rank`, and the mesh it names.
    fn constraint_of(&mut self, op: &SOp, rank: usize) -> SResult<Sharding> {
        let at = op.offset;
        let sdy = op.attr("sharding").or_else(|| op.attr("sdy.sharding")).filter(|_| !op.name.ends_with("custom_call"));
        let (key, mesh, sharding) = if let Some(a) = sdy.filter(|_| op.attr("mhlo.sharding").is_none()) {
            let text = text_of(a);
            // Pretty form: `<@mesh, [...]>`; generic: `#sdy.sharding<...>`; on an op:
            // `#sdy.sharding_per_value<[<@mesh, [...]>]>` (one result here).
            let inner = text.trim().strip_prefix("#sdy.sharding_per_value<[").and_then(|t| t.strip_suffix("]>"));
            let one = match inner {
                Some(list) if list.matches("<@").count() == 1 => list.trim().to_string(),
                Some(_) => {
                    return err(at, format!("{}: {text} shards several results; tessera reads one-result ops", op.name))
                }
                None => text.trim().trim_start_matches("#sdy.sharding").trim().to_string(),
            };
            // The custom assembly's syntax keeps the body without its angle brackets.
            let one = if one.starts_with('<') { one } else { format!("<{one}>") };
            let (mesh_name, sharding) = parse_sdy_sharding(&format!("#sdy.sharding{one}"))
                .map_err(|m| super::SyntaxError { offset: at, message: format!("{}: {m}", op.name) })?;
            let Some((_, axes)) = self.sdy_meshes.iter().find(|(n, _)| *n == mesh_name) else {
                return err(at, format!("{}: {text} names @{mesh_name}, which no sdy.mesh defines", op.name));
            };
            let mesh = parse_sdy_mesh(axes).map_err(|m| super::SyntaxError { offset: at, message: m })?;
            (Some(format!("@{mesh_name}")), Some(mesh), sharding)
        } else {
            let Some(a) = op.attr("mhlo.sharding") else {
                return err(at, format!("{} has no sharding attribute", op.name));
            };
            let text = text_of(a);
            let located = |m: String| super::SyntaxError { offset: at, message: format!("{}: {m}", op.name) };
            let parsed = parse_mhlo_sharding(&text).map_err(located)?;
            let mesh = parsed.mesh().cloned();
            (mesh.as_ref().map(|m| format!("the device grid {m}")), mesh, parsed.to_sharding(rank))
        };
        if let (Some(key), Some(mesh)) = (key, mesh) {
            match &self.constraint_mesh {
                Some((first, _)) if *first != key => {
                    return err(
                        at,
                        format!(
                            "{}: sharded over {key}, another sharding over {first}; tessera reads one mesh per module",
                            op.name
                        ),
                    )
                }
                Some(_) => {}
                None => self.constraint_mesh = Some((key, mesh)),
            }
        }
        Ok(sharding)
    }

    /// `tsr.sharding_constraint` on `v` as `op` asks.
    fn constrain(&mut self, op: &SOp, v: &Val) -> SResult<Val> {
        let sharding = self.constraint_of(op, v.ty.rank())?;
        self.emit(Op::ShardingConstraint { sharding }, &[v], op.offset)
    }

    /// An op that is or carries a sharding between ops (see [`form_of`]).
    pub(super) fn with_constraint(
        &mut self,
        op: &'m SOp,
        env: &super::Env,
        args: Vec<Val>,
        form: Form,
    ) -> SResult<Vec<Val>> {
        match form {
            Form::Op => {
                if args.len() != 1 {
                    return err(op.offset, format!("{} takes one operand, got {}", op.name, args.len()));
                }
                Ok(vec![self.constrain(op, &args[0])?])
            }
            Form::OnResult => {
                let results = self.op_on(op, env, args)?;
                let [result] = &results[..] else {
                    return err(
                        op.offset,
                        format!(
                            "{} has {} results and a sharding; tessera reads shardings of one-result ops",
                            op.name,
                            results.len()
                        ),
                    );
                };
                Ok(vec![self.constrain(op, result)?])
            }
        }
    }

    /// The mesh the module's constraints named, checked against its boundary shardings' mesh.
    pub(super) fn constraint_mesh_against(&self, boundary: Option<&Mesh>, at: usize) -> SResult<Option<Mesh>> {
        match (&self.constraint_mesh, boundary) {
            (Some((key, mesh)), Some(b)) if mesh != b => err(
                at,
                format!("sharding constraints are over {key} ({mesh}), the boundary shardings over {b}; tessera reads one mesh per module"),
            ),
            (Some((_, mesh)), None) => Ok(Some(mesh.clone())),
            _ => Ok(None),
        }
    }
}
