//! `tessera-rt`: runs ahead-of-time artifacts written by `tessera compile`, without the compiler.
//! A cluster node needs only this binary and the artifact; under `mpirun`/`srun` every process
//! runs its rank's program. Exit codes as `tessera`'s: 0 success, 1 a failed run, 2 usage errors.

use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tessera_runtime::executor::run::{run_artifact, RunConfig};

#[derive(Subcommand)]
enum Command {
    /// Run an artifact directory written by `tessera compile`; writes one .npy per output. Under
    /// mpirun/srun every process runs its rank's program and rank 0 writes the outputs.
    Run(RunArgs),
}

/// The options of `tessera run DIR` for an artifact, spelled the same.
#[derive(Args)]
struct RunArgs {
    /// The artifact directory.
    artifact: PathBuf,
    /// A graph input and the .npy file holding it (repeatable).
    #[arg(long = "input", value_name = "NAME=FILE.npy")]
    inputs: Vec<String>,
    /// Directory for the outputs, one NAME.npy per graph output.
    #[arg(short, long, value_name = "OUTDIR")]
    output: PathBuf,
    /// Fill inputs not given with --input with seeded uniform values (floats in [-1, 1)).
    #[arg(long, value_name = "SEED")]
    random_inputs: Option<u64>,
    /// Print the bind and run times (without loading and writing files) to standard error.
    #[arg(long)]
    timing: bool,
    /// Print the wall time per kernel and library call, summed per kind, to standard error
    /// (CPU targets).
    #[arg(long)]
    profile: bool,
    /// Bind the model's parameters (weights) once and run N times, feeding the other inputs each
    /// run. With --timing, the bind and the runs' min and median are reported separately. The
    /// outputs are the last run's.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// For an artifact of several ranks under mpirun/srun: seconds a rank waits for a message
    /// from another before failing.
    #[arg(long, value_name = "SECONDS", default_value_t = 300.0)]
    comm_timeout: f64,
    /// For a compiled artifact: refuse it unless its manifest.json has this SHA-256 (hex). The
    /// manifest lists every other file's SHA-256, so this pins the whole artifact.
    #[arg(long, value_name = "HEX")]
    expect_sha256: Option<String>,
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    if !(args.comm_timeout.is_finite() && args.comm_timeout > 0.0) {
        anyhow::bail!("--comm-timeout must be a positive number of seconds");
    }
    let config = RunConfig {
        inputs: args.inputs,
        random_inputs: args.random_inputs,
        output: args.output,
        repeat: args.repeat,
        timing: args.timing,
        profile: args.profile,
        comm_timeout: Duration::from_secs_f64(args.comm_timeout),
        expect_manifest_sha256: args.expect_sha256,
        // tessera-rt links no code generator: a range artifact runs on the interpreter.
        specializer: None,
    };
    run_artifact(&args.artifact, &config)?.print();
    Ok(())
}

fn main() -> ExitCode {
    let command = tessera_rt::start::<Command>(
        "tessera-rt",
        env!("CARGO_PKG_VERSION"),
        "Runs tessera artifacts (no compiler, no MLIR or LLVM)",
    );
    let result = match command {
        Command::Run(args) => run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tessera_rt::print_error(err.as_ref());
            ExitCode::FAILURE
        }
    }
}
