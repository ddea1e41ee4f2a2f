//! `tessera generate`: text from a model (a Hugging Face checkpoint directory or a zoo spec)
//! through the serving engine, streamed to stdout as it is generated. Under `mpirun -n N` on a
//! directory compiled with `--mesh tp=N` the ranks are processes: rank 0 generates and prints,
//! the others follow its steps (as in `tessera serve`) and print nothing.

use anyhow::{bail, Result};
use clap::Args;
use std::io::Write;
use tessera::serve::compiled::{build_process_rank, check_run_options};
use tessera::serve::{build_serving_engine, generate, open_model, serving_tp, GenerateOptions};
use tessera_ir::serving::{KvDtype, ServeShape};
use tessera_runtime::serve::engine::ServingEngine;
use tessera_runtime::serve::process::LeaderEngine;
use tessera_runtime::serve::sampling::SamplingParams;

#[derive(Args)]
pub struct GenerateArgs {
    /// A Hugging Face checkpoint directory (config.json, *.safetensors, tokenizer.json), a zoo
    /// spec such as gpt:layers=2,hidden=64,heads=4,vocab=256 (seeded weights, byte tokens), or
    /// a directory `tessera compile --serve` wrote (its shape and --mesh are fixed there).
    pub model: String,
    /// The prompt.
    #[arg(long)]
    pub prompt: String,
    /// Tokens to generate at most.
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy (the default).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Nucleus sampling: sample from the most likely tokens whose probabilities reach this.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// Seed of the sampler (and of a zoo model's weights).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop before the first occurrence of this text.
    #[arg(long)]
    pub stop: Option<String>,
    /// Tokens per KV-cache block (default 16).
    #[arg(long)]
    pub kv_block: Option<u64>,
    /// What the paged KV cache stores keys and values in: f32 (exact, the default), bf16 or
    /// int8 (with a scale per block and head); attention reads it directly.
    #[arg(long, value_parser = tessera::serve::parse_kv_dtype)]
    pub kv_dtype: Option<KvDtype>,
    /// Split the model over tensor-parallel ranks (`tp=N`, one thread per rank): each rank
    /// holds its share of the heads, of the MLP and of the KV cache; no other mesh axis.
    #[arg(long)]
    pub mesh: Option<String>,
    /// Print one JSON object (prompt and generated token ids, text, timings) instead of
    /// streaming the text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    if !(args.temperature >= 0.0 && args.temperature.is_finite()) {
        bail!("--temperature must be a non-negative number");
    }
    if !(args.top_p > 0.0 && args.top_p <= 1.0) {
        bail!("--top-p must be in (0, 1]");
    }
    let model = open_model(&args.model, args.seed)?;
    let prompt_len = model.tokenizer.encode(&args.prompt)?.len();
    let context = model.config.seq as usize;
    if prompt_len > context {
        bail!("the prompt has {prompt_len} tokens; the model's context is {context}");
    }
    let (tp, shape) = match &model.compiled {
        Some(compiled) => {
            let m = &compiled.manifest;
            let asked = ServeShape {
                kv_dtype: args.kv_dtype.unwrap_or(m.shape.kv_dtype),
                ..ServeShape::new(m.shape.max_batch, m.shape.max_seq, args.kv_block.unwrap_or(m.shape.kv_block))
            };
            check_run_options(compiled, asked, args.mesh.as_deref())?;
            if prompt_len as u64 > m.shape.max_seq {
                bail!("the prompt has {prompt_len} tokens; {} holds {} a sequence", args.model, m.shape.max_seq);
            }
            (m.tp_ranks(), m.shape)
        }
        None => {
            let tp = serving_tp(args.mesh.as_deref(), &model.config)?;
            // One sequence: the cache holds the prompt and the new tokens, within the context.
            let max_seq = (prompt_len + args.max_new_tokens).clamp(1, context) as u64;
            let kv_block = args.kv_block.unwrap_or(16);
            (
                tp,
                ServeShape { kv_dtype: args.kv_dtype.unwrap_or(KvDtype::F32), ..ServeShape::new(1, max_seq, kv_block) },
            )
        }
    };
    let world = super::serve::process_world(&args.model, &model, tp)?;
    let (mut engine, setup) = match world {
        None => build_serving_engine(&model, shape, shape.cache_blocks(), &[], tp)?,
        Some(comm) if comm.rank() != 0 => return super::serve::follow_rank_0(&model, shape.cache_blocks(), comm),
        Some(comm) => {
            let started = std::time::Instant::now();
            let engine = build_process_rank(&model, shape.cache_blocks(), comm.clone());
            let engine = engine.inspect_err(|e| comm.abort(&format!("tensor-parallel rank 0: {e:#}")))?;
            let leader: Box<dyn ServingEngine> = Box::new(LeaderEngine::new(engine, comm.clone()));
            (leader, started.elapsed())
        }
    };
    let options = GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        sampling: SamplingParams { temperature: args.temperature, top_p: args.top_p, seed: args.seed },
        stop: args.stop.clone(),
    };
    let mut stdout = std::io::stdout().lock();
    let streaming = !args.json;
    let mut write_error = None;
    let generation = generate(engine.as_mut(), &model, &args.prompt, &options, &mut |text| {
        if streaming && write_error.is_none() {
            if let Err(e) = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
                write_error = Some(e);
            }
        }
    })?;
    if let Some(e) = write_error {
        return Err(e.into());
    }
    let decode_steps = generation.generated_ids.len().saturating_sub(1);
    let decode_rate = decode_steps as f64 / generation.decode.as_secs_f64().max(f64::MIN_POSITIVE);
    if args.json {
        let json = serde_json::json!({
            "prompt_ids": generation.prompt_ids,
            "generated_ids": generation.generated_ids,
            "text": generation.text,
            "prefill_seconds": generation.prefill.as_secs_f64(),
            "decode_seconds": generation.decode.as_secs_f64(),
            "decode_tokens_per_second": decode_rate,
            "tp": tp,
            "all_reduce_seconds": engine.all_reduce_time().as_secs_f64(),
        });
        writeln!(stdout, "{json}")?;
    } else {
        writeln!(stdout)?;
    }
    eprintln!(
        "{} prompt tokens, {} generated: prefill {:.1} ms, decode {:.1} tokens/s (batch 1); compiling and binding {:.2} s",
        generation.prompt_ids.len(),
        generation.generated_ids.len(),
        generation.prefill.as_secs_f64() * 1e3,
        decode_rate,
        setup.as_secs_f64()
    );
    Ok(())
}
