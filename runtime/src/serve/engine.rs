//! The serving engine: the four programs bound to a model's weights, the paged KV cache, and
//! the sequences whose tokens it holds (see the module doc of [`crate::serve`] for the API).

use super::attention::{AttentionRow, KvCache};
use super::blocks::{BlockAllocator, BlockId};
use super::ServeError;
use crate::executor::cpu::{Bound, CpuExecutor, SharedInput};
use crate::executor::{Feed, InputData};
use crate::spmd::Communicator;
use std::borrow::Cow;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera_ir::artifact::Storage;
use tessera_ir::dtype::DType;
use tessera_ir::serving::{names, Positions, ServeManifest, ServeShape, LAYER_PREFIX};
use tessera_ir::tensor::{Buffer, Tensor};

/// The loaded (not yet bound) serving programs.
pub struct Programs {
    pub embed: CpuExecutor,
    pub layer_in: CpuExecutor,
    pub layer_out: LayerOutPrograms,
    pub head: CpuExecutor,
}

/// What runs after attention in a layer (see `tessera_ir::serving::ATTN_OUT`).
pub enum LayerOutPrograms {
    /// `layer_out` (one rank).
    Whole(Box<CpuExecutor>),
    /// `attn_out` and `mlp` (tensor parallelism).
    Split { attn_out: Box<CpuExecutor>, mlp: Box<CpuExecutor> },
}

/// What every serving front end drives: [`Engine`] (one rank) and
/// [`super::mesh::MeshEngine`] (tensor-parallel ranks on threads) alike. The methods are
/// [`Engine`]'s, described there and in the module doc of [`crate::serve`].
pub trait ServingEngine {
    fn manifest(&self) -> &ServeManifest;
    fn add_sequence(&mut self) -> SeqId;
    fn release(&mut self, seq: SeqId);
    fn step(&mut self, work: &[(SeqId, &[u32])]) -> Result<Vec<Vec<f32>>, ServeError>;
    /// KV-cache use; with tensor parallelism a block spans every rank's heads, and
    /// `block_bytes` is summed over the ranks.
    fn kv_usage(&self) -> KvUsage;
    /// Bytes of weights held, summed over the ranks.
    fn weight_bytes(&self) -> usize;
    /// Time spent in tensor-parallel all-reduces (rank 0's, waiting for its peers included);
    /// zero for one rank.
    fn all_reduce_time(&self) -> Duration;

    /// Appends a prompt (or a chunk of it) to `seq`; returns the logits after its last token.
    fn prefill(&mut self, seq: SeqId, tokens: &[u32]) -> Result<Vec<f32>, ServeError> {
        let mut logits = self.step(&[(seq, tokens)])?;
        Ok(logits.pop().unwrap_or_default())
    }

    /// Appends one token to each sequence of `batch`; returns each one's next logits.
    fn decode(&mut self, batch: &[(SeqId, u32)]) -> Result<Vec<Vec<f32>>, ServeError> {
        let work: Vec<(SeqId, [u32; 1])> = batch.iter().map(|&(seq, token)| (seq, [token])).collect();
        let work: Vec<(SeqId, &[u32])> = work.iter().map(|(seq, t)| (*seq, &t[..])).collect();
        self.step(&work)
    }
}

/// A sequence's id in an [`Engine`].
pub type SeqId = u64;

/// Where a weight comes from: called with a parameter's model name (`l0.attn.q.weight`) and
/// the shape the program declares; returns its f32 values.
pub type WeightSource<'a> = dyn FnMut(&str, &[u64]) -> Result<Vec<f32>, String> + 'a;

struct Sequence {
    blocks: Vec<BlockId>,
    /// Tokens whose keys and values are in the cache.
    len: usize,
}

/// How much of the KV cache is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvUsage {
    pub blocks_total: usize,
    pub blocks_used: usize,
    pub block_bytes: usize,
    /// Tokens cached over all live sequences.
    pub live_tokens: usize,
    pub sequences: usize,
}

/// Inputs the engine feeds to the programs, in their storage.
enum HostTensor {
    F32 { shape: Vec<usize>, values: Vec<f32> },
    I64 { shape: Vec<usize>, values: Vec<i64> },
}

impl InputData for HostTensor {
    fn dtype(&self) -> DType {
        match self {
            HostTensor::F32 { .. } => DType::F32,
            HostTensor::I64 { .. } => DType::I64,
        }
    }

    fn shape(&self) -> &[usize] {
        match self {
            HostTensor::F32 { shape, .. } | HostTensor::I64 { shape, .. } => shape,
        }
    }

    fn write_into(&self, storage: Storage, dest: &mut [u8]) -> Result<(), String> {
        let bytes = self.stored_bytes(storage)?;
        if bytes.len() != dest.len() {
            return Err(format!("{} bytes for a buffer of {}", bytes.len(), dest.len()));
        }
        dest.copy_from_slice(&bytes);
        Ok(())
    }

