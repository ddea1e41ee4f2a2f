//! `ModelConfig`: the architecture of a zoo model as numbers, with the analytic counts
//! (parameters, KV-cache size) that the graph builders must agree with.
//!
//! One struct covers the three families: the Megatron GPT form, the Llama form and
//! mixture-of-experts (a Llama form whose MLPs are routed experts). Fields that a family does
//! not use keep neutral values (`experts = 0` for dense models, MLA ranks 0 without MLA).

use crate::zoo::ZooError;
use serde::{Deserialize, Serialize};
use tessera_ir::dtype::DType;
use tessera_ir::workload::BlockShape;

/// Which family a model belongs to; it decides the defaults of the fields a spec leaves out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Megatron GPT: learned positions, LayerNorm, GELU MLP, biases, tied embeddings.
    Gpt,
    /// Llama: RMSNorm, SwiGLU, RoPE, grouped-query attention, no biases, untied head.
    Llama,
    /// A Llama form whose MLPs are top-k routed experts (Mixtral, DeepSeek).
    Moe,
    /// BERT encoder: post-LayerNorm, GELU, biases, separate Q/K/V projections, learned
    /// positions and token types with an embedding LayerNorm; the model's output is the last
    /// hidden state (no language-model head).
    Bert,
}

impl Family {
    pub const ALL: [Family; 4] = [Family::Gpt, Family::Llama, Family::Moe, Family::Bert];

    pub fn name(self) -> &'static str {
        match self {
            Family::Gpt => "gpt",
            Family::Llama => "llama",
            Family::Moe => "moe",
            Family::Bert => "bert",
        }
    }

    pub fn from_name(name: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.name() == name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    /// LayerNorm with scale and bias.
    Layer,
    /// RMSNorm with scale only.
    Rms,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mlp {
    /// `fc2(gelu(fc1(x)))`: two matrices.
    Gelu,
    /// `down(silu(gate(x)) * up(x))`: three matrices.
    Swiglu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Position {
    /// A learned `[seq, hidden]` table added to the token embedding.
    Learned,
    /// Rotary embedding applied to queries and keys inside attention.
    Rope,
}

/// How the Q, K and V projections are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Qkv {
    /// One matmul and a split, as Megatron and HF GPT-2 (`c_attn`) compute them.
    Fused,
    /// Three matmuls, as HF BERT and Llama checkpoints store them.
    Separate,
}

/// Which op vocabulary a graph uses for norms and activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GraphForm {
    /// tsr's own `layer_norm`, `rms_norm` and `gelu` ops.
    Zoo,
    /// The form ONNX exports (opset < 17) give: norms and GELU decomposed into reductions and
    /// elementwise ops with constants (`(x - mean) / sqrt(var + eps) * γ + β`,
    /// `x * 0.5 * (1 + erf(x / √2))`).
    Onnx,
}

/// The architecture of a zoo model. Sizes are element counts; `seq` is the sequence length
/// a plan uses by default (and the size of a learned position table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// The preset name or the spec it came from.
    pub name: String,
    pub family: Family,
    pub layers: u64,
    pub hidden: u64,
    /// Query heads.
    pub heads: u64,
    /// Key/value heads (grouped-query attention when fewer than `heads`).
    pub kv_heads: u64,
    /// Per-head dimension of queries, keys and values (without MLA).
    pub head_dim: u64,
    /// Intermediate size of a dense MLP.
    pub ffn: u64,
    pub vocab: u64,
    pub seq: u64,
    pub norm: Norm,
    pub mlp: Mlp,
    pub position: Position,
    /// Biases on the linear layers (and LayerNorm bias).
    pub bias: bool,
    /// The output head reuses the token embedding.
    pub tied_embeddings: bool,
    /// Dropout probability on attention probabilities and on the outputs of attention and MLP,
    /// as in Megatron training; 0 builds no dropout.
    pub dropout: f64,
    /// Routed experts per MoE layer; 0 for a dense model.
    pub experts: u64,
    /// Experts each token is routed to.
    pub top_k: u64,
    /// Intermediate size of one routed (and one shared) expert.
    pub expert_ffn: u64,
    /// Always-active shared experts per MoE layer (DeepSeek).
    pub shared_experts: u64,
    /// The first `dense_layers` layers have a dense MLP even in an MoE model (DeepSeek-V3: 3).
    pub dense_layers: u64,
    /// Expert capacity relative to a perfectly balanced load; tokens past it are dropped.
    pub capacity_factor: f64,
    /// Multi-head latent attention (DeepSeek-V2/V3) when `kv_lora_rank > 0`.
    pub q_lora_rank: u64,
    pub kv_lora_rank: u64,
    /// Per-head query/key dims without and with rotary embedding, and the value dim, for MLA.
    pub qk_nope_dim: u64,
    pub qk_rope_dim: u64,
    pub v_head_dim: u64,
    /// Element type of weights and activations.
    pub dtype: DType,
    /// Layout of the attention projections.
    pub qkv: Qkv,
    /// Op vocabulary of norms and activations.
    pub form: GraphForm,
}

