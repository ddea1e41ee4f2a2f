//! Hugging Face checkpoint directories: `config.json` and `*.safetensors` of the GPT-2 and Llama
//! families, mapped onto the zoo's models.
//!
//! [`Checkpoint::open`] reads `config.json` into a zoo [`ModelConfig`] (plus the
//! [`ServeArch`] and positions that the zoo's spec does not fix: norm epsilon, GELU variant,
//! rotary base and scaling) and memory-maps every `.safetensors` file (nothing is read until a
//! weight is asked for). [`Checkpoint::weight`] gives a parameter by its zoo name
//! (`l0.attn.qkv.weight`) as f32, converted from the checkpoint's layout:
//! - GPT-2 stores `Conv1D` weights `[in, out]` like the zoo; its fused `c_attn` is `[q | k | v]`
//!   blocks, which are reordered to the zoo's head-interleaved columns;
//! - Llama stores `nn.Linear` weights `[out, in]`: transposed; `gate_proj` and `up_proj` become
//!   the zoo's one `gate_up` weight with paired columns.
//!
//! Errors name the file and the tensor: a missing tensor, one of the wrong shape or of an
//! unsupported dtype, a config key missing or of the wrong type, a feature tessera does not
//! build (biased Llama projections, GPT-2's per-layer attention scaling).

use crate::zoo::config::{Family, Mlp, ModelConfig, Norm, Position, Qkv};
use crate::zoo::serve::ServeArch;
use memmap2::Mmap;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tessera_ir::dtype::DType;
use tessera_ir::ops::elementwise::UnaryOp;
use tessera_ir::serving::{Positions, Rope, RopeScaling};

/// Why a checkpoint cannot be read; each names the file (and the key or tensor).
#[derive(Debug, thiserror::Error)]
pub enum HfError {
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{path}: not a safetensors file: {message}")]
    Safetensors { path: PathBuf, message: String },
    #[error("{dir}: no tensor '{tensor}' in any .safetensors file (parameter {param})")]
    Missing { dir: PathBuf, tensor: String, param: String },
    #[error("{path}: tensor '{tensor}' has shape {found:?}, expected {expected:?} (parameter {param})")]
    Shape { path: PathBuf, tensor: String, found: Vec<usize>, expected: Vec<usize>, param: String },
    #[error("{path}: tensor '{tensor}' is {dtype}; tessera reads f32, f16 and bf16")]
    DType { path: PathBuf, tensor: String, dtype: String },
    #[error("{dir}: the model has no parameter '{param}'")]
    UnknownParam { dir: PathBuf, param: String },
}

/// The file a checkpoint's architecture is read from.
pub const CONFIG_FILE: &str = "config.json";
/// The tokenizer beside it (read by the serving runtime).
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// An open checkpoint directory: its architecture and its memory-mapped tensors.
pub struct Checkpoint {
    pub dir: PathBuf,
    pub config: ModelConfig,
    pub arch: ServeArch,
    pub positions: Positions,
    /// `config.json`'s `model_type`.
    pub model_type: String,
    /// `eos_token_id` (the first, where it is a list): generation stops there.
    pub eos_token: Option<u32>,
    files: Vec<(PathBuf, Mmap)>,
    /// Tensor name to the index of its file.
    index: HashMap<String, usize>,
}

/// Whether `dir` looks like a Hugging Face checkpoint (holds a `config.json`).
pub fn is_checkpoint_dir(dir: &Path) -> bool {
    dir.is_dir() && dir.join(CONFIG_FILE).is_file()
}

