//! `tessera info`: a model's ops, parameters, FLOPs and memory.

use super::parse_dim_bindings;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use tessera_passes::stats::GraphStats;

#[derive(Args)]
pub struct InfoArgs {
    /// The model to summarize (.mlir or .json).
    pub model: PathBuf,
    /// Size of a symbolic dimension, e.g. --dim batch=8 (repeatable); needed for every symbol.
    #[arg(long, value_name = "NAME=SIZE")]
    pub dim: Vec<String>,
}

pub fn run(args: InfoArgs) -> Result<()> {
    let graph = tessera_frontend::load::load_model(&args.model)?;
    let bindings = parse_dim_bindings(&args.dim)?;
    let stats = GraphStats::compute(&graph, &bindings)?;
    print!("{stats}");
    Ok(())
}
