//! One training step (or one decoding step) of a parallel configuration: time, memory per
//! device, traffic per link class, FLOPs and energy.
//!
//! Layout of ranks (Megatron's order): tensor-parallel ranks are consecutive, data-parallel
//! ranks (with expert-parallel groups inside them) are `tp` apart, pipeline stages `tp * dp`
//! apart. Layers are cut into `pp * interleave` contiguous chunks, chunk `c` on stage
//! `c % pp`, by the shard pass's exact balancer ([`crate::shard::stages::balance`]) over the
//! blocks' forward times with the embedding first and the head last (so they sit on the first
//! and the last stage, and the stages beside them take fewer layers when that lowers the
//! slowest chunk). A workload cut into stage programs (any graph) runs one program per stage.
//!
//! Time of a stage per micro-batch: forward, backward (twice forward per kernel), the
//! recomputation the policy asks for (full: the layers' forward again, selective: the
//! attention core), the tensor-parallel collectives (all-reduce, or reduce-scatter plus
//! all-gather under sequence parallelism: the same bytes; not overlapped, as in Megatron),
//! expert all-to-alls, and the activations sent to the neighbouring stages (split over the
//! tensor-parallel ranks, each on its own NIC). With `m` micro-batches and `v` chunks per stage
//! the pipeline takes `m * t_max + (sum of stage times - t_max) / v`: the slowest stage runs
//! every micro-batch and the others fill and drain around it, which for equal stages is the
//! familiar `(m + (p - 1) / v) * t` with bubble fraction `(p - 1) / (v m + p - 1)`. GPipe and
//! 1F1B take the same time and differ in memory. DeepSpeed's pipeline engine
//! ([`Schedule::DeepSpeed`]) is priced by running its `TrainSchedule` step by step
//! ([`deepspeed_pipeline`]): each step a stage exchanges with one neighbour (both streams
//! wait for the pair's transfers) and then runs one forward or one backward; its gradient
//! reduction overlaps nothing; and the tensor-parallel collectives of Megatron-DeepSpeed, which
//! runs that engine, take the time [`MEGATRON_DEEPSPEED_TP`] gives for their ring time.
//!
//! After the pipeline: the gradient reduction over data-parallel ranks overlaps the last
//! backward pass of the stage (exposed only beyond it), ZeRO-1/2 all-gather updated weights
//! (overlapping the first forward), ZeRO-3 gathers weights every micro-batch (overlapping
//! that micro-batch's compute), tied embeddings sync between first and last stage, and the
//! Adam step streams `ADAM_BYTES_PER_PARAM` bytes per parameter it owns.
//!
//! Memory of a stage: bf16 weights, fp32 gradients and fp32 Adam state (master weights, two
//! moments), each divided over data-parallel ranks from its ZeRO stage on (a weight the
//! embedding and the head share by name, a tied token table on a one-stage pipeline, counts
//! once; on separate stages each end holds its copy); activations of the
//! micro-batches in flight (1F1B: `p - s` on stage `s`, interleaved: `p + (p - 1) / v` on the
//! first, GPipe: all `m`), as the block profiles store them under the recomputation policy and
//! with the replicated part split by sequence parallelism; a full-recomputation transient of
//! one layer; twice the largest kernel's working set for temporaries; the device's reserved
//! memory. Serving keeps weights and the KV cache of every sequence.

use crate::cost::collective::{collective, CollectiveCost, CollectiveKind, Group};
use crate::cost::hardware::LinkClass;
use crate::cost::profile::BlockProfile;
use crate::cost::workload::{BlockKind, ProfileCache};
use crate::cost::CostError;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tessera_ir::hardware::ClusterSpec;
use tessera_ir::workload::BlockShape;

/// Bytes Adam streams per parameter: reads of the fp32 gradient, master weight and two moments,
/// writes of the master weight, moments and bf16 weight, and the gradient-norm pass.
pub const ADAM_BYTES_PER_PARAM: f64 = 34.0;
/// Bytes per parameter of fp32 gradients, of fp32 Adam state (master, m, v), and of the bf16
/// weights ZeRO gathers.
const GRAD_BYTES: f64 = 4.0;
const OPTIMIZER_BYTES: f64 = 12.0;
/// Bytes `BF16_Optimizer::update_hp_grads` streams per parameter and micro-batch:
/// `hp_grad.add_(lp.grad.to(float32))` reads the bf16 gradient (2) and writes its fp32 copy (4),
/// then reads that copy and the fp32 gradient (8) and writes the sum (4).
pub const BF16_OPTIMIZER_BYTES_PER_PARAM: f64 = 18.0;
/// Bytes an unfused accumulation streams per parameter and micro-batch: the in-place add of a
/// 16-bit gradient into the 16-bit accumulator reads both (2 + 2) and writes the sum (2).
pub const UNFUSED_ACCUMULATION_BYTES_PER_PARAM: f64 = 6.0;
/// Bytes per parameter of the bf16 gradient `BF16_Optimizer` keeps beside the fp32 one.
const BF16_OPTIMIZER_LOW_PRECISION_GRAD_BYTES: f64 = 2.0;
/// Backward time per forward time of a kernel (see `profile`).
pub const BACKWARD_FACTOR: f64 = 2.0;
/// How long a tensor-parallel collective takes on the software stack that runs a training step,
/// against the ring time of [`collective`] (which the link numbers fit to Megatron-LM 2022,
/// Korthikanti et al.): `ring_time_factor` ring times plus `call_s` seconds per call. Only
/// time changes, not the bytes moved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TpCollectiveTime {
    pub ring_time_factor: f64,
    pub call_s: f64,
}

impl TpCollectiveTime {
    /// Megatron-LM's own stack: the ring time.
    pub const RING: TpCollectiveTime = TpCollectiveTime { ring_time_factor: 1.0, call_s: 0.0 };

    fn time(&self, ring_s: f64) -> f64 {
        self.ring_time_factor * ring_s + self.call_s
    }
}

/// Tensor-parallel collectives under Megatron-DeepSpeed (DeepSpeed's pipeline engine,
/// [`Schedule::DeepSpeed`]). Calibrated on the rows of
/// `calibration/megatron_deepspeed_calibration.json` and nothing else, by least squares over
/// their relative errors (a test recomputes the fit): BigScience's one-node runs (TP 8, PP 1,
/// DP 1, so no pipeline transfer, no data-parallel reduction and no network) of 2022-02-21,
/// which the ring time priced 18-25% fast with every other cost in place, and its sweep of one
/// 40-node model over micro-batch sizes 1, 2, 4 and 8 (2022-02-20), whose errors count about
/// their own mean (that model's level is not the collectives'): the sweep sets how the time
/// grows with the micro-batch, the one-node rows set the level.
///
/// Why the tensor-parallel collectives and not the kernels or the engine: on one day and one
/// set of nodes a TP 4 run of BLOOM's shape took 0.84 of the TP 8 run's step where a uniform
/// kernel slowdown predicts 0.95; the missing time per layer and micro-batch is the same at 6
/// and 12 layers per stage (not a per-stage engine cost). Why a cost per call besides the
/// bandwidth: the missing time per layer and micro-batch grows with the micro-batch more
/// slowly than its bytes (11 ms at micro-batch 1, 38 ms at 8), so a step of many small
/// micro-batches pays more than its bytes say; a factor on the ring time alone priced every
/// micro-batch-1 row fast and every micro-batch-4 and 8 row slow (BENCHMARKS.md,
/// "Megatron-DeepSpeed's tensor-parallel collectives"). Which part of the stack costs the
/// time is not found in the code read.
pub const MEGATRON_DEEPSPEED_TP: TpCollectiveTime = TpCollectiveTime { ring_time_factor: 3.355, call_s: 0.343e-3 };

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Recompute {
    None,
    Selective,
    Full,
}