impl Checkpoint {
    /// Reads `dir/config.json` and maps every `dir/*.safetensors`.
    pub fn open(dir: &Path) -> Result<Checkpoint, HfError> {
        let config_path = dir.join(CONFIG_FILE);
        let io = |path: &Path, e: std::io::Error| HfError::Io { path: path.to_path_buf(), message: e.to_string() };
        let text = std::fs::read_to_string(&config_path).map_err(|e| io(&config_path, e))?;
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| HfError::Config { path: config_path.clone(), message: format!("not JSON: {e}") })?;
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
        let keys = Keys { path: &config_path, json: &json };
        let model_type = keys.string("model_type")?;
        let (config, arch, positions) = match model_type.as_str() {
            "gpt2" => gpt2_config(&keys, &name)?,
            "llama" => llama_config(&keys, &name)?,
            other => {
                let message = format!("model_type '{other}': tessera reads gpt2 and llama checkpoints");
                return Err(HfError::Config { path: config_path, message });
            }
        };
        let eos_token = match keys.get("eos_token_id") {
            Some(Value::Array(ids)) => ids.first().and_then(Value::as_u64),
            Some(id) => id.as_u64(),
            None => None,
        }
        .and_then(|id| u32::try_from(id).ok());
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| io(dir, e))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        paths.sort();
        if paths.is_empty() {
            return Err(HfError::Io { path: dir.to_path_buf(), message: "no .safetensors file".into() });
        }
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for path in paths {
            let file = std::fs::File::open(&path).map_err(|e| io(&path, e))?;
            // SAFETY: the map is read-only and private to this process; a checkpoint changed on
            // disk while tessera runs is outside what it can guard against (as for any reader).
            let map = unsafe { Mmap::map(&file) }.map_err(|e| io(&path, e))?;
            let (_, metadata) = safetensors::SafeTensors::read_metadata(&map)
                .map_err(|e| HfError::Safetensors { path: path.clone(), message: e.to_string() })?;
            for name in metadata.tensors().keys() {
                index.insert(name.clone(), files.len());
            }
            files.push((path, map));
        }
        Ok(Checkpoint { dir: dir.to_path_buf(), config, arch, positions, model_type, eos_token, files, index })
    }

    /// The parameter `param` (a zoo name) as f32 values in the zoo's layout, checked against
    /// `shape` (the shape the serving graph declares).
    pub fn weight(&self, param: &str, shape: &[u64]) -> Result<Vec<f32>, HfError> {
        let expected: Vec<usize> = shape.iter().map(|&n| n as usize).collect();
        let source =
            self.source(param).ok_or_else(|| HfError::UnknownParam { dir: self.dir.clone(), param: param.into() })?;
        let read = |tensor: &str, want: Vec<usize>| self.read(tensor, &want, param);
        match source {
            Source::Copy(t) => read(&t, expected),
            Source::Transposed(t) => {
                let (rows, cols) = (expected[0], expected[1]);
                let stored = read(&t, vec![cols, rows])?;
                Ok(transpose(&stored, cols, rows))
            }
            Source::QkvBlocks(t) => {
                let stored = read(&t, expected.clone())?;
                let dh = self.config.head_dim as usize;
                Ok(interleave_qkv(&stored, self.config.heads as usize, dh))
            }
            Source::GateUp(gate, up) => {
                let (h, ffn) = (expected[0], expected[1] / 2);
                let gate = transpose(&read(&gate, vec![ffn, h])?, ffn, h);
                let up = transpose(&read(&up, vec![ffn, h])?, ffn, h);
                let mut paired = Vec::with_capacity(h * 2 * ffn);
                for row in 0..h {
                    for j in 0..ffn {
                        paired.push(gate[row * ffn + j]);
                        paired.push(up[row * ffn + j]);
                    }
                }
                Ok(paired)
            }
        }
    }

    /// Where the zoo parameter `param` comes from in this checkpoint.
    fn source(&self, param: &str) -> Option<Source> {
        let (layer, rest) = match param.strip_prefix('l').and_then(|r| r.split_once('.')) {
            Some((i, rest)) if i.parse::<u64>().is_ok() => (Some(i), rest),
            _ => (None, param),
        };
        let gpt = self.config.family == Family::Gpt;
        let copy = |t: String| Some(Source::Copy(t));
        let linear = |t: String| Some(Source::Transposed(t));
        match (gpt, layer, rest) {
            (true, None, "embed.tokens") => copy(self.gpt_name("wte.weight")),
            (true, None, "embed.positions") => copy(self.gpt_name("wpe.weight")),
            (true, None, "final_norm.scale") => copy(self.gpt_name("ln_f.weight")),
            (true, None, "final_norm.bias") => copy(self.gpt_name("ln_f.bias")),
            (true, None, "head.weight") => linear("lm_head.weight".into()),
            (true, Some(i), rest) => {
                let hf = |suffix: &str| self.gpt_name(&format!("h.{i}.{suffix}"));
                match rest {
                    "attn_norm.scale" => copy(hf("ln_1.weight")),
                    "attn_norm.bias" => copy(hf("ln_1.bias")),
                    "attn.qkv.weight" => Some(Source::QkvBlocks(hf("attn.c_attn.weight"))),
                    "attn.qkv.bias" => Some(Source::QkvBlocks(hf("attn.c_attn.bias"))),
                    "attn.out.weight" => copy(hf("attn.c_proj.weight")),
                    "attn.out.bias" => copy(hf("attn.c_proj.bias")),
                    "mlp_norm.scale" => copy(hf("ln_2.weight")),
                    "mlp_norm.bias" => copy(hf("ln_2.bias")),
                    "mlp.fc1.weight" => copy(hf("mlp.c_fc.weight")),
                    "mlp.fc1.bias" => copy(hf("mlp.c_fc.bias")),
                    "mlp.down.weight" => copy(hf("mlp.c_proj.weight")),
                    "mlp.out.bias" => copy(hf("mlp.c_proj.bias")),
                    _ => None,
                }
            }
            (false, None, "embed.tokens") => copy("model.embed_tokens.weight".into()),
            (false, None, "final_norm.scale") => copy("model.norm.weight".into()),
            (false, None, "head.weight") => linear("lm_head.weight".into()),
            (false, Some(i), rest) => {
                let hf = |suffix: &str| format!("model.layers.{i}.{suffix}");
                match rest {
                    "attn_norm.scale" => copy(hf("input_layernorm.weight")),
                    "attn.q.weight" => linear(hf("self_attn.q_proj.weight")),
                    "attn.k.weight" => linear(hf("self_attn.k_proj.weight")),
                    "attn.v.weight" => linear(hf("self_attn.v_proj.weight")),
                    "attn.out.weight" => linear(hf("self_attn.o_proj.weight")),
                    "mlp_norm.scale" => copy(hf("post_attention_layernorm.weight")),
                    "mlp.gate_up.weight" => Some(Source::GateUp(hf("mlp.gate_proj.weight"), hf("mlp.up_proj.weight"))),
                    "mlp.down.weight" => linear(hf("mlp.down_proj.weight")),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// GPT-2 tensors are saved with the `transformer.` prefix by `GPT2LMHeadModel` and
    /// without it by `GPT2Model`; the token table says which this checkpoint uses.
    fn gpt_name(&self, name: &str) -> String {
        if self.index.contains_key("wte.weight") {
            name.to_string()
        } else {
            format!("transformer.{name}")
        }
    }

    /// Tensor `name` as f32, checked to have `shape`.
    fn read(&self, name: &str, shape: &[usize], param: &str) -> Result<Vec<f32>, HfError> {
        let missing = || HfError::Missing { dir: self.dir.clone(), tensor: name.into(), param: param.into() };
        let &file = self.index.get(name).ok_or_else(missing)?;
        let (path, map) = &self.files[file];
        let tensors = safetensors::SafeTensors::deserialize(map)
            .map_err(|e| HfError::Safetensors { path: path.clone(), message: e.to_string() })?;
        let view = tensors.tensor(name).map_err(|_| missing())?;
        if view.shape() != shape {
            return Err(HfError::Shape {
                path: path.clone(),
                tensor: name.into(),
                found: view.shape().to_vec(),
                expected: shape.to_vec(),
                param: param.into(),
            });
        }
        let bytes = view.data();
        let values = match view.dtype() {
            safetensors::Dtype::F32 => {
                bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
            }
            safetensors::Dtype::F16 => {
                bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
            }
            safetensors::Dtype::BF16 => {
                bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
            }
            other => {
                return Err(HfError::DType { path: path.clone(), tensor: name.into(), dtype: format!("{other:?}") })
            }
        };
        Ok(values)
    }
}

/// How a zoo parameter is made from checkpoint tensors.
enum Source {
    /// Same layout.
    Copy(String),
    /// An `nn.Linear` weight `[out, in]`, transposed to `[in, out]`.
    Transposed(String),
    /// GPT-2's `c_attn` (`[.., 3 * hidden]` as `[q | k | v]`) to head-interleaved columns.
    QkvBlocks(String),
    /// Llama's gate and up projections to one weight with paired columns.
    GateUp(String, String),
}

/// `[rows, cols]` to `[cols, rows]`.
fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// Reorders every row of `[.., 3 * heads * dh]` from `[q | k | v]` to per head `[q_h, k_h, v_h]`.
fn interleave_qkv(values: &[f32], heads: usize, dh: usize) -> Vec<f32> {
    let width = 3 * heads * dh;
    let mut out = Vec::with_capacity(values.len());
    for row in values.chunks_exact(width) {
        for h in 0..heads {
            for part in 0..3 {
                let start = part * heads * dh + h * dh;
                out.extend_from_slice(&row[start..start + dh]);
            }
        }
    }
    out
}

/// Typed reads of `config.json` keys, with errors naming the file and key.
struct Keys<'a> {
    path: &'a Path,
    json: &'a Value,
}

impl Keys<'_> {
    fn error(&self, key: &str, message: &str) -> HfError {
        HfError::Config { path: self.path.to_path_buf(), message: format!("key '{key}': {message}") }
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.json.get(key).filter(|v| !v.is_null())
    }

    fn string(&self, key: &str) -> Result<String, HfError> {
        let v = self.get(key).ok_or_else(|| self.error(key, "missing"))?;
        v.as_str().map(str::to_string).ok_or_else(|| self.error(key, "expected a string"))
    }

    fn uint(&self, key: &str) -> Result<u64, HfError> {
        self.uint_or(key, None)
    }

    fn uint_or(&self, key: &str, default: Option<u64>) -> Result<u64, HfError> {
        match self.get(key) {
            None => default.ok_or_else(|| self.error(key, "missing")),
            Some(v) => v.as_u64().filter(|&n| n > 0).ok_or_else(|| self.error(key, "expected a positive integer")),
        }
    }

    fn float_or(&self, key: &str, default: f64) -> Result<f64, HfError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| self.error(key, "expected a number")),
        }
    }

    fn flag_or(&self, key: &str, default: bool) -> Result<bool, HfError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| self.error(key, "expected true or false")),
        }
    }
}

