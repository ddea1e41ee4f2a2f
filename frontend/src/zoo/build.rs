//! Graph builders for zoo models: the whole model, or one block (embedding, a layer, the
//! head) as one tensor-/expert-parallel rank runs it, with side tables for the cost model.
//!
//! What a rank's graph looks like (Megatron-style tensor parallelism over `tp` ranks):
//! - attention heads, the MLP's intermediate width, expert widths and the vocabulary are split
//!   over `tp`; norms, residual adds, hidden dropout and the MoE router see the full hidden size
//!   and are *replicated* (sequence parallelism splits exactly these over the sequence);
//! - the outputs of row-parallel matmuls (attention output, MLP down projection, the embedding
//!   lookup on a vocabulary slice) are partial sums: [`CommSite::TpAllReduce`] marks them;
//! - with expert parallelism over `ep` ranks a rank holds `experts / ep` experts, and the
//!   dispatched tokens and expert outputs cross an all-to-all ([`CommSite::EpDispatch`],
//!   [`CommSite::EpCombine`]).
//!
//! The tsr op set has no random numbers, no top-k and no collectives, so three things are
//! graph inputs computed outside the graph:
//! - dropout keep-masks (`i1`, one per dropout site, scaled by `1 / (1 - p)` in the graph);
//! - MoE routing: top-k selection is not a tsr op, so the router's softmax is in the graph
//!   but the choice is an input: `route` gives, for each of an expert's `capacity` slots, the
//!   token it processes, and `gate_index` the position of that token's gate in the flattened
//!   `[tokens, experts]` softmax. Expert MLPs then run on exactly the routed slots
//!   (`tokens * top_k * capacity_factor` of them), so the graph's FLOPs are those of the `k`
//!   active experts, as the cost model counts them; the combine is a `scatter` with `add` into
//!   the residual stream;
//! - rotary tables (`cos`, `sin`) and the additive causal mask.
//!
//! Collectives are not ops yet: the per-rank graph is what runs between them, and the side
//! table says where they go.

use crate::zoo::builder::Builder;
use crate::zoo::config::{LayerKind, ModelConfig};
use crate::zoo::layers;
use crate::zoo::ZooError;
use tessera_ir::graph::{Graph, ValueId};
use tessera_ir::workload::BlockShape;

/// A part of a model that the planner costs separately: layers repeat, the ends do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Block {
    /// Token (and learned position) embedding.
    Embedding,
    /// Layer `i` (0-based); its kind follows [`ModelConfig::layer_kind`].
    Layer(u64),
    /// Final norm, output projection and the softmax over the vocabulary.
    Head,
}

/// What a node is, for parallelism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Computed identically on every tensor-parallel rank (norms, residuals, hidden dropout,
    /// the router); sequence parallelism splits it over the sequence.
    Replicated,
    /// Works on this rank's slice of heads, intermediate width, experts or vocabulary.
    TensorParallel,
    /// Attention scores, softmax, attention dropout and the product with values: what
    /// selective recomputation recomputes instead of storing.
    AttentionCore,
}

/// A collective a value needs before any use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommSite {
    /// A partial sum over the tensor-parallel group (all-reduce, or reduce-scatter plus a later
    /// all-gather under sequence parallelism).
    TpAllReduce(ValueId),
    /// Tokens sent to the ranks holding their experts (all-to-all over the expert group).
    EpDispatch(ValueId),
    /// Expert outputs returned to their tokens' ranks (all-to-all over the expert group).
    EpCombine(ValueId),
}

/// A built graph with its side tables (indexed by node or naming values).
#[derive(Debug, Clone)]
pub struct ZooBlock {
    pub graph: Graph,
    /// The role of each node, by node index.
    pub roles: Vec<Role>,
    /// Collectives, in program order of the values they apply to.
    pub comms: Vec<CommSite>,
    /// Parameters that belong to routed experts (their gradients sync over fewer ranks).
    pub expert_params: Vec<ValueId>,
    /// Activation inputs gradients flow into (the residual stream entering a layer or the
    /// head); other activation inputs (ids, masks, tables, routes, caches) take none.
    pub stream_inputs: Vec<ValueId>,
    /// Activation inputs holding the KV cache of earlier tokens (serving).
    pub cache_inputs: Vec<ValueId>,
}

