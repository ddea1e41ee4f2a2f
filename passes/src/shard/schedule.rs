//! Pipeline schedules of a partitioned training step: the order in which each stage runs its
//! micro-batches' forward and backward work (GPipe, 1F1B, Megatron's interleaved 1F1B), and the
//! reordering of a stage program into that order.
//!
//! A stage program holds every micro-batch's forward and backward for its layers (one graph);
//! the interpreter runs it in node order and frees each value after its last use. So the
//! schedule is a topological order of the program: each node belongs to a *unit* (a forward or
//! backward of one micro-batch on one model chunk), the stage runs its units in the schedule's
//! order ([`PipelineSchedule::units`]), and the nodes of no unit (weight casts, gradient sums over
//! micro-batches, the optimizer update, the loss sum) run as soon as their operands are ready, or
//! just before their first consumer when they need nothing computed.
//!
//! Invariants:
//! - reordering never changes what a node computes or the operands it adds: gradient sums over
//!   micro-batches are the step graph's own add nodes, so every schedule gives the same losses
//!   and weights as GPipe bit for bit;
//! - every unit order here is deadlock-free with buffered sends (checked by simulation in the
//!   tests): a `recv` only waits for a unit its peer runs before anything waiting on this stage;
//! - with `interleave = v`, model chunk `c` of stage `s` is virtual stage `c * pp + s`: the layer
//!   groups are balanced into `pp * v` runs and run `j` goes to stage `j % pp`.
//!
//! # Pipeline schedules
//!
//! *Pipeline schedules* (`shard::schedule`, `ShardConfig::schedule`, `tessera train --schedule
//! gpipe|1f1b --interleave V`, default 1F1B): each node of a training step has a *unit*
//! (`NodeUnits`: the micro-batch whose inputs alone reach it, forward or backward of the loss, and
//! its chunk); `PipelineSchedule::units` gives each stage's unit order (GPipe; PipeDream-flush
//! 1F1B with `min(pp-s-1, M)` warm-up forwards; Megatron's interleaved 1F1B), and
//! `reorder_stages` reorders every stage program into it: nodes of no unit (weight casts, gradient
//! sums over micro-batches, updates, the loss sum) run after their latest operand, where keys are
//! pushed across stages through `send`/`recv` (a tied weight's gradient sum goes back and forth
//! between the first and last stage), or right before their first consumer; a ready `send` runs
//! at once, a `recv` after the rest of its unit. `check_deadlock_free` then runs the stage
//! programs against each other (buffered sends) and rejects an order that could hang.
//! `runtime::spmd::peak_live_bytes` follows the interpreter's free-after-last-use rule to give
//! each program's peak of live computed bytes, what the schedule changes (`tessera train` prints it
//! per stage).
//!
//! - **A pipeline schedule only reorders.** GPipe, 1F1B and interleaved 1F1B run the same stage
//!   programs' nodes in different topological orders; every node keeps its operands, so gradient
//!   sums over micro-batches add in the same order and losses and weights are equal bit for bit
//!   across schedules (tested). Every scheduled partition has passed `check_deadlock_free`. 1F1B
//!   keeps at most `pp - s` micro-batches in flight on stage `s` (GPipe: all `M`); interleaving
//!   needs 1F1B, pp > 1, M a multiple of pp and (zoo models) pp * V dividing the layers.

use crate::cost::step::Schedule;
use std::collections::{BinaryHeap, HashMap};
use tessera_ir::graph::{Graph, NodeId};
use tessera_ir::ops::collective::Collective;
use tessera_ir::ops::Op;

/// Which half of a micro-batch's work a node belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    Forward,
    Backward,
}

/// The forward or backward of one micro-batch on one model chunk of a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Unit {
    pub phase: Phase,
    pub micro_batch: usize,
    pub chunk: usize,
}

impl std::fmt::Display for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = if self.phase == Phase::Forward { "F" } else { "B" };
        if self.chunk == 0 {
            write!(f, "{p}{}", self.micro_batch)
        } else {
            write!(f, "{p}{}.{}", self.micro_batch, self.chunk)
        }
    }
}

