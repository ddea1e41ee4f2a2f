//! The auto-parallel planner: the fastest configuration that fits in memory, found by
//! exhaustive search, with the runners-up and why they lost.
//!
//! The space is every combination of data, tensor, pipeline and expert parallelism over the
//! cluster's devices (`dp * tp * pp = gpus`, each a divisor; `tp` dividing the heads, `ep`
//! the experts and `dp`), micro-batch size (divisors of the per-replica batch), interleaved
//! chunks (divisors of the layers per stage, with Megatron's condition that the micro-batches
//! fill whole rounds), sequence parallelism, recomputation (none, selective, full) and ZeRO
//! stage 0 to 3. Every candidate is priced by [`crate::cost::step::estimate`], which reuses
//! one profile per distinct block and shape: a model's repeated layers are costed once, so a
//! search of ~10^5 configurations of a 1T-parameter model takes seconds. `--fix` narrows the
//! space; a fixed knob that cannot work is an error naming it.
//!
//! A workload cut into stage programs (any graph: [`crate::cost::workload::GraphWorkload`]) has
//! no interleaving and no sequence parallelism; its `tp` and `pp` candidates are priced from the
//! programs the `shard` pass emits for them.
//!
//! # The cost model and the search
//!
//! `cost` prices one block kernel by kernel on a roofline
//! with shape-dependent efficiency, collectives by alpha-beta on the link they cross, pipeline
//! schedules (GPipe, 1F1B, interleaved) with bubbles and overlap, and memory per GPU (weights,
//! gradients and optimizer state by ZeRO stage, activations by recompute policy and sequence
//! parallelism, KV cache). `planner` searches data/tensor/pipeline/expert/sequence parallelism,
//! micro-batch, interleaving, recompute and ZeRO exhaustively, costing each distinct block shape
//! once (`ProfileCache`), and explains the alternatives. Any graph (`cost::workload::GraphWorkload`,
//! what `tessera plan FILE` uses) is planned over the same space minus sequence parallelism and
//! interleaving: for each `tp` and `pp` the `shard` pass partitions it over the mesh `tp=T,pp=P`,
//! and each stage program is one block, priced with its local types (weights, gradients and
//! optimizer state come from its local parameter inputs), its explicit collectives over `tp`
//! by alpha-beta on the link class they cross, and its `send`/`recv` bytes between stages; the
//! step model adds the schedule's bubble, data parallelism and ZeRO. `passes` does not depend on `frontend`:
//! the root package's library (`tessera::workload`) adapts zoo blocks and cluster specs to the
//! cost model's `Workload` and `Cluster`, for the CLI and the end-to-end tests alike.
//!
//! # Invariant
//!
//! - **A graph's plan prices the programs the shard pass emits.** A stage program's collectives
//!   are link costs, never kernels; they must name the `tp` axis (the only one inside a stage
//!   program the planner builds) or profiling fails; the model FLOPs of a graph are the whole
//!   graph's, not the sum of the local programs'.

pub mod energy;
pub mod fixed;
pub mod html;
pub mod report;
pub mod run;
pub mod serve;

use crate::cost::step::{
    estimate, Estimate, GradAccumulation, Job, Mode, Parallelism, Recompute, Schedule, TimeBreakdown,
};
use crate::cost::workload::{ProfileCache, Workload};
use crate::cost::CostError;
use energy::{ClockPlanner, EnergyPlan, EnergyRequest, Objective};
use fixed::Fixed;
use serde::Serialize;
use std::collections::HashMap;
use tessera_ir::hardware::ClusterSpec;

/// What to plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Request {
    pub job: Job,
    pub fixed: Fixed,
    /// How many runners-up to explain.
    pub alternatives: usize,
}

