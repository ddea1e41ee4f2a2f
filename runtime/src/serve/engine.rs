//! The serving engine: the four programs bound to a model's weights, the paged KV cache, and
//! the sequences whose tokens it holds (see the module doc of [`crate::serve`] for the API).

use super::attention::{AttentionRow, KvCache};
use super::blocks::{BlockAllocator, BlockId};
use super::ServeError;
use crate::executor::cpu::{Bound, CpuExecutor, SharedInput};
use crate::executor::{Feed, InputData};
use std::borrow::Cow;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use tessera_ir::artifact::Storage;
use tessera_ir::dtype::DType;
use tessera_ir::serving::{names, Positions, ServeManifest, ServeShape, LAYER_PREFIX};

/// The loaded (not yet bound) serving programs.
pub struct Programs {
    pub embed: CpuExecutor,
    pub layer_in: CpuExecutor,
    pub layer_out: CpuExecutor,
    pub head: CpuExecutor,
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

/// The four programs for one row count, bound to the weights (the layer programs once per
/// layer).
struct RowPrograms {
    rows: usize,
    embed: Bound<CpuExecutor>,
    layer_in: Vec<Bound<Rc<CpuExecutor>>>,
    layer_out: Vec<Bound<Rc<CpuExecutor>>>,
    head: Bound<CpuExecutor>,
}

impl RowPrograms {
    fn bind(
        manifest: &ServeManifest,
        programs: Programs,
        store: &mut WeightStore,
        weights: &mut WeightSource,
    ) -> Result<RowPrograms, ServeError> {
        let same = |name: &str| name.to_string();
        let embed = bind_program(programs.embed, store, weights, &same)?;
        let head = bind_program(programs.head, store, weights, &same)?;
        let (layer_in_program, layer_out_program) = (Rc::new(programs.layer_in), Rc::new(programs.layer_out));
        let mut layer_in = Vec::new();
        let mut layer_out = Vec::new();
        for layer in 0..manifest.model.layers {
            let rename = |name: &str| match name.strip_prefix(LAYER_PREFIX) {
                Some(rest) => format!("l{layer}{rest}"),
                None => name.to_string(),
            };
            for (program, bindings) in [(&layer_in_program, &mut layer_in), (&layer_out_program, &mut layer_out)] {
                bindings.push(bind_program(program.clone(), store, weights, &rename)?);
            }
        }
        Ok(RowPrograms { rows: manifest.shape.rows as usize, embed, layer_in, layer_out, head })
    }
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
    /// Fault injection ([`Engine::fail_forward_after`]): program runs left before one fails.
    forward_fault: Option<usize>,
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
        let m = &manifest.model;
        let shape = manifest.shape;
        if m.heads % m.kv_heads != 0 || shape.kv_block == 0 || shape.rows < shape.max_batch {
            return Err(ServeError::Invalid("serve.json: inconsistent heads or shape".into()));
        }
        let mut store = WeightStore::default();
        let row_programs = vec![RowPrograms::bind(&manifest, programs, &mut store, weights)?];
        let total_blocks = u32::try_from(cache_blocks)
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| ServeError::Invalid(format!("{cache_blocks} KV-cache blocks")))?;
        let cache = KvCache::new(
            m.layers as usize,
            total_blocks as usize,
            shape.kv_block as usize,
            m.kv_heads as usize,
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
        if theirs.model != mine.model || !same_shape || theirs.shape.rows == 0 || theirs.shape.rows > mine.shape.rows {
            let message = format!(
                "programs of {} rows do not fit an engine of {} rows of the same model and limits",
                theirs.shape.rows, mine.shape.rows
            );
            return Err(ServeError::Invalid(message));
        }
        let bound = RowPrograms::bind(manifest, programs, &mut self.weights, weights)?;
        match self.row_programs.binary_search_by_key(&bound.rows, |p| p.rows) {
            Ok(at) => self.row_programs[at] = bound,
            Err(at) => self.row_programs.insert(at, bound),
        }
        Ok(())
    }

