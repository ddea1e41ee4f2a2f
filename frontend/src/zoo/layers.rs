//! The blocks of the zoo's transformers, written against [`Builder`]: embedding, attention
//! (multi-head, grouped-query, multi-head latent), dense MLPs (GELU, SwiGLU), routed experts
//! and the head. Shapes are per tensor-parallel rank (see [`crate::zoo::build`]).
//!
//! # Fused weight layouts
//!
//! Fused weights are laid out
//! for column splits: the fused QKV weight is head-interleaved (per key/value head: its query
//! heads, its key, its value) and the fused SwiGLU `gate_up` weight pairs each gate column with
//! its up column, so `shard` over `tp` gives every rank whole heads and matching halves, and a zoo
//! layer communicates only Megatron's two all-reduces (`tests/e2e/shard.rs` checks it).

use crate::zoo::build::{CommSite, Role};
use crate::zoo::builder::Builder;
use crate::zoo::config::{Family, GraphForm, LayerKind, Mlp, ModelConfig, Norm, Position, Qkv};
use crate::zoo::ZooError;
use tessera_ir::dtype::DType;
use tessera_ir::graph::ValueId;
use tessera_ir::ops::elementwise::{BinaryOp, UnaryOp};
use tessera_ir::ops::indexing::ScatterReduction;
use tessera_ir::ops::reduce::ReduceKind;
use tessera_ir::ops::Op;
use tessera_ir::workload::BlockShape;

const NORM_EPSILON: f64 = 1e-5;

fn norm(b: &mut Builder, cfg: &ModelConfig, x: ValueId, name: &str, width: u64) -> Result<ValueId, ZooError> {
    let scale = b.param(&format!("{name}.scale"), &[width]);
    match (cfg.norm, cfg.form) {
        (Norm::Layer, GraphForm::Zoo) => {
            let bias = b.param(&format!("{name}.bias"), &[width]);
            b.op(Op::LayerNorm { axis: -1, epsilon: NORM_EPSILON }, &[x, scale, bias])
        }
        (Norm::Layer, GraphForm::Onnx) => {
            let bias = b.param(&format!("{name}.bias"), &[width]);
            let shape = b.shape(x);
            let mean = mean_last(b, x)?;
            let centered = b.binary(BinaryOp::Sub, x, mean)?;
            let squared = b.binary_scalar(BinaryOp::Pow, centered, 2.0)?;
            let var = mean_last(b, squared)?;
            let std = b.binary_scalar(BinaryOp::Add, var, NORM_EPSILON)?;
            let std = b.unary(UnaryOp::Sqrt, std)?;
            let normed = b.binary(BinaryOp::Div, centered, std)?;
            let scale = b.broadcast(scale, &shape)?;
            let scaled = b.binary(BinaryOp::Mul, normed, scale)?;
            b.add_bias(scaled, bias)
        }
        (Norm::Rms, GraphForm::Zoo) => b.op(Op::RmsNorm { axis: -1, epsilon: NORM_EPSILON }, &[x, scale]),
        (Norm::Rms, GraphForm::Onnx) => {
            let shape = b.shape(x);
            let squared = b.binary_scalar(BinaryOp::Pow, x, 2.0)?;
            let ms = mean_last(b, squared)?;
            let rms = b.binary_scalar(BinaryOp::Add, ms, NORM_EPSILON)?;
            let rms = b.unary(UnaryOp::Sqrt, rms)?;
            let normed = b.binary(BinaryOp::Div, x, rms)?;
            let scale = b.broadcast(scale, &shape)?;
            b.binary(BinaryOp::Mul, normed, scale)
        }
    }
}

/// The mean over the last axis, broadcast back to `x`'s shape (ONNX `ReduceMean` with
/// `keepdims` and implicit broadcasting).
fn mean_last(b: &mut Builder, x: ValueId) -> Result<ValueId, ZooError> {
    let shape = b.shape(x);
    let mean = b.op(Op::Reduce { kind: ReduceKind::Mean, axes: vec![-1], keepdims: true }, &[x])?;
    b.broadcast(mean, &shape)
}

