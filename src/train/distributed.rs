//! The training step partitioned over a device mesh: one [`DistributedTrainer`] per rank.
//!
//! The step graph of [`super::build_step`] is partitioned by `passes::shard` with
//! [`ShardConfig::for_train_step`]: batches split over `dp`, Megatron weight splits over `tp`,
//! pipeline stages over `pp` cut between layers (each layer's forward for every micro-batch, its
//! backward and its parameters' updates on one stage), each stage running its micro-batches in
//! the [`PipelineSchedule`]'s order (1F1B by default; GPipe; interleaved 1F1B with `interleave`
//! chunks of layers per stage). The schedule only reorders each stage program, so every
//! schedule gives the same losses and weights bit for bit. The optimizer state is split exactly like its parameter, and the updated
//! parameters and state leave the step in the parameter's own sharding, so a rank keeps its
//! blocks from step to step without gathering them.
//!
//! Invariants:
//! - a rank holds only its blocks ([`RankShard`]) of the parameters and optimizer state its
//!   stage uses; every mesh starts from the global weights of [`super::init_state`], cut per rank,
//!   so every mesh trains the same model as one process;
//! - every rank draws the same global batches ([`super::step_data`]) and feeds its stage program
//!   its part of them, so the data stream (and a checkpoint's position in it) is mesh-independent;
//! - the loss is returned by every rank (every stage's program ends with it, replicated);
//! - [`DistributedTrainer::gather_state`] and [`DistributedTrainer::restore_global`] convert
//!   between the rank blocks and the global [`TrainState`], so a checkpoint written on one mesh
//!   resumes on another.
//!
//! A failing step aborts the communicator, so the other ranks stop with an error instead of
//! waiting for this one.
//!
//! Compiled ranks ([`DistributedStep::compile_stages`], [`DistributedStep::compile_stage_of`]):
//! each stage program is compiled to a CPU artifact as `tessera compile --train --mesh` does,
//! and each rank runs its stage's with a `runtime::step::CompiledExecutor` connected to its
//! communicator: the state blocks are bound once and carried in the arena (`w.next` onto `w`),
//! the data blocks fed per step, the collectives run as library steps in the scheduled program
//! order. [`DistributedTrainer::rank_shards`] reads the current blocks out of the arena, so
//! gathering and sharded checkpoints are the same for both executors.
//!
//! # Per-rank trainers
//!
//! **`tessera::train::distributed`**: `DistributedStep` (the step graph and its partition, shared
//! by in-process ranks) and `DistributedTrainer`, one per rank over an `Arc<dyn Communicator>`:
//! it holds only its blocks (`RankShard`: name, sharding, global type, local tensor) of the
//! parameters and optimizer state its stage uses, draws the same global batches as one process
//! (`train::step_data`) and feeds its program its part, runs it with `runtime::spmd::run_rank`
//! and keeps the updated blocks. `gather_state` (collective) and `restore_global` convert to and
//! from the global `TrainState`, so checkpoints are mesh-independent; `writes_shard` picks one
//! writer per distinct block for sharded checkpoints. `train_in_process` runs every rank on a
//! thread (`tessera train --mesh`); under `mpirun -n N` the CLI runs one `DistributedTrainer` per
//! process over the `--comm` transport (`MpiCommunicator`, or `NcclCommunicator` on GPUs) instead, rank 0 printing, and each rank writes the blocks it is
//! the writer of (`checkpoint::rank_blocks` + `save_sharded`). Not done: `cross_entropy` and
//! `softmax` keep the class dimension whole (a vocabulary-parallel loss would need partial
//! max/sum inside them), so a `tp`-split head's logits are gathered before the loss.

use super::data::ByteCorpus;
use super::{build_step, init_state, step_data, SplitMix64State, StepReport, TrainConfig, TrainModel, TrainState};
use anyhow::{bail, ensure, Context, Result};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera_codegen::artifact::{compile, write_artifact, ArtifactFiles, CompileOptions, FileContent, Target};
use tessera_ir::sharding::{Mesh, Sharding};
use tessera_ir::tensor::Tensor;
use tessera_ir::types::TensorType;
use tessera_passes::shard::{partition, PipelineSchedule, ShardConfig, ShardedModule, StageProgram};
use tessera_passes::train_step::TrainStep;
use tessera_runtime::executor::load;
use tessera_runtime::spmd::{peak_live_bytes, run_rank, CommError, Communicator, LocalCommunicator, RankComm, Tag};
use tessera_runtime::step::{CarriedState, CarriedValue, CompiledExecutor, StepExecutor};

