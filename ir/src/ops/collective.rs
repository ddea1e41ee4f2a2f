//! Collective communication ops, which the sharding passes insert into per-rank programs:
//! `tsr.all_reduce`, `tsr.all_gather`, `tsr.reduce_scatter`, `tsr.all_to_all`, `tsr.all_slice`,
//! `tsr.collective_permute`, `tsr.send` and `tsr.recv`.
//!
//! Every rank runs its own program, so types are *local* (the block one rank holds). The group
//! of a collective is the set of ranks that differ from the executing rank only on `mesh_axes`
//! (a comma-separated list of mesh axis names, major to minor); members are ordered by their
//! coordinates on those axes ([`crate::sharding::Mesh::group`]). `group_size` repeats the
//! product of those axes' sizes so the shape rule needs no mesh.
//!
//! Semantics, with `x_i` the operand of group member `i` and `G` the group size:
//! - `all_reduce {reduction = "sum"|"max"}`: every member gets `x_0 + ... + x_{G-1}` (summed in
//!   `f64` in member order and rounded once), or the elementwise maximum.
//! - `all_gather {dim}`: every member gets `concat(x_0, ..., x_{G-1}, dim)`.
//! - `reduce_scatter {dim}`: member `i` gets block `i` (of `G` along `dim`) of the sum.
//! - `all_to_all {split_dim, concat_dim}`: member `j` gets `concat_i(block_j(x_i, split_dim), concat_dim)`.
//! - `all_slice {dim}`: member `i` keeps block `i` of its own operand along `dim` (no data moves;
//!   it turns a replicated value into a sharded one, like MLIR `shard.all_slice`).
//! - `collective_permute {sources, targets}` (two equally long lists of member indices): member
//!   `targets[k]` gets `x_{sources[k]}`, a member no pair targets gets zeros (StableHLO's
//!   `collective_permute`, JAX's `ppermute`). No member is a source twice or a target twice.
//! - `send {mesh_axis, peer, tag}` sends its operand to the rank whose coordinate on
//!   `mesh_axis` is `peer` (others equal) and has no result; `recv {mesh_axis, peer, tag}`
//!   receives the message with the same tag from that rank; its result type says what arrives.
//!   They join pipeline stages.
//!
//! A single rank cannot evaluate these, so [`Op::eval`](super::Op::eval) returns an error naming
//! the op; [`eval_group`] gives the group semantics the multi-rank executor uses.

use super::{expect_arity, ShapeResult};
use crate::sharding::PartialKind;
use crate::tensor::Tensor;
use crate::types::{normalize_axis, Dim, TensorType};

/// The ranks a collective spans: mesh axes (major to minor) and the product of their sizes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct MeshAxes {
    pub axes: Vec<String>,
    pub size: u64,
}

impl MeshAxes {
    /// The attribute text: `dp,tp`.
    pub fn joined(&self) -> String {
        self.axes.join(",")
    }

    /// Parses the `mesh_axes` attribute and checks `group_size` is positive.
    pub fn from_attrs(text: &str, size: i64) -> Result<MeshAxes, String> {
        let axes: Vec<String> = text.split(',').map(|a| a.trim().to_string()).collect();
        if axes.iter().any(|a| a.is_empty() || !a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')) {
            return Err(format!("mesh_axes must be comma-separated axis names, got \"{text}\""));
        }
        let size =
            u64::try_from(size).ok().filter(|&s| s > 0).ok_or(format!("group_size must be positive, got {size}"))?;
        Ok(MeshAxes { axes, size })
    }
}

/// How `all_reduce` combines values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reduction {
    Sum,
    Max,
}

impl Reduction {
    pub fn name(self) -> &'static str {
        match self {
            Reduction::Sum => "sum",
            Reduction::Max => "max",
        }
    }

    pub fn from_name(s: &str) -> Option<Reduction> {
        match s {
            "sum" => Some(Reduction::Sum),
            "max" => Some(Reduction::Max),
            _ => None,
        }
    }

    pub fn of_partial(kind: PartialKind) -> Reduction {
        match kind {
            PartialKind::Sum => Reduction::Sum,
            PartialKind::Max => Reduction::Max,
        }
    }
}

