//! The serving programs of a zoo model: four token-parallel graphs over `rows` tokens
//! (embedding, a layer's attention input, a layer's output and MLP, the head), as
//! [`tessera_ir::serving`] describes them. Attention itself is not in them: the serving engine
//! runs it over the paged KV cache between `layer_in` and `layer_out`.
//!
//! Parameters carry the zoo's names, so weights bind the same way to these graphs and to
//! [`crate::zoo::build::build_model`]'s: the layer graphs name a layer's weights with the
//! prefix [`LAYER_PREFIX`] instead of `l{i}` (the engine binds layer `i`'s weights to one
//! binding of each), and use the zoo's fused layouts (head-interleaved QKV, paired gate/up
//! columns; see [`crate::zoo::layers`]). Serving graphs are f32 whatever the spec's dtype.

use crate::zoo::builder::Builder;
use crate::zoo::config::{Family, GraphForm, Mlp, ModelConfig, Norm, Position, Qkv};
use crate::zoo::ZooError;
use tessera_ir::dtype::DType;
use tessera_ir::graph::{Graph, ValueId};
use tessera_ir::ops::elementwise::{BinaryOp, UnaryOp};
use tessera_ir::ops::Op;
use tessera_ir::serving::{names, LAYER_PREFIX};

/// What a checkpoint's architecture fixes beyond [`ModelConfig`]: the zoo's own graphs use
/// [`ServeArch::ZOO`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServeArch {
    /// Epsilon of every LayerNorm or RMSNorm.
    pub norm_epsilon: f64,
    /// The GELU of a GELU MLP: exact (`gelu`) or the tanh approximation (`gelu_tanh`, GPT-2's
    /// `gelu_new`).
    pub gelu: UnaryOp,
}

impl ServeArch {
    /// The zoo's norms and GELU (as `zoo::layers` builds them).
    pub const ZOO: ServeArch = ServeArch { norm_epsilon: 1e-5, gelu: UnaryOp::Gelu };
}

/// The serving graphs (see the module doc).
#[derive(Debug, Clone)]
pub struct ServeGraphs {
    pub embed: Graph,
    /// Outputs `q [rows, heads * head_dim]`, `k` and `v` `[rows, kv_heads * head_dim]`, rotary
    /// embedding applied (a rank's heads with tensor parallelism).
    pub layer_in: Graph,
    pub layer_out: LayerOutGraphs,
    /// Output: logits `f32 [rows, vocab]`.
    pub head: Graph,
}

/// What follows attention in a layer: one graph, or (tensor parallelism) the two halves whose
/// partial sums the ranks all-reduce.
#[derive(Debug, Clone)]
pub enum LayerOutGraphs {
    /// `LAYER_OUT`: output projection, residual, norm, MLP, residual.
    Whole(Box<Graph>),
    /// `ATTN_OUT`: `context [rows, heads/tp * head_dim]` times the rank's rows of the output
    /// projection, a partial `[rows, hidden]`; `MLP`: from the stream after attention's
    /// residual, norm, the rank's up-projection columns, activation and down-projection rows,
    /// a partial `[rows, hidden]`. Residuals and row-parallel biases are the engine's.
    Split { attn_out: Box<Graph>, mlp: Box<Graph> },
}

impl ServeGraphs {
    /// The graphs with their program names, in [`tessera_ir::serving::PROGRAMS`] order
    /// ([`tessera_ir::serving::TP_PROGRAMS`] when split).
    pub fn named(&self) -> Vec<(&'static str, &Graph)> {
        use tessera_ir::serving::{ATTN_OUT, EMBED, HEAD, LAYER_IN, LAYER_OUT, MLP};
        let mut named = vec![(EMBED, &self.embed), (LAYER_IN, &self.layer_in)];
        match &self.layer_out {
            LayerOutGraphs::Whole(g) => named.push((LAYER_OUT, &**g)),
            LayerOutGraphs::Split { attn_out, mlp } => named.extend([(ATTN_OUT, &**attn_out), (MLP, &**mlp)]),
        }
        named.push((HEAD, &self.head));
        named
    }
}

