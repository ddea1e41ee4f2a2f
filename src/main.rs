//! The `tessera` command line: each subcommand calls into the crates, prints, and maps errors
//! to exit codes (0 success, 1 bad input or failed command, 2 usage errors from clap).

mod commands;
mod files;

use clap::Subcommand;
use std::process::ExitCode;

#[derive(Subcommand)]
enum Command {
    /// Run a pass pipeline over a model and print (or write) the result as MLIR.
    Opt(commands::opt::OptArgs),
    /// Evaluate a model with the reference interpreter, or run a compiled artifact directory;
    /// writes one .npy per graph output.
    Run(commands::run::RunArgs),
    /// Summarize a model: ops, parameters, FLOPs and memory.
    Info(commands::info::InfoArgs),
    /// Find the fastest parallel configuration of a model on a cluster, and explain it.
    Plan(Box<commands::plan::PlanArgs>),
    /// Compile a model into an ahead-of-time artifact directory (fused kernels + program).
    Compile(commands::compile::CompileArgs),
    /// Generate text from a Hugging Face checkpoint directory or a zoo model, streamed to stdout.
    Generate(commands::generate::GenerateArgs),
    /// Serve a model over HTTP: OpenAI-compatible `POST /v1/completions` with continuous
    /// batching, `GET /health`, `GET /metrics` (Prometheus).
    Serve(commands::serve::ServeArgs),
    /// Import an ONNX model and print it as tsr MLIR text.
    Import(commands::import::ImportArgs),
    /// Run ONNX backend node tests through import and the reference interpreter.
    TestOnnx(commands::test_onnx::TestOnnxArgs),
    /// Train a model on byte-level text, on the compiled step (default) or the reference interpreter; checkpoints and resumes.
    Train(commands::train::TrainArgs),
    /// Benchmarks: the optimizer on whole models (`tessera bench egraph`), fused GPU kernels
    /// against the copy bandwidth (`tessera bench kernels --target cuda`), a completions
    /// server under load (`tessera bench serve --url U`), importing and compiling a model file
    /// (`tessera bench import MODEL --dim NAME=N`).
    Bench(commands::bench::BenchArgs),
    /// Check the MPI transport under `mpirun`: collectives against the in-process transport and
    /// a partitioned forward graph against one device.
    CommTest(commands::comm_test::CommTestArgs),
}

fn main() -> ExitCode {
    let command =
        tessera_rt::start::<Command>("tessera", env!("CARGO_PKG_VERSION"), "A training-and-serving dataflow compiler");
    let result = match command {
        Command::Opt(args) => commands::opt::run(args),
        Command::Run(args) => commands::run::run(args),
        Command::Info(args) => commands::info::run(args),
        Command::Plan(args) => commands::plan::run(*args),
        Command::Compile(args) => commands::compile::run(args),
        Command::Generate(args) => commands::generate::run(args),
        Command::Serve(args) => commands::serve::run(args),
        Command::Import(args) => commands::import::run(args),
        Command::TestOnnx(args) => commands::test_onnx::run(args),
        Command::Train(args) => commands::train::run(args),
        Command::Bench(args) => commands::bench::run(args),
        Command::CommTest(args) => commands::comm_test::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tessera_rt::print_error(err.as_ref());
            // `tessera plan` exits with 2 for a request it refuses as asked (README: infeasible plans).
            commands::plan::exit_code(&err).map_or(ExitCode::FAILURE, ExitCode::from)
        }
    }
}