impl Recompute {
    pub const ALL: [Recompute; 3] = [Recompute::None, Recompute::Selective, Recompute::Full];

    pub fn name(self) -> &'static str {
        match self {
            Recompute::None => "none",
            Recompute::Selective => "selective",
            Recompute::Full => "full",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Schedule {
    #[serde(rename = "gpipe")]
    GPipe,
    /// One-forward-one-backward; interleaved when `interleave > 1`.
    #[serde(rename = "1f1b")]
    OneFOneB,
    /// DeepSpeed's pipeline engine (`deepspeed/runtime/pipe/schedule.py`, `TrainSchedule`):
    /// `2 (m + p - 1)` steps, each one forward or one backward per stage after a blocking,
    /// paired exchange with one neighbour (the previous stage before a forward, the next one
    /// before a backward), so a stage waits only for that neighbour's previous step; the
    /// gradient reduction and the optimizer run after the last step. Not interleaved.
    #[serde(rename = "deepspeed")]
    DeepSpeed,
}

impl Schedule {
    pub fn name(self) -> &'static str {
        match self {
            Schedule::GPipe => "gpipe",
            Schedule::OneFOneB => "1f1b",
            Schedule::DeepSpeed => "deepspeed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Train,
    Serve,
}

/// Every knob of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Parallelism {
    pub dp: u64,
    pub tp: u64,
    pub pp: u64,
    /// Expert parallelism, inside the data-parallel ranks.
    pub ep: u64,
    /// Sequence parallelism over the tensor-parallel ranks.
    pub sp: bool,
    pub micro_batch: u64,
    /// Model chunks per pipeline stage.
    pub interleave: u64,
    pub recompute: Recompute,
    /// ZeRO stage: 1 shards optimizer state, 2 also gradients, 3 also weights.
    pub zero: u8,
    pub schedule: Schedule,
    /// How each micro-batch's weight gradients join the step's; absent from a plan's JSON
    /// when fused (the default, and the only one the search uses).
    #[serde(default, skip_serializing_if = "GradAccumulation::is_fused")]
    pub grad_accumulation: GradAccumulation,
    /// How the layers are cut into pipeline stages; absent from a plan's JSON when by time
    /// (the default, and the only one the search uses).
    #[serde(default, skip_serializing_if = "LayerPartition::is_time")]
    pub layer_partition: LayerPartition,
}

/// How a framework cuts the layers into pipeline stages (the embedding always sits on the
/// first stage and the head on the last).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerPartition {
    /// By forward time, with the shard pass's exact balancer over the embedding, the layers
    /// and the head: the stages beside a heavy embedding or head take fewer layers when that
    /// lowers the slowest stage. What a planner would choose.
    #[default]
    Time,
    /// By count of transformer layers, the embedding and the head extra on the end stages:
    /// Megatron-LM's `num_layers // pipeline_model_parallel_size` layers per stage, and
    /// DeepSpeed's `partition_method='type:transformer'` (Megatron-DeepSpeed's `GPTModelPipe`
    /// default), which balances 1 per transformer layer and 0 per other layer.
    Layers,
    /// DeepSpeed's `type:transformer|embedding` (Megatron-DeepSpeed's `--pp-partition-method`,
    /// BLOOM's run): the embedding and the head (the tied `EmbeddingPipe` at either end) each
    /// count as one transformer layer, so the end stages take one layer fewer each.
    LayersAndEmbeddings,
}

impl LayerPartition {
    pub const ALL: [LayerPartition; 3] =
        [LayerPartition::Time, LayerPartition::Layers, LayerPartition::LayersAndEmbeddings];

    pub fn name(self) -> &'static str {
        match self {
            LayerPartition::Time => "time",
            LayerPartition::Layers => "layers",
            LayerPartition::LayersAndEmbeddings => "layers_and_embeddings",
        }
    }

    pub fn is_time(&self) -> bool {
        *self == LayerPartition::Time
    }
}

/// The chunk of every item when `chunks` contiguous chunks are cut by count, as DeepSpeed's
/// `partition_balanced` does over 0/1 weights (`deepspeed/runtime/utils.py`): the heaviest
/// chunk holds `ceil(counted / chunks)` counted items, and `_lprobe` fills each chunk in order
/// up to that; an uncounted item stays in the chunk of the counted item before it (the first
/// chunk before any). So 78 layers over 12 stages are eleven stages of 7 and one of 1, as
/// BigScience found ("the last stage has 1 block, while the rest have 7").
pub fn partition_by_count(counted: &[bool], chunks: u64) -> Vec<usize> {
    let total = counted.iter().filter(|&&c| c).count() as u64;
    let cap = total.div_ceil(chunks.max(1)).max(1);
    let (mut chunk, mut load) = (0usize, 0u64);
    counted
        .iter()
        .map(|&c| {
            if c {
                if load == cap {
                    chunk += 1;
                    load = 0;
                }
                load += 1;
            }
            chunk
        })
        .collect()
}

/// How a framework accumulates the weight gradients of the micro-batches of a step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GradAccumulation {
    /// Inside the weight-gradient GEMM (Megatron-LM's `--gradient-accumulation-fusion`, on by
    /// default since 2022-02, as in Korthikanti et al.'s runs): no pass of its own.
    #[default]
    Fused,
    /// A separate in-place add of each micro-batch's half-precision gradient into the
    /// accumulated one after its backward (`UNFUSED_ACCUMULATION_BYTES_PER_PARAM`):
    /// Megatron-LM's local DDP before the fusion (`param.main_grad.add_(param.grad.data)` in
    /// its `param_hook`), and PyTorch's `AccumulateGrad` (`variable_grad += new_grad`) wherever
    /// `.grad` accumulates across micro-batches, as DeepSpeed's fp16 pipeline engine does.
    Unfused,
    /// DeepSpeed's `BF16_Optimizer` (`deepspeed/runtime/bf16_optimizer.py`, the bf16 path of
    /// its pipeline engine, which BLOOM ran): after every micro-batch's backward the engine
    /// calls `update_hp_grads`, which adds each bf16 gradient into an fp32 copy of all the
    /// stage's gradients (`BF16_OPTIMIZER_BYTES_PER_PARAM`), and the step all-reduces those
    /// fp32 gradients over the data-parallel ranks (`_bf16_reduce_grads`) before each rank
    /// updates its shard. Only with `schedule=deepspeed`.
    Bf16Optimizer,
}

