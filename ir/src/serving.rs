//! The serving programs' format: what `tessera compile MODEL --serve` writes beside its four
//! artifacts, and what the serving engine (`tessera_runtime::serve`) needs to run them.
//!
//! A transformer is served as four token-parallel programs over one fixed number of rows
//! (tokens per run): [`EMBED`] (token ids, and positions for a learned table, to the residual
//! stream), [`LAYER_IN`] (norm, Q/K/V projections and rotary embedding of one layer),
//! [`LAYER_OUT`] (output projection, residual, norm and MLP of one layer) and [`HEAD`] (final
//! norm and logits). Between `LAYER_IN` and `LAYER_OUT` the engine runs attention over the
//! paged KV cache itself: it is the one part whose shape depends on each sequence's length.
//! The layer programs are compiled once and bound once per layer (each binding holds that
//! layer's weights), and a row is any token of any sequence, so the same programs run a prompt
//! chunk (prefill) and one token of each of several sequences (decode).
//!
//! This module is the format (serde) and the model facts that are not in the programs (head
//! counts, the rotary frequencies); it depends on nothing else in the crate.

use serde::{Deserialize, Serialize};

/// Format version of [`ServeManifest`]; bumped when a field changes meaning.
pub const SERVE_FORMAT_VERSION: u32 = 1;
/// The file in a serving directory that holds the [`ServeManifest`].
pub const SERVE_MANIFEST_FILE: &str = "serve.json";
/// Program names: each is an artifact directory of that name in a serving directory.
pub const EMBED: &str = "embed";
pub const LAYER_IN: &str = "layer_in";
pub const LAYER_OUT: &str = "layer_out";
pub const HEAD: &str = "head";
/// The four programs, in the order a forward pass runs them.
pub const PROGRAMS: [&str; 4] = [EMBED, LAYER_IN, LAYER_OUT, HEAD];
/// Tensor-parallel programs (a manifest with [`TensorParallel`]) split [`LAYER_OUT`] at its
/// two row-parallel matmuls, where the ranks' partial sums are all-reduced: [`ATTN_OUT`] is
/// this rank's heads' part of the attention output projection, [`MLP`] this rank's part of the
/// MLP (norm, its columns of the up projection, its rows of the down projection). The engine
/// sums the partials over the ranks and adds the residual (and the projection's bias) itself.
pub const ATTN_OUT: &str = "attn_out";
pub const MLP: &str = "mlp";
/// The programs of a tensor-parallel serving directory, in the order a forward pass runs them.
pub const TP_PROGRAMS: [&str; 5] = [EMBED, LAYER_IN, ATTN_OUT, MLP, HEAD];
/// The parameter prefix of a layer's weights inside the layer programs; the model's names
/// (`l3.attn.q.weight`) replace `l3` by it (`layer.attn.q.weight`).
pub const LAYER_PREFIX: &str = "layer";

/// Input and output names of the programs (the engine binds them by name).
pub mod names {
    /// `EMBED` input: token ids `i64 [rows]`.
    pub const TOKENS: &str = "tokens";
    /// `EMBED` input (learned positions only): positions `i64 [rows]`.
    pub const POSITIONS: &str = "positions";
    /// The residual stream `[rows, hidden]`: `LAYER_IN`/`LAYER_OUT`/`HEAD` input.
    pub const STREAM: &str = "x";
    /// `LAYER_IN` inputs (rotary models): `[rows, head_dim / 2]`, the angles of each row's position.
    pub const COS: &str = "cos";
    pub const SIN: &str = "sin";
    /// `LAYER_OUT` input: attention's output `[rows, heads * head_dim]`, heads concatenated
    /// (`ATTN_OUT`'s: this rank's heads).
    pub const CONTEXT: &str = "context";
}

/// How a rotary model scales its frequencies for long contexts (Hugging Face's `rope_scaling`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor` (every frequency divided by it).
    Linear {
        factor: f64,
    },
    /// Llama 3.1: low frequencies divided by `factor`, high ones kept, a smooth ramp between.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_positions: f64,
    },
}

/// Rotary embedding parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rope {
    pub theta: f64,
    pub scaling: RopeScaling,
}

impl Rope {
    /// The angle per position of each of the `head_dim / 2` pairs, as Hugging Face computes them
    /// (`theta ** (-2i / head_dim)`, then scaled), in f32 like its `inv_freq` buffer.
    pub fn inverse_frequencies(&self, head_dim: u64) -> Vec<f32> {
        let half = head_dim / 2;
        // The base frequencies in f32 as torch computes `1 / theta ** (arange(0, d, 2) / d)`.
        let base: Vec<f32> = (0..half)
            .map(|i| {
                let exponent = (2 * i) as f32 / head_dim as f32;
                1.0 / (self.theta as f32).powf(exponent)
            })
            .collect();
        match self.scaling {
            RopeScaling::None => base,
            RopeScaling::Linear { factor } => base.iter().map(|f| f / factor as f32).collect(),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_positions } => {
                let low_wavelen = original_max_positions / low_freq_factor;
                let high_wavelen = original_max_positions / high_freq_factor;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f as f64;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor as f32
                        } else {
                            let smooth = (original_max_positions / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            ((1.0 - smooth) * f as f64 / factor + smooth * f as f64) as f32
                        }
                    })
                    .collect()
            }
        }
    }
}