/// GELU: the `gelu` op, or in the ONNX form `x * 0.5 * (1 + erf(x / √2))` as exporters emit it.
fn gelu(b: &mut Builder, cfg: &ModelConfig, x: ValueId) -> Result<ValueId, ZooError> {
    match cfg.form {
        GraphForm::Zoo => b.unary(UnaryOp::Gelu, x),
        GraphForm::Onnx => {
            let scaled = b.binary_scalar(BinaryOp::Div, x, std::f64::consts::SQRT_2)?;
            let erf = b.unary(UnaryOp::Erf, scaled)?;
            let one_plus = b.binary_scalar(BinaryOp::Add, erf, 1.0)?;
            let y = b.binary(BinaryOp::Mul, x, one_plus)?;
            b.binary_scalar(BinaryOp::Mul, y, 0.5)
        }
    }
}

fn rms_norm(b: &mut Builder, x: ValueId, name: &str, width: u64) -> Result<ValueId, ZooError> {
    let scale = b.param(&format!("{name}.scale"), &[width]);
    b.op(Op::RmsNorm { axis: -1, epsilon: NORM_EPSILON }, &[x, scale])
}

/// `x @ w (+ bias)` with a fresh weight `[in, out]`.
fn linear(b: &mut Builder, cfg: &ModelConfig, x: ValueId, name: &str, in_out: [u64; 2]) -> Result<ValueId, ZooError> {
    let w = b.param(&format!("{name}.weight"), &in_out);
    let y = b.matmul(x, w)?;
    if cfg.bias {
        let bias = b.param(&format!("{name}.bias"), &[in_out[1]]);
        return b.add_bias(y, bias);
    }
    Ok(y)
}

/// Inverted dropout when training with `cfg.dropout > 0`: `x * mask / (1 - p)`, the keep-mask
/// an `i1` input (see the module doc of `build`).
fn dropout(b: &mut Builder, cfg: &ModelConfig, opts: &BlockShape, x: ValueId, name: &str) -> Result<ValueId, ZooError> {
    if !opts.training || cfg.dropout == 0.0 {
        return Ok(x);
    }
    let shape = b.shape(x);
    let mask = b.input(&format!("{name}.keep"), DType::Bool, &shape);
    let dtype = b.block.graph.value(x).ty.dtype;
    let keep = b.op(Op::Cast { to: dtype }, &[mask])?;
    let kept = b.binary(BinaryOp::Mul, x, keep)?;
    b.scale(kept, 1.0 / (1.0 - cfg.dropout))
}

/// Rotary tables for the new tokens: `[seq, dim / 2]` each.
fn rope_tables(b: &mut Builder, cfg: &ModelConfig, opts: &BlockShape, name: &str, dim: u64) -> (ValueId, ValueId) {
    let cos = b.input(&format!("{name}.cos"), cfg.dtype, &[opts.seq, dim / 2]);
    let sin = b.input(&format!("{name}.sin"), cfg.dtype, &[opts.seq, dim / 2]);
    (cos, sin)
}

/// `[B, S, n * d]` to `[B, n, S, d]`.
fn split_heads(b: &mut Builder, x: ValueId, n: u64, d: u64) -> Result<ValueId, ZooError> {
    let s = b.shape(x);
    let y = b.reshape(x, &[s[0], s[1], n, d])?;
    b.transpose(y, &[0, 2, 1, 3])
}

/// `[B, n, S, d]` to `[B, S, n * d]`.
fn merge_heads(b: &mut Builder, x: ValueId) -> Result<ValueId, ZooError> {
    let s = b.shape(x);
    let y = b.transpose(x, &[0, 2, 1, 3])?;
    b.reshape(y, &[s[0], s[2], s[1] * s[3]])
}