/// Checks that the config can be split `opts.tp` ways (and `opts.ep` ways for experts).
pub fn check_sharding(cfg: &ModelConfig, opts: &BlockShape) -> Result<(), ZooError> {
    let fail = |what: String, message: String| Err(ZooError::Build { model: cfg.name.clone(), what, message });
    let (tp, ep) = (opts.tp, opts.ep);
    if tp == 0 || ep == 0 || opts.batch == 0 || opts.seq == 0 {
        return fail("a graph".into(), "tp, ep, batch and seq must be positive".into());
    }
    if cfg.heads % tp != 0 {
        return fail(format!("tp={tp}"), format!("tp must divide heads = {}", cfg.heads));
    }
    if !cfg.is_mla() && cfg.kv_heads % tp != 0 && tp % cfg.kv_heads != 0 {
        let message = format!("kv_heads = {} and tp must divide one another", cfg.kv_heads);
        return fail(format!("tp={tp}"), message);
    }
    let dense_layers = cfg.layer_counts().iter().any(|&(k, _)| k == LayerKind::Dense);
    if dense_layers && cfg.ffn % tp != 0 {
        return fail(format!("tp={tp}"), format!("tp must divide ffn = {}", cfg.ffn));
    }
    if cfg.is_moe() {
        if cfg.expert_ffn % tp != 0 {
            return fail(format!("tp={tp}"), format!("tp must divide expert_ffn = {}", cfg.expert_ffn));
        }
        if cfg.experts % ep != 0 {
            return fail(format!("ep={ep}"), format!("ep must divide experts = {}", cfg.experts));
        }
    } else if ep != 1 {
        return fail(format!("ep={ep}"), "expert parallelism needs an MoE model".into());
    }
    Ok(())
}

/// The graph of one block as one rank runs it.
pub fn build_block(cfg: &ModelConfig, block: Block, opts: &BlockShape) -> Result<ZooBlock, ZooError> {
    cfg.validate()?;
    check_sharding(cfg, opts)?;
    let name = match block {
        Block::Embedding => "embedding".to_string(),
        Block::Layer(i) => format!("layer{i}"),
        Block::Head => "head".to_string(),
    };
    let mut b = Builder::new(&name, &cfg.name, cfg.dtype);
    let out = match block {
        Block::Embedding => layers::embedding(&mut b, cfg, opts)?.0,
        Block::Layer(i) => {
            if i >= cfg.layers {
                let message = format!("the model has {} layers", cfg.layers);
                return Err(ZooError::Build { model: cfg.name.clone(), what: format!("layer {i}"), message });
            }
            let x = b.stream_input("x", cfg.dtype, &[opts.batch, opts.seq, cfg.hidden]);
            layers::layer(&mut b, cfg, opts, i, x)?
        }
        Block::Head => {
            let x = b.stream_input("x", cfg.dtype, &[opts.batch, opts.seq, cfg.hidden]);
            layers::head(&mut b, cfg, opts, x, None)?
        }
    };
    Ok(b.finish(vec![out]))
}

/// The whole model as one graph: embedding, every layer, head (a tied head reuses the
/// embedding's parameter).
pub fn build_model(cfg: &ModelConfig, opts: &BlockShape) -> Result<ZooBlock, ZooError> {
    cfg.validate()?;
    check_sharding(cfg, opts)?;
    let name = cfg.name.replace(|c: char| !c.is_ascii_alphanumeric() && c != '_', "_");
    let mut b = Builder::new(&name, &cfg.name, cfg.dtype);
    let (mut x, table) = layers::embedding(&mut b, cfg, opts)?;
    for i in 0..cfg.layers {
        x = layers::layer(&mut b, cfg, opts, i, x)?;
    }
    let out = layers::head(&mut b, cfg, opts, x, Some(table))?;
    Ok(b.finish(vec![out]))
}
