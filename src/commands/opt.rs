//! `tessera opt`: run a textual pass pipeline over a model, like `mlir-opt`.

use crate::files::write_atomic;
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use tessera_ir::graph::Graph;
use tessera_passes::pipeline::{run_pipeline, Pipeline, PipelineReport, RunConfig};
use tessera_passes::shard;

#[derive(Args)]
pub struct OptArgs {
    /// The model to optimize (.mlir, .json, .onnx, or a zoo model name/spec).
    pub input: PathBuf,
    /// Comma-separated passes with options, e.g. 'canonicalize,cse,dce'. With
    /// 'shard{mesh=dp=2,tp=4,pp=2}' the output is the per-rank programs (one per pipeline stage,
    /// with their ranks); passes after 'shard' run on each program. With --emit stablehlo the
    /// stages become one module every replica runs, each replica its own stage.
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
    /// Size of a symbolic dimension, e.g. --dim batch=8 (repeatable): the model is specialized
    /// before the pipeline runs (so `shard` can split a symbolic batch over `dp`).
    #[arg(long, value_name = "NAME=SIZE")]
    pub dim: Vec<String>,
    /// The output form.
    #[arg(long, value_enum, default_value_t = Emit::Mlir)]
    pub emit: Emit,
    /// The mesh a per-rank program (one with collectives) runs on, e.g. --mesh dp=2,tp=2: with
    /// --emit stablehlo its collectives become StableHLO collectives over replica groups.
    /// After 'shard' in the pipeline the pass's mesh is used instead.
    #[arg(long, value_name = "AXIS=SIZE,...")]
    pub mesh: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Emit {
    /// The tsr dialect as MLIR text.
    Mlir,
    /// The JSON view of the graph.
    Json,
    /// StableHLO text (generic op form) that JAX/XLA load; the graph's dimensions must be
    /// static (bind symbols with --dim).
    Stablehlo,
}

pub fn run(args: OptArgs) -> Result<()> {
    let mut graph = tessera_frontend::load::load_model(&args.input)?;
    if !args.dim.is_empty() {
        let bindings = super::parse_dim_bindings(&args.dim)?;
        super::check_dim_names(&graph, &bindings)?;
        graph = graph.bind_dims(&bindings).context("--dim")?;
        tessera_ir::verify::verify(&graph).with_context(|| format!("{} with --dim", args.input.display()))?;
    }
    let pipeline = Pipeline::parse(&args.pipeline).context("--pipeline")?;
    let mesh = args.mesh.as_deref().map(tessera_ir::sharding::Mesh::parse).transpose().context("--mesh")?;
    if mesh.is_some()
        && (!matches!(args.emit, Emit::Stablehlo) || pipeline.passes.iter().any(|p| p.pass.name == "shard"))
    {
        bail!("--mesh names the mesh of a per-rank program for --emit stablehlo; with 'shard' the pass names it");
    }
    let mut print_after = |pass: &str, g: &Graph| {
        eprintln!("// -----// IR Dump After {pass} //----- //");
        eprintln!("{}", tessera_ir::mlir::print_graph(g));
    };
    let mut config = RunConfig::default();
    if args.print_ir_after_all {
        config.after_pass = Some(&mut print_after);
    }
    // `shard` turns the graph into one program per pipeline stage: passes before it run on the
    // graph, passes after it on every program.
    let shard_at = pipeline.passes.iter().position(|p| p.pass.name == "shard");
    let (before, after) = match shard_at {
        Some(i) => {
            if pipeline.passes[i + 1..].iter().any(|p| p.pass.name == "shard") {
                bail!("--pipeline: 'shard' may appear only once");
            }
            (
                Pipeline { passes: pipeline.passes[..i].to_vec() },
                Some(Pipeline { passes: pipeline.passes[i + 1..].to_vec() }),
            )
        }
        None => (pipeline.clone(), None),
    };
    let report = run_pipeline(&mut graph, &before, &mut config).with_context(|| format!("{}", args.input.display()))?;
    if args.timing {
        eprint!("{}", report.timing_table());
    }
    if args.explain {
        eprint!("{}", explain(&report));
    }
    let out = match (after, shard_at) {
        (Some(after), Some(i)) => {
            let shard_config = shard::config_from_options(&pipeline.passes[i].options)?.with_training_roles_of(&graph);
            let mut module = shard::partition(&graph, &shard_config)
                .with_context(|| format!("{}: pass 'shard'", args.input.display()))?;
            for stage in &mut module.stages {
                let report = run_pipeline(&mut stage.graph, &after, &mut RunConfig::default())
                    .with_context(|| format!("{}: stage {}", args.input.display(), stage.stage))?;
                if args.explain {
                    eprint!("{}", explain(&report));
                }
            }
            if args.check_mlir {
                for stage in &module.stages {
                    let text = tessera_ir::mlir::print_graph(&stage.graph);
                    tessera_mlir_check::check_with_mlir(&text)
                        .with_context(|| format!("MLIR rejected the program of stage {}", stage.stage))?;
                }
            }
            match (args.emit, module.stages.as_slice()) {
                (Emit::Mlir, _) => module.print(),
                // One stage: every rank runs the same program, a replicated StableHLO module.
                (Emit::Stablehlo, [stage]) => {
                    tessera_frontend::stablehlo::export::export_rank_program(&stage.graph, &module.mesh)
                        .with_context(|| format!("{}: --emit stablehlo", args.input.display()))?
                }
                // Stages that run different programs: one module that runs each replica's stage.
                (Emit::Stablehlo, stages) => {
                    let graphs: Vec<&Graph> = stages.iter().map(|s| &s.graph).collect();
                    tessera_frontend::stablehlo::export::pipeline::export_pipeline(
                        &graphs,
                        &module.mesh,
                        &shard_config.pipeline_axis,
                    )
                    .with_context(|| format!("{}: --emit stablehlo", args.input.display()))?
                }
                (Emit::Json, _) => {
                    bail!("--emit json shows one graph; 'shard' makes one program per stage (use --emit mlir)")
                }
            }
        }
        _ => {
            let text = tessera_ir::mlir::print_graph(&graph);
            if args.check_mlir {
                tessera_mlir_check::check_with_mlir(&text).context("MLIR rejected the output")?;
            }
            match args.emit {
                Emit::Mlir => text,
                Emit::Json => tessera_ir::json::to_json(&graph),
                Emit::Stablehlo => match &mesh {
                    Some(mesh) => tessera_frontend::stablehlo::export::export_rank_program(&graph, mesh),
                    None => tessera_frontend::stablehlo::export::export_graph(&graph),
                }
                .with_context(|| format!("{}: --emit stablehlo", args.input.display()))?,
            }
        }
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
