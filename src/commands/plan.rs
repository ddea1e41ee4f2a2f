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
use tessera_passes::planner::serve::{plan_serving, Arrival, ServeError, ServePlan, ServeWorkload, Slo};
use tessera_passes::planner::{plan_with_energy, PlanError, Request};

#[derive(Args)]
pub struct PlanArgs {
    /// A zoo model (preset or family:key=value,...) or a model file (.mlir, .json, .onnx).
    pub model: String,
    /// A cluster preset with overrides (h100-80g-sxm:gpus=3072) or a cluster .json file.
    #[arg(long)]
    pub cluster: String,
    /// Sequences per step over all data-parallel replicas (serving: sequences decoded at once);
    /// required unless --workload describes the serving load.
    #[arg(long)]
    pub global_batch: Option<u64>,
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
    /// Also write a self-contained HTML report here (pipeline timeline, memory, traffic,
    /// alternatives, energy and serving frontiers as inline SVG).
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,
    /// How many runners-up to list with the reason they lost.
    #[arg(long, default_value_t = 5)]
    pub alternatives: usize,
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub energy: EnergyArgs,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// A serving plan under latency targets ([`tessera_passes::planner::serve`]): with
/// `--mode serve --workload`, the plan is the `serve` object instead of a decode step.
#[derive(Args)]
pub struct ServeArgs {
    /// Tokens in and out per request and the load: in=I,out=O[,rate=R requests/s|batch=B].
    #[arg(long, value_name = "in=I,out=O[,rate=R|batch=B]")]
    pub workload: Option<String>,
    /// Latency targets in milliseconds: ttft=MS,tpot=MS.
    #[arg(long, value_name = "ttft=MS,tpot=MS")]
    pub slo: Option<String>,
    /// Element type of weights, activations and KV cache when serving a zoo model.
    #[arg(long, value_name = "bf16|fp8")]
    pub dtype: Option<String>,
}

impl ServeArgs {
    fn parse(&self, mode: PlanMode) -> Result<Option<(ServeWorkload, Option<Slo>)>, SpecError> {
        let Some(text) = &self.workload else {
            for (flag, given) in [("--slo", self.slo.is_some()), ("--dtype", self.dtype.is_some())] {
                if given {
                    return Err(SpecError(format!("{flag} needs a serving --workload")));
                }
            }
            return Ok(None);
        };
        if !matches!(mode, PlanMode::Serve) {
            return Err(SpecError("--workload describes serving: give --mode serve".into()));
        }
        let pairs = key_values("--workload", text)?;
        let (mut input, mut output, mut arrival) = (None, None, None);
        for (key, value) in pairs {
            let bad = || SpecError(format!("--workload {key}={value}: expected a positive number"));
            match key.as_str() {
                "in" => input = Some(value.parse::<u64>().map_err(|_| bad())?),
                "out" => output = Some(value.parse::<u64>().map_err(|_| bad())?),
                "rate" => arrival = Some(Arrival::Rate(value.parse::<f64>().map_err(|_| bad())?)),
                "batch" => arrival = Some(Arrival::Batch(value.parse::<u64>().map_err(|_| bad())?)),
                other => return Err(SpecError(format!("--workload: unknown key '{other}' (in, out, rate, batch)"))),
            }
        }
        let (Some(input_tokens), Some(output_tokens)) = (input, output) else {
            return Err(SpecError("--workload needs in=TOKENS and out=TOKENS".into()));
        };
        let workload = ServeWorkload { input_tokens, output_tokens, arrival: arrival.unwrap_or(Arrival::Rate(1.0)) };
        let slo = match &self.slo {
            None => None,
            Some(text) => {
                let (mut ttft, mut tpot) = (None, None);
                for (key, value) in key_values("--slo", text)? {
                    let ms = value
                        .parse::<f64>()
                        .map_err(|_| SpecError(format!("--slo {key}={value}: expected milliseconds")))?;
                    match key.as_str() {
                        "ttft" => ttft = Some(ms / 1e3),
                        "tpot" => tpot = Some(ms / 1e3),
                        other => return Err(SpecError(format!("--slo: unknown key '{other}' (ttft, tpot)"))),
                    }
                }
                Some(Slo { ttft_s: ttft.unwrap_or(f64::INFINITY), tpot_s: tpot.unwrap_or(f64::INFINITY) })
            }
        };
        if let Some(s) = slo {
            for (key, v) in [("ttft", s.ttft_s), ("tpot", s.tpot_s)] {
                if v.is_nan() || v <= 0.0 {
                    return Err(SpecError(format!(
                        "--slo {key}={}: must be a positive number of milliseconds",
                        v * 1e3
                    )));
                }
            }
        }
        Ok(Some((workload, slo)))
    }
}

/// `key=value,...` pairs of a flag.
fn key_values(flag: &str, text: &str) -> Result<Vec<(String, String)>, SpecError> {
    text.split(',')
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
            _ => Err(SpecError(format!("{flag} {text}: expected key=value pairs separated by commas"))),
        })
        .collect()
}