/// Token (and learned position) embedding on this rank's vocabulary slice; returns the
/// stream and the token table (which a tied head reuses).
pub(crate) fn embedding(b: &mut Builder, cfg: &ModelConfig, opts: &BlockShape) -> Result<(ValueId, ValueId), ZooError> {
    let (batch, seq, h) = (opts.batch, opts.seq, cfg.hidden);
    // Megatron pads the vocabulary so every rank holds an equal slice.
    let vocab_local = cfg.vocab.div_ceil(opts.tp);
    let ids = b.input("tokens", DType::I64, &[batch, seq]);
    let table = b.param("embed.tokens", &[vocab_local, h]);
    b.role = Role::TensorParallel;
    let mut x = b.op(Op::Gather { axis: 0 }, &[table, ids])?;
    if opts.tp > 1 {
        b.comm(CommSite::TpAllReduce, x);
    }
    b.role = Role::Replicated;
    if cfg.position == Position::Learned {
        let positions = b.input("positions", DType::I64, &[seq]);
        let pos_table = b.param("embed.positions", &[cfg.seq, h]);
        let p = b.op(Op::Gather { axis: 0 }, &[pos_table, positions])?;
        let p = b.broadcast(p, &[batch, seq, h])?;
        x = b.binary(BinaryOp::Add, x, p)?;
    }
    if cfg.family == Family::Bert {
        let types = b.input("token_types", DType::I64, &[batch, seq]);
        let type_table = b.param("embed.token_types", &[2, h]);
        let t = b.op(Op::Gather { axis: 0 }, &[type_table, types])?;
        x = b.binary(BinaryOp::Add, x, t)?;
        x = norm(b, cfg, x, "embed.norm", h)?;
    }
    let x = dropout(b, cfg, opts, x, "embed.dropout")?;
    Ok((x, table))
}

/// One transformer layer: `x + attention(norm(x))`, then `+ mlp(norm(.))` or experts.
pub(crate) fn layer(
    b: &mut Builder,
    cfg: &ModelConfig,
    opts: &BlockShape,
    i: u64,
    x: ValueId,
) -> Result<ValueId, ZooError> {
    let name = format!("l{i}");
    let x = attention(b, cfg, opts, &name, x)?;
    match cfg.layer_kind(i) {
        LayerKind::Dense => dense_mlp(b, cfg, opts, &name, x),
        LayerKind::Moe => experts(b, cfg, opts, &name, x),
    }
}

/// Scores, mask, softmax, dropout, values: `q [B, n, S, dq]`, `kt [B, n, dq, T]`, `v [B, n,
/// T, dv]` to `[B, n, S, dv]`.
fn attention_core(
    b: &mut Builder,
    cfg: &ModelConfig,
    opts: &BlockShape,
    name: &str,
    q: ValueId,
    kt: ValueId,
    v: ValueId,
) -> Result<ValueId, ZooError> {
    let outer = b.role;
    b.role = Role::AttentionCore;
    let dq = b.shape(q)[3];
    let scores = b.matmul(q, kt)?;
    let scores = b.scale(scores, 1.0 / (dq as f64).sqrt())?;
    let shape = b.shape(scores);
    let mask = b.input(&format!("{name}.mask"), cfg.dtype, &shape[2..]);
    let mask = b.broadcast(mask, &shape)?;
    let scores = b.binary(BinaryOp::Add, scores, mask)?;
    let probs = b.op(Op::Softmax { axis: -1 }, &[scores])?;
    let probs = dropout(b, cfg, opts, probs, &format!("{name}.attn_dropout"))?;
    let ctx = b.matmul(probs, v)?;
    b.role = outer;
    Ok(ctx)
}

