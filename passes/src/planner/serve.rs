//! Serving plans: prefill and decode priced separately on the cost model's block profiles,
//! KV-cache capacity, continuous batching, colocated against disaggregated prefill/decode, and
//! the goodput per GPU under a latency target (TTFT, TPOT), with the throughput–latency
//! frontier over batch size.
//!
//! Phases. Prefill of `b` prompts of `I` tokens is one forward pass of the model at shape
//! `(batch b, seq I)`; a decode step of `b` sequences at context `c` is one forward pass of one
//! token each reading `c` cached tokens. A phase on `tp` ranks and `pp` stages takes every
//! block's kernel time, its tensor-parallel collectives (each with
//! [`SERVING_SYNC_CYCLES_PER_ROUND`] of rank synchronization at the device's SM clock, the
//! floor the SplitwiseSim profiles show: see `BENCHMARKS.md`) and the `pp - 1` activation
//! sends. Kernels are priced as the device's own (a Hopper-native engine on an H100); an engine
//! whose kernels were written for the previous generation is priced on
//! [`tessera_ir::hardware::DeviceSpec::running_prior_generation_kernels`], as the tests price the
//! SplitwiseSim profiles (`BENCHMARKS.md`). [`PhasePricer::prefill_parts`] splits a prefill by
//! cause.
//!
//! Colocated. Each replica (`tp * pp` GPUs) runs continuous batching: a decode step for the
//! running batch, with the prompts of newly admitted requests prefilled in between. A request
//! costs a replica `prefill(1, I) + O * decode(B) / B` seconds; with `B` running requests
//! `B / O` prompts arrive per step, so a token takes `decode(B) + B / O * prefill(1, I)`
//! (TPOT) and the first one `prefill(1, I) + decode(B)` plus queueing for the prefill (M/D/1).
//! The batch follows from the rate by Little's law: `B = rate * (TTFT + O * TPOT)`.
//!
//! Disaggregated (DistServe, Splitwise). Prefill replicas only prefill (TTFT is their queueing
//! plus the prefill and the KV-cache transfer to a decode replica, over NVLink inside a node and
//! InfiniBand between nodes); decode replicas only decode (TPOT is the decode step).
//!
//! Goodput per GPU is the largest request rate every SLO holds at, over the GPUs.

use crate::cost::collective::{collective, CollectiveKind, Group};
use crate::cost::profile::Region;
use crate::cost::workload::{BlockKind, ProfileCache, Workload};
use crate::cost::CostError;
use crate::planner::divisors;
use serde::Serialize;
use tessera_ir::hardware::ClusterSpec;
use tessera_ir::workload::BlockShape;

/// SM clock cycles each tensor-parallel collective of a serving step costs per doubling of its
/// ranks (`log2(tp)` rounds of a tree barrier), besides its alpha-beta time: the
/// synchronization of ranks that each launch their kernels from their own host thread (no CUDA
/// graphs), which the SplitwiseSim decode profiles show as a floor rising with `tp` (A100,
/// batch 1: 55, 45, 45 ms at tp 2, 4, 8 where the weights' roofline halves each time). The
/// rounds are device-side work (NCCL's low-latency protocol polls flags in memory from a
/// kernel that occupies the SMs, and each step's kernels drain behind it), so they take
/// cycles, not a fixed time: 45 µs at the A100's 1410 MHz, fitted once on the calibration rows
/// (DGX-A100). A decode step is light work, far from the power limit, so the board runs at
/// its boost clock ([`tessera_ir::hardware::PowerModel::boost_clock_mhz`]): at the H100's
/// 1980 MHz the same cycles take 32 µs; the DGX-H100 rows are the check (`BENCHMARKS.md`).
pub const SERVING_SYNC_CYCLES_PER_ROUND: f64 = 45e-6 * 1410e6;

/// Seconds one synchronization round takes on a device whose highest SM clock is `clock_mhz`.
pub fn serving_sync_s_per_round(clock_mhz: f64) -> f64 {
    SERVING_SYNC_CYCLES_PER_ROUND / (clock_mhz * 1e6)
}

/// What is served.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ServeWorkload {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Requests per second over the whole cluster, or a fixed number running at once.
    pub arrival: Arrival,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arrival {
    Rate(f64),
    Batch(u64),
}