/// How tensor parallelism splits a parameter (by its name, the zoo's, with `l{i}` or
/// [`LAYER_PREFIX`]): a rank's shard is a contiguous slice of whole rows or columns because
/// the zoo's fused layouts keep a key/value head's query heads, key and value together
/// (QKV) and pair each gate column with its up column (SwiGLU).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TpSplit {
    /// The same whole tensor on every rank (embedding, norms, head, row-parallel biases).
    Replicated,
    /// Rank `r` of `n` holds the `r`-th of `n` equal slices of the last axis (Q/K/V and MLP up
    /// projections and their biases).
    Columns,
    /// Rank `r` of `n` holds the `r`-th of `n` equal slices of the first axis (attention output
    /// and MLP down projections).
    Rows,
}

/// The split of parameter `name` (see [`TpSplit`]).
pub fn tp_split(name: &str) -> TpSplit {
    const COLUMNS: [&str; 5] = [".attn.qkv.", ".attn.q.", ".attn.k.", ".attn.v.", ".mlp.fc1."];
    const ROWS: [&str; 2] = [".attn.out.weight", ".mlp.down.weight"];
    if COLUMNS.iter().any(|part| name.contains(part)) || name.ends_with(".mlp.gate_up.weight") {
        TpSplit::Columns
    } else if ROWS.iter().any(|part| name.ends_with(part)) {
        TpSplit::Rows
    } else {
        TpSplit::Replicated
    }
}

/// Refuses a tensor-parallel degree that does not divide the query heads, the key/value heads
/// (each rank attends with whole GQA groups) and the MLP width.
pub fn check_tensor_parallel(cfg: &ModelConfig, ranks: u64) -> Result<(), String> {
    if ranks == 0 {
        return Err("tp must be at least 1".into());
    }
    for (what, n) in [("attention heads", cfg.heads), ("key/value heads", cfg.kv_heads), ("MLP width (ffn)", cfg.ffn)] {
        if n % ranks != 0 {
            return Err(format!("tp={ranks} does not divide the model's {n} {what}"));
        }
    }
    Ok(())
}

/// Refuses what the serving graphs do not build: MoE, MLA, BERT, ONNX-form graphs.
pub fn check_servable(cfg: &ModelConfig) -> Result<(), ZooError> {
    cfg.validate()?;
    let refuse = |message: &str| {
        Err(ZooError::Build { model: cfg.name.clone(), what: "serving programs".into(), message: message.into() })
    };
    if !matches!(cfg.family, Family::Gpt | Family::Llama) || cfg.is_moe() || cfg.is_mla() {
        return refuse("serving builds dense GPT and Llama models (no experts, no latent attention, no encoders)");
    }
    if cfg.form != GraphForm::Zoo {
        return refuse("serving builds form=zoo graphs");
    }
    Ok(())
}

/// Builds the four serving graphs of `cfg` over `rows` tokens per run.
pub fn build_serving(cfg: &ModelConfig, arch: &ServeArch, rows: u64) -> Result<ServeGraphs, ZooError> {
    build_serving_tp(cfg, arch, rows, 1)
}