    fn stored_bytes(&self, storage: Storage) -> Result<Cow<'_, [u8]>, String> {
        match (self, storage) {
            (HostTensor::F32 { values, .. }, Storage::F32) => {
                Ok(Cow::Owned(values.iter().flat_map(|x| x.to_le_bytes()).collect()))
            }
            (HostTensor::I64 { values, .. }, Storage::I64) => {
                Ok(Cow::Owned(values.iter().flat_map(|x| x.to_le_bytes()).collect()))
            }
            (_, storage) => Err(format!("the engine feeds f32 and i64, not {storage:?}")),
        }
    }
}

fn f32s(shape: Vec<usize>, values: Vec<f32>) -> HostTensor {
    HostTensor::F32 { shape, values }
}

/// The weights the engine's programs read, each held once and shared read-only by every
/// binding that reads it: the programs of every row count, and prefill and decode (which are
/// runs of the same programs). Keyed by model name (`l0.attn.q.weight`), storage and shape, so
/// only programs that declare the same tensor share it.
#[derive(Default)]
struct WeightStore {
    tensors: HashMap<(String, Storage, Vec<u64>), Arc<SharedInput>>,
}

impl WeightStore {
    /// The parameter inputs of `program`, each named for `weights` through `model_name`, with
    /// their shared values: from the store, or loaded from `weights` the first time.
    fn for_program(
        &mut self,
        program: &tessera_ir::artifact::Program,
        weights: &mut WeightSource,
        model_name: &dyn Fn(&str) -> String,
    ) -> Result<Vec<(String, Arc<SharedInput>)>, ServeError> {
        let mut shared = Vec::new();
        for input in program.inputs.iter().filter(|i| i.parameter) {
            let desc = &program.buffers[input.buffer as usize];
            let name = model_name(&input.name);
            let key = (name.clone(), desc.storage, desc.shape.clone());
            let tensor = match self.tensors.get(&key) {
                Some(tensor) => tensor.clone(),
                None => {
                    let values = weights(&name, &desc.shape)
                        .map_err(|message| ServeError::Weight { name: name.clone(), message })?;
                    let dims: Vec<usize> = desc.shape.iter().map(|&n| n as usize).collect();
                    if values.len() != dims.iter().product::<usize>() {
                        let message = format!("{} values for shape {:?}", values.len(), desc.shape);
                        return Err(ServeError::Weight { name, message });
                    }
                    let tensor = SharedInput::new(&f32s(dims, values), desc.storage)
                        .map_err(|message| ServeError::Weight { name: name.clone(), message })?;
                    let tensor = Arc::new(tensor);
                    self.tensors.insert(key, tensor.clone());
                    tensor
                }
            };
            shared.push((input.name.clone(), tensor));
        }
        Ok(shared)
    }

    fn bytes(&self) -> usize {
        self.tensors.values().map(|t| t.len()).sum()
    }
}

/// Binds `program` to its parameters in `store` (no copy: the binding reads the store's).
fn bind_program<E: std::borrow::Borrow<CpuExecutor>>(
    program: E,
    store: &mut WeightStore,
    weights: &mut WeightSource,
    model_name: &dyn Fn(&str) -> String,
) -> Result<Bound<E>, ServeError> {
    let shared = store.for_program(program.borrow().program(), weights, model_name)?;
    Ok(Bound::with_shared_inputs(program, &[] as &[(String, HostTensor)], &shared)?)
}

/// A layer program bound once per layer.
type PerLayer = Vec<Bound<Rc<CpuExecutor>>>;

/// [`LayerOutPrograms`] bound per layer.
enum LayerOutBindings {
    Whole(PerLayer),
    Split { attn_out: PerLayer, mlp: PerLayer },
}

/// The programs for one row count, bound to the weights (the layer programs once per layer).
struct RowPrograms {
    rows: usize,
    embed: Bound<CpuExecutor>,
    layer_in: PerLayer,
    layer_out: LayerOutBindings,
    /// Absent on tensor-parallel ranks other than 0: rank 0 alone computes logits.
    head: Option<Bound<CpuExecutor>>,
    /// Runs of these programs so far.
    runs: u64,
}

impl RowPrograms {
    fn bind(
        manifest: &ServeManifest,
        programs: Programs,
        store: &mut WeightStore,
        weights: &mut WeightSource,
        with_head: bool,
    ) -> Result<RowPrograms, ServeError> {
        let same = |name: &str| name.to_string();
        let embed = bind_program(programs.embed, store, weights, &same)?;
        let head = if with_head { Some(bind_program(programs.head, store, weights, &same)?) } else { None };
        let per_layer = |program: CpuExecutor, store: &mut WeightStore, weights: &mut WeightSource| {
            let program = Rc::new(program);
            (0..manifest.model.layers)
                .map(|layer| {
                    let rename = |name: &str| match name.strip_prefix(LAYER_PREFIX) {
                        Some(rest) => format!("l{layer}{rest}"),
                        None => name.to_string(),
                    };
                    bind_program(program.clone(), store, weights, &rename)
                })
                .collect::<Result<PerLayer, ServeError>>()
        };
        let layer_in = per_layer(programs.layer_in, store, weights)?;
        let layer_out = match programs.layer_out {
            LayerOutPrograms::Whole(program) => LayerOutBindings::Whole(per_layer(*program, store, weights)?),
            LayerOutPrograms::Split { attn_out, mlp } => LayerOutBindings::Split {
                attn_out: per_layer(*attn_out, store, weights)?,
                mlp: per_layer(*mlp, store, weights)?,
            },
        };
        Ok(RowPrograms { rows: manifest.shape.rows as usize, embed, layer_in, layer_out, head, runs: 0 })
    }
}