/// What every rank of a run shares: the model, the global step graph and its partition.
/// Building it once and sharing it (`Arc`) spares in-process ranks partitioning the same graph.
#[derive(Debug, Clone)]
pub struct DistributedStep {
    pub model: TrainModel,
    pub config: TrainConfig,
    /// The global (single-device) step graph.
    pub step: TrainStep,
    pub module: ShardedModule,
    /// The mesh axis the pipeline stages are laid along.
    pub pipeline_axis: String,
    /// The order pipeline stages run their micro-batches' work in.
    pub schedule: PipelineSchedule,
    /// The stage programs compiled to CPU artifacts ([`DistributedStep::compile_stages`]):
    /// then ranks run them instead of the interpreter.
    pub compiled: Option<Arc<CompiledStages>>,
}

/// Pipeline stages' programs compiled to CPU artifacts in a temporary directory (removed when
/// the last holder drops it): the runtime maps kernels from a shared object on disk, and every
/// rank of a stage loads the same one.
#[derive(Debug)]
pub struct CompiledStages {
    _scratch: tempfile::TempDir,
    /// Per stage, its artifact directory; `None` for a stage this process does not run.
    dirs: Vec<Option<std::path::PathBuf>>,
    /// Wall time of compiling them.
    pub compile_time: Duration,
}

impl CompiledStages {
    /// The artifact of stage `stage`.
    pub fn dir(&self, stage: usize) -> Result<&std::path::Path> {
        self.dirs
            .get(stage)
            .and_then(Option::as_deref)
            .with_context(|| format!("pipeline stage {stage} was not compiled in this process"))
    }
}

impl DistributedStep {
    /// Builds the step graph of `model` and partitions it over `mesh`, its pipeline stages
    /// running the default schedule (1F1B).
    pub fn new(model: TrainModel, config: TrainConfig, mesh: Mesh) -> Result<DistributedStep> {
        DistributedStep::with_schedule(model, config, mesh, PipelineSchedule::default())
    }

    /// Like [`DistributedStep::new`], the pipeline stages running `schedule`. Interleaving a zoo
    /// model needs `pp * interleave` to divide its layers (as the planner requires), so every
    /// chunk holds whole layers.
    pub fn with_schedule(
        model: TrainModel,
        config: TrainConfig,
        mesh: Mesh,
        schedule: PipelineSchedule,
    ) -> Result<DistributedStep> {
        let pp = mesh.axis_size("pp").unwrap_or(1) as usize;
        if schedule.interleave > 1 {
            if let Ok(spec) = tessera_frontend::zoo::spec::parse(&config.model) {
                let layers = spec.layers as usize;
                ensure!(
                    pp > 1 && layers % (pp * schedule.interleave) == 0,
                    "pipeline schedule {schedule}: pp * interleave = {} does not divide the {layers} layers",
                    pp * schedule.interleave
                );
            }
        }
        let step = build_step(&model, &config)?;
        let shard_config = ShardConfig { schedule, ..ShardConfig::for_train_step(mesh, &step) };
        let module = partition(&step.graph, &shard_config)
            .with_context(|| format!("cannot partition the training step over {}", shard_config.mesh))?;
        Ok(DistributedStep {
            model,
            config,
            step,
            module,
            pipeline_axis: shard_config.pipeline_axis,
            schedule,
            compiled: None,
        })
    }

    /// Compiles the programs of pipeline stages `stages` (every stage when `None`: in-process
    /// ranks; a process under `mpirun` compiles only its own) to CPU artifacts, each as
    /// `tessera compile --train --mesh` compiles it; from then on trainers built from this step
    /// run their rank's compiled program, its collectives over their communicator.
    pub fn compile_stages(&mut self, stages: Option<&[usize]>) -> Result<Duration> {
        let started = Instant::now();
        let scratch = tempfile::Builder::new().prefix("tessera-mesh-").tempdir().context("a temporary directory")?;
        let mut dirs = vec![None; self.module.stages.len()];
        for program in &self.module.stages {
            if stages.is_some_and(|wanted| !wanted.contains(&program.stage)) {
                continue;
            }
            let dir = scratch.path().join(format!("stage{}", program.stage));
            write_artifact(&dir, &self.compile_stage(program)?)?;
            dirs[program.stage] = Some(dir);
        }
        let compile_time = started.elapsed();
        self.compiled = Some(Arc::new(CompiledStages { _scratch: scratch, dirs, compile_time }));
        Ok(compile_time)
    }