impl GradAccumulation {
    pub const ALL: [GradAccumulation; 3] =
        [GradAccumulation::Fused, GradAccumulation::Unfused, GradAccumulation::Bf16Optimizer];

    pub fn name(self) -> &'static str {
        match self {
            GradAccumulation::Fused => "fused",
            GradAccumulation::Unfused => "unfused",
            GradAccumulation::Bf16Optimizer => "bf16_optimizer",
        }
    }

    pub fn is_fused(&self) -> bool {
        *self == GradAccumulation::Fused
    }

    /// Bytes the accumulation streams per parameter of a stage and micro-batch.
    fn bytes_per_param(self) -> f64 {
        match self {
            GradAccumulation::Fused => 0.0,
            GradAccumulation::Unfused => UNFUSED_ACCUMULATION_BYTES_PER_PARAM,
            GradAccumulation::Bf16Optimizer => BF16_OPTIMIZER_BYTES_PER_PARAM,
        }
    }
}

impl Parallelism {
    pub fn gpus(&self) -> u64 {
        self.dp * self.tp * self.pp
    }
}

/// What is run: the batch over all data-parallel ranks and the sequence (the context length
/// when serving).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Job {
    pub mode: Mode,
    pub global_batch: u64,
    pub seq: u64,
}

/// Bytes per device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Memory {
    pub weights: f64,
    pub gradients: f64,
    pub optimizer: f64,
    pub activations: f64,
    pub temporary: f64,
    pub kv_cache: f64,
    pub reserved: f64,
    pub total: f64,
}

/// Seconds of a step on the slowest stage, by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct TimeBreakdown {
    pub compute_s: f64,
    pub recompute_s: f64,
    pub tp_comm_s: f64,
    pub ep_comm_s: f64,
    pub pp_comm_s: f64,
    pub bubble_s: f64,
    pub dp_comm_exposed_s: f64,
    pub optimizer_s: f64,
}

/// Bytes one device sends per step, by link class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CommBytes {
    pub intra_node: f64,
    pub inter_node: f64,
}

impl CommBytes {
    fn add(&mut self, c: &CollectiveCost, times: f64) {
        self.intra_node += c.bytes(LinkClass::IntraNode) * times;
        self.inter_node += c.bytes(LinkClass::InterNode) * times;
    }
}

/// The prediction for one configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    pub step_time_s: f64,
    pub pipeline_time_s: f64,
    /// Idle fraction of the slowest stage during the pipeline.
    pub bubble_fraction: f64,
    pub micro_batches: u64,
    pub time: TimeBreakdown,
    /// Of the stage that needs the most.
    pub memory: Memory,
    pub comm_bytes: CommBytes,
    /// Per step, all devices: the model's FLOPs (forward and backward) and what the devices
    /// execute (with recomputation).
    pub model_flops: f64,
    pub hardware_flops: f64,
    /// Tokens processed (training) or generated (serving) per step.
    pub tokens: f64,
    pub energy_j: f64,
    /// Each stage's time per micro-batch by what the SM clock does to it, for clock and
    /// energy planning ([`crate::planner::energy`]); not part of the plan's JSON.
    #[serde(skip)]
    pub pipeline: PipelineTimes,
}

/// The pipeline of one estimate as clock planning sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PipelineTimes {
    pub train: bool,
    /// Micro-batches per step and data-parallel replica.
    pub micro_batches: u64,
    /// Model chunks per stage.
    pub interleave: u64,
    /// Per pipeline stage, first to last.
    pub stages: Vec<StageTimes>,
    /// The slowest stage's time after the pipeline drains (gradient sync, optimizer).
    pub after_s: f64,
}

/// One stage's seconds per micro-batch at the highest clock.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimes {
    /// Devices running the stage (its tensor- and data-parallel ranks).
    pub gpus: u64,
    /// Compute-bound kernels: `f_max / f` times as long at clock `f`.
    pub clock_bound_s: f64,
    /// Memory-bound kernels: as long at any clock.
    pub memory_bound_s: f64,
    /// Collectives and pipeline sends the stage waits on.
    pub transfer_s: f64,
    /// The same kernel time split by pass: forward, and backward with recomputation (0 when
    /// serving), for drawing the schedule.
    pub forward_s: f64,
    pub backward_s: f64,
}

impl StageTimes {
    /// Seconds per micro-batch at `ratio` of the highest clock.
    pub fn at(&self, ratio: f64) -> f64 {
        self.clock_bound_s / ratio + self.memory_bound_s + self.transfer_s
    }
}

/// Blocks of one stage with how many of each, per micro-batch.
struct Stage {
    blocks: Vec<(Arc<BlockProfile>, f64, bool)>,
}

/// Checks the shape rules every estimate relies on.
fn check(job: &Job, par: &Parallelism, layers: u64, stage_programs: bool) -> Result<(), CostError> {
    let bad = |m: String| Err(CostError::Invalid(m));
    let knobs = [par.dp, par.tp, par.pp, par.ep, par.micro_batch, par.interleave];
    if knobs.contains(&0) {
        return bad("dp, tp, pp, ep, micro_batch and interleave must be positive".into());
    }
    if job.global_batch % (par.dp * par.micro_batch) != 0 {
        return bad(format!(
            "global batch {} is not a multiple of dp * micro_batch = {}",
            job.global_batch,
            par.dp * par.micro_batch
        ));
    }
    if stage_programs && par.interleave > 1 {
        return bad("interleaving needs a model of repeated layers".into());
    }
    if !stage_programs && par.pp * par.interleave > layers {
        return bad(format!("pp * interleave = {} exceeds the {layers} layers", par.pp * par.interleave));
    }
    if par.dp % par.ep != 0 {
        return bad(format!("ep = {} must divide dp = {}", par.ep, par.dp));
    }
    if par.zero > 3 {
        return bad(format!("zero stage {} (0..3)", par.zero));
    }
    Ok(())
}

/// Predicts `par` for `job` on `cluster`, building block profiles through `cache`.
pub fn estimate(
    cache: &mut ProfileCache,
    cluster: &ClusterSpec,
    job: &Job,
    par: &Parallelism,
) -> Result<Estimate, CostError> {
    estimate_with(cache, cluster, job, par, MEGATRON_DEEPSPEED_TP)
}