/// A pipeline schedule: GPipe or 1F1B, with `interleave` model chunks per stage (1F1B only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipelineSchedule {
    pub kind: Schedule,
    pub interleave: usize,
}

impl Default for PipelineSchedule {
    /// 1F1B without interleaving: what the planner prefers (GPipe's peak memory grows with the
    /// micro-batches, 1F1B's with the stages).
    fn default() -> PipelineSchedule {
        PipelineSchedule { kind: Schedule::OneFOneB, interleave: 1 }
    }
}

impl std::fmt::Display for PipelineSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.kind.name())?;
        if self.interleave > 1 {
            write!(f, " interleave={}", self.interleave)?;
        }
        Ok(())
    }
}

impl PipelineSchedule {
    /// Why this schedule cannot run `micro_batches` over `stages` pipeline stages (the
    /// planner's wording where it has one).
    pub fn check(&self, stages: usize, micro_batches: usize) -> Result<(), String> {
        let v = self.interleave;
        if v == 0 {
            return Err("interleave must be at least 1".into());
        }
        if v > 1 {
            if stages <= 1 {
                return Err(format!("interleave={v} needs pipeline parallelism (pp > 1)"));
            }
            if self.kind != Schedule::OneFOneB {
                return Err("interleaving needs the 1f1b schedule".into());
            }
            if micro_batches % stages != 0 {
                return Err(format!(
                    "interleave={v} needs the micro-batches ({micro_batches}) to be a multiple of pp ({stages})"
                ));
            }
        }
        Ok(())
    }

    /// The order in which stage `stage` of `stages` runs its units for `micro_batches`
    /// micro-batches. Needs [`PipelineSchedule::check`] to pass.
    pub fn units(&self, stage: usize, stages: usize, micro_batches: usize) -> Vec<Unit> {
        let (m, v) = (micro_batches, self.interleave.max(1));
        let unit = |phase, micro_batch, chunk| Unit { phase, micro_batch, chunk };
        match (self.kind, v) {
            (Schedule::GPipe, _) => (0..v)
                .flat_map(|c| (0..m).map(move |k| unit(Phase::Forward, k, c)))
                .chain((0..v).rev().flat_map(|c| (0..m).map(move |k| unit(Phase::Backward, k, c))))
                .collect(),
            (Schedule::OneFOneB, 1) => {
                // PipeDream-flush: warm-up forwards fill the pipeline below this stage, then
                // one forward and one backward alternate, then the cool-down backwards.
                let warmup = (stages - stage - 1).min(m);
                let mut out: Vec<Unit> = (0..warmup).map(|k| unit(Phase::Forward, k, 0)).collect();
                for i in 0..m - warmup {
                    out.push(unit(Phase::Forward, warmup + i, 0));
                    out.push(unit(Phase::Backward, i, 0));
                }
                out.extend((m - warmup..m).map(|k| unit(Phase::Backward, k, 0)));
                out
            }
            (Schedule::DeepSpeed, _) => {
                // DeepSpeed's `TrainSchedule::_step_to_micro_batch` over its `2 (m + p - 1)`
                // steps: at an even step even stages run a forward and odd stages a backward, at
                // an odd step the other way round; steps naming no micro-batch are idle.
                let (p, s) = (stages as i64, stage as i64);
                let mut out = Vec::with_capacity(2 * m);
                for step in 0..2 * (m as i64 + p - 1) {
                    let forward = step % 2 == s % 2;
                    let micro_batch = match (step % 2 == 0, forward) {
                        (true, true) => step / 2 - s / 2,
                        (false, true) => (step - 1) / 2 - s / 2,
                        (true, false) => step / 2 - p + (s + 1) / 2,
                        (false, false) => (step - 1) / 2 - p + 1 + s / 2,
                    };
                    if (0..m as i64).contains(&micro_batch) {
                        let phase = if forward { Phase::Forward } else { Phase::Backward };
                        out.push(unit(phase, micro_batch as usize, 0));
                    }
                }
                out
            }
            (Schedule::OneFOneB, _) => {
                // Megatron-LM's interleaved 1F1B (forward_backward_pipelining_with_interleaving):
                // the k-th forward of a stage is micro-batch group k / (pp v), chunk
                // (k mod pp v) / pp; backwards take the chunks in reverse.
                let p = stages;
                let total = m * v;
                let chunk = |k: usize, phase| {
                    let c = (k % (p * v)) / p;
                    if phase == Phase::Forward {
                        c
                    } else {
                        v - 1 - c
                    }
                };
                let micro = |k: usize| (k / (p * v)) * p + k % p;
                let at = |k: usize, phase| unit(phase, micro(k), chunk(k, phase));
                let warmup = if m == p { total } else { ((p - stage - 1) * 2 + (v - 1) * p).min(total) };
                let mut out: Vec<Unit> = (0..warmup).map(|k| at(k, Phase::Forward)).collect();
                for i in 0..total - warmup {
                    out.push(at(warmup + i, Phase::Forward));
                    out.push(at(i, Phase::Backward));
                }
                out.extend((total - warmup..total).map(|k| at(k, Phase::Backward)));
                out
            }
        }
    }
}

