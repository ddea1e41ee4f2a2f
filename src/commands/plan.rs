//! `tessera plan`: the fastest parallel configuration of a model on a cluster, explained.
//!
//! MODEL is a zoo spec (`gpt-1t`, `llama3-70b:seq=4096`, `gpt:layers=24,hidden=2048,heads=16`)
//! or a model file (`.mlir`, `.json`, `.onnx`; planned with data parallelism only until graphs
//! can be sharded). This module also adapts the frontend's zoo models and cluster specs to the
//! cost model's types (`passes` does not depend on the frontend; `passes/tests/support` holds
//! the same adapter for the library's tests).
//!
//! A model that fits at no parallelism is a [`PlanError::Infeasible`]; [`exit_code`] maps it to
//! exit status 2.

use crate::files::write_atomic;
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tessera_frontend::cluster::{ClusterSpec, LinkSpec};
use tessera_frontend::zoo::build::{build_block, check_sharding, Block, BuildOptions, CommSite, Role};
use tessera_frontend::zoo::config::{LayerKind, ModelConfig};
use tessera_ir::dtype::DType;
use tessera_passes::cost::hardware::{Cluster, Device, Link};
use tessera_passes::cost::profile::{BlockGraph, Comm, Region};
use tessera_passes::cost::step::{Job, Mode};
use tessera_passes::cost::workload::{BlockKind, GraphWorkload, KnobError, Shape, Workload};
use tessera_passes::planner::fixed::Fixed;
use tessera_passes::planner::{plan, PlanError, Request};