// The layer builders (`attention`, `latent_attention`, ...) share one parameter list (builder,
// model config, block shape, name, input) and open with the same locals: each builds a different
// subgraph from the same inputs, so the parallel signatures are deliberate.
/// Multi-head or grouped-query attention with its norm and residual; returns the new stream.
fn attention(
    b: &mut Builder,
    cfg: &ModelConfig,
    opts: &BlockShape,
    name: &str,
    x: ValueId,
) -> Result<ValueId, ZooError> {
    let h = cfg.hidden;
    let batch = opts.batch;
    b.role = Role::Replicated;
    let post_ln = cfg.family == Family::Bert;
    let normed = if post_ln { x } else { norm(b, cfg, x, &format!("{name}.attn_norm"), h)? };
    b.role = Role::TensorParallel;
    let ctx = if cfg.is_mla() {
        latent_attention(b, cfg, opts, name, normed)?
    } else {
        let (heads, dh) = (cfg.heads / opts.tp, cfg.head_dim);
        // With more ranks than key/value heads, each rank keeps a copy of the one it needs.
        let kv = (cfg.kv_heads / opts.tp).max(1);
        let parts = match cfg.qkv {
            Qkv::Fused => {
                // Head-interleaved (Megatron's layout): for each key/value head, the query heads
                // it serves, then its key, then its value. A column split over tensor-parallel
                // ranks then gives each rank whole heads of Q, K and V, so sharding needs no
                // gather (`[q | k | v]` blocks would hand rank 0 only query columns).
                let group = heads / kv;
                let qkv = linear(b, cfg, normed, &format!("{name}.attn.qkv"), [h, kv * (group + 2) * dh])?;
                let s = b.shape(qkv);
                let per_kv_head = b.reshape(qkv, &[s[0], s[1], kv, (group + 2) * dh])?;
                let parts = b.split(per_kv_head, -1, &[group * dh, dh, dh])?;
                let flat = |b: &mut Builder, x: ValueId, heads: u64| b.reshape(x, &[s[0], s[1], heads * dh]);
                vec![flat(b, parts[0], heads)?, flat(b, parts[1], kv)?, flat(b, parts[2], kv)?]
            }
            Qkv::Separate => vec![
                linear(b, cfg, normed, &format!("{name}.attn.q"), [h, heads * dh])?,
                linear(b, cfg, normed, &format!("{name}.attn.k"), [h, kv * dh])?,
                linear(b, cfg, normed, &format!("{name}.attn.v"), [h, kv * dh])?,
            ],
        };
        let mut q = split_heads(b, parts[0], heads, dh)?;
        let mut k = split_heads(b, parts[1], kv, dh)?;
        let mut v = split_heads(b, parts[2], kv, dh)?;
        if cfg.position == Position::Rope {
            let (cos, sin) = rope_tables(b, cfg, opts, &format!("{name}.rope"), dh);
            q = b.op(Op::Rope { interleaved: false }, &[q, cos, sin])?;
            k = b.op(Op::Rope { interleaved: false }, &[k, cos, sin])?;
        }
        if opts.kv_cache > 0 {
            let cached = [batch, kv, opts.kv_cache, dh];
            let k_cache = b.cache_input(&format!("{name}.k_cache"), &cached);
            let v_cache = b.cache_input(&format!("{name}.v_cache"), &cached);
            k = b.concat(&[k_cache, k], 2)?;
            v = b.concat(&[v_cache, v], 2)?;
        }
        if kv < heads {
            // Each key/value head serves `heads / kv` consecutive query heads.
            let t = b.shape(k)[2];
            let group = heads / kv;
            let expand = |b: &mut Builder, y: ValueId| -> Result<ValueId, ZooError> {
                let y = b.reshape(y, &[batch, kv, 1, t, dh])?;
                let y = b.broadcast(y, &[batch, kv, group, t, dh])?;
                b.reshape(y, &[batch, heads, t, dh])
            };
            k = expand(b, k)?;
            v = expand(b, v)?;
        }
        let kt = b.transpose(k, &[0, 1, 3, 2])?;
        let ctx = attention_core(b, cfg, opts, name, q, kt, v)?;
        merge_heads(b, ctx)?
    };
    let width = b.shape(ctx)[2];
    let w_out = b.param(&format!("{name}.attn.out.weight"), &[width, h]);
    let out = b.matmul(ctx, w_out)?;
    if opts.tp > 1 {
        b.comm(CommSite::TpAllReduce, out);
    }
    b.role = Role::Replicated;
    let y = residual(b, cfg, opts, &format!("{name}.attn"), x, out)?;
    if post_ln {
        return norm(b, cfg, y, &format!("{name}.attn_norm"), h);
    }
    Ok(y)
}

/// `x + dropout(out + bias)`: the bias of a row-parallel layer is added once, after the
/// reduction, so it is replicated.
fn residual(
    b: &mut Builder,
    cfg: &ModelConfig,
    opts: &BlockShape,
    name: &str,
    x: ValueId,
    out: ValueId,
) -> Result<ValueId, ZooError> {
    let mut out = out;
    if cfg.bias {
        let bias = b.param(&format!("{name}.out.bias"), &[cfg.hidden]);
        out = b.add_bias(out, bias)?;
    }
    let out = dropout(b, cfg, opts, out, &format!("{name}.dropout"))?;
    b.binary(BinaryOp::Add, x, out)
}