/// How positions enter the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Positions {
    /// A learned table of `max_positions` rows added to the token embedding (GPT-2).
    Learned,
    /// Rotary embedding of queries and keys (Llama).
    Rotary(Rope),
}

/// The model facts the engine needs beyond its programs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServeModel {
    pub name: String,
    pub layers: u64,
    pub hidden: u64,
    pub heads: u64,
    pub kv_heads: u64,
    pub head_dim: u64,
    pub vocab: u64,
    /// The longest sequence the model knows positions for.
    pub max_positions: u64,
    pub positions: Positions,
}

/// The element type the paged KV cache stores keys and values in; attention reads it
/// directly and computes in f32.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvDtype {
    /// Exactly the values the layer programs computed.
    #[default]
    F32,
    /// bfloat16, rounded to nearest even: half the bytes, about 3 significant digits.
    Bf16,
    /// Symmetric int8 with one f32 scale per block, head and key/value (absmax / 127): a
    /// quarter of the bytes.
    Int8,
}

impl KvDtype {
    /// The spelling of `--kv-dtype` and of `serve.json`.
    pub fn name(self) -> &'static str {
        match self {
            KvDtype::F32 => "f32",
            KvDtype::Bf16 => "bf16",
            KvDtype::Int8 => "int8",
        }
    }

    pub fn parse(name: &str) -> Option<KvDtype> {
        [KvDtype::F32, KvDtype::Bf16, KvDtype::Int8].into_iter().find(|d| d.name() == name)
    }

    /// Bytes of one stored element.
    pub fn element_bytes(self) -> usize {
        match self {
            KvDtype::F32 => 4,
            KvDtype::Bf16 => 2,
            KvDtype::Int8 => 1,
        }
    }

    fn is_f32(&self) -> bool {
        *self == KvDtype::F32
    }
}

/// The shapes the programs and the KV cache were planned for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServeShape {
    /// Sequences one decode step runs at most.
    pub max_batch: u64,
    /// Tokens a sequence holds at most (prompt and generated).
    pub max_seq: u64,
    /// Tokens per KV-cache block.
    pub kv_block: u64,
    /// Rows (tokens) of every program run: `max_batch`, so a decode step of up to `max_batch`
    /// sequences is one run, and a prompt is prefilled in chunks of `max_batch` tokens. Rows a
    /// run leaves empty are padding, whose compute is wasted (measured: padding a batch-1
    /// decode to 16 rows cost about 2.8x in a debug build), so the row count follows the
    /// batch, not the block size, and a directory also holds programs for fewer rows
    /// ([`ServeManifest::row_buckets`]), all reading one copy of the weights.
    pub rows: u64,
    /// What the KV cache stores; f32 is left out of `serve.json` (files from before the
    /// option read as f32, and an f32 serving directory is written as it was).
    #[serde(default, skip_serializing_if = "KvDtype::is_f32")]
    pub kv_dtype: KvDtype,
}

impl ServeShape {
    /// The shape for the given limits (rows derived, see [`ServeShape::rows`]).
    pub fn new(max_batch: u64, max_seq: u64, kv_block: u64) -> ServeShape {
        ServeShape { max_batch, max_seq, kv_block, rows: max_batch, kv_dtype: KvDtype::F32 }
    }

    /// Blocks per sequence at `max_seq` tokens.
    pub fn blocks_per_sequence(&self) -> u64 {
        self.max_seq.div_ceil(self.kv_block)
    }

    /// Blocks in the cache: enough for `max_batch` sequences of `max_seq` tokens.
    pub fn cache_blocks(&self) -> u64 {
        self.max_batch * self.blocks_per_sequence()
    }
}

/// `serve.json`: the contents of a serving directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServeManifest {
    pub format_version: u32,
    pub model: ServeModel,
    pub shape: ServeShape,
    /// The artifact directories, [`PROGRAMS`] in order ([`TP_PROGRAMS`] with tensor
    /// parallelism).
    pub programs: Vec<String>,
    /// Tensor parallelism (`--mesh tp=N`): every rank binds the same programs to its own
    /// shard of the weights; absent for one rank (and in files from before the option).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tensor_parallel: Option<TensorParallel>,
    /// The smaller row counts the directory also holds the programs for, fewest first: each
    /// in [`ServeManifest::row_bucket_dir`], a serving directory of its own whose manifest
    /// differs from this one only in `shape.rows` (and has no buckets). A run uses the fewest
    /// rows that hold its tokens, so a lone sequence is not padded to `max_batch` rows.
    /// Absent (none) in files from before the option: they run `shape.rows` only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub row_buckets: Vec<u64>,
}