    /// [`DistributedStep::compile_stages`] for the stage of `rank`, one process per rank (under
    /// `mpirun`): the first rank of each stage compiles it and sends the artifact to the
    /// stage's other ranks, which would compile the same bytes (compiles are deterministic), so
    /// a stage costs one compile however many ranks run it. A receiving rank waits up to
    /// `patience` for it (compiling is slower than any message).
    pub fn compile_stage_of(&mut self, rank: usize, comm: &dyn Communicator, patience: Duration) -> Result<Duration> {
        let started = Instant::now();
        let program = self.module.program_of(rank).with_context(|| format!("no program runs rank {rank}"))?;
        let leader = program.ranks.first().copied().unwrap_or(rank);
        let files = if rank == leader {
            let files = self.compile_stage(program)?;
            let message = artifact_message(&files)?;
            for &peer in program.ranks.iter().filter(|&&r| r != rank) {
                comm.send(peer, Tag::Message(ARTIFACT_TAG), message.clone())
                    .with_context(|| format!("sending the compiled stage {} to rank {peer}", program.stage))?;
            }
            files
        } else {
            let message = loop {
                match comm.recv(leader, Tag::Message(ARTIFACT_TAG)) {
                    Err(CommError::Timeout { .. }) if started.elapsed() < patience => continue,
                    received => {
                        break received.with_context(|| {
                            format!("receiving the compiled stage {} from rank {leader}", program.stage)
                        })?
                    }
                }
            };
            artifact_of_message(&message).with_context(|| format!("the compiled stage from rank {leader}"))?
        };
        let stage = program.stage;
        let scratch = tempfile::Builder::new().prefix("tessera-mesh-").tempdir().context("a temporary directory")?;
        let dir = scratch.path().join(format!("stage{stage}"));
        write_artifact(&dir, &files)?;
        let mut dirs = vec![None; self.module.stages.len()];
        dirs[stage] = Some(dir);
        let compile_time = started.elapsed();
        self.compiled = Some(Arc::new(CompiledStages { _scratch: scratch, dirs, compile_time }));
        Ok(compile_time)
    }

    /// The artifact of `program` (one stage), compiled as `tessera compile --train --mesh` would.
    fn compile_stage(&self, program: &StageProgram) -> Result<ArtifactFiles> {
        let mut graph_options = super::compiled::step_graph_options(&self.model, &self.config);
        graph_options.push(format!("mesh={}", self.module.mesh));
        graph_options.push(format!("schedule={}", self.schedule));
        graph_options.push(format!("stage={}", program.stage));
        let options = CompileOptions {
            target: Target::Cpu,
            dims: Default::default(),
            graph_options,
            epilogues: false,
            pinned_outputs: true,
        };
        let compiled = compile(&program.graph, self.config.model.as_bytes(), &options).with_context(|| {
            format!("{}: cannot compile pipeline stage {} of the training step", self.config.model, program.stage)
        })?;
        Ok(compiled.files)
    }

    /// What runs each rank's program, for logs.
    pub fn executor_name(&self) -> &'static str {
        if self.compiled.is_some() {
            "compiled CPU programs"
        } else {
            "reference interpreter"
        }
    }

    /// The peak bytes of values the interpreter holds at once while rank `rank` runs its
    /// program (see [`tessera_runtime::spmd::peak_live_bytes`]): what the pipeline schedule
    /// changes. `None` when the program has symbolic shapes or no program runs the rank.
    pub fn peak_live_bytes(&self, rank: usize) -> Option<u64> {
        self.module.program_of(rank).and_then(|p| peak_live_bytes(&p.graph))
    }

    pub fn mesh(&self) -> &Mesh {
        &self.module.mesh
    }

    /// The names of the global state tensors: parameters, then optimizer state, in
    /// [`TrainStep::params`] and [`TrainStep::state`] order (the order of [`TrainState`]).
    fn state_slots(&self) -> impl Iterator<Item = (&str, &TensorType)> {
        self.step.params.iter().chain(&self.step.state).map(|s| (s.name.as_str(), &s.ty))
    }

    /// The program of the first stage that holds state tensor `name`, and its sharding there.
    fn holder(&self, name: &str) -> Option<(&StageProgram, Sharding)> {
        self.module.stages.iter().find_map(|p| {
            let g = &p.graph;
            let i = g.inputs().iter().position(|&v| g.value(v).name == name)?;
            Some((p, p.input_shardings.get(i)?.clone()))
        })
    }
}