/// A tensor-parallel rank's link to its peers.
struct RankLink {
    comm: Box<dyn Communicator>,
    /// Per layer, the attention output and MLP down projections' biases (`[hidden]`), added
    /// once after the all-reduce; empty for a model without them.
    row_parallel_bias: Vec<(Vec<f32>, Vec<f32>)>,
    /// Time spent in all-reduces, waiting for the peers included.
    all_reduce_time: Duration,
    /// Whether a program failure is announced to the peers at their next all-reduce
    /// ([`Engine::announce_failures`]) instead of aborting the communicator.
    announce_failures: bool,
}

impl RankLink {
    /// The sum over all ranks of each rank's `partial`, added in rank order (so every rank
    /// gets the same bits, and the same bits run after run).
    fn all_reduce(&mut self, partial: Vec<f32>) -> Result<Vec<f32>, ServeError> {
        let started = Instant::now();
        let group: Vec<usize> = (0..self.comm.size()).collect();
        let all = self.comm.exchange(&group, &Tensor::from_f32(vec![partial.len()], partial))?;
        // A failure announced in place of a partial ([`RankLink::announce_failure`]): every
        // rank sees the same announcements at the same all-reduce, so all stop here alike.
        if let Some((rank, t)) = all.iter().enumerate().find(|(_, t)| matches!(t.data, Buffer::Int(_))) {
            let Buffer::Int(bytes) = &t.data else { unreachable!("matched above") };
            let message = String::from_utf8_lossy(&bytes.iter().map(|&b| b as u8).collect::<Vec<u8>>()).into_owned();
            self.all_reduce_time += started.elapsed();
            return Err(ServeError::RankFailed { rank, message });
        }
        let mut parts = all.iter().map(|t| match &t.data {
            Buffer::F32(values) if values.len() == t.len() => Ok(&values[..]),
            _ => Err(ServeError::Invalid("an all-reduce operand is not f32".into())),
        });
        let mut sum =
            parts.next().ok_or_else(|| ServeError::Invalid("an empty tensor-parallel group".into()))??.to_vec();
        for part in parts {
            let part = part?;
            if part.len() != sum.len() {
                return Err(ServeError::Invalid("all-reduce operands of different lengths".into()));
            }
            sum.iter_mut().zip(part).for_each(|(s, p)| *s += p);
        }
        self.all_reduce_time += started.elapsed();
        Ok(sum)
    }
}

impl RankLink {
    /// Joins the peers' next all-reduce with `error`'s text (UTF-8 bytes as an i64 tensor) in
    /// place of this rank's partial sum, so that every rank returns
    /// [`ServeError::RankFailed`] from it and undoes the step.
    fn announce_failure(&mut self, error: &ServeError) -> Result<(), ServeError> {
        let group: Vec<usize> = (0..self.comm.size()).collect();
        let bytes: Vec<i64> = error.to_string().bytes().map(i64::from).collect();
        self.comm.exchange(&group, &Tensor::from_i64(DType::I64, vec![bytes.len()], bytes))?;
        Ok(())
    }
}

/// `stream + (sum + bias)` row by row (`bias` `[hidden]`, or empty for none): the residual of a
/// row-parallel projection, added as `LAYER_OUT` adds it.
fn add_residual(stream: &mut [f32], sum: &[f32], bias: &[f32]) {
    if bias.is_empty() {
        stream.iter_mut().zip(sum).for_each(|(x, s)| *x += s);
        return;
    }
    for (x_row, s_row) in stream.chunks_mut(bias.len()).zip(sum.chunks(bias.len())) {
        for ((x, s), b) in x_row.iter_mut().zip(s_row).zip(bias) {
            *x += s + b;
        }
    }
}

/// How an injected fault ([`Engine::inject_fault`]) fails a program run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The run returns an error, as a failing kernel would: the step is undone.
    Error,
    /// The run panics, as a bug would: nothing is undone.
    Panic,
    /// The run's head fails (after its all-reduces, when the peers have done their part of
    /// the run): the step is undone on every rank.
    HeadError,
}

