//! `tessera bench egraph`: the `egraph` pass against greedy rewriting without an e-graph, on
//! whole models: estimated cost (the roofline of `egraph::cost`) before and after by each
//! extraction method (greedy, local search, MIP with its gap), the guarded result, whether the
//! e-graph holds greedy rewriting's result, the saturation phases with starved rules, and the
//! optimization time. `--measure` also compiles the graph before and after for the CPU and
//! runs both on the same inputs, interleaved, by process CPU time per run (median, quartiles). Run it from a release build;
//! numbers go to BENCHMARKS.md.
//!
//! `tessera bench kernels --target cuda`: fused GPU kernels (an elementwise chain, softmax,
//! layer norm over 8192x1024 f32) timed with CUDA events, their bandwidth (bytes each kernel
//! must move / time) against the device's device-to-device copy bandwidth.
//!
//! `tessera bench kernels --target cpu --out FILE`: the calibration table of this machine
//! (`commands::bench_kernels_cpu`), which `--kernel-costs FILE` makes `bench egraph` price by.
//!
//! `tessera bench serve --url U`: a completions server under Poisson load
//! (`tessera::http::bench`), reporting vLLM `benchmark_serving`'s fields.
//!
//! `tessera bench import MODEL --dim NAME=N`: import and CPU compile of a model file, phase by
//! phase, with peak memory against the weights' bytes (`commands::bench_import`).

use anyhow::{anyhow, bail, Result};
use clap::{Args, ValueEnum};
use std::path::Path;
use std::time::{Duration, Instant};
use tessera_ir::graph::Graph;
use tessera_passes::egraph::{self, cost, rules, taso, Limits};

