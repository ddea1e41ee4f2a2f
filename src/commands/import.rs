//! `tessera import`: translate an ONNX model or StableHLO text into the tsr dialect's MLIR text.

use crate::files::write_atomic;
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;
use tessera_frontend::load::{load_model, ModelFormat};

#[derive(Args)]
pub struct ImportArgs {
    /// The ONNX model (external data is read relative to it) or StableHLO text
    /// (`.stablehlo.mlir`, or `.mlir` with stablehlo ops) to import.
    pub model: PathBuf,
    /// Where to write the MLIR text (atomically); standard output when absent.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

pub fn run(args: ImportArgs) -> Result<()> {
    let importable = match ModelFormat::of_path(&args.model) {
        Some(ModelFormat::Onnx | ModelFormat::StableHlo) => true,
        Some(ModelFormat::MlirText) => std::fs::read_to_string(&args.model)
            .is_ok_and(|text| tessera_frontend::stablehlo::looks_like_stablehlo(&text)),
        _ => false,
    };
    if !importable {
        bail!("{}: expected an .onnx file or StableHLO text", args.model.display());
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