/// The message tag of a compiled stage sent to the stage's other ranks (below MPI's limit of
/// 32767, above any tag `shard` gives a step's transfers in practice; a clash would still be
/// harmless, as messages of one tag arrive in order and this one comes first).
const ARTIFACT_TAG: i64 = 32700;

/// An artifact's files as one message: a tensor of bytes (i8), laid out as the manifest's JSON
/// then every file, each length-prefixed (u64, little-endian).
fn artifact_message(files: &ArtifactFiles) -> Result<Tensor> {
    let mut bytes = Vec::new();
    let mut put = |chunk: &[u8]| {
        bytes.extend_from_slice(&(chunk.len() as u64).to_le_bytes());
        bytes.extend_from_slice(chunk);
    };
    put(&serde_json::to_vec(&files.manifest)?);
    for (path, content) in &files.files {
        put(path.as_bytes());
        put(&content.to_bytes());
    }
    let n = bytes.len();
    Ok(Tensor::from_i64(tessera_ir::dtype::DType::I8, vec![n], bytes.into_iter().map(|b| i64::from(b as i8)).collect()))
}

/// The files of [`artifact_message`].
fn artifact_of_message(message: &Tensor) -> Result<ArtifactFiles> {
    let bytes: Vec<u8> = message.to_i64_vec().into_iter().map(|x| x as i8 as u8).collect();
    fn take<'a>(bytes: &'a [u8], at: &mut usize) -> Result<&'a [u8]> {
        let len = bytes.get(*at..*at + 8).context("a truncated artifact message")?;
        let len = u64::from_le_bytes(len.try_into().context("a length")?) as usize;
        let chunk = bytes.get(*at + 8..*at + 8 + len).context("a truncated artifact message")?;
        *at += 8 + len;
        Ok(chunk)
    }
    let mut at = 0usize;
    let manifest = serde_json::from_slice(take(&bytes, &mut at)?).context("the manifest")?;
    let mut files = Vec::new();
    while at < bytes.len() {
        let path = String::from_utf8(take(&bytes, &mut at)?.to_vec()).context("a file name")?;
        files.push((path, FileContent::Bytes(take(&bytes, &mut at)?.to_vec())));
    }
    Ok(ArtifactFiles { files, manifest })
}

/// One block of a parameter or optimizer state tensor, as a rank holds it (what a sharded
/// checkpoint writes).
#[derive(Debug, Clone, PartialEq)]
pub struct RankShard {
    /// The tensor's name in the step graph (`h0.attn.qkv.weight`, `h0.attn.qkv.weight.m`).
    pub name: String,
    /// How the global tensor is split over the mesh; this rank holds block `rank` of it.
    pub sharding: Sharding,
    /// The global tensor's type.
    pub global: TensorType,
    pub tensor: Tensor,
}

/// Where the run stands besides the tensors: the [`TrainState`] fields every rank shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Steps completed.
    pub step: u64,
    pub data_position: u64,
    pub rng: SplitMix64State,
}

/// One rank's training loop: its stage program, its blocks of the state, and a communicator.
pub struct DistributedTrainer {
    pub shared: Arc<DistributedStep>,
    rank: usize,
    comm: Arc<dyn Communicator>,
    corpus: ByteCorpus,
    /// This rank's blocks of the state tensors that are inputs of its stage program. With a
    /// compiled program, the carried ones live in its arena instead and these are the blocks as
    /// last restored ([`DistributedTrainer::rank_shards`] reads the current ones).
    shards: Vec<RankShard>,
    progress: Progress,
    /// The rank's compiled program, when the step was compiled.
    compiled: Option<CompiledExecutor>,
}

impl DistributedTrainer {
    /// Rank `rank` of a fresh run of `model` on `mesh` (builds and partitions the step; see
    /// [`DistributedTrainer::from_shared`] to share one partition between in-process ranks).
    pub fn new(
        model: TrainModel,
        config: TrainConfig,
        corpus: ByteCorpus,
        mesh: Mesh,
        rank: usize,
        comm: Arc<dyn Communicator>,
    ) -> Result<DistributedTrainer> {
        let shared = Arc::new(DistributedStep::new(model, config, mesh)?);
        DistributedTrainer::from_shared(shared, corpus, rank, comm)
    }