/// Latency targets, seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Slo {
    pub ttft_s: f64,
    pub tpot_s: f64,
}

/// Why a serving request cannot be planned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Spec(String),
    /// No layout meets the SLO; the closest one and why.
    #[error("no serving plan of {model} on {cluster} meets the SLO (TTFT {ttft_ms} ms, TPOT {tpot_ms} ms): {why}")]
    Unmeetable { model: String, cluster: String, ttft_ms: f64, tpot_ms: f64, why: String },
    #[error(transparent)]
    Cost(#[from] CostError),
}

/// GPUs and their split for one phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PhaseLayout {
    pub tp: u64,
    pub pp: u64,
    /// Replicas of `tp * pp` GPUs.
    pub replicas: u64,
}

impl PhaseLayout {
    pub fn gpus(&self) -> u64 {
        self.tp * self.pp * self.replicas
    }
}

/// One point of the throughput–latency frontier.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrontierPoint {
    pub batch: u64,
    pub tpot_s: f64,
    pub ttft_s: f64,
    pub output_tokens_per_s_per_gpu: f64,
}

/// The `serve` object of a plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServePlan {
    /// `colocated` or `disaggregated`.
    pub placement: String,
    pub prefill: PhaseLayout,
    pub decode: PhaseLayout,
    /// Prefill of one prompt.
    pub prefill_s: f64,
    /// One decode step of the running batch at the mean context.
    pub decode_step_s: f64,
    pub ttft_s: f64,
    pub tpot_s: f64,
    /// Sequences decoded at once per decode replica.
    pub batch: u64,
    pub output_tokens_per_s: f64,
    pub requests_per_s: f64,
    /// KV cache of the running batch per decode GPU, and what fits.
    pub kv_cache_bytes_per_gpu: f64,
    pub kv_capacity_bytes_per_gpu: f64,
    /// The most sequences of `in + out` tokens a decode replica holds.
    pub max_batch: u64,
    /// Seconds to move one prompt's KV cache to its decode replica (disaggregated).
    pub kv_transfer_s: f64,
    pub energy_j_per_token: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slo: Option<Slo>,
    pub meets_slo: bool,
    /// The largest request rate meeting the SLO (or, without one, the saturation rate), per GPU.
    pub goodput_requests_per_s_per_gpu: f64,
    /// Decode batch against latency and throughput, for the chosen layout.
    pub frontier: Vec<FrontierPoint>,
    /// The best plan of the other placement, for comparison.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_placement: Option<Box<ServePlan>>,
}

/// One phase's latency by cause, as [`PhasePricer::prefill_parts`] splits it; the parts add
/// up to [`PhasePricer::prefill`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PhaseParts {
    /// Matmul kernels outside the attention core (projections, MLP, LM head).
    pub matmul_s: f64,
    /// The attention core's kernels (scores, softmax, weighted values).
    pub attention_s: f64,
    /// Every other kernel (norms, elementwise, embedding gather).
    pub other_kernels_s: f64,
    /// The part of the three above that is per-kernel launch overhead.
    pub launch_s: f64,
    /// Tensor-parallel collectives by the alpha-beta model.
    pub tp_collective_s: f64,
    /// The synchronization rounds of those collectives.
    pub sync_s: f64,
    /// Activation sends between pipeline stages.
    pub pp_send_s: f64,
}

impl PhaseParts {
    pub fn total(&self) -> f64 {
        self.matmul_s + self.attention_s + self.other_kernels_s + self.tp_collective_s + self.sync_s + self.pp_send_s
    }
}

/// Phase prices of one model on one device kind, cached by shape.
pub struct PhasePricer<'c, 'w> {
    cache: &'c mut ProfileCache<'w>,
    cluster: &'c ClusterSpec,
}

impl<'c, 'w> PhasePricer<'c, 'w> {
    pub fn new(cache: &'c mut ProfileCache<'w>, cluster: &'c ClusterSpec) -> Self {
        PhasePricer { cache, cluster }
    }

