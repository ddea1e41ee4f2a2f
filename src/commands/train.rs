//! `tessera train`: trains a model on byte-level text, printing one line (or one JSON object)
//! per step and checkpointing on request. Three ways to run:
//! - one process (no `--mesh`): the step compiled to a CPU artifact (`--executor compiled`, the
//!   default) or on the reference interpreter (`--executor reference`); checkpoints are the same
//!   either way, so a run resumes on the other executor;
//! - `--mesh dp=2,tp=2` without a launcher: every rank a thread of this process;
//! - under `mpirun -n N` / `srun` (detected from the launcher's environment): one rank per
//!   process over MPI, N equal to the mesh size; rank 0 alone prints, every rank writes its
//!   blocks of the sharded checkpoints.
//!
//! Mesh runs compile each pipeline stage's program as `tessera compile --train --mesh` does
//! (`--executor compiled`, the default; a process under `mpirun` compiles only its rank's stage)
//! and run it with the collectives over the communicator, or run the per-rank programs on the
//! reference interpreter (`--executor reference`); their start line says which.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tessera::fault;
use tessera::train::compiled::compiled_trainer;
use tessera::train::distributed::{train_in_process, DistributedStep, DistributedTrainer, Event};
use tessera::train::{self, checkpoint, data::ByteCorpus, OptimizerKind, StepReport, TrainConfig, Trainer};
use tessera_ir::sharding::Mesh;
use tessera_passes::cost::step::Schedule;
use tessera_passes::shard::PipelineSchedule;
use tessera_runtime::executor::profile::Profile;
use tessera_runtime::mpi::launched_world_size;
use tessera_runtime::nccl::{CommChoice, Transport};
use tessera_runtime::spmd::Communicator;
use tessera_runtime::step::{CompiledExecutor, InterpreterExecutor, StepExecutor};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OptimizerArg {
    Adamw,
    Sgd,
}

/// `--comm`: the transport of a multi-process run.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CommArg {
    /// MPI collectives on host memory.
    Mpi,
    /// NCCL collectives on one GPU per rank (fails without a CUDA driver and libnccl).
    Nccl,
}

impl CommArg {
    pub fn choice(self) -> CommChoice {
        match self {
            CommArg::Mpi => CommChoice::Mpi,
            CommArg::Nccl => CommChoice::Nccl,
        }
    }
}

/// `--executor`: what runs the step of a single-process run.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExecutorArg {
    /// The step compiled in-process to a CPU artifact (as `compile --train --target cpu`).
    Compiled,
    /// The reference interpreter (the oracle: f64 arithmetic, slow).
    Reference,
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
    /// What runs the step (on a mesh, each rank's program): compiled kernels, or the reference
    /// interpreter.
    #[arg(long, value_enum, default_value_t = ExecutorArg::Compiled)]
    pub executor: ExecutorArg,
    /// After the last step, print the wall time per kernel and library call of the compiled
    /// step, summed over the steps (standard error; `--executor compiled`).
    #[arg(long)]
    pub profile: bool,
    /// Partition the step over a device mesh (`dp=2,tp=2,pp=1`): under `mpirun -n N` one rank
    /// per process (N must be the mesh size), otherwise one thread per rank.
    #[arg(long)]
    pub mesh: Option<String>,
    /// The pipeline schedule of a mesh with pp > 1 (same losses either way; 1F1B holds at
    /// most pp micro-batches' activations per stage, GPipe all of them).
    #[arg(long, value_enum, default_value_t = ScheduleArg::OneFOneB)]
    pub schedule: ScheduleArg,
    /// Model chunks per pipeline stage (Megatron's interleaved 1F1B): needs pp > 1, 1f1b,
    /// micro-batches a multiple of pp, and pp * V dividing a zoo model's layers.
    #[arg(long, default_value_t = 1, value_name = "V")]
    pub interleave: usize,
    /// Seconds a rank waits for a message from another before the run fails.
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS")]
    pub comm_timeout: f64,
    /// The transport between the processes of an `mpirun`/`srun` launch.
    #[arg(long, value_enum)]
    pub comm: Option<CommArg>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScheduleArg {
    Gpipe,
    #[value(name = "1f1b")]
    OneFOneB,
}

