//! Pipeline stage splitting: contiguous runs of the computed nodes (program order), one per
//! stage, that minimize the slowest stage's roofline time, found exactly by dynamic programming.
//! With layer groups ([`by_groups`], training steps) the runs are of groups instead, so every
//! micro-batch's copy of a layer, its backward and its parameters' updates share one stage.
//!
//! The roofline is a nominal accelerator (100 TFLOP/s, 2 TB/s): balancing only needs relative
//! times, so the device does not matter much; symbolic dimensions count as 1.

use super::ShardError;
use std::collections::{BTreeMap, HashMap};
use tessera_ir::graph::{Graph, NodeId, ValueId};
use tessera_ir::types::Dim;

const PEAK_FLOPS: f64 = 100e12;
const HBM_BYTES_PER_S: f64 = 2e12;

/// Roofline time of each node in seconds: the larger of its FLOP time and its memory time
/// (operands read and results written once).
pub fn node_times(g: &Graph, nodes: &[NodeId]) -> Vec<f64> {
    let shape = |v| -> Vec<u64> { g.value(v).ty.dims.iter().map(|d: &Dim| d.as_static().unwrap_or(1)).collect() };
    let bytes = |v| -> f64 {
        let ty = &g.value(v).ty;
        shape(v).iter().map(|&n| n as f64).product::<f64>() * ty.dtype.size_bytes() as f64
    };
    nodes
        .iter()
        .map(|&id| {
            let n = g.node(id);
            let ins: Vec<Vec<u64>> = n.inputs.iter().map(|&v| shape(v)).collect();
            let outs: Vec<Vec<u64>> = n.outputs.iter().map(|&v| shape(v)).collect();
            let in_refs: Vec<&[u64]> = ins.iter().map(Vec::as_slice).collect();
            let out_refs: Vec<&[u64]> = outs.iter().map(Vec::as_slice).collect();
            let flops = n.op.flops(&in_refs, &out_refs).unwrap_or(0) as f64;
            let moved: f64 = n.inputs.iter().chain(&n.outputs).map(|&v| bytes(v)).sum();
            (flops / PEAK_FLOPS).max(moved / HBM_BYTES_PER_S)
        })
        .collect()
}

/// The smallest `j` in `lo..i` minimizing `max(before[j], sum(j, i))`, with that minimum;
/// `None` when every cost is infinite. `before` is nondecreasing in `j` (more items never
/// balance better) and `sum(j, i)` nonincreasing, so the costs fall and then rise: binary
/// searches find where they cross and the first `j` of the falling side's minimum, in
/// `O(log n)` instead of a scan (the planner balances hundreds of layers per candidate).
fn best_cut(before: &[f64], sum: &impl Fn(usize, usize) -> f64, lo: usize, i: usize) -> Option<(f64, usize)> {
    // First j where the run's own sum no longer dominates.
    let first = |pred: &dyn Fn(usize) -> bool| {
        let (mut a, mut b) = (lo, i);
        while a < b {
            let mid = a + (b - a) / 2;
            if pred(mid) {
                b = mid;
            } else {
                a = mid + 1;
            }
        }
        a
    };
    let cross = first(&|j| before[j] >= sum(j, i));
    let right = (cross < i).then(|| before[cross]);
    let left = (cross > lo).then(|| sum(cross - 1, i));
    match (left, right) {
        (Some(l), r) if r.is_none_or(|r| l <= r) => {
            // The earliest start whose run sums to the same (zero-time items tie).
            let j = first(&|j| sum(j, i) <= l);
            (l < f64::INFINITY).then_some((l, j))
        }
        (_, Some(r)) => (r < f64::INFINITY).then_some((r, cross)),
        _ => None,
    }
}

/// Splits `times` into `stages` contiguous non-empty runs minimizing the largest run's sum;
/// ties go to the split whose earlier stages are lighter. Returns the stage of each item.
/// Needs `times.len() >= stages >= 1`.
pub fn balance(times: &[f64], stages: usize) -> Vec<usize> {
    let n = times.len();
    if stages <= 1 || n == 0 {
        return vec![0; n];
    }
    let prefix = prefix_sums(times);
    let sum = |a: usize, b: usize| prefix[b] - prefix[a];
    // best[k][i]: the smallest possible maximum over the first i items in k runs; cut[k][i]:
    // where the last run starts, the smallest start that reaches best[k][i].
    let mut best = vec![vec![f64::INFINITY; n + 1]; stages + 1];
    let mut cut = vec![vec![0usize; n + 1]; stages + 1];
    best[0][0] = 0.0;
    for k in 1..=stages {
        for i in k..=n {
            if let Some((cost, j)) = best_cut(&best[k - 1], &sum, k - 1, i) {
                best[k][i] = cost;
                cut[k][i] = j;
            }
        }
    }
    stages_from_cuts(&cut, n, stages)
}