    /// Seconds of one forward pass at `shape` over `pp` stages (latency of one batch), and the
    /// fraction of the kernel time that is compute-bound.
    fn forward(&mut self, shape: BlockShape, pp: u64) -> Result<(f64, f64), CostError> {
        let workload = self.cache.workload();
        let mut blocks: Vec<(BlockKind, f64)> = Vec::new();
        if workload.has_embedding() {
            blocks.push((BlockKind::Embedding, 1.0));
        }
        let runs = workload.layer_runs();
        blocks.extend(runs.iter().map(|&(k, n)| (BlockKind::Layer(k), n as f64)));
        if workload.has_head() {
            blocks.push((BlockKind::Head, 1.0));
        }
        let tp_group = Group::new(shape.tp, 1);
        let round_s = serving_sync_s_per_round(self.cluster.device.power.boost_clock_mhz());
        let (mut time, mut kernels, mut bound) = (0.0, 0.0, 0.0);
        let mut stream_bytes: f64 = 0.0;
        for (kind, n) in blocks {
            let p = self.cache.get(kind, &shape)?;
            let t = p.fwd_time.total();
            kernels += n * t;
            bound += n * t * p.compute_bound_fraction();
            time += n * t;
            for &(ck, bytes) in &p.tp_comms {
                let sync = round_s * (shape.tp as f64).log2();
                time += n * (collective(self.cluster, ck, bytes, tp_group).time_s + sync);
            }
            if matches!(kind, BlockKind::Layer(_)) {
                stream_bytes = stream_bytes.max(p.stream_bytes);
            }
        }
        if pp > 1 {
            let send = collective(
                self.cluster,
                CollectiveKind::SendRecv,
                stream_bytes / shape.tp as f64,
                Group::new(2, shape.tp),
            );
            time += (pp - 1) as f64 * send.time_s;
        }
        Ok((time, if kernels > 0.0 { bound / kernels } else { 0.0 }))
    }

    /// [`PhasePricer::prefill`] split by cause: kernels by kind, collectives, their
    /// synchronization rounds, pipeline sends.
    pub fn prefill_parts(&mut self, batch: u64, tokens: u64, tp: u64, pp: u64) -> Result<PhaseParts, CostError> {
        let shape = BlockShape { batch, seq: tokens, tp, ep: 1, training: false, kv_cache: 0 };
        let workload = self.cache.workload();
        let mut blocks: Vec<(BlockKind, f64)> = Vec::new();
        if workload.has_embedding() {
            blocks.push((BlockKind::Embedding, 1.0));
        }
        blocks.extend(workload.layer_runs().iter().map(|&(k, n)| (BlockKind::Layer(k), n as f64)));
        if workload.has_head() {
            blocks.push((BlockKind::Head, 1.0));
        }
        let tp_group = Group::new(tp, 1);
        let round_s = serving_sync_s_per_round(self.cluster.device.power.boost_clock_mhz());
        let launch_s = self.cluster.device.kernel_overhead_s();
        let mut parts = PhaseParts::default();
        let mut stream_bytes: f64 = 0.0;
        for (kind, n) in blocks {
            let p = self.cache.get(kind, &shape)?;
            for k in &p.kernels {
                match (k.region, k.matmul_dims) {
                    (Region::AttentionCore, _) => parts.attention_s += n * k.time_s,
                    (_, Some(_)) => parts.matmul_s += n * k.time_s,
                    (_, None) => parts.other_kernels_s += n * k.time_s,
                }
                parts.launch_s += n * launch_s;
            }
            for &(ck, bytes) in &p.tp_comms {
                parts.tp_collective_s += n * collective(self.cluster, ck, bytes, tp_group).time_s;
                parts.sync_s += n * round_s * (tp as f64).log2();
            }
            if matches!(kind, BlockKind::Layer(_)) {
                stream_bytes = stream_bytes.max(p.stream_bytes);
            }
        }
        if pp > 1 {
            let send = collective(self.cluster, CollectiveKind::SendRecv, stream_bytes / tp as f64, Group::new(2, tp));
            parts.pp_send_s = (pp - 1) as f64 * send.time_s;
        }
        Ok(parts)
    }

    /// Prefill of `batch` prompts of `tokens` tokens.
    pub fn prefill(&mut self, batch: u64, tokens: u64, tp: u64, pp: u64) -> Result<f64, CostError> {
        let shape = BlockShape { batch, seq: tokens, tp, ep: 1, training: false, kv_cache: 0 };
        Ok(self.forward(shape, pp)?.0)
    }

    /// One decode step of `batch` sequences at `context` cached tokens.
    pub fn decode(&mut self, batch: u64, context: u64, tp: u64, pp: u64) -> Result<f64, CostError> {
        Ok(self.decode_with_bound(batch, context, tp, pp)?.0)
    }

