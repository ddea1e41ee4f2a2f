//! Running an artifact directory as a command: the one implementation behind `tessera run DIR`
//! and `tessera-rt run DIR`.
//!
//! Inputs are fed exactly as for a model run by the interpreter (the same seeded random inputs,
//! so outputs are comparable); the model's parameters are bound once (resident in the arena) and
//! the other inputs fed per run. Launched by `mpirun`/`srun` (the launcher's world size, see
//! [`crate::mpi::launched_world_size`]), every process runs its own rank's program: the world
//! must have as many processes as the manifest has ranks, which every process checks on its own
//! before MPI starts, so a wrong launch is the same clear error on every rank and never a hang.
//! A mesh artifact's rank ([`tessera_ir::artifact::RankShard`]) reads the model's inputs (files
//! or the seeded random values one process would use) and cuts its block of each; its
//! communication steps run over MPI. The rank that returns the model's outputs writes them (rank
//! 0 for one device, the first rank of the last pipeline stage for a mesh); rank 0 reports
//! timings.

use super::load::{load_rank_expecting, read_manifest_expecting};
use super::profile::Profile;
use super::{cpu, cuda, ranged, ArtifactError, Feed};
use crate::feeds::{random_inputs, read_feeds, read_inputs, write_feeds, FeedError};
use crate::mpi::{launched_world_size, MpiCommunicator, MpiError};
use crate::spmd::{Communicator, RankComm};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tessera_ir::artifact::{Manifest, Program, RankShard, MANIFEST_FILE};
use tessera_ir::dtype::DType;
use tessera_ir::graph::{Graph, InputRole};
use tessera_ir::sharding::{Mesh, Sharding};
use tessera_ir::tensor::Tensor;
use tessera_ir::types::TensorType;

/// What to feed an artifact and how to run it (the command-line options of `run`).
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// `NAME=FILE.npy` per given input.
    pub inputs: Vec<String>,
    /// Seed for the inputs not given (floats uniform in [-1, 1)).
    pub random_inputs: Option<u64>,
    /// Directory for the outputs, one `NAME.npy` each (written by rank 0).
    pub output: PathBuf,
    /// Runs with the parameters bound once; the outputs are the last run's. At least 1.
    pub repeat: u32,
    /// Report the bind and run wall times.
    pub timing: bool,
    /// Report the wall time per kernel and library call (CPU targets).
    pub profile: bool,
    /// How long a rank waits for a message from another before failing (MPI launches).
    pub comm_timeout: Duration,
    /// The SHA-256 (hex) that `manifest.json` must have (`--expect-sha256`): the manifest
    /// lists every other file's SHA-256, so this pins the whole artifact before any of it is
    /// loaded, for a deployment that knows which artifact it shipped.
    pub expect_manifest_sha256: Option<String>,
    /// Compiles a range artifact per distinct size (`tessera run`, which links the code
    /// generator); without one a range artifact runs on the interpreter (`tessera-rt`).
    pub specializer: Option<Arc<dyn ranged::Specializer>>,
}

/// What a run produced: the files rank 0 wrote and its report for standard error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    pub rank: usize,
    pub ranks: usize,
    /// The output files, in output order (empty on ranks other than 0).
    pub written: Vec<PathBuf>,
    /// Timing and profile lines, each ending in a newline (empty unless asked for, and on ranks
    /// other than 0).
    pub diagnostics: String,
}

impl RunReport {
    /// Prints the diagnostics to standard error and `wrote PATH` per output to standard output,
    /// as both command-line tools do.
    pub fn print(&self) {
        eprint!("{}", self.diagnostics);
        for path in &self.written {
            println!("wrote {}", path.display());
        }
    }
}

/// Why an artifact could not be run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error(transparent)]
    Feed(#[from] FeedError),
    #[error("--profile times the steps of a pinned artifact; a range artifact (compile --dim NAME=LO..HI) compiles per size as it runs, or runs the interpreter")]
    ProfileOnRange,
    #[error("--profile times CPU artifacts; this artifact targets {target}")]
    ProfileOnGpu { target: String },
    #[error(
        "the artifact has {ranks} rank(s){mesh} but {launched}: run it with `mpirun -n {ranks}` or `srun -n {ranks}`"
    )]
    WorldSize { ranks: usize, launched: String, mesh: String },
    #[error("cannot start MPI")]
    Mpi(#[from] MpiError),
}

