//! Serving glue shared by `tessera compile --serve` and `tessera generate`: a model named by a
//! zoo spec or a Hugging Face checkpoint directory becomes serving programs
//! (`frontend::zoo::serve`, compiled by `codegen` for the CPU), weights (the checkpoint's, or
//! seeded for a zoo spec) and a tokenizer (`tokenizer.json`, or bytes for a zoo spec), bound
//! into a `runtime::serve::Engine`; [`generate`] runs one sequence on it. A directory that
//! `tessera compile --serve` wrote runs as it is ([`compiled`]).

pub mod compiled;

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera_codegen::artifact::{compile, write_artifact, CompileOptions, Target};
use tessera_frontend::hf::{self, Checkpoint};
use tessera_frontend::zoo::config::{ModelConfig, Position};
use tessera_frontend::zoo::serve::{build_serving_tp, check_tensor_parallel, tp_split, ServeArch, TpSplit};
use tessera_ir::random::SplitMix64;
use tessera_ir::serving::{
    KvDtype, Positions, Rope, RopeScaling, ServeManifest, ServeModel, ServeShape, TensorParallel, SERVE_FORMAT_VERSION,
};
use tessera_ir::sharding::Mesh;
use tessera_runtime::serve::engine::{Engine, SeqId, ServingEngine};
use tessera_runtime::serve::mesh::{MeshEngine, RankBuilder};
use tessera_runtime::serve::sampling::{Sampler, SamplingParams};
use tessera_runtime::serve::tokenizer::{StreamDecoder, TextTokenizer};
use tessera_runtime::serve::{load_row_buckets, load_serving_dir, ServeError};

/// `--kv-dtype`'s parser: f32, bf16 or int8.
pub fn parse_kv_dtype(name: &str) -> Result<KvDtype, String> {
    KvDtype::parse(name).ok_or_else(|| format!("{name}: the KV cache stores f32, bf16 or int8"))
}

/// Where a served model's weights come from (shared with the ranks of a tensor-parallel mesh).
#[derive(Clone)]
pub enum Weights {
    Checkpoint(Arc<Checkpoint>),
    /// A zoo spec: seeded weights (norm scales 1, biases 0, the rest N(0, 0.02²)).
    Seeded(u64),
    /// A compiled serving directory's shards, one file per rank, already split.
    Compiled(Arc<compiled::RankWeights>),
}

/// A model ready to compile and bind.
pub struct ServedModel {
    pub config: ModelConfig,
    pub arch: ServeArch,
    pub positions: Positions,
    pub weights: Weights,
    pub tokenizer: TextTokenizer,
    /// The token that ends a sequence, if the model has one.
    pub eos: Option<u32>,
    /// The compiled programs of a directory `tessera compile --serve` wrote (none: compile
    /// them for each run).
    pub compiled: Option<compiled::CompiledServing>,
}

/// Opens `model`: a compiled serving directory ([`compiled`]), a checkpoint directory
/// (`config.json`, `*.safetensors`, `tokenizer.json`) or a zoo spec (byte-level tokenizer,
/// weights seeded with `seed`).
pub fn open_model(model: &str, seed: u64) -> Result<ServedModel> {
    let path = Path::new(model);
    if compiled::is_compiled_dir(path) {
        return compiled::open_compiled(path);
    }
    if hf::is_checkpoint_dir(path) {
        let checkpoint = Checkpoint::open(path)?;
        let tokenizer = TextTokenizer::from_file(&path.join(hf::TOKENIZER_FILE))?;
        return Ok(ServedModel {
            config: checkpoint.config.clone(),
            arch: checkpoint.arch,
            positions: checkpoint.positions.clone(),
            eos: checkpoint.eos_token,
            tokenizer,
            weights: Weights::Checkpoint(Arc::new(checkpoint)),
            compiled: None,
        });
    }
    if path.is_dir() {
        bail!(
            "{model}: neither a Hugging Face checkpoint (no {}) nor a compiled serving directory (no {})",
            hf::CONFIG_FILE,
            compiled::SERVED_MODEL_FILE
        );
    }
    let config = tessera_frontend::zoo::spec::parse(model)?;
    if config.vocab < 256 {
        bail!(
            "{model}: a zoo model is served with a byte-level tokenizer, which needs vocab >= 256 (got {})",
            config.vocab
        );
    }
    let positions = match config.position {
        Position::Learned => Positions::Learned,
        Position::Rope => Positions::Rotary(Rope { theta: 10000.0, scaling: RopeScaling::None }),
    };
    Ok(ServedModel {
        config,
        arch: ServeArch::ZOO,
        positions,
        weights: Weights::Seeded(seed),
        tokenizer: TextTokenizer::Bytes,
        eos: None,
        compiled: None,
    })
}