    fn decode_with_bound(&mut self, batch: u64, context: u64, tp: u64, pp: u64) -> Result<(f64, f64), CostError> {
        let shape = BlockShape { batch, seq: 1, tp, ep: 1, training: false, kv_cache: context.max(1) };
        self.forward(shape, pp)
    }

    /// (weight bytes, KV-cache bytes per cached token) per GPU of a `tp`-by-`pp` replica.
    fn memory(&mut self, tp: u64, pp: u64) -> Result<(f64, f64), CostError> {
        let workload = self.cache.workload();
        let context = 1024;
        let shape = BlockShape { batch: 1, seq: 1, tp, ep: 1, training: false, kv_cache: context };
        let mut weights = 0.0;
        let mut kv = 0.0;
        let mut kinds: Vec<(BlockKind, f64)> =
            workload.layer_runs().iter().map(|&(k, n)| (BlockKind::Layer(k), n as f64)).collect();
        if workload.has_embedding() {
            kinds.push((BlockKind::Embedding, 1.0));
        }
        if workload.has_head() && !workload.tied_embeddings() {
            kinds.push((BlockKind::Head, 1.0));
        }
        for (kind, n) in kinds {
            let p = self.cache.get(kind, &shape)?;
            weights += n * p.param_bytes;
            kv += n * p.cache_bytes / context as f64;
        }
        Ok((weights / pp as f64, kv / pp as f64))
    }
}

/// How one layout does at one batch.
#[derive(Debug, Clone, Copy)]
struct Operating {
    batch: u64,
    prefill_s: f64,
    decode_s: f64,
    ttft_s: f64,
    tpot_s: f64,
    /// Requests per second the whole placement sustains at this batch.
    capacity_rps: f64,
    kv_transfer_s: f64,
    /// Compute-bound fraction of prefill and decode kernel time.
    prefill_bound: f64,
    decode_bound: f64,
}

/// A layout with how it runs, its goodput per GPU and its largest decode batch.
type Evaluated = (Placement, Operating, f64, u64);

/// A layout under evaluation: colocated (`prefill == decode`) or disaggregated.
#[derive(Debug, Clone, Copy)]
struct Placement {
    disaggregated: bool,
    prefill: PhaseLayout,
    decode: PhaseLayout,
}

/// The search's limits, so that a huge request answers at once.
const MAX_TOKENS: u64 = 1 << 20;