/// Multi-head latent attention (DeepSeek-V2/V3): queries and keys/values through low-rank
/// latents, a rotary part of the key shared by all heads. The down projections are replicated
/// across tensor-parallel ranks; the serving cache holds the latent and the rotary key.
fn latent_attention(
    b: &mut Builder,
    cfg: &ModelConfig,
    opts: &BlockShape,
    name: &str,
    normed: ValueId,
) -> Result<ValueId, ZooError> {
    let h = cfg.hidden;
    let batch = opts.batch;
    let heads = cfg.heads / opts.tp;
    let (nope, rope, vd, rank) = (cfg.qk_nope_dim, cfg.qk_rope_dim, cfg.v_head_dim, cfg.kv_lora_rank);
    b.role = Role::Replicated;
    let q_in = if cfg.q_lora_rank > 0 {
        let w = b.param(&format!("{name}.attn.q_down.weight"), &[h, cfg.q_lora_rank]);
        let latent = b.matmul(normed, w)?;
        rms_norm(b, latent, &format!("{name}.attn.q_norm"), cfg.q_lora_rank)?
    } else {
        normed
    };
    let w_kv_down = b.param(&format!("{name}.attn.kv_down.weight"), &[h, rank + rope]);
    let kv_latent = b.matmul(normed, w_kv_down)?;
    let parts = b.split(kv_latent, -1, &[rank, rope])?;
    let mut latent = rms_norm(b, parts[0], &format!("{name}.attn.kv_norm"), rank)?;
    let (cos, sin) = rope_tables(b, cfg, opts, &format!("{name}.rope"), rope);
    let k_rope = b.reshape(parts[1], &[batch, opts.seq, 1, rope])?;
    let k_rope = b.transpose(k_rope, &[0, 2, 1, 3])?;
    let mut k_rope = b.op(Op::Rope { interleaved: true }, &[k_rope, cos, sin])?;
    if opts.kv_cache > 0 {
        let latent_cache = b.cache_input(&format!("{name}.latent_cache"), &[batch, opts.kv_cache, rank]);
        let rope_cache = b.cache_input(&format!("{name}.k_rope_cache"), &[batch, 1, opts.kv_cache, rope]);
        latent = b.concat(&[latent_cache, latent], 1)?;
        k_rope = b.concat(&[rope_cache, k_rope], 2)?;
    }
    b.role = Role::TensorParallel;
    let q_width = b.shape(q_in)[2];
    let w_q = b.param(&format!("{name}.attn.q_up.weight"), &[q_width, heads * (nope + rope)]);
    let q = b.matmul(q_in, w_q)?;
    let q = split_heads(b, q, heads, nope + rope)?;
    let q_parts = b.split(q, -1, &[nope, rope])?;
    let q_rope = b.op(Op::Rope { interleaved: true }, &[q_parts[1], cos, sin])?;
    let q = b.concat(&[q_parts[0], q_rope], -1)?;
    let w_kv = b.param(&format!("{name}.attn.kv_up.weight"), &[rank, heads * (nope + vd)]);
    let kv = b.matmul(latent, w_kv)?;
    let kv = split_heads(b, kv, heads, nope + vd)?;
    let kv_parts = b.split(kv, -1, &[nope, vd])?;
    let t = b.shape(kv_parts[0])[2];
    let k_rope = b.broadcast(k_rope, &[batch, heads, t, rope])?;
    let k = b.concat(&[kv_parts[0], k_rope], -1)?;
    let kt = b.transpose(k, &[0, 1, 3, 2])?;
    let ctx = attention_core(b, cfg, opts, name, q, kt, kv_parts[1])?;
    merge_heads(b, ctx)
}