impl ServedModel {
    /// The manifest of this model's serving programs for `shape` on `tp` tensor-parallel ranks
    /// (checked with [`serving_tp`]); refuses a `max_seq` beyond a learned position table.
    pub fn manifest(&self, shape: ServeShape, tp: u64) -> Result<ServeManifest> {
        let c = &self.config;
        if shape.max_batch == 0 || shape.max_seq == 0 || shape.kv_block == 0 {
            bail!("--max-batch, --max-seq and --kv-block must be positive");
        }
        if self.positions == Positions::Learned && shape.max_seq > c.seq {
            bail!("--max-seq {}: the model's learned position table has {} rows", shape.max_seq, c.seq);
        }
        let model = ServeModel {
            name: c.name.clone(),
            layers: c.layers,
            hidden: c.hidden,
            heads: c.heads,
            kv_heads: c.kv_heads,
            head_dim: c.head_dim,
            vocab: c.vocab,
            max_positions: c.seq,
            positions: self.positions.clone(),
        };
        check_tensor_parallel(c, tp).map_err(|message| ServeMeshError(format!("--mesh tp={tp}: {message}")))?;
        let (programs, tensor_parallel) = if tp > 1 {
            let split = TensorParallel { ranks: tp, row_parallel_bias: c.bias };
            (&tessera_ir::serving::TP_PROGRAMS[..], Some(split))
        } else {
            (&tessera_ir::serving::PROGRAMS[..], None)
        };
        let programs = programs.iter().map(|p| p.to_string()).collect();
        Ok(ServeManifest {
            format_version: SERVE_FORMAT_VERSION,
            model,
            shape,
            programs,
            tensor_parallel,
            row_buckets: Vec::new(),
        })
    }

    /// The value of parameter `name` (a zoo name) of `shape`.
    pub fn weight(&self, name: &str, shape: &[u64]) -> Result<Vec<f32>, String> {
        self.weights.get(name, shape)
    }
}

impl Weights {
    /// The value of parameter `name` (a zoo name) of `shape`.
    pub fn get(&self, name: &str, shape: &[u64]) -> Result<Vec<f32>, String> {
        match self {
            Weights::Checkpoint(checkpoint) => checkpoint.weight(name, shape).map_err(|e| e.to_string()),
            Weights::Seeded(seed) => Ok(seeded_weight(*seed, name, shape)),
            Weights::Compiled(ranks) => ranks.get(0, name, shape),
        }
    }

    /// Rank `rank` of `ranks`' shard of parameter `name`, whose shard has `shape` (as the
    /// rank's programs declare it): the whole tensor read, then the rank's slice of it (see
    /// [`TpSplit`]).
    pub fn shard(&self, name: &str, shape: &[u64], rank: u64, ranks: u64) -> Result<Vec<f32>, String> {
        if let Weights::Compiled(files) = self {
            return files.get(rank, name, shape);
        }
        let split = tp_split(name);
        if split == TpSplit::Replicated || ranks == 1 {
            return self.get(name, shape);
        }
        let mut whole_shape = shape.to_vec();
        let axis = if split == TpSplit::Rows { 0 } else { shape.len().saturating_sub(1) };
        let dim = whole_shape.get_mut(axis).ok_or_else(|| format!("a scalar cannot be split over {ranks} ranks"))?;
        *dim *= ranks;
        let whole = self.get(name, &whole_shape)?;
        // Rows: one contiguous run. Columns: a run from each row.
        let (runs, run_len) = match split {
            TpSplit::Rows => (1, shape.iter().product::<u64>() as usize),
            _ => (whole_shape[..axis].iter().product::<u64>() as usize, shape[axis] as usize),
        };
        let stride = run_len * ranks as usize;
        let start = run_len * rank as usize;
        Ok((0..runs).flat_map(|i| whole[i * stride + start..i * stride + start + run_len].iter().copied()).collect())
    }
}