/// Plans serving `workload` on `cluster` under `slo`.
pub fn plan_serving(
    model: &dyn Workload,
    cluster: &ClusterSpec,
    workload: &ServeWorkload,
    slo: Option<Slo>,
) -> Result<ServePlan, ServeError> {
    let (i, o) = (workload.input_tokens, workload.output_tokens);
    if model.stage_programs(1).is_some() {
        return Err(ServeError::Spec(format!(
            "{}: serving plans price a zoo model's prefill and decode blocks; a model file has no decode step \
             (plan its forward pass with --mode serve --global-batch N)",
            model.name()
        )));
    }
    if i == 0 || o == 0 || i > MAX_TOKENS || o > MAX_TOKENS {
        return Err(ServeError::Spec(format!("--workload in={i},out={o}: token counts must be 1 to {MAX_TOKENS}")));
    }
    match workload.arrival {
        Arrival::Rate(r) if !(r.is_finite() && r > 0.0) => {
            return Err(ServeError::Spec(format!(
                "--workload rate={r}: must be a positive number of requests per second"
            )))
        }
        Arrival::Batch(0) => return Err(ServeError::Spec("--workload batch=0: must be positive".into())),
        _ => {}
    }
    if let Some(s) = slo {
        for (what, v) in [("ttft", s.ttft_s), ("tpot", s.tpot_s)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(ServeError::Spec(format!(
                    "--slo {what}={}: must be a positive number of milliseconds",
                    v * 1e3
                )));
            }
        }
    }
    let mut cache = ProfileCache::new(model, &cluster.device);
    let mut pricer = PhasePricer::new(&mut cache, cluster);
    let gpus = cluster.gpus;
    let usable = cluster.device.memory_bytes() - cluster.device.reserved_bytes();
    let layers: u64 = model.layer_runs().iter().map(|(_, n)| n).sum();

    // Replica shapes that hold the weights with room for at least one sequence.
    let mut shapes: Vec<(u64, u64, f64, f64)> = Vec::new();
    for tp in divisors(gpus) {
        if tp > model.max_tp() || model.check_tp(tp).is_err() || tp > cluster.gpus_per_node {
            continue;
        }
        for pp in divisors(gpus / tp) {
            if pp > layers || pp > 8 {
                continue;
            }
            let (weights, kv_per_token) = pricer.memory(tp, pp)?;
            let capacity = usable - weights - usable * ACTIVATION_HEADROOM;
            if capacity > kv_per_token * (i + o) as f64 {
                shapes.push((tp, pp, capacity, kv_per_token));
            }
        }
    }
    if shapes.is_empty() {
        return Err(ServeError::Spec(format!(
            "{} does not fit on {} with room for one sequence of {} tokens at any tensor/pipeline split",
            model.name(),
            cluster.name,
            i + o
        )));
    }

    let candidates = placements(&shapes, gpus);
    let memory_of = |l: &PhaseLayout| shapes.iter().find(|s| (s.0, s.1) == (l.tp, l.pp)).map(|s| (s.2, s.3));
    let mut evaluated: Vec<Evaluated> = Vec::new();
    for placement in &candidates {
        let Some((capacity, kv_per_token)) = memory_of(&placement.decode) else { continue };
        let max_batch = ((capacity / (kv_per_token * (i + o) as f64)).floor() as u64).max(1);
        let candidate = Candidate { cluster, workload, placement, kv_per_token };
        let Some(op) = operate(&mut pricer, &candidate, max_batch)? else { continue };
        let goodput = goodput(&mut pricer, &candidate, max_batch, slo)?;
        evaluated.push((*placement, op, goodput, max_batch));
    }

    let meets = |op: &Operating| slo.is_none_or(|s| op.ttft_s <= s.ttft_s && op.tpot_s <= s.tpot_s);
    let sustains = |op: &Operating| match workload.arrival {
        Arrival::Rate(r) => op.capacity_rps >= r,
        Arrival::Batch(_) => true,
    };
    // Rank: plans that sustain the load and meet the SLO, then by goodput per GPU.
    let rank = |e: &(Placement, Operating, f64, u64)| (meets(&e.1) && sustains(&e.1), e.2);
    let best_of = |disaggregated: Option<bool>| {
        evaluated
            .iter()
            .filter(|e| disaggregated.is_none_or(|d| e.0.disaggregated == d))
            .max_by(|a, b| {
                let (ra, rb) = (rank(a), rank(b));
                ra.0.cmp(&rb.0).then(ra.1.total_cmp(&rb.1))
            })
            .cloned()
    };
    let Some(best) = best_of(None) else {
        return Err(ServeError::Spec(format!("no serving layout of {} on {}", model.name(), cluster.name)));
    };
    if let (Some(s), false) = (slo, meets(&best.1) && sustains(&best.1)) {
        return Err(unmeetable(model, cluster, workload, s, &evaluated, &best, &sustains));
    }
    let mut plan = build(&mut pricer, cluster, workload, slo, &best, &meets)?;
    if let Some(other) = best_of(Some(!best.0.disaggregated)) {
        plan.other_placement = Some(Box::new(build(&mut pricer, cluster, workload, slo, &other, &meets)?));
    }
    Ok(plan)
}

/// Every colocated layout, and every split of the GPUs into a prefill and a decode pool with
/// each pool's own layout; `shapes` are the replica shapes `(tp, pp, ...)` that fit.
fn placements(shapes: &[(u64, u64, f64, f64)], gpus: u64) -> Vec<Placement> {
    let mut candidates: Vec<Placement> = Vec::new();
    for &(tp, pp, _, _) in shapes {
        let layout = PhaseLayout { tp, pp, replicas: gpus / (tp * pp) };
        candidates.push(Placement { disaggregated: false, prefill: layout, decode: layout });
    }
    // Disaggregated: prefill on `p` GPUs, decode on the rest, each pool its own split.
    for p_gpus in 1..gpus {
        let d_gpus = gpus - p_gpus;
        for &(tp_p, pp_p, _, _) in shapes.iter().filter(|s| p_gpus % (s.0 * s.1) == 0) {
            for &(tp_d, pp_d, _, _) in shapes.iter().filter(|s| d_gpus % (s.0 * s.1) == 0) {
                candidates.push(Placement {
                    disaggregated: true,
                    prefill: PhaseLayout { tp: tp_p, pp: pp_p, replicas: p_gpus / (tp_p * pp_p) },
                    decode: PhaseLayout { tp: tp_d, pp: pp_d, replicas: d_gpus / (tp_d * pp_d) },
                });
            }
        }
    }
    candidates
}