#[derive(Args)]
pub struct PlanArgs {
    /// A zoo model (preset or family:key=value,...) or a model file (.mlir, .json, .onnx).
    pub model: String,
    /// A cluster preset with overrides (h100-80g-sxm:gpus=3072) or a cluster .json file.
    #[arg(long)]
    pub cluster: String,
    /// Sequences per step over all data-parallel replicas (serving: sequences decoded at once).
    #[arg(long)]
    pub global_batch: u64,
    /// Sequence length (serving: the context length); the model's default when absent.
    #[arg(long)]
    pub seq: Option<u64>,
    #[arg(long, value_enum, default_value_t = PlanMode::Train)]
    pub mode: PlanMode,
    /// Knobs to fix, e.g. tp=8,pp=8,dp=1,micro_batch=1,interleave=3,recompute=selective,sp=on,zero=1.
    #[arg(long, value_name = "KNOB=VALUE,...")]
    pub fix: Option<String>,
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
    /// Write the plan here (atomically) instead of standard output.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// How many runners-up to list with the reason they lost.
    #[arg(long, default_value_t = 5)]
    pub alternatives: usize,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum PlanMode {
    Train,
    Serve,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum PlanFormat {
    /// A readable summary and a table of alternatives.
    Text,
    /// Every field of the plan as JSON.
    Json,
}

/// The exit status for errors that need their own: 2 when the model fits at no parallelism.
/// `main` calls this before falling back to 1.
pub fn exit_code(err: &anyhow::Error) -> Option<u8> {
    err.downcast_ref::<PlanError>().filter(|e| e.is_infeasible()).map(|_| 2)
}

pub fn run(args: PlanArgs) -> Result<()> {
    let spec = tessera_frontend::cluster::parse(&args.cluster)?;
    let cluster = to_cluster(&spec);
    let workload = load_workload(&args.model, args.seq)?;
    let fixed = match &args.fix {
        Some(text) => Fixed::parse(text)?,
        None => Fixed::default(),
    };
    let mode = match args.mode {
        PlanMode::Train => Mode::Train,
        PlanMode::Serve => Mode::Serve,
    };
    let job = Job { mode, global_batch: args.global_batch, seq: args.seq.unwrap_or_else(|| workload.seq()) };
    let request = Request { job, fixed, alternatives: args.alternatives };

    // A progress bar only where someone watches (indicatif hides it when stderr is not a terminal).
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("planning {bar:40} {pos}/{len} configurations ({elapsed})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let started = Instant::now();
    let result = plan(workload.as_ref(), &cluster, &request, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let planned = result?;
    let text = match args.format {
        PlanFormat::Text => format!("{planned}\nplanned in {elapsed:.2} s\n"),
        PlanFormat::Json => serde_json::to_string_pretty(&planned).context("serializing the plan")? + "\n",
    };
    match &args.output {
        Some(path) => write_atomic(path, text.as_bytes()),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

/// A model file becomes a [`GraphWorkload`]; anything else is a zoo spec.
fn load_workload(model: &str, seq: Option<u64>) -> Result<Box<dyn Workload>> {
    let path = Path::new(model);
    let is_file = ["mlir", "json", "onnx"].iter().any(|e| path.extension().is_some_and(|x| x == *e));
    if is_file {
        let graph = tessera_frontend::load::load_model(path)?;
        return Ok(Box::new(GraphWorkload { graph, seq: seq.unwrap_or(1) }));
    }
    let mut cfg = tessera_frontend::zoo::spec::parse(model)?;
    if let Some(seq) = seq {
        cfg.seq = seq;
        cfg.validate()?;
    }
    Ok(Box::new(ZooWorkload::new(cfg)))
}

/// A zoo model as a workload: one graph per distinct block, built per rank.
pub struct ZooWorkload {
    cfg: ModelConfig,
    kinds: Vec<(LayerKind, u64)>,
}

impl ZooWorkload {
    pub fn new(cfg: ModelConfig) -> ZooWorkload {
        let kinds = cfg.layer_counts();
        ZooWorkload { cfg, kinds }
    }
}

impl Workload for ZooWorkload {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn layer_runs(&self) -> Vec<(usize, u64)> {
        self.kinds.iter().enumerate().map(|(i, &(_, n))| (i, n)).collect()
    }

    fn has_embedding(&self) -> bool {
        true
    }

    fn has_head(&self) -> bool {
        true
    }

    fn tied_embeddings(&self) -> bool {
        self.cfg.tied_embeddings
    }

    fn seq(&self) -> u64 {
        self.cfg.seq
    }

    fn parameters(&self) -> u64 {
        self.cfg.parameter_count()
    }

    fn max_tp(&self) -> u64 {
        self.cfg.heads
    }

    fn experts(&self) -> u64 {
        self.cfg.experts
    }

    fn check_tp(&self, tp: u64) -> Result<(), KnobError> {
        let opts = BuildOptions { tp, ..BuildOptions::new(&self.cfg) };
        check_sharding(&self.cfg, &opts).map_err(|e| KnobError { knob: "tp", message: e.to_string() })
    }

    fn check_ep(&self, ep: u64) -> Result<(), KnobError> {
        let opts = BuildOptions { ep, ..BuildOptions::new(&self.cfg) };
        check_sharding(&self.cfg, &opts).map_err(|e| KnobError { knob: "ep", message: e.to_string() })
    }

    fn build(&self, block: BlockKind, shape: &Shape) -> Result<BlockGraph, String> {
        let block = match block {
            BlockKind::Embedding => Block::Embedding,
            BlockKind::Head => Block::Head,
            BlockKind::Layer(k) => Block::Layer(self.kinds[..k].iter().map(|&(_, n)| n).sum()),
        };
        let opts = BuildOptions {
            batch: shape.batch,
            seq: shape.seq,
            tp: shape.tp,
            ep: shape.ep,
            training: shape.training,
            kv_cache: shape.kv_cache,
        };
        let built = build_block(&self.cfg, block, &opts).map_err(|e| e.to_string())?;
        let regions = built
            .roles
            .iter()
            .map(|r| match r {
                Role::Replicated => Region::Replicated,
                Role::TensorParallel => Region::TensorParallel,
                Role::AttentionCore => Region::AttentionCore,
            })
            .collect();
        let comms = built
            .comms
            .iter()
            .map(|c| match *c {
                CommSite::TpAllReduce(v) => Comm::TpAllReduce(v),
                CommSite::EpDispatch(v) | CommSite::EpCombine(v) => Comm::EpAllToAll(v),
            })
            .collect();
        Ok(BlockGraph {
            graph: built.graph,
            regions,
            comms,
            expert_params: built.expert_params,
            stream_inputs: built.stream_inputs,
            cache_inputs: built.cache_inputs,
        })
    }
}

/// A cluster spec (datasheet units) in the cost model's SI units.
pub fn to_cluster(c: &ClusterSpec) -> Cluster {
    let d = &c.device;
    let dtypes = |key: &str| match key {
        "bf16" => vec![DType::BF16],
        "fp16" => vec![DType::F16],
        "fp32" => vec![DType::F32],
        "fp8" => vec![DType::F8E4M3, DType::F8E5M2],
        _ => vec![],
    };
    let peak_flops =
        d.peak_tflops.iter().flat_map(|(k, &v)| dtypes(k).into_iter().map(move |dt| (dt, v * 1e12))).collect();
    let link = |l: &LinkSpec| Link {
        name: l.name.clone(),
        bandwidth: l.bandwidth_gbps * 1e9,
        latency_s: l.latency_us * 1e-6,
        efficiency: l.efficiency,
    };
    Cluster {
        name: c.name.clone(),
        device: Device {
            name: d.name.clone(),
            peak_flops,
            // Without an fp32 entry, take CUDA cores as 1/16 of the tensor-core peak (A100: 19.5 vs 312).
            vector_flops: d
                .peak_tflops
                .get("fp32")
                .copied()
                .filter(|&v| v > 0.0)
                .unwrap_or_else(|| d.peak_tflops.values().copied().fold(0.0, f64::max) / 16.0)
                * 1e12,
            memory_bytes: d.memory_gb * 1e9,
            hbm_bandwidth: d.hbm_gbps * 1e9,
            tdp_w: d.tdp_w,
            idle_w: d.idle_w,
            gemm_efficiency: d.gemm_efficiency,
            gemm_half_dim: d.gemm_half_dim,
            memory_efficiency: d.memory_efficiency,
            kernel_overhead_s: d.kernel_overhead_us * 1e-6,
            reserved_bytes: d.reserved_gb * 1e9,
        },
        gpus: c.gpus,
        gpus_per_node: c.gpus_per_node,
        intra: link(&c.intra_node),
        inter: link(&c.inter_node),
    }
}