/// One collective op.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Collective {
    AllReduce {
        reduction: Reduction,
        group: MeshAxes,
    },
    AllGather {
        dim: i64,
        group: MeshAxes,
    },
    ReduceScatter {
        dim: i64,
        group: MeshAxes,
    },
    AllToAll {
        split_dim: i64,
        concat_dim: i64,
        group: MeshAxes,
    },
    AllSlice {
        dim: i64,
        group: MeshAxes,
    },
    /// `(source, target)` member pairs.
    CollectivePermute {
        pairs: Vec<(u64, u64)>,
        group: MeshAxes,
    },
    Send {
        mesh_axis: String,
        peer: i64,
        tag: i64,
    },
    /// The result type is what arrives.
    Recv {
        mesh_axis: String,
        peer: i64,
        tag: i64,
        ty: TensorType,
    },
}

/// Every mnemonic of the family.
pub const MNEMONICS: &[&str] =
    &["all_reduce", "all_gather", "reduce_scatter", "all_to_all", "all_slice", "collective_permute", "send", "recv"];

impl Collective {
    /// Operand and result counts of the collective named `mnemonic`; `None` for other ops.
    pub fn signature(mnemonic: &str) -> Option<(usize, usize)> {
        match mnemonic {
            "send" => Some((1, 0)),
            "recv" => Some((0, 1)),
            _ if MNEMONICS.contains(&mnemonic) => Some((1, 1)),
            _ => None,
        }
    }