/// Why planning failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// A `--fix` knob that cannot work; names the knob.
    #[error("--fix {knob}: {message}")]
    BadFix { knob: String, message: String },
    /// Nothing fits in memory; the smallest footprint any configuration reaches.
    #[error(
        "{model} does not fit on {cluster}{scope}: the smallest configuration needs {:.1} GB per GPU \
         ({}), the device has {:.1} GB",
        .min_memory_bytes / 1e9, .config, .device_memory_bytes / 1e9
    )]
    Infeasible {
        model: String,
        cluster: String,
        /// ` under the fixed knobs` when `--fix` narrowed the search.
        scope: String,
        min_memory_bytes: f64,
        device_memory_bytes: f64,
        config: String,
    },
    /// No configuration satisfies the divisibility rules (batch, layers, heads, GPUs).
    #[error("no parallel configuration of {model} on {gpus} GPUs: {reason}")]
    NoCandidates { model: String, gpus: u64, reason: String },
    /// A numeric input outside the planner's documented limits ([`LIMITS`]), refused before
    /// the search so that a huge value answers at once instead of searching for minutes.
    #[error("{what} = {value} is out of range: the planner accepts 1 to {limit}")]
    OutOfRange { what: &'static str, value: u64, limit: u64 },
    /// An objective, power cap or price the planner cannot work with.
    #[error(transparent)]
    Energy(#[from] energy::EnergyError),
    #[error(transparent)]
    Cost(#[from] CostError),
}

impl PlanError {
    /// True for a model that does not fit (the CLI exits with status 2).
    pub fn is_infeasible(&self) -> bool {
        matches!(self, PlanError::Infeasible { .. })
    }

    /// True for a request the planner refuses as asked (a model that fits nowhere, a `--fix`
    /// that cannot work, no configuration at all, a number out of range): the README's exit
    /// status 2. A failure to price the model ([`PlanError::Cost`]) is bad input, status 1.
    pub fn is_unsatisfiable(&self) -> bool {
        !matches!(self, PlanError::Cost(_))
    }
}

/// The planner's limits on its numeric inputs, `(what, limit)`, checked before the search:
/// the search enumerates divisors of the GPU count and of the per-replica batch, and
/// interleaving divides the layers, so unbounded values take minutes and gigabytes. Each
/// limit is far above any real job (16M sequences or tokens, a million GPUs, 1024 layers).
///
/// Why the layer limit stays (issue 17; numbers in BENCHMARKS.md, "Planner search cost and the
/// layer limit"): the search space barely grows with the layers and the block profiles not at
/// all, but the work per configuration does. Without per-stage programs,
/// [`crate::cost::step::estimate`] expands the workload's run-length layer list into one entry
/// per layer, weighs each and assigns each to its pipeline chunk: O(layers) for every one of the
/// tens of thousands of configurations. And the chunks come from the shard pass's exact
/// balancer ([`crate::shard::stages::balance`]), a dynamic program over `pp * v` chunks and the
/// layers with a binary search per cell, O(pp·v · layers · log layers) per distinct block
/// shape and chunk count (cached, but chunk counts reach the layer count). Planning a uniform
/// stack in time independent of its depth means balancing runs of identical layers in closed
/// form and pricing stages per run, not per layer; the exact balancer is kept because its
/// tie-breaking decides the chosen plans (the planner's baselines are byte-for-byte), so that
/// replacement needs a proof that it cuts where the dynamic program does.
pub const LIMITS: [(&str, u64); 4] = [
    ("--global-batch", 1 << 24),
    ("the sequence length", 1 << 24),
    ("the cluster's gpus", 1 << 20),
    ("the model's layers", 1024),
];

/// Refuses any numeric input outside [`LIMITS`] (zero included).
fn check_limits(workload: &dyn Workload, cluster: &ClusterSpec, job: &Job) -> Result<(), PlanError> {
    let values = [job.global_batch, job.seq, cluster.gpus, workload.layers()];
    for ((what, limit), value) in LIMITS.into_iter().zip(values) {
        if value == 0 || value > limit {
            return Err(PlanError::OutOfRange { what, value, limit });
        }
    }
    Ok(())
}

/// A runner-up.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alternative {
    pub parallelism: Parallelism,
    pub step_time_s: f64,
    pub memory_per_gpu_bytes: f64,
    pub fits: bool,
    pub why: String,
}

/// How large the search was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SearchStats {
    /// Configurations enumerated (all evaluated: the search is exhaustive).
    pub space: u64,
    /// Configurations that fit in memory.
    pub feasible: u64,
    /// Distinct block profiles built (graphs built and priced).
    pub profiles: usize,
}