#[derive(Clone, Copy, ValueEnum)]
pub enum Suite {
    /// The `egraph` pass (greedy extraction, local search, MIP) and the greedy rewriting baseline.
    Egraph,
    /// Fused GPU kernels (elementwise chain, softmax, layer norm) against the device's copy
    /// bandwidth (`--target cuda`; needs a CUDA driver).
    Kernels,
    /// An OpenAI-compatible completions server under load (`--url`; see `tessera serve`).
    Serve,
    /// Importing and compiling one model file for the CPU (`tessera bench import MODEL --dim
    /// NAME=N`): time per phase, peak memory and the weights' bytes.
    Import,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum BenchFormat {
    Text,
    Json,
}

#[derive(Args)]
pub struct BenchArgs {
    /// What to benchmark.
    pub suite: Suite,
    /// Models (zoo specs or files); the default is the list in both graph forms.
    pub models: Vec<String>,
    /// Saturation: most iterations.
    #[arg(long, default_value_t = 8)]
    pub iters: usize,
    /// Saturation: most e-nodes.
    #[arg(long, default_value_t = 20_000)]
    pub nodes: usize,
    /// Saturation: wall-time limit in milliseconds. None by default: saturation then stops on
    /// the iteration and node limits only, so every run of a model saturates the same e-graph
    /// and its MIP row does not change with the machine's load.
    #[arg(long)]
    pub time_ms: Option<u64>,
    /// MIP extraction: time limit in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    pub ilp_time_ms: u64,
    /// Local search (the MIP's warm start): time limit in milliseconds. None by default: the
    /// search runs until a pass over the classes improves nothing, so the warm start, like the
    /// e-graph, is the same on every run (a 1 s limit stopped it at -13.3% on `bert-base` in a
    /// debug build and at -16.4% in a release build).
    #[arg(long)]
    pub search_ms: Option<u64>,
    /// Greedy rewriting baseline: time limit in seconds.
    #[arg(long, default_value_t = 60)]
    pub baseline_time_s: u64,
    /// E-graph: also compile the graph before and after for the CPU and run both on the same
    /// seeded inputs, printing the measured change and the outputs' largest difference.
    #[arg(long)]
    pub measure: bool,
    /// `--measure`: pairs of runs per round (`repeat × rounds` interleaved pairs in all).
    #[arg(long, default_value_t = 5)]
    pub repeat: u32,
    /// `--measure`: rounds (see `--repeat`).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// How the estimate prices values computed from parameters only: `load` (computed once when
    /// weights load, free per step: what CPU artifacts do with their bind steps, the default)
    /// or `step` (computed on every call).
    #[arg(long, value_parser = ["load", "step"])]
    pub weights: Option<String>,
    /// Kernels: the device to measure (cuda, or cpu for the calibration table).
    #[arg(long, default_value = "cuda")]
    pub target: String,
    /// Kernels, `--target cpu`: where to write the calibration table (JSON).
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    /// E-graph: price kernels by this calibration table (`bench kernels --target cpu --out`)
    /// instead of the H100 roofline.
    #[arg(long)]
    pub kernel_costs: Option<String>,
    /// Serve: the server, `http://host:port` or `host:port`.
    #[arg(long)]
    pub url: Option<String>,
    /// Serve: requests to send.
    #[arg(long, default_value_t = 64)]
    pub requests: usize,
    /// Serve: requests per second, a Poisson process (`inf`: all at once).
    #[arg(long, default_value_t = f64::INFINITY)]
    pub rate: f64,
    /// Serve: prompt tokens per request (seeded random ids).
    #[arg(long, default_value_t = 32)]
    pub input_len: usize,
    /// Serve: tokens to generate per request (`max_tokens`).
    #[arg(long, default_value_t = 32)]
    pub output_len: usize,
    /// Serve: requests in flight at most.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Serve: seed of the arrival times and prompts.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Serve: the report as text (vLLM's layout) or one JSON object.
    #[arg(long, value_enum, default_value = "text")]
    pub format: BenchFormat,
    /// Import: size of a symbolic dimension, e.g. --dim batch=1 (repeatable).
    #[arg(long, value_name = "NAME=SIZE")]
    pub dim: Vec<String>,
}

/// The local search's limit when `--search-ms` is not given: far beyond any search's length
/// (a search ends when a pass improves nothing), and small enough to add to an `Instant`.
const SEARCH_UNTIL_DONE: Duration = Duration::from_secs(24 * 3600);

const DEFAULT_MODELS: [&str; 6] =
    ["bert-base", "bert-base:form=onnx", "gpt2", "gpt2:form=onnx", "gpt2:qkv=separate,form=onnx", "resnet50"];

fn percent(before: f64, after: f64) -> String {
    format!("{:+.1}%", (after / before - 1.0) * 100.0)
}

/// One model's row: the e-graph's candidates, greedy rewriting, and the guarded result.
fn egraph_row(model: &str, g: &Graph, rules: &[rules::Rule], args: &BenchArgs) -> Result<String> {
    let weights = match args.weights.as_deref() {
        Some("step") => cost::Weights::EveryStep,
        Some(_) | None => cost::Weights::FoldedAtLoad,
    };
    let kernels = match &args.kernel_costs {
        Some(path) => cost::KernelCosts::measured(path)?,
        None => cost::KernelCosts::Roofline,
    };
    let before = cost::graph_cost_with(g, weights, &kernels);
    let limits = Limits {
        iters: args.iters,
        nodes: args.nodes,
        time: args.time_ms.map_or(Duration::MAX, Duration::from_millis),
        weights,
        kernels: kernels.clone(),
    };
    let start = Instant::now();
    let start_cpu = process_cpu_seconds()?;
    let s = egraph::saturate(g, rules, limits).map_err(|e| anyhow!(e))?;
    let saturate_s = start.elapsed().as_secs_f64();
    let saturate_cpu_s = process_cpu_seconds()? - start_cpu;
    let config = egraph::ExtractConfig {
        extraction: egraph::Extraction::Ilp { time_limit: Duration::from_millis(args.ilp_time_ms) },
        search_time: args.search_ms.map_or(SEARCH_UNTIL_DONE, Duration::from_millis),
    };
    let extracted = egraph::extract(g, &s, &config, None);
    let egraph_s = start.elapsed().as_secs_f64();
    let egraph_cpu_s = process_cpu_seconds()? - start_cpu;
    let start = Instant::now();
    let rewriting_limits = taso::RewriteLimits {
        steps: usize::MAX,
        time: Duration::from_secs(args.baseline_time_s),
        weights,
        kernels: kernels.clone(),
    };
    let (rewritten, report) = taso::rewrite(g, rules, rewriting_limits).map_err(|e| anyhow!(e))?;
    let rewriting_s = start.elapsed().as_secs_f64();
    let change = |method: egraph::Method| match extracted.costs.get(&method) {
        Some(&c) if c.is_finite() => percent(before, c),
        Some(_) => "none".to_string(),
        None => "–".to_string(),
    };
    let ilp = match &extracted.ilp {
        Some(ilp) => {
            let why = match &ilp.outcome {
                egraph::ilp::IlpOutcome::Failed(why) => format!(": {why}"),
                _ => String::new(),
            };
            format!(
                "{} ({}{why}, gap {:.2}%, {} variables)",
                change(egraph::Method::Ilp),
                ilp.outcome.name(),
                ilp.gap() * 100.0,
                ilp.variables
            )
        }
        None => "–".to_string(),
    };
    let rewriting_cost = cost::graph_cost_with(&rewritten, weights, &kernels);
    let held = if egraph::holds(&s, &rewritten) { "the e-graph holds it" } else { "**not in the e-graph**" };
    let (guarded, winner, optimized) = if rewriting_cost < extracted.cost {
        (rewriting_cost, egraph::Method::GreedyRewriting, &rewritten)
    } else {
        (extracted.cost, extracted.winner, &extracted.graph)
    };
    let measured = if args.measure {
        let m = measure(g, optimized, args)?;
        let [low, mid, high] = m.ratio_quartiles.map(|r| (r - 1.0) * 100.0);
        format!(
            " {:.1} ms → {:.1} ms CPU per run ({}; {} interleaved pairs, after/before {mid:+.1}% [{low:+.1}%, {high:+.1}%]), max relative difference {:.1e} |",
            m.before_s * 1e3,
            m.after_s * 1e3,
            percent(m.before_s, m.after_s),
            m.pairs,
            m.max_relative_difference
        )
    } else {
        String::new()
    };
    Ok(format!(
        "| `{model}` | {} | {before:.1} µs | {} | {} | {ilp} | **{}** ({}) in {egraph_s:.2} s (CPU {egraph_cpu_s:.2} s) | {} in {rewriting_s:.2} s ({} steps, {}; {held}) | {} ({}) | {}; saturation {saturate_s:.2} s (CPU {saturate_cpu_s:.2} s) |{measured}",
        g.num_nodes(),
        change(egraph::Method::GreedyExtraction),
        change(egraph::Method::LocalSearch),
        percent(before, extracted.cost),
        extracted.winner.name(),
        percent(before, rewriting_cost),
        report.steps,
        report.stop,
        percent(before, guarded),
        winner.name(),
        s.report.summary(),
    ))
}

/// What `--measure` found for one model.
struct Measured {
    /// Median CPU seconds per run of each artifact (the process's CPU time, every thread).
    before_s: f64,
    after_s: f64,
    /// Quartiles (25%, 50%, 75%) of after / before over the interleaved pairs of runs.
    ratio_quartiles: [f64; 3],
    pairs: usize,
    /// Largest |before − after| over all outputs, relative to the largest |before| of that output.
    max_relative_difference: f64,
}

/// CPU time this process has used so far, every thread (`CLOCK_PROCESS_CPUTIME_ID`): on a
/// machine shared with other work a run's CPU time is what it costs; its wall time is mostly
/// how long it waited for a core.
pub(crate) fn process_cpu_seconds() -> Result<f64> {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `t` is a valid, writable timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) } != 0 {
        bail!("clock_gettime(CLOCK_PROCESS_CPUTIME_ID): {}", std::io::Error::last_os_error());
    }
    Ok(t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9)
}

