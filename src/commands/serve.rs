//! `tessera serve`: an OpenAI-compatible completions server for a Hugging Face checkpoint
//! directory or a zoo model (see `tessera::http`).

use anyhow::{bail, Result};
use clap::Args;
use std::time::Duration;
use tessera::http::scheduler::SchedulerConfig;
use tessera::http::server::{serve, ServerOptions};
use tessera_ir::serving::{KvDtype, ServeShape};

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
    serve(ServerOptions {
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
    })
}
