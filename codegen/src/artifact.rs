//! `tessera compile`: a model graph to an artifact directory (see [`tessera_ir::artifact`] for
//! the format), written atomically and byte-for-byte deterministically.
//!
//! Determinism: nothing in an artifact depends on time, paths, the host or hash-map order: the
//! program is built in graph order, JSON is printed from structs, the weights image is laid out
//! by the plan, and the code generator emits the same bytes for the same kernels.
//!
//! Atomicity: everything is built in memory first (the weights image as a layout of the
//! constants, encoded as it is written: [`FileContent::Weights`]); only then is a temporary directory created
//! beside the destination (`.NAME.tmp-PID-N`, by [`tessera_ir::files::StagedDir`]), every file written and fsynced, the directory
//! fsynced, and renamed onto the destination. A compile that fails before the rename removes
//! its temporary directory; a killed one leaves at most that hidden directory, never a
//! half-written artifact at the destination. [`compile_to_dir`] keeps those guarantees but
//! creates the temporary directory before the kernels are generated, so that the weights image
//! is written and fsynced there on a second thread meanwhile.

use crate::cuda::gpu_program;
use crate::decompose::{decompose_optimizers, has_optimizer_updates};
use crate::program::{lower_with, LowerError, LowerStats, Lowering};
use crate::weights::WeightsImage;
use crate::{compile_cpu, supports, CodegenError, GpuArch};
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tessera_ir::artifact::{
    sha256_hex, sha256_hex_of_parts, sha256_hex_of_stream, DimRange, FileEntry, Manifest, MeshAxis, Program, RankEntry,
    RankShard, ShardedIo, FIRST_FORMAT_VERSION, FORMAT_VERSION, MANIFEST_FILE, SYMBOLIC_PROGRAM_FILE,
};
use tessera_ir::files::{self, FileError, StagedDir};
use tessera_ir::graph::Graph;
use tessera_ir::sharding::Sharding;
use tessera_passes::shard::{ShardedModule, StageProgram};

/// What to compile for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Cpu,
    CudaSm80,
    CudaSm90,
}

impl Target {
    pub fn parse(text: &str) -> Option<Target> {
        match text {
            "cpu" => Some(Target::Cpu),
            "cuda:sm_80" => Some(Target::CudaSm80),
            "cuda:sm_90" => Some(Target::CudaSm90),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Target::Cpu => "cpu",
            Target::CudaSm80 => "cuda:sm_80",
            Target::CudaSm90 => "cuda:sm_90",
        }
    }
}

/// Options of one compile; with the model's bytes they determine the artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileOptions {
    pub target: Target,
    /// Sizes of symbolic dimensions.
    pub dims: HashMap<String, u64>,
    /// Options that shaped the graph before it got here, one `key=value` each (`tessera compile
    /// --train` records `train:optimizer=adamw` and so on): recorded and hashed, not interpreted.
    pub graph_options: Vec<String>,
    /// Fold the elementwise fusion group after a GEMM or convolution into its library call as
    /// an epilogue (CPU target; `codegen::epilogue`). Off by default (`tessera compile
    /// --epilogues` turns it on): not yet faster on every measured model.
    pub epilogues: bool,
    /// Give every graph output an arena range of its own for the whole program, as inputs
    /// have, instead of one that values computed before it may use first: the memory plan a
    /// runtime may then rename, trading a carried output's range with its input's after each
    /// run instead of copying the output (`runtime::executor::cpu::Carry`). On for training
    /// steps, whose updated weights and optimizer moments are carried.
    pub pinned_outputs: bool,
}

impl CompileOptions {
    /// The CPU target with every other choice at its default: no symbolic sizes, no graph
    /// options, no epilogues, outputs not pinned.
    pub fn cpu() -> CompileOptions {
        CompileOptions {
            target: Target::Cpu,
            dims: HashMap::new(),
            graph_options: Vec::new(),
            epilogues: false,
            pinned_outputs: false,
        }
    }