/// The value at fraction `q` of `sorted` (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len().saturating_sub(1)) as f64 * q).round() as usize;
    sorted.get(i).copied().unwrap_or(f64::NAN)
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

/// Seeded inputs for `--measure`: [`tessera_ir::testing::inputs::model_inputs`] (valid ids,
/// positive variances and weights scaled by their fan-in, so that the outputs' difference
/// measures the rewrites and not how far random unscaled weights amplify rounding).
fn measure_inputs(g: &Graph) -> Result<Vec<(String, tessera_ir::tensor::Tensor)>> {
    for &v in g.inputs() {
        let value = g.value(v);
        let Some(shape) = value.ty.static_shape() else {
            bail!("--measure needs static input shapes; %{} has {}", value.name, value.ty);
        };
        tessera_ir::budget::check_shape(&format!("input %{}", value.name), &shape).map_err(|e| anyhow!("{e}"))?;
    }
    Ok(tessera_ir::testing::inputs::model_inputs(g, 1, 0))
}

/// `--measure`: compiles `before` and `after` for the CPU, binds both with their parameters
/// resident (so each artifact's bind steps, its weight-only work, run once), runs each once to
/// warm up, then `repeat × rounds` pairs of single runs, interleaved (before then after, then
/// after then before, ...), recording each run's process CPU time; and compares the outputs.
fn measure(before: &Graph, after: &Graph, args: &BenchArgs) -> Result<Measured> {
    use tessera_codegen::artifact::{compile, write_artifact, CompileOptions};
    use tessera_runtime::executor::cpu::CpuExecutor;
    let scratch = std::env::temp_dir().join(format!("tessera-bench-measure-{}", std::process::id()));
    let options = CompileOptions::cpu();
    std::fs::create_dir_all(&scratch).map_err(|e| anyhow!("{}: {e}", scratch.display()))?;
    let mut executors = Vec::new();
    for (name, graph) in [("before", before), ("after", after)] {
        let dir = scratch.join(name);
        let compiled = compile(graph, name.as_bytes(), &options).map_err(|e| anyhow!("compile {name}: {e}"))?;
        write_artifact(&dir, &compiled.files).map_err(|e| anyhow!("write {name}: {e}"))?;
        let artifact = tessera_runtime::executor::load::load(&dir).map_err(|e| anyhow!("load {name}: {e}"))?;
        executors.push(CpuExecutor::new(artifact).map_err(|e| anyhow!("load {name}: {e}"))?);
    }
    std::fs::remove_dir_all(&scratch).ok();
    let inputs = measure_inputs(before)?;
    let mut bound = Vec::new();
    for executor in &executors {
        let inputs = inputs.clone();
        let parameters: std::collections::HashSet<&str> =
            executor.program().inputs.iter().filter(|b| b.parameter).map(|b| b.name.as_str()).collect();
        let (resident, per_run): (Vec<_>, Vec<_>) =
            inputs.into_iter().partition(|(n, _)| parameters.contains(n.as_str()));
        let b = executor.bind(&resident).map_err(|e| anyhow!("bind: {e}"))?;
        bound.push((b, per_run));
    }
    // The warm-up run of each (first touch of the arena, the thread pool) gives the outputs.
    let mut outputs = Vec::new();
    for (b, per_run) in bound.iter_mut() {
        outputs.push(b.run(per_run).map_err(|e| anyhow!("run: {e}"))?);
    }
    let pairs = (args.repeat * args.rounds).max(1) as usize;
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for k in 0..pairs {
        let order = if k % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let (b, per_run) = &mut bound[i];
            let started = process_cpu_seconds()?;
            b.run(per_run).map_err(|e| anyhow!("run: {e}"))?;
            times[i].push(process_cpu_seconds()? - started);
        }
    }
    let ratios = sorted(times[1].iter().zip(&times[0]).map(|(a, b)| a / b).collect());
    let mut worst: f64 = 0.0;
    for ((_, x), (_, y)) in outputs[0].iter().zip(&outputs[1]) {
        let (x, y) = (x.to_f64_vec(), y.to_f64_vec());
        let scale = x.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(f64::MIN_POSITIVE);
        let diff = x.iter().zip(&y).fold(0.0f64, |m, (p, q)| m.max((p - q).abs()));
        worst = worst.max(diff / scale);
    }
    let [before_times, after_times] = times;
    Ok(Measured {
        before_s: quantile(&sorted(before_times), 0.5),
        after_s: quantile(&sorted(after_times), 0.5),
        ratio_quartiles: [quantile(&ratios, 0.25), quantile(&ratios, 0.5), quantile(&ratios, 0.75)],
        pairs,
        max_relative_difference: worst,
    })
}

