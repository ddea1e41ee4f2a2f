//! `tessera compile`: a model to an ahead-of-time artifact directory.

use super::parse_dim_bindings;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;
use tessera_codegen::artifact::{compile, write_artifact, CompileOptions, Target};

#[derive(Args)]
pub struct CompileArgs {
    /// The model (.mlir, .json, .onnx, or a zoo model such as gpt2 or gpt:layers=2,hidden=64,heads=4).
    pub model: PathBuf,
    /// What to compile for: cpu, cuda:sm_80 or cuda:sm_90.
    #[arg(long, default_value = "cpu")]
    pub target: String,
    /// Size of a symbolic dimension, e.g. --dim batch=8 (repeatable).
    #[arg(long, value_name = "NAME=SIZE")]
    pub dim: Vec<String>,
    /// The artifact directory to write (replaced atomically if it holds an artifact).
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
}

pub fn run(args: CompileArgs) -> Result<()> {
    let start = Instant::now();
    let Some(target) = Target::parse(&args.target) else {
        bail!("--target '{}': expected cpu, cuda:sm_80 or cuda:sm_90", args.target);
    };
    let dims = parse_dim_bindings(&args.dim)?;
    let graph = tessera_frontend::load::load_model(&args.model)?;
    // The input hash covers the model's bytes; a zoo model is its spec.
    let model_bytes = if args.model.is_file() {
        std::fs::read(&args.model).with_context(|| format!("{}: cannot read", args.model.display()))?
    } else {
        args.model.to_string_lossy().into_owned().into_bytes()
    };
    let options = CompileOptions { target, dims };
    let compiled = compile(&graph, &model_bytes, &options).with_context(|| format!("{}", args.model.display()))?;
    write_artifact(&args.output, &compiled.files)?;
    let s = &compiled.stats;
    let library: Vec<String> = s.library_calls.iter().map(|(name, n)| format!("{n} {name}")).collect();
    println!(
        "compiled {} ({} nodes) for {} in {:.2} s: {} kernels holding {} ops, library calls: {}, {} views",
        args.model.display(),
        s.nodes,
        target.name(),
        start.elapsed().as_secs_f64(),
        s.kernels,
        s.fused_ops,
        if library.is_empty() { "none".to_string() } else { library.join(", ") },
        s.views
    );
    println!(
        "arena {:.1} MiB (without reuse {:.1} MiB); wrote {}",
        s.arena_bytes as f64 / (1 << 20) as f64,
        s.unshared_bytes as f64 / (1 << 20) as f64,
        args.output.display()
    );
    Ok(())
}
