//! StableHLO collectives (`all_reduce`, `all_gather`, `reduce_scatter`, `all_to_all`,
//! `collective_permute`) read back into tsr collectives: the module is a per-rank program run as
//! replicas (what [`super::export::export_rank_program`] writes), and each op's `replica_groups`
//! are matched against the groups of the mesh's axes to find the `mesh_axes` that span them; a
//! `collective_permute`'s `source_target_pairs` must be the same member pairs in every group of
//! some axes (the fewest axes, then the mesh's order, is chosen: any of them moves the same data).
//!
//! The mesh is the module's `sdy.mesh` (one, or the one named `mesh`); a module without one but
//! with `mhlo.num_replicas = N` reads as the one-axis mesh `replicas=N` (a `pmap`-style module
//! whose groups are all replicas or each replica alone). `channel_handle` and
//! `use_global_device_ids` are accepted and not needed: with one partition, flattened ids,
//! replica ids and cross-replica groups all name the same ranks.

use super::syntax::{Attr, Op as SOp, SResult, SyntaxError};
use tessera_ir::ops::collective::{Collective, MeshAxes, Reduction};
use tessera_ir::sharding::Mesh;

/// The axis name of the mesh a module without `sdy.mesh` gets from `mhlo.num_replicas`.
pub const REPLICAS_AXIS: &str = "replicas";

fn fail<T>(op: &SOp, message: String) -> SResult<T> {
    Err(SyntaxError { offset: op.offset, message: format!("{}: {message}", op.name) })
}

/// True for the StableHLO collectives that have a tsr counterpart.
pub fn is_collective(name: &str) -> bool {
    matches!(
        name,
        "stablehlo.all_reduce"
            | "stablehlo.all_gather"
            | "stablehlo.reduce_scatter"
            | "stablehlo.all_to_all"
            | "stablehlo.collective_permute"
    )
}

/// The groups of a collective over `axes`: every rank once, groups by first member.
pub fn groups_over(mesh: &Mesh, axes: &[String]) -> Result<Vec<Vec<usize>>, String> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for rank in 0..mesh.num_devices() {
        if !groups.iter().any(|g| g.contains(&rank)) {
            groups.push(mesh.group(rank, axes)?);
        }
    }
    Ok(groups)
}

/// Every ordered choice of distinct axes (the order decides the members' order in a group).
pub fn axis_orders(names: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut stack: Vec<Vec<String>> = vec![Vec::new()];
    while let Some(prefix) = stack.pop() {
        for name in names {
            if !prefix.contains(name) {
                let mut next = prefix.clone();
                next.push(name.clone());
                out.push(next.clone());
                stack.push(next);
            }
        }
    }
    out
}

/// The mesh axes whose groups are exactly `groups` (each group's members in order; the order
/// of the groups themselves does not matter).
pub fn axes_of_groups(mesh: &Mesh, groups: &[Vec<usize>]) -> Option<MeshAxes> {
    let mut wanted = groups.to_vec();
    wanted.sort();
    let names: Vec<String> = mesh.axes().iter().map(|a| a.name.clone()).collect();
    axis_orders(&names).into_iter().find_map(|axes| {
        let mut have = groups_over(mesh, &axes).ok()?;
        have.sort();
        (have == wanted).then(|| MeshAxes { size: wanted.first().map_or(0, Vec::len) as u64, axes })
    })
}

/// The member pairs of `pairs` (global ranks) when they are the same pairs in every group of
/// `axes`.
fn member_pairs(mesh: &Mesh, axes: &[String], pairs: &[Vec<usize>]) -> Option<Vec<(u64, u64)>> {
    let groups = groups_over(mesh, axes).ok()?;
    let mut per_group: Vec<Vec<(u64, u64)>> = vec![Vec::new(); groups.len()];
    for pair in pairs {
        let (source, target) = (*pair.first()?, *pair.get(1)?);
        let g = groups.iter().position(|g| g.contains(&source))?;
        let member = |r: usize| groups[g].iter().position(|&m| m == r).map(|i| i as u64);
        per_group[g].push((member(source)?, member(target)?));
    }
    for pairs in &mut per_group {
        pairs.sort();
    }
    let first = per_group.first()?.clone();
    per_group.iter().all(|p| *p == first).then_some(first)
}

/// `collective_permute`: its `source_target_pairs` as member pairs over the smallest group of
/// mesh axes that holds every pair and repeats the same pairs in each of its groups.
fn permute(op: &SOp, mesh: &Mesh) -> SResult<Collective> {
    let pairs = int_rows(op, "source_target_pairs", "tensor<Nx2xi64>")?;
    if pairs.iter().any(|p| p.len() != 2) {
        return fail(op, "source_target_pairs must be (source, target) rows, tensor<Nx2xi64>".into());
    }
    let names: Vec<String> = mesh.axes().iter().map(|a| a.name.clone()).collect();
    // Fewest axes first, then the mesh's own order (major to minor): a deterministic choice.
    let mut orders = axis_orders(&names);
    orders.sort_by_key(|axes| {
        let positions: Vec<usize> = axes.iter().filter_map(|a| names.iter().position(|n| n == a)).collect();
        (axes.len(), positions)
    });
    let found = orders.into_iter().find_map(|axes| {
        let members = member_pairs(mesh, &axes, &pairs)?;
        let size = mesh.group_size(&axes).ok()?;
        Some(Collective::CollectivePermute { pairs: members, group: MeshAxes { axes, size } })
    });
    // Pairs naming a member twice are left to tsr's shape rule, which the import runs on it.
    let Some(permute) = found else {
        let text: Vec<String> = pairs.iter().map(|p| format!("{p:?}")).collect();
        return fail(
            op,
            format!(
                "source_target_pairs {} are not the same member pairs in every group of any axes of the mesh {mesh}",
                text.join(", ")
            ),
        );
    };
    Ok(permute)
}