/// [`estimate`] with Megatron-DeepSpeed's tensor-parallel collectives priced by `deepspeed_tp`
/// instead of [`MEGATRON_DEEPSPEED_TP`]: what its calibration varies.
pub fn estimate_with(
    cache: &mut ProfileCache,
    cluster: &ClusterSpec,
    job: &Job,
    par: &Parallelism,
    deepspeed_tp: TpCollectiveTime,
) -> Result<Estimate, CostError> {
    let workload = cache.workload();
    let layers = workload.layers();
    let programs = workload.stage_programs(par.pp);
    check(job, par, layers, programs.is_some())?;
    if let Some(kinds) = &programs {
        if kinds.len() as u64 != par.pp {
            return Err(CostError::Malformed(format!("{} stage programs for pp={}", kinds.len(), par.pp)));
        }
        workload.check_pp(par.pp).map_err(|e| CostError::Invalid(e.to_string()))?;
    }
    let train = job.mode == Mode::Train;
    let shape = if train {
        BlockShape { batch: par.micro_batch, seq: job.seq, tp: par.tp, ep: par.ep, training: true, kv_cache: 0 }
    } else {
        BlockShape { batch: par.micro_batch, seq: 1, tp: par.tp, ep: par.ep, training: false, kv_cache: job.seq }
    };
    let tp_time = if train && par.schedule == Schedule::DeepSpeed { deepspeed_tp } else { TpCollectiveTime::RING };
    let setting = Setting::new(cluster, job, par, programs.is_some(), workload.tied_embeddings(), tp_time);
    let stages = StagePlan::new(cache, &setting, &shape, programs.as_deref())?;
    let costs = price_stages(&setting, &stages);

    let (critical, t_max) =
        costs
            .iter()
            .enumerate()
            .map(|(i, c)| (i, c.time))
            .fold((0, 0.0), |best, x| if x.1 > best.1 { x } else { best });
    let sum: f64 = costs.iter().map(|c| c.time).sum();
    let (p, v, m) = (setting.p, setting.v, setting.m);
    let mf = m as f64;
    let pipeline = if train && par.schedule == Schedule::DeepSpeed {
        deepspeed_pipeline(&costs, m)
    } else if train {
        mf * t_max + (sum - t_max) / v as f64
    } else {
        // Decoding: each micro-batch passes every stage before its next token.
        (m.max(p) as f64) * t_max
    };
    let after = if train { after_pipeline(&setting, &costs, critical) } else { AfterPipeline::none(costs.len()) };
    let step_time = pipeline + after.time;
    let memory = peak_memory(&setting, &costs);
    let (model_flops, hardware_flops) = step_flops(cache, &setting, &stages, &shape)?;

    let crit = &costs[critical];
    // DeepSpeed's stages exchange before both halves of a micro-batch, two transfers each
    // time: twice the sends 1F1B pays.
    let deepspeed_extra_sends = if train && par.schedule == Schedule::DeepSpeed { mf * crit.pp } else { 0.0 };
    let time = TimeBreakdown {
        compute_s: mf * (crit.fwd + crit.bwd),
        recompute_s: mf * crit.recompute,
        tp_comm_s: mf * crit.tp,
        ep_comm_s: mf * crit.ep,
        pp_comm_s: mf * crit.pp + deepspeed_extra_sends,
        bubble_s: (pipeline - mf * t_max - deepspeed_extra_sends).max(0.0),
        dp_comm_exposed_s: after.dp_exposed_critical,
        optimizer_s: after.optimizer_critical,
    };
    let mut comm_bytes = crit.comm;
    comm_bytes.intra_node += after.comm[critical].intra_node;
    comm_bytes.inter_node += after.comm[critical].inter_node;
    let device = &cluster.device;
    let busy = ((time.compute_s + time.recompute_s) / step_time).min(1.0);
    let energy_j = par.gpus() as f64 * (device.idle_w + (device.tdp_w - device.idle_w) * busy) * step_time;
    let tokens = if train { (job.global_batch * job.seq) as f64 } else { (par.dp * par.micro_batch * m) as f64 };
    let pipeline_times = PipelineTimes {
        train,
        micro_batches: m,
        interleave: v,
        stages: costs
            .iter()
            .map(|c| StageTimes {
                gpus: par.tp * par.dp,
                clock_bound_s: c.clock_bound,
                memory_bound_s: c.fwd + c.bwd + c.recompute - c.clock_bound,
                transfer_s: c.tp + c.ep + c.pp + c.zero3,
                forward_s: c.fwd,
                backward_s: c.bwd + c.recompute,
            })
            .collect(),
        after_s: after.time,
    };
    Ok(Estimate {
        step_time_s: step_time,
        pipeline_time_s: pipeline,
        bubble_fraction: if pipeline > 0.0 { time.bubble_s / pipeline } else { 0.0 },
        micro_batches: m,
        time,
        memory,
        comm_bytes,
        model_flops,
        hardware_flops,
        tokens,
        energy_j,
        pipeline: pipeline_times,
    })
}

/// DeepSpeed's `TrainSchedule` (`deepspeed/runtime/pipe/schedule.py`) run step by step over
/// the stages' costs: the time from the first step to the last stage's last step.
///
/// Step `t` of stage `s` (`_step_to_micro_batch`): a forward when `s` and `t` have the same
/// parity, else a backward, of the micro-batch the step maps to (none during fill and drain).
/// Before a forward the stage receives the activation from `s - 1` and sends it the gradient
/// of its previous step's micro-batch; before a backward it sends its previous forward's
/// output to `s + 1` and receives the gradient. The engine's `p2p.send`/`recv` are NCCL
/// point-to-point operations (`dist.send`/`dist.recv`, or a broadcast over the pair before
/// torch 1.8) that the compute stream waits on, and the neighbour posts its side only after
/// its own previous step: so a step starts when the stage and the neighbour it exchanges with
/// have both finished their previous step, and its compute starts after the transfers (one
/// per instruction, each a stage's per-micro-batch send time `pp / 2`, run in order on the
/// pair's stream). A stage's collectives split between its halves as its compute does.
fn deepspeed_pipeline(costs: &[StageCost], m: u64) -> f64 {
    let p = costs.len() as i64;
    let m = m as i64;
    let halves: Vec<(f64, f64)> = costs
        .iter()
        .map(|c| {
            let compute = c.fwd + c.bwd + c.recompute;
            let busy = c.time - c.pp;
            let forward = if compute > 0.0 { busy * c.fwd / compute } else { 0.0 };
            (forward, busy - forward)
        })
        .collect();
    let valid = |micro: i64| (0..m).contains(&micro);
    // `_step_to_micro_batch` of DeepSpeed's TrainSchedule: (micro-batch, forward?).
    let micro_of = |s: i64, t: i64| -> (i64, bool) {
        match (t % 2 == 0, s % 2 == 0) {
            (true, true) => (t / 2 - s / 2, true),
            (false, false) => ((t - 1) / 2 - s / 2, true),
            (true, false) => (t / 2 - p + (s + 1) / 2, false),
            (false, true) => ((t - 1) / 2 - p + 1 + s / 2, false),
        }
    };
    let mut end = vec![0.0f64; p as usize];
    let mut next = vec![0.0f64; p as usize];
    let mut previous = vec![-1i64; p as usize];
    for t in 0..2 * (m + p - 1) {
        for s in 0..p {
            let (micro, forward) = micro_of(s, t);
            let prev = previous[s as usize];
            let neighbour = if forward { s - 1 } else { s + 1 };
            let transfers =
                if (0..p).contains(&neighbour) { u8::from(valid(micro)) + u8::from(valid(prev)) } else { 0 };
            let mut start = end[s as usize];
            if transfers > 0 {
                let n = neighbour as usize;
                let send = 0.5 * costs[s as usize].pp.max(costs[n].pp);
                start = start.max(end[n]) + f64::from(transfers) * send;
            }
            let (f, b) = halves[s as usize];
            next[s as usize] = start
                + if valid(micro) {
                    if forward {
                        f
                    } else {
                        b
                    }
                } else {
                    0.0
                };
        }
        for s in 0..p {
            previous[s as usize] = micro_of(s, t).0;
        }
        std::mem::swap(&mut end, &mut next);
    }
    end.iter().copied().fold(0.0, f64::max)
}