pub fn run(args: BenchArgs) -> Result<()> {
    match args.suite {
        Suite::Kernels => return kernels(&args),
        Suite::Serve => return serve(&args),
        Suite::Import => return super::bench_import::run(&args.models, &args.dim),
        Suite::Egraph => {}
    }
    let rules = rules::builtin()?;
    let models: Vec<String> = if args.models.is_empty() {
        DEFAULT_MODELS.iter().map(|m| m.to_string()).collect()
    } else {
        args.models.clone()
    };
    if args.measure && std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // One thread: the CPU time of a run is then its work, not the pool's spinning.
        // Set before anything starts rayon's pool (nothing has yet: no other thread runs).
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
    if cfg!(debug_assertions) {
        eprintln!("note: a debug build; build with --release for numbers worth recording");
    }
    let (measured, rule) =
        if args.measure { (" measured on the CPU (median CPU time per run) |", "---|") } else { ("", "") };
    println!(
        "| model | nodes | estimated cost | greedy extraction | local search | MIP | e-graph (best method) | greedy rewriting | guarded result | saturation |{measured}"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|{rule}");
    for model in &models {
        let g = tessera_frontend::load::load_model(Path::new(model))?;
        if g.num_nodes() == 0 {
            bail!("{model}: empty graph");
        }
        println!("{}", egraph_row(model, &g, rules, &args)?);
    }
    Ok(())
}

/// `tessera bench serve`: see `tessera::http::bench`.
fn serve(args: &BenchArgs) -> Result<()> {
    let Some(url) = &args.url else { bail!("bench serve needs --url (the address `tessera serve` printed)") };
    let address = url.trim_start_matches("http://").trim_end_matches('/').to_string();
    if address.starts_with("https://") {
        bail!("--url {url}: this client speaks plain HTTP");
    }
    let config = tessera::http::bench::BenchConfig {
        address,
        model: None,
        requests: args.requests,
        rate: args.rate,
        input_len: args.input_len,
        output_len: args.output_len,
        concurrency: args.concurrency,
        seed: args.seed,
    };
    let report = tessera::http::bench::run(&config)?;
    match args.format {
        BenchFormat::Text => println!("{}", report.to_text()),
        BenchFormat::Json => println!("{}", report.to_json()),
    }
    if report.completed == 0 {
        bail!("no request completed: {}", report.first_error.unwrap_or_default());
    }
    Ok(())
}

/// Rows and columns of every kernel benchmark's tensors (32 MiB of f32 each).
const KERNEL_ROWS: u64 = 8192;
const KERNEL_COLS: u64 = 1024;

/// The benchmarked kernels: name, kernel graph, and the bytes it must move at least (each input
/// read once, each output written once).
fn kernel_cases() -> Result<Vec<(&'static str, tessera_codegen::KernelSource, u64)>> {
    use tessera_ir::dtype::DType;
    use tessera_ir::graph::InputRole;
    use tessera_ir::ops::elementwise::{BinaryOp, UnaryOp};
    use tessera_ir::ops::Op;
    use tessera_ir::types::TensorType;
    let matrix = TensorType::of_static(DType::F32, &[KERNEL_ROWS, KERNEL_COLS]);
    let row = TensorType::of_static(DType::F32, &[KERNEL_COLS]);
    let bytes = KERNEL_ROWS * KERNEL_COLS * 4;
    let mut cases = Vec::new();

    let mut g = Graph::new("elementwise");
    let a = g.add_input("a", matrix.clone(), InputRole::Activation);
    let b = g.add_input("b", matrix.clone(), InputRole::Activation);
    let t = g.add(Op::Binary(BinaryOp::Mul), &[a, b])?;
    let u = g.add(Op::Binary(BinaryOp::Add), &[t, a])?;
    let y = g.add(Op::Unary(UnaryOp::Gelu), &[u])?;
    g.set_outputs(vec![y]);
    cases.push(("elementwise gelu(a*b + a)", g, 3 * bytes));

    let mut g = Graph::new("softmax");
    let x = g.add_input("x", matrix.clone(), InputRole::Activation);
    let y = g.add(Op::Softmax { axis: -1 }, &[x])?;
    g.set_outputs(vec![y]);
    cases.push(("softmax (rows)", g, 2 * bytes));

    let mut g = Graph::new("layer_norm");
    let x = g.add_input("x", matrix, InputRole::Activation);
    let scale = g.add_input("scale", row.clone(), InputRole::Parameter);
    let bias = g.add_input("bias", row, InputRole::Parameter);
    let y = g.add(Op::LayerNorm { axis: -1, epsilon: 1e-5 }, &[x, scale, bias])?;
    g.set_outputs(vec![y]);
    cases.push(("layer norm (rows)", g, 2 * bytes + 2 * KERNEL_COLS * 4));

    Ok(cases
        .into_iter()
        .map(|(name, graph, traffic)| {
            let symbol = format!("bench_{}", graph.name);
            (name, tessera_codegen::KernelSource { symbol, graph }, traffic)
        })
        .collect())
}

/// `tessera bench kernels --target cuda`: each fused kernel's achieved bandwidth against the
/// device's copy bandwidth. PTX for sm_80 (which the driver also runs on sm_90 devices).
fn kernels(args: &BenchArgs) -> Result<()> {
    use tessera_runtime::executor::cuda::{BenchKernel, CudaBench};
    if args.target == "cpu" {
        if std::env::var_os("RAYON_NUM_THREADS").is_none() {
            // One thread, as `bench egraph --measure` runs: set before rayon's pool starts.
            std::env::set_var("RAYON_NUM_THREADS", "1");
        }
        return super::bench_kernels_cpu::run(args.out.as_deref());
    }
    if args.target != "cuda" {
        bail!("bench kernels: --target '{}': cuda or cpu", args.target);
    }
    // PTX first (so every machine checks that the kernels compile), then the driver.
    let cases = kernel_cases()?;
    let sources: Vec<_> = cases.iter().map(|(_, k, _)| k.clone()).collect();
    let modules = tessera_codegen::compile_ptx(&sources, tessera_codegen::GpuArch::Sm80)?;
    let bench = CudaBench::new().map_err(|e| anyhow!("bench kernels --target cuda: {e}"))?;
    let reps = 50;
    let copy = bench.copy_bandwidth(KERNEL_ROWS * KERNEL_COLS * 4, reps).map_err(|e| anyhow!("copy: {e}"))?;
    let device = bench.device_name().map_err(|e| anyhow!("{e}"))?;
    println!("device: {device}; device-to-device copy: {:.0} GB/s (read + write)", copy / 1e9);
    println!("| kernel | shape | launches | time | bandwidth | of copy |");
    println!("|---|---|---|---|---|---|");
    for ((name, source, traffic), module) in cases.iter().zip(&modules) {
        let graph = &source.graph;
        let mut buffers: Vec<u64> = graph
            .inputs()
            .iter()
            .chain(graph.outputs())
            .map(|&v| graph.value(v).ty.num_elements().unwrap_or(0) * 4)
            .collect();
        buffers.extend(module.temporaries.iter().map(|t| t.bytes));
        let launches: Vec<tessera_ir::artifact::GpuLaunch> = module
            .launches
            .iter()
            .map(|l| tessera_ir::artifact::GpuLaunch { entry: l.entry.clone(), grid: l.grid, block: l.block })
            .collect();
        let kernel = BenchKernel { ptx: &module.ptx, launches: &launches, buffers: &buffers };
        let seconds = bench.kernel_seconds(&kernel, reps).map_err(|e| anyhow!("{name}: {e}"))?;
        let bandwidth = *traffic as f64 / seconds;
        println!(
            "| {name} | {KERNEL_ROWS}x{KERNEL_COLS} f32 | {} | {:.1} µs | {:.0} GB/s | {:.0}% |",
            launches.len(),
            seconds * 1e6,
            bandwidth / 1e9,
            100.0 * bandwidth / copy
        );
    }
    Ok(())
}
