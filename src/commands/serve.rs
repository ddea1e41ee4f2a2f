//! `tessera serve`: an OpenAI-compatible completions server for a Hugging Face checkpoint
//! directory or a zoo model (see `tessera::http`).

use anyhow::{bail, Result};
use clap::Args;
use std::time::Duration;
use tessera::http::scheduler::SchedulerConfig;
use tessera::http::server::{serve, ServerOptions};
use tessera_ir::serving::{KvDtype, ServeShape};
use tessera_runtime::nccl::{CommChoice, Transport};
use tessera_runtime::serve::process;
use tessera_runtime::spmd::Communicator;

#[derive(Args)]
pub struct ServeArgs {
    /// A Hugging Face checkpoint directory (config.json, *.safetensors, tokenizer.json), a zoo
    /// spec such as gpt:layers=2,hidden=64,heads=4,vocab=256 (seeded weights, byte tokens), or
    /// a directory `tessera compile --serve` wrote (its shape and --mesh are fixed there).
    pub model: String,
    /// The port to listen on (0: any free port; the address is printed on stdout).
    #[arg(long)]
    pub port: u16,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Sequences decoded together at most (the programs' rows; default 16).
    #[arg(long)]
    pub max_batch: Option<u64>,
    /// Tokens a sequence holds at most, prompt and completion (default: the model's context).
    #[arg(long)]
    pub max_seq: Option<u64>,
    /// Tokens per KV-cache block (default 16).
    #[arg(long)]
    pub kv_block: Option<u64>,
    /// What the paged KV cache stores keys and values in: f32 (exact, the default), bf16 or
    /// int8 (with a scale per block and head); attention reads it directly.
    #[arg(long, value_parser = tessera::serve::parse_kv_dtype)]
    pub kv_dtype: Option<KvDtype>,
    /// Blocks in the KV cache (default: enough for --max-batch sequences of --max-seq tokens).
    #[arg(long)]
    pub kv_blocks: Option<u64>,
    /// Tokens one scheduler step runs at most: the decodes, then prefill chunks in the rest
    /// (default: twice --max-batch).
    #[arg(long)]
    pub step_tokens: Option<usize>,
    /// Split the model over tensor-parallel ranks (`tp=N`, one thread per rank, stepped in
    /// lockstep by the one scheduler); no other mesh axis.
    #[arg(long)]
    pub mesh: Option<String>,
    /// Seed of a zoo model's weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Seconds in-flight requests may run on after SIGTERM or SIGINT before they are aborted.
    #[arg(long, default_value_t = 30.0)]
    pub shutdown_grace_s: f64,
}

pub fn run(args: ServeArgs) -> Result<()> {
    if args.max_batch == Some(0) || args.kv_block == Some(0) || args.max_seq == Some(0) || args.kv_blocks == Some(0) {
        bail!("--max-batch, --max-seq, --kv-block and --kv-blocks must be positive");
    }
    if !(args.shutdown_grace_s >= 0.0 && args.shutdown_grace_s.is_finite()) {
        bail!("--shutdown-grace-s must be a non-negative number of seconds");
    }
    // Opened here too (the scheduler thread opens its own) so that a missing model fails
    // before anything listens.
    let model = tessera::serve::open_model(&args.model, args.seed)?;
    let config = &model.config;
    let (tp, shape) = match &model.compiled {
        Some(compiled) => {
            let m = &compiled.manifest;
            let asked = ServeShape {
                kv_dtype: args.kv_dtype.unwrap_or(m.shape.kv_dtype),
                ..ServeShape::new(
                    args.max_batch.unwrap_or(m.shape.max_batch),
                    args.max_seq.unwrap_or(m.shape.max_seq),
                    args.kv_block.unwrap_or(m.shape.kv_block),
                )
            };
            tessera::serve::compiled::check_run_options(compiled, asked, args.mesh.as_deref())?;
            (m.tp_ranks(), m.shape)
        }
        None => {
            let tp = tessera::serve::serving_tp(args.mesh.as_deref(), config)?;
            let max_batch = args.max_batch.unwrap_or(16);
            let shape = ServeShape {
                kv_dtype: args.kv_dtype.unwrap_or(KvDtype::F32),
                ..ServeShape::new(max_batch, args.max_seq.unwrap_or(config.seq), args.kv_block.unwrap_or(16))
            };
            (tp, shape)
        }
    };
    let kv_blocks = args.kv_blocks.unwrap_or(shape.max_batch * shape.max_seq.div_ceil(shape.kv_block));
    let step_tokens = args.step_tokens.unwrap_or(2 * shape.max_batch as usize).max(1);
    let world = process_world(&args.model, &model, tp)?;
    if let Some(comm) = world.clone().filter(|comm| comm.rank() != 0) {
        return follow_rank_0(&model, kv_blocks, comm);
    }
    let options = ServerOptions {
        model: args.model,
        seed: args.seed,
        host: args.host,
        port: args.port,
        scheduler: SchedulerConfig {
            max_batch: shape.max_batch,
            max_seq: shape.max_seq,
            kv_block: shape.kv_block,
            kv_dtype: shape.kv_dtype,
            kv_blocks,
            step_tokens,
            tp,
        },
        shutdown_grace: Duration::from_secs_f64(args.shutdown_grace_s),
    };
    let result = serve(options, world.clone());
    if let (Err(e), Some(comm)) = (&result, &world) {
        // The followers wait for rank 0's commands: end the job (MPI_Abort) with the reason.
        comm.abort(&format!("tensor-parallel rank 0 (the server): {e:#}"));
    }
    result
}

/// The world of the processes a launcher started (none outside one, or for one process): they
/// must be as many as the tensor-parallel ranks `tp` of the compiled directory `model` (named
/// `name`), each rank one process.
pub(crate) fn process_world(
    name: &str,
    model: &tessera::serve::ServedModel,
    tp: u64,
) -> Result<Option<std::sync::Arc<dyn Communicator>>> {
    let Some(n) = tessera_runtime::mpi::launched_world_size().filter(|&n| n > 1) else {
        return Ok(None);
    };
    if model.compiled.is_none() || tp != n as u64 {
        bail!("{name}: under a launcher of {n} processes, tessera runs a directory compiled with `tessera compile --serve --mesh tp={n}`");
    }
    Ok(Some(Transport::open(CommChoice::Mpi, PEER_TIMEOUT)?.into_shared()))
}

/// How long a rank waits for a peer inside a step's all-reduce: the same programs on the same
/// rows, so a peer this late has died or hung (a follower waits for commands without limit).
const PEER_TIMEOUT: Duration = Duration::from_secs(300);

/// A rank other than 0 of `mpirun -n N tessera serve DIR` (or `generate DIR`): builds its engine and applies rank
/// 0's commands until rank 0 stops it (exit 0). Signals are rank 0's to act on (it drains and
/// then stops the followers), so this process ignores SIGTERM and SIGINT; a failure or panic
/// here ends the job with a message naming the rank.
pub(crate) fn follow_rank_0(
    model: &tessera::serve::ServedModel,
    kv_blocks: u64,
    comm: std::sync::Arc<dyn Communicator>,
) -> Result<()> {
    // SAFETY: signal(2) with SIG_IGN installs no handler code.
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
    let rank = comm.rank();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<()> {
        let mut engine = tessera::serve::compiled::build_process_rank(model, kv_blocks, comm.clone())?;
        process::follow(&mut engine, comm.as_ref())?;
        Ok(())
    }));
    let message = match result {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(e)) => format!("{e:#}"),
        Err(payload) => {
            let text = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            format!("panicked: {text}")
        }
    };
    comm.abort(&format!("tensor-parallel rank {rank} {message}"));
    bail!("tensor-parallel rank {rank} {message}")
}