fn gpt2_config(keys: &Keys, name: &str) -> Result<(ModelConfig, ServeArch, Positions), HfError> {
    let (layers, hidden, heads) = (keys.uint("n_layer")?, keys.uint("n_embd")?, keys.uint("n_head")?);
    let mut cfg = ModelConfig::family_default(Family::Gpt, name, layers, hidden, heads);
    cfg.vocab = keys.uint("vocab_size")?;
    cfg.seq = keys.uint("n_positions")?;
    cfg.ffn = keys.uint_or("n_inner", Some(4 * hidden))?;
    cfg.tied_embeddings = keys.flag_or("tie_word_embeddings", true)?;
    (cfg.norm, cfg.mlp, cfg.position, cfg.qkv, cfg.bias) =
        (Norm::Layer, Mlp::Gelu, Position::Learned, Qkv::Fused, true);
    (cfg.dropout, cfg.dtype) = (0.0, DType::F32);
    let gelu = match keys.string("activation_function")?.as_str() {
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => UnaryOp::GeluTanh,
        "gelu" => UnaryOp::Gelu,
        other => return Err(keys.error("activation_function", &format!("'{other}' is not a GELU tessera builds"))),
    };
    for key in ["scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"] {
        if keys.flag_or(key, false)? {
            return Err(keys.error(key, "true is not supported"));
        }
    }
    if !keys.flag_or("scale_attn_weights", true)? {
        return Err(keys.error("scale_attn_weights", "false is not supported"));
    }
    let arch = ServeArch { norm_epsilon: keys.float_or("layer_norm_epsilon", 1e-5)?, gelu };
    check(keys, &cfg)?;
    Ok((cfg, arch, Positions::Learned))
}