/// A mesh `tessera generate`/`serve` cannot run: exits 2 (a request wrong as written).
#[derive(Debug)]
pub struct ServeMeshError(pub String);

impl std::fmt::Display for ServeMeshError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ServeMeshError {}

/// The tensor-parallel degree of a serving `--mesh` (`tp=N`; 1 without one): serving splits
/// layers over `tp` only, so any other axis larger than 1 is refused, as is a `tp` that does
/// not divide `config`'s heads, key/value heads and MLP width.
pub fn serving_tp(mesh: Option<&str>, config: &ModelConfig) -> Result<u64, ServeMeshError> {
    let Some(text) = mesh else { return Ok(1) };
    let mesh = Mesh::parse(text).map_err(|e| ServeMeshError(format!("--mesh '{text}': {e}")))?;
    if let Some(axis) = mesh.axes().iter().find(|a| a.name != "tp" && a.size > 1) {
        return Err(ServeMeshError(format!(
            "--mesh '{text}': serving runs tensor parallelism only (tp=N); {}={} is not supported",
            axis.name, axis.size
        )));
    }
    let tp = mesh.axis_size("tp").unwrap_or(1);
    check_tensor_parallel(config, tp).map_err(|message| ServeMeshError(format!("--mesh '{text}': {message}")))?;
    Ok(tp)
}

