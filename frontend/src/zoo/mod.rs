//! The model zoo: named transformer configurations and the builders that turn them into real
//! tsr graphs.
//!
//! A model is named by a spec, `PRESET` or `FAMILY|PRESET:key=value,...` (see [`spec`]); it
//! resolves to a [`config::ModelConfig`], the architecture as numbers, which the cost model
//! reads analytically. [`build`] emits graphs of the whole model or of single blocks
//! (embedding, one layer of each kind, head) as one tensor-parallel rank sees them, with side
//! tables saying which nodes are replicated across tensor-parallel ranks, which form the
//! attention core, and where collectives go. The graph of a layer agrees with the config: the
//! parameters counted from it are exactly [`config::ModelConfig::layer_params`] (tested).
//!
//! Map:
//! - [`config`]: `ModelConfig`, families, analytic parameter and KV-cache counts.
//! - [`presets`]: the named configurations (GPT-3, Megatron's Korthikanti table, Llama 3,
//!   Mixtral, DeepSeek-V3).
//! - [`spec`]: parsing `family:key=value,...` and preset overrides.
//! - [`build`]: graph builders and the per-node annotations.
//! - [`serve`]: the four token-parallel serving programs (attention runs beside them over the
//!   paged KV cache).
//! - [`resnet`]: ResNet-50 and smaller bottleneck ResNets (a CNN, so its own config and spec;
//!   `tessera plan` takes it as a plain graph, like a model file).
//!
//! # The zoo at a glance
//!
//! **`frontend::zoo`, `frontend::cluster`**: model builders (GPT, Llama, MoE and BERT families
//! with named presets and `family:key=value` overrides; `qkv=fused|separate` and `form=zoo|onnx`
//! pick the projection layout and whether norms/GELU are tsr ops or decomposed as ONNX exports
//! emit them; `zoo::resnet` builds bottleneck ResNets such as `resnet50`, which `tessera plan`
//! treats as a plain graph like a model file) that produce one transformer block's real tsr graph
//! plus side tables (node roles, where collectives go, expert parameters) and an analytic
//! `ModelConfig`; cluster specs (presets from datasheets, JSON files, `:gpus=N`/`:nodes=N`) with a
//! link hierarchy (NVLink/NVSwitch in a node, InfiniBand between nodes).

pub mod build;
mod builder;
pub mod config;
mod layers;
pub mod presets;
pub mod resnet;
pub mod serve;
pub mod spec;

/// Why a model spec or a build failed. One line each, naming the key, preset or field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ZooError {
    #[error("unknown model '{name}'; presets: {presets}; families: gpt, llama, moe, bert, resnet (e.g. gpt:layers=24,hidden=2048,heads=16)")]
    UnknownModel { name: String, presets: String },
    #[error("model spec '{spec}': unknown key '{key}'; known keys: {known}")]
    UnknownKey { spec: String, key: String, known: String },
    #[error("model spec '{spec}': {key}={value}: {message}")]
    BadValue { spec: String, key: String, value: String, message: String },
    #[error("model spec '{spec}': expected key=value, found '{item}'")]
    Syntax { spec: String, item: String },
    #[error("model spec '{spec}': family '{family}' needs {missing}")]
    Missing { spec: String, family: String, missing: String },
    #[error("model '{model}': {field}: {message}")]
    Invalid { model: String, field: &'static str, message: String },
    /// The builder could not shard or shape the model as asked (e.g. tp not dividing heads).
    #[error("model '{model}': cannot build {what}: {message}")]
    Build { model: String, what: String, message: String },
}