    /// Bytes of the weights the programs read: each tensor once, however many row counts (and
    /// layer bindings of the same program) read it.
    pub fn weight_bytes(&self) -> usize {
        self.weights.bytes()
    }

    /// The row counts the engine has programs for, fewest first.
    pub fn row_counts(&self) -> Vec<usize> {
        self.row_programs.iter().map(|p| p.rows).collect()
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

    /// Appends a prompt (or a chunk of it) to `seq`; returns the logits after its last token.
    pub fn prefill(&mut self, seq: SeqId, tokens: &[u32]) -> Result<Vec<f32>, ServeError> {
        let mut logits = self.step(&[(seq, tokens)])?;
        Ok(logits.pop().unwrap_or_default())
    }

    /// Appends one token to each sequence of `batch`; returns each one's next logits.
    pub fn decode(&mut self, batch: &[(SeqId, u32)]) -> Result<Vec<Vec<f32>>, ServeError> {
        let work: Vec<(SeqId, [u32; 1])> = batch.iter().map(|&(seq, token)| (seq, [token])).collect();
        let work: Vec<(SeqId, &[u32])> = work.iter().map(|(seq, t)| (*seq, &t[..])).collect();
        self.step(&work)
    }

    /// The general step both of the above are: appends `tokens` to each sequence of `work` (a
    /// sequence at most once), running the programs over all of their tokens packed into rows,
    /// and returns the logits after each item's last token. Checks everything (sequences,
    /// token ids, lengths, free blocks) before changing anything, so a refused step leaves the
    /// engine as it was; out of blocks is [`ServeError::OutOfBlocks`], for a scheduler to
    /// preempt on.
    pub fn step(&mut self, work: &[(SeqId, &[u32])]) -> Result<Vec<Vec<f32>>, ServeError> {
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
        for chunk in rows.chunks(shape.rows as usize) {
            let chunk_logits = match self.forward(work, chunk) {
                Ok(logits) => logits,
                Err(e) => {
                    self.undo_step(&before);
                    return Err(e);
                }
            };
            for (r, &(item, _, position)) in chunk.iter().enumerate() {
                if position + 1 == self.sequences[&work[item].0].len {
                    logits[item] = chunk_logits[r].clone();
                }
            }
        }
        Ok(logits)
    }

    /// Fault injection for tests of the recovery from a failed step: after `runs` more runs of
    /// the programs, the next one fails as a program error would (once).
    pub fn fail_forward_after(&mut self, runs: usize) {
        self.forward_fault = Some(runs);
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

    /// One run of the programs over `rows` (at most `shape.rows`): returns every row's logits.
    fn forward(&mut self, work: &[(SeqId, &[u32])], rows: &[(usize, u32, usize)]) -> Result<Vec<Vec<f32>>, ServeError> {
        match self.forward_fault {
            Some(0) => {
                self.forward_fault = None;
                let message = "injected failure (Engine::fail_forward_after)".to_string();
                return Err(ServeError::Program { program: "embed".into(), message });
            }
            Some(runs) => self.forward_fault = Some(runs - 1),
            None => {}
        }
        let m = &self.manifest.model;
        let at = self.row_programs.iter().position(|p| p.rows >= rows.len()).unwrap_or(self.row_programs.len() - 1);
        let programs = &mut self.row_programs[at];
        let r = programs.rows;
        let (h, heads, kv, dh, vocab) =
            (m.hidden as usize, m.heads as usize, m.kv_heads as usize, m.head_dim as usize, m.vocab as usize);
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
            let inputs = [
                (names::STREAM.to_string(), f32s(vec![r, h], stream)),
                (names::CONTEXT.to_string(), f32s(vec![r, heads * dh], context.clone())),
            ];
            x = run(&mut programs.layer_out[layer], &inputs, 1)?.remove(0);
        }
        let logits = run(&mut programs.head, &[(names::STREAM.to_string(), f32s(vec![r, h], x))], 1)?.remove(0);
        Ok(logits.chunks(vocab).take(rows.len()).map(<[f32]>::to_vec).collect())
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