/// Whether a layer's MLP is dense or routed experts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerKind {
    Dense,
    Moe,
}

impl ModelConfig {
    /// One unsharded training micro-batch of one sequence of the config's length: what graphs
    /// are built for unless a caller says otherwise.
    pub fn block_shape(&self) -> BlockShape {
        BlockShape { batch: 1, seq: self.seq, tp: 1, ep: 1, training: true, kv_cache: 0 }
    }

    /// The defaults of a family for a model of the given size; specs override fields after.
    pub fn family_default(family: Family, name: &str, layers: u64, hidden: u64, heads: u64) -> ModelConfig {
        let head_dim = hidden.checked_div(heads).unwrap_or(0);
        let base = ModelConfig {
            name: name.to_string(),
            family,
            layers,
            hidden,
            heads,
            kv_heads: heads,
            head_dim,
            ffn: 4 * hidden,
            vocab: 51200,
            seq: 2048,
            norm: Norm::Layer,
            mlp: Mlp::Gelu,
            position: Position::Learned,
            bias: true,
            tied_embeddings: true,
            dropout: 0.1,
            experts: 0,
            top_k: 0,
            expert_ffn: 0,
            shared_experts: 0,
            dense_layers: 0,
            capacity_factor: 1.0,
            q_lora_rank: 0,
            kv_lora_rank: 0,
            qk_nope_dim: 0,
            qk_rope_dim: 0,
            v_head_dim: 0,
            dtype: DType::BF16,
            qkv: Qkv::Fused,
            form: GraphForm::Zoo,
        };
        match family {
            Family::Gpt => base,
            Family::Bert => ModelConfig { vocab: 30522, seq: 512, tied_embeddings: false, qkv: Qkv::Separate, ..base },
            Family::Llama | Family::Moe => {
                // Llama's SwiGLU width: 2/3 of 4h, rounded up to a multiple of 256.
                let ffn = (8 * hidden / 3).div_ceil(256) * 256;
                let moe = family == Family::Moe;
                ModelConfig {
                    ffn,
                    vocab: 32000,
                    seq: 4096,
                    norm: Norm::Rms,
                    mlp: Mlp::Swiglu,
                    position: Position::Rope,
                    bias: false,
                    tied_embeddings: false,
                    dropout: 0.0,
                    experts: if moe { 8 } else { 0 },
                    top_k: if moe { 2 } else { 0 },
                    expert_ffn: if moe { ffn } else { 0 },
                    ..base
                }
            }
        }
    }

    pub fn is_moe(&self) -> bool {
        self.experts > 0
    }

    pub fn is_mla(&self) -> bool {
        self.kv_lora_rank > 0
    }

    pub fn layer_kind(&self, layer: u64) -> LayerKind {
        if self.is_moe() && layer >= self.dense_layers {
            LayerKind::Moe
        } else {
            LayerKind::Dense
        }
    }