/// `--schedule` and `--interleave`, checked against the mesh and the micro-batches (the
/// planner's wording).
fn pipeline_schedule(args: &TrainArgs, mesh: &Mesh) -> Result<PipelineSchedule> {
    let kind = match args.schedule {
        ScheduleArg::Gpipe => Schedule::GPipe,
        ScheduleArg::OneFOneB => Schedule::OneFOneB,
    };
    let schedule = PipelineSchedule { kind, interleave: args.interleave };
    let pp = mesh.axis_size("pp").unwrap_or(1) as usize;
    schedule.check(pp, args.micro_batches).map_err(|m| anyhow::anyhow!("--schedule {schedule}: {m}"))?;
    Ok(schedule)
}

/// The schedule and each stage's peak of live bytes (text output, pipelines only).
fn schedule_line(shared: &DistributedStep) -> Option<String> {
    let stages = &shared.module.stages;
    if stages.len() < 2 {
        return None;
    }
    let peaks: Vec<String> = stages
        .iter()
        .map(|p| p.ranks.first().and_then(|&r| shared.peak_live_bytes(r)).map_or("?".into(), |b| b.to_string()))
        .collect();
    Some(format!("pipeline schedule {}: peak live bytes per stage {}", shared.schedule, peaks.join(" ")))
}