    pub fn mnemonic(&self) -> &'static str {
        match self {
            Collective::AllReduce { .. } => "all_reduce",
            Collective::AllGather { .. } => "all_gather",
            Collective::ReduceScatter { .. } => "reduce_scatter",
            Collective::AllToAll { .. } => "all_to_all",
            Collective::AllSlice { .. } => "all_slice",
            Collective::CollectivePermute { .. } => "collective_permute",
            Collective::Send { .. } => "send",
            Collective::Recv { .. } => "recv",
        }
    }

    /// The group, for the ops that have one (not `send`/`recv`).
    pub fn group(&self) -> Option<&MeshAxes> {
        match self {
            Collective::AllReduce { group, .. }
            | Collective::AllGather { group, .. }
            | Collective::ReduceScatter { group, .. }
            | Collective::AllToAll { group, .. }
            | Collective::AllSlice { group, .. }
            | Collective::CollectivePermute { group, .. } => Some(group),
            Collective::Send { .. } | Collective::Recv { .. } => None,
        }
    }

    pub fn num_results(&self) -> usize {
        match self {
            Collective::Send { .. } => 0,
            _ => 1,
        }
    }

    /// The attributes as printed, unsorted (the caller sorts).
    pub fn attrs(&self) -> Vec<(&'static str, super::attr::Attr)> {
        use super::attr::Attr;
        let group_attrs =
            |g: &MeshAxes| vec![("group_size", Attr::Int(g.size as i64)), ("mesh_axes", Attr::Str(g.joined()))];
        let p2p = |axis: &str, peer: i64, tag: i64| {
            vec![("mesh_axis", Attr::Str(axis.to_string())), ("peer", Attr::Int(peer)), ("tag", Attr::Int(tag))]
        };
        match self {
            Collective::AllReduce { reduction, group } => {
                let mut a = group_attrs(group);
                a.push(("reduction", Attr::Str(reduction.name().to_string())));
                a
            }
            Collective::AllGather { dim, group }
            | Collective::ReduceScatter { dim, group }
            | Collective::AllSlice { dim, group } => {
                let mut a = group_attrs(group);
                a.push(("dim", Attr::Int(*dim)));
                a
            }
            Collective::AllToAll { split_dim, concat_dim, group } => {
                let mut a = group_attrs(group);
                a.push(("split_dim", Attr::Int(*split_dim)));
                a.push(("concat_dim", Attr::Int(*concat_dim)));
                a
            }
            Collective::CollectivePermute { pairs, group } => {
                let mut a = group_attrs(group);
                a.push(("sources", Attr::Ints(pairs.iter().map(|p| p.0 as i64).collect())));
                a.push(("targets", Attr::Ints(pairs.iter().map(|p| p.1 as i64).collect())));
                a
            }
            Collective::Send { mesh_axis, peer, tag } | Collective::Recv { mesh_axis, peer, tag, .. } => {
                p2p(mesh_axis, *peer, *tag)
            }
        }
    }

    /// Builds the op from its mnemonic, attributes and result types; `None` for a mnemonic
    /// outside the family.
    pub fn from_parts(
        mnemonic: &str,
        attrs: &mut super::attr::AttrMap,
        results: &[TensorType],
    ) -> Option<Result<Collective, String>> {
        if !MNEMONICS.contains(&mnemonic) {
            return None;
        }
        let mut build = || -> Result<Collective, String> {
            let mut group = || -> Result<MeshAxes, String> {
                let text = attrs.string("mesh_axes")?;
                let size = attrs.int("group_size")?;
                MeshAxes::from_attrs(&text, size)
            };
            Ok(match mnemonic {
                "all_reduce" => {
                    let group = group()?;
                    let text = attrs.string("reduction")?;
                    let reduction = Reduction::from_name(&text)
                        .ok_or_else(|| format!("unknown all_reduce reduction '{text}' (expected sum or max)"))?;
                    Collective::AllReduce { reduction, group }
                }
                "all_gather" => Collective::AllGather { group: group()?, dim: attrs.int("dim")? },
                "reduce_scatter" => Collective::ReduceScatter { group: group()?, dim: attrs.int("dim")? },
                "all_slice" => Collective::AllSlice { group: group()?, dim: attrs.int("dim")? },
                "all_to_all" => Collective::AllToAll {
                    group: group()?,
                    split_dim: attrs.int("split_dim")?,
                    concat_dim: attrs.int("concat_dim")?,
                },
                "collective_permute" => {
                    let group = group()?;
                    let (sources, targets) = (attrs.ints("sources")?, attrs.ints("targets")?);
                    if sources.len() != targets.len() {
                        return Err(format!(
                            "collective_permute has {} sources but {} targets",
                            sources.len(),
                            targets.len()
                        ));
                    }
                    let member =
                        |m: i64| u64::try_from(m).map_err(|_| format!("collective_permute member {m} is negative"));
                    let pairs = sources
                        .iter()
                        .zip(&targets)
                        .map(|(&s, &t)| Ok((member(s)?, member(t)?)))
                        .collect::<Result<Vec<_>, String>>()?;
                    Collective::CollectivePermute { pairs, group }
                }
                _ => {
                    let mesh_axis = attrs.string("mesh_axis")?;
                    let (peer, tag) = (attrs.int("peer")?, attrs.int("tag")?);
                    if peer < 0 {
                        return Err(format!("peer must be a coordinate (>= 0), got {peer}"));
                    }
                    if mnemonic == "send" {
                        Collective::Send { mesh_axis, peer, tag }
                    } else {
                        let ty = match results {
                            [t] => t.clone(),
                            _ => return Err(format!("'recv' has exactly one result, got {}", results.len())),
                        };
                        Collective::Recv { mesh_axis, peer, tag, ty }
                    }
                }
            })
        };
        Some(build())
    }

    /// The shape rule, on local types.
    pub fn infer(&self, inputs: &[&TensorType]) -> ShapeResult {
        if let Collective::Recv { ty, .. } = self {
            expect_arity(inputs, 0)?;
            return Ok(vec![ty.clone()]);
        }
        expect_arity(inputs, 1)?;
        let x = inputs[0];
        let dim_of = |d: i64| normalize_axis(d, x.rank()).ok_or_else(|| format!("dim {d} is out of range for {x}"));
        let static_of = |d: usize| match &x.dims[d] {
            Dim::Static(n) => Ok(*n),
            Dim::Symbolic(s) => Err(format!("dimension {d} of {x} is symbolic ('{s}'); collectives need it static")),
        };
        let with_dim = |d: usize, n: u64| {
            let mut dims = x.dims.clone();
            dims[d] = Dim::Static(n);
            TensorType::new(x.dtype, dims)
        };
        let split = |d: usize, g: u64| -> Result<u64, String> {
            let n = static_of(d)?;
            if n % g != 0 {
                return Err(format!("dimension {d} of {x} ({n}) is not divisible by the group size {g}"));
            }
            Ok(n / g)
        };
        let times = |d: usize, g: u64| -> Result<u64, String> {
            static_of(d)?.checked_mul(g).ok_or_else(|| format!("dimension {d} of {x} overflows when gathered"))
        };
        match self {
            Collective::AllReduce { reduction, .. } => {
                if !x.dtype.is_float() && !x.dtype.is_int() {
                    return Err(format!("all_reduce {} is not defined on {}", reduction.name(), x.dtype));
                }
                Ok(vec![x.clone()])
            }
            Collective::AllGather { dim, group } => {
                let d = dim_of(*dim)?;
                Ok(vec![with_dim(d, times(d, group.size)?)])
            }
            Collective::ReduceScatter { dim, group } => {
                if !x.dtype.is_float() && !x.dtype.is_int() {
                    return Err(format!("reduce_scatter is not defined on {}", x.dtype));
                }
                let d = dim_of(*dim)?;
                Ok(vec![with_dim(d, split(d, group.size)?)])
            }
            Collective::AllSlice { dim, group } => {
                let d = dim_of(*dim)?;
                Ok(vec![with_dim(d, split(d, group.size)?)])
            }
            Collective::CollectivePermute { pairs, group } => {
                check_pairs(pairs, group.size)?;
                Ok(vec![x.clone()])
            }
            Collective::AllToAll { split_dim, concat_dim, group } => {
                let (s, c) = (dim_of(*split_dim)?, dim_of(*concat_dim)?);
                if s == c {
                    return Err(format!("split_dim and concat_dim are both {s}"));
                }
                let mut dims = x.dims.clone();
                dims[s] = Dim::Static(split(s, group.size)?);
                dims[c] = Dim::Static(times(c, group.size)?);
                Ok(vec![TensorType::new(x.dtype, dims)])
            }
            Collective::Send { .. } => Ok(vec![]),
            Collective::Recv { .. } => unreachable_recv(),
        }
    }

    /// Why a single rank cannot evaluate the op.
    pub fn eval_error(&self) -> String {
        format!(
            "tsr.{} needs a communicator: run the per-rank programs with the multi-rank executor \
             (tessera_runtime::spmd), not the single-device interpreter",
            self.mnemonic()
        )
    }
}

