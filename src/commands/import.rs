//! `tessera import`: translate an ONNX model into the tsr dialect's MLIR text.

use crate::files::write_atomic;
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;
use tessera_frontend::load::{load_model, ModelFormat};

#[derive(Args)]
pub struct ImportArgs {
    /// The ONNX model to import (external data is read relative to it).
    pub model: PathBuf,
    /// Where to write the MLIR text (atomically); standard output when absent.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

pub fn run(args: ImportArgs) -> Result<()> {
    if ModelFormat::of_path(&args.model) != Some(ModelFormat::Onnx) {
        bail!("{}: expected an .onnx file", args.model.display());
    }
    let graph = load_model(&args.model)?;
    let text = tessera_ir::mlir::print_graph(&graph);
    match &args.output {
        Some(path) => write_atomic(path, text.as_bytes()),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}