fn print_report(out: &mut impl Write, format: Format, report: &StepReport) -> Result<()> {
    match format {
        Format::Json => {
            let line = serde_json::json!({
                "step": report.step,
                "loss": report.loss,
                "step_time_s": report.step_time_s,
                "tokens_per_s": report.tokens_per_s,
                "cpu_time_s": report.cpu_time_s,
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
    Ok(())
}

fn train_config(args: &TrainArgs) -> TrainConfig {
    TrainConfig {
        model: args.model.clone(),
        optimizer: match args.optimizer {
            OptimizerArg::Adamw => OptimizerKind::AdamW,
            OptimizerArg::Sgd => OptimizerKind::Sgd,
        },
        lr: args.lr,
        seed: args.seed,
        micro_batches: args.micro_batches,
    }
}

/// Whether a checkpoint is due after `step`.
fn checkpoint_due(args: &TrainArgs, step: u64) -> bool {
    args.checkpoint_every.is_some_and(|every| step % every == 0 || step == args.steps)
}

fn parse_mesh(text: &str) -> Result<Mesh> {
    Mesh::parse(text).map_err(|e| anyhow::anyhow!("--mesh '{text}': {e}"))
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
    if !(args.comm_timeout.is_finite() && args.comm_timeout > 0.0) {
        bail!("--comm-timeout must be a positive number of seconds");
    }
    if args.mesh.is_none() {
        pipeline_schedule(&args, &Mesh::parse("dp=1").map_err(|e| anyhow::anyhow!("{e}"))?)?;
    }
    match (launched_world_size().filter(|&n| n > 1), &args.mesh) {
        (Some(world), Some(mesh)) => run_mpi(&args, &parse_mesh(mesh)?, world),
        (Some(world), None) => {
            bail!("launched as {world} MPI ranks: give --mesh with {world} devices (e.g. --mesh dp={world})")
        }
        (None, _) if args.comm.is_some() => {
            bail!("--comm mpi and --comm nccl choose the transport between processes: launch 2 or more ranks with mpirun or srun")
        }
        (None, Some(mesh)) => {
            let mesh = parse_mesh(mesh)?;
            let model = train::load_model(&args.model, args.batch, args.seq)?;
            let corpus = ByteCorpus::read(&args.data)?;
            run_on_mesh(&args, model, train_config(&args), corpus, mesh)
        }
        (None, None) => run_single(&args),
    }
}

fn run_single(args: &TrainArgs) -> Result<()> {
    let model = train::load_model(&args.model, args.batch, args.seq)?;
    let corpus = ByteCorpus::read(&args.data)?;
    match args.executor {
        ExecutorArg::Reference => {
            if args.profile {
                bail!("--profile times the compiled step; drop --executor reference");
            }
            train_loop(args, Trainer::on_interpreter(model, train_config(args), corpus)?, None)
        }
        ExecutorArg::Compiled => {
            let (mut trainer, compile_time) = compiled_trainer(model, train_config(args), corpus)?;
            if args.profile {
                trainer.executor_mut().start_profile();
            }
            train_loop(args, trainer, Some(compile_time))?;
            Ok(())
        }
    }
}

/// Resumes if asked, then trains to `--steps`; `compile_time` is what building the executor
/// took (compiled steps).
fn train_loop<E: StepExecutor + Profiled>(
    args: &TrainArgs,
    mut trainer: Trainer<E>,
    compile_time: Option<Duration>,
) -> Result<()> {
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
            trainer.steps_done()
        )?;
        if let Some(time) = compile_time {
            writeln!(out, "compiled the step in {:.2} s", time.as_secs_f64())?;
        }
    }
    while trainer.steps_done() < args.steps {
        let report = trainer.train_step()?;
        print_report(&mut out, args.format, &report)?;
        if let (Some(dir), true) = (&args.checkpoint_dir, checkpoint_due(args, report.step)) {
            let saved = checkpoint::save(dir, &trainer.checkpoint()?)?;
            if args.format == Format::Text {
                writeln!(out, "checkpoint {}", saved.display())?;
            }
        }
    }
    if let Some(profile) = trainer.executor().profile() {
        eprint!("profile of the compiled step, summed over {} steps:\n{}", trainer.steps_done(), profile.report());
    }
    Ok(())
}

/// Executors whose steps can be timed per kernel.
trait Profiled {
    fn profile(&self) -> Option<&Profile>;
}

impl Profiled for InterpreterExecutor {
    fn profile(&self) -> Option<&Profile> {
        None
    }
}

impl Profiled for CompiledExecutor {
    fn profile(&self) -> Option<&Profile> {
        CompiledExecutor::profile(self)
    }
}

/// `--mesh`: every rank on a thread of this process; rank 0's reports; checkpoints of the
/// gathered global state (so they resume on any mesh, or on one process).
fn run_on_mesh(
    args: &TrainArgs,
    model: train::TrainModel,
    config: TrainConfig,
    corpus: ByteCorpus,
    mesh: Mesh,
) -> Result<()> {
    let schedule = pipeline_schedule(args, &mesh)?;
    let mut step = DistributedStep::with_schedule(model, config, mesh, schedule)?;
    let compile_time = match args.executor {
        ExecutorArg::Compiled => Some(step.compile_stages(None)?),
        ExecutorArg::Reference => None,
    };
    let shared = Arc::new(step);
    let resume = match &args.resume {
        Some(dir) => {
            let latest = checkpoint::latest(dir)?;
            let ckpt = checkpoint::load(&latest)?;
            let state = train::state_from_checkpoint(&shared.step, &shared.config, ckpt)
                .with_context(|| format!("{}: cannot resume", latest.display()))?;
            Some(state)
        }
        None => None,
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.format == Format::Text {
        let m = &shared.model;
        writeln!(
            out,
            "training {} ({} parameters) on {} ranks ({}, threads of one process, {}{}): {} tokens per step, {} optimizer, from step {}",
            args.model,
            train::parameter_count(&m.forward),
            shared.mesh().num_devices(),
            shared.mesh(),
            shared.executor_name(),
            compile_time.map_or(String::new(), |t| format!(", compiled in {:.2} s", t.as_secs_f64())),
            m.batch * m.seq * shared.config.micro_batches,
            shared.config.optimizer.name(),
            resume.as_ref().map_or(0, |s| s.step)
        )?;
        if let Some(line) = schedule_line(&shared) {
            writeln!(out, "{line}")?;
        }
    }
    let gather_every = match (&args.checkpoint_dir, args.checkpoint_every) {
        (Some(_), Some(every)) => Some(every),
        _ => None,
    };
    let step = shared.step.clone();
    let config = shared.config.clone();
    let timeout = Duration::from_secs_f64(args.comm_timeout);
    // The stdout lock is not `Send`; the events come from rank 0's thread.
    drop(out);
    train_in_process(shared, &corpus, resume.as_ref(), args.steps, gather_every, timeout, |event| {
        let mut out = std::io::stdout().lock();
        match event {
            Event::Step(report) => print_report(&mut out, args.format, report)?,
            Event::State(state) => {
                if let (Some(dir), true) = (&args.checkpoint_dir, checkpoint_due(args, state.step)) {
                    let saved = checkpoint::save(dir, &train::checkpoint_of(&step, &config, state)?)?;
                    if args.format == Format::Text {
                        writeln!(out, "checkpoint {}", saved.display())?;
                    }
                }
            }
        }
        Ok(())
    })?;
    Ok(())
}

/// One rank of an MPI job. Any error on this rank ends the whole job (MPI_Abort), so the others
/// never wait for it.
fn run_mpi(args: &TrainArgs, mesh: &Mesh, world: usize) -> Result<()> {
    if mesh.num_devices() != world {
        bail!("--mesh {mesh} has {} devices but the launcher started {world} ranks", mesh.num_devices());
    }
    let fault = fault::requested()?;
    let comm = Transport::open(args.comm.unwrap_or(CommArg::Mpi).choice(), Duration::from_secs_f64(args.comm_timeout))?
        .into_shared();
    if comm.size() != world {
        bail!("the launcher announced {world} ranks but MPI has {}", comm.size());
    }
    let result = train_rank(args, mesh, Arc::clone(&comm), fault);
    if let Err(e) = &result {
        comm.abort(&format!("{e:#}"));
    }
    result
}

fn train_rank(args: &TrainArgs, mesh: &Mesh, comm: Arc<dyn Communicator>, fault: Option<fault::Fault>) -> Result<()> {
    let rank = comm.rank();
    let model = train::load_model(&args.model, args.batch, args.seq)?;
    let corpus = ByteCorpus::read(&args.data)?;
    let schedule = pipeline_schedule(args, mesh)?;
    let mut step = DistributedStep::with_schedule(model, train_config(args), mesh.clone(), schedule)?;
    let compile_time = match args.executor {
        // One compile per stage, sent to the stage's other ranks; they wait for it however
        // slow the compile is (a dead compiler ends the job through mpirun).
        ExecutorArg::Compiled => Some(step.compile_stage_of(rank, comm.as_ref(), Duration::from_secs(3600))?),
        ExecutorArg::Reference => None,
    };
    let shared = Arc::new(step);
    let state = match &args.resume {
        // Every rank reads the whole checkpoint (of any mesh) and keeps its own blocks.
        Some(dir) => {
            let latest = checkpoint::latest(dir)?;
            let ckpt = checkpoint::load(&latest)?;
            train::state_from_checkpoint(&shared.step, &shared.config, ckpt)
                .with_context(|| format!("{}: cannot resume", latest.display()))?
        }
        None => train::init_state(&shared.step, shared.config.seed),
    };
    let mut trainer = DistributedTrainer::from_state(shared, corpus, rank, comm.clone(), &state)?;
    drop(state);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if rank == 0 && args.format == Format::Text {
        writeln!(
            out,
            "training {} ({} parameters) on mesh {mesh} ({} MPI ranks, {}{}): {} tokens per step, {} optimizer, from step {}",
            args.model,
            train::parameter_count(&trainer.shared.model.forward),
            mesh.num_devices(),
            trainer.shared.executor_name(),
            compile_time.map_or(String::new(), |t| format!(", rank 0's stage compiled (or received) in {:.2} s", t.as_secs_f64())),
            trainer.tokens_per_step(),
            trainer.shared.config.optimizer.name(),
            trainer.local_state().step
        )?;
        if let Some(line) = schedule_line(&trainer.shared) {
            writeln!(out, "{line}")?;
        }
    }
    while trainer.local_state().step < args.steps {
        fault::maybe_die(fault, rank, trainer.local_state().step + 1);
        let report = trainer.train_step()?;
        if rank == 0 {
            print_report(&mut out, args.format, &report)?;
        }
        if let (Some(dir), true) = (&args.checkpoint_dir, checkpoint_due(args, report.step)) {
            let progress = trainer.local_state();
            let meta = checkpoint::Meta {
                step: progress.step,
                data_position: progress.data_position,
                rng_state: progress.rng.0,
                model: args.model.clone(),
                fingerprint: train::model_fingerprint(&args.model)?,
                optimizer: trainer.shared.config.optimizer.name().to_string(),
                mesh: mesh.to_string(),
            };
            let blocks = checkpoint::rank_blocks(&trainer)?;
            let saved = checkpoint::save_sharded(dir, &meta, &blocks, comm.as_ref())?;
            if rank == 0 && args.format == Format::Text {
                writeln!(out, "checkpoint {}", saved.display())?;
            }
        }
    }
    Ok(())
}