/// Every member of a permutation's pairs is in the group, none a source or a target twice.
fn check_pairs(pairs: &[(u64, u64)], size: u64) -> Result<(), String> {
    for (k, &(source, target)) in pairs.iter().enumerate() {
        if let Some(m) = [source, target].into_iter().find(|&m| m >= size) {
            return Err(format!("collective_permute pair ({source}, {target}) names member {m} of a group of {size}"));
        }
        if pairs[..k].iter().any(|p| p.0 == source) {
            return Err(format!("collective_permute sends member {source}'s operand twice"));
        }
        if pairs[..k].iter().any(|p| p.1 == target) {
            return Err(format!("collective_permute sends member {target} two operands"));
        }
    }
    Ok(())
}

// `Recv` returns before the match; this keeps the match exhaustive without a panic.
fn unreachable_recv() -> ShapeResult {
    Err("recv has no operand".into())
}

/// The result member `member` of a group computes, given every member's operand in group order
/// (`operands[i]` from member `i`; `all_slice` reads only its own). `result` is the local result
/// type from the shape rule. Not defined for `send`/`recv`, which move data without computing.
pub fn eval_group(op: &Collective, operands: &[&Tensor], member: usize, result: &TensorType) -> Result<Tensor, String> {
    let own =
        operands.get(member).ok_or_else(|| format!("member {member} is outside a group of {}", operands.len()))?;
    let out_shape: Vec<usize> =
        result.static_shape().ok_or("result type is not static")?.iter().map(|&n| n as usize).collect();
    for (i, t) in operands.iter().enumerate() {
        if t.shape != own.shape || t.dtype != own.dtype {
            return Err(format!(
                "group member {i} contributes {} but member {member} has {}",
                t.tensor_type(),
                own.tensor_type()
            ));
        }
    }
    let rank = own.shape.len();
    let dim = |d: i64| normalize_axis(d, rank).ok_or_else(|| format!("dim {d} is out of range for rank {rank}"));
    let g = operands.len();
    match op {
        Collective::AllReduce { reduction, .. } => Ok(reduce(operands, *reduction)),
        Collective::AllGather { dim: d, .. } => concat(operands, dim(*d)?),
        Collective::ReduceScatter { dim: d, .. } => {
            let sum = reduce(operands, Reduction::Sum);
            block(&sum, dim(*d)?, g, member)
        }
        Collective::AllSlice { dim: d, .. } => block(own, dim(*d)?, g, member),
        Collective::CollectivePermute { pairs, .. } => {
            check_pairs(pairs, g as u64)?;
            match pairs.iter().find(|p| p.1 as usize == member) {
                Some(&(source, _)) => Ok(operands[source as usize].clone()),
                None => Ok(Tensor::zeros(own.dtype, own.shape.clone())),
            }
        }
        Collective::AllToAll { split_dim, concat_dim, .. } => {
            let (s, c) = (dim(*split_dim)?, dim(*concat_dim)?);
            let blocks = operands.iter().map(|t| block(t, s, g, member)).collect::<Result<Vec<_>, _>>()?;
            let refs: Vec<&Tensor> = blocks.iter().collect();
            concat(&refs, c)
        }
        Collective::Send { .. } | Collective::Recv { .. } => {
            Err(format!("tsr.{} moves data between two ranks; it has no group semantics", op.mnemonic()))
        }
    }
    .and_then(|t| {
        if t.shape == out_shape {
            Ok(t)
        } else {
            Err(format!("tsr.{} computed shape {:?} but the shape rule gives {result}", op.mnemonic(), t.shape))
        }
    })
}