/// Builds the serving graphs of one rank of `ranks` (tensor parallelism; every rank's graphs
/// are the same, only their weights differ): [`LayerOutGraphs::Split`] for more than one rank,
/// [`build_serving`]'s graphs for one.
pub fn build_serving_tp(cfg: &ModelConfig, arch: &ServeArch, rows: u64, ranks: u64) -> Result<ServeGraphs, ZooError> {
    check_servable(cfg)?;
    check_tensor_parallel(cfg, ranks).map_err(|message| ZooError::Build {
        model: cfg.name.clone(),
        what: "tensor-parallel serving programs".into(),
        message,
    })?;
    if ranks > 1 {
        // A rank's layer programs are the layer programs of a model with its share of the
        // heads and of the MLP width.
        let shard = ModelConfig {
            heads: cfg.heads / ranks,
            kv_heads: cfg.kv_heads / ranks,
            ffn: cfg.ffn / ranks,
            ..cfg.clone()
        };
        let whole = build_serving_tp(cfg, arch, rows, 1)?;
        let name = |part: &str| format!("{}_{part}", cfg.name.replace(|c: char| !c.is_ascii_alphanumeric(), "_"));
        let mut b = Builder::new(&name("layer_in"), &cfg.name, DType::F32);
        let outs = layer_in(&mut b, &shard, arch, rows)?;
        let layer_in = b.finish(outs).graph;
        let mut b = Builder::new(&name("attn_out"), &cfg.name, DType::F32);
        let out = attn_out(&mut b, &shard, rows)?;
        let attn_out = b.finish(vec![out]).graph;
        let mut b = Builder::new(&name("mlp"), &cfg.name, DType::F32);
        let out = mlp(&mut b, &shard, arch, rows)?;
        let mlp = b.finish(vec![out]).graph;
        let layer_out = LayerOutGraphs::Split { attn_out: Box::new(attn_out), mlp: Box::new(mlp) };
        return Ok(ServeGraphs { layer_in, layer_out, ..whole });
    }
    let name = |part: &str| format!("{}_{part}", cfg.name.replace(|c: char| !c.is_ascii_alphanumeric(), "_"));
    let mut b = Builder::new(&name("embed"), &cfg.name, DType::F32);
    let out = embed(&mut b, cfg, rows)?;
    let embed = b.finish(vec![out]).graph;
    let mut b = Builder::new(&name("layer_in"), &cfg.name, DType::F32);
    let outs = layer_in(&mut b, cfg, arch, rows)?;
    let layer_in = b.finish(outs).graph;
    let mut b = Builder::new(&name("layer_out"), &cfg.name, DType::F32);
    let out = layer_out(&mut b, cfg, arch, rows)?;
    let layer_out = LayerOutGraphs::Whole(Box::new(b.finish(vec![out]).graph));
    let mut b = Builder::new(&name("head"), &cfg.name, DType::F32);
    let out = head(&mut b, cfg, arch, rows)?;
    let head = b.finish(vec![out]).graph;
    Ok(ServeGraphs { embed, layer_in, layer_out, head })
}

fn embed(b: &mut Builder, cfg: &ModelConfig, rows: u64) -> Result<ValueId, ZooError> {
    let ids = b.input(names::TOKENS, DType::I64, &[rows]);
    let table = b.param("embed.tokens", &[cfg.vocab, cfg.hidden]);
    let x = b.op(Op::Gather { axis: 0 }, &[table, ids])?;
    if cfg.position != Position::Learned {
        return Ok(x);
    }
    let positions = b.input(names::POSITIONS, DType::I64, &[rows]);
    let pos_table = b.param("embed.positions", &[cfg.seq, cfg.hidden]);
    let p = b.op(Op::Gather { axis: 0 }, &[pos_table, positions])?;
    b.binary(BinaryOp::Add, x, p)
}

/// LayerNorm or RMSNorm of `x` with the parameters `{name}.scale` (and `{name}.bias`).
fn norm(b: &mut Builder, cfg: &ModelConfig, arch: &ServeArch, x: ValueId, name: &str) -> Result<ValueId, ZooError> {
    let scale = b.param(&format!("{name}.scale"), &[cfg.hidden]);
    let epsilon = arch.norm_epsilon;
    match cfg.norm {
        Norm::Layer => {
            let bias = b.param(&format!("{name}.bias"), &[cfg.hidden]);
            b.op(Op::LayerNorm { axis: -1, epsilon }, &[x, scale, bias])
        }
        Norm::Rms => b.op(Op::RmsNorm { axis: -1, epsilon }, &[x, scale]),
    }
}