/// Bytes one device sends per step over each link class, with the links' names.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LinkTraffic {
    pub intra_node: f64,
    pub inter_node: f64,
    pub intra_node_link: String,
    pub inter_node_link: String,
}

/// The chosen configuration and its prediction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub model: String,
    pub cluster: String,
    pub device: String,
    pub gpus: u64,
    pub mode: Mode,
    pub global_batch: u64,
    pub seq: u64,
    pub parameters: u64,
    pub step_time_s: f64,
    pub tokens_per_s: f64,
    /// Model FLOPs only (no recomputation), per GPU.
    pub model_tflops_per_gpu: f64,
    /// What the devices execute, recomputation included.
    pub hardware_tflops_per_gpu: f64,
    /// Model FLOPs utilization of the device's bf16 peak.
    pub mfu: f64,
    pub memory_per_gpu_bytes: f64,
    pub device_memory_bytes: f64,
    pub parallelism: Parallelism,
    pub comm_bytes_per_step: LinkTraffic,
    pub bubble_fraction: f64,
    pub energy_per_step_j: f64,
    pub estimate: Estimate,
    pub alternatives: Vec<Alternative>,
    pub search: SearchStats,
    /// The whole run's cost ([`run::run_cost`]), when the request gives its tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<run::RunCost>,
    /// Per-stage clocks and the time–energy frontier ([`energy`]), when the request names an
    /// objective or a power cap. `energy_per_step_j` and `step_time_s` are then the chosen
    /// point's; without it they are at the highest clock with every device as busy as the
    /// slowest stage (the flat estimate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub energy: Option<EnergyPlan>,
}

/// Points of the time–energy frontier a plan lists.
pub const FRONTIER_POINTS: usize = 12;

/// Divisors of `n`, ascending.
pub fn divisors(n: u64) -> Vec<u64> {
    let mut small = Vec::new();
    let mut large = Vec::new();
    let mut d = 1;
    // `d <= n / d` rather than `d * d <= n`, which overflows for n near 2^64.
    while d <= n / d {
        if n % d == 0 {
            small.push(d);
            if d * d != n {
                large.push(n / d);
            }
        }
        d += 1;
    }
    small.extend(large.into_iter().rev());
    small
}

fn bad(knob: &str, message: String) -> PlanError {
    PlanError::BadFix { knob: knob.to_string(), message }
}

