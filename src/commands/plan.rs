//! `tessera plan`: the fastest parallel configuration of a model on a cluster, explained.
//!
//! MODEL is a zoo spec (`gpt-1t`, `llama3-70b:seq=4096`, `gpt:layers=24,hidden=2048,heads=16`)
//! or a model file (`.mlir`, `.json`, `.onnx`), which the `shard` pass partitions for each
//! tensor- and pipeline-parallel candidate ([`GraphWorkload`]). The adapter from zoo models to the
//! cost model's workloads is [`tessera::workload`]; cluster specs are [`tessera_ir::hardware`]'s.
//!
//! A request the planner refuses as asked (a model that fits at no parallelism, a `--fix` that
//! cannot work, no configuration at all, a number outside [`tessera_passes::planner::LIMITS`]) is
//! a [`PlanError`] that [`exit_code`] maps to exit status 2, as the README documents.

use crate::files::write_atomic;
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tessera::workload::ZooWorkload;
use tessera_frontend::onnx::{ImportOptions, Initializers};
use tessera_passes::cost::step::{Job, Mode};
use tessera_passes::cost::workload::{GraphWorkload, SymbolicDims, Workload};
use tessera_passes::planner::energy::{EnergyRequest, Objective};
use tessera_passes::planner::fixed::Fixed;
use tessera_passes::planner::run::{run_cost, RunSpec};
use tessera_passes::planner::{plan_with_energy, PlanError, Request};

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
    /// Sequence length (serving: the context length); the model's default when absent (a model
    /// file with a sequence dimension has none: give it).
    #[arg(long)]
    pub seq: Option<u64>,
    /// The symbolic input dimension of a model file that is its batch, when its name does not say
    /// so (`batch`, `batch_size`, ... are found without it).
    #[arg(long, value_name = "NAME")]
    pub batch_dim: Option<String>,
    /// The symbolic input dimension of a model file that is its sequence, when its name does not
    /// say so (`seq`, `sequence`, `sequence_length`, ... are found without it).
    #[arg(long, value_name = "NAME")]
    pub seq_dim: Option<String>,
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
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub energy: EnergyArgs,
}

/// Energy: per-stage clocks, the time–energy frontier (`energy` in the plan) and what the
/// search minimizes ([`tessera_passes::planner::energy`]). Without any of these flags the plan
/// has no `energy` object and is ranked by step time at full clocks.
#[derive(Args)]
pub struct EnergyArgs {
    /// What to minimize: time (step time), energy (joules per token) or cost (dollars per
    /// token: GPU-hours at --gpu-hour-price plus facility energy at --electricity-price).
    #[arg(long, value_name = "time|energy|cost")]
    pub objective: Option<String>,
    /// Board power limit per GPU, W: clocks that would draw more are not used.
    #[arg(long, value_name = "W", allow_negative_numbers = true)]
    pub power_cap: Option<f64>,
    /// Electricity price for the cost objective, USD per kWh [default: 0.08].
    #[arg(long, value_name = "USD_PER_KWH", allow_negative_numbers = true)]
    pub electricity_price: Option<f64>,
}

impl EnergyArgs {
    /// The request, `None` when no energy flag is given; prices come from the run's flags
    /// where given.
    fn request(&self, run: &RunArgs) -> Result<Option<EnergyRequest>, SpecError> {
        if self.objective.is_none() && self.power_cap.is_none() {
            if self.electricity_price.is_some() {
                return Err(SpecError("--electricity-price prices the cost objective: give --objective cost".into()));
            }
            return Ok(None);
        }
        let objective = match &self.objective {
            Some(text) => Objective::parse(text).map_err(|e| SpecError(e.to_string()))?,
            None => Objective::Time,
        };
        let mut request = EnergyRequest::new(objective);
        request.power_cap_w = self.power_cap;
        if let Some(price) = self.electricity_price {
            if !(price.is_finite() && price >= 0.0) {
                return Err(SpecError(format!("--electricity-price {price}: must not be negative")));
            }
            request.electricity_usd_per_kwh = price;
        }
        if let Some(price) = run.gpu_hour_price {
            request.gpu_hour_price_usd = price;
        }
        if let Some(pue) = run.pue {
            request.pue = pue;
        }
        Ok(Some(request))
    }
}

