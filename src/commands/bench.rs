//! `tessera bench egraph`: the `egraph` pass against greedy rewriting without an e-graph, on
//! whole models: estimated cost (the roofline of `egraph::cost`) before and after, and the
//! optimization time of each method. Run it from a release build; numbers go to BENCHMARKS.md.

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
    let Suite::Egraph = args.suite;
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