/// `x @ {name}.weight [+ {name}.bias]`.
fn linear(b: &mut Builder, cfg: &ModelConfig, x: ValueId, name: &str, in_out: [u64; 2]) -> Result<ValueId, ZooError> {
    let w = b.param(&format!("{name}.weight"), &in_out);
    let y = b.matmul(x, w)?;
    if !cfg.bias {
        return Ok(y);
    }
    let bias = b.param(&format!("{name}.bias"), &[in_out[1]]);
    b.add_bias(y, bias)
}

/// Rotary embedding of `x [rows, n * d]` per head, angles `cos`/`sin [rows, d / 2]`.
fn rotate(b: &mut Builder, x: ValueId, n: u64, d: u64, cos: ValueId, sin: ValueId) -> Result<ValueId, ZooError> {
    let rows = b.shape(x)[0];
    let heads = b.reshape(x, &[rows, n, d])?;
    let heads = b.transpose(heads, &[1, 0, 2])?;
    let rotated = b.op(Op::Rope { interleaved: false }, &[heads, cos, sin])?;
    let rows_first = b.transpose(rotated, &[1, 0, 2])?;
    b.reshape(rows_first, &[rows, n * d])
}

fn layer_in(b: &mut Builder, cfg: &ModelConfig, arch: &ServeArch, rows: u64) -> Result<Vec<ValueId>, ZooError> {
    let (h, heads, kv, dh) = (cfg.hidden, cfg.heads, cfg.kv_heads, cfg.head_dim);
    let x = b.stream_input(names::STREAM, DType::F32, &[rows, h]);
    let normed = norm(b, cfg, arch, x, &format!("{LAYER_PREFIX}.attn_norm"))?;
    let attn = format!("{LAYER_PREFIX}.attn");
    let (q, k, v) = match cfg.qkv {
        Qkv::Fused => {
            // The zoo's head-interleaved layout: per key/value head, its query heads, its key,
            // its value (see `zoo::layers`).
            let group = heads / kv;
            let qkv = linear(b, cfg, normed, &format!("{attn}.qkv"), [h, kv * (group + 2) * dh])?;
            let per_kv_head = b.reshape(qkv, &[rows, kv, (group + 2) * dh])?;
            let parts = b.split(per_kv_head, -1, &[group * dh, dh, dh])?;
            let q = b.reshape(parts[0], &[rows, heads * dh])?;
            let k = b.reshape(parts[1], &[rows, kv * dh])?;
            let v = b.reshape(parts[2], &[rows, kv * dh])?;
            (q, k, v)
        }
        Qkv::Separate => (
            linear(b, cfg, normed, &format!("{attn}.q"), [h, heads * dh])?,
            linear(b, cfg, normed, &format!("{attn}.k"), [h, kv * dh])?,
            linear(b, cfg, normed, &format!("{attn}.v"), [h, kv * dh])?,
        ),
    };
    if cfg.position != Position::Rope {
        return Ok(vec![q, k, v]);
    }
    let cos = b.input(names::COS, DType::F32, &[rows, dh / 2]);
    let sin = b.input(names::SIN, DType::F32, &[rows, dh / 2]);
    let q = rotate(b, q, heads, dh, cos, sin)?;
    let k = rotate(b, k, kv, dh, cos, sin)?;
    Ok(vec![q, k, v])
}

fn layer_out(b: &mut Builder, cfg: &ModelConfig, arch: &ServeArch, rows: u64) -> Result<ValueId, ZooError> {
    let x = b.stream_input(names::STREAM, DType::F32, &[rows, cfg.hidden]);
    let attn_out = attn_projection(b, cfg, rows)?;
    let x = residual(b, cfg, x, attn_out, &format!("{LAYER_PREFIX}.attn"))?;
    let down = mlp_down(b, cfg, arch, x, rows)?;
    residual(b, cfg, x, down, &format!("{LAYER_PREFIX}.mlp"))
}

/// `ATTN_OUT`: a rank's part of the attention output projection (without its bias).
fn attn_out(b: &mut Builder, shard: &ModelConfig, rows: u64) -> Result<ValueId, ZooError> {
    attn_projection(b, shard, rows)
}