/// The error for an SLO no layout meets: the closest layout that sustains the load and its
/// latencies, or the most any layout serves.
fn unmeetable(
    model: &dyn Workload,
    cluster: &ClusterSpec,
    workload: &ServeWorkload,
    s: Slo,
    evaluated: &[Evaluated],
    best: &Evaluated,
    sustains: &dyn Fn(&Operating) -> bool,
) -> ServeError {
    let i = workload.input_tokens;
    // The layout that comes closest: the smallest worst ratio of latency to target among
    // those that sustain the load, else the one that serves the most.
    let lateness = |op: &Operating| (op.ttft_s / s.ttft_s).max(op.tpot_s / s.tpot_s);
    let sustaining: Vec<&Evaluated> = evaluated.iter().filter(|e| sustains(&e.1)).collect();
    let why = match sustaining.iter().min_by(|a, b| lateness(&a.1).total_cmp(&lateness(&b.1))) {
        Some(closest) => {
            let op = &closest.1;
            let floor = evaluated.iter().map(|e| e.1.prefill_s).fold(f64::INFINITY, f64::min);
            format!(
                "the closest layout ({}) has TTFT {:.0} ms and TPOT {:.1} ms at batch {}; the fastest prefill of \
                 {i} tokens alone takes {:.0} ms",
                describe(&closest.0),
                op.ttft_s * 1e3,
                op.tpot_s * 1e3,
                op.batch,
                floor * 1e3
            )
        }
        None => {
            let most = evaluated.iter().max_by(|a, b| a.1.capacity_rps.total_cmp(&b.1.capacity_rps)).unwrap_or(best);
            format!(
                "at most {:.2} requests/s can be served ({}), below the {} asked",
                most.1.capacity_rps,
                describe(&most.0),
                match workload.arrival {
                    Arrival::Rate(r) => format!("{r} requests/s"),
                    Arrival::Batch(b) => format!("batch {b}"),
                }
            )
        }
    };
    ServeError::Unmeetable {
        model: model.name().to_string(),
        cluster: cluster.name.clone(),
        ttft_ms: s.ttft_s * 1e3,
        tpot_ms: s.tpot_s * 1e3,
        why,
    }
}

/// Memory a decode replica keeps free of KV cache for activations and temporaries.
const ACTIVATION_HEADROOM: f64 = 0.05;

fn describe(p: &Placement) -> String {
    if p.disaggregated {
        format!(
            "prefill {}x tp={} pp={}, decode {}x tp={} pp={}",
            p.prefill.replicas, p.prefill.tp, p.prefill.pp, p.decode.replicas, p.decode.tp, p.decode.pp
        )
    } else {
        format!("colocated {}x tp={} pp={}", p.decode.replicas, p.decode.tp, p.decode.pp)
    }
}

/// One placement of the workload on the cluster, with the KV-cache bytes per token its decode
/// layout stores: what [`operate`], [`goodput`] and [`at_batch`] ask their questions of.
#[derive(Clone, Copy)]
struct Candidate<'a> {
    cluster: &'a ClusterSpec,
    workload: &'a ServeWorkload,
    placement: &'a Placement,
    kv_per_token: f64,
}

/// How the candidate's placement runs the workload: at the asked batch, or at the batch the
/// asked rate settles at (Little's law); `None` when that batch does not fit.
fn operate(pricer: &mut PhasePricer, c: &Candidate, max_batch: u64) -> Result<Option<Operating>, CostError> {
    match c.workload.arrival {
        Arrival::Batch(b) => {
            if b > max_batch {
                return Ok(None);
            }
            let rate = at_batch(pricer, c, b, None)?.capacity_rps;
            Ok(Some(at_batch(pricer, c, b, Some(rate))?))
        }
        Arrival::Rate(rate) => {
            // Little's law per decode replica: running = rate * time in system; a few rounds
            // settle it (time in system grows with the batch).
            let per_replica = rate / c.placement.decode.replicas as f64;
            let mut batch = 1u64;
            for _ in 0..8 {
                let op = at_batch(pricer, c, batch, Some(rate))?;
                let o = c.workload.output_tokens as f64;
                let next = (per_replica * (op.ttft_s + o * op.tpot_s)).ceil().max(1.0) as u64;
                if next == batch {
                    break;
                }
                batch = next.min(max_batch);
            }
            Ok(Some(at_batch(pricer, c, batch, Some(rate))?))
        }
    }
}