/// Checks the fixed knobs on their own and against each other, so a bad one gets an error
/// naming it instead of an empty search.
fn check_fixed(workload: &dyn Workload, cluster: &ClusterSpec, job: &Job, f: &Fixed) -> Result<(), PlanError> {
    let gpus = cluster.gpus;
    let layers = workload.layers();
    if let Some(tp) = f.tp {
        if gpus % tp != 0 {
            return Err(bad("tp", format!("tp={tp} does not divide the {gpus} GPUs")));
        }
        workload.check_tp(tp).map_err(|e| bad("tp", e.message))?;
    }
    let programs = workload.stage_programs(1).is_some();
    if let Some(pp) = f.pp {
        workload.check_pp(pp).map_err(|e| bad("pp", e.message))?;
        if gpus % pp != 0 {
            return Err(bad("pp", format!("pp={pp} does not divide the {gpus} GPUs")));
        }
        if let Some(tp) = f.tp {
            if gpus % (tp * pp) != 0 {
                return Err(bad("pp", format!("tp * pp = {} does not divide the {gpus} GPUs", tp * pp)));
            }
        }
    }
    if let Some(dp) = f.dp {
        if gpus % dp != 0 {
            return Err(bad("dp", format!("dp={dp} does not divide the {gpus} GPUs")));
        }
        if job.global_batch % dp != 0 {
            return Err(bad("dp", format!("dp={dp} does not divide the global batch {}", job.global_batch)));
        }
        if let (Some(tp), Some(pp)) = (f.tp, f.pp) {
            if tp * pp * dp != gpus {
                return Err(bad("dp", format!("dp * tp * pp = {} but the cluster has {gpus} GPUs", dp * tp * pp)));
            }
        }
    }
    if let Some(ep) = f.ep {
        workload.check_ep(ep).map_err(|e| bad("ep", e.message))?;
        if let Some(dp) = f.dp {
            if dp % ep != 0 {
                return Err(bad(
                    "ep",
                    format!("ep={ep} must divide dp={dp} (experts are spread over data-parallel ranks)"),
                ));
            }
        }
    }
    if let (Some(mb), Some(size)) = (f.micro_batch, workload.fixed_micro_batch()) {
        if mb != size {
            return Err(bad("micro_batch", format!("the model's batch is static: {size} per micro-batch")));
        }
    }
    if let Some(mb) = f.micro_batch {
        if job.global_batch % mb != 0 {
            return Err(bad("micro_batch", format!("{mb} does not divide the global batch {}", job.global_batch)));
        }
        if let Some(dp) = f.dp {
            if (job.global_batch / dp) % mb != 0 {
                let message = format!("{mb} does not divide the per-replica batch {}", job.global_batch / dp);
                return Err(bad("micro_batch", message));
            }
        }
    }
    if let Some(v) = f.interleave {
        if v > 1 {
            if job.mode == Mode::Serve {
                return Err(bad("interleave", "interleaving is a training schedule".into()));
            }
            if programs {
                let message =
                    "interleaving needs a model of repeated layers (a graph is cut into one program per stage)";
                return Err(bad("interleave", message.into()));
            }
            if f.pp == Some(1) {
                return Err(bad("interleave", format!("interleave={v} needs pipeline parallelism (pp > 1)")));
            }
            if let Some(pp) = f.pp {
                if layers % (pp * v) != 0 {
                    return Err(bad(
                        "interleave",
                        format!("pp * interleave = {} does not divide the {layers} layers", pp * v),
                    ));
                }
            }
            if matches!(f.schedule, Some(Schedule::GPipe | Schedule::DeepSpeed)) {
                return Err(bad("interleave", "interleaving needs the 1f1b schedule".into()));
            }
        }
    }
    if f.grad_accumulation == Some(GradAccumulation::Bf16Optimizer) && f.schedule != Some(Schedule::DeepSpeed) {
        return Err(bad("grad_accumulation", "DeepSpeed's BF16_Optimizer needs schedule=deepspeed".into()));
    }
    if f.sp == Some(true) && f.tp == Some(1) {
        return Err(bad("sp", "sequence parallelism needs tp > 1".into()));
    }
    if f.sp == Some(true) && !workload.sequence_parallel() {
        return Err(bad(
            "sp",
            "sequence parallelism needs a zoo transformer (the shard pass does not split sequences)".into(),
        ));
    }
    if job.mode == Mode::Serve {
        if f.recompute.is_some_and(|r| r != Recompute::None) {
            return Err(bad("recompute", "serving stores no activations to recompute".into()));
        }
        if f.zero.is_some_and(|z| z > 0) {
            return Err(bad("zero", "serving has no optimizer state to shard".into()));
        }
    }
    Ok(())
}

/// Keeps `value` if the knob is not fixed or fixed to it.
fn allowed<T: PartialEq>(fixed: Option<T>, value: &T) -> bool {
    fixed.as_ref().is_none_or(|f| f == value)
}