/// What the parts of one estimate share: the plan, the quantities derived from it and the
/// communication groups of one rank.
struct Setting<'a> {
    cluster: &'a ClusterSpec,
    par: &'a Parallelism,
    train: bool,
    /// Pipeline stages.
    p: u64,
    /// Virtual stages (chunks) per pipeline stage.
    v: u64,
    /// Micro-batches per step and data-parallel replica.
    m: u64,
    /// What sequence parallelism divides activations by (`tp`, or 1 without it).
    sp_div: f64,
    /// The workload brings its own per-stage programs instead of repeated layers.
    stage_programs: bool,
    tied_embeddings: bool,
    /// How long a tensor-parallel collective takes on the stack that runs the step.
    tp_time: TpCollectiveTime,
    tp_group: Group,
    ep_group: Group,
    dp_group: Group,
    /// The data-parallel group of expert parameters (`dp / ep` ranks).
    edp_group: Group,
    /// A rank and its neighbour in the next pipeline stage.
    pp_peer: Group,
}

impl<'a> Setting<'a> {
    fn new(
        cluster: &'a ClusterSpec,
        job: &Job,
        par: &'a Parallelism,
        stage_programs: bool,
        tied_embeddings: bool,
        tp_time: TpCollectiveTime,
    ) -> Self {
        Setting {
            cluster,
            par,
            train: job.mode == Mode::Train,
            p: par.pp,
            v: par.interleave,
            m: job.global_batch / (par.dp * par.micro_batch),
            sp_div: if par.sp { par.tp as f64 } else { 1.0 },
            stage_programs,
            tied_embeddings,
            tp_time,
            tp_group: Group::new(par.tp, 1),
            ep_group: Group::new(par.ep, par.tp),
            dp_group: Group::new(par.dp, par.tp),
            edp_group: Group::new(par.dp / par.ep, par.tp * par.ep),
            pp_peer: Group::new(2, par.tp * par.dp),
        }
    }
}

/// Which blocks each pipeline stage holds. Profiles are fetched once; stages with the same
/// blocks (all but the ends, for evenly split repeated layers) are priced once.
struct StagePlan {
    embedding: Option<Arc<BlockProfile>>,
    head: Option<Arc<BlockProfile>>,
    /// The profile of each layer kind in use, by kind.
    layer_profiles: Vec<Option<Arc<BlockProfile>>>,
    /// Per stage, (layer kind, layers of that kind).
    compositions: Vec<Vec<(usize, u64)>>,
}

impl StagePlan {
    fn new(
        cache: &mut ProfileCache,
        setting: &Setting,
        shape: &BlockShape,
        programs: Option<&[usize]>,
    ) -> Result<Self, CostError> {
        let workload = cache.workload();
        let (p, v, sp_div) = (setting.p, setting.v, setting.sp_div);
        let embedding = if workload.has_embedding() { Some(cache.get(BlockKind::Embedding, shape)?) } else { None };
        let head = if workload.has_head() { Some(cache.get(BlockKind::Head, shape)?) } else { None };
        let mut layer_profiles: Vec<Option<Arc<BlockProfile>>> = Vec::new();
        let mut fetch = |kind: usize, cache: &mut ProfileCache| -> Result<(), CostError> {
            if layer_profiles.len() <= kind {
                layer_profiles.resize(kind + 1, None);
            }
            if layer_profiles[kind].is_none() {
                layer_profiles[kind] = Some(cache.get(BlockKind::Layer(kind), shape)?);
            }
            Ok(())
        };
        let mut compositions: Vec<Vec<(usize, u64)>> = vec![Vec::new(); p as usize];
        if let Some(kinds) = programs {
            for (s, &kind) in kinds.iter().enumerate() {
                fetch(kind, cache)?;
                compositions[s].push((kind, 1));
            }
        } else {
            // The layers (with the embedding first and the head last) cut into `p * v`
            // contiguous chunks by the shard pass's exact balancer over forward times; chunk `c`
            // on stage `c % p`.
            let mut layer_kinds: Vec<usize> = Vec::with_capacity(workload.layers() as usize);
            for &(kind, n) in &workload.layer_runs() {
                fetch(kind, cache)?;
                layer_kinds.extend(std::iter::repeat_n(kind, n as usize));
            }
            let profiles = &layer_profiles;
            let weights = || -> Vec<f64> {
                let time = |b: &BlockProfile| b.fwd_time.with_sequence_split(sp_div);
                let layers = layer_kinds.iter().filter_map(|&k| profiles[k].as_deref().map(time));
                embedding.as_deref().map(time).into_iter().chain(layers).chain(head.as_deref().map(time)).collect()
            };
            let ends_count = setting.par.layer_partition == LayerPartition::LayersAndEmbeddings;
            let chunk_of = match setting.par.layer_partition {
                LayerPartition::Time => cache.chunks(shape, setting.par.sp, p * v, weights),
                LayerPartition::Layers | LayerPartition::LayersAndEmbeddings => {
                    let counted: Vec<bool> = embedding
                        .iter()
                        .map(|_| ends_count)
                        .chain(layer_kinds.iter().map(|_| true))
                        .chain(head.iter().map(|_| ends_count))
                        .collect();
                    Arc::new(partition_by_count(&counted, p * v))
                }
            };
            let first = usize::from(embedding.is_some());
            for (i, &kind) in layer_kinds.iter().enumerate() {
                let stage = chunk_of.get(first + i).copied().unwrap_or(0) % p as usize;
                match compositions[stage].iter_mut().find(|(k, _)| *k == kind) {
                    Some(entry) => entry.1 += 1,
                    None => compositions[stage].push((kind, 1)),
                }
            }
        }
        Ok(StagePlan { embedding, head, layer_profiles, compositions })
    }