/// The serving engine: see [`crate::serve`].
pub struct Engine {
    manifest: ServeManifest,
    /// The programs by row count, fewest rows first; the last has `manifest.shape.rows`.
    row_programs: Vec<RowPrograms>,
    /// The one copy of the weights that all of `row_programs` read.
    weights: WeightStore,
    cache: KvCache,
    blocks: BlockAllocator,
    sequences: HashMap<SeqId, Sequence>,
    next_seq: SeqId,
    /// `cos` and `sin` per position, `[max_seq, head_dim / 2]` (rotary models).
    rotary: Option<(Vec<f32>, Vec<f32>)>,
    /// Fault injection ([`Engine::inject_fault`]): program runs left before one fails, and how.
    forward_fault: Option<(usize, Fault)>,
    /// Tensor parallelism: this rank's link to the others (`None` for one rank).
    rank: Option<RankLink>,
    /// Each sequence's `(seq, len, blocks)` from before the last step, if it succeeded
    /// ([`Engine::undo_last_step`]).
    last_step: Option<Vec<(SeqId, usize, usize)>>,
}

impl Engine {
    /// Binds the programs to the weights `weights` gives (layer programs once per layer) and
    /// allocates the KV cache the manifest's shape asks for.
    pub fn new(manifest: ServeManifest, programs: Programs, weights: &mut WeightSource) -> Result<Engine, ServeError> {
        let blocks = manifest.shape.cache_blocks();
        Engine::with_cache_blocks(manifest, programs, weights, blocks)
    }

    /// [`Engine::new`] with a KV cache of `cache_blocks` blocks instead of the shape's
    /// `cache_blocks()` (a server sized for its memory rather than for `max_batch` sequences
    /// of `max_seq` tokens).
    pub fn with_cache_blocks(
        manifest: ServeManifest,
        programs: Programs,
        weights: &mut WeightSource,
        cache_blocks: u64,
    ) -> Result<Engine, ServeError> {
        Engine::build(manifest, programs, weights, cache_blocks, None)
    }

    /// One rank of a tensor-parallel engine ([`Engine::with_cache_blocks`] for the programs of
    /// a manifest with `tensor_parallel`): `weights` hands out this rank's shards (by the
    /// programs' shapes) and the whole row-parallel biases; `comm` joins it to the other ranks,
    /// which must be driven through the same calls in the same order (see
    /// [`super::mesh::MeshEngine`]). Its cache holds its own key/value heads; its `step`
    /// returns logits on rank 0 and empty vectors elsewhere.
    pub fn rank(
        manifest: ServeManifest,
        programs: Programs,
        weights: &mut WeightSource,
        cache_blocks: u64,
        comm: Box<dyn Communicator>,
    ) -> Result<Engine, ServeError> {
        Engine::build(manifest, programs, weights, cache_blocks, Some(comm))
    }