    /// How many layers of each kind, in order of kind (dense first).
    pub fn layer_counts(&self) -> Vec<(LayerKind, u64)> {
        let dense = if self.is_moe() { self.dense_layers.min(self.layers) } else { self.layers };
        let mut counts = Vec::new();
        if dense > 0 {
            counts.push((LayerKind::Dense, dense));
        }
        if self.layers > dense {
            counts.push((LayerKind::Moe, self.layers - dense));
        }
        counts
    }

    /// Per-head dim of queries and keys (MLA concatenates the rotary part).
    pub fn qk_head_dim(&self) -> u64 {
        if self.is_mla() {
            self.qk_nope_dim + self.qk_rope_dim
        } else {
            self.head_dim
        }
    }

    /// Per-head dim of values.
    pub fn v_dim(&self) -> u64 {
        if self.is_mla() {
            self.v_head_dim
        } else {
            self.head_dim
        }
    }

    /// Checks that the numbers describe a buildable model; the error names the field.
    pub fn validate(&self) -> Result<(), ZooError> {
        let bad =
            |field: &'static str, message: String| Err(ZooError::Invalid { model: self.name.clone(), field, message });
        for (field, value) in [
            ("layers", self.layers),
            ("hidden", self.hidden),
            ("heads", self.heads),
            ("kv_heads", self.kv_heads),
            ("vocab", self.vocab),
            ("seq", self.seq),
        ] {
            if value == 0 {
                return bad(field, "must be positive".into());
            }
        }
        if self.heads % self.kv_heads != 0 {
            return bad("kv_heads", format!("{} must divide heads = {}", self.kv_heads, self.heads));
        }
        if self.is_mla() {
            if self.qk_nope_dim == 0 || self.qk_rope_dim == 0 || self.v_head_dim == 0 {
                return bad("kv_lora_rank", "MLA needs qk_nope_dim, qk_rope_dim and v_head_dim".into());
            }
            if self.qk_rope_dim % 2 != 0 {
                return bad("qk_rope_dim", format!("{} must be even for rotary embedding", self.qk_rope_dim));
            }
            if self.kv_heads != self.heads {
                return bad("kv_heads", "MLA has one key/value per query head; leave kv_heads = heads".into());
            }
        } else {
            if self.head_dim == 0 {
                return bad("head_dim", format!("hidden = {} is smaller than heads = {}", self.hidden, self.heads));
            }
            if self.position == Position::Rope && self.head_dim % 2 != 0 {
                return bad("head_dim", format!("{} must be even for rotary embedding", self.head_dim));
            }
        }
        let needs_dense = !self.is_moe() || self.dense_layers > 0;
        if needs_dense && self.ffn == 0 {
            return bad("ffn", "must be positive".into());
        }
        if self.is_moe() {
            if self.top_k == 0 || self.top_k > self.experts {
                return bad("top_k", format!("{} must be between 1 and experts = {}", self.top_k, self.experts));
            }
            if self.expert_ffn == 0 {
                return bad("expert_ffn", "must be positive".into());
            }
            if self.dense_layers > self.layers {
                return bad("dense_layers", format!("{} exceeds layers = {}", self.dense_layers, self.layers));
            }
            if !(self.capacity_factor > 0.0 && self.capacity_factor.is_finite()) {
                return bad("capacity_factor", format!("{} must be a positive number", self.capacity_factor));
            }
        } else if self.top_k != 0 || self.shared_experts != 0 || self.dense_layers != 0 {
            return bad("experts", "top_k, shared_experts and dense_layers need experts > 0".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad("dropout", format!("{} must be in [0, 1)", self.dropout));
        }
        if !self.dtype.is_float() {
            return bad("dtype", format!("{} is not a floating-point type", self.dtype.mlir_name()));
        }
        Ok(())
    }

    /// Parameters of one norm.
    fn norm_params(&self, width: u64) -> u64 {
        match self.norm {
            Norm::Layer => 2 * width,
            Norm::Rms => width,
        }
    }

    /// Parameters of one attention block (its input norm included).
    pub fn attention_params(&self) -> u64 {
        let h = self.hidden;
        let bias = u64::from(self.bias);
        let norm = self.norm_params(h);
        if self.is_mla() {
            let heads = self.heads;
            let q = if self.q_lora_rank > 0 {
                h * self.q_lora_rank + self.q_lora_rank + self.q_lora_rank * heads * self.qk_head_dim()
            } else {
                h * heads * self.qk_head_dim()
            };
            let kv = h * (self.kv_lora_rank + self.qk_rope_dim)
                + self.kv_lora_rank
                + self.kv_lora_rank * heads * (self.qk_nope_dim + self.v_head_dim);
            let out = heads * self.v_head_dim * h + bias * h;
            return norm + q + kv + out;
        }
        let qkv_width = (self.heads + 2 * self.kv_heads) * self.head_dim;
        norm + h * qkv_width + bias * qkv_width + self.heads * self.head_dim * h + bias * h
    }

    /// Parameters of a dense MLP of intermediate size `ffn` (no norm).
    fn mlp_params(&self, ffn: u64) -> u64 {
        let h = self.hidden;
        let bias = u64::from(self.bias);
        match self.mlp {
            Mlp::Gelu => 2 * h * ffn + bias * (ffn + h),
            Mlp::Swiglu => 3 * h * ffn + bias * (2 * ffn + h),
        }
    }

    /// Parameters of one layer of `kind` (attention, MLP or experts, both norms).
    pub fn layer_params(&self, kind: LayerKind) -> u64 {
        let mlp = match kind {
            LayerKind::Dense => self.mlp_params(self.ffn),
            LayerKind::Moe => {
                self.hidden * self.experts + (self.experts + self.shared_experts) * self.mlp_params(self.expert_ffn)
            }
        };
        self.attention_params() + self.norm_params(self.hidden) + mlp
    }

    /// Parameters of one layer of `kind` that one token uses (top-k routed experts only).
    pub fn layer_active_params(&self, kind: LayerKind) -> u64 {
        match kind {
            LayerKind::Dense => self.layer_params(kind),
            LayerKind::Moe => {
                let idle = self.experts - self.top_k;
                self.layer_params(kind) - idle * self.mlp_params(self.expert_ffn)
            }
        }
    }

    /// Token and position embeddings.
    pub fn embedding_params(&self) -> u64 {
        let positions = match self.position {
            Position::Learned => self.seq * self.hidden,
            Position::Rope => 0,
        };
        // BERT adds two token-type rows and a LayerNorm after the sum.
        let bert = if self.family == Family::Bert { 2 * self.hidden + self.norm_params(self.hidden) } else { 0 };
        self.vocab * self.hidden + positions + bert
    }

    /// The final norm and, when untied, the output projection.
    pub fn head_params(&self) -> u64 {
        if self.family == Family::Bert {
            return 0; // post-LN: the last layer's norm is the output
        }
        let proj = if self.tied_embeddings { 0 } else { self.vocab * self.hidden };
        self.norm_params(self.hidden) + proj
    }

    /// Every parameter of the model, counted once (tied weights once).
    pub fn parameter_count(&self) -> u64 {
        let layers: u64 = self.layer_counts().iter().map(|&(kind, n)| n * self.layer_params(kind)).sum();
        self.embedding_params() + layers + self.head_params()
    }

    /// Parameters one token uses (all of a dense model; top-k of the routed experts).
    pub fn active_parameter_count(&self) -> u64 {
        let layers: u64 = self.layer_counts().iter().map(|&(kind, n)| n * self.layer_active_params(kind)).sum();
        self.embedding_params() + layers + self.head_params()
    }

    /// Bytes of KV cache one token of context occupies across all layers (MLA caches the
    /// compressed latent and the shared rotary key).
    pub fn kv_cache_bytes_per_token(&self) -> u64 {
        let per_layer =
            if self.is_mla() { self.kv_lora_rank + self.qk_rope_dim } else { 2 * self.kv_heads * self.head_dim };
        self.layers * per_layer * self.dtype.size_bytes() as u64
    }
}