/// Every configuration the search visits.
fn candidates(
    workload: &dyn Workload,
    cluster: &ClusterSpec,
    job: &Job,
    f: &Fixed,
) -> Result<Vec<Parallelism>, PlanError> {
    let gpus = cluster.gpus;
    let layers = workload.layers();
    let train = job.mode == Mode::Train;
    let mut out = Vec::new();
    let mut reasons: Vec<String> = Vec::new();
    // Layouts a model file's static batch rules out: the more telling reason when all fail.
    let mut static_reasons: Vec<String> = Vec::new();
    for tp in divisors(gpus) {
        if !allowed(f.tp, &tp) || tp > workload.max_tp() || workload.check_tp(tp).is_err() {
            continue;
        }
        for pp in divisors(gpus / tp) {
            if !allowed(f.pp, &pp) || workload.check_pp(pp).is_err() {
                continue;
            }
            let dp = gpus / (tp * pp);
            if !allowed(f.dp, &dp) {
                continue;
            }
            if job.global_batch % dp != 0 {
                reasons
                    .push(format!("dp={dp} (tp={tp}, pp={pp}) does not divide the global batch {}", job.global_batch));
                continue;
            }
            let eps: Vec<u64> = if workload.experts() > 0 {
                divisors(dp).into_iter().filter(|&ep| workload.check_ep(ep).is_ok()).collect()
            } else {
                vec![1]
            };
            for ep in eps.into_iter().filter(|ep| allowed(f.ep, ep)) {
                let static_mb = workload.fixed_micro_batch();
                if let Some(size) = static_mb.filter(|size| (job.global_batch / dp) % size != 0) {
                    static_reasons.push(format!(
                        "the model's batch is static ({size} per micro-batch) and does not divide the {} sequences \
                         of dp={dp}",
                        job.global_batch / dp
                    ));
                }
                let mbs = divisors(job.global_batch / dp).into_iter().filter(|mb| allowed(f.micro_batch, mb));
                for mb in mbs.filter(|mb| allowed(static_mb, mb)) {
                    let m = job.global_batch / (dp * mb);
                    let vs: Vec<u64> = if !train || pp == 1 || workload.stage_programs(pp).is_some() {
                        vec![1]
                    } else {
                        divisors(layers / pp)
                            .into_iter()
                            .filter(|&v| v == 1 || (layers % (pp * v) == 0 && m % pp == 0))
                            .collect()
                    };
                    let sps: &[bool] =
                        if tp > 1 && train && workload.sequence_parallel() { &[false, true] } else { &[false] };
                    let recomputes: &[Recompute] = if train { &Recompute::ALL } else { &[Recompute::None] };
                    let zeros: &[u8] = if train && dp > 1 { &[0, 1, 2, 3] } else { &[0] };
                    let schedules: &[Schedule] = match f.schedule {
                        Some(Schedule::GPipe) => &[Schedule::GPipe],
                        Some(Schedule::DeepSpeed) => &[Schedule::DeepSpeed],
                        _ => &[Schedule::OneFOneB],
                    };
                    for v in vs.into_iter().filter(|v| allowed(f.interleave, v)) {
                        if v > 1 && schedules != [Schedule::OneFOneB] {
                            continue;
                        }
                        for &sp in sps.iter().filter(|sp| allowed(f.sp, *sp)) {
                            for &recompute in recomputes.iter().filter(|r| allowed(f.recompute, *r)) {
                                for &zero in zeros.iter().filter(|z| allowed(f.zero, *z)) {
                                    for &schedule in schedules {
                                        out.push(Parallelism {
                                            dp,
                                            tp,
                                            pp,
                                            ep,
                                            sp,
                                            micro_batch: mb,
                                            interleave: v,
                                            recompute,
                                            zero,
                                            schedule,
                                            grad_accumulation: f.grad_accumulation.unwrap_or_default(),
                                            layer_partition: f.layer_partition.unwrap_or_default(),
                                        });
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    if out.is_empty() {
        let reason = match static_reasons.first().or(reasons.first()) {
            Some(r) => r.clone(),
            None => "the fixed knobs leave no combination (check dp * tp * pp = gpus, micro_batch, interleave)".into(),
        };
        return Err(PlanError::NoCandidates { model: workload.name().to_string(), gpus, reason });
    }
    Ok(out)
}

/// `dp=8 tp=8 pp=8 ...` for messages.
pub fn describe(p: &Parallelism) -> String {
    format!(
        "dp={} tp={} pp={} ep={} sp={} micro_batch={} interleave={} recompute={} zero={} schedule={}",
        p.dp,
        p.tp,
        p.pp,
        p.ep,
        if p.sp { "on" } else { "off" },
        p.micro_batch,
        p.interleave,
        p.recompute.name(),
        p.zero,
        p.schedule.name()
    ) + &framework_knobs_suffix(p)
}

/// ` grad_accumulation=...` and ` layer_partition=...` for whichever is not its default (fused,
/// by time), else nothing.
pub fn framework_knobs_suffix(p: &Parallelism) -> String {
    let mut suffix = String::new();
    if !p.grad_accumulation.is_fused() {
        suffix += &format!(" grad_accumulation={}", p.grad_accumulation.name());
    }
    if !p.layer_partition.is_time() {
        suffix += &format!(" layer_partition={}", p.layer_partition.name());
    }
    suffix
}

#[derive(Debug, Clone, Copy)]
struct Scored {
    par: Parallelism,
    step: f64,
    memory: f64,
    time: TimeBreakdown,
    /// What the objective ranks by (the step time when it is time at full clocks).
    score: f64,
}

/// Why `alt` lost to `best`: the largest contributions to the difference.
/// `stage_programs`: the workload is cut into one program per stage (any graph), not into
/// runs of layers.
fn why(best: &Scored, alt: &Scored, device_memory: f64, gpus_per_node: u64, stage_programs: bool) -> String {
    if alt.memory > device_memory {
        let faster = if alt.step < best.step {
            format!(" (it would be {:.1}% faster)", 100.0 * (1.0 - alt.step / best.step))
        } else {
            String::new()
        };
        return format!(
            "needs {:.1} GB per GPU, more than the {:.1} GB available{faster}",
            alt.memory / 1e9,
            device_memory / 1e9
        );
    }
    let (a, b) = (&alt.time, &best.time);
    let mut deltas = [
        ("compute", a.compute_s - b.compute_s),
        ("recomputation", a.recompute_s - b.recompute_s),
        ("tensor-parallel communication", a.tp_comm_s - b.tp_comm_s),
        ("expert all-to-all", a.ep_comm_s - b.ep_comm_s),
        ("pipeline transfers", a.pp_comm_s - b.pp_comm_s),
        ("pipeline bubble", a.bubble_s - b.bubble_s),
        ("data-parallel sync", a.dp_comm_exposed_s - b.dp_comm_exposed_s),
        ("optimizer step", a.optimizer_s - b.optimizer_s),
    ];
    deltas.sort_by(|x, y| y.1.total_cmp(&x.1));
    let p = &alt.par;
    let context = |cause: &str| match cause {
        "tensor-parallel communication" if p.tp > gpus_per_node => format!(" (tp={} spans nodes)", p.tp),
        "tensor-parallel communication" => format!(" (tp={})", p.tp),
        "pipeline bubble" => format!(" (pp={}, {} chunk(s) per stage)", p.pp, p.interleave),
        "recomputation" => format!(" (recompute={})", p.recompute.name()),
        "compute" if (p.tp, p.micro_batch) != (best.par.tp, best.par.micro_batch) => {
            format!(" (tp={}, micro_batch={})", p.tp, p.micro_batch)
        }
        "compute" if stage_programs => format!(" (the slowest of {} stage programs)", p.pp),
        "compute" => format!(" (the slowest of {} stages holds more layers or the head)", p.pp),
        "data-parallel sync" => format!(" (dp={}, zero={})", p.dp, p.zero),
        _ => String::new(),
    };
    let causes: Vec<String> = deltas
        .iter()
        .filter(|(_, d)| *d > 0.05 * (alt.step - best.step).abs().max(1e-12))
        .take(2)
        .map(|(cause, d)| format!("+{} {cause}{}", report::seconds(*d), context(cause)))
        .collect();
    let slower = 100.0 * (alt.step / best.step - 1.0);
    if causes.is_empty() {
        format!("{slower:+.1}% step time")
    } else {
        format!("{slower:+.1}% step time: {}", causes.join(", "))
    }
}

/// Gives the runners-up the score of their planned clocks (the search may have kept only a
/// lower bound), best first.
fn rescore(
    runners: &mut [Scored],
    cache: &mut ProfileCache,
    cluster: &ClusterSpec,
    job: &Job,
    request: &EnergyRequest,
    ratios: &[f64],
) -> Result<(), PlanError> {
    for runner in runners.iter_mut() {
        let e = estimate(cache, cluster, job, &runner.par)?;
        let score = energy::scorer(request, cluster.gpus as f64, e.tokens);
        let point = ClockPlanner::new(&e.pipeline, &cluster.device, ratios.to_vec())
            .best(&score, request.objective == Objective::Time);
        runner.score = score(point.step_time_s, point.energy_j);
    }
    runners.sort_by(|a, b| a.score.total_cmp(&b.score).then_with(|| describe(&a.par).cmp(&describe(&b.par))));
    Ok(())
}

/// Why `alt` lost under an energy or cost objective: its score against the plan's.
fn why_by_objective(best: &Scored, alt: &Scored, objective: Objective) -> String {
    let worse = 100.0 * (alt.score / best.score - 1.0);
    let slower = 100.0 * (alt.step / best.step - 1.0);
    let what = match objective {
        Objective::Time => "step time",
        Objective::Energy => "energy per token",
        Objective::Cost => "dollars per token",
    };
    format!("{worse:+.1}% {what} at its best clocks ({slower:+.1}% step time at full clocks)")
}

/// Searches for the fastest configuration of `workload` on `cluster` that fits in memory.
/// `progress(done, total)` is called every few thousand candidates.
pub fn plan(
    workload: &dyn Workload,
    cluster: &ClusterSpec,
    request: &Request,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Plan, PlanError> {
    plan_with_energy(workload, cluster, request, None, progress)
}

/// [`plan`] ranked by `energy`'s objective under its power cap (every feasible configuration's
/// clocks planned), with the chosen plan's clocks and frontier in [`Plan::energy`].
pub fn plan_with_energy(
    workload: &dyn Workload,
    cluster: &ClusterSpec,
    request: &Request,
    energy: Option<&EnergyRequest>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Plan, PlanError> {
    let ratios = match energy {
        Some(e) => energy::allowed_ratios(&cluster.device, e.power_cap_w)?,
        None => Vec::new(),
    };
    let search_energy = energy.filter(|e| e.changes_the_search());
    let job = request.job;
    let f = request.fixed;
    check_limits(workload, cluster, &job)?;
    check_fixed(workload, cluster, &job, &f)?;
    let all = candidates(workload, cluster, &job, &f)?;
    let total = all.len() as u64;
    let mut cache = ProfileCache::new(workload, &cluster.device);
    let device_memory = cluster.device.memory_bytes();
    let mut best: Option<Scored> = None;
    let mut smallest: Option<Scored> = None;
    // The fastest feasible configuration of each (dp, tp, pp, ep) layout, for alternatives,
    // and the fastest configurations that do not fit.
    let mut by_layout: HashMap<(u64, u64, u64, u64), Scored> = HashMap::new();
    let mut too_big: Vec<Scored> = Vec::new();
    let mut feasible = 0u64;
    for (i, par) in all.iter().enumerate() {
        if i % 4096 == 0 {
            progress(i as u64, total);
        }
        let e = estimate(&mut cache, cluster, &job, par)?;
        let mut scored =
            Scored { par: *par, step: e.step_time_s, memory: e.memory.total, time: e.time, score: e.step_time_s };
        if smallest.is_none_or(|s| scored.memory < s.memory) {
            smallest = Some(scored);
        }
        if scored.memory > device_memory {
            too_big.push(scored);
            if too_big.len() > 64 {
                too_big.sort_by(|a, b| a.step.total_cmp(&b.step));
                too_big.truncate(8);
            }
            continue;
        }
        feasible += 1;
        if let Some(request) = search_energy {
            let score = energy::scorer(request, cluster.gpus as f64, e.tokens);
            let bound = energy::lower_bound(&e.pipeline, &cluster.device, &ratios, &score);
            // A configuration whose bound cannot beat the best so far keeps the bound as its
            // score: it loses either way, and its clocks need no planning.
            scored.score = bound;
            if best.is_none_or(|b| bound < b.score) {
                let planner = ClockPlanner::new(&e.pipeline, &cluster.device, ratios.clone());
                let point = planner.best(&score, request.objective == Objective::Time);
                scored.score = score(point.step_time_s, point.energy_j);
            }
        }
        if best.is_none_or(|b| scored.score < b.score) {
            best = Some(scored);
        }
        let key = (par.dp, par.tp, par.pp, par.ep);
        if by_layout.get(&key).is_none_or(|b| scored.score < b.score) {
            by_layout.insert(key, scored);
        }
    }
    progress(total, total);
    let Some(best) = best else {
        let s = smallest.expect("the candidate list is not empty");
        let narrowed = f != Fixed::default();
        return Err(PlanError::Infeasible {
            model: workload.name().to_string(),
            cluster: cluster.name.clone(),
            scope: if narrowed { " under the fixed knobs".to_string() } else { String::new() },
            min_memory_bytes: s.memory,
            device_memory_bytes: device_memory,
            config: describe(&s.par),
        });
    };

    let mut runners: Vec<Scored> = by_layout
        .values()
        .filter(|s| (s.par.dp, s.par.tp, s.par.pp, s.par.ep) != (best.par.dp, best.par.tp, best.par.pp, best.par.ep))
        .copied()
        .collect();
    runners.sort_by(|a, b| a.score.total_cmp(&b.score).then_with(|| describe(&a.par).cmp(&describe(&b.par))));
    runners.truncate(request.alternatives);
    if let Some(request) = search_energy {
        rescore(&mut runners, &mut cache, cluster, &job, request, &ratios)?;
    }
    too_big.sort_by(|a, b| a.step.total_cmp(&b.step));
    // The fastest layouts that would beat the plan if memory allowed, one per layout.
    let mut faster_but_too_big: Vec<Scored> = Vec::new();
    for s in too_big.iter().filter(|s| s.step < best.step) {
        let layout = |x: &Scored| (x.par.dp, x.par.tp, x.par.pp, x.par.ep);
        if faster_but_too_big.len() < 2.min(request.alternatives)
            && !faster_but_too_big.iter().any(|t| layout(t) == layout(s))
        {
            faster_but_too_big.push(*s);
        }
    }
    let alternatives = runners
        .iter()
        .chain(faster_but_too_big.iter())
        .map(|alt| Alternative {
            parallelism: alt.par,
            step_time_s: alt.step,
            memory_per_gpu_bytes: alt.memory,
            fits: alt.memory <= device_memory,
            why: match search_energy {
                Some(request) if alt.memory <= device_memory => why_by_objective(&best, alt, request.objective),
                _ => why(&best, alt, device_memory, cluster.gpus_per_node, workload.stage_programs(1).is_some()),
            },
        })
        .collect();

    let e = estimate(&mut cache, cluster, &job, &best.par)?;
    let gpus = cluster.gpus as f64;
    let peak = cluster.device.peak_flops(tessera_ir::dtype::DType::BF16);
    let energy_plan = energy.map(|request| {
        EnergyPlan::new(&e.pipeline, &cluster.device, ratios.clone(), request, gpus, e.tokens, FRONTIER_POINTS)
    });
    let (step_time_s, energy_per_step_j) = match &energy_plan {
        Some(p) => (p.chosen.step_time_s, p.chosen.energy_j),
        None => (e.step_time_s, e.energy_j),
    };
    Ok(Plan {
        model: workload.name().to_string(),
        cluster: cluster.name.clone(),
        device: cluster.device.name.clone(),
        gpus: cluster.gpus,
        mode: job.mode,
        global_batch: job.global_batch,
        seq: job.seq,
        parameters: workload.parameters(),
        step_time_s,
        tokens_per_s: e.tokens / step_time_s,
        model_tflops_per_gpu: e.model_flops / step_time_s / gpus / 1e12,
        hardware_tflops_per_gpu: e.hardware_flops / step_time_s / gpus / 1e12,
        mfu: e.model_flops / step_time_s / gpus / peak,
        memory_per_gpu_bytes: e.memory.total,
        device_memory_bytes: device_memory,
        parallelism: best.par,
        comm_bytes_per_step: LinkTraffic {
            intra_node: e.comm_bytes.intra_node,
            inter_node: e.comm_bytes.inter_node,
            intra_node_link: cluster.intra_node.name.clone(),
            inter_node_link: cluster.inter_node.name.clone(),
        },
        bubble_fraction: e.bubble_fraction,
        energy_per_step_j,
        estimate: e,
        alternatives,
        search: SearchStats { space: total, feasible, profiles: cache.len() },
        run: None,
        energy: energy_plan,
    })
}
