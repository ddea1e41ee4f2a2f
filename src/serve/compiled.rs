//! Compiled serving directories that run on their own: `tessera compile MODEL --serve
//! [--mesh tp=N] -o DIR` writes the programs once and every rank's weight shards, and
//! `tessera serve DIR` / `tessera generate DIR` (or `mpirun -n N tessera serve DIR`) run them
//! without the checkpoint or a compiler.
//!
//! ```text
//! DIR/serve.json                   the programs' manifest (ir::serving), tensor_parallel for tp > 1
//! DIR/embed/ layer_in/ ... head/   the programs: one copy, every rank runs the same kernels
//! DIR/rows1/ rows2/ ...            the programs for fewer rows (serve.json and the programs)
//! DIR/model.json                   the model's config, end-of-sequence token, tokenizer, rank files
//! DIR/tokenizer.json               the checkpoint's tokenizer (absent: byte-level, a zoo model)
//! DIR/rank0/weights.safetensors    rank 0's shards (f32, the zoo's parameter names) ... one per rank
//! ```
//!
//! A rank's file holds exactly the tensors that rank's engine binds, in the shapes its
//! programs declare (its heads' Q/K/V columns, its rows of the output and down projections,
//! the replicated embedding and norms; the head on rank 0 alone): the compiler records them by
//! building each rank's engine once over the source model's weights. The programs' shape
//! (`--max-batch`, `--max-seq`, `--kv-block`, `--kv-dtype`) and tensor-parallel degree are
//! fixed at compile time. Besides the programs for `max_batch` rows, the directory holds them
//! for each smaller power of two (`rows1/`, `rows2/`, ...: `ServeManifest::row_buckets`), and
//! every run uses the fewest rows that hold its tokens, all row counts reading one copy of
//! the weights; a directory from before the buckets runs its `max_batch` rows only.

use super::{compile_programs, ServedModel, Weights};
use anyhow::{bail, Context, Result};
use memmap2::Mmap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tessera_frontend::hf;
use tessera_frontend::zoo::config::ModelConfig;
use tessera_frontend::zoo::serve::ServeArch;
use tessera_ir::serving::{ServeManifest, ServeShape, SERVE_MANIFEST_FILE};
use tessera_runtime::serve::engine::Engine;
use tessera_runtime::serve::tokenizer::TextTokenizer;
use tessera_runtime::serve::{load_row_buckets, load_serving_dir, ServeError};
use tessera_runtime::spmd::LocalCommunicator;

/// The file that makes a serving directory runnable on its own (see the module doc).
pub const SERVED_MODEL_FILE: &str = "model.json";

/// `model.json`.
#[derive(Debug, Serialize, Deserialize)]
struct ServedModelFile {
    config: ModelConfig,
    eos_token: Option<u32>,
    /// The tokenizer file in the directory; none for byte-level tokens.
    tokenizer: Option<String>,
    /// Each rank's weights file, relative to the directory, in rank order.
    ranks: Vec<String>,
}

/// The compiled programs a [`ServedModel`] opened from a directory runs.
#[derive(Debug, Clone)]
pub struct CompiledServing {
    pub dir: PathBuf,
    pub manifest: ServeManifest,
}

/// Every rank's weights file of a compiled directory, memory-mapped (a rank's process reads
/// only its own file's pages).
pub struct RankWeights {
    files: Vec<(PathBuf, Mmap)>,
}

