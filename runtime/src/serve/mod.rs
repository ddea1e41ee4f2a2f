//! Serving: a language model's compiled programs bound to its weights once, a paged KV cache,
//! and the sequences it holds, for `tessera generate` and for `tessera serve` (the HTTP server
//! with continuous batching in the root package's `http` module).
//!
//! # The engine API
//!
//! [`engine::Engine`] is the one object a scheduler drives; it never blocks on anything but
//! its own compute and never decides what runs:
//! - `Engine::new(manifest, programs, weights)` binds the four programs of a serving directory
//!   ([`tessera_ir::serving`]) to the weights a closure hands out by the model's parameter
//!   names (a Hugging Face checkpoint, a zoo model's seeded weights), the two layer programs
//!   once per layer, and allocates the KV cache: `shape.cache_blocks()` blocks of `kv_block`
//!   tokens. Each weight tensor is converted once into a read-only
//!   [`crate::executor::cpu::SharedInput`] that every binding reading it maps (no copy in the
//!   programs' arenas); `weight_bytes()` is their total, one copy of the model whatever the
//!   number of row counts.
//! - `add_sequence() -> SeqId`, `release(seq)`: a sequence owns a block table (its blocks in
//!   order) and a length; releasing it returns its blocks.
//! - `prefill(seq, tokens)`: appends a prompt or a chunk of one (chunked prefill is calling it
//!   again with the next chunk) and returns the logits after its last token.
//! - `decode(&[(seq, token)])`: one token for each of several sequences of different lengths in
//!   one batched run; returns each one's next logits.
//! - `step(&[(seq, tokens)])`: the general form of both, so one iteration can mix prefill
//!   chunks with decode tokens (Orca/vLLM iteration-level scheduling). Tokens of all items are
//!   packed into the programs' rows (`shape.rows`, the maximum batch, per run; a longer prompt
//!   runs in chunks of that many tokens).
//! - `add_row_programs(manifest, programs, weights)` adds the same programs compiled for fewer
//!   rows, reading the same shared weights; a run then uses the fewest rows that hold its
//!   tokens, so a lone sequence is not padded to `max_batch` rows (`tessera serve` compiles
//!   powers of two up to `max_batch`, and a directory `tessera compile --serve` wrote holds
//!   them: [`load_row_buckets`]); `runs_per_row_count()` says which ran.
//! - A step is checked in full before it changes anything: unknown sequences, token ids outside
//!   the vocabulary, sequences past `max_seq`, and too few free blocks
//!   ([`ServeError::OutOfBlocks`], the scheduler's cue to preempt a sequence and recompute it
//!   later) are refused with the engine unchanged.
//! - A step whose programs fail part-way (after some of its rows ran) is undone: its
//!   sequences get back their lengths and blocks from before it, so the caller can fail the
//!   step's requests and go on with the others ([`engine::Engine::fail_forward_after`] injects
//!   such a failure for tests).
//! - `with_cache_blocks` sizes the cache by blocks rather than by `max_batch` full sequences
//!   (`tessera serve --kv-blocks`).
//! - `kv_usage()`: blocks used and free, bytes per block, live tokens; blocks are allocated as
//!   sequences grow, so each sequence holds at most one partly filled block.
//! - The cache stores keys and values in `shape.kv_dtype` (`--kv-dtype f32|bf16|int8`, int8
//!   with one scale per block, head and key/value); attention reads that type directly and
//!   computes in f32 (an f32 cache on the stored values themselves).
//!
//! # What runs
//!
//! Per run: `embed`, then per layer `layer_in` (norm, projections, rotary embedding), the
//! engine writes each row's key and value into its sequence's block and runs
//! [`attention::KvCache::attend`] (causal, grouped-query, reading keys and values through the
//! block tables), then `layer_out`; finally `head` gives logits. The dense programs are
//! compiled CPU artifacts run by [`crate::executor::cpu`]; rows past the step's tokens are
//! padding (computed and ignored).
//!
//! # Tensor parallelism
//!
//! A manifest with `tensor_parallel` (`--mesh tp=N`) has five programs: `layer_out` is split
//! at its two row-parallel matmuls into `attn_out` (a rank's heads' part of the output
//! projection) and `mlp` (norm, a rank's up-projection columns, its down-projection rows).
//! [`engine::Engine::rank`] binds them to one rank's weight shards, holds that rank's
//! key/value heads in its cache, and after each of the two runs all-reduces the partial sums
//! (added in rank order, so every rank and every run gets the same bits), then adds the
//! residual and the projection's bias itself. [`mesh::MeshEngine`] runs one such engine per
//! thread over [`crate::spmd::LocalCommunicator`] and drives them in lockstep; both are an
//! [`engine::ServingEngine`], the interface `tessera generate` and the server's scheduler use.
//!
//! Map: [`blocks`] (the block allocator: free list and usage counts), [`attention`] (cache
//! layout and paged attention), [`engine`], [`mesh`] (tensor-parallel ranks on threads),
//! [`process`] (tensor-parallel ranks as processes under `mpirun`: rank 0 leads),
//! [`sampling`] (greedy, temperature and top-p), [`tokenizer`] (`tokenizer.json` or bytes;
//! streaming detokenization).