/// `MLP`: a rank's part of the MLP from the stream after attention (without the down
/// projection's bias and the residual).
fn mlp(b: &mut Builder, shard: &ModelConfig, arch: &ServeArch, rows: u64) -> Result<ValueId, ZooError> {
    let x = b.stream_input(names::STREAM, DType::F32, &[rows, shard.hidden]);
    mlp_down(b, shard, arch, x, rows)
}

/// `context @ {layer}.attn.out.weight`.
fn attn_projection(b: &mut Builder, cfg: &ModelConfig, rows: u64) -> Result<ValueId, ZooError> {
    let context = b.input(names::CONTEXT, DType::F32, &[rows, cfg.heads * cfg.head_dim]);
    let w_out = b.param(&format!("{LAYER_PREFIX}.attn.out.weight"), &[cfg.heads * cfg.head_dim, cfg.hidden]);
    b.matmul(context, w_out)
}

/// The MLP of `x` up to its down projection (no bias): norm, up projection, activation, down.
fn mlp_down(b: &mut Builder, cfg: &ModelConfig, arch: &ServeArch, x: ValueId, rows: u64) -> Result<ValueId, ZooError> {
    let (h, ffn) = (cfg.hidden, cfg.ffn);
    let normed = norm(b, cfg, arch, x, &format!("{LAYER_PREFIX}.mlp_norm"))?;
    let mlp = format!("{LAYER_PREFIX}.mlp");
    let act = match cfg.mlp {
        Mlp::Gelu => {
            let y = linear(b, cfg, normed, &format!("{mlp}.fc1"), [h, ffn])?;
            b.unary(arch.gelu, y)?
        }
        Mlp::Swiglu => {
            // Gate and up columns paired (the zoo's fused layout).
            let w = b.param(&format!("{mlp}.gate_up.weight"), &[h, 2 * ffn]);
            let y = b.matmul(normed, w)?;
            let pairs = b.reshape(y, &[rows, ffn, 2])?;
            let parts = b.split(pairs, -1, &[1, 1])?;
            let gate = b.reshape(parts[0], &[rows, ffn])?;
            let up = b.reshape(parts[1], &[rows, ffn])?;
            let gate = b.unary(UnaryOp::Silu, gate)?;
            b.binary(BinaryOp::Mul, gate, up)?
        }
    };
    let w_down = b.param(&format!("{mlp}.down.weight"), &[ffn, h]);
    b.matmul(act, w_down)
}

/// `x + out [+ {name}.out.bias]` (the zoo's row-parallel bias name).
fn residual(b: &mut Builder, cfg: &ModelConfig, x: ValueId, out: ValueId, name: &str) -> Result<ValueId, ZooError> {
    let out = if cfg.bias {
        let bias = b.param(&format!("{name}.out.bias"), &[cfg.hidden]);
        b.add_bias(out, bias)?
    } else {
        out
    };
    b.binary(BinaryOp::Add, x, out)
}