/// Latencies at decode batch `batch`, with requests arriving at `rate` (for queueing; `None`:
/// none).
fn at_batch(pricer: &mut PhasePricer, c: &Candidate, batch: u64, rate: Option<f64>) -> Result<Operating, CostError> {
    let Candidate { cluster, workload, placement, kv_per_token } = *c;
    let (i, o) = (workload.input_tokens, workload.output_tokens);
    let (pl, dl) = (placement.prefill, placement.decode);
    let context = i + o / 2;
    let (prefill_s, prefill_bound) =
        pricer.forward(BlockShape { batch: 1, seq: i, tp: pl.tp, ep: 1, training: false, kv_cache: 0 }, pl.pp)?;
    let (decode_s, decode_bound) = pricer.decode_with_bound(batch, context, dl.tp, dl.pp)?;
    let b = batch as f64;
    let of = o as f64;
    // A decode replica with `pp` stages keeps `pp` batches in flight.
    let decode_rps = dl.replicas as f64 * dl.pp as f64 * b / (of * decode_s);
    let (tpot, capacity, prefill_rps, kv_transfer_s) = if placement.disaggregated {
        let prefill_rps = pl.replicas as f64 / prefill_s;
        let bytes = kv_per_token * dl.pp as f64 * dl.tp as f64 * i as f64;
        let link = if cluster.gpus <= cluster.gpus_per_node { &cluster.intra_node } else { &cluster.inter_node };
        let lanes = pl.tp.min(dl.tp) as f64;
        let transfer = bytes / (lanes * link.effective_bandwidth()) + link.latency_s();
        (decode_s, decode_rps.min(prefill_rps), prefill_rps, transfer)
    } else {
        // Prompts of newly admitted requests interrupt decoding: B / O of them per step.
        let tpot = decode_s + b / of * prefill_s;
        let per_replica = 1.0 / (prefill_s + of * decode_s / (b * dl.pp as f64));
        let capacity = dl.replicas as f64 * per_replica;
        (tpot, capacity, capacity, 0.0)
    };
    // M/D/1 wait for the prefill server at the offered load.
    let wait = match rate {
        Some(r) => {
            let rho = (r / prefill_rps).min(0.999);
            rho / (2.0 * (1.0 - rho)) * prefill_s
        }
        None => 0.0,
    };
    let ttft = prefill_s + kv_transfer_s + wait + if placement.disaggregated { 0.0 } else { decode_s };
    Ok(Operating {
        batch,
        prefill_s,
        decode_s,
        ttft_s: ttft,
        tpot_s: tpot,
        capacity_rps: capacity,
        kv_transfer_s,
        prefill_bound,
        decode_bound,
    })
}

/// The largest request rate at which the candidate's placement meets `slo` (without one: its
/// capacity at the largest batch), per GPU.
fn goodput(pricer: &mut PhasePricer, c: &Candidate, max_batch: u64, slo: Option<Slo>) -> Result<f64, CostError> {
    let placement = c.placement;
    let gpus = (placement.prefill.gpus() + if placement.disaggregated { placement.decode.gpus() } else { 0 }) as f64;
    let mut best: f64 = 0.0;
    for batch in batches(max_batch) {
        let free = at_batch(pricer, c, batch, None)?;
        // Offer the capacity at this batch, less a margin for queueing, and check the SLO there.
        let mut rate = free.capacity_rps;
        for _ in 0..12 {
            let op = at_batch(pricer, c, batch, Some(rate))?;
            if slo.is_none_or(|s| op.ttft_s <= s.ttft_s && op.tpot_s <= s.tpot_s) {
                best = best.max(rate);
                break;
            }
            rate *= 0.7;
        }
    }
    Ok(best / gpus)
}