/// The MLP's sharded middle: `x [.., h]` to the row-parallel output `[.., h]` (partial over
/// tp), with weights of intermediate width `ffn_local`; `expert` shapes are `[E, ..]`.
fn mlp_body(
    b: &mut Builder,
    cfg: &ModelConfig,
    name: &str,
    x: ValueId,
    ffn_local: u64,
    experts: Option<u64>,
) -> Result<ValueId, ZooError> {
    let h = cfg.hidden;
    let shape = |dims: [u64; 2]| match experts {
        Some(e) => vec![e, dims[0], dims[1]],
        None => dims.to_vec(),
    };
    let weight = |b: &mut Builder, suffix: &str, dims: [u64; 2]| {
        let full = format!("{name}.{suffix}");
        match experts {
            Some(_) => b.expert_param(&full, &shape(dims)),
            None => b.param(&full, &shape(dims)),
        }
    };
    let bias_shape = |n: u64| match experts {
        Some(e) => vec![e, 1, n],
        None => vec![n],
    };
    let act = match cfg.mlp {
        Mlp::Gelu => {
            let w1 = weight(b, "fc1.weight", [h, ffn_local]);
            let mut y = b.matmul(x, w1)?;
            if cfg.bias {
                let bias = b.param(&format!("{name}.fc1.bias"), &bias_shape(ffn_local));
                if experts.is_some() {
                    b.block.expert_params.push(bias);
                }
                y = b.add_bias(y, bias)?;
            }
            gelu(b, cfg, y)?
        }
        Mlp::Swiglu => {
            // Gate and up projections as one matrix, as Megatron fuses them, with each gate
            // column beside its up column: a column split over tensor-parallel ranks gives
            // each rank matching halves (`[gate | up]` blocks would need a gather).
            let w = weight(b, "gate_up.weight", [h, 2 * ffn_local]);
            let y = b.matmul(x, w)?;
            let rows = b.shape(y);
            let rows = &rows[..rows.len() - 1];
            let pairs = b.reshape(y, &[rows, &[ffn_local, 2]].concat())?;
            let parts = b.split(pairs, -1, &[1, 1])?;
            let gate = b.reshape(parts[0], &[rows, &[ffn_local]].concat())?;
            let up = b.reshape(parts[1], &[rows, &[ffn_local]].concat())?;
            let gate = b.unary(UnaryOp::Silu, gate)?;
            b.binary(BinaryOp::Mul, gate, up)?
        }
    };
    let w2 = weight(b, "down.weight", [ffn_local, h]);
    b.matmul(act, w2)
}

fn dense_mlp(
    b: &mut Builder,
    cfg: &ModelConfig,
    opts: &BlockShape,
    name: &str,
    x: ValueId,
) -> Result<ValueId, ZooError> {
    b.role = Role::Replicated;
    let post_ln = cfg.family == Family::Bert;
    let normed = if post_ln { x } else { norm(b, cfg, x, &format!("{name}.mlp_norm"), cfg.hidden)? };
    b.role = Role::TensorParallel;
    let out = mlp_body(b, cfg, &format!("{name}.mlp"), normed, cfg.ffn / opts.tp, None)?;
    if opts.tp > 1 {
        b.comm(CommSite::TpAllReduce, out);
    }
    b.role = Role::Replicated;
    let y = residual(b, cfg, opts, &format!("{name}.mlp"), x, out)?;
    if post_ln {
        return norm(b, cfg, y, &format!("{name}.mlp_norm"), cfg.hidden);
    }
    Ok(y)
}

/// Expert slots per local expert: the balanced share of the expert group's routed tokens
/// times the capacity factor.
pub(crate) fn expert_capacity(cfg: &ModelConfig, opts: &BlockShape) -> u64 {
    let routed = opts.batch * opts.seq * cfg.top_k * opts.ep;
    ((routed as f64 * cfg.capacity_factor / cfg.experts as f64).ceil() as u64).max(1)
}

