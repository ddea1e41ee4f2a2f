//! Model specs: `PRESET`, `PRESET:key=value,...` or `FAMILY:key=value,...`.
//!
//! A family spec (`gpt`, `llama`, `moe`) must give `layers`, `hidden` and `heads`; everything
//! else takes the family's default. Overrides on a preset change only what they name, except
//! that derived sizes follow their sources unless given too: `head_dim` follows
//! `hidden / heads`, `kv_heads` follows `heads` when the base had plain multi-head attention,
//! and a GPT's `ffn` follows `4 * hidden`.
//!
//! ```
//! use tessera_frontend::zoo::spec::parse;
//! let cfg = parse("gpt:layers=96,hidden=12288,heads=96,seq=2048,vocab=51200").unwrap();
//! assert_eq!((cfg.ffn, cfg.head_dim), (4 * 12288, 128));
//! let small = parse("llama3-8b:layers=2").unwrap();
//! assert_eq!((small.layers, small.kv_heads), (2, 8));
//! ```

use crate::zoo::config::{Family, GraphForm, Mlp, ModelConfig, Norm, Position, Qkv};
use crate::zoo::presets;
use crate::zoo::ZooError;
use tessera_ir::dtype::DType;

/// Every key a spec may set, in the order they are listed in errors.
pub const KEYS: [&str; 29] = [
    "layers",
    "hidden",
    "heads",
    "kv_heads",
    "head_dim",
    "ffn",
    "vocab",
    "seq",
    "norm",
    "mlp",
    "position",
    "bias",
    "tied",
    "dropout",
    "experts",
    "top_k",
    "expert_ffn",
    "shared_experts",
    "dense_layers",
    "capacity_factor",
    "q_lora_rank",
    "kv_lora_rank",
    "qk_nope_dim",
    "qk_rope_dim",
    "v_head_dim",
    "dtype",
    "qkv",
    "form",
    "name",
];

/// Resolves a spec to a validated config.
pub fn parse(spec: &str) -> Result<ModelConfig, ZooError> {
    let spec = spec.trim();
    let (base_name, rest) = match spec.split_once(':') {
        Some((b, r)) => (b.trim(), Some(r)),
        None => (spec, None),
    };
    let mut items: Vec<(String, String)> = Vec::new();
    for item in tessera_ir::key_value::non_empty_items(rest.unwrap_or("")) {
        let (key, value) =
            item.key_value().ok_or_else(|| ZooError::Syntax { spec: spec.to_string(), item: item.text.to_string() })?;
        if !KEYS.contains(&key) {
            return Err(ZooError::UnknownKey { spec: spec.to_string(), key: key.to_string(), known: KEYS.join(", ") });
        }
        if items.iter().any(|(k, _)| k == key) {
            let message = "is given twice".to_string();
            return Err(ZooError::BadValue { spec: spec.into(), key: key.into(), value: value.into(), message });
        }
        items.push((key.to_string(), value.to_string()));
    }
    let given = |key: &str| items.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let int = |key: &str| -> Result<Option<u64>, ZooError> { given(key).map(|v| integer(spec, key, v)).transpose() };

    let mut cfg = if let Some(family) = Family::from_name(base_name) {
        let missing: Vec<&str> = ["layers", "hidden", "heads"].into_iter().filter(|k| given(k).is_none()).collect();
        if !missing.is_empty() {
            return Err(ZooError::Missing {
                spec: spec.to_string(),
                family: family.name().to_string(),
                missing: missing.join(", "),
            });
        }
        let (layers, hidden, heads) =
            (int("layers")?.unwrap_or(0), int("hidden")?.unwrap_or(0), int("heads")?.unwrap_or(0));
        ModelConfig::family_default(family, spec, layers, hidden, heads)
    } else if let Some(mut preset) = presets::preset(base_name) {
        if rest.is_some() {
            preset.name = spec.to_string();
        }
        preset
    } else {
        return Err(ZooError::UnknownModel { name: base_name.to_string(), presets: presets::NAMES.join(", ") });
    };

    // Derived sizes follow their sources (see the module doc) before explicit keys apply.
    let plain_mha = cfg.kv_heads == cfg.heads;
    let gpt_ffn = cfg.family == Family::Gpt && cfg.ffn == 4 * cfg.hidden;
    if let Some(hidden) = int("hidden")? {
        cfg.hidden = hidden;
        if gpt_ffn {
            cfg.ffn = 4 * hidden;
        }
    }
    if let Some(heads) = int("heads")? {
        cfg.heads = heads;
        if plain_mha {
            cfg.kv_heads = heads;
        }
    }
    if (given("hidden").is_some() || given("heads").is_some()) && !cfg.is_mla() {
        cfg.head_dim = cfg.hidden.checked_div(cfg.heads).unwrap_or(0);
    }

    for (key, value) in &items {
        apply_key(&mut cfg, spec, key, value)?;
    }
    // A dense model that gains experts through overrides gets the family's expert defaults.
    if cfg.experts > 0 && cfg.expert_ffn == 0 {
        cfg.expert_ffn = cfg.ffn;
    }
    if cfg.experts > 0 && cfg.top_k == 0 {
        cfg.top_k = cfg.experts.min(2);
    }
    cfg.validate()?;
    Ok(cfg)
}

