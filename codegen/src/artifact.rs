//! `tessera compile`: a model graph to an artifact directory (see [`tessera_ir::artifact`] for
//! the format), written atomically and byte-for-byte deterministically.
//!
//! Determinism: nothing in an artifact depends on time, paths, the host or hash-map order: the
//! program is built in graph order, JSON is printed from structs, the weights image is laid out
//! by the plan, and the code generator emits the same bytes for the same kernels.
//!
//! Atomicity: everything is built in memory first; only then is a temporary directory created
//! beside the destination (`.NAME.tmp-PID-N`, by [`tessera_ir::files::StagedDir`]), every file written and fsynced, the directory
//! fsynced, and renamed onto the destination. A compile that fails before the rename removes
//! its temporary directory; a killed one leaves at most that hidden directory, never a
//! half-written artifact at the destination.

use crate::cuda::gpu_program;
use crate::decompose::{decompose_optimizers, has_optimizer_updates};
use crate::program::{lower, LowerError, LowerStats};
use crate::{compile_cpu, supports, CodegenError, GpuArch};
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use tessera_ir::artifact::{
    sha256_hex, FileEntry, Manifest, RankEntry, FIRST_FORMAT_VERSION, FORMAT_VERSION, MANIFEST_FILE,
};
use tessera_ir::files::{self, FileError, StagedDir};
use tessera_ir::graph::Graph;

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
}

impl CompileOptions {
    /// One spelling per option, sorted: what the manifest records and the input hash covers.
    pub fn normalized(&self) -> Vec<String> {
        let mut out = vec![format!("target={}", self.target.name())];
        let mut dims: Vec<String> = self.dims.iter().map(|(k, v)| format!("dim:{k}={v}")).collect();
        dims.sort();
        out.extend(dims);
        let mut graph_options = self.graph_options.clone();
        graph_options.sort();
        out.extend(graph_options);
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
}

/// An artifact in memory: relative paths and contents, manifest included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactFiles {
    pub files: Vec<(String, Vec<u8>)>,
    pub manifest: Manifest,
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
    let mut data = Vec::with_capacity(model_bytes.len() + 64);
    data.extend_from_slice(b"tessera-compile-input\n");
    data.extend_from_slice(&(model_bytes.len() as u64).to_le_bytes());
    data.extend_from_slice(model_bytes);
    for option in options.normalized() {
        data.extend_from_slice(&(option.len() as u64).to_le_bytes());
        data.extend_from_slice(option.as_bytes());
    }
    sha256_hex(&data)
}

/// Compiles `graph` (whose source had `model_bytes`) into artifact files, in memory.
pub fn compile(graph: &Graph, model_bytes: &[u8], options: &CompileOptions) -> Result<Compiled, CompileError> {
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
    let mut lowered = lower(graph, &options.dims, options.target.name(), &can_compile)?;
    let rank_dir = "rank0";
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let arch = match options.target {
        Target::Cpu => None,
        Target::CudaSm80 => Some(GpuArch::Sm80),
        Target::CudaSm90 => Some(GpuArch::Sm90),
    };
    match arch {
        None if !lowered.kernels.is_empty() => {
            let object = compile_cpu(&lowered.kernels)?;
            lowered.program.kernels_file = Some("kernels.so".to_string());
            files.push((format!("{rank_dir}/kernels.so"), object.shared_object));
        }
        None => {}
        Some(arch) => {
            let ptxas = crate::cuda::find_ptxas();
            let (gpu, kernel_files) = gpu_program(&lowered.program, &lowered.kernels, arch, ptxas.as_deref())?;
            files.extend(kernel_files.into_iter().map(|(rel, bytes)| (format!("{rank_dir}/{rel}"), bytes)));
            lowered.stats.host_steps = host_steps(&lowered.program, &gpu);
            lowered.program.gpu = Some(gpu);
        }
    }
    files.push((format!("{rank_dir}/{}", lowered.program.weights_file), std::mem::take(&mut lowered.weights)));
    let program_json = serde_json::to_vec_pretty(&lowered.program)
        .map_err(|e| CompileError::Io { path: PathBuf::from("program.json"), message: e.to_string() })?;
    files.push((format!("{rank_dir}/program.json"), program_json));
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let entries = files
        .iter()
        .map(|(path, bytes)| FileEntry { path: path.clone(), bytes: bytes.len() as u64, sha256: sha256_hex(bytes) })
        .collect();
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        tessera_version: env!("CARGO_PKG_VERSION").to_string(),
        input_hash: input_hash(model_bytes, options),
        target: options.target.name().to_string(),
        options: options.normalized(),
        mesh: Vec::new(),
        ranks: vec![RankEntry { rank: 0, program: format!("{rank_dir}/program.json"), files: entries }],
    };
    Ok(Compiled { files: ArtifactFiles { files, manifest }, stats: lowered.stats })
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
    let staged = StagedDir::beside(dir)?;
    for (rel, bytes) in &files.files {
        let path = staged.path().join(rel);
        if let Some(sub) = path.parent() {
            fs::create_dir_all(sub)
                .map_err(|e| CompileError::Io { path: sub.to_path_buf(), message: format!("cannot create: {e}") })?;
        }
        files::write_synced(&path, bytes)?;
        if let Some(sub) = path.parent() {
            files::sync_dir(sub)?;
        }
    }
    let manifest = serde_json::to_vec_pretty(&files.manifest)
        .map_err(|e| CompileError::Io { path: dir.join(MANIFEST_FILE), message: e.to_string() })?;
    files::write_synced(&staged.path().join(MANIFEST_FILE), &manifest)?;
    staged.publish()?;
    Ok(())
}
