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
    /// Size of a symbolic dimension, e.g. --dim batch=8 (repeatable); symbols not given are 1.
    #[arg(long, value_name = "NAME=SIZE")]
    pub dim: Vec<String>,
}

pub fn run(args: InfoArgs) -> Result<()> {
    let graph = tessera_frontend::load::load_model(&args.model)?;
    let mut bindings = parse_dim_bindings(&args.dim)?;
    super::check_dim_names(&graph, &bindings)?;
    // A summary is still useful without sizes: count unbound symbols as 1, and say so.
    for (_, value) in graph.values() {
        for symbol in value.ty.symbols() {
            if !bindings.contains_key(symbol) {
                eprintln!("note: symbolic dimension '{symbol}' counted as 1 (set it with --dim {symbol}=N)");
                bindings.insert(symbol.to_string(), 1);
            }
        }
    }
    let stats = GraphStats::compute(&graph, &bindings)?;
    print!("{stats}");
    Ok(())
}