/// A non-negative integer value (`_` separators allowed) of `key`.
fn integer(spec: &str, key: &str, value: &str) -> Result<u64, ZooError> {
    value.replace('_', "").parse::<u64>().map_err(|_| ZooError::BadValue {
        spec: spec.to_string(),
        key: key.to_string(),
        value: value.to_string(),
        message: "expected a non-negative integer".to_string(),
    })
}

/// Applies one explicit `key=value` of `spec` to `cfg` (after the derived sizes).
fn apply_key(cfg: &mut ModelConfig, spec: &str, key: &str, value: &str) -> Result<(), ZooError> {
    let bad = |message: &str| ZooError::BadValue {
        spec: spec.to_string(),
        key: key.to_string(),
        value: value.to_string(),
        message: message.to_string(),
    };
    let n = || integer(spec, key, value);
    let float = || value.parse::<f64>().map_err(|_| bad("expected a number"));
    let flag = || match value {
        "true" | "on" | "1" => Ok(true),
        "false" | "off" | "0" => Ok(false),
        _ => Err(bad("expected true or false")),
    };
    match key {
        "hidden" | "heads" => {}
        "layers" => cfg.layers = n()?,
        "kv_heads" => cfg.kv_heads = n()?,
        "head_dim" => cfg.head_dim = n()?,
        "ffn" => cfg.ffn = n()?,
        "vocab" => cfg.vocab = n()?,
        "seq" => cfg.seq = n()?,
        "norm" => {
            cfg.norm = match value {
                "layer" | "layernorm" => Norm::Layer,
                "rms" | "rmsnorm" => Norm::Rms,
                _ => return Err(bad("expected layer or rms")),
            }
        }
        "mlp" => {
            cfg.mlp = match value {
                "gelu" => Mlp::Gelu,
                "swiglu" => Mlp::Swiglu,
                _ => return Err(bad("expected gelu or swiglu")),
            }
        }
        "position" => {
            cfg.position = match value {
                "learned" => Position::Learned,
                "rope" => Position::Rope,
                _ => return Err(bad("expected learned or rope")),
            }
        }
        "bias" => cfg.bias = flag()?,
        "tied" => cfg.tied_embeddings = flag()?,
        "dropout" => cfg.dropout = float()?,
        "experts" => cfg.experts = n()?,
        "top_k" => cfg.top_k = n()?,
        "expert_ffn" => cfg.expert_ffn = n()?,
        "shared_experts" => cfg.shared_experts = n()?,
        "dense_layers" => cfg.dense_layers = n()?,
        "capacity_factor" => cfg.capacity_factor = float()?,
        "q_lora_rank" => cfg.q_lora_rank = n()?,
        "kv_lora_rank" => cfg.kv_lora_rank = n()?,
        "qk_nope_dim" => cfg.qk_nope_dim = n()?,
        "qk_rope_dim" => cfg.qk_rope_dim = n()?,
        "v_head_dim" => cfg.v_head_dim = n()?,
        "dtype" => {
            cfg.dtype = match value {
                "bf16" => DType::BF16,
                "fp16" | "f16" => DType::F16,
                "fp32" | "f32" => DType::F32,
                // For exact comparisons (multi-rank against one rank) in tests.
                "fp64" | "f64" => DType::F64,
                _ => return Err(bad("expected bf16, fp16, fp32 or fp64")),
            }
        }
        "qkv" => {
            cfg.qkv = match value {
                "fused" => Qkv::Fused,
                "separate" => Qkv::Separate,
                _ => return Err(bad("expected fused or separate")),
            }
        }
        "form" => {
            cfg.form = match value {
                "zoo" => GraphForm::Zoo,
                "onnx" => GraphForm::Onnx,
                _ => return Err(bad("expected zoo or onnx")),
            }
        }
        "name" => cfg.name = value.to_string(),
        _ => unreachable!("keys are checked against KEYS above"),
    }
    Ok(())
}