/// The JSON of a serving plan: what was asked and the `serve` object.
#[derive(serde::Serialize)]
struct ServeOutput<'a> {
    model: String,
    cluster: &'a str,
    device: &'a str,
    gpus: u64,
    parameters: u64,
    dtype: &'a str,
    workload: ServeWorkload,
    serve: ServePlan,
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
    let bad_serving = err.downcast_ref::<ServeError>().is_some_and(|e| !matches!(e, ServeError::Cost(_)));
    let bad_serving_mesh = err.downcast_ref::<tessera::serve::ServeMeshError>().is_some();
    (refused || bad_cluster || bad_spec || bad_serving || bad_serving_mesh).then_some(2)
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
    if let Some((serve_workload, slo)) = args.serve.parse(args.mode)? {
        return serve(&args, workload.as_ref(), &cluster, serve_workload, slo);
    }
    let Some(global_batch) = args.global_batch else {
        return Err(SpecError("--global-batch is required (or, serving, --workload)".into()).into());
    };
    let job = Job { mode, global_batch, seq: args.seq.unwrap_or_else(|| workload.seq()) };
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
    if let Some(path) = &args.report {
        write_atomic(path, tessera_passes::planner::html::plan_report(&planned, &cluster.device).as_bytes())?;
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

/// `tessera plan --mode serve --workload ...`: the serving plan, as text or JSON.
fn serve(
    args: &PlanArgs,
    workload: &dyn Workload,
    cluster: &tessera_ir::hardware::ClusterSpec,
    serve_workload: ServeWorkload,
    slo: Option<Slo>,
) -> Result<()> {
    let started = Instant::now();
    let plan = plan_serving(workload, cluster, &serve_workload, slo)?;
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(path) = &args.report {
        let html = tessera_passes::planner::html::serve_report(workload.name(), &cluster.name, &plan);
        write_atomic(path, html.as_bytes())?;
    }
    let output = ServeOutput {
        model: workload.name().to_string(),
        cluster: &cluster.name,
        device: &cluster.device.name,
        gpus: cluster.gpus,
        parameters: workload.parameters(),
        dtype: args.serve.dtype.as_deref().unwrap_or("bf16"),
        workload: serve_workload,
        serve: plan,
    };
    let text = match args.format {
        PlanFormat::Text => format!("{}planned in {elapsed:.2} s\n", serve_text(&output)),
        PlanFormat::Json => serde_json::to_string_pretty(&output).context("serializing the plan")? + "\n",
    };
    match &args.output {
        Some(path) => write_atomic(path, text.as_bytes()),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

fn serve_text(o: &ServeOutput) -> String {
    use std::fmt::Write;
    let s = &o.serve;
    let w = &o.workload;
    let load = match w.arrival {
        Arrival::Rate(r) => format!("{r} requests/s"),
        Arrival::Batch(b) => format!("batch {b}"),
    };
    let mut t = String::new();
    let _ = writeln!(
        t,
        "serving plan for {} on {} ({} x {}), {}: {} tokens in, {} out, {load}\n",
        o.model, o.cluster, o.gpus, o.device, o.dtype, w.input_tokens, w.output_tokens
    );
    let layout =
        |l: &tessera_passes::planner::serve::PhaseLayout| format!("{} x (tp={} pp={})", l.replicas, l.tp, l.pp);
    if s.placement == "disaggregated" {
        let _ = writeln!(
            t,
            "  placement     disaggregated: prefill on {}, decode on {}",
            layout(&s.prefill),
            layout(&s.decode)
        );
    } else {
        let _ = writeln!(t, "  placement     colocated: {}", layout(&s.decode));
    }
    let _ = writeln!(
        t,
        "  latency       TTFT {:.1} ms (prefill {:.1} ms, KV transfer {:.2} ms), TPOT {:.1} ms (decode step {:.1} ms at batch {})",
        s.ttft_s * 1e3,
        s.prefill_s * 1e3,
        s.kv_transfer_s * 1e3,
        s.tpot_s * 1e3,
        s.decode_step_s * 1e3,
        s.batch
    );
    let _ = writeln!(
        t,
        "  throughput    {:.2} requests/s, {:.0} output tokens/s; goodput {:.3} requests/s per GPU{}",
        s.requests_per_s,
        s.output_tokens_per_s,
        s.goodput_requests_per_s_per_gpu,
        match &s.slo {
            Some(slo) => format!(" under TTFT {:.0} ms and TPOT {:.0} ms", slo.ttft_s * 1e3, slo.tpot_s * 1e3),
            None => String::new(),
        }
    );
    let _ = writeln!(
        t,
        "  KV cache      {:.1} GB per decode GPU of {:.1} GB free after weights; at most {} sequences per replica",
        s.kv_cache_bytes_per_gpu / 1e9,
        s.kv_capacity_bytes_per_gpu / 1e9,
        s.max_batch
    );
    let _ = writeln!(t, "  energy        {:.2} J per output token", s.energy_j_per_token);
    if let Some(other) = &s.other_placement {
        let _ = writeln!(
            t,
            "  other         best {} plan: TTFT {:.1} ms, TPOT {:.1} ms, goodput {:.3} requests/s per GPU{}",
            other.placement,
            other.ttft_s * 1e3,
            other.tpot_s * 1e3,
            other.goodput_requests_per_s_per_gpu,
            if other.meets_slo { "" } else { " (misses the SLO)" }
        );
    }
    let _ = writeln!(t, "\nthroughput-latency frontier (decode batch)");
    let _ = writeln!(t, "  {:>6}  {:>10}  {:>10}  {:>16}", "batch", "TPOT", "TTFT", "tokens/s per GPU");
    for p in &s.frontier {
        let _ = writeln!(
            t,
            "  {:>6}  {:>7.1} ms  {:>7.1} ms  {:>16.1}",
            p.batch,
            p.tpot_s * 1e3,
            p.ttft_s * 1e3,
            p.output_tokens_per_s_per_gpu
        );
    }
    t
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
        if args.serve.dtype.as_deref().is_some_and(|d| d != "bf16") {
            return Err(SpecError(format!("--dtype sets a zoo model's element type; '{model}' brings its own")).into());
        }
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
    match args.serve.dtype.as_deref() {
        None | Some("bf16") => {}
        Some("fp8") => cfg.dtype = tessera_ir::dtype::DType::F8E4M3,
        Some(other) => return Err(SpecError(format!("--dtype {other}: expected bf16 or fp8")).into()),
    }
    if let Some(seq) = seq {
        cfg.seq = seq;
        cfg.validate()?;
    }
    Ok(Box::new(ZooWorkload::new(cfg)))
}