    fn build(
        manifest: ServeManifest,
        programs: Programs,
        weights: &mut WeightSource,
        cache_blocks: u64,
        comm: Option<Box<dyn Communicator>>,
    ) -> Result<Engine, ServeError> {
        let m = &manifest.model;
        let shape = manifest.shape;
        if m.heads % m.kv_heads != 0 || shape.kv_block == 0 || shape.rows < shape.max_batch {
            return Err(ServeError::Invalid("serve.json: inconsistent heads or shape".into()));
        }
        let ranks = manifest.tp_ranks();
        let world = comm.as_ref().map_or(1, |c| c.size() as u64);
        if ranks != world || m.heads % ranks != 0 || m.kv_heads % ranks != 0 {
            let message = format!(
                "programs for {ranks} tensor-parallel ranks of {} heads and {} key/value heads, run on {world}",
                m.heads, m.kv_heads
            );
            return Err(ServeError::Invalid(message));
        }
        let split = matches!(programs.layer_out, LayerOutPrograms::Split { .. });
        if split != (ranks > 1) {
            return Err(ServeError::Invalid(format!("{ranks} ranks need the programs of {ranks} ranks")));
        }
        let with_head = comm.as_ref().is_none_or(|c| c.rank() == 0);
        let mut store = WeightStore::default();
        let row_programs = vec![RowPrograms::bind(&manifest, programs, &mut store, weights, with_head)?];
        let rank = match comm {
            None => None,
            Some(comm) => {
                let hidden = m.hidden;
                let mut bias = |name: String| {
                    weights(&name, &[hidden]).map_err(|message| ServeError::Weight { name: name.clone(), message })
                };
                let row_parallel_bias = match manifest.tensor_parallel {
                    Some(tp) if tp.row_parallel_bias => (0..m.layers)
                        .map(|l| Ok((bias(format!("l{l}.attn.out.bias"))?, bias(format!("l{l}.mlp.out.bias"))?)))
                        .collect::<Result<Vec<_>, ServeError>>()?,
                    _ => Vec::new(),
                };
                Some(RankLink { comm, row_parallel_bias, all_reduce_time: Duration::ZERO, announce_failures: false })
            }
        };
        let total_blocks = u32::try_from(cache_blocks)
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| ServeError::Invalid(format!("{cache_blocks} KV-cache blocks")))?;
        let cache = KvCache::new(
            m.layers as usize,
            total_blocks as usize,
            shape.kv_block as usize,
            (m.kv_heads / ranks) as usize,
            m.head_dim as usize,
            shape.kv_dtype,
        );
        let rotary = match &m.positions {
            Positions::Learned => None,
            Positions::Rotary(rope) => {
                let inverse = rope.inverse_frequencies(m.head_dim);
                let angles: Vec<f32> =
                    (0..shape.max_seq).flat_map(|p| inverse.iter().map(move |f| p as f32 * f)).collect();
                Some((angles.iter().map(|a| a.cos()).collect(), angles.iter().map(|a| a.sin()).collect()))
            }
        };
        Ok(Engine {
            manifest,
            row_programs,
            weights: store,
            cache,
            blocks: BlockAllocator::new(total_blocks),
            sequences: HashMap::new(),
            next_seq: 0,
            rotary,
            forward_fault: None,
            rank,
            last_step: None,
        })
    }

    pub fn manifest(&self) -> &ServeManifest {
        &self.manifest
    }

    /// Adds the programs of the same model compiled for fewer rows (`manifest` differs from
    /// the engine's only in `shape.rows`), reading the engine's one copy of the weights
    /// (`weights` is asked only for a tensor no program read before): a run of the programs
    /// then uses the fewest rows that hold its tokens, so a small batch is not padded to
    /// `max_batch` rows (as vLLM captures CUDA graphs per batch size bucket).
    pub fn add_row_programs(
        &mut self,
        manifest: &ServeManifest,
        programs: Programs,
        weights: &mut WeightSource,
    ) -> Result<(), ServeError> {
        let (mine, theirs) = (&self.manifest, manifest);
        let same_shape = ServeShape { rows: mine.shape.rows, ..theirs.shape } == mine.shape;
        if theirs.model != mine.model
            || theirs.tensor_parallel != mine.tensor_parallel
            || !same_shape
            || theirs.shape.rows == 0
            || theirs.shape.rows > mine.shape.rows
        {
            let message = format!(
                "programs of {} rows do not fit an engine of {} rows of the same model and limits",
                theirs.shape.rows, mine.shape.rows
            );
            return Err(ServeError::Invalid(message));
        }
        let with_head = self.rank.as_ref().is_none_or(|r| r.comm.rank() == 0);
        let bound = RowPrograms::bind(manifest, programs, &mut self.weights, weights, with_head)?;
        match self.row_programs.binary_search_by_key(&bound.rows, |p| p.rows) {
            Ok(at) => self.row_programs[at] = bound,
            Err(at) => self.row_programs.insert(at, bound),
        }
        Ok(())
    }

    /// Bytes of the weights the programs read: each tensor once, however many row counts (and
    /// layer bindings of the same program) read it.
    pub fn weight_bytes(&self) -> usize {
        let biases = self.rank.as_ref().map_or(0, |r| {
            r.row_parallel_bias.iter().map(|(a, m)| (a.len() + m.len()) * std::mem::size_of::<f32>()).sum()
        });
        self.weights.bytes() + biases
    }

    /// The row counts the engine has programs for, fewest first.
    pub fn row_counts(&self) -> Vec<usize> {
        self.row_programs.iter().map(|p| p.rows).collect()
    }

    /// Each row count the engine has programs for, fewest first, with how many runs of the
    /// programs used it: a run uses the fewest rows that hold its tokens.
    pub fn runs_per_row_count(&self) -> Vec<(usize, u64)> {
        self.row_programs.iter().map(|p| (p.rows, p.runs)).collect()
    }

    /// A new, empty sequence.
    pub fn add_sequence(&mut self) -> SeqId {
        let id = self.next_seq;
        self.next_seq += 1;
        self.sequences.insert(id, Sequence { blocks: Vec::new(), len: 0 });
        id
    }

    /// Drops a sequence and lets go of its blocks.
    pub fn release(&mut self, seq: SeqId) {
        self.last_step = None;
        if let Some(s) = self.sequences.remove(&seq) {
            s.blocks.into_iter().for_each(|b| self.blocks.release(b));
        }
    }

    /// Tokens cached for `seq`.
    pub fn sequence_len(&self, seq: SeqId) -> Option<usize> {
        self.sequences.get(&seq).map(|s| s.len)
    }

    pub fn kv_usage(&self) -> KvUsage {
        KvUsage {
            blocks_total: self.blocks.total(),
            blocks_used: self.blocks.used_count(),
            block_bytes: self.cache.block_bytes(),
            live_tokens: self.sequences.values().map(|s| s.len).sum(),
            sequences: self.sequences.len(),
        }
    }

    /// Time this rank spent in all-reduces (zero for one rank).
    pub fn all_reduce_time(&self) -> Duration {
        self.rank.as_ref().map_or(Duration::ZERO, |r| r.all_reduce_time)
    }

    /// The general step both of the above are: appends `tokens` to each sequence of `work` (a
    /// sequence at most once), running the programs over all of their tokens packed into rows,
    /// and returns the logits after each item's last token. Checks everything (sequences,
    /// token ids, lengths, free blocks) before changing anything, so a refused step leaves the
    /// engine as it was; out of blocks is [`ServeError::OutOfBlocks`], for a scheduler to
    /// preempt on.
    pub fn step(&mut self, work: &[(SeqId, &[u32])]) -> Result<Vec<Vec<f32>>, ServeError> {
        self.last_step = None;
        let shape = self.manifest.shape;
        let vocab = self.manifest.model.vocab;
        let mut needed = 0;
        for (i, &(seq, tokens)) in work.iter().enumerate() {
            let s = self.sequences.get(&seq).ok_or(ServeError::UnknownSequence(seq))?;
            if work[..i].iter().any(|&(other, _)| other == seq) {
                return Err(ServeError::Invalid(format!("sequence {seq} appears twice in one step")));
            }
            if tokens.is_empty() {
                return Err(ServeError::Invalid(format!("no tokens for sequence {seq}")));
            }
            if let Some(&id) = tokens.iter().find(|&&t| u64::from(t) >= vocab) {
                return Err(ServeError::BadToken { id, vocab });
            }
            let len = s.len + tokens.len();
            if len as u64 > shape.max_seq {
                return Err(ServeError::TooLong { seq, len, max: shape.max_seq });
            }
            needed += len.div_ceil(shape.kv_block as usize) - s.blocks.len();
        }
        if needed > self.blocks.free_count() {
            return Err(ServeError::OutOfBlocks { needed, free: self.blocks.free_count() });
        }
        // Rows: (item, token, position), packed item by item. `before` keeps each sequence's
        // length and block count, so a program failure mid-step can undo the step.
        let mut rows = Vec::new();
        let mut before = Vec::with_capacity(work.len());
        for (item, &(seq, tokens)) in work.iter().enumerate() {
            let s = self.sequences.get_mut(&seq).ok_or(ServeError::UnknownSequence(seq))?;
            before.push((seq, s.len, s.blocks.len()));
            while s.blocks.len() * (shape.kv_block as usize) < s.len + tokens.len() {
                let block = self.blocks.allocate().ok_or(ServeError::OutOfBlocks { needed, free: 0 })?;
                s.blocks.push(block);
            }
            rows.extend(tokens.iter().enumerate().map(|(j, &t)| (item, t, s.len + j)));
            s.len += tokens.len();
        }
        let mut logits = vec![Vec::new(); work.len()];
        let chunks = rows.len().div_ceil(shape.rows as usize);
        for (chunk_index, chunk) in rows.chunks(shape.rows as usize).enumerate() {
            // Whether the run got past its all-reduces (to the head, rank 0's alone).
            let mut in_head = false;
            let result = match self.forward_fault {
                // Before any collective (but `HeadError`), so injected on every rank it fails
                // them all alike.
                Some((0, fault)) => {
                    self.forward_fault = None;
                    let message = format!("injected failure (Engine::inject_fault){}", self.rank_suffix());
                    match fault {
                        Fault::Panic => panic!("{message}"),
                        Fault::Error => Err(ServeError::Program { program: "embed".into(), message }),
                        Fault::HeadError => self.forward(work, chunk).and_then(|_| {
                            in_head = true;
                            Err(ServeError::Program { program: "head".into(), message })
                        }),
                    }
                }
                fault => {
                    self.forward_fault = fault.map(|(runs, kind)| (runs - 1, kind));
                    match self.forward(work, chunk) {
                        Ok((at, stream)) => {
                            in_head = true;
                            self.head(at, stream, chunk.len())
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            if let (Err(e), Some(rank)) = (&result, &mut self.rank) {
                match e {
                    // Every rank saw the announcement at the same all-reduce: nothing pends.
                    ServeError::RankFailed { .. } if rank.announce_failures => {}
                    // The communicator itself failed: the ranks can no longer agree.
                    ServeError::Collective(_) | ServeError::RankFailed { .. } | ServeError::RankLost { .. } => {
                        rank.comm.abort(&e.to_string())
                    }
                    // The peers wait at their next all-reduce: this run's, or the next run's
                    // after a failure in the head (rank 0's, past the run's all-reduces); after
                    // the step's last run they have finished it and the leader undoes it
                    // ([`Engine::undo_last_step`]).
                    _ if rank.announce_failures => {
                        if !in_head || chunk_index + 1 < chunks {
                            if let Err(lost) = rank.announce_failure(e) {
                                rank.comm.abort(&format!("{e} (and announcing it failed: {lost})"));
                            }
                        }
                    }
                    // The peers may be waiting for this rank's part of an all-reduce.
                    _ => rank.comm.abort(&e.to_string()),
                }
            }
            let chunk_logits = match result {
                Ok(logits) => logits,
                Err(e) => {
                    self.undo_step(&before);
                    return Err(e);
                }
            };
            for (r, &(item, _, position)) in chunk.iter().enumerate() {
                if position + 1 == self.sequences[&work[item].0].len {
                    logits[item] = chunk_logits.get(r).cloned().unwrap_or_default();
                }
            }
        }
        self.last_step = Some(before);
        Ok(logits)
    }

    /// Undoes the last step if it succeeded (and nothing changed the sequences since): what a
    /// tensor-parallel rank does when a peer failed after this rank's part of the step was
    /// done (rank 0's head, past the last all-reduce). A no-op after a failed or refused step.
    pub fn undo_last_step(&mut self) {
        if let Some(before) = self.last_step.take() {
            self.undo_step(&before);
        }
    }

    /// Ranks as processes (`mpirun`): a step that fails on this rank joins its peers' next
    /// all-reduce with the error instead of aborting the communicator (which for MPI ends the
    /// job), so every rank undoes the step and the ranks serve on; see [`super::process`].
    pub fn announce_failures(&mut self) {
        if let Some(rank) = &mut self.rank {
            rank.announce_failures = true;
        }
    }

    /// Fault injection for tests of the recovery from a failed step: after `runs` more runs of
    /// the programs, the next one fails as a program error would (once).
    pub fn fail_forward_after(&mut self, runs: usize) {
        self.inject_fault(runs, Fault::Error);
    }

    /// Fault injection for tests: after `runs` more runs of the programs, the next one fails
    /// (once) the way `fault` says, before it runs anything (so before its collectives).
    pub fn inject_fault(&mut self, runs: usize, fault: Fault) {
        self.forward_fault = Some((runs, fault));
    }

    /// " on tensor-parallel rank R", or nothing for one rank: for messages.
    fn rank_suffix(&self) -> String {
        self.rank.as_ref().map(|r| format!(" on tensor-parallel rank {}", r.comm.rank())).unwrap_or_default()
    }

    /// Puts the sequences of a failed step back to their `(seq, len, blocks)` from before it:
    /// the tokens it appended are gone (their cache entries are garbage past `len`, overwritten
    /// by the next step) and the blocks it allocated are free again.
    fn undo_step(&mut self, before: &[(SeqId, usize, usize)]) {
        for &(seq, len, n_blocks) in before {
            if let Some(s) = self.sequences.get_mut(&seq) {
                s.len = len;
                s.blocks.drain(n_blocks..).for_each(|b| self.blocks.release(b));
            }
        }
    }

    /// One run of the programs but the head over `rows` (at most `shape.rows`): returns the
    /// index of the row programs it ran and the final residual stream of their rows.
    fn forward(
        &mut self,
        work: &[(SeqId, &[u32])],
        rows: &[(usize, u32, usize)],
    ) -> Result<(usize, Vec<f32>), ServeError> {
        let m = &self.manifest.model;
        let at = self.row_programs.iter().position(|p| p.rows >= rows.len()).unwrap_or(self.row_programs.len() - 1);
        let programs = &mut self.row_programs[at];
        programs.runs += 1;
        let r = programs.rows;
        let ranks = self.manifest.tp_ranks() as usize;
        // This rank's heads (all of them for one rank).
        let (h, heads, kv, dh) =
            (m.hidden as usize, m.heads as usize / ranks, m.kv_heads as usize / ranks, m.head_dim as usize);
        let mut tokens = vec![0i64; r];
        let mut positions = vec![0i64; r];
        for (i, &(_, token, position)) in rows.iter().enumerate() {
            tokens[i] = i64::from(token);
            positions[i] = position as i64;
        }
        let mut inputs = vec![(names::TOKENS.to_string(), HostTensor::I64 { shape: vec![r], values: tokens })];
        if matches!(m.positions, Positions::Learned) {
            inputs.push((names::POSITIONS.to_string(), HostTensor::I64 { shape: vec![r], values: positions.clone() }));
        }
        let mut x = run(&mut programs.embed, &inputs, 1)?.remove(0);
        let half = dh / 2;
        let (cos, sin) = match &self.rotary {
            None => (None, None),
            Some((cos, sin)) => {
                let table = |t: &[f32]| -> Vec<f32> {
                    positions.iter().flat_map(|&p| t[p as usize * half..(p as usize + 1) * half].to_vec()).collect()
                };
                (Some(table(cos)), Some(table(sin)))
            }
        };
        let tables: Vec<&[BlockId]> =
            rows.iter().map(|&(item, _, _)| &self.sequences[&work[item].0].blocks[..]).collect();
        let attention_rows: Vec<AttentionRow> =
            rows.iter().zip(&tables).map(|(&(_, _, position), blocks)| AttentionRow { blocks, position }).collect();
        let mut context = vec![0.0f32; r * heads * dh];
        for layer in 0..programs.layer_in.len() {
            let mut inputs = vec![(names::STREAM.to_string(), f32s(vec![r, h], x))];
            if let (Some(cos), Some(sin)) = (&cos, &sin) {
                inputs.push((names::COS.to_string(), f32s(vec![r, half], cos.clone())));
                inputs.push((names::SIN.to_string(), f32s(vec![r, half], sin.clone())));
            }
            let qkv = run(&mut programs.layer_in[layer], &inputs, 3)?;
            let HostTensor::F32 { values: stream, .. } = inputs.swap_remove(0).1 else {
                unreachable!("the stream is f32")
            };
            for (i, row) in attention_rows.iter().enumerate() {
                let (k, v) = (&qkv[1][i * kv * dh..(i + 1) * kv * dh], &qkv[2][i * kv * dh..(i + 1) * kv * dh]);
                self.cache.write(layer, row.blocks, row.position, k, v);
            }
            self.cache.attend(layer, heads, &qkv[0], &attention_rows, &mut context);
            let context_input = (names::CONTEXT.to_string(), f32s(vec![r, heads * dh], context.clone()));
            x = match (&mut programs.layer_out, &mut self.rank) {
                (LayerOutBindings::Whole(layer_out), _) => {
                    let inputs = [(names::STREAM.to_string(), f32s(vec![r, h], stream)), context_input];
                    run(&mut layer_out[layer], &inputs, 1)?.remove(0)
                }
                (LayerOutBindings::Split { attn_out, mlp }, Some(rank)) => {
                    let partial = run(&mut attn_out[layer], &[context_input], 1)?.remove(0);
                    let sum = rank.all_reduce(partial)?;
                    let mut stream = stream;
                    add_residual(&mut stream, &sum, rank.row_parallel_bias.get(layer).map_or(&[], |b| &b.0));
                    let inputs = [(names::STREAM.to_string(), f32s(vec![r, h], stream))];
                    let partial = run(&mut mlp[layer], &inputs, 1)?.remove(0);
                    let [(_, HostTensor::F32 { values: mut stream, .. })] = inputs else {
                        unreachable!("the stream is f32")
                    };
                    let sum = rank.all_reduce(partial)?;
                    add_residual(&mut stream, &sum, rank.row_parallel_bias.get(layer).map_or(&[], |b| &b.1));
                    stream
                }
                (LayerOutBindings::Split { .. }, None) => {
                    return Err(ServeError::Invalid("tensor-parallel programs without a mesh".into()))
                }
            };
        }
        Ok((at, x))
    }

    /// The head of row programs `at` over `stream`: the logits of its first `rows` rows. On
    /// tensor-parallel ranks other than 0 the result is empty (no head).
    fn head(&mut self, at: usize, stream: Vec<f32>, rows: usize) -> Result<Vec<Vec<f32>>, ServeError> {
        let programs = &mut self.row_programs[at];
        let Some(head) = &mut programs.head else {
            return Ok(Vec::new());
        };
        let (r, h, vocab) = (programs.rows, self.manifest.model.hidden as usize, self.manifest.model.vocab as usize);
        let logits = run(head, &[(names::STREAM.to_string(), f32s(vec![r, h], stream))], 1)?.remove(0);
        Ok(logits.chunks(vocab).take(rows).map(<[f32]>::to_vec).collect())
    }
}

impl ServingEngine for Engine {
    fn manifest(&self) -> &ServeManifest {
        Engine::manifest(self)
    }

    fn add_sequence(&mut self) -> SeqId {
        Engine::add_sequence(self)
    }

    fn release(&mut self, seq: SeqId) {
        Engine::release(self, seq)
    }

    fn step(&mut self, work: &[(SeqId, &[u32])]) -> Result<Vec<Vec<f32>>, ServeError> {
        Engine::step(self, work)
    }

    fn kv_usage(&self) -> KvUsage {
        Engine::kv_usage(self)
    }

    fn weight_bytes(&self) -> usize {
        Engine::weight_bytes(self)
    }

    fn all_reduce_time(&self) -> Duration {
        Engine::all_reduce_time(self)
    }
}

/// Runs a bound program and returns its `outputs` f32 outputs.
fn run<E: std::borrow::Borrow<CpuExecutor>>(
    bound: &mut Bound<E>,
    inputs: &[(String, HostTensor)],
    outputs: usize,
) -> Result<Vec<Vec<f32>>, ServeError> {
    let program = bound.executor().program().name.clone();
    let results = bound.run_stored(inputs, None)?;
    if results.len() != outputs {
        let message = format!("{} outputs, the engine expects {outputs}", results.len());
        return Err(ServeError::Program { program, message });
    }
    results
        .into_iter()
        .map(|(name, feed)| match feed {
            Feed::Stored { dtype: DType::F32, data, start, .. } => {
                Ok(data[start..].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
            }
            _ => Err(ServeError::Program { program: program.clone(), message: format!("output {name} is not f32") }),
        })
        .collect()
}