/// Batch sizes the frontier and goodput visit: powers of two up to `max_batch`, and it.
fn batches(max_batch: u64) -> Vec<u64> {
    let mut out: Vec<u64> =
        std::iter::successors(Some(1u64), |b| b.checked_mul(2)).take_while(|&b| b <= max_batch).collect();
    if out.last() != Some(&max_batch) {
        out.push(max_batch);
    }
    out
}

fn build(
    pricer: &mut PhasePricer,
    cluster: &ClusterSpec,
    workload: &ServeWorkload,
    slo: Option<Slo>,
    best: &(Placement, Operating, f64, u64),
    meets: &dyn Fn(&Operating) -> bool,
) -> Result<ServePlan, CostError> {
    let (placement, op, goodput, max_batch) = *best;
    let (_, kv_per_token) = pricer.memory(placement.decode.tp, placement.decode.pp)?;
    let candidate = Candidate { cluster, workload, placement: &placement, kv_per_token };
    let (weights, _) = pricer.memory(placement.decode.tp, placement.decode.pp)?;
    let usable = cluster.device.memory_bytes() - cluster.device.reserved_bytes();
    let gpus = (placement.prefill.gpus() + if placement.disaggregated { placement.decode.gpus() } else { 0 }) as f64;
    let o = workload.output_tokens as f64;
    let requests_per_s = match workload.arrival {
        Arrival::Rate(r) => r.min(op.capacity_rps),
        Arrival::Batch(_) => op.capacity_rps,
    };
    let output_tokens_per_s = requests_per_s * o;
    let mut frontier = Vec::new();
    for batch in batches(max_batch) {
        let f = at_batch(pricer, &candidate, batch, None)?;
        frontier.push(FrontierPoint {
            batch,
            tpot_s: f.tpot_s,
            ttft_s: f.ttft_s,
            output_tokens_per_s_per_gpu: f.capacity_rps * o / gpus,
        });
    }
    // Energy: busy GPUs draw idle plus dynamic power by how compute-bound their kernels are;
    // every GPU draws idle power throughout.
    let device = &cluster.device;
    let dynamic = device.tdp_w - device.idle_w;
    let load = |bound: f64| bound + (1.0 - bound) * device.power.memory_bound_load;
    let prefill_busy_j = requests_per_s * op.prefill_s * placement.prefill.tp as f64 * placement.prefill.pp as f64;
    let decode_busy_j =
        requests_per_s * o * op.decode_s / op.batch as f64 * (placement.decode.tp * placement.decode.pp) as f64;
    let power_w = gpus * device.idle_w
        + dynamic * (load(op.prefill_bound) * prefill_busy_j + load(op.decode_bound) * decode_busy_j);
    let energy_j_per_token = if output_tokens_per_s > 0.0 { power_w / output_tokens_per_s } else { 0.0 };
    Ok(ServePlan {
        placement: if placement.disaggregated { "disaggregated" } else { "colocated" }.to_string(),
        prefill: placement.prefill,
        decode: placement.decode,
        prefill_s: op.prefill_s,
        decode_step_s: op.decode_s,
        ttft_s: op.ttft_s,
        tpot_s: op.tpot_s,
        batch: op.batch,
        output_tokens_per_s,
        requests_per_s,
        kv_cache_bytes_per_gpu: kv_per_token
            * (workload.input_tokens + workload.output_tokens / 2) as f64
            * op.batch as f64,
        kv_capacity_bytes_per_gpu: usable - weights - usable * ACTIVATION_HEADROOM,
        max_batch,
        kv_transfer_s: op.kv_transfer_s,
        energy_j_per_token,
        slo,
        meets_slo: meets(&op),
        goodput_requests_per_s_per_gpu: goodput,
        frontier,
        other_placement: None,
    })
}

#[cfg(test)]
mod tests {
    use super::serving_sync_s_per_round;

    #[test]
    fn a_synchronization_round_is_45_us_on_an_a100_and_shorter_at_a_higher_clock() {
        assert!((serving_sync_s_per_round(1410.0) - 45e-6).abs() < 1e-12);
        let h100 = serving_sync_s_per_round(1980.0);
        assert!((h100 - 45e-6 * 1410.0 / 1980.0).abs() < 1e-12, "{h100}");
        assert!((h100 * 1e6 - 32.045).abs() < 1e-3, "{h100}");
    }
}