fn head(b: &mut Builder, cfg: &ModelConfig, arch: &ServeArch, rows: u64) -> Result<ValueId, ZooError> {
    let x = b.stream_input(names::STREAM, DType::F32, &[rows, cfg.hidden]);
    let normed = norm(b, cfg, arch, x, "final_norm")?;
    let w = if cfg.tied_embeddings {
        let table = b.param("embed.tokens", &[cfg.vocab, cfg.hidden]);
        b.transpose(table, &[1, 0])?
    } else {
        b.param("head.weight", &[cfg.hidden, cfg.vocab])
    };
    b.matmul(normed, w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoo::build::build_model;
    use std::collections::BTreeMap;
    use tessera_ir::graph::InputRole;

    fn params(g: &Graph) -> BTreeMap<String, Vec<u64>> {
        g.inputs()
            .iter()
            .filter(|&&v| g.input_role(v) == Some(InputRole::Parameter))
            .map(|&v| (g.value(v).name.clone(), g.value(v).ty.static_shape().unwrap_or_default()))
            .collect()
    }

    /// Every parameter of the serving graphs is a parameter of the zoo's whole-model graph, with
    /// its shape (layer `i`'s under `l{i}`), and together they cover all of them: weights
    /// bind to both by the same names.
    #[test]
    fn serving_parameters_are_the_zoo_models_parameters() {
        for spec in [
            "gpt:layers=2,hidden=64,heads=4,vocab=300,seq=128",
            "llama:layers=2,hidden=64,heads=4,kv_heads=2,vocab=300",
        ] {
            let cfg = crate::zoo::spec::parse(spec).unwrap();
            let whole = params(&build_model(&cfg, &cfg.block_shape()).unwrap().graph);
            let serving = build_serving(&cfg, &ServeArch::ZOO, 16).unwrap();
            let mut covered = BTreeMap::new();
            for (_, g) in serving.named() {
                for (name, shape) in params(g) {
                    match name.strip_prefix(&format!("{LAYER_PREFIX}.")) {
                        Some(rest) => (0..cfg.layers).for_each(|i| {
                            covered.insert(format!("l{i}.{rest}"), shape.clone());
                        }),
                        None => {
                            covered.insert(name, shape);
                        }
                    }
                }
            }
            assert_eq!(covered, whole, "{spec}");
        }
    }

    /// A rank's parameters of `tp=2` are the one-rank parameters by name, each its shape with
    /// the axis [`tp_split`] names halved; the row-parallel biases alone are left to the
    /// engine; a tp that does not divide the key/value heads is refused.
    #[test]
    fn rank_parameters_are_halves_of_the_whole_ones() {
        for spec in [
            "gpt:layers=2,hidden=64,heads=4,vocab=300,seq=128",
            "llama:layers=2,hidden=64,heads=4,kv_heads=2,vocab=300",
            "llama:layers=1,hidden=64,heads=4,kv_heads=2,vocab=300,qkv=separate",
        ] {
            let cfg = crate::zoo::spec::parse(spec).unwrap();
            let all = |graphs: &ServeGraphs| -> BTreeMap<String, Vec<u64>> {
                graphs.named().into_iter().flat_map(|(_, g)| params(g)).collect()
            };
            let whole = all(&build_serving(&cfg, &ServeArch::ZOO, 4).unwrap());
            let rank = build_serving_tp(&cfg, &ServeArch::ZOO, 4, 2).unwrap();
            let names: Vec<&str> = rank.named().iter().map(|(name, _)| *name).collect();
            assert_eq!(names, tessera_ir::serving::TP_PROGRAMS, "{spec}");
            let rank = all(&rank);
            for (name, shape) in &whole {
                let Some(shard) = rank.get(name) else {
                    assert!(name.ends_with(".out.bias"), "{spec}: {name} is on no rank");
                    continue;
                };
                let mut want = shape.clone();
                match tp_split(name) {
                    TpSplit::Replicated => {}
                    TpSplit::Rows => want[0] /= 2,
                    TpSplit::Columns => *want.last_mut().unwrap() /= 2,
                }
                assert_eq!(shard, &want, "{spec}: {name} ({:?})", tp_split(name));
            }
            assert!(rank.keys().all(|name| whole.contains_key(name)), "{spec}");
        }
        let cfg = crate::zoo::spec::parse("llama:layers=2,hidden=64,heads=4,kv_heads=2,vocab=300").unwrap();
        let err = build_serving_tp(&cfg, &ServeArch::ZOO, 4, 4).unwrap_err();
        assert!(err.to_string().contains("tp=4 does not divide the model's 2 key/value heads"), "{err}");
    }

    #[test]
    fn experts_are_refused() {
        let cfg = crate::zoo::spec::parse("moe:layers=2,hidden=64,heads=4,experts=4").unwrap();
        let err = build_serving(&cfg, &ServeArch::ZOO, 16).unwrap_err();
        assert!(err.to_string().contains("dense GPT and Llama"), "{err}");
    }
}