fn llama_config(keys: &Keys, name: &str) -> Result<(ModelConfig, ServeArch, Positions), HfError> {
    let (layers, hidden, heads) =
        (keys.uint("num_hidden_layers")?, keys.uint("hidden_size")?, keys.uint("num_attention_heads")?);
    let mut cfg = ModelConfig::family_default(Family::Llama, name, layers, hidden, heads);
    cfg.kv_heads = keys.uint_or("num_key_value_heads", Some(heads))?;
    cfg.head_dim = keys.uint_or("head_dim", Some(hidden / heads))?;
    cfg.ffn = keys.uint("intermediate_size")?;
    cfg.vocab = keys.uint("vocab_size")?;
    cfg.seq = keys.uint("max_position_embeddings")?;
    cfg.tied_embeddings = keys.flag_or("tie_word_embeddings", false)?;
    (cfg.norm, cfg.mlp, cfg.position, cfg.qkv, cfg.bias) =
        (Norm::Rms, Mlp::Swiglu, Position::Rope, Qkv::Separate, false);
    (cfg.dropout, cfg.dtype) = (0.0, DType::F32);
    let act = keys.get("hidden_act").and_then(Value::as_str).unwrap_or("silu");
    if act != "silu" {
        return Err(keys.error("hidden_act", &format!("'{act}': tessera builds silu (SwiGLU)")));
    }
    for key in ["attention_bias", "mlp_bias"] {
        if keys.flag_or(key, false)? {
            return Err(keys.error(key, "biased projections are not supported"));
        }
    }
    let arch = ServeArch { norm_epsilon: keys.float_or("rms_norm_eps", 1e-6)?, gelu: UnaryOp::Gelu };
    let rope = llama_rope(keys)?;
    check(keys, &cfg)?;
    Ok((cfg, arch, Positions::Rotary(rope)))
}