/// Routed experts (plus shared experts) with the router; see the module doc of `build` for
/// how routing enters the graph.
fn experts(b: &mut Builder, cfg: &ModelConfig, opts: &BlockShape, name: &str, x: ValueId) -> Result<ValueId, ZooError> {
    let h = cfg.hidden;
    let (batch, seq) = (opts.batch, opts.seq);
    let tokens = batch * seq;
    let local = cfg.experts / opts.ep;
    let capacity = expert_capacity(cfg, opts);
    let slots = local * capacity;
    b.role = Role::Replicated;
    let normed = norm(b, cfg, x, &format!("{name}.mlp_norm"), h)?;
    let w_router = b.param(&format!("{name}.router.weight"), &[h, cfg.experts]);
    let logits = b.matmul(normed, w_router)?;
    let gates = b.op(Op::Softmax { axis: -1 }, &[logits])?;
    let mut base = x;
    b.role = Role::TensorParallel;
    if cfg.shared_experts > 0 {
        let shared = cfg.shared_experts * cfg.expert_ffn / opts.tp;
        let out = mlp_body(b, cfg, &format!("{name}.shared"), normed, shared, None)?;
        if opts.tp > 1 {
            b.comm(CommSite::TpAllReduce, out);
        }
        b.role = Role::Replicated;
        base = b.binary(BinaryOp::Add, x, out)?;
        b.role = Role::TensorParallel;
    }
    let flat = b.reshape(normed, &[tokens, h])?;
    let route = b.input(&format!("{name}.route"), DType::I64, &[slots]);
    let dispatched = b.op(Op::Gather { axis: 0 }, &[flat, route])?;
    if opts.ep > 1 {
        b.comm(CommSite::EpDispatch, dispatched);
    }
    let dispatched = b.reshape(dispatched, &[local, capacity, h])?;
    let out = mlp_body(b, cfg, &format!("{name}.experts"), dispatched, cfg.expert_ffn / opts.tp, Some(local))?;
    if opts.tp > 1 {
        b.comm(CommSite::TpAllReduce, out);
    }
    if opts.ep > 1 {
        b.comm(CommSite::EpCombine, out);
    }
    let gate_flat = b.reshape(gates, &[tokens * cfg.experts])?;
    let gate_index = b.input(&format!("{name}.gate_index"), DType::I64, &[slots]);
    let gate = b.op(Op::Gather { axis: 0 }, &[gate_flat, gate_index])?;
    let gate = b.reshape(gate, &[local, capacity, 1])?;
    let gate = b.broadcast(gate, &[local, capacity, h])?;
    let weighted = b.binary(BinaryOp::Mul, out, gate)?;
    let weighted = b.reshape(weighted, &[slots, h])?;
    let index = b.reshape(route, &[slots, 1])?;
    let index = b.broadcast(index, &[slots, h])?;
    let base = b.reshape(base, &[tokens, h])?;
    let combined = b.op(Op::Scatter { axis: 0, reduction: ScatterReduction::Add }, &[base, index, weighted])?;
    b.role = Role::Replicated;
    b.reshape(combined, &[batch, seq, h])
}

/// Final norm, projection onto this rank's vocabulary slice (the embedding table when tied)
/// and the softmax of the cross-entropy, in f32 as Megatron computes it.
pub(crate) fn head(
    b: &mut Builder,
    cfg: &ModelConfig,
    opts: &BlockShape,
    x: ValueId,
    table: Option<ValueId>,
) -> Result<ValueId, ZooError> {
    let h = cfg.hidden;
    let vocab_local = cfg.vocab.div_ceil(opts.tp);
    b.role = Role::Replicated;
    if cfg.family == Family::Bert {
        // An encoder's output is its last hidden state (already normed, post-LN).
        return Ok(x);
    }
    let normed = norm(b, cfg, x, "final_norm", h)?;
    b.role = Role::TensorParallel;
    let w = if cfg.tied_embeddings {
        let table = match table {
            Some(t) => t,
            // A head built alone keeps its own copy of the tied table, as the last pipeline
            // stage does.
            None => b.param("embed.tokens", &[vocab_local, h]),
        };
        b.transpose(table, &[1, 0])?
    } else {
        b.param("head.weight", &[h, vocab_local])
    };
    let logits = b.matmul(normed, w)?;
    // At least f32 (an f64 model, used for exact comparisons, stays f64).
    let logits = if cfg.dtype == DType::F64 { logits } else { b.op(Op::Cast { to: DType::F32 }, &[logits])? };
    let probs = b.op(Op::Softmax { axis: -1 }, &[logits])?;
    b.role = Role::Replicated;
    Ok(probs)
}