    /// Rank `rank` of a fresh run of an already partitioned step: the global initial state of
    /// [`init_state`] (the single-process trainer's), cut to this rank's blocks.
    pub fn from_shared(
        shared: Arc<DistributedStep>,
        corpus: ByteCorpus,
        rank: usize,
        comm: Arc<dyn Communicator>,
    ) -> Result<DistributedTrainer> {
        let initial = init_state(&shared.step, shared.config.seed);
        DistributedTrainer::from_state(shared, corpus, rank, comm, &initial)
    }

    /// Rank `rank` of a run continuing from the global `state` (a fresh run's initial state, or
    /// a checkpoint's from any mesh): only this rank's blocks are kept.
    pub fn from_state(
        shared: Arc<DistributedStep>,
        corpus: ByteCorpus,
        rank: usize,
        comm: Arc<dyn Communicator>,
        state: &TrainState,
    ) -> Result<DistributedTrainer> {
        let devices = shared.mesh().num_devices();
        ensure!(
            comm.size() == devices && comm.rank() == rank,
            "the communicator is rank {} of {} but the trainer is rank {rank} of the {devices} of mesh {}",
            comm.rank(),
            comm.size(),
            shared.mesh()
        );
        let mut trainer = DistributedTrainer {
            shared,
            rank,
            comm,
            corpus,
            shards: Vec::new(),
            progress: Progress { step: 0, data_position: 0, rng: state.rng },
            compiled: None,
        };
        trainer.restore_global(state)?;
        if let Some(stages) = trainer.shared.compiled.clone() {
            trainer.compiled = Some(trainer.load_compiled(&stages)?);
        }
        Ok(trainer)
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    /// This rank's stage program, compiled: its state blocks bound in the arena and carried
    /// from step to step (`w.next` onto `w`), its collectives over this rank's communicator.
    fn load_compiled(&self, stages: &CompiledStages) -> Result<CompiledExecutor> {
        let program = self.program()?;
        let artifact = load::load(stages.dir(program.stage)?)?;
        let state = self.carried_blocks();
        let carried: CarriedState = state
            .iter()
            .map(|(name, _)| CarriedValue { input: name.clone(), output: format!("{name}.next") })
            .collect();
        let mut executor = CompiledExecutor::new(artifact, carried, &state)
            .with_context(|| format!("rank {}: cannot bind the compiled stage program", self.rank))?;
        executor.connect(RankComm { mesh: self.shared.mesh().clone(), comm: Arc::clone(&self.comm) });
        Ok(executor)
    }

    /// The state blocks the rank's program updates (see [`DistributedTrainer::is_carried`]), by
    /// name, as last restored.
    fn carried_blocks(&self) -> Vec<(String, Tensor)> {
        self.shards.iter().filter(|s| self.is_carried(s)).map(|s| (s.name.clone(), s.tensor.clone())).collect()
    }

    /// Whether the rank's program returns `shard`'s update (`NAME.next`), which then replaces it
    /// in a compiled program's arena after every step.
    fn is_carried(&self, shard: &RankShard) -> bool {
        let Ok(program) = self.program() else { return false };
        let g = &program.graph;
        let next = format!("{}.next", shard.name);
        g.outputs().iter().any(|&v| g.value(v).name == next)
    }

    pub fn comm(&self) -> &Arc<dyn Communicator> {
        &self.comm
    }

    /// The program this rank runs.
    pub fn program(&self) -> Result<&StageProgram> {
        self.shared.module.program_of(self.rank).with_context(|| format!("no program runs rank {}", self.rank))
    }

    /// Tokens one step consumes (globally, over every rank).
    pub fn tokens_per_step(&self) -> usize {
        let m = &self.shared.model;
        m.batch * m.seq * self.shared.config.micro_batches
    }

    /// This rank's blocks of the parameters and optimizer state (what a sharded checkpoint of
    /// this rank writes).
    pub fn rank_shards(&self) -> Result<Vec<RankShard>> {
        let Some(executor) = &self.compiled else { return Ok(self.shards.clone()) };
        let current = executor.state().with_context(|| format!("rank {}: reading the state blocks", self.rank))?;
        let mut shards = self.shards.clone();
        for (name, tensor) in current {
            if let Some(shard) = shards.iter_mut().find(|s| s.name == name) {
                shard.tensor = tensor;
            }
        }
        Ok(shards)
    }

    /// Whether this rank writes `shard` in a sharded checkpoint: blocks are replicated over
    /// the mesh axes the sharding does not use (and over the stages that load the same tensor),
    /// so exactly one rank per distinct block says yes: the one at coordinate 0 of every unused
    /// axis, on the first stage that holds the tensor.
    pub fn writes_shard(&self, shard: &RankShard) -> bool {
        let shared = &self.shared;
        let mesh = shared.mesh();
        let Some((holder, _)) = shared.holder(&shard.name) else { return false };
        if !holder.ranks.contains(&self.rank) {
            return false;
        }
        let pipeline = &shared.pipeline_axis;
        let coords = mesh.coords(self.rank);
        mesh.axes()
            .iter()
            .zip(coords)
            .all(|(axis, c)| axis.name == *pipeline || c == 0 || shard.sharding.used_axes().any(|a| *a == axis.name))
    }

    /// Steps completed, the data position and the dropout stream: the same on every rank.
    pub fn local_state(&self) -> Progress {
        self.progress
    }

    /// Runs one optimizer step on this rank (every rank of the mesh must call it) and returns
    /// its report; the loss is the global loss, the same on every rank.
    pub fn train_step(&mut self) -> Result<StepReport> {
        let result = self.try_train_step();
        if let Err(e) = &result {
            self.comm.abort(&format!("{e:#}"));
        }
        result
    }

    fn try_train_step(&mut self) -> Result<StepReport> {
        let started = Instant::now();
        let cpu_started = super::process_cpu_time_s();
        let shared = Arc::clone(&self.shared);
        let p = &self.progress;
        let data =
            step_data(&shared.model, &shared.step, &shared.config, &self.corpus, p.step, p.data_position, p.rng)?;
        let program =
            shared.module.program_of(self.rank).with_context(|| format!("no program runs rank {}", self.rank))?;
        // Data inputs are cut from the global batch; the state blocks are this rank's already.
        let mut feeds: Vec<(String, Tensor)> = self.shards.iter().map(|s| (s.name.clone(), s.tensor.clone())).collect();
        let g = &program.graph;
        for (&v, sharding) in g.inputs().iter().zip(&program.input_shardings) {
            let name = &g.value(v).name;
            if self.shards.iter().any(|s| s.name == *name) {
                continue;
            }
            let global = data
                .feeds
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t)
                .with_context(|| format!("rank {}: nothing feeds step input '{name}'", self.rank))?;
            let block = sharding
                .shard_tensor(shared.mesh(), self.rank, global)
                .map_err(|m| anyhow::anyhow!("rank {}: input '{name}': {m}", self.rank))?;
            feeds.push((name.clone(), block));
        }
        let carried: Vec<String> = self.shards.iter().filter(|s| self.is_carried(s)).map(|s| s.name.clone()).collect();
        let outputs = match &mut self.compiled {
            Some(executor) => {
                // The carried blocks are in the arena already.
                let per_step: Vec<(String, Tensor)> =
                    feeds.into_iter().filter(|(name, _)| !carried.contains(name)).collect();
                executor.run_step(&per_step)
            }
            .map_err(anyhow::Error::from),
            None => run_rank(shared.mesh(), g, &feeds, self.comm.as_ref()).map_err(anyhow::Error::from),
        }
        .with_context(|| format!("rank {}: the training step failed", self.rank))?;
        let mut loss = None;
        for (name, t) in outputs {
            if name == "loss" {
                loss = Some(t.get_f64(0));
            } else if let Some(input) = name.strip_suffix(".next") {
                if let Some(shard) = self.shards.iter_mut().find(|s| s.name == input) {
                    ensure!(
                        shard.tensor.tensor_type() == t.tensor_type(),
                        "rank {}: '{name}' is {} but its input block is {}",
                        self.rank,
                        t.tensor_type(),
                        shard.tensor.tensor_type()
                    );
                    shard.tensor = t;
                }
            }
        }
        let loss = loss.with_context(|| format!("rank {}: the step program returned no loss", self.rank))?;
        if !loss.is_finite() {
            bail!("the loss became {loss} at step {}", self.progress.step + 1);
        }
        self.progress = Progress { step: self.progress.step + 1, data_position: data.data_position, rng: data.rng };
        let step_time_s = started.elapsed().as_secs_f64();
        Ok(StepReport {
            step: self.progress.step,
            loss,
            step_time_s,
            tokens_per_s: self.tokens_per_step() as f64 / step_time_s.max(1e-12),
            cpu_time_s: super::process_cpu_time_s() - cpu_started,
        })
    }

