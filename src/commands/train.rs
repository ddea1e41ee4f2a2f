//! `tessera train`: trains a model on byte-level text with the reference interpreter (one
//! process), printing one line (or one JSON object) per step and checkpointing on request.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use std::io::Write;
use std::path::PathBuf;
use tessera::train::{self, checkpoint, data::ByteCorpus, OptimizerKind, TrainConfig, Trainer};
use tessera_runtime::step::StepExecutor;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OptimizerArg {
    Adamw,
    Sgd,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Args)]
pub struct TrainArgs {
    /// A zoo model (`gpt:layers=2,hidden=64,heads=4,seq=32,vocab=256`) or a model file whose
    /// `tokens` input is [batch, seq] and whose output is the logits (or their softmax).
    pub model: String,
    /// Train until this many optimizer steps are done (counting those of a resumed run).
    #[arg(long)]
    pub steps: u64,
    /// A text file; its bytes are the tokens (vocabulary 256).
    #[arg(long)]
    pub data: PathBuf,
    /// Tokens per sequence (zoo models; default: the spec's seq).
    #[arg(long)]
    pub seq: Option<u64>,
    /// Sequences per micro-batch (zoo models).
    #[arg(long, default_value_t = 4)]
    pub batch: u64,
    /// Micro-batches whose gradients are accumulated into one update.
    #[arg(long, default_value_t = 1)]
    pub micro_batches: usize,
    #[arg(long, default_value_t = 3e-3)]
    pub lr: f64,
    #[arg(long, value_enum, default_value_t = OptimizerArg::Adamw)]
    pub optimizer: OptimizerArg,
    /// Seeds the initial weights and the dropout masks.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where checkpoints go (`DIR/step-NNNNNNNN/`).
    #[arg(long)]
    pub checkpoint_dir: Option<PathBuf>,
    /// Save a checkpoint every K steps (and after the last step).
    #[arg(long, value_name = "K")]
    pub checkpoint_every: Option<u64>,
    /// Continue from the newest checkpoint in DIR.
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

pub fn run(args: TrainArgs) -> Result<()> {
    if args.checkpoint_every.is_some() && args.checkpoint_dir.is_none() {
        bail!("--checkpoint-every needs --checkpoint-dir");
    }
    if args.checkpoint_every == Some(0) {
        bail!("--checkpoint-every must be positive");
    }
    if args.micro_batches == 0 || args.batch == 0 {
        bail!("--batch and --micro-batches must be positive");
    }
    if !(args.lr.is_finite() && args.lr > 0.0) {
        bail!("--lr must be a positive number");
    }
    let model = train::load_model(&args.model, args.batch, args.seq)?;
    let corpus = ByteCorpus::read(&args.data)?;
    let config = TrainConfig {
        model: args.model.clone(),
        optimizer: match args.optimizer {
            OptimizerArg::Adamw => OptimizerKind::AdamW,
            OptimizerArg::Sgd => OptimizerKind::Sgd,
        },
        lr: args.lr,
        seed: args.seed,
        micro_batches: args.micro_batches,
    };
    let mut trainer = Trainer::on_interpreter(model, config, corpus)?;
    if let Some(dir) = &args.resume {
        let latest = checkpoint::latest(dir)?;
        let ckpt = checkpoint::load(&latest)?;
        trainer.restore(ckpt).with_context(|| format!("{}: cannot resume", latest.display()))?;
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.format == Format::Text {
        writeln!(
            out,
            "training {} ({} parameters) on {}: {} tokens per step, {} optimizer, from step {}",
            args.model,
            train::parameter_count(&trainer.model.forward),
            trainer.executor().describe(),
            trainer.tokens_per_step(),
            trainer.config.optimizer.name(),
            trainer.state.step
        )?;
    }
    while trainer.state.step < args.steps {
        let report = trainer.train_step()?;
        match args.format {
            Format::Json => {
                let line = serde_json::json!({
                    "step": report.step,
                    "loss": report.loss,
                    "step_time_s": report.step_time_s,
                    "tokens_per_s": report.tokens_per_s,
                });
                writeln!(out, "{line}")?;
            }
            Format::Text => writeln!(
                out,
                "step {:>6}  loss {:.4}  {:.3} s  {:.0} tokens/s",
                report.step, report.loss, report.step_time_s, report.tokens_per_s
            )?,
        }
        out.flush()?;
        if let (Some(dir), Some(every)) = (&args.checkpoint_dir, args.checkpoint_every) {
            if report.step % every == 0 || report.step == args.steps {
                let saved = checkpoint::save(dir, &trainer.checkpoint())?;
                if args.format == Format::Text {
                    writeln!(out, "checkpoint {}", saved.display())?;
                }
            }
        }
    }
    Ok(())
}