/// `replica_groups = dense<[[0, 1], [2, 3]]> : tensor<2x2xi64>` as lists of ranks.
fn replica_groups(op: &SOp) -> SResult<Vec<Vec<usize>>> {
    int_rows(op, "replica_groups", "tensor<GxSxi64>")
}

/// A 2-D integer attribute of non-negative ids (`replica_groups`, `source_target_pairs`) as rows.
fn int_rows(op: &SOp, name: &str, form: &str) -> SResult<Vec<Vec<usize>>> {
    let Some(Attr::Dense(t)) = op.attr(name) else {
        return fail(op, format!("needs {name} = dense<[[...], ...]> : {form}"));
    };
    if t.shape.len() != 2 || !t.dtype.is_int() {
        return fail(op, format!("{name} must be a 2-D integer tensor, got shape {:?}", t.shape));
    }
    let size = t.shape[1];
    let ids = t.to_i64_vec();
    let mut groups = Vec::new();
    for row in ids.chunks(size.max(1)) {
        let mut group = Vec::with_capacity(row.len());
        for &id in row {
            // XLA pads ragged groups with -1; tsr groups are all one size.
            match usize::try_from(id) {
                Ok(id) => group.push(id),
                Err(_) => return fail(op, format!("{name} holds {id}; tsr groups are all the same size")),
            }
        }
        groups.push(group);
    }
    Ok(groups)
}

fn int(op: &SOp, name: &str) -> SResult<i64> {
    match op.attr(name) {
        Some(Attr::Int(n)) => Ok(*n),
        Some(_) => fail(op, format!("attribute {name} must be an integer")),
        None => fail(op, format!("needs the attribute {name}")),
    }
}

/// The combiner of an `all_reduce`/`reduce_scatter` body: one `add` or `maximum` of the block
/// arguments.
fn reduction(op: &SOp) -> SResult<Reduction> {
    let body = op.regions.first().and_then(|r| r.ops.first());
    match body.map(|b| b.name.as_str()) {
        Some("stablehlo.add") => Ok(Reduction::Sum),
        Some("stablehlo.maximum") => Ok(Reduction::Max),
        Some(other) => fail(op, format!("the reduction body is {other}; tsr collectives reduce with add or maximum")),
        None => fail(op, "needs a reduction region".into()),
    }
}

/// The tsr collective of one StableHLO collective op over `mesh`.
pub fn collective_of(op: &SOp, mesh: Option<&Mesh>) -> SResult<Collective> {
    let Some(mesh) = mesh else {
        return fail(
            op,
            "a collective needs the mesh its replicas form: the module has no sdy.mesh and no mhlo.num_replicas".into(),
        );
    };
    if op.name == "stablehlo.collective_permute" {
        return permute(op, mesh);
    }
    let groups = replica_groups(op)?;
    let Some(group) = axes_of_groups(mesh, &groups) else {
        let text: Vec<String> = groups.iter().map(|g| format!("{g:?}")).collect();
        return fail(
            op,
            format!("replica_groups {} are not the groups of any axes of the mesh {mesh}", text.join(", ")),
        );
    };
    Ok(match op.name.as_str() {
        "stablehlo.all_reduce" => Collective::AllReduce { reduction: reduction(op)?, group },
        "stablehlo.all_gather" => Collective::AllGather { dim: int(op, "all_gather_dim")?, group },
        "stablehlo.reduce_scatter" => {
            if reduction(op)? != Reduction::Sum {
                return fail(op, "tsr's reduce_scatter sums; this one takes the maximum".into());
            }
            Collective::ReduceScatter { dim: int(op, "scatter_dimension")?, group }
        }
        "stablehlo.all_to_all" => {
            let split_count = int(op, "split_count")?;
            if split_count != group.size as i64 {
                return fail(op, format!("split_count = {split_count} but its groups have {} replicas", group.size));
            }
            Collective::AllToAll {
                split_dim: int(op, "split_dimension")?,
                concat_dim: int(op, "concat_dimension")?,
                group,
            }
        }
        other => return fail(op, format!("{other} is not a collective")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_name_the_axes_that_span_them_in_member_order() {
        let mesh = Mesh::parse("dp=2,tp=2").expect("mesh");
        let axes = |g: &[Vec<usize>]| axes_of_groups(&mesh, g).map(|a| a.axes);
        assert_eq!(axes(&[vec![0, 1], vec![2, 3]]), Some(vec!["tp".to_string()]));
        assert_eq!(axes(&[vec![2, 0], vec![3, 1]]), None, "members out of coordinate order");
        assert_eq!(axes(&[vec![1, 3], vec![0, 2]]), Some(vec!["dp".to_string()]));
        assert_eq!(axes(&[vec![0, 1, 2, 3]]), Some(vec!["dp".to_string(), "tp".to_string()]));
        assert_eq!(axes(&[vec![0, 2, 1, 3]]), Some(vec!["tp".to_string(), "dp".to_string()]));
        assert_eq!(axes(&[vec![0, 3], vec![1, 2]]), None);
    }
}