/// The whole run (`run` in the plan): given `--tokens`, its days, GPU-hours, energy, dollars
/// and emissions ([`tessera_passes::planner::run`]); the other flags need `--tokens`.
#[derive(Args)]
pub struct RunArgs {
    /// Tokens to train on (training) or to generate (serving), e.g. 15.6e12.
    #[arg(long, allow_negative_numbers = true)]
    pub tokens: Option<f64>,
    /// Facility power usage effectiveness (energy drawn over IT energy) [default: 1.1].
    #[arg(long, allow_negative_numbers = true)]
    pub pue: Option<f64>,
    /// Price of one GPU-hour in USD [default: 2.0].
    #[arg(long, allow_negative_numbers = true)]
    pub gpu_hour_price: Option<f64>,
    /// Grid carbon intensity, g CO2e per kWh [default: 367, the 2023 US average].
    #[arg(long, value_name = "G_PER_KWH", allow_negative_numbers = true)]
    pub grid_carbon: Option<f64>,
    /// Mean time between job-stopping failures of ONE NODE, hours [default: 6300, from Llama 3's run].
    #[arg(long, allow_negative_numbers = true)]
    pub mtbf_hours: Option<f64>,
    /// Aggregate checkpoint storage bandwidth, GB/s [default: 2000].
    #[arg(long, allow_negative_numbers = true)]
    pub storage_gbps: Option<f64>,
    /// Minutes to reschedule a failed job before it reads its checkpoint [default: 10].
    #[arg(long, allow_negative_numbers = true)]
    pub restart_minutes: Option<f64>,
}

