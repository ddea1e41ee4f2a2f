//! `tessera opt`: run a textual pass pipeline over a model, like `mlir-opt`.

use crate::files::write_atomic;
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use tessera_ir::graph::Graph;
use tessera_passes::pipeline::{run_pipeline, Pipeline, PipelineReport, RunConfig};

#[derive(Args)]
pub struct OptArgs {
    /// The model to optimize (.mlir or .json).
    pub input: PathBuf,
    /// Comma-separated passes with options, e.g. 'canonicalize,cse,dce'.
    #[arg(long, default_value = "verify")]
    pub pipeline: String,
    /// Where to write the result (atomically); standard output when absent.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Print the IR to standard error after every pass.
    #[arg(long)]
    pub print_ir_after_all: bool,
    /// Print a table of per-pass wall time and node counts to standard error.
    #[arg(long)]
    pub timing: bool,
    /// Print what each pass did to standard error: rewrites, nodes before/after and its
    /// counters (for `egraph`: the rules that fired, iterations, stop reason, cost before/after).
    #[arg(long)]
    pub explain: bool,
    /// Check that MLIR itself parses and verifies the result (tsr registered through IRDL).
    #[arg(long)]
    pub check_mlir: bool,
    /// The output form.
    #[arg(long, value_enum, default_value_t = Emit::Mlir)]
    pub emit: Emit,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Emit {
    /// The tsr dialect as MLIR text.
    Mlir,
    /// The JSON view of the graph.
    Json,
}

pub fn run(args: OptArgs) -> Result<()> {
    let mut graph = tessera_frontend::load::load_model(&args.input)?;
    let pipeline = Pipeline::parse(&args.pipeline).context("--pipeline")?;
    let mut print_after = |pass: &str, g: &Graph| {
        eprintln!("// -----// IR Dump After {pass} //----- //");
        eprintln!("{}", tessera_ir::mlir::print_graph(g));
    };
    let mut config = RunConfig::default();
    if args.print_ir_after_all {
        config.after_pass = Some(&mut print_after);
    }
    let report =
        run_pipeline(&mut graph, &pipeline, &mut config).with_context(|| format!("{}", args.input.display()))?;
    if args.timing {
        eprint!("{}", report.timing_table());
    }
    if args.explain {
        eprint!("{}", explain(&report));
    }
    let text = tessera_ir::mlir::print_graph(&graph);
    if args.check_mlir {
        tessera_ir::mlir::check_with_mlir(&text).context("MLIR rejected the output")?;
    }
    let out = match args.emit {
        Emit::Mlir => text,
        Emit::Json => tessera_ir::json::to_json(&graph),
    };
    match &args.output {
        Some(path) => write_atomic(path, out.as_bytes()),
        None => {
            print!("{out}");
            Ok(())
        }
    }
}

/// One paragraph per pass: its node counts and rewrites, then its counters, one per line.
fn explain(report: &PipelineReport) -> String {
    let mut out = String::new();
    for record in &report.passes {
        out += &format!(
            "{}: {} -> {} nodes, {} rewrites\n",
            record.name, record.nodes_before, record.nodes_after, record.stats.rewrites
        );
        for (counter, value) in &record.stats.counters {
            out += &format!("  {counter} = {value}\n");
        }
    }
    out
}