/// Elementwise sum (in `f64`, member order, rounded once; integers wrap) or maximum.
fn reduce(operands: &[&Tensor], reduction: Reduction) -> Tensor {
    let first = operands[0];
    if first.dtype.is_float() {
        let mut acc = first.to_f64_vec();
        for t in &operands[1..] {
            for (a, v) in acc.iter_mut().zip(t.to_f64_vec()) {
                *a = match reduction {
                    Reduction::Sum => *a + v,
                    // NaN propagates, as in `tsr.max`.
                    Reduction::Max if a.is_nan() || v.is_nan() => f64::NAN,
                    Reduction::Max => a.max(v),
                };
            }
        }
        Tensor::from_f64(first.dtype, first.shape.clone(), acc)
    } else {
        let mut acc = first.to_i64_vec();
        for t in &operands[1..] {
            for (a, v) in acc.iter_mut().zip(t.to_i64_vec()) {
                *a = match reduction {
                    Reduction::Sum => a.wrapping_add(v),
                    Reduction::Max => (*a).max(v),
                };
            }
        }
        Tensor::from_i64(first.dtype, first.shape.clone(), acc)
    }
}

/// `concat(operands, d)`.
fn concat(operands: &[&Tensor], d: usize) -> Result<Tensor, String> {
    let mut shape = operands[0].shape.clone();
    shape[d] = operands.iter().map(|t| t.shape[d]).sum();
    super::layout::eval_concat(operands, d as i64, &shape)
}