pub mod attention;
pub mod blocks;
pub mod engine;
pub mod mesh;
pub mod process;
pub mod sampling;
pub mod tokenizer;

use crate::executor::cpu::CpuExecutor;
use crate::executor::{load, ArtifactError};
use std::path::Path;
use tessera_ir::serving::{
    ServeManifest, ATTN_OUT, EMBED, HEAD, LAYER_IN, LAYER_OUT, MLP, SERVE_FORMAT_VERSION, SERVE_MANIFEST_FILE,
};

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("{path}: {message}")]
    Manifest { path: String, message: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("weight {name}: {message}")]
    Weight { name: String, message: String },
    #[error("out of KV-cache blocks: the step needs {needed} more, {free} are free")]
    OutOfBlocks { needed: usize, free: usize },
    #[error("sequence {seq} would hold {len} tokens; the programs were compiled for at most {max} (--max-seq)")]
    TooLong { seq: engine::SeqId, len: usize, max: u64 },
    #[error("no sequence {0}")]
    UnknownSequence(engine::SeqId),
    #[error("token id {id} is outside the model's vocabulary of {vocab}")]
    BadToken { id: u32, vocab: u64 },
    #[error("program {program}: {message}")]
    Program { program: String, message: String },
    #[error("tensor-parallel all-reduce: {0}")]
    Collective(#[from] crate::spmd::CommError),
    /// A step failed on tensor-parallel rank `rank` (every rank undid it; the mesh runs on).
    #[error("tensor-parallel rank {rank} failed the step: {message}")]
    RankFailed { rank: usize, message: String },
    /// Tensor-parallel rank `rank` is gone (it panicked, its thread or process ended): the
    /// mesh runs nothing more, and its owner should exit (see [`mesh`]).
    #[error("tensor-parallel rank {rank} {message}; the mesh cannot run another step")]
    RankLost { rank: usize, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl ServeError {
    /// Whether this is a step refused before it ran, alike on every rank (a bad request or
    /// too few free blocks), rather than a failure.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            ServeError::OutOfBlocks { .. }
                | ServeError::TooLong { .. }
                | ServeError::UnknownSequence(_)
                | ServeError::BadToken { .. }
                | ServeError::Invalid(_)
        )
    }

    /// Whether the engine that returned this can run nothing more (its owner should exit).
    pub fn is_fatal(&self) -> bool {
        matches!(self, ServeError::RankLost { .. })
    }
}

/// Reads a serving directory (`serve.json` and the four artifacts, or five with tensor
/// parallelism) written by `tessera compile --serve`, loading and checking each artifact. Each
/// call loads its own executors (each rank of a mesh calls it).
pub fn load_serving_dir(dir: &Path) -> Result<(ServeManifest, engine::Programs), ServeError> {
    let path = dir.join(SERVE_MANIFEST_FILE);
    let manifest_error = |message: String| ServeError::Manifest { path: path.display().to_string(), message };
    let text = std::fs::read_to_string(&path).map_err(|e| manifest_error(e.to_string()))?;
    let manifest: ServeManifest = serde_json::from_str(&text).map_err(|e| manifest_error(e.to_string()))?;
    if manifest.format_version != SERVE_FORMAT_VERSION {
        let found = manifest.format_version;
        return Err(manifest_error(format!("format version {found}; this tessera reads {SERVE_FORMAT_VERSION}")));
    }
    let program =
        |name: &str| -> Result<CpuExecutor, ServeError> { Ok(CpuExecutor::new(load::load(&dir.join(name))?)?) };
    let programs = engine::Programs {
        embed: program(EMBED)?,
        layer_in: program(LAYER_IN)?,
        layer_out: match manifest.tensor_parallel {
            None => engine::LayerOutPrograms::Whole(Box::new(program(LAYER_OUT)?)),
            Some(_) => {
                engine::LayerOutPrograms::Split { attn_out: Box::new(program(ATTN_OUT)?), mlp: Box::new(program(MLP)?) }
            }
        },
        head: program(HEAD)?,
    };
    Ok((manifest, programs))
}

/// The programs of each row bucket of the serving directory `dir` whose manifest is
/// `manifest` (`manifest.row_buckets`, fewest rows first), each checked to be `manifest`'s
/// programs for its row count, for [`engine::Engine::add_row_programs`].
pub fn load_row_buckets(
    dir: &Path,
    manifest: &ServeManifest,
) -> Result<Vec<(ServeManifest, engine::Programs)>, ServeError> {
    let mut buckets = Vec::with_capacity(manifest.row_buckets.len());
    for &rows in &manifest.row_buckets {
        let bucket_dir = dir.join(ServeManifest::row_bucket_dir(rows));
        let (bucket, programs) = load_serving_dir(&bucket_dir)?;
        if rows == 0 || rows >= manifest.shape.rows || bucket != manifest.for_rows(rows) {
            let path = bucket_dir.join(SERVE_MANIFEST_FILE).display().to_string();
            let message =
                format!("not the programs of {} for {rows} rows (of at most {})", dir.display(), manifest.shape.rows);
            return Err(ServeError::Manifest { path, message });
        }
        buckets.push((bucket, programs));
    }
    Ok(buckets)
}