/// How the programs of a tensor-parallel serving directory split the model (Megatron-LM's
/// layout): rank `r` of `ranks` holds query heads `r * heads / ranks ..` and the key/value
/// heads they read (so its share of the paged KV cache), the matching columns of the Q/K/V and
/// MLP up projections and rows of the output and down projections; embedding and norms are
/// whole on every rank, and rank 0 alone holds and runs the head (it alone returns logits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorParallel {
    pub ranks: u64,
    /// Whether the attention output and MLP down projections have biases
    /// (`l{i}.attn.out.bias`, `l{i}.mlp.out.bias`, `[hidden]`): the engine adds them once,
    /// after the all-reduce, instead of a program adding them on every rank.
    pub row_parallel_bias: bool,
}

impl ServeManifest {
    /// The subdirectory of a serving directory that holds the programs for `rows` rows (one
    /// of [`ServeManifest::row_buckets`]).
    pub fn row_bucket_dir(rows: u64) -> String {
        format!("rows{rows}")
    }

    /// This manifest for programs of `rows` rows: what a row bucket's directory holds.
    pub fn for_rows(&self, rows: u64) -> ServeManifest {
        ServeManifest { shape: ServeShape { rows, ..self.shape }, row_buckets: Vec::new(), ..self.clone() }
    }

    /// Ranks the programs are split over (1 without tensor parallelism).
    pub fn tp_ranks(&self) -> u64 {
        self.tensor_parallel.map_or(1, |tp| tp.ranks)
    }

    /// Bytes of one KV-cache block over all layers, keys and values, in the cache's dtype
    /// (int8 adds one f32 scale per layer, head and key/value), summed over all ranks.
    pub fn kv_block_bytes(&self) -> u64 {
        let (m, s) = (&self.model, &self.shape);
        let elements = 2 * m.layers * m.kv_heads * s.kv_block * m.head_dim;
        let scales = match s.kv_dtype {
            KvDtype::Int8 => 2 * m.layers * m.kv_heads * 4,
            KvDtype::F32 | KvDtype::Bf16 => 0,
        };
        elements * s.kv_dtype.element_bytes() as u64 + scales
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Llama 3 scaling (theta 10000, head_dim 16, factor 8, low 1, high 4, original 64) by its
    /// three cases; the serving e2e test checks the whole against `transformers`.
    #[test]
    fn llama3_scaling_keeps_high_frequencies_and_divides_low_ones() {
        let rope = Rope {
            theta: 10000.0,
            scaling: RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_positions: 64.0,
            },
        };
        let plain = Rope { theta: 10000.0, scaling: RopeScaling::None }.inverse_frequencies(16);
        let scaled = rope.inverse_frequencies(16);
        assert_eq!(plain[0], 1.0);
        // Wavelength 2π < 16 = 64 / 4: kept.
        assert_eq!(scaled[0], plain[0]);
        // The lowest frequency has wavelength 2π / 10000^(-14/16) ≈ 19,000 > 64: divided by 8.
        assert_eq!(scaled[7], plain[7] / 8.0);
        // In between, strictly between the two.
        let middle = (1..7).find(|&i| scaled[i] != plain[i] && scaled[i] != plain[i] / 8.0);
        assert!(middle.is_some(), "{scaled:?} vs {plain:?}");
    }

    /// An f32 shape serializes as before the option existed; others name their dtype and read
    /// back; a file without the field reads as f32.
    #[test]
    fn kv_dtype_round_trips_and_defaults_to_f32() {
        let f32_shape = ServeShape::new(2, 64, 16);
        let text = serde_json::to_string(&f32_shape).unwrap();
        assert_eq!(text, r#"{"max_batch":2,"max_seq":64,"kv_block":16,"rows":2}"#);
        assert_eq!(serde_json::from_str::<ServeShape>(&text).unwrap(), f32_shape);
        let int8 = ServeShape { kv_dtype: KvDtype::Int8, ..f32_shape };
        let text = serde_json::to_string(&int8).unwrap();
        assert!(text.contains(r#""kv_dtype":"int8""#), "{text}");
        assert_eq!(serde_json::from_str::<ServeShape>(&text).unwrap(), int8);
        assert_eq!(KvDtype::parse("bf16"), Some(KvDtype::Bf16));
        assert_eq!(KvDtype::parse("fp8"), None);
    }

    #[test]
    fn rows_follow_the_batch_and_blocks_cover_every_sequence() {
        let shape = ServeShape::new(4, 100, 16);
        assert_eq!((shape.rows, shape.blocks_per_sequence(), shape.cache_blocks()), (4, 7, 28));
    }
}