/// Loads the artifact in `dir` (this process's rank of it), feeds it, runs it `config.repeat`
/// times and, on rank 0, writes the outputs; see the module documentation.
pub fn run_artifact(dir: &Path, config: &RunConfig) -> Result<RunReport, RunError> {
    let expected = config.expect_manifest_sha256.as_deref();
    let manifest = read_manifest_expecting(dir, expected)?;
    let ranks = manifest.ranks.len();
    if ranks == 0 {
        let message = "no ranks".to_string();
        return Err(ArtifactError::Malformed { path: dir.join(MANIFEST_FILE), message }.into());
    }
    let world = launched_world_size().unwrap_or(1);
    if world != ranks {
        let axes: Vec<String> = manifest.mesh.iter().map(|a| format!("{}={}", a.name, a.size)).collect();
        let mesh = if axes.is_empty() { String::new() } else { format!(" (mesh {})", axes.join(",")) };
        let launched = match launched_world_size() {
            None => "this is one process, not launched by mpirun or srun".to_string(),
            Some(n) => format!("{n} process(es) were launched"),
        };
        return Err(RunError::WorldSize { ranks, launched, mesh });
    }
    if !manifest.dims.is_empty() {
        return run_ranged(dir, config);
    }
    // Kept until the run ends: dropping the last reference finalizes MPI.
    let communicator = if world > 1 { Some(Arc::new(MpiCommunicator::init(config.comm_timeout)?)) } else { None };
    let rank = communicator.as_ref().map_or(0, |c| c.rank());
    let artifact = load_rank_expecting(dir, rank, expected)?;
    let target = artifact.program.target.clone();
    let cuda = target.starts_with("cuda");
    if cuda {
        cuda::check(&artifact)?;
    }
    let feeds = match &artifact.program.shard {
        None => {
            let signature = signature_graph(&artifact.program);
            let mut feeds = read_feeds(&signature, &config.inputs)?;
            if let Some(seed) = config.random_inputs {
                let random = random_inputs(&signature, &feeds, &HashMap::new(), seed)?;
                feeds.extend(random.into_iter().map(|(name, t)| (name, Feed::Tensor(t))));
            }
            feeds
        }
        Some(shard) => rank_feeds(dir, &artifact.manifest, &artifact.program, shard, config)?,
    };
    let comm = match (&communicator, &artifact.program.shard) {
        (Some(c), Some(_)) => {
            let comm: Arc<dyn Communicator> = c.clone();
            Some(RankComm { mesh: manifest_mesh(&artifact.manifest, dir)?, comm })
        }
        _ => None,
    };
    let writes_outputs = artifact.program.shard.as_ref().map_or(rank == 0, |s| s.writes_outputs);
    let (resident, per_run): (Vec<_>, Vec<_>) = feeds.into_iter().partition(|(name, _)| {
        artifact.program.inputs.iter().any(|binding| binding.name == *name && binding.parameter)
    });
    let mut profile = Profile::new();
    let mut timings = Timings::default();
    let outputs = if cuda {
        if config.profile {
            return Err(RunError::ProfileOnGpu { target });
        }
        let executor = cuda::CudaExecutor::new(artifact)?;
        let mut bound = timings.bind(|| executor.bind(&resident))?;
        timings.runs(config.repeat, || bound.run_stored(&per_run))?
    } else {
        let executor = cpu::CpuExecutor::new(artifact)?;
        let mut bound = timings.bind(|| executor.bind(&resident))?;
        if let Some(comm) = comm {
            bound.connect(comm);
        }
        // Outputs come back as the arena's bytes, written to .npy as they are.
        if config.profile {
            profile.record("resident inputs (bound once)", timings.bind);
            timings.runs(config.repeat, || bound.run_stored(&per_run, Some(&mut profile)))?
        } else {
            timings.runs(config.repeat, || bound.run_stored(&per_run, None))?
        }
    };
    let mut report = RunReport { rank, ranks, written: Vec::new(), diagnostics: String::new() };
    if writes_outputs {
        report.written = write_feeds(&config.output, &outputs)?;
    }
    if rank != 0 {
        return Ok(report);
    }
    if config.timing {
        report.diagnostics += &timings.report(resident.len());
    }
    if config.profile {
        if config.repeat > 1 {
            report.diagnostics += &format!("profile, summed over {} runs:\n", config.repeat);
        }
        report.diagnostics += &profile.report();
    }
    Ok(report)
}