    /// The blocks of stage `s` of `p`: the embedding on the first, the head on the last.
    fn stage(&self, s: u64, p: u64) -> Stage {
        let mut blocks = Vec::new();
        if s == 0 {
            blocks.extend(self.embedding.iter().map(|b| (b.clone(), 1.0, false)));
        }
        for &(kind, n) in &self.compositions[s as usize] {
            blocks.extend(self.layer_profiles[kind].iter().map(|b| (b.clone(), n as f64, true)));
        }
        if s == p - 1 {
            blocks.extend(self.head.iter().map(|b| (b.clone(), 1.0, false)));
        }
        Stage { blocks }
    }
}

/// One stage's time per micro-batch by part, its traffic and what its memory is made of.
#[derive(Clone, Default)]
struct StageCost {
    time: f64,
    fwd: f64,
    bwd: f64,
    recompute: f64,
    /// The part of `fwd + bwd + recompute` in compute-bound kernels.
    clock_bound: f64,
    tp: f64,
    ep: f64,
    pp: f64,
    /// Exposed per-micro-batch ZeRO-2/3 traffic.
    zero3: f64,
    comm: CommBytes,
    dense_params: f64,
    expert_params: f64,
    param_bytes: f64,
    saved: f64,
    layer_full: f64,
    temp: f64,
    cache_bytes: f64,
    embedding_params: f64,
}

/// Prices every stage, reusing the cost of an earlier stage with the same blocks.
fn price_stages(setting: &Setting, stages: &StagePlan) -> Vec<StageCost> {
    let p = setting.p;
    let mut costs: Vec<StageCost> = Vec::with_capacity(p as usize);
    // (first stage, last stage, layers per kind) of each stage priced so far, and its index.
    type Signature<'a> = (bool, bool, &'a [(usize, u64)]);
    let mut priced: Vec<(Signature, usize)> = Vec::new();
    for s in 0..p {
        let signature = (s == 0, s == p - 1, stages.compositions[s as usize].as_slice());
        if let Some(&(_, i)) = priced.iter().find(|(sig, _)| *sig == signature) {
            let same = costs[i].clone();
            costs.push(same);
            continue;
        }
        priced.push((signature, costs.len()));
        costs.push(price_stage(setting, &stages.stage(s, p)));
    }
    costs
}

/// The cost of one stage: its blocks' compute and collectives, the pipeline sends and the
/// per-micro-batch ZeRO-2/3 traffic.
fn price_stage(setting: &Setting, stage: &Stage) -> StageCost {
    let (cluster, par, train) = (setting.cluster, setting.par, setting.train);
    let (p, v, m, sp_div) = (setting.p, setting.v, setting.m, setting.sp_div);
    let mut c = StageCost::default();
    let mut stream_bytes: f64 = 0.0;
    // Parameters of the stage's embedding and head by name: a tied head on the embedding's
    // stage reads the same token table, which is one weight, not two.
    let mut end_params: Vec<&str> = Vec::new();
    for (b, n, is_layer) in &stage.blocks {
        let n = *n;
        let fwd = b.fwd_time.with_sequence_split(sp_div);
        c.fwd += n * fwd;
        let bound = b.compute_bound_fraction();
        let before = c.fwd - n * fwd + c.bwd + c.recompute;
        // Passes of the block's collectives: forward, backward, forward again under full
        // recomputation (serving: forward only).
        let passes = if !train {
            1.0
        } else if *is_layer && par.recompute == Recompute::Full {
            3.0
        } else {
            2.0
        };
        if train {
            c.bwd += n * BACKWARD_FACTOR * fwd;
            if *is_layer {
                c.recompute += n * match par.recompute {
                    Recompute::Full => fwd,
                    Recompute::Selective => b.fwd_time.attention_core,
                    Recompute::None => 0.0,
                };
            }
        }
        c.clock_bound += bound * (c.fwd + c.bwd + c.recompute - before);
        for &(kind, bytes) in &b.tp_comms {
            let cost = collective(cluster, kind, bytes, setting.tp_group);
            c.tp += n * passes * setting.tp_time.time(cost.time_s);
            c.comm.add(&cost, n * passes * m as f64);
        }
        if p > 1 && setting.stage_programs {
            // A stage program's own sends forward and, training, the gradients of what it
            // received sent back: every tensor-parallel rank sends its local block.
            let back: &[f64] = if train { &b.recvs } else { &[] };
            for &bytes in b.sends.iter().chain(back) {
                let send = collective(cluster, CollectiveKind::SendRecv, bytes, setting.pp_peer);
                c.pp += n * send.time_s;
                c.comm.add(&send, n * m as f64);
            }
        }
        for &bytes in &b.ep_comm_bytes {
            let a2a = collective(cluster, CollectiveKind::AllToAll, bytes, setting.ep_group);
            c.ep += n * passes * a2a.time_s;
            c.comm.add(&a2a, n * passes * m as f64);
        }
        let (mut shared, mut shared_bytes) = (0.0, 0.0);
        if !is_layer {
            for (name, elements, bytes) in &b.named_params {
                if end_params.contains(&name.as_str()) {
                    shared += elements;
                    shared_bytes += bytes;
                } else {
                    end_params.push(name);
                }
            }
        }
        c.dense_params += n * (b.params - b.expert_params - shared);
        c.expert_params += n * b.expert_params;
        c.param_bytes += n * (b.param_bytes - shared_bytes);
        if !is_layer && setting.tied_embeddings && b.params > 0.0 {
            c.embedding_params = c.embedding_params.max(b.params);
        }
        let saved = |r: Recompute| match r {
            Recompute::None => b.saved_bytes.with_sequence_split(sp_div),
            Recompute::Selective => b.saved_bytes.replicated / sp_div + b.saved_bytes.tensor_parallel,
            Recompute::Full => b.stream_bytes / sp_div,
        };
        let policy = if *is_layer { par.recompute } else { Recompute::None };
        c.saved += n * saved(policy);
        if *is_layer && par.recompute == Recompute::Full {
            c.layer_full = c.layer_full.max(saved(Recompute::None));
        }
        c.temp = c.temp.max(2.0 * b.peak_kernel_bytes);
        c.cache_bytes += n * b.cache_bytes;
        if *is_layer {
            stream_bytes = stream_bytes.max(b.stream_bytes);
        }
    }
    if p > 1 && !setting.stage_programs {
        // Megatron scatters the activation over the tensor-parallel ranks before sending.
        let transfers = if train { 2.0 * v as f64 } else { 1.0 };
        let bytes = stream_bytes / par.tp as f64;
        let send = collective(cluster, CollectiveKind::SendRecv, bytes, setting.pp_peer);
        c.pp += transfers * send.time_s;
        c.comm.add(&send, transfers * m as f64);
    }
    if train {
        // An unfused accumulation is a memory-bound pass over every parameter of the stage in
        // each backward half.
        let params = c.dense_params + c.expert_params;
        c.bwd += params * par.grad_accumulation.bytes_per_param() / cluster.device.stream_bandwidth();
    }
    if train && par.zero >= 2 && par.dp > 1 {
        // Sharded gradients cannot accumulate locally: every micro-batch reduce-scatters
        // its gradients (overlapping its backward), and ZeRO-3 gathers the weights for the
        // forward and again for the backward.
        let params = c.dense_params + c.expert_params;
        let scatter = collective(cluster, CollectiveKind::ReduceScatter, params * GRAD_BYTES, setting.dp_group);
        let mut exposed = (scatter.time_s - c.bwd).max(0.0);
        c.comm.add(&scatter, m as f64);
        if par.zero == 3 {
            let gather = collective(cluster, CollectiveKind::AllGather, params * 2.0, setting.dp_group);
            exposed = (2.0 * gather.time_s + scatter.time_s - (c.fwd + c.bwd)).max(0.0);
            c.comm.add(&gather, 2.0 * m as f64);
        }
        c.zero3 = exposed;
    }
    c.time = c.fwd + c.bwd + c.recompute + c.tp + c.ep + c.pp + c.zero3;
    c
}

