//! `tessera run`: evaluate a model with the reference interpreter on `.npy` inputs.

use super::parse_dim_bindings;
use anyhow::{bail, Result};
use clap::Args;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;
use tessera_ir::graph::Graph;
use tessera_ir::tensor::Tensor;
use tessera_runtime::executor::run::{run_artifact, RunConfig};
use tessera_runtime::feeds::{random_inputs, read_inputs, write_outputs};

#[derive(Args)]
pub struct RunArgs {
    /// The model to run (.mlir, .json, .onnx, a zoo model), or an artifact directory written
    /// by `tessera compile`.
    pub model: PathBuf,
    /// A graph input and the .npy file holding it (repeatable).
    #[arg(long = "input", value_name = "NAME=FILE.npy")]
    pub inputs: Vec<String>,
    /// Directory for the outputs, one NAME.npy per graph output.
    #[arg(short, long, value_name = "OUTDIR")]
    pub output: PathBuf,
    /// Fill inputs not given with --input with seeded uniform values (floats in [-1, 1)).
    #[arg(long, value_name = "SEED")]
    pub random_inputs: Option<u64>,
    /// Size of a symbolic dimension for random inputs, e.g. --dim batch=8 (repeatable).
    #[arg(long, value_name = "NAME=SIZE")]
    pub dim: Vec<String>,
    /// Print the execution time (without loading and writing files) to standard error.
    #[arg(long)]
    pub timing: bool,
    /// For a compiled artifact: print the wall time per kernel and library call, summed per
    /// kind and sorted by total time, to standard error.
    #[arg(long)]
    pub profile: bool,
    /// For a compiled artifact: bind the model's parameters (weights) once and run N times,
    /// feeding the other inputs each run, as a serving runtime does. With --timing, the bind
    /// and the runs' min and median are reported separately. The outputs are the last run's.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
    /// For an artifact of several ranks under mpirun/srun: seconds a rank waits for a message
    /// from another before failing.
    #[arg(long, value_name = "SECONDS", default_value_t = 300.0)]
    pub comm_timeout: f64,
    /// For a compiled artifact: refuse it unless its manifest.json has this SHA-256 (hex). The
    /// manifest lists every other file's SHA-256, so this pins the whole artifact.
    #[arg(long, value_name = "HEX")]
    pub expect_sha256: Option<String>,
}

pub fn run(args: RunArgs) -> Result<()> {
    if args.model.is_dir() {
        let config = artifact_config(&args)?;
        run_artifact(&args.model, &config)?.print();
        return Ok(());
    }
    if args.expect_sha256.is_some() {
        bail!("--expect-sha256 checks a compiled artifact's manifest (a directory written by `tessera compile`)");
    }
    if args.profile {
        bail!("--profile profiles compiled artifacts (a directory written by `tessera compile`); use --timing for a model");
    }
    if args.repeat > 1 {
        bail!(
            "--repeat runs compiled artifacts (a directory written by `tessera compile`) with their weights bound once"
        );
    }
    let mut bindings = parse_dim_bindings(&args.dim)?;
    let (graph, bound_at_import) = super::load_model_binding(&args.model, &bindings, &args.inputs)?;
    if !bound_at_import {
        super::check_dim_names(&graph, &bindings)?;
    }
    let mut feeds = read_inputs(&graph, &args.inputs)?;
    bind_from_feeds(&graph, &feeds, &mut bindings)?;
    if let Some(seed) = args.random_inputs {
        feeds.extend(random_inputs(&graph, &feeds, &bindings, seed)?);
    }
    let start = std::time::Instant::now();
    let outputs = tessera_runtime::interpreter::run(&graph, &feeds)?;
    if args.timing {
        eprintln!("interpreter: {:.3} s", start.elapsed().as_secs_f64());
    }
    for path in write_outputs(&args.output, &outputs)? {
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// The artifact-run options of `args` (the same as `tessera-rt run`'s).
fn artifact_config(args: &RunArgs) -> Result<RunConfig> {
    if !(args.comm_timeout.is_finite() && args.comm_timeout > 0.0) {
        bail!("--comm-timeout must be a positive number of seconds");
    }
    Ok(RunConfig {
        inputs: args.inputs.clone(),
        random_inputs: args.random_inputs,
        output: args.output.clone(),
        repeat: args.repeat,
        timing: args.timing,
        profile: args.profile,
        comm_timeout: Duration::from_secs_f64(args.comm_timeout),
        expect_manifest_sha256: args.expect_sha256.clone(),
        // A range artifact runs the kernels of a pinned compile at each size (cached per size).
        specializer: Some(std::sync::Arc::new(tessera::specialize::CpuSpecializer)),
    })
}

/// Learns symbolic dimension sizes from the inputs given, keeping `--dim`'s: a dimension that
/// is one symbol binds it, one like `seq + 1` solves for `seq`, and a size that contradicts the
/// others is an error naming the input and dimension. Inputs of the wrong rank are left to the
/// interpreter, which reports them.
pub(crate) fn bind_from_feeds(
    graph: &Graph,
    feeds: &[(String, Tensor)],
    bindings: &mut HashMap<String, u64>,
) -> Result<()> {
    let mut given = Vec::new();
    for &v in graph.inputs() {
        let value = graph.value(v);
        let Some((_, tensor)) = feeds.iter().find(|(n, _)| *n == value.name) else { continue };
        if tensor.shape.len() == value.ty.rank() {
            given.push((format!("input '{}'", value.name), &value.ty, tensor.shape.as_slice()));
        }
    }
    let given: Vec<(&str, &tessera_ir::types::TensorType, &[usize])> =
        given.iter().map(|(what, ty, shape)| (what.as_str(), *ty, *shape)).collect();
    tessera_ir::types::bind_from_shapes(&given, bindings).map_err(anyhow::Error::msg)
}