/// [`run_artifact`] for a range artifact ([`super::ranged`]): the inputs are read as tensors of
/// the symbolic program's inputs, random ones take the sizes the given inputs bind (a symbol no
/// given input binds is the low end of its range), parameters are bound once.
fn run_ranged(dir: &Path, config: &RunConfig) -> Result<RunReport, RunError> {
    if config.profile {
        return Err(RunError::ProfileOnRange);
    }
    let mut executor = ranged::RangedExecutor::load(dir, config.expect_manifest_sha256.as_deref())?;
    if let Some(specializer) = &config.specializer {
        executor = executor.with_specializer(Arc::clone(specializer));
    }
    let graph = executor.graph();
    let mut feeds = read_inputs(graph, &config.inputs)?;
    if let Some(seed) = config.random_inputs {
        let mut sizes = HashMap::new();
        let mut given = Vec::new();
        for &v in graph.inputs() {
            let value = graph.value(v);
            if let Some((_, t)) = feeds.iter().find(|(name, _)| *name == value.name) {
                if t.shape.len() == value.ty.rank() {
                    given.push((value.name.as_str(), &value.ty, t.shape.as_slice()));
                }
            }
        }
        tessera_ir::types::bind_from_shapes(&given, &mut sizes)
            .map_err(|message| ArtifactError::DimSizes { message })?;
        for range in executor.dims() {
            sizes.entry(range.name.clone()).or_insert(range.lo);
        }
        feeds.extend(random_inputs(graph, &feeds, &sizes, seed)?);
    }
    let parameters = executor.parameters();
    let (resident, per_run): (Vec<_>, Vec<_>) =
        feeds.into_iter().partition(|(name, _)| parameters.contains(&name.as_str()));
    let n_resident = resident.len();
    let mut timings = Timings::default();
    let mut bound = timings.bind(|| executor.bind(resident))?;
    let outputs = timings.runs(config.repeat, || bound.run(&per_run))?;
    let outputs: Vec<(String, Feed)> = outputs.into_iter().map(|(name, t)| (name, Feed::Tensor(t))).collect();
    let mut report =
        RunReport { rank: 0, ranks: 1, written: write_feeds(&config.output, &outputs)?, diagnostics: String::new() };
    if config.timing {
        if executor.specializes() {
            // The compile is part of the first run at each size, so the first run's time
            // includes it; the compiles are listed apart too.
            for compile in bound.compiles() {
                let sizes = &compile.sizes;
                report.diagnostics += &match &compile.fallback {
                    None => format!(
                        "range artifact: compiled at {sizes} in {:.3} s with the first run (cached for later runs), {} reference steps\n",
                        compile.took.as_secs_f64(),
                        compile.reference_steps
                    ),
                    Some(why) => format!("range artifact: interpreted at {sizes}: the compiled path failed: {why}\n"),
                };
            }
            report.diagnostics +=
                &timings.report(n_resident).replace("compiled artifact", "range artifact (compiled per size)");
        } else {
            report.diagnostics +=
                &timings.report(n_resident).replace("compiled artifact", "range artifact (interpreted)");
        }
    }
    Ok(report)
}

/// The mesh the manifest records.
fn manifest_mesh(manifest: &Manifest, dir: &Path) -> Result<Mesh, ArtifactError> {
    let axes: Vec<(&str, u64)> = manifest.mesh.iter().map(|a| (a.name.as_str(), a.size)).collect();
    Mesh::new(&axes).map_err(|message| ArtifactError::Malformed {
        path: dir.join(MANIFEST_FILE),
        message: format!("mesh: {message}"),
    })
}

/// A mesh rank's inputs: the model's inputs as given (files, or seeded random values of the
/// model's shapes, so every mesh sees what one process would), each cut to this rank's block.
/// Files are read against every rank's inputs, so a name no rank takes is an error everywhere.
fn rank_feeds(
    dir: &Path,
    manifest: &Manifest,
    program: &Program,
    shard: &RankShard,
    config: &RunConfig,
) -> Result<Vec<(String, Feed)>, RunError> {
    let mesh = manifest_mesh(manifest, dir)?;
    let malformed = |message: String| ArtifactError::InvalidProgram { path: dir.join(MANIFEST_FILE), message };
    if shard.inputs.len() != program.inputs.len() {
        return Err(malformed(format!(
            "rank {}: {} sharded inputs for {} inputs",
            shard.rank,
            shard.inputs.len(),
            program.inputs.len()
        ))
        .into());
    }
    // The model's inputs: this rank's first, then every other rank's not seen yet.
    let mut model = Graph::new(&program.name);
    let mut add = |name: &str, dtype: DType, shape: &[u64]| {
        if !model.inputs().iter().any(|&v| model.value(v).name == name) {
            model.add_input(name, TensorType::of_static(dtype, shape), InputRole::Activation);
        }
    };
    for (binding, io) in program.inputs.iter().zip(&shard.inputs) {
        add(&io.name, binding.dtype, &io.global_shape);
    }
    for entry in &manifest.ranks {
        let path = dir.join(&entry.program);
        let bytes = std::fs::read(&path).map_err(|source| ArtifactError::Io { path: path.clone(), source })?;
        let other: Program = serde_json::from_slice(&bytes)
            .map_err(|e| ArtifactError::Malformed { path: path.clone(), message: e.to_string() })?;
        let Some(other_shard) = &other.shard else { continue };
        for (binding, io) in other.inputs.iter().zip(&other_shard.inputs) {
            add(&io.name, binding.dtype, &io.global_shape);
        }
    }
    let mut given = read_feeds(&model, &config.inputs)?;
    given.retain(|(name, _)| program.inputs.iter().any(|b| b.name == *name));
    let mut mine = Graph::new(&program.name);
    for (binding, io) in program.inputs.iter().zip(&shard.inputs) {
        mine.add_input(&io.name, TensorType::of_static(binding.dtype, &io.global_shape), InputRole::Activation);
    }
    let mut whole: Vec<(String, Tensor)> = Vec::with_capacity(program.inputs.len());
    for (name, feed) in given {
        let t = feed.to_tensor().map_err(|message| ArtifactError::Input { name: name.clone(), message })?;
        whole.push((name, t));
    }
    if let Some(seed) = config.random_inputs {
        let random = random_inputs(&mine, &whole, &HashMap::new(), seed)?;
        whole.extend(random);
    }
    let mut feeds = Vec::with_capacity(whole.len());
    for (name, t) in whole {
        let Some(io) = shard.inputs.iter().find(|io| io.name == name) else { continue };
        let sharding = Sharding::parse(&io.sharding).map_err(|m| malformed(format!("input {name}: sharding: {m}")))?;
        let block = sharding
            .shard_tensor(&mesh, shard.rank as usize, &t)
            .map_err(|message| ArtifactError::Input { name: name.clone(), message })?;
        feeds.push((name, Feed::Tensor(block)));
    }
    Ok(feeds)
}