impl RankWeights {
    /// Rank `rank`'s tensor `name`, checked to have `shape`.
    pub fn get(&self, rank: u64, name: &str, shape: &[u64]) -> Result<Vec<f32>, String> {
        let (path, map) = self.files.get(rank as usize).ok_or_else(|| format!("no weights file for rank {rank}"))?;
        let located = |message: String| format!("{}: {message}", path.display());
        let tensors = safetensors::SafeTensors::deserialize(map).map_err(|e| located(e.to_string()))?;
        let view = tensors.tensor(name).map_err(|e| located(e.to_string()))?;
        let expected: Vec<usize> = shape.iter().map(|&n| n as usize).collect();
        if view.dtype() != safetensors::Dtype::F32 || view.shape() != expected.as_slice() {
            let message =
                format!("'{name}' is {:?} {:?}; the programs read f32 {expected:?}", view.dtype(), view.shape());
            return Err(located(message));
        }
        Ok(view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    }
}

/// Refuses options that differ from what `compiled` was compiled for: its shape (`asked`,
/// the command's flags over the directory's values) and its mesh (`--mesh`, if given, must
/// be the directory's `tp`). A mismatch is a [`super::ServeMeshError`] (exit 2).
pub fn check_run_options(compiled: &CompiledServing, asked: ServeShape, mesh: Option<&str>) -> Result<()> {
    let m = &compiled.manifest;
    let dir = compiled.dir.display();
    if asked != m.shape {
        let message = format!(
            "{dir} was compiled for --max-batch {} --max-seq {} --kv-block {} --kv-dtype {}; it runs with those only",
            m.shape.max_batch,
            m.shape.max_seq,
            m.shape.kv_block,
            m.shape.kv_dtype.name()
        );
        return Err(super::ServeMeshError(message).into());
    }
    if let Some(text) = mesh {
        let mesh = tessera_ir::sharding::Mesh::parse(text)
            .map_err(|e| super::ServeMeshError(format!("--mesh '{text}': {e}")))?;
        let tp = mesh.axis_size("tp").unwrap_or(1);
        if tp != m.tp_ranks() || mesh.num_devices() as u64 != tp {
            let message =
                format!("--mesh '{text}': {dir} was compiled for tp={} (its rank0/ ... directories)", m.tp_ranks());
            return Err(super::ServeMeshError(message).into());
        }
    }
    Ok(())
}

/// Rank `comm.rank()`'s engine of a compiled directory whose ranks are processes (one per
/// rank under `mpirun`): its programs bound to its own weights file, joined to the others by
/// `comm` (a job of as many processes as the directory has ranks), with `cache_blocks` KV
/// blocks. The debug-build fault hook applies to the rank it names.
pub fn build_process_rank(
    model: &ServedModel,
    cache_blocks: u64,
    comm: Arc<dyn tessera_runtime::spmd::Communicator>,
) -> Result<Engine> {
    let Some(compiled) = &model.compiled else {
        bail!("ranks as processes run a directory compiled with `tessera compile --serve --mesh tp=N`");
    };
    let (rank, ranks) = (comm.rank() as u64, compiled.manifest.tp_ranks());
    if comm.size() as u64 != ranks {
        bail!(
            "{} was compiled for {ranks} tensor-parallel ranks; the launcher started {}",
            compiled.dir.display(),
            comm.size()
        );
    }
    let (manifest, programs) = load_serving_dir(&compiled.dir)?;
    let buckets = load_row_buckets(&compiled.dir, &manifest)?;
    let mut read = |name: &str, shape: &[u64]| model.weights.shard(name, shape, rank, ranks);
    let shared = Box::new(tessera_runtime::serve::process::SharedCommunicator(comm));
    let mut engine = Engine::rank(manifest, programs, &mut read, cache_blocks, shared)?;
    for (bucket, programs) in buckets {
        engine.add_row_programs(&bucket, programs, &mut read)?;
    }
    // A failed step is undone on every rank and the processes serve on (MPI_Abort would end
    // the job).
    engine.announce_failures();
    if let Some((fault_rank, runs, fault)) = crate::fault::serve_requested()? {
        if fault_rank as u64 == rank {
            engine.inject_fault(runs, fault);
        }
    }
    Ok(engine)
}

/// The one-rank engine of a compiled directory (`tp=1`): its programs for every row count it
/// holds, bound to its weights file, with `cache_blocks` KV blocks.
pub fn build_one_rank(model: &ServedModel, cache_blocks: u64) -> Result<Engine> {
    let Some(compiled) = &model.compiled else {
        bail!("not a directory compiled with `tessera compile --serve`");
    };
    if compiled.manifest.tp_ranks() != 1 {
        bail!("{} was compiled for {} tensor-parallel ranks", compiled.dir.display(), compiled.manifest.tp_ranks());
    }
    let (manifest, programs) = load_serving_dir(&compiled.dir)?;
    let buckets = load_row_buckets(&compiled.dir, &manifest)?;
    let mut read = |name: &str, shape: &[u64]| model.weights.shard(name, shape, 0, 1);
    let mut engine = Engine::with_cache_blocks(manifest, programs, &mut read, cache_blocks)?;
    for (bucket, programs) in buckets {
        engine.add_row_programs(&bucket, programs, &mut read)?;
    }
    Ok(engine)
}

/// Whether `path` is a serving directory written by [`write_compiled`].
pub fn is_compiled_dir(path: &Path) -> bool {
    path.join(SERVED_MODEL_FILE).is_file() && path.join(SERVE_MANIFEST_FILE).is_file()
}

/// Opens a directory written by [`write_compiled`].
pub fn open_compiled(dir: &Path) -> Result<ServedModel> {
    let path = dir.join(SERVED_MODEL_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let file: ServedModelFile = serde_json::from_str(&text).with_context(|| format!("{}", path.display()))?;
    let manifest_path = dir.join(SERVE_MANIFEST_FILE);
    let text =
        std::fs::read_to_string(&manifest_path).with_context(|| format!("reading {}", manifest_path.display()))?;
    let manifest: ServeManifest =
        serde_json::from_str(&text).with_context(|| format!("{}", manifest_path.display()))?;
    if file.ranks.len() as u64 != manifest.tp_ranks() {
        bail!(
            "{}: {} rank weights files for programs of {} tensor-parallel ranks",
            path.display(),
            file.ranks.len(),
            manifest.tp_ranks()
        );
    }
    let mut files = Vec::with_capacity(file.ranks.len());
    for relative in &file.ranks {
        let path = dir.join(relative);
        let opened = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: the map is read-only and private to this process; a directory changed on
        // disk while tessera runs is outside what it can guard against (as for any reader).
        let map = unsafe { Mmap::map(&opened) }.with_context(|| format!("mapping {}", path.display()))?;
        files.push((path, map));
    }
    let tokenizer = match &file.tokenizer {
        Some(name) => TextTokenizer::from_file(&dir.join(name))?,
        None => TextTokenizer::Bytes,
    };
    Ok(ServedModel {
        config: file.config,
        // The programs are compiled: the architecture's graph options are in them.
        arch: ServeArch::ZOO,
        positions: manifest.model.positions.clone(),
        weights: Weights::Compiled(Arc::new(RankWeights { files })),
        tokenizer,
        eos: file.eos_token,
        compiled: Some(CompiledServing { dir: dir.to_path_buf(), manifest }),
    })
}

/// Compiles `model`'s serving programs for `manifest` into `dir` (replacing what is there)
/// with every rank's weight shards, its tokenizer (`source`'s `tokenizer.json` for a
/// checkpoint) and `model.json`: a directory [`open_compiled`] runs.
pub fn write_compiled(model: &ServedModel, manifest: &ServeManifest, source: &Path, dir: &Path) -> Result<()> {
    if model.compiled.is_some() {
        bail!("{}: already a compiled serving directory", source.display());
    }
    let staged = tessera_ir::files::StagedDir::beside(dir)?;
    compile_programs(model, manifest, staged.path())?;
    for &rows in &manifest.row_buckets {
        let bucket_dir = staged.path().join(ServeManifest::row_bucket_dir(rows));
        std::fs::create_dir(&bucket_dir).with_context(|| format!("creating {}", bucket_dir.display()))?;
        compile_programs(model, &manifest.for_rows(rows), &bucket_dir)?;
    }
    let ranks = manifest.tp_ranks();
    let mut files = Vec::with_capacity(ranks as usize);
    for rank in 0..ranks {
        let tensors = rank_tensors(model, staged.path(), rank, ranks)?;
        let relative = format!("rank{rank}/weights.safetensors");
        let views = tensors
            .iter()
            .map(|(name, (shape, bytes))| {
                let shape = shape.iter().map(|&n| n as usize).collect();
                Ok((name.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, bytes)?))
            })
            .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()
            .with_context(|| format!("rank {rank}'s weights"))?;
        let bytes = safetensors::tensor::serialize(views, None).with_context(|| format!("rank {rank}'s weights"))?;
        let path = staged.path().join(&relative);
        std::fs::create_dir_all(path.parent().unwrap_or(staged.path()))?;
        tessera_ir::files::write_atomic(&path, &bytes)?;
        files.push(relative);
    }
    let tokenizer = match model.tokenizer {
        TextTokenizer::Bytes => None,
        TextTokenizer::Hf(_) => {
            let from = source.join(hf::TOKENIZER_FILE);
            std::fs::copy(&from, staged.path().join(hf::TOKENIZER_FILE))
                .with_context(|| format!("copying {}", from.display()))?;
            Some(hf::TOKENIZER_FILE.to_string())
        }
    };
    let file = ServedModelFile { config: model.config.clone(), eos_token: model.eos, tokenizer, ranks: files };
    let json = serde_json::to_string_pretty(&file)?;
    tessera_ir::files::write_atomic(&staged.path().join(SERVED_MODEL_FILE), json.as_bytes())?;
    staged.publish()?;
    Ok(())
}

/// A rank's tensors by name: shape and little-endian f32 bytes.
type RankTensors = BTreeMap<String, (Vec<u64>, Vec<u8>)>;

/// The tensors rank `rank` of `ranks` binds (name to shape and little-endian f32 bytes),
/// recorded by building its engine on the programs in `programs_dir` once.
fn rank_tensors(model: &ServedModel, programs_dir: &Path, rank: u64, ranks: u64) -> Result<RankTensors> {
    let mut tensors = RankTensors::new();
    let mut clash = None;
    let mut record = |name: &str, shape: &[u64]| -> Result<Vec<f32>, String> {
        let values = model.weights.shard(name, shape, rank, ranks)?;
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        if let Some((seen, _)) = tensors.insert(name.to_string(), (shape.to_vec(), bytes)) {
            if seen != shape {
                clash.get_or_insert(format!("'{name}' is bound as {seen:?} and as {shape:?}"));
            }
        }
        Ok(values)
    };
    let (manifest, programs) = load_serving_dir(programs_dir)?;
    // One block: the cache is never used, only the bindings matter.
    let engine = if ranks == 1 {
        Engine::with_cache_blocks(manifest, programs, &mut record, 1)
    } else {
        // The communicator of a world never stepped: building a rank sends nothing.
        let comm = LocalCommunicator::world(ranks as usize, Duration::from_secs(1)).swap_remove(rank as usize);
        Engine::rank(manifest, programs, &mut record, 1, Box::new(comm))
    };
    engine.map_err(|e: ServeError| anyhow::anyhow!("rank {rank}: {e}"))?;
    if let Some(message) = clash {
        bail!("rank {rank}: {message}");
    }
    Ok(tensors)
}