    /// The global state, assembled from every rank's blocks (collective: every rank must call
    /// it, and every rank gets the whole state). Each tensor comes from the ranks of the first
    /// stage that holds it.
    pub fn gather_state(&self) -> Result<TrainState> {
        let shared = &self.shared;
        let mesh = shared.mesh();
        let everyone: Vec<usize> = (0..mesh.num_devices()).collect();
        let shards = self.rank_shards()?;
        let mut tensors = Vec::new();
        for (name, ty) in shared.state_slots() {
            let (holder, sharding) =
                shared.holder(name).with_context(|| format!("no stage of the partitioned step holds '{name}'"))?;
            // Ranks that hold no block of it send an empty tensor.
            let mine = match shards.iter().find(|s| s.name == name) {
                Some(s) if holder.ranks.contains(&self.rank) => s.tensor.clone(),
                _ => Tensor::zeros(ty.dtype, vec![0]),
            };
            let all = self.comm.exchange(&everyone, &mine).with_context(|| format!("gathering '{name}'"))?;
            let blocks: Vec<(usize, &Tensor)> = holder.ranks.iter().map(|&r| (r, &all[r])).collect();
            tensors.push(assemble(mesh, &sharding, ty, &blocks).with_context(|| format!("assembling '{name}'"))?);
        }
        let n_params = shared.step.params.len();
        let optimizer_state = tensors.split_off(n_params);
        let p = self.progress;
        Ok(TrainState { params: tensors, optimizer_state, step: p.step, data_position: p.data_position, rng: p.rng })
    }