    /// One spelling per option, sorted: what the manifest records and the input hash covers.
    pub fn normalized(&self) -> Vec<String> {
        let mut out = vec![format!("target={}", self.target.name())];
        let mut dims: Vec<String> = self.dims.iter().map(|(k, v)| format!("dim:{k}={v}")).collect();
        dims.sort();
        out.extend(dims);
        let mut graph_options = self.graph_options.clone();
        graph_options.sort();
        out.extend(graph_options);
        // Recorded only when on, so the default's manifest and hash stay what they were.
        if self.epilogues {
            out.push("epilogues=on".to_string());
        }
        if self.pinned_outputs {
            out.push("pinned_outputs=on".to_string());
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error(transparent)]
    Lower(#[from] LowerError),
    #[error(transparent)]
    Codegen(#[from] CodegenError),
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error(transparent)]
    Write(#[from] FileError),
    #[error("--dim ranges: {0}")]
    Range(String),
}

/// An artifact in memory: relative paths and contents, manifest included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactFiles {
    pub files: Vec<(String, FileContent)>,
    pub manifest: Manifest,
}

/// The content of one artifact file: bytes, or a weights image that is encoded only as it is
/// written (a large model's weights are never held as an image beside its constants).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileContent {
    Bytes(Vec<u8>),
    /// Shared: the ranks of a mesh artifact's stage write the same image.
    Weights(Arc<WeightsImage>),
}

impl FileContent {
    /// The file's size in bytes.
    pub fn len(&self) -> u64 {
        match self {
            FileContent::Bytes(bytes) => bytes.len() as u64,
            FileContent::Weights(image) => image.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The SHA-256 of the file's bytes (lowercase hex), as the manifest records it.
    pub fn sha256_hex(&self) -> String {
        match self {
            FileContent::Bytes(bytes) => sha256_hex(bytes),
            FileContent::Weights(image) => image.sha256_hex().to_string(),
        }
    }

    /// The file's bytes (a weights image encoded whole: for small artifacts sent as messages).
    pub fn to_bytes(&self) -> std::borrow::Cow<'_, [u8]> {
        match self {
            FileContent::Bytes(bytes) => std::borrow::Cow::Borrowed(bytes),
            FileContent::Weights(image) => std::borrow::Cow::Owned(image.to_vec()),
        }
    }

    /// Writes the file's bytes to `out`.
    pub fn write_to(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        match self {
            FileContent::Bytes(bytes) => out.write_all(bytes),
            FileContent::Weights(image) => image.write_to(out),
        }
    }
}

/// A compiled artifact and what went into it.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub files: ArtifactFiles,
    pub stats: LowerStats,
}

/// SHA-256 over the model's bytes and the normalized options, length-prefixed so no two inputs
/// share an encoding.
pub fn input_hash(model_bytes: &[u8], options: &CompileOptions) -> String {
    let model_len = (model_bytes.len() as u64).to_le_bytes();
    sha256_hex_of_parts(&[INPUT_HASH_TAG, &model_len, model_bytes, &options_for_hash(options)])
}

/// [`input_hash`] of the file at `path`, read in pieces rather than held in memory (the same
/// digest as `input_hash(&fs::read(path)?, options)`).
pub fn input_hash_of_file(path: &Path, options: &CompileOptions) -> std::io::Result<String> {
    let file = fs::File::open(path)?;
    let model_len = file.metadata()?.len().to_le_bytes();
    sha256_hex_of_stream(&[INPUT_HASH_TAG, &model_len], file, &[&options_for_hash(options)])
}

const INPUT_HASH_TAG: &[u8] = b"tessera-compile-input\n";

/// The normalized options, each length-prefixed, as the input hash covers them.
fn options_for_hash(options: &CompileOptions) -> Vec<u8> {
    let mut bytes = Vec::new();
    for option in options.normalized() {
        bytes.extend_from_slice(&(option.len() as u64).to_le_bytes());
        bytes.extend_from_slice(option.as_bytes());
    }
    bytes
}

/// Compiles `graph` (whose source had `model_bytes`) into artifact files, in memory.
pub fn compile(graph: &Graph, model_bytes: &[u8], options: &CompileOptions) -> Result<Compiled, CompileError> {
    compile_with_input_hash(graph, input_hash(model_bytes, options), options)
}

/// [`compile`] given the model's [`input_hash`] (or [`input_hash_of_file`]) instead of its bytes.
pub fn compile_with_input_hash(
    graph: &Graph,
    input_hash: String,
    options: &CompileOptions,
) -> Result<Compiled, CompileError> {
    let code = compile_program(graph, options)?;
    single_program_artifact(code, input_hash, options)
}

/// [`compile_with_input_hash`] and [`write_artifact`] to `dir` in one, with the same files, but
/// the weights image is written into the staged directory on a second thread while the
/// kernels are generated and the image is hashed, instead of after them: for GPT-2 small the
/// 622 MiB image's write and fsync overlap the LLVM compile (BENCHMARKS.md, "GPT-2 small: import
/// and compile"). Atomic as [`write_artifact`] is: nothing appears at `dir` before every file
/// and the manifest are synced; a failure removes the staging directory.
pub fn compile_to_dir(
    graph: &Graph,
    input_hash: String,
    options: &CompileOptions,
    dir: &Path,
) -> Result<Compiled, CompileError> {
    check_replaceable(dir)?;
    let (lowered, weights) = lower_program(graph, options)?;
    let staged = StagedDir::beside(dir)?;
    let rank_dir = "rank0";
    let weights_rel = format!("{rank_dir}/{}", lowered.program.weights_file);
    let weights_path = staged.path().join(&weights_rel);
    let code = std::thread::scope(|scope| {
        let writing = scope.spawn(|| write_weights_file(&weights_path, &weights));
        // The image's SHA-256 (for the manifest) is hashed on this thread once the kernels are
        // compiled, while the other one is still copying the image into the file: one pass
        // each, on the two cores, rather than both on the writing thread.
        let code = generate_code(lowered, &weights, options).inspect(|_| {
            weights.sha256_hex();
        });
        let written = writing.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        written?;
        code
    })?;
    let compiled = single_program_artifact(code, input_hash, options)?;
    write_staged(dir, &staged, &compiled.files, &[weights_rel])?;
    staged.publish()?;
    Ok(compiled)
}

/// Bytes written between two starts of write-back in [`WritebackFile`].
const WRITEBACK_STEP: u64 = 32 << 20;

/// A file being written whose every [`WRITEBACK_STEP`] bytes are handed to the disk as soon as
/// they are written (Linux `sync_file_range(SYNC_FILE_RANGE_WRITE)`, which starts the write-back
/// without waiting for it), so the disk writes while the rest is still being copied and the
/// final fsync waits only for the tail. Otherwise the kernel keeps a 622 MiB image dirty in
/// memory (it is below the dirty-page thresholds) until the fsync, which then writes all of it.
struct WritebackFile<'a> {
    file: &'a mut fs::File,
    written: u64,
    /// Where the bytes not yet handed to the disk start.
    pending_from: u64,
}