/// Wall times of a compiled run: binding the resident inputs once, then each run.
#[derive(Default)]
struct Timings {
    bind: Duration,
    runs: Vec<Duration>,
}

impl Timings {
    fn bind<T, E>(&mut self, bind: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let start = std::time::Instant::now();
        let bound = bind()?;
        self.bind = start.elapsed();
        Ok(bound)
    }

    /// Runs `run` `repeat` times (at least once), keeping the last outputs.
    fn runs<T, E>(&mut self, repeat: u32, mut run: impl FnMut() -> Result<T, E>) -> Result<T, E> {
        loop {
            let start = std::time::Instant::now();
            let outputs = run()?;
            self.runs.push(start.elapsed());
            if self.runs.len() >= repeat as usize {
                return Ok(outputs);
            }
        }
    }

    /// "compiled artifact: S s" for the bind plus the first run (what one cold `run` costs),
    /// then, for several runs, the steady state with the parameters resident (to 10 µs: small
    /// conv models run in a few milliseconds).
    fn report(&self, resident: usize) -> String {
        let secs = |d: Duration| d.as_secs_f64();
        let first = self.runs.first().copied().unwrap_or_default();
        let mut out = format!(
            "compiled artifact: {:.3} s (binding {resident} parameter inputs once {:.3} s, first run {:.3} s)\n",
            secs(self.bind + first),
            secs(self.bind),
            secs(first)
        );
        if self.runs.len() > 1 {
            let mut sorted = self.runs.clone();
            sorted.sort();
            let median = if sorted.len() % 2 == 1 {
                secs(sorted[sorted.len() / 2])
            } else {
                (secs(sorted[sorted.len() / 2 - 1]) + secs(sorted[sorted.len() / 2])) / 2.0
            };
            out += &format!(
                "compiled artifact, {} runs with the parameters resident: min {:.5} s, median {:.5} s\n",
                sorted.len(),
                secs(sorted[0]),
                median
            );
        }
        out
    }
}

/// A graph with the program's inputs only: what input reading needs to know.
fn signature_graph(program: &Program) -> Graph {
    let mut g = Graph::new(&program.name);
    for binding in &program.inputs {
        let shape = program.buffers.get(binding.buffer as usize).map(|b| b.shape.clone()).unwrap_or_default();
        let ty = TensorType::of_static(binding.dtype, &shape);
        g.add_input(&binding.name, ty, InputRole::Activation);
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_report_gives_the_cold_run_and_the_steady_state() {
        let ms = Duration::from_millis;
        let timings = Timings { bind: ms(500), runs: vec![ms(300), ms(100), ms(200), ms(400)] };
        assert_eq!(
            timings.report(3),
            "compiled artifact: 0.800 s (binding 3 parameter inputs once 0.500 s, first run 0.300 s)\n\
             compiled artifact, 4 runs with the parameters resident: min 0.10000 s, median 0.25000 s\n"
        );
        let once = Timings { bind: ms(10), runs: vec![ms(20)] };
        assert_eq!(once.report(0).lines().count(), 1);
    }
}
