//! Collective insertion: the sequence of collectives that turns a value of one sharding into
//! the same value of another, on every rank alike.
//!
//! In order: a partial value is reduced (`reduce_scatter` when the target splits a whole
//! dimension over exactly the partial axes, else `all_reduce`); an axis that moves from one
//! dimension to another that is whole is moved with one `all_to_all`; then every dimension
//! whose axes differ is gathered (`all_gather`) down to the longest common major prefix of its
//! axes, and split (`all_slice`, no communication) by the target's remaining minor axes.
//! Gathers come before slices, so an axis is free before it is reused.

use tessera_ir::ops::collective::{Collective, MeshAxes, Reduction};
use tessera_ir::ops::Op;
use tessera_ir::sharding::{Mesh, PartialKind, Sharding};

/// One collective of a reshard and the sharding after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub op: Op,
    pub after: Sharding,
}

fn group(mesh: &Mesh, axes: &[String]) -> Result<MeshAxes, String> {
    Ok(MeshAxes { axes: axes.to_vec(), size: mesh.group_size(axes)? })
}

/// The collectives from `from` to `to` (`to` must not be partial). Empty when they agree.
pub fn plan(mesh: &Mesh, from: &Sharding, to: &Sharding) -> Result<Vec<Step>, String> {
    if to.partial.is_some() {
        return Err(format!("cannot reshard to a partial sharding ({to})"));
    }
    if from.dims.len() != to.dims.len() {
        return Err(format!("shardings {from} and {to} have different ranks"));
    }
    let mut cur = from.clone();
    let mut steps = Vec::new();
    let mut push = |op: Op, cur: &Sharding| steps.push(Step { op, after: cur.clone() });
    if let Some(partial) = cur.partial.take() {
        let scatter_dim = (partial.kind == PartialKind::Sum)
            .then(|| (0..cur.dims.len()).find(|&d| cur.dims[d].is_empty() && to.dims[d] == partial.axes))
            .flatten();
        match scatter_dim {
            Some(d) => {
                cur.dims[d] = partial.axes.clone();
                let op = Collective::ReduceScatter { dim: d as i64, group: group(mesh, &partial.axes)? };
                push(Op::Collective(op), &cur);
            }
            None => {
                let op = Collective::AllReduce {
                    reduction: Reduction::of_partial(partial.kind),
                    group: group(mesh, &partial.axes)?,
                };
                push(Op::Collective(op), &cur);
            }
        }
    }
    // Moves of a whole axis list from dimension `a` to a whole dimension `b`.
    for a in 0..cur.dims.len() {
        if cur.dims[a].is_empty() || cur.dims[a] == to.dims[a] || !to.dims[a].is_empty() {
            continue;
        }
        let target = (0..cur.dims.len()).find(|&b| b != a && cur.dims[b].is_empty() && to.dims[b] == cur.dims[a]);
        if let Some(b) = target {
            let axes = std::mem::take(&mut cur.dims[a]);
            let op = Collective::AllToAll { split_dim: b as i64, concat_dim: a as i64, group: group(mesh, &axes)? };
            cur.dims[b] = axes;
            push(Op::Collective(op), &cur);
        }
    }
    for d in 0..cur.dims.len() {
        if cur.dims[d] == to.dims[d] {
            continue;
        }
        let common = cur.dims[d].iter().zip(&to.dims[d]).take_while(|(x, y)| x == y).count();
        if common < cur.dims[d].len() {
            let gathered = cur.dims[d].split_off(common);
            let op = Collective::AllGather { dim: d as i64, group: group(mesh, &gathered)? };
            push(Op::Collective(op), &cur);
        }
    }
    for d in 0..cur.dims.len() {
        if cur.dims[d] == to.dims[d] {
            continue;
        }
        let extra = to.dims[d][cur.dims[d].len()..].to_vec();
        cur.dims[d].extend(extra.iter().cloned());
        let op = Collective::AllSlice { dim: d as i64, group: group(mesh, &extra)? };
        push(Op::Collective(op), &cur);
    }
    if cur != *to {
        return Err(format!("resharding {from} to {to} ended at {cur}"));
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(mesh: &str, from: &str, to: &str) -> Vec<String> {
        let mesh = Mesh::parse(mesh).expect("mesh");
        let from = Sharding::parse(from).expect("from");
        let to = Sharding::parse(to).expect("to");
        let steps = plan(&mesh, &from, &to).expect("plan");
        steps
            .iter()
            .map(|s| {
                let attrs: Vec<String> = s.op.attrs().iter().map(|(k, v)| format!("{k}={v:?}")).collect();
                format!("{} {} -> {}", s.op.mnemonic(), attrs.join(" "), s.after)
            })
            .collect()
    }

    #[test]
    fn partial_sums_reduce_or_scatter() {
        let steps = names("dp=2,tp=2", "[{}, {}] partial_sum{tp}", "[{}, {}]");
        assert_eq!(steps.len(), 1);
        assert!(steps[0].starts_with("all_reduce"), "{steps:?}");
        let steps = names("dp=2,tp=2", "[{}, {}] partial_sum{tp}", "[{tp}, {}]");
        assert!(steps[0].starts_with("reduce_scatter") && steps[0].ends_with("-> [{tp}, {}]"), "{steps:?}");
    }

    #[test]
    fn axes_move_gather_and_slice() {
        let steps = names("dp=2,tp=2", "[{tp}, {}]", "[{}, {tp}]");
        assert_eq!(steps.len(), 1);
        assert!(steps[0].starts_with("all_to_all"), "{steps:?}");
        let steps = names("dp=2,tp=2", "[{dp, tp}, {}]", "[{dp}, {tp}]");
        assert_eq!(steps.len(), 2, "{steps:?}");
        assert!(steps[0].starts_with("all_gather") && steps[0].ends_with("-> [{dp}, {}]"), "{steps:?}");
        assert!(steps[1].starts_with("all_slice") && steps[1].ends_with("-> [{dp}, {tp}]"), "{steps:?}");
        assert!(names("dp=2", "[{dp}]", "[{dp}]").is_empty());
    }
}