/// What runs after the pipeline drains (training): data-parallel sync, tied embeddings and the
/// optimizer.
struct AfterPipeline {
    /// The slowest stage's exposed time after the pipeline.
    time: f64,
    /// The exposed data-parallel traffic and optimizer time of the critical stage.
    dp_exposed_critical: f64,
    optimizer_critical: f64,
    /// The traffic of each stage after the pipeline, once per step.
    comm: Vec<CommBytes>,
}

impl AfterPipeline {
    /// Serving: nothing runs after the pipeline.
    fn none(stages: usize) -> Self {
        AfterPipeline {
            time: 0.0,
            dp_exposed_critical: 0.0,
            optimizer_critical: 0.0,
            comm: vec![CommBytes::default(); stages],
        }
    }
}

/// The training step's tail after the pipeline, per stage; the slowest counts.
fn after_pipeline(setting: &Setting, costs: &[StageCost], critical: usize) -> AfterPipeline {
    let (cluster, par, p) = (setting.cluster, setting.par, setting.p);
    let device = &cluster.device;
    let mut after = AfterPipeline::none(costs.len());
    for (i, c) in costs.iter().enumerate() {
        let mut exposed = 0.0;
        if par.zero < 3 {
            let mut sync = |params: f64, group: Group| {
                if params <= 0.0 || group.size <= 1 {
                    return;
                }
                // ZeRO-2 reduced its gradients micro-batch by micro-batch already.
                if par.zero < 2 {
                    let grads = if par.zero == 0 || par.grad_accumulation == GradAccumulation::Bf16Optimizer {
                        collective(cluster, CollectiveKind::AllReduce, params * GRAD_BYTES, group)
                    } else {
                        collective(cluster, CollectiveKind::ReduceScatter, params * GRAD_BYTES, group)
                    };
                    // DeepSpeed's engine reduces after its last step (`ReduceGrads`), overlapping nothing.
                    let last_backward = if par.schedule == Schedule::DeepSpeed { 0.0 } else { c.bwd + c.recompute };
                    exposed += (grads.time_s - last_backward).max(0.0);
                    after.comm[i].add(&grads, 1.0);
                }
                if par.zero >= 1 {
                    let gather = collective(cluster, CollectiveKind::AllGather, params * 2.0, group);
                    exposed += (gather.time_s - c.fwd).max(0.0);
                    after.comm[i].add(&gather, 1.0);
                }
            };
            sync(c.dense_params, setting.dp_group);
            sync(c.expert_params, setting.edp_group);
        }
        if c.embedding_params > 0.0 && p > 1 {
            let peers = Group::new(2, (p - 1) * par.tp * par.dp);
            let ar = collective(cluster, CollectiveKind::AllReduce, c.embedding_params * GRAD_BYTES, peers);
            exposed += ar.time_s;
            after.comm[i].add(&ar, 1.0);
        }
        let shard = |params: f64, ranks: u64| if par.zero >= 1 { params / ranks as f64 } else { params };
        let owned = shard(c.dense_params, par.dp) + shard(c.expert_params, par.dp / par.ep);
        let optimizer = owned * ADAM_BYTES_PER_PARAM / device.stream_bandwidth();
        if exposed + optimizer > after.time {
            after.time = exposed + optimizer;
        }
        if i == critical {
            after.dp_exposed_critical = exposed;
            after.optimizer_critical = optimizer;
        }
    }
    after
}

/// Memory per stage; the largest counts.
fn peak_memory(setting: &Setting, costs: &[StageCost]) -> Memory {
    let (par, train, p, v, m) = (setting.par, setting.train, setting.p, setting.v, setting.m);
    let mf = m as f64;
    let mut memory = Memory::default();
    for (s, c) in costs.iter().enumerate() {
        let mut mem =
            Memory { reserved: setting.cluster.device.reserved_bytes(), temporary: c.temp, ..Memory::default() };
        let params = c.dense_params + c.expert_params;
        let weight_bytes = if params > 0.0 { c.param_bytes / params } else { 2.0 };
        let shard = |params: f64, ranks: u64, from: u8| if par.zero >= from { params / ranks as f64 } else { params };
        let edp = par.dp / par.ep;
        mem.weights = weight_bytes * (shard(c.dense_params, par.dp, 3) + shard(c.expert_params, edp, 3));
        if train {
            mem.gradients = GRAD_BYTES * (shard(c.dense_params, par.dp, 2) + shard(c.expert_params, edp, 2));
            if par.grad_accumulation == GradAccumulation::Bf16Optimizer {
                mem.gradients += BF16_OPTIMIZER_LOW_PRECISION_GRAD_BYTES * (c.dense_params + c.expert_params);
            }
            mem.optimizer = OPTIMIZER_BYTES * (shard(c.dense_params, par.dp, 1) + shard(c.expert_params, edp, 1));
            let in_flight = match par.schedule {
                Schedule::GPipe => mf,
                Schedule::OneFOneB if v == 1 => (p - s as u64).min(m) as f64,
                // `TrainSchedule::num_pipe_buffers`: one more than 1F1B's, at least two.
                Schedule::DeepSpeed => (p - s as u64 + 1).min(m).max(2) as f64,
                Schedule::OneFOneB => {
                    let warmup_chunks = (p - s as u64 - 1) * 2 + (v - 1) * p + 1;
                    warmup_chunks.min(m * v) as f64 / v as f64
                }
            };
            mem.activations = c.saved * in_flight + c.layer_full;
        } else {
            mem.kv_cache = c.cache_bytes * mf;
        }
        mem.total =
            mem.weights + mem.gradients + mem.optimizer + mem.activations + mem.temporary + mem.kv_cache + mem.reserved;
        if mem.total > memory.total {
            memory = mem;
        }
    }
    memory
}