/// Reorders the stage programs (`graphs[s]` is stage `s` along the pipeline axis) so that
/// stage `s` runs its units in `orders[s]`; `unit_of[s][n]` is the unit of node `n` of stage `s`
/// (`None`: no unit). Nodes of no unit run after the latest unit among their operands'
/// producers (a `recv`'s producer being the matching `send` on its stage, in the same unit
/// there), or, needing nothing computed, right before their first consumer; anything a node
/// needs runs before it; the rest (a receive of an output) runs at the end. A ready `send` runs
/// at once (it never waits, and a peer may wait for it); a `recv` runs after everything else of
/// its unit that can run without it (it may wait for a peer that first needs this stage's
/// sends, as when the gradient of a weight two stages share is summed over micro-batches on
/// both). Then checks that the stages cannot deadlock ([`check_deadlock_free`]).
pub fn reorder_stages(graphs: &mut [Graph], unit_of: &[Vec<Option<Unit>>], orders: &[Vec<Unit>]) -> Result<(), String> {
    let stages = graphs.len();
    if unit_of.len() != stages || orders.len() != stages {
        return Err(format!("{} unit lists and {} orders for {stages} stages", unit_of.len(), orders.len()));
    }
    let infos: Vec<StageInfo> = graphs.iter().map(StageInfo::new).collect();
    let positions: Vec<HashMap<Unit, usize>> =
        orders.iter().map(|o| o.iter().enumerate().map(|(i, &u)| (u, i)).collect()).collect();
    // Where each send is: (from, to, tag) -> node on `from`.
    let mut sends: HashMap<(usize, usize, i64), usize> = HashMap::new();
    for (stage, g) in graphs.iter().enumerate() {
        for (id, node) in g.nodes() {
            if let Op::Collective(Collective::Send { peer, tag, .. }) = &node.op {
                sends.insert((stage, *peer as usize, *tag), id.index());
            }
        }
    }
    let mut keys: Vec<Vec<Option<usize>>> = (0..stages)
        .map(|s| {
            if unit_of[s].len() != graphs[s].num_nodes() {
                return Vec::new();
            }
            unit_of[s].iter().map(|u| u.map(|u| positions[s].get(&u).copied().unwrap_or(orders[s].len()))).collect()
        })
        .collect();
    if keys.iter().zip(graphs.iter()).any(|(k, g)| k.len() != g.num_nodes()) {
        return Err("a stage's unit list does not match its program".into());
    }
    // Push keys forward, through sends and receives across stages, until nothing changes (a
    // chain of sums that goes back and forth between stages takes a sweep per crossing).
    let assigned: Vec<Vec<bool>> = keys.iter().map(|k| k.iter().map(Option::is_some).collect()).collect();
    for _sweep in 0..=4 * graphs.iter().map(Graph::num_nodes).sum::<usize>() {
        let mut changed = false;
        for s in 0..stages {
            for (id, node) in graphs[s].nodes() {
                let i = id.index();
                if assigned[s][i] {
                    continue;
                }
                let key = match &node.op {
                    Op::Collective(Collective::Recv { peer, tag, .. }) => {
                        let from = *peer as usize;
                        sends.get(&(from, s, *tag)).and_then(|&j| {
                            let k = keys.get(from)?.get(j).copied().flatten()?;
                            // The sender's unit, placed in this stage's order.
                            Some(orders[from].get(k).and_then(|u| positions[s].get(u).copied()).unwrap_or(k))
                        })
                    }
                    _ => infos[s].operands[i].iter().filter_map(|&p| keys[s][p]).max(),
                };
                if key.is_some() && key != keys[s][i] {
                    keys[s][i] = key;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    for (s, g) in graphs.iter_mut().enumerate() {
        let order = schedule_one(&infos[s], std::mem::take(&mut keys[s]), orders[s].len());
        if !g.reorder_nodes(&order) {
            return Err(format!("stage {s}: the schedule is not a topological order"));
        }
    }
    let refs: Vec<&Graph> = graphs.iter().collect();
    check_deadlock_free(&refs)
}

/// A stage program's dependences and node kinds.
struct StageInfo {
    operands: Vec<Vec<usize>>,
    consumers: Vec<Vec<usize>>,
    class: Vec<u8>,
}

impl StageInfo {
    fn new(g: &Graph) -> StageInfo {
        let n = g.num_nodes();
        let mut producer: HashMap<tessera_ir::graph::ValueId, usize> = HashMap::new();
        let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut operands: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut class: Vec<u8> = Vec::with_capacity(n);
        for (id, node) in g.nodes() {
            for v in &node.inputs {
                if let Some(&p) = producer.get(v) {
                    operands[id.index()].push(p);
                    consumers[p].push(id.index());
                }
            }
            for &v in &node.outputs {
                producer.insert(v, id.index());
            }
            class.push(match node.op {
                Op::Collective(Collective::Send { .. }) => SEND,
                Op::Collective(Collective::Recv { .. }) => RECV,
                _ => OTHER,
            });
        }
        StageInfo { operands, consumers, class }
    }
}

/// One stage's node order from its pushed keys (see [`reorder_stages`]); `end` is the key
/// after every unit.
fn schedule_one(info: &StageInfo, mut key: Vec<Option<usize>>, end: usize) -> Vec<NodeId> {
    let n = key.len();
    // Backwards: nothing runs later than its earliest consumer needs it (this places nodes
    // that need nothing computed, and keeps a value shared by units in the earliest).
    for i in (0..n).rev() {
        let needed = info.consumers[i].iter().filter_map(|&c| key[c]).min();
        key[i] = match (key[i], needed) {
            (Some(k), Some(c)) => Some(k.min(c)),
            (k, c) => k.or(c),
        };
    }
    // What is still unplaced and needs something computed (a send of a pulled weight cast)
    // runs after its operands; the rest (a receive of an output) runs at the end.
    for i in 0..n {
        if key[i].is_none() && !info.operands[i].is_empty() {
            key[i] = Some(info.operands[i].iter().filter_map(|&p| key[p]).max().unwrap_or(0));
        }
    }
    // List scheduling: among the ready nodes, sends first, then the smallest key, receives
    // after the rest of their key, then program order.
    let rank = |i: usize| {
        let k = key[i].unwrap_or(end);
        let class = info.class[i];
        std::cmp::Reverse(if class == SEND { (0, 0, 0, i) } else { (1, k, usize::from(class == RECV), i) })
    };
    let mut waiting: Vec<usize> = info.operands.iter().map(Vec::len).collect();
    let mut ready: BinaryHeap<std::cmp::Reverse<(u8, usize, usize, usize)>> = BinaryHeap::new();
    for (i, &w) in waiting.iter().enumerate() {
        if w == 0 {
            ready.push(rank(i));
        }
    }
    let mut out = Vec::with_capacity(n);
    while let Some(std::cmp::Reverse((_, _, _, i))) = ready.pop() {
        out.push(NodeId(i as u32));
        for &c in &info.consumers[i] {
            waiting[c] -= 1;
            if waiting[c] == 0 {
                ready.push(rank(c));
            }
        }
    }
    out
}

const SEND: u8 = 0;
const RECV: u8 = 1;
const OTHER: u8 = 2;

/// Runs the stage programs (`programs[s]` is stage `s` along the pipeline axis) against each
/// other with buffered sends, following only their `send`/`recv`: `Err` names a stage stuck
/// in a receive when no stage can go on (a schedule that would deadlock). Every rank of a stage
/// runs the same program, so a stage stands for its ranks.
pub fn check_deadlock_free(programs: &[&Graph]) -> Result<(), String> {
    let mut next = vec![0usize; programs.len()];
    let mut in_flight: HashMap<(usize, usize, i64), usize> = HashMap::new();
    loop {
        let mut progressed = false;
        for (stage, g) in programs.iter().enumerate() {
            while next[stage] < g.num_nodes() {
                let node = g.node(NodeId(next[stage] as u32));
                match &node.op {
                    Op::Collective(Collective::Send { peer, tag, .. }) => {
                        *in_flight.entry((stage, *peer as usize, *tag)).or_default() += 1;
                    }
                    Op::Collective(Collective::Recv { peer, tag, .. }) => {
                        match in_flight.get_mut(&(*peer as usize, stage, *tag)) {
                            Some(count) if *count > 0 => *count -= 1,
                            _ => break,
                        }
                    }
                    _ => {}
                }
                next[stage] += 1;
                progressed = true;
            }
        }
        if next.iter().zip(programs).all(|(&i, g)| i == g.num_nodes()) {
            return Ok(());
        }
        if !progressed {
            let stuck: Vec<String> = next
                .iter()
                .zip(programs)
                .enumerate()
                .filter(|(_, (&i, g))| i < g.num_nodes())
                .map(|(stage, (&i, g))| {
                    let node = g.node(NodeId(i as u32));
                    let what = node.outputs.first().map_or(String::new(), |&v| format!(" %{}", g.value(v).name));
                    format!("stage {stage} waits in tsr.{}{what}", node.op.mnemonic())
                })
                .collect();
            return Err(format!("the stages would deadlock: {}", stuck.join(", ")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(units: &[Unit]) -> String {
        units.iter().map(Unit::to_string).collect::<Vec<_>>().join(" ")
    }

    /// Runs every stage's unit order with buffered sends: a unit starts when its stage reached
    /// it and the units it receives from have run. Returns the peak number of micro-batches
    /// whose forward ran but backward did not, per stage, or `None` on a deadlock.
    fn simulate(s: PipelineSchedule, p: usize, m: usize) -> Option<Vec<usize>> {
        let v = s.interleave;
        let orders: Vec<Vec<Unit>> = (0..p).map(|stage| s.units(stage, p, m)).collect();
        for o in &orders {
            // Every unit exactly once.
            assert_eq!(o.len(), 2 * m * v);
            let mut seen = std::collections::HashSet::new();
            assert!(o.iter().all(|u| seen.insert(*u)));
        }
        let mut done: std::collections::HashSet<(usize, Unit)> = Default::default();
        let mut next = vec![0; p];
        let mut in_flight = vec![0usize; p];
        let mut peak = vec![0usize; p];
        loop {
            let mut progressed = false;
            for stage in 0..p {
                let Some(&u) = orders[stage].get(next[stage]) else { continue };
                let needs = match u.phase {
                    Phase::Forward if stage > 0 => Some((stage - 1, u)),
                    Phase::Forward if u.chunk > 0 => Some((p - 1, Unit { chunk: u.chunk - 1, ..u })),
                    Phase::Forward => None,
                    Phase::Backward if stage + 1 < p => Some((stage + 1, u)),
                    Phase::Backward if u.chunk + 1 < v => Some((0, Unit { chunk: u.chunk + 1, ..u })),
                    Phase::Backward => Some((stage, Unit { phase: Phase::Forward, ..u })),
                };
                if needs.is_some_and(|d| !done.contains(&d)) {
                    continue;
                }
                // A backward needs this stage's own forward of the micro-batch and chunk.
                if u.phase == Phase::Backward && !done.contains(&(stage, Unit { phase: Phase::Forward, ..u })) {
                    return None;
                }
                done.insert((stage, u));
                next[stage] += 1;
                if u.phase == Phase::Forward {
                    in_flight[stage] += 1;
                    peak[stage] = peak[stage].max(in_flight[stage]);
                } else {
                    in_flight[stage] -= 1;
                }
                progressed = true;
            }
            if next.iter().zip(&orders).all(|(n, o)| *n == o.len()) {
                return Some(peak);
            }
            if !progressed {
                return None;
            }
        }
    }

    #[test]
    fn one_f_one_b_warms_up_then_alternates() {
        let s = PipelineSchedule::default();
        assert_eq!(names(&s.units(0, 4, 6)), "F0 F1 F2 F3 B0 F4 B1 F5 B2 B3 B4 B5");
        assert_eq!(names(&s.units(3, 4, 6)), "F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5");
        // Fewer micro-batches than stages: every forward is warm-up.
        assert_eq!(names(&s.units(0, 4, 2)), "F0 F1 B0 B1");
        let gpipe = PipelineSchedule { kind: Schedule::GPipe, interleave: 1 };
        assert_eq!(names(&gpipe.units(1, 2, 3)), "F0 F1 F2 B0 B1 B2");
    }

    #[test]
    fn deepspeed_follows_its_train_schedule() {
        // DeepSpeed's TrainSchedule with pp=2 and 3 micro-batches: stage 0 runs forwards at even
        // steps and backwards at odd ones, stage 1 the other way round.
        let s = PipelineSchedule { kind: Schedule::DeepSpeed, interleave: 1 };
        assert_eq!(names(&s.units(0, 2, 3)), "F0 F1 B0 F2 B1 B2");
        assert_eq!(names(&s.units(1, 2, 3)), "F0 B0 F1 B1 F2 B2");
        assert_eq!(names(&s.units(0, 4, 6)), "F0 F1 F2 F3 B0 F4 B1 F5 B2 B3 B4 B5");
        let peak = simulate(s, 4, 8).expect("no deadlock");
        assert_eq!(peak, [4, 3, 2, 1]);
        assert_eq!(
            PipelineSchedule { kind: Schedule::DeepSpeed, interleave: 2 }.check(2, 4).unwrap_err(),
            "interleaving needs the 1f1b schedule"
        );
    }

    #[test]
    fn interleaved_follows_megatron() {
        let s = PipelineSchedule { kind: Schedule::OneFOneB, interleave: 2 };
        // pp=2, 4 micro-batches: stage 0 warms up with (pp-1)*2 + (v-1)*pp = 4 forwards.
        assert_eq!(names(&s.units(0, 2, 4)), "F0 F1 F0.1 F1.1 F2 B0.1 F3 B1.1 F2.1 B0 F3.1 B1 B2.1 B3.1 B2 B3");
        assert_eq!(names(&s.units(1, 2, 4)), "F0 F1 F0.1 B0.1 F1.1 B1.1 F2 B0 F3 B1 F2.1 B2.1 F3.1 B3.1 B2 B3");
    }

    #[test]
    fn invalid_combinations_say_why() {
        let il = |kind| PipelineSchedule { kind, interleave: 2 };
        assert_eq!(il(Schedule::GPipe).check(2, 4).unwrap_err(), "interleaving needs the 1f1b schedule");
        assert_eq!(il(Schedule::OneFOneB).check(1, 4).unwrap_err(), "interleave=2 needs pipeline parallelism (pp > 1)");
        assert!(il(Schedule::OneFOneB).check(4, 6).unwrap_err().contains("multiple of pp (4)"));
        assert!(il(Schedule::OneFOneB).check(4, 8).is_ok());
    }

    #[test]
    fn one_f_one_b_keeps_at_most_pp_micro_batches_in_flight() {
        let peak = simulate(PipelineSchedule::default(), 4, 8).expect("no deadlock");
        assert_eq!(peak, [4, 3, 2, 1]);
        let gpipe = simulate(PipelineSchedule { kind: Schedule::GPipe, interleave: 1 }, 4, 8).expect("no deadlock");
        assert_eq!(gpipe, [8, 8, 8, 8]);
    }

    /// Two stages that each receive before they send wait on each other forever; sending
    /// first on either side resolves it.
    #[test]
    fn crossed_receives_are_reported_as_a_deadlock() {
        use tessera_ir::dtype::DType;
        use tessera_ir::types::TensorType;
        let stage = |name: &str, peer: i64, send_first: bool| {
            let mut g = Graph::new(name);
            let ty = TensorType::of_static(DType::F32, &[2]);
            let x = g.add_input("x", ty.clone(), tessera_ir::graph::InputRole::Activation);
            let send = |g: &mut Graph| {
                let op = Op::Collective(Collective::Send { mesh_axis: "pp".into(), peer, tag: 1 - peer });
                g.add_node_unchecked(op, vec![x], vec![]);
            };
            if send_first {
                send(&mut g);
            }
            let op = Op::Collective(Collective::Recv { mesh_axis: "pp".into(), peer, tag: peer, ty: ty.clone() });
            g.add_node_unchecked(op, vec![], vec![(format!("from{peer}"), ty)]);
            if !send_first {
                send(&mut g);
            }
            g
        };
        let err = check_deadlock_free(&[&stage("s0", 1, false), &stage("s1", 0, false)]).expect_err("deadlock");
        assert_eq!(
            err,
            "the stages would deadlock: stage 0 waits in tsr.recv %from1, stage 1 waits in tsr.recv %from0"
        );
        assert_eq!(check_deadlock_free(&[&stage("s0", 1, true), &stage("s1", 0, false)]), Ok(()));
    }

    /// A step's forward nodes of micro-batch k, its backward nodes of k, and the shared work
    /// (casts, gradient sums, updates, the loss sum) are told apart.
    #[test]
    fn units_of_a_train_step() {
        use crate::train_step::{build, Optimizer, TrainStepConfig};
        use tessera_ir::dtype::DType;
        use tessera_ir::graph::InputRole;
        use tessera_ir::types::TensorType;
        let mut f = Graph::new("linear");
        let x = f.add_input("x", TensorType::of_static(DType::F32, &[2, 3, 4]), InputRole::Activation);
        let w = f.add_input("w", TensorType::of_static(DType::F32, &[4, 5]), InputRole::Parameter);
        let y = f.add(Op::MatMul, &[x, w]).expect("matmul");
        f.set_outputs(vec![y]);
        let sgd = tessera_ir::ops::optim::Sgd { lr: 0.1, momentum: 0.0, weight_decay: 0.0 };
        let cfg = TrainStepConfig { optimizer: Optimizer::Sgd(sgd), micro_batches: 2, master: DType::F32 };
        let step = build(&f, &cfg).expect("step");
        let units = crate::shard::NodeUnits::of_train_step(&step);
        assert_eq!(units.micro_batches, 2);
        let g = &step.graph;
        let of = |pred: &dyn Fn(&Op) -> bool| -> Vec<Option<(usize, Phase)>> {
            g.nodes().filter(|(_, n)| pred(&n.op)).map(|(id, _)| units.of_node[id.index()]).collect()
        };
        // The two forward matmuls, then each micro-batch's backward matmul for `w`'s gradient.
        let matmuls = of(&|op| *op == Op::MatMul);
        assert!(matmuls.starts_with(&[Some((0, Phase::Forward)), Some((1, Phase::Forward))]), "{matmuls:?}");
        for k in 0..2 {
            assert!(matmuls[2..].contains(&Some((k, Phase::Backward))), "{matmuls:?}");
        }
        assert_eq!(of(&|op| *op == Op::CrossEntropy), [Some((0, Phase::Forward)), Some((1, Phase::Forward))]);
        assert_eq!(of(&|op| matches!(op, Op::Sgd(_))), [None]);
    }

    proptest! {
        /// Every schedule runs to completion with buffered sends, whatever pp, v and M.
        #[test]
        fn schedules_never_deadlock(p in 1usize..6, v in 1usize..4, groups in 1usize..4, kind in 0usize..3) {
            let kind = [Schedule::GPipe, Schedule::OneFOneB, Schedule::DeepSpeed][kind];
            let s = PipelineSchedule { kind, interleave: v };
            let m = groups * p;
            prop_assume!(s.check(p, m).is_ok());
            prop_assert!(simulate(s, p, m).is_some());
            if v == 1 {
                // Any M, not only multiples of pp.
                prop_assert!(simulate(s, p, m + 1).is_some());
            }
        }
    }
}