/// Block `i` of `n` equal blocks of `t` along `d`.
pub fn block(t: &Tensor, d: usize, n: usize, i: usize) -> Result<Tensor, String> {
    let extent = t.shape[d];
    if n == 0 || extent % n != 0 {
        return Err(format!("dimension {d} of shape {:?} does not split into {n} equal blocks", t.shape));
    }
    let len = extent / n;
    let mut starts = vec![0i64; t.shape.len()];
    let mut ends: Vec<i64> = t.shape.iter().map(|&s| s as i64).collect();
    starts[d] = (i * len) as i64;
    ends[d] = ((i + 1) * len) as i64;
    let mut shape = t.shape.clone();
    shape[d] = len;
    super::layout::eval_slice(t, &starts, &ends, &vec![1; t.shape.len()], &shape)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::f32s;
    use super::super::Op;
    use super::*;
    use crate::dtype::DType;

    fn group(axes: &str, size: u64) -> MeshAxes {
        MeshAxes { axes: axes.split(',').map(String::from).collect(), size }
    }

    #[test]
    fn shape_rules_work_on_local_types() {
        let x = TensorType::of_static(DType::F32, &[4, 6]);
        let infer =
            |c: Collective| Op::Collective(c).infer(&[&x]).map(|t| t.iter().map(|t| t.to_string()).collect::<Vec<_>>());
        assert_eq!(infer(Collective::AllGather { dim: 1, group: group("tp", 2) }), Ok(vec!["tensor<4x12xf32>".into()]));
        assert_eq!(
            infer(Collective::ReduceScatter { dim: 0, group: group("tp", 4) }),
            Ok(vec!["tensor<1x6xf32>".into()])
        );
        let a2a = Collective::AllToAll { split_dim: 1, concat_dim: 0, group: group("dp,tp", 3) };
        assert_eq!(infer(a2a), Ok(vec!["tensor<12x2xf32>".into()]));
        let err = infer(Collective::AllSlice { dim: 0, group: group("tp", 3) }).expect_err("uneven");
        assert_eq!(err, "dimension 0 of tensor<4x6xf32> (4) is not divisible by the group size 3");
        assert_eq!(infer(Collective::Send { mesh_axis: "pp".into(), peer: 1, tag: 0 }), Ok(vec![]));
    }

    #[test]
    fn single_rank_eval_asks_for_a_communicator() {
        let x = f32s(&[2], &[1.0, 2.0]);
        let op = Op::Collective(Collective::AllReduce { reduction: Reduction::Sum, group: group("tp", 2) });
        let err = op.eval(&[&x], &[x.tensor_type()]).expect_err("no communicator");
        assert!(err.starts_with("tsr.all_reduce needs a communicator"), "{err}");
    }

    #[test]
    fn group_semantics() {
        let a = f32s(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let b = f32s(&[2, 2], &[10.0, 20.0, 30.0, 40.0]);
        let ty = |s: &[u64]| TensorType::of_static(DType::F32, s);
        let sum = Collective::AllReduce { reduction: Reduction::Sum, group: group("tp", 2) };
        assert_eq!(eval_group(&sum, &[&a, &b], 1, &ty(&[2, 2])).expect("sum").to_f64_vec(), [11.0, 22.0, 33.0, 44.0]);
        let max = Collective::AllReduce { reduction: Reduction::Max, group: group("tp", 2) };
        assert_eq!(eval_group(&max, &[&b, &a], 0, &ty(&[2, 2])).expect("max").to_f64_vec(), [10.0, 20.0, 30.0, 40.0]);
        let gather = Collective::AllGather { dim: 1, group: group("tp", 2) };
        let g = eval_group(&gather, &[&a, &b], 0, &ty(&[2, 4])).expect("gather");
        assert_eq!(g.to_f64_vec(), [1.0, 2.0, 10.0, 20.0, 3.0, 4.0, 30.0, 40.0]);
        let rs = Collective::ReduceScatter { dim: 0, group: group("tp", 2) };
        assert_eq!(eval_group(&rs, &[&a, &b], 1, &ty(&[1, 2])).expect("rs").to_f64_vec(), [33.0, 44.0]);
        let a2a = Collective::AllToAll { split_dim: 0, concat_dim: 1, group: group("tp", 2) };
        // Member 1 gets row 1 of each member, side by side.
        assert_eq!(eval_group(&a2a, &[&a, &b], 1, &ty(&[1, 4])).expect("a2a").to_f64_vec(), [3.0, 4.0, 30.0, 40.0]);
        let slice = Collective::AllSlice { dim: 1, group: group("tp", 2) };
        assert_eq!(eval_group(&slice, &[&a, &b], 1, &ty(&[2, 1])).expect("slice").to_f64_vec(), [20.0, 40.0]);
        // Member 0 sends to 1; nothing is sent to 0, which gets zeros.
        let shift = Collective::CollectivePermute { pairs: vec![(0, 1)], group: group("tp", 2) };
        assert_eq!(eval_group(&shift, &[&a, &b], 1, &ty(&[2, 2])).expect("to 1").to_f64_vec(), [1.0, 2.0, 3.0, 4.0]);
        assert_eq!(eval_group(&shift, &[&a, &b], 0, &ty(&[2, 2])).expect("to 0").to_f64_vec(), [0.0; 4]);
    }

    #[test]
    fn permutations_name_each_member_once_as_source_and_as_target() {
        let x = TensorType::of_static(DType::F32, &[2]);
        let infer =
            |pairs: Vec<(u64, u64)>| Collective::CollectivePermute { pairs, group: group("tp", 2) }.infer(&[&x]);
        assert_eq!(infer(vec![(0, 1), (1, 0)]).expect("a swap"), vec![x.clone()]);
        assert!(infer(vec![(0, 2)]).expect_err("outside").contains("names member 2 of a group of 2"));
        assert!(infer(vec![(0, 1), (0, 0)]).expect_err("twice").contains("member 0's operand twice"));
        assert!(infer(vec![(0, 1), (1, 1)]).expect_err("two").contains("sends member 1 two operands"));
    }

    #[test]
    fn text_form_round_trips() {
        let text = crate::testing::COLLECTIVES_TEXT;
        let g = crate::mlir::parse_verified(text).expect("parses and verifies");
        assert_eq!(crate::mlir::print_graph(&g), text);
        let bad = text.replace("\"max\"", "\"avg\"").replace("reduction = \"sum\"", "reduction = \"avg\"");
        let err = crate::mlir::parse_verified(&bad).expect_err("bad reduction").to_string();
        assert!(err.contains("unknown all_reduce reduction 'avg'"), "{err}");
    }
}