    /// Continues from the global `state` (a checkpoint of any mesh): cuts this rank's blocks.
    /// Local only: every rank restores from the same state.
    pub fn restore_global(&mut self, state: &TrainState) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        ensure!(
            state.params.len() == shared.step.params.len() && state.optimizer_state.len() == shared.step.state.len(),
            "the state has {} parameters and {} optimizer tensors, the step {} and {}",
            state.params.len(),
            state.optimizer_state.len(),
            shared.step.params.len(),
            shared.step.state.len()
        );
        let program =
            shared.module.program_of(self.rank).with_context(|| format!("no program runs rank {}", self.rank))?;
        let g = &program.graph;
        let mut shards = Vec::new();
        for ((name, ty), global) in shared.state_slots().zip(state.params.iter().chain(&state.optimizer_state)) {
            ensure!(
                global.tensor_type() == *ty,
                "state tensor '{name}' is {}, the step needs {ty}",
                global.tensor_type()
            );
            let Some(i) = g.inputs().iter().position(|&v| g.value(v).name == name) else { continue };
            let sharding = program.input_shardings[i].clone();
            let tensor = sharding
                .shard_tensor(shared.mesh(), self.rank, global)
                .map_err(|m| anyhow::anyhow!("cutting '{name}': {m}"))?;
            shards.push(RankShard { name: name.to_string(), sharding, global: ty.clone(), tensor });
        }
        self.shards = shards;
        self.progress = Progress { step: state.step, data_position: state.data_position, rng: state.rng };
        let carried = self.carried_blocks();
        if let Some(executor) = &mut self.compiled {
            executor.set_state(&carried)?;
        }
        Ok(())
    }
}