impl WritebackFile<'_> {
    fn start_writeback(&mut self) {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let (from, len) = (self.pending_from as libc::off64_t, (self.written - self.pending_from) as libc::off64_t);
            // SAFETY: sync_file_range reads no memory of ours; the descriptor is the open file
            // borrowed here. Its result is ignored: it is only a hint to start writing early,
            // and the fsync that ends every artifact file reports any write error.
            let _ = unsafe { libc::sync_file_range(self.file.as_raw_fd(), from, len, libc::SYNC_FILE_RANGE_WRITE) };
        }
        self.pending_from = self.written;
    }
}

impl std::io::Write for WritebackFile<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(bytes)?;
        self.written += n as u64;
        if self.written - self.pending_from >= WRITEBACK_STEP {
            self.start_writeback();
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Writes `image` as the new file `path` (its directory created), starting its write-back as
/// it goes ([`WritebackFile`]), and fsyncs the file and its directory.
fn write_weights_file(path: &Path, image: &WeightsImage) -> Result<(), CompileError> {
    if let Some(sub) = path.parent() {
        fs::create_dir_all(sub)
            .map_err(|e| CompileError::Io { path: sub.to_path_buf(), message: format!("cannot create: {e}") })?;
    }
    files::write_synced_from(path, |file| {
        // Pieces arrive at 256 KiB and pass through; the buffer gathers small constants.
        let file = WritebackFile { file, written: 0, pending_from: 0 };
        let mut out = std::io::BufWriter::with_capacity(64 << 10, file);
        image.write_to(&mut out)?;
        std::io::Write::flush(&mut out)
    })?;
    if let Some(sub) = path.parent() {
        files::sync_dir(sub)?;
    }
    Ok(())
}

/// The files and manifest of a one-program artifact (`rank0/`) from its compiled code.
fn single_program_artifact(
    code: ProgramCode,
    input_hash: String,
    options: &CompileOptions,
) -> Result<Compiled, CompileError> {
    let rank_dir = "rank0";
    let mut files = code.rank_files(rank_dir, &code.program)?;
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let entries = file_entries(&files);
    let manifest = Manifest {
        format_version: Manifest::version_for(&[]),
        tessera_version: env!("CARGO_PKG_VERSION").to_string(),
        input_hash,
        target: options.target.name().to_string(),
        options: options.normalized(),
        mesh: Vec::new(),
        ranks: vec![RankEntry { rank: 0, program: format!("{rank_dir}/program.json"), files: entries }],
        dims: Vec::new(),
    };
    Ok(Compiled { files: ArtifactFiles { files, manifest }, stats: code.stats })
}

/// Compiles a range artifact (format 3): `graph` with the `options.dims` sizes bound and the
/// symbols of `ranges` left free, written as its `tsr` text (`rank0/graph.mlir`), the ranges
/// recorded in [`Manifest::dims`] and, spelled `dim:NAME=LO..HI`, in the options and the input
/// hash. The runtime's `executor::ranged` runs it at any size in range: compiled per distinct
/// size where the binary links this crate (`tessera run`), interpreted where it does not
/// (`tessera-rt`). CPU only: a CUDA target is refused.
pub fn compile_ranged(
    graph: &Graph,
    model_bytes: &[u8],
    options: &CompileOptions,
    ranges: &[DimRange],
) -> Result<ArtifactFiles, CompileError> {
    if options.target != Target::Cpu {
        return Err(CompileError::Range(format!(
            "a range artifact runs on the CPU only (its program is the symbolic graph, compiled per size on the CPU); \
             pin every dimension with --dim NAME=N to compile for {}",
            options.target.name()
        )));
    }
    let mut ranges = ranges.to_vec();
    ranges.sort();
    if let Some(bad) = ranges.iter().find(|r| r.lo == 0 || r.lo > r.hi) {
        return Err(CompileError::Range(format!("{bad} is empty or includes 0")));
    }
    let symbolic_error = |e: tessera_ir::symbolic::SymbolicError| LowerError::Specialize(e.to_string());
    let bound = graph.bind_dims(&options.dims).map_err(symbolic_error)?;
    let ranged: std::collections::BTreeSet<&str> = ranges.iter().map(|r| r.name.as_str()).collect();
    let mut free = std::collections::BTreeSet::new();
    for &v in bound.inputs() {
        let value = bound.value(v);
        for symbol in value.ty.symbols() {
            if !ranged.contains(symbol) {
                let dim = symbol.to_string();
                return Err(LowerError::UnboundDim { value: value.name.clone(), dim }.into());
            }
            free.insert(symbol);
        }
    }
    if let Some(unused) = ranged.iter().find(|name| !free.contains(*name)) {
        return Err(CompileError::Range(format!(
            "'{unused}' is no symbolic dimension of the model's inputs (or is also given a size)"
        )));
    }
    tessera_ir::verify::verify(&bound).map_err(|e| LowerError::Specialize(e.to_string()))?;
    let text = tessera_ir::mlir::print_graph(&bound);
    // What the runtime will parse: a graph the text form cannot carry is refused here.
    tessera_ir::mlir::parse_verified(&text)
        .map_err(|e| CompileError::Range(format!("the symbolic program does not read back: {e}")))?;
    let mut options = options.clone();
    options.graph_options.extend(ranges.iter().map(|r| format!("dim:{r}")));
    let files = vec![(format!("rank0/{SYMBOLIC_PROGRAM_FILE}"), FileContent::Bytes(text.into_bytes()))];
    let manifest = Manifest {
        format_version: Manifest::version_for(&ranges),
        tessera_version: env!("CARGO_PKG_VERSION").to_string(),
        input_hash: input_hash(model_bytes, &options),
        target: options.target.name().to_string(),
        options: options.normalized(),
        mesh: Vec::new(),
        ranks: vec![RankEntry {
            rank: 0,
            program: format!("rank0/{SYMBOLIC_PROGRAM_FILE}"),
            files: file_entries(&files),
        }],
        dims: ranges,
    };
    Ok(ArtifactFiles { files, manifest })
}

/// A mesh artifact in memory, and what went into each pipeline stage's program.
#[derive(Debug, Clone)]
pub struct CompiledMesh {
    pub files: ArtifactFiles,
    /// Per pipeline stage, in stage order.
    pub stages: Vec<LowerStats>,
}

/// Compiles the per-rank programs of a partitioned model (`passes::shard`) into one artifact:
/// `rankR/` per rank of `module.mesh`, each with its stage's program, weights and kernels.
///
/// Every rank of a stage runs the same program (the partition is SPMD: collectives name mesh
/// axes, never ranks), so each stage is lowered and code-generated once, its kernels
/// deduplicated by identity as in any program, and its ranks' directories hold byte-identical
/// copies of its files; only `program.json` differs, by its [`RankShard`]. Communication is
/// library steps ([`tessera_ir::artifact::LibraryCall::Collective`]) in the stage's program
/// order, which is the pipeline schedule `shard` gave it. The manifest records the mesh, and
/// the options `mesh=...` (hashed with the rest).
pub fn compile_sharded(
    module: &ShardedModule,
    model_bytes: &[u8],
    options: &CompileOptions,
) -> Result<CompiledMesh, CompileError> {
    let mesh = &module.mesh;
    let mut options = options.clone();
    options.graph_options.push(format!("mesh={mesh}"));
    let n_ranks = mesh.num_devices();
    let mut files = Vec::new();
    let mut rank_files: Vec<Option<Vec<FileEntry>>> = vec![None; n_ranks];
    let mut stages = Vec::with_capacity(module.stages.len());
    let writer = module.stages.last().and_then(|s| s.ranks.first().copied());
    for stage in &module.stages {
        let code = compile_program(&stage.graph, &options)?;
        for &rank in &stage.ranks {
            let mut program = code.program.clone();
            program.shard = Some(rank_shard(module, stage, &program, rank, writer == Some(rank))?);
            let mut mine = code.rank_files(&format!("rank{rank}"), &program)?;
            mine.sort_by(|a, b| a.0.cmp(&b.0));
            let slot = rank_files.get_mut(rank).ok_or_else(|| CompileError::Io {
                path: PathBuf::from(format!("rank{rank}")),
                message: format!("stage {} runs rank {rank}, outside the mesh {mesh}", stage.stage),
            })?;
            *slot = Some(file_entries(&mine));
            files.extend(mine);
        }
        stages.push(code.stats);
    }
    let mut ranks = Vec::with_capacity(n_ranks);
    for (rank, entries) in rank_files.into_iter().enumerate() {
        let files = entries.ok_or_else(|| CompileError::Io {
            path: PathBuf::from(format!("rank{rank}")),
            message: "no pipeline stage runs this rank".into(),
        })?;
        ranks.push(RankEntry { rank: rank as u32, program: format!("rank{rank}/program.json"), files });
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let manifest = Manifest {
        format_version: Manifest::version_for(&[]),
        tessera_version: env!("CARGO_PKG_VERSION").to_string(),
        input_hash: input_hash(model_bytes, &options),
        target: options.target.name().to_string(),
        options: options.normalized(),
        mesh: mesh.axes().iter().map(|a| MeshAxis { name: a.name.clone(), size: a.size }).collect(),
        ranks,
        dims: Vec::new(),
    };
    Ok(CompiledMesh { files: ArtifactFiles { files, manifest }, stages })
}

/// Rank `rank`'s place in the mesh: its stage, and how its inputs and outputs are blocks of the
/// model's (the global shape is the local one times the group size of the axes splitting each
/// dimension, which `shard` splits only when they divide it).
fn rank_shard(
    module: &ShardedModule,
    stage: &StageProgram,
    program: &Program,
    rank: usize,
    writes_outputs: bool,
) -> Result<RankShard, CompileError> {
    let sharded = |bindings: &[tessera_ir::artifact::IoBinding], shardings: &[Sharding]| {
        bindings
            .iter()
            .zip(shardings)
            .map(|(binding, sharding)| {
                let local = &program.buffers[binding.buffer as usize].shape;
                let global_shape = local
                    .iter()
                    .zip(&sharding.dims)
                    .map(|(&n, axes)| Ok(n * module.mesh.group_size(axes)?))
                    .collect::<Result<Vec<u64>, String>>()
                    .map_err(|message| CompileError::Io {
                        path: PathBuf::from(format!("rank{rank}/program.json")),
                        message: format!("{}: {message}", binding.name),
                    })?;
                Ok(ShardedIo { name: binding.name.clone(), global_shape, sharding: sharding.to_string() })
            })
            .collect::<Result<Vec<ShardedIo>, CompileError>>()
    };
    Ok(RankShard {
        rank: rank as u32,
        stage: stage.stage as u32,
        stages: module.stages.len() as u32,
        inputs: sharded(&program.inputs, &stage.input_shardings)?,
        outputs: sharded(&program.outputs, &stage.output_shardings)?,
        writes_outputs,
    })
}

/// One program compiled for a target: everything but its `program.json`, which the caller
/// writes (a mesh artifact's ranks differ only there).
struct ProgramCode {
    program: Program,
    /// Weights and kernels, relative to the rank's directory.
    files: Vec<(String, FileContent)>,
    stats: LowerStats,
}

impl ProgramCode {
    /// The files of a rank in `rank_dir` running `program` (this code's, maybe with its
    /// [`Program::shard`] set).
    fn rank_files(&self, rank_dir: &str, program: &Program) -> Result<Vec<(String, FileContent)>, CompileError> {
        let mut files: Vec<(String, FileContent)> =
            self.files.iter().map(|(rel, content)| (format!("{rank_dir}/{rel}"), content.clone())).collect();
        let program_json = serde_json::to_vec_pretty(program)
            .map_err(|e| CompileError::Io { path: PathBuf::from("program.json"), message: e.to_string() })?;
        files.push((format!("{rank_dir}/program.json"), FileContent::Bytes(program_json)));
        Ok(files)
    }
}

fn file_entries(files: &[(String, FileContent)]) -> Vec<FileEntry> {
    files
        .iter()
        .map(|(path, content)| FileEntry { path: path.clone(), bytes: content.len(), sha256: content.sha256_hex() })
        .collect()
}

/// Lowers `graph` and generates its kernels for `options.target`.
fn compile_program(graph: &Graph, options: &CompileOptions) -> Result<ProgramCode, CompileError> {
    let (lowered, weights) = lower_program(graph, options)?;
    // The weights image's SHA-256 (for the manifest) is hashed on a second thread while the
    // kernels compile: for a 124 M-parameter model it is half a second of one core.
    std::thread::scope(|scope| {
        let hashing = scope.spawn(|| weights.sha256_hex().len());
        let code = generate_code(lowered, &weights, options);
        // A panic while hashing is a bug, not bad input: surface it as the panic it was.
        if let Err(panic) = hashing.join() {
            std::panic::resume_unwind(panic);
        }
        code
    })
}

/// Lowers `graph` for `options.target` (fusion, buffers, steps; no code generated yet) and
/// takes its weights image out, to be shared by the thread that hashes or writes it.
fn lower_program(
    graph: &Graph,
    options: &CompileOptions,
) -> Result<(crate::program::LoweredProgram, Arc<WeightsImage>), CompileError> {
    // Attention kernels (the only kernels holding a matmul) are CUDA-only: on the CPU the fused
    // flash-style kernel measured slower than the GEMM library calls plus the softmax kernel
    // (BENCHMARKS.md, "Fused flash-style attention"), so the CPU keeps the library path.
    let cpu = matches!(options.target, Target::Cpu);
    let holds_matmul = |k: &Graph| k.nodes().any(|(_, n)| matches!(n.op, tessera_ir::ops::Op::MatMul));
    let can_compile = |k: &Graph| supports(k).is_ok() && !(cpu && holds_matmul(k));
    // A training step's optimizer updates become elementwise ops, which fuse into kernels.
    let decomposed;
    let graph = if has_optimizer_updates(graph) {
        decomposed = decompose_optimizers(graph).map_err(|e| LowerError::Pass(format!("optimizer updates: {e}")))?;
        &decomposed
    } else {
        graph
    };
    let mut lowered = lower_with(
        graph,
        &options.dims,
        options.target.name(),
        &can_compile,
        Lowering { epilogues: options.epilogues, pinned_outputs: options.pinned_outputs },
    )?;
    let weights = Arc::new(std::mem::take(&mut lowered.weights));
    Ok((lowered, weights))
}

/// Generates the kernels of `lowered` (whose weights image is `weights`) for
/// `options.target`: the program and its files, the weights image last.
fn generate_code(
    mut lowered: crate::program::LoweredProgram,
    weights: &Arc<WeightsImage>,
    options: &CompileOptions,
) -> Result<ProgramCode, CompileError> {
    let mut files: Vec<(String, FileContent)> = Vec::new();
    let arch = match options.target {
        Target::Cpu => None,
        Target::CudaSm80 => Some(GpuArch::Sm80),
        Target::CudaSm90 => Some(GpuArch::Sm90),
    };
    match arch {
        None if !lowered.kernels.is_empty() => {
            let object = compile_cpu(&lowered.kernels)?;
            lowered.program.kernels_file = Some("kernels.so".to_string());
            files.push(("kernels.so".to_string(), FileContent::Bytes(object.shared_object)));
        }
        None => {}
        Some(arch) => {
            let ptxas = crate::cuda::find_ptxas();
            let (gpu, kernel_files) = gpu_program(&lowered.program, &lowered.kernels, arch, ptxas.as_deref())?;
            files.extend(kernel_files.into_iter().map(|(path, bytes)| (path, FileContent::Bytes(bytes))));
            lowered.stats.host_steps = host_steps(&lowered.program, &gpu);
            lowered.program.gpu = Some(gpu);
        }
    }
    files.push((lowered.program.weights_file.clone(), FileContent::Weights(Arc::clone(weights))));
    Ok(ProgramCode { program: lowered.program, files, stats: lowered.stats })
}

/// Library steps a CUDA executor runs on the host (all but the planned GEMMs).
fn host_steps(program: &tessera_ir::artifact::Program, gpu: &tessera_ir::artifact::GpuProgram) -> usize {
    let library = program.steps.iter().filter(|s| matches!(s, tessera_ir::artifact::Step::Library { .. }));
    library.count() - gpu.gemms.len()
}

/// Whether `dir` holds a complete tessera artifact: a manifest that parses, of a format version
/// tessera ever wrote (an artifact of an older format is still a recompile's to replace), whose
/// every listed file is present with its recorded size. Only such a directory is ever replaced
/// by `compile -o`; a file merely named `manifest.json` is not enough.
pub fn is_complete_artifact(dir: &Path) -> bool {
    let Ok(text) = fs::read(dir.join(MANIFEST_FILE)) else { return false };
    let Ok(manifest) = serde_json::from_slice::<Manifest>(&text) else { return false };
    (FIRST_FORMAT_VERSION..=FORMAT_VERSION).contains(&manifest.format_version)
        && !manifest.ranks.is_empty()
        && manifest.ranks.iter().all(|r| {
            !r.files.is_empty()
                && r.files.iter().all(|f| {
                    let rel = Path::new(&f.path);
                    rel.is_relative()
                        && fs::symlink_metadata(dir.join(rel)).is_ok_and(|m| m.is_file() && m.len() == f.bytes)
                })
        })
}

/// Writes `files` as the artifact directory `dir`, atomically (see the module docs, and
/// [`tessera_ir::files::StagedDir`]). An existing complete artifact at `dir` (see
/// [`is_complete_artifact`]) or an empty directory is replaced; anything else (other files, a
/// symlink, a special file) is refused, so a typo cannot delete someone's data.
pub fn write_artifact(dir: &Path, files: &ArtifactFiles) -> Result<(), CompileError> {
    check_replaceable(dir)?;
    let staged = StagedDir::beside(dir)?;
    write_staged(dir, &staged, files, &[])?;
    staged.publish()?;
    Ok(())
}

/// Refuses a `dir` that exists and is neither empty nor a complete artifact (see
/// [`write_artifact`]).
fn check_replaceable(dir: &Path) -> Result<(), CompileError> {
    if fs::symlink_metadata(dir).is_ok() {
        files::check_dir_destination(dir)?;
        let is_empty_dir = fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(false);
        if !is_empty_dir && !is_complete_artifact(dir) {
            return Err(CompileError::Io {
                path: dir.to_path_buf(),
                message: format!(
                    "exists and is not a complete tessera artifact (a manifest of format version \
                     {FIRST_FORMAT_VERSION} to {FORMAT_VERSION} whose listed files are present); refusing to replace it"
                ),
            });
        }
    }
    Ok(())
}

/// Writes every file of `files` but those in `already_written` (relative paths) into `staged`,
/// each fsynced with its directory, then the manifest.
fn write_staged(
    dir: &Path,
    staged: &StagedDir,
    files: &ArtifactFiles,
    already_written: &[String],
) -> Result<(), CompileError> {
    for (rel, content) in files.files.iter().filter(|(rel, _)| !already_written.contains(rel)) {
        let path = staged.path().join(rel);
        if let Some(sub) = path.parent() {
            fs::create_dir_all(sub)
                .map_err(|e| CompileError::Io { path: sub.to_path_buf(), message: format!("cannot create: {e}") })?;
        }
        files::write_synced_from(&path, |file| {
            // Buffered: a weights image arrives as many small constants and their padding.
            let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
            content.write_to(&mut out)?;
            std::io::Write::flush(&mut out)
        })?;
        if let Some(sub) = path.parent() {
            files::sync_dir(sub)?;
        }
    }
    let manifest = serde_json::to_vec_pretty(&files.manifest)
        .map_err(|e| CompileError::Io { path: dir.join(MANIFEST_FILE), message: e.to_string() })?;
    files::write_synced(&staged.path().join(MANIFEST_FILE), &manifest)?;
    Ok(())
}