/// A zoo parameter's seeded values: the same for a name whatever order they are asked in.
fn seeded_weight(seed: u64, name: &str, shape: &[u64]) -> Vec<f32> {
    let n = shape.iter().product::<u64>() as usize;
    if name.ends_with(".scale") {
        return vec![1.0; n];
    }
    if name.ends_with(".bias") {
        return vec![0.0; n];
    }
    let mut rng = SplitMix64::for_name(seed, name);
    (0..n)
        .map(|_| {
            // Box-Muller: a standard normal from two uniforms.
            let u1 = rng.next_f64().max(f64::MIN_POSITIVE);
            let u2 = rng.next_f64();
            (0.02 * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
        })
        .collect()
}

/// Builds and compiles the four serving programs of `model` into `dir` (one artifact directory
/// each, then `serve.json`), replacing a previous serving directory there.
pub fn compile_serving(model: &ServedModel, manifest: &ServeManifest, dir: &Path) -> Result<()> {
    let staged = tessera_ir::files::StagedDir::beside(dir)?;
    compile_programs(model, manifest, staged.path())?;
    staged.publish()?;
    Ok(())
}

/// [`compile_serving`] into `dir` as it is (the caller stages and publishes it).
fn compile_programs(model: &ServedModel, manifest: &ServeManifest, dir: &Path) -> Result<()> {
    if model.compiled.is_some() {
        bail!("the model is a compiled serving directory: its programs cannot be compiled again");
    }
    let graphs = build_serving_tp(&model.config, &model.arch, manifest.shape.rows, manifest.tp_ranks())?;
    for (name, graph) in graphs.named() {
        let s = &manifest.shape;
        let options = CompileOptions {
            target: Target::Cpu,
            dims: Default::default(),
            graph_options: vec![format!("serve:program={name}"), format!("serve:rows={}", s.rows)],
            epilogues: false,
            pinned_outputs: false,
        };
        let compiled = compile(graph, model.config.name.as_bytes(), &options)
            .with_context(|| format!("{}: cannot compile the serving program {name}", model.config.name))?;
        write_artifact(&dir.join(name), &compiled.files)?;
    }
    let json = serde_json::to_string_pretty(manifest)?;
    tessera_ir::files::write_atomic(&dir.join(tessera_ir::serving::SERVE_MANIFEST_FILE), json.as_bytes())?;
    Ok(())
}

/// Compiles `model`'s serving programs (in a private temporary directory, removed once
/// loaded) and binds them to its weights; returns the engine and how long that took.
pub fn build_engine(model: &ServedModel, shape: ServeShape) -> Result<(Engine, Duration)> {
    build_engine_with_blocks(model, shape, shape.cache_blocks(), &[])
}

/// The row counts `tessera serve` compiles the programs for: the powers of two below
/// `max_batch`, and `max_batch`. A run uses the fewest rows that hold its tokens, so a
/// sequence alone runs one row, not `max_batch` (padding rows cost as much as real ones).
pub fn row_buckets(max_batch: u64) -> Vec<u64> {
    let mut rows: Vec<u64> =
        std::iter::successors(Some(1u64), |&r| r.checked_mul(2)).take_while(|&r| r < max_batch).collect();
    rows.push(max_batch);
    rows
}

/// The row counts an operator chose to compile the programs for (`compile --serve
/// --row-buckets 1,4`), fewest first, as [`parse_row_buckets`] read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowBuckets(pub Vec<u64>);

/// `--row-buckets`'s parser: row counts separated by commas, each a positive whole number
/// larger than the one before; an error names the entry (the first is entry 1).
pub fn parse_row_buckets(list: &str) -> Result<RowBuckets, String> {
    let mut rows: Vec<u64> = Vec::new();
    for (index, entry) in list.split(',').enumerate() {
        let n = index + 1;
        let text = entry.trim();
        let value: u64 = text.parse().map_err(|_| format!("entry {n} ({text:?}) is not a whole number of rows"))?;
        if value == 0 {
            return Err(format!("entry {n} is 0: a program runs at least one row"));
        }
        if let Some(&last) = rows.last() {
            if value <= last {
                return Err(format!(
                    "entry {n} ({value}) does not exceed entry {index} ({last}): list the row counts in increasing order, each once"
                ));
            }
        }
        rows.push(value);
    }
    Ok(RowBuckets(rows))
}

/// The row counts of `chosen` (all of them at most `max_batch`) and `max_batch`, fewest first:
/// what [`row_buckets`] gives when the operator chose none.
pub fn chosen_row_buckets(chosen: &RowBuckets, max_batch: u64) -> Result<Vec<u64>> {
    if let Some((index, &rows)) = chosen.0.iter().enumerate().find(|&(_, &rows)| rows > max_batch) {
        bail!("--row-buckets: entry {} ({rows}) exceeds --max-batch {max_batch}, the most rows a run takes", index + 1);
    }
    let mut rows = chosen.0.clone();
    if rows.last() != Some(&max_batch) {
        rows.push(max_batch);
    }
    Ok(rows)
}

/// [`build_engine`] with a KV cache of `cache_blocks` blocks (`tessera serve --kv-blocks`)
/// and programs for each row count of `row_counts` besides `shape.rows` (see [`row_buckets`]).
pub fn build_engine_with_blocks(
    model: &ServedModel,
    shape: ServeShape,
    cache_blocks: u64,
    row_counts: &[u64],
) -> Result<(Engine, Duration)> {
    let started = Instant::now();
    let manifest = model.manifest(shape, 1)?;
    let scratch = tempfile::Builder::new().prefix("tessera-serve-").tempdir().context("a temporary directory")?;
    let dir = scratch.path().join("serve");
    compile_serving(model, &manifest, &dir)?;
    let (manifest, programs) = load_serving_dir(&dir)?;
    let mut weights = |name: &str, shape: &[u64]| model.weight(name, shape);
    let mut engine = Engine::with_cache_blocks(manifest.clone(), programs, &mut weights, cache_blocks)?;
    for &rows in row_counts.iter().filter(|&&rows| rows != manifest.shape.rows) {
        let smaller = manifest.for_rows(rows);
        let dir = scratch.path().join(format!("serve-{rows}"));
        compile_serving(model, &smaller, &dir)?;
        let (smaller, programs) = load_serving_dir(&dir)?;
        engine.add_row_programs(&smaller, programs, &mut weights)?;
    }
    // The kernels stay mapped after their files are gone.
    scratch.close().context("removing the temporary serving directory")?;
    Ok((engine, started.elapsed()))
}

/// [`build_engine_with_blocks`] on `tp` tensor-parallel ranks (one rank per thread, see
/// `tessera_runtime::serve::mesh`); `tp` 1 is the one-rank engine itself.
pub fn build_serving_engine(
    model: &ServedModel,
    shape: ServeShape,
    cache_blocks: u64,
    row_counts: &[u64],
    tp: u64,
) -> Result<(Box<dyn ServingEngine>, Duration)> {
    if let Some(compiled) = &model.compiled {
        return build_compiled_engine(model, compiled, shape, cache_blocks, tp);
    }
    if tp <= 1 {
        let (engine, setup) = build_engine_with_blocks(model, shape, cache_blocks, row_counts)?;
        return Ok((Box::new(engine), setup));
    }
    let (engine, setup) = build_mesh_engine(model, shape, cache_blocks, row_counts, tp)?;
    Ok((Box::new(engine), setup))
}

/// The tensor-parallel engine of [`build_serving_engine`]: the rank programs are compiled once
/// (every rank's are the same) and each rank loads them and binds its shard of the weights.
pub fn build_mesh_engine(
    model: &ServedModel,
    shape: ServeShape,
    cache_blocks: u64,
    row_counts: &[u64],
    tp: u64,
) -> Result<(MeshEngine, Duration)> {
    let started = Instant::now();
    let manifest = model.manifest(shape, tp)?;
    let scratch = tempfile::Builder::new().prefix("tessera-serve-").tempdir().context("a temporary directory")?;
    let mut dirs: Vec<PathBuf> = Vec::new();
    let rows =
        std::iter::once(manifest.shape.rows).chain(row_counts.iter().copied().filter(|&r| r != manifest.shape.rows));
    for rows in rows {
        let dir = scratch.path().join(format!("serve-{rows}"));
        compile_serving(model, &manifest.for_rows(rows), &dir)?;
        dirs.push(dir);
    }
    let weights = model.weights.clone();
    let build: Arc<RankBuilder> = Arc::new(move |rank, comm| {
        let mut shard = |name: &str, shape: &[u64]| weights.shard(name, shape, rank as u64, tp);
        let (manifest, programs) = load_serving_dir(&dirs[0])?;
        let mut engine = Engine::rank(manifest, programs, &mut shard, cache_blocks, comm)?;
        for dir in &dirs[1..] {
            let (smaller, programs) = load_serving_dir(dir)?;
            engine.add_row_programs(&smaller, programs, &mut shard)?;
        }
        Ok(engine)
    });
    let mut engine = MeshEngine::start(tp as usize, build)?;
    if let Some((rank, runs, fault)) = crate::fault::serve_requested()? {
        engine.inject_fault(rank, runs, fault);
    }
    // The kernels stay mapped after their files are gone.
    scratch.close().context("removing the temporary serving directory")?;
    Ok((engine, started.elapsed()))
}

/// The engine of a compiled serving directory: its programs as they are, for its shape and
/// ranks (`shape` and `tp` must be the directory's), each rank reading its own weights file.
fn build_compiled_engine(
    model: &ServedModel,
    compiled: &compiled::CompiledServing,
    shape: ServeShape,
    cache_blocks: u64,
    tp: u64,
) -> Result<(Box<dyn ServingEngine>, Duration)> {
    let started = Instant::now();
    let m = &compiled.manifest;
    if shape != m.shape || tp != m.tp_ranks() {
        bail!(
            "{}: compiled for {} ranks of {:?}; asked to run {tp} of {shape:?}",
            compiled.dir.display(),
            m.tp_ranks(),
            m.shape
        );
    }
    if tp <= 1 {
        let engine = compiled::build_one_rank(model, cache_blocks)?;
        return Ok((Box::new(engine), started.elapsed()));
    }
    let (weights, dir) = (model.weights.clone(), compiled.dir.clone());
    let build: Arc<RankBuilder> = Arc::new(move |rank, comm| {
        let mut read = |name: &str, shape: &[u64]| weights.shard(name, shape, rank as u64, tp);
        let (manifest, programs) = load_serving_dir(&dir)?;
        let buckets = load_row_buckets(&dir, &manifest)?;
        let mut engine = Engine::rank(manifest, programs, &mut read, cache_blocks, comm)?;
        for (bucket, programs) in buckets {
            engine.add_row_programs(&bucket, programs, &mut read)?;
        }
        Ok(engine)
    });
    let mut engine = MeshEngine::start(tp as usize, build)?;
    if let Some((rank, runs, fault)) = crate::fault::serve_requested()? {
        engine.inject_fault(rank, runs, fault);
    }
    Ok((Box::new(engine), started.elapsed()))
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    /// Generation stops before the first occurrence of this text.
    pub stop: Option<String>,
}

/// One sequence's result.
#[derive(Debug, Clone)]
pub struct Generation {
    pub prompt_ids: Vec<u32>,
    pub generated_ids: Vec<u32>,
    pub text: String,
    /// Prefill time (to the first token) and the time of the decode steps after it.
    pub prefill: Duration,
    pub decode: Duration,
}

/// Generates from `prompt` on `engine`, handing each piece of final text to `on_text` as soon
/// as it exists.
pub fn generate(
    engine: &mut dyn ServingEngine,
    model: &ServedModel,
    prompt: &str,
    options: &GenerateOptions,
    on_text: &mut dyn FnMut(&str),
) -> Result<Generation> {
    let prompt_ids = model.tokenizer.encode(prompt)?;
    if prompt_ids.is_empty() {
        bail!("the prompt is empty (no tokens)");
    }
    let seq = engine.add_sequence();
    let result = run_sequence(engine, model, seq, prompt_ids, options, on_text);
    engine.release(seq);
    result
}

fn run_sequence(
    engine: &mut dyn ServingEngine,
    model: &ServedModel,
    seq: SeqId,
    prompt_ids: Vec<u32>,
    options: &GenerateOptions,
    on_text: &mut dyn FnMut(&str),
) -> Result<Generation> {
    let mut sampler = Sampler::new(options.sampling);
    let mut stream = StreamDecoder::default();
    let mut text = String::new();
    let mut generated_ids = Vec::new();
    let started = Instant::now();
    let mut logits = engine.prefill(seq, &prompt_ids)?;
    let prefill = started.elapsed();
    let decode_started = Instant::now();
    let mut emitted = 0;
    while generated_ids.len() < options.max_new_tokens {
        let token = sampler.next(&logits);
        generated_ids.push(token);
        if model.eos == Some(token) {
            break;
        }
        text.push_str(&stream.push(&model.tokenizer, token)?);
        if let Some(stop) = options.stop.as_deref().filter(|s| !s.is_empty()) {
            if let Some(at) = text.find(stop) {
                text.truncate(at);
                break;
            }
            // Hold back a tail that could still become the stop text.
            let mut safe = text.len().saturating_sub(stop.len() - 1).max(emitted);
            while !text.is_char_boundary(safe) {
                safe -= 1;
            }
            on_text(&text[emitted..safe]);
            emitted = safe;
        } else {
            on_text(&text[emitted..]);
            emitted = text.len();
        }
        if generated_ids.len() == options.max_new_tokens {
            break;
        }
        logits = match engine.decode(&[(seq, token)]) {
            Ok(mut next) => next.pop().unwrap_or_default(),
            Err(ServeError::TooLong { .. }) => break,
            Err(e) => return Err(e.into()),
        };
    }
    if options.stop.is_none() {
        text.push_str(&stream.finish(&model.tokenizer)?);
    }
    on_text(&text[emitted.min(text.len())..]);
    Ok(Generation { prompt_ids, generated_ids, text, prefill, decode: decode_started.elapsed() })
}