/// The global tensor of type `ty` from the blocks `(rank, block)` of `sharding` (every block of
/// it at least once; replicas must agree, the last one wins).
pub fn assemble(mesh: &Mesh, sharding: &Sharding, ty: &TensorType, blocks: &[(usize, &Tensor)]) -> Result<Tensor> {
    let shape: Vec<usize> = ty
        .static_shape()
        .with_context(|| format!("{ty} has symbolic dimensions"))?
        .iter()
        .map(|&d| d as usize)
        .collect();
    let local = sharding.local_type(mesh, ty).map_err(|m| anyhow::anyhow!(m))?;
    let local_shape: Vec<usize> = local.static_shape().unwrap_or_default().iter().map(|&d| d as usize).collect();
    let n: usize = shape.iter().product();
    let mut values = vec![0.0; n];
    let mut filled = vec![false; n];
    let strides = tessera_ir::tensor::strides(&shape);
    for &(rank, block) in blocks {
        ensure!(block.shape == local_shape, "rank {rank}'s block is {:?}, expected {local_shape:?}", block.shape);
        let mut offset = Vec::with_capacity(shape.len());
        for (axes, &len) in sharding.dims.iter().zip(&local_shape) {
            let index =
                if axes.is_empty() { 0 } else { mesh.index_in_group(rank, axes).map_err(|m| anyhow::anyhow!(m))? };
            offset.push(index as usize * len);
        }
        for (i, x) in block.to_f64_vec().into_iter().enumerate() {
            let at: usize = tessera_ir::tensor::unravel(i, &local_shape)
                .iter()
                .zip(&offset)
                .zip(&strides)
                .map(|((&c, &o), &s)| (c + o) * s)
                .sum();
            values[at] = x;
            filled[at] = true;
        }
    }
    ensure!(filled.iter().all(|&f| f), "the blocks do not cover the tensor");
    Ok(Tensor::from_f64(ty.dtype, shape, values))
}

/// What an in-process run tells its caller, from rank 0.
#[derive(Debug)]
pub enum Event<'a> {
    /// A step finished.
    Step(&'a StepReport),
    /// The global state after a step (every `gather_every` steps and after the last).
    State(&'a TrainState),
}

/// Runs a fresh (or `resume`d) run until `steps` steps are done on every rank of the shared
/// step's mesh, each rank a thread of this process talking through a [`LocalCommunicator`]
/// (whose receives give up after `timeout`). `on_event` sees rank 0's step reports and, every
/// `gather_every` steps and after the last, the gathered global state (for checkpoints).
/// Returns the global state at the end.
pub fn train_in_process(
    shared: Arc<DistributedStep>,
    corpus: &ByteCorpus,
    resume: Option<&TrainState>,
    steps: u64,
    gather_every: Option<u64>,
    timeout: Duration,
    mut on_event: impl FnMut(Event<'_>) -> Result<()> + Send,
) -> Result<TrainState> {
    let devices = shared.mesh().num_devices();
    let comms = LocalCommunicator::world(devices, timeout);
    // One global initial state for every rank (each keeps only its blocks of it).
    let fresh;
    let start = match resume {
        Some(state) => state,
        None => {
            fresh = init_state(&shared.step, shared.config.seed);
            &fresh
        }
    };
    let on_event = std::sync::Mutex::new(&mut on_event);
    let results: Vec<Result<TrainState>> = std::thread::scope(|scope| {
        let handles: Vec<_> = comms
            .iter()
            .enumerate()
            .map(|(rank, comm)| {
                let shared = Arc::clone(&shared);
                let comm: Arc<dyn Communicator> = Arc::new(comm.clone());
                let on_event = &on_event;
                scope.spawn(move || -> Result<TrainState> {
                    let run = || -> Result<TrainState> {
                        let mut trainer =
                            DistributedTrainer::from_state(shared, corpus.clone(), rank, comm.clone(), start)?;
                        let tell = |event: Event<'_>| -> Result<()> {
                            if rank != 0 {
                                return Ok(());
                            }
                            let mut f = on_event.lock().map_err(|_| anyhow::anyhow!("an event handler panicked"))?;
                            (*f)(event)
                        };
                        let mut last = None;
                        while trainer.local_state().step < steps {
                            let report = trainer.train_step()?;
                            tell(Event::Step(&report))?;
                            let due = gather_every.is_some_and(|k| k > 0 && report.step % k == 0);
                            if due || report.step == steps {
                                let state = trainer.gather_state()?;
                                tell(Event::State(&state))?;
                                last = Some(state);
                            }
                        }
                        match last {
                            Some(state) => Ok(state),
                            None => trainer.gather_state(),
                        }
                    };
                    run().inspect_err(|e| comm.abort(&format!("{e:#}")))
                })
            })
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(rank, h)| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("rank {rank} panicked"))))
            .collect()
    });
    // The root cause: the rank that failed first (the others report that it failed).
    if let Some((first, _)) = comms.first().and_then(LocalCommunicator::first_failure) {
        if let Some(Err(e)) = results.get(first) {
            bail!("rank {first}: {e:#}");
        }
    }
    let mut states = results.into_iter();
    let first = states.next().context("the mesh has no ranks")??;
    for s in states {
        s?;
    }
    Ok(first)
}