/// Running sums of `times`: `prefix[i]` is the sum of the first `i` items.
fn prefix_sums(times: &[f64]) -> Vec<f64> {
    let mut prefix = vec![0.0; times.len() + 1];
    for (i, t) in times.iter().enumerate() {
        prefix[i + 1] = prefix[i] + t;
    }
    prefix
}

/// The stage of each of `n` items, read back from the last-run starts `cut[k][i]` of the
/// `stages`-run split (the traceback shared by [`balance`] and the scan it is tested against).
fn stages_from_cuts(cut: &[Vec<usize>], n: usize, stages: usize) -> Vec<usize> {
    let mut stage_of = vec![0; n];
    let mut end = n;
    for k in (1..=stages).rev() {
        let start = cut[k][end];
        for s in stage_of.iter_mut().take(end).skip(start) {
            *s = k - 1;
        }
        end = start;
    }
    stage_of
}

/// The stage of each computed node from its layer group (see
/// [`super::ShardConfig::node_groups`]): the groups present, in group order, are balanced into
/// `stages` contiguous runs by the summed time of their nodes; a node without a group takes the
/// latest stage among its operands' producers (0 when none is computed).
pub fn by_groups(
    g: &Graph,
    computed: &[NodeId],
    times: &[f64],
    groups: &[Option<usize>],
    stages: usize,
    axis: &str,
) -> Result<Vec<usize>, ShardError> {
    if groups.len() != g.num_nodes() {
        return Err(ShardError::Internal {
            stage: 0,
            message: format!("{} node groups given for a graph of {} nodes", groups.len(), g.num_nodes()),
        });
    }
    let mut group_time: BTreeMap<usize, f64> = BTreeMap::new();
    for (&id, &t) in computed.iter().zip(times) {
        if let Some(grp) = groups[id.index()] {
            *group_time.entry(grp).or_default() += t;
        }
    }
    if group_time.len() < stages {
        return Err(ShardError::TooManyStages { axis: axis.to_string(), stages, nodes: group_time.len() });
    }
    let order: Vec<usize> = group_time.keys().copied().collect();
    let stage_of_group: HashMap<usize, usize> =
        order.iter().copied().zip(balance(&group_time.values().copied().collect::<Vec<_>>(), stages)).collect();
    let mut stage_of_value: HashMap<ValueId, usize> = HashMap::new();
    let mut out = Vec::with_capacity(computed.len());
    for &id in computed {
        let n = g.node(id);
        let stage = match groups[id.index()].and_then(|grp| stage_of_group.get(&grp)) {
            Some(&s) => s,
            None => n.inputs.iter().filter_map(|v| stage_of_value.get(v)).copied().max().unwrap_or(0),
        };
        for &v in &n.outputs {
            stage_of_value.insert(v, stage);
        }
        out.push(stage);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::balance;

    #[test]
    fn balance_minimizes_the_slowest_stage() {
        assert_eq!(balance(&[1.0, 1.0, 1.0, 1.0], 2), vec![0, 0, 1, 1]);
        assert_eq!(balance(&[4.0, 1.0, 1.0, 1.0, 1.0], 2), vec![0, 1, 1, 1, 1]);
        assert_eq!(balance(&[1.0, 2.0, 3.0], 3), vec![0, 1, 2]);
        assert_eq!(balance(&[1.0, 1.0, 5.0, 1.0], 3), vec![0, 0, 1, 2]);
    }
}

/// The binary searches of [`best_cut`] against the plain scan they replace.
#[cfg(test)]
mod scan_equivalence {
    use super::{balance, prefix_sums, stages_from_cuts};
    use proptest::prelude::*;

    /// The plain scan the binary searches replace: every start, strictly better wins.
    fn balance_by_scan(times: &[f64], stages: usize) -> Vec<usize> {
        let n = times.len();
        if stages <= 1 || n == 0 {
            return vec![0; n];
        }
        let prefix = prefix_sums(times);
        let mut best = vec![vec![f64::INFINITY; n + 1]; stages + 1];
        let mut cut = vec![vec![0usize; n + 1]; stages + 1];
        best[0][0] = 0.0;
        for k in 1..=stages {
            for i in k..=n {
                for j in (k - 1)..i {
                    let cost = best[k - 1][j].max(prefix[i] - prefix[j]);
                    if cost < best[k][i] {
                        best[k][i] = cost;
                        cut[k][i] = j;
                    }
                }
            }
        }
        stages_from_cuts(&cut, n, stages)
    }

    proptest! {
        /// Same split as the scan, ties and zero-time items included.
        #[test]
        fn binary_searches_pick_the_scans_split(
            times in prop::collection::vec(prop_oneof![Just(0.0), Just(1.0), Just(2.0), 0.0f64..10.0], 1..40),
            stages in 1usize..12,
        ) {
            let stages = stages.min(times.len());
            prop_assert_eq!(balance(&times, stages), balance_by_scan(&times, stages));
        }
    }
}