/// The rotary base and scaling: `rope_theta` and `rope_scaling` (transformers 4), or both in
/// `rope_parameters` (transformers 5).
fn llama_rope(keys: &Keys) -> Result<Rope, HfError> {
    let (key, params) = match (keys.get("rope_parameters"), keys.get("rope_scaling")) {
        (Some(p), _) => ("rope_parameters", Some(p)),
        (None, Some(s)) => ("rope_scaling", Some(s)),
        (None, None) => ("rope_scaling", None),
    };
    let top = keys.float_or("rope_theta", 10000.0)?;
    let Some(params) = params else {
        return Ok(Rope { theta: top, scaling: RopeScaling::None });
    };
    let sub = Keys { path: keys.path, json: params };
    let in_key = |e: HfError| match e {
        HfError::Config { path, message } => HfError::Config { path, message: format!("{key}: {message}") },
        other => other,
    };
    let theta = sub.float_or("rope_theta", top).map_err(in_key)?;
    let kind = sub.get("rope_type").or_else(|| sub.get("type")).and_then(Value::as_str).unwrap_or("default");
    let factor = || sub.float_or("factor", 1.0).map_err(in_key);
    let scaling = match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear { factor: factor()? },
        "llama3" => RopeScaling::Llama3 {
            factor: factor()?,
            low_freq_factor: sub.float_or("low_freq_factor", 1.0).map_err(in_key)?,
            high_freq_factor: sub.float_or("high_freq_factor", 4.0).map_err(in_key)?,
            original_max_positions: sub.uint("original_max_position_embeddings").map_err(in_key)? as f64,
        },
        other => {
            return Err(keys.error(key, &format!("rope_type '{other}': tessera builds default, linear and llama3")))
        }
    };
    Ok(Rope { theta, scaling })
}

/// The zoo's own validation, reported against `config.json`.
fn check(keys: &Keys, cfg: &ModelConfig) -> Result<(), HfError> {
    crate::zoo::serve::check_servable(cfg)
        .map_err(|e| HfError::Config { path: keys.path.to_path_buf(), message: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qkv_blocks_become_head_interleaved() {
        // One row, 2 heads of dim 1: [q0 q1 | k0 k1 | v0 v1] -> [q0 k0 v0 q1 k1 v1].
        assert_eq!(interleave_qkv(&[1., 2., 3., 4., 5., 6.], 2, 1), vec![1., 3., 5., 2., 4., 6.]);
    }

    #[test]
    fn transpose_swaps_rows_and_columns() {
        assert_eq!(transpose(&[1., 2., 3., 4., 5., 6.], 2, 3), vec![1., 4., 2., 5., 3., 6.]);
    }

    fn open_config(json: &str) -> Result<Checkpoint, HfError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), json).unwrap();
        Checkpoint::open(dir.path())
    }

    #[test]
    fn config_errors_name_the_file_and_key() {
        let err = open_config(r#"{"model_type": "gpt2", "n_layer": 2, "n_embd": "wide"}"#).err().unwrap();
        assert!(err.to_string().ends_with("config.json: key 'n_embd': expected a positive integer"), "{err}");
        let err = open_config(r#"{"model_type": "bloom"}"#).err().unwrap();
        assert!(err.to_string().contains("model_type 'bloom'"), "{err}");
        let llama = r#"{"model_type": "llama", "num_hidden_layers": 1, "hidden_size": 8, "num_attention_heads": 2,
            "intermediate_size": 16, "vocab_size": 10, "max_position_embeddings": 32, "attention_bias": true}"#;
        let err = open_config(llama).err().unwrap();
        assert!(err.to_string().contains("key 'attention_bias': biased projections"), "{err}");
    }

    #[test]
    fn a_checkpoint_without_weights_is_refused() {
        let gpt = r#"{"model_type": "gpt2", "n_layer": 1, "n_embd": 8, "n_head": 2, "vocab_size": 10,
            "n_positions": 16, "activation_function": "gelu_new"}"#;
        let err = open_config(gpt).err().unwrap();
        assert!(err.to_string().ends_with("no .safetensors file"), "{err}");
    }
}