/// The step's (model, hardware) FLOPs: a tensor-parallel group does the replicated work once
/// and the sharded work `tp` times over; hardware FLOPs add the recomputed forward.
fn step_flops(
    cache: &mut ProfileCache,
    setting: &Setting,
    stages: &StagePlan,
    shape: &BlockShape,
) -> Result<(f64, f64), CostError> {
    let (par, train) = (setting.par, setting.train);
    let tpf = par.tp as f64;
    let mut model_fwd = 0.0;
    let mut recompute_fwd = 0.0;
    for s in 0..setting.p {
        for (b, n, is_layer) in &stages.stage(s, setting.p).blocks {
            let f = &b.fwd_flops;
            let unique = f.replicated + tpf * (f.tensor_parallel + f.attention_core);
            model_fwd += n * unique;
            if *is_layer {
                recompute_fwd += n * match par.recompute {
                    Recompute::Full => unique,
                    Recompute::Selective => tpf * f.attention_core,
                    Recompute::None => 0.0,
                };
            }
        }
    }
    if let Some(whole) = cache.workload().stage_programs(1).and_then(|kinds| kinds.first().copied()) {
        // Stage programs hold local blocks without regions: the model's FLOPs are the whole
        // graph's, once per micro-batch (full recomputation runs its forward again).
        let f = cache.get(BlockKind::Layer(whole), &BlockShape { tp: 1, ep: 1, ..*shape })?.fwd_flops.total();
        model_fwd = f;
        recompute_fwd = if par.recompute == Recompute::Full { f } else { 0.0 };
    }
    let replicas = setting.m as f64 * par.dp as f64;
    let passes = if train { 1.0 + BACKWARD_FACTOR } else { 1.0 };
    let model_flops = passes * model_fwd * replicas;
    let hardware_flops = model_flops + if train { recompute_fwd * replicas } else { 0.0 };
    Ok((model_flops, hardware_flops))
}

#[cfg(test)]
mod tests {
    use super::{deepspeed_pipeline, partition_by_count, StageCost};

    /// Transformer layers per chunk when the items of [`model`] are cut by count.
    fn layers_per_chunk(model: &[bool], chunks: u64) -> Vec<usize> {
        let chunk_of = partition_by_count(model, chunks);
        let mut per_chunk = vec![0; chunks as usize];
        // Item 0 is the embedding and the last the head; the layers are in between.
        for &chunk in &chunk_of[1..chunk_of.len() - 1] {
            per_chunk[chunk] += 1;
        }
        per_chunk
    }

    /// An embedding, `layers` transformer layers and a head, the ends counted or not.
    fn model(layers: usize, ends_count: bool) -> Vec<bool> {
        std::iter::once(ends_count)
            .chain(std::iter::repeat_n(true, layers))
            .chain(std::iter::once(ends_count))
            .collect()
    }

    #[test]
    fn count_partition_matches_deepspeed_type_partitions() {
        // BLOOM: 70 layers plus the two embeddings over 12 stages: 6 items each, so the end
        // stages hold 5 transformer layers and the others 6.
        let bloom = model(70, true);
        assert_eq!(layers_per_chunk(&bloom, 12), [5, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 5]);
        let chunk_of = partition_by_count(&bloom, 12);
        assert_eq!((chunk_of[0], chunk_of[71]), (0, 11), "embedding first, head last");
        // MT-NLG: 105 layers, 35 stages, 'type:transformer': 3 each, ends uncounted.
        let mt_nlg = model(105, false);
        assert_eq!(layers_per_chunk(&mt_nlg, 35), vec![3; 35]);
        let chunk_of = partition_by_count(&mt_nlg, 35);
        assert_eq!((chunk_of[0], chunk_of[106]), (0, 34));
        // BigScience's 78 layers over 12 stages: "the last stage has 1 block, while the rest
        // have 7".
        let mut uneven = vec![7; 11];
        uneven.push(1);
        assert_eq!(layers_per_chunk(&model(78, false), 12), uneven);
        // Every item lands in a chunk, in order.
        for (layers, chunks) in [(1, 1), (7, 3), (96, 16), (128, 64), (9, 4)] {
            let chunk_of = partition_by_count(&model(layers, false), chunks);
            assert!(chunk_of.windows(2).all(|w| w[0] <= w[1]) && chunk_of.iter().all(|&c| (c as u64) < chunks));
        }
    }

    /// A stage whose forward takes `fwd`, backward `2 fwd` plus a full recomputation `fwd`, and
    /// whose two sends per micro-batch take `pp` in all.
    fn stage(fwd: f64, pp: f64) -> StageCost {
        let (bwd, recompute) = (2.0 * fwd, fwd);
        StageCost { fwd, bwd, recompute, pp, time: fwd + bwd + recompute + pp, ..StageCost::default() }
    }

    #[test]
    fn deepspeed_equal_stages_take_one_f_one_b_time_without_transfers() {
        // Each step a stage waits only for the neighbour it exchanges with, and that neighbour
        // ran the other half the step before: no stage waits in the steady state, so the
        // schedule ends at 1F1B's `(m + p - 1) t` (a lockstep would take `2 m b + (p - 1) t`).
        for (p, m) in [(2u64, 3u64), (4, 8), (12, 128), (35, 240)] {
            let costs = vec![stage(1.0, 0.0); p as usize];
            let time = deepspeed_pipeline(&costs, m);
            assert_eq!(time, ((m + p - 1) * 4) as f64, "p={p} m={m}");
        }
    }

    #[test]
    fn deepspeed_pays_each_exchange_before_the_compute_it_feeds() {
        // Two stages, one micro-batch: stage 0 forwards (step 0); step 1 sends the activation
        // (stage 0) which stage 1 receives before its forward; step 2 stage 1 backwards after
        // receiving nothing new; step 3 stage 1 sends the gradient back before stage 0's
        // backward. Two transfers of 0.5 each on the critical path: 4 + 4 compute + 1.
        let costs = vec![stage(1.0, 1.0); 2];
        assert_eq!(deepspeed_pipeline(&costs, 1), 9.0);
    }

    #[test]
    fn deepspeed_slowest_stage_sets_the_pace() {
        // One stage twice as slow: the others wait for it, so the step is at least its `m`
        // micro-batches and at most 1F1B's `m t_max + (sum - t_max)` (522 of 524 here).
        let mut costs = vec![stage(1.0, 0.0); 4];
        costs[2] = stage(2.0, 0.0);
        let (m, slow) = (64u64, 8.0);
        let time = deepspeed_pipeline(&costs, m);
        let one_f_one_b = m as f64 * slow + (3.0 * 4.0);
        assert!(time >= m as f64 * slow && time <= one_f_one_b, "{time} against {one_f_one_b}");
        assert_eq!(time, 522.0);
    }
}