impl RunArgs {
    /// The run's spec, `None` without `--tokens`; a flag without `--tokens` or a number no run
    /// can have is a [`SpecError`].
    /// `cost_objective`: the cost objective prices GPU-hours and energy without a whole run,
    /// so `--pue` and `--gpu-hour-price` stand without `--tokens` (and are checked here).
    fn spec(&self, cost_objective: bool) -> Result<Option<RunSpec>, SpecError> {
        let given = [
            ("--pue", self.pue.is_some() && !cost_objective),
            ("--gpu-hour-price", self.gpu_hour_price.is_some() && !cost_objective),
            ("--grid-carbon", self.grid_carbon.is_some()),
            ("--mtbf-hours", self.mtbf_hours.is_some()),
            ("--storage-gbps", self.storage_gbps.is_some()),
            ("--restart-minutes", self.restart_minutes.is_some()),
        ];
        let Some(tokens) = self.tokens else {
            return match given.iter().find(|(_, is_given)| *is_given) {
                Some((flag, _)) => Err(SpecError(format!("{flag} prices a whole run: give its --tokens too"))),
                None => {
                    // Checked as a run would check them, with a placeholder token count.
                    let defaults = RunSpec::with_tokens(1.0);
                    let prices = RunSpec {
                        pue: self.pue.unwrap_or(defaults.pue),
                        gpu_hour_price_usd: self.gpu_hour_price.unwrap_or(defaults.gpu_hour_price_usd),
                        ..defaults
                    };
                    prices.validate().map_err(|e| SpecError(e.to_string()))?;
                    Ok(None)
                }
            };
        };
        let defaults = RunSpec::with_tokens(tokens);
        let spec = RunSpec {
            tokens,
            pue: self.pue.unwrap_or(defaults.pue),
            gpu_hour_price_usd: self.gpu_hour_price.unwrap_or(defaults.gpu_hour_price_usd),
            grid_carbon_g_per_kwh: self.grid_carbon.unwrap_or(defaults.grid_carbon_g_per_kwh),
            mtbf_hours_per_node: self.mtbf_hours.unwrap_or(defaults.mtbf_hours_per_node),
            storage_gb_per_s: self.storage_gbps.unwrap_or(defaults.storage_gb_per_s),
            restart_minutes: self.restart_minutes.unwrap_or(defaults.restart_minutes),
        };
        spec.validate().map_err(|e| SpecError(e.to_string()))?;
        Ok(Some(spec))
    }
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

/// A request that is wrong as written (a bad cluster spec, model dimensions that cannot be told
/// apart, a flag the model cannot use): exit status 2, like a plan refused as asked.
#[derive(Debug)]
pub struct SpecError(String);

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SpecError {}

/// The exit status for errors that need their own: 2 for a plan refused as asked or a request
/// wrong as written. `main` calls this before falling back to 1.
pub fn exit_code(err: &anyhow::Error) -> Option<u8> {
    let refused = err.downcast_ref::<PlanError>().is_some_and(|e| e.is_unsatisfiable());
    let bad_cluster = err
        .downcast_ref::<tessera_frontend::cluster::ClusterError>()
        .is_some_and(|e| !matches!(e, tessera_frontend::cluster::ClusterError::Io { .. }));
    let bad_spec = err.downcast_ref::<SpecError>().is_some();
    (refused || bad_cluster || bad_spec).then_some(2)
}

pub fn run(args: PlanArgs) -> Result<()> {
    let cluster = tessera_frontend::cluster::parse(&args.cluster)?;
    let energy = args.energy.request(&args.run)?;
    let run_spec = args.run.spec(energy.is_some_and(|e| e.objective == Objective::Cost))?;
    let workload = load_workload(&args)?;
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
    let result = plan_with_energy(workload.as_ref(), &cluster, &request, energy.as_ref(), &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let mut planned = result?;
    if let Some(spec) = &run_spec {
        planned.run = Some(run_cost(&planned, cluster.nodes, spec));
    }
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

/// A model file (or a zoo ResNet, which has no transformer config) becomes a
/// [`GraphWorkload`]; anything else is a zoo spec. An ONNX file's floating-point initializers
/// are its parameters ([`Initializers::Parameters`]), and its batch and sequence are the
/// symbolic input dimensions [`SymbolicDims::infer`] names.
fn load_workload(args: &PlanArgs) -> Result<Box<dyn Workload>> {
    let (model, seq) = (args.model.as_str(), args.seq);
    let path = Path::new(model);
    let is_file = ["mlir", "json", "onnx"].iter().any(|e| path.extension().is_some_and(|x| x == *e));
    if is_file || tessera_frontend::zoo::resnet::is_resnet_spec(model) {
        let options = ImportOptions { initializers: Initializers::Parameters, ..ImportOptions::default() };
        let graph = tessera_frontend::load::load_model_with(path, &options)?;
        let dims = SymbolicDims::infer(&graph, args.batch_dim.as_deref(), args.seq_dim.as_deref())
            .map_err(|e| SpecError(format!("{model}: {e}")))?;
        let seq = match seq {
            Some(seq) => seq,
            None if dims.has_seq(&graph) => {
                let message =
                    format!("{model}: the model's sequence dimension '{}' needs a length: give --seq", dims.seq);
                return Err(SpecError(message).into());
            }
            None => 1,
        };
        return Ok(Box::new(GraphWorkload::with_dims(graph, seq, dims)?));
    }
    if args.batch_dim.is_some() || args.seq_dim.is_some() {
        return Err(SpecError(format!(
            "--batch-dim and --seq-dim name dimensions of a model file, and '{model}' is a zoo model"
        ))
        .into());
    }
    let mut cfg = tessera_frontend::zoo::spec::parse(model)?;
    if let Some(seq) = seq {
        cfg.seq = seq;
        cfg.validate()?;
    }
    Ok(Box::new(ZooWorkload::new(cfg)))
}
