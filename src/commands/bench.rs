//! `tessera bench egraph`: the `egraph` pass against greedy rewriting without an e-graph, on
//! whole models: estimated cost (the roofline of `egraph::cost`) before and after, and the
//! optimization time of each method. Run it from a release build; numbers go to BENCHMARKS.md.
//!
//! `tessera bench kernels --target cuda`: fused GPU kernels (an elementwise chain, softmax,
//! layer norm over 8192x1024 f32) timed with CUDA events, their bandwidth (bytes each kernel
//! must move / time) against the device's device-to-device copy bandwidth.

use anyhow::{anyhow, bail, Result};
use clap::{Args, ValueEnum};
use std::path::Path;
use std::time::{Duration, Instant};
use tessera_ir::graph::Graph;
use tessera_passes::egraph::{self, cost, rules, taso, Limits};

#[derive(Clone, Copy, ValueEnum)]
pub enum Suite {
    /// The `egraph` pass (greedy and ILP extraction) and the greedy rewriting baseline.
    Egraph,
    /// Fused GPU kernels (elementwise chain, softmax, layer norm) against the device's copy
    /// bandwidth (`--target cuda`; needs a CUDA driver).
    Kernels,
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
    /// Saturation: time limit in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    pub time_ms: u64,
    /// ILP extraction: time limit in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    pub ilp_time_ms: u64,
    /// Greedy rewriting baseline: time limit in seconds.
    #[arg(long, default_value_t = 60)]
    pub baseline_time_s: u64,
    /// Kernels: the device to measure (cuda).
    #[arg(long, default_value = "cuda")]
    pub target: String,
}

const DEFAULT_MODELS: [&str; 6] =
    ["bert-base", "bert-base:form=onnx", "gpt2", "gpt2:form=onnx", "gpt2:qkv=separate,form=onnx", "resnet50"];

/// One method's result on one model.
struct Row {
    method: &'static str,
    after: f64,
    seconds: f64,
    note: String,
}

fn percent(before: f64, after: f64) -> String {
    format!("{:+.1}%", (after / before - 1.0) * 100.0)
}

fn egraph_rows(g: &Graph, rules: &[rules::Rule], args: &BenchArgs) -> Result<Vec<Row>> {
    let before = cost::graph_cost(g);
    let limits = Limits { iters: args.iters, nodes: args.nodes, time: Duration::from_millis(args.time_ms) };
    let mut rows = Vec::new();
    // Each method saturates on its own, so its time includes saturation.
    let start = Instant::now();
    let s = egraph::saturate(g, rules, limits).map_err(|e| anyhow!(e))?;
    let saturate_s = start.elapsed().as_secs_f64();
    let greedy = egraph::extract_greedy(g, &s);
    let after = greedy.as_ref().map_or(before, cost::graph_cost).min(before);
    let note = format!(
        "{} iterations, {} e-nodes, stop: {}; saturation {saturate_s:.2} s",
        s.report.iterations, s.report.enodes, s.report.stop
    );
    rows.push(Row { method: "e-graph, greedy extraction", after, seconds: start.elapsed().as_secs_f64(), note });
    let start = Instant::now();
    let s = egraph::saturate(g, rules, limits).map_err(|e| anyhow!(e))?;
    let ilp = egraph::extract_ilp(g, &s, Duration::from_millis(args.ilp_time_ms));
    let greedy_after = egraph::extract_greedy(g, &s).as_ref().map_or(before, cost::graph_cost).min(before);
    let ilp_after = ilp.graph.as_ref().map_or(f64::INFINITY, cost::graph_cost);
    let note = format!(
        "ILP {} ({} variables, {} constraints){}",
        ilp.report.outcome.name(),
        ilp.report.variables,
        ilp.report.constraints,
        if ilp_after < greedy_after { "" } else { "; greedy result kept (ILP not cheaper)" }
    );
    let after = ilp_after.min(greedy_after);
    rows.push(Row { method: "e-graph, ILP extraction", after, seconds: start.elapsed().as_secs_f64(), note });
    let start = Instant::now();
    let limits = taso::RewriteLimits { steps: usize::MAX, time: Duration::from_secs(args.baseline_time_s) };
    let (_, report) = taso::rewrite(g, rules, limits).map_err(|e| anyhow!(e))?;
    let applied: Vec<String> = report.applied.iter().map(|(r, n)| format!("{r} x{n}")).collect();
    let note = format!(
        "{} steps, {} candidates, stop: {}; {}",
        report.steps,
        report.candidates,
        report.stop,
        if applied.is_empty() { "nothing applied".to_string() } else { applied.join(", ") }
    );
    rows.push(Row {
        method: "greedy rewriting (no e-graph)",
        after: report.cost_after,
        seconds: start.elapsed().as_secs_f64(),
        note,
    });
    Ok(rows)
}

pub fn run(args: BenchArgs) -> Result<()> {
    if let Suite::Kernels = args.suite {
        return kernels(&args);
    }
    let rules = rules::builtin()?;
    let models: Vec<String> = if args.models.is_empty() {
        DEFAULT_MODELS.iter().map(|m| m.to_string()).collect()
    } else {
        args.models.clone()
    };
    if cfg!(debug_assertions) {
        eprintln!("note: a debug build; build with --release for numbers worth recording");
    }
    println!("| model | nodes | method | estimated cost before → after | change | time | notes |");
    println!("|---|---|---|---|---|---|---|");
    for model in &models {
        let g = tessera_frontend::load::load_model(Path::new(model))?;
        if g.num_nodes() == 0 {
            bail!("{model}: empty graph");
        }
        let before = cost::graph_cost(&g);
        for row in egraph_rows(&g, rules, &args)? {
            println!(
                "| `{model}` | {} | {} | {:.1} µs → {:.1} µs | {} | {:.2} s | {} |",
                g.num_nodes(),
                row.method,
                before,
                row.after,
                percent(before, row.after),
                row.seconds,
                row.note
            );
        }
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
    if args.target != "cuda" {
        bail!(
            "bench kernels: --target '{}': only cuda is measured here (CPU kernels: cargo bench -p tessera-codegen)",
            args.target
        );
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
