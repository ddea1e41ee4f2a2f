//! ResNet (He et al. 2016, the "v1.5" variant torchvision ships: stride 2 on the 3×3 conv of a
//! bottleneck) as an inference graph over NCHW images.
//!
//! A spec is `resnet50` or `resnet50:key=value,...` / `resnet:key=value,...` with keys
//! `blocks` (bottlenecks per stage, `3-4-6-3`), `width` (channels of the stem and of the first
//! stage's bottleneck, 64), `image` (height = width of the input, 224), `classes` (1000),
//! `batch` (1) and `dtype` (f32, bf16, f16).
//!
//! Batch norm is in inference form as importing an ONNX `BatchNormalization` gives it (see
//! `onnx::ops::normalization`): per channel, `x * f + s` with `f = γ / √(σ² + ε)` and
//! `s = β - μ f` computed in the graph from the four parameters, reshaped to `[C, 1, 1]` and
//! broadcast. (PyTorch's exporter folds batch norm into the convolutions itself; this keeps it
//! separate, as an importer of an unfolded model sees it, so the e-graph's folding rule has
//! something to do.)

use crate::zoo::builder::Builder;
use crate::zoo::ZooError;
use tessera_ir::dtype::DType;
use tessera_ir::graph::{Graph, ValueId};
use tessera_ir::ops::conv::{PoolKind, Window};
use tessera_ir::ops::elementwise::{BinaryOp, UnaryOp};
use tessera_ir::ops::Op;
use tessera_ir::tensor::Tensor;

const BN_EPSILON: f64 = 1e-5;

/// The architecture of a ResNet with bottleneck blocks.
#[derive(Debug, Clone, PartialEq)]
pub struct ResNetConfig {
    pub name: String,
    /// Bottleneck blocks in each of the four stages.
    pub blocks: [u64; 4],
    /// Channels of the stem and of the first stage's bottleneck (doubling per stage).
    pub width: u64,
    /// Input height and width.
    pub image: u64,
    pub classes: u64,
    pub batch: u64,
    pub dtype: DType,
}

/// Preset names of the ResNet family.
pub const NAMES: [&str; 1] = ["resnet50"];

/// Whether `spec` names a ResNet (`resnet50`, `resnet50:...`, `resnet:...`).
pub fn is_resnet_spec(spec: &str) -> bool {
    let base = spec.split(':').next().unwrap_or("").trim();
    base == "resnet" || NAMES.contains(&base)
}

/// Resolves a ResNet spec (see the module doc).
pub fn parse(spec: &str) -> Result<ResNetConfig, ZooError> {
    let spec = spec.trim();
    let (base, rest) = spec.split_once(':').map_or((spec, ""), |(b, r)| (b.trim(), r));
    let mut cfg = ResNetConfig {
        name: spec.to_string(),
        blocks: [3, 4, 6, 3],
        width: 64,
        image: 224,
        classes: 1000,
        batch: 1,
        dtype: DType::F32,
    };
    if base != "resnet" && base != "resnet50" {
        let presets = NAMES.join(", ");
        return Err(ZooError::UnknownModel { name: base.to_string(), presets });
    }
    const KEYS: &str = "blocks, width, image, classes, batch, dtype";
    for item in tessera_ir::key_value::non_empty_items(rest) {
        let (key, value) =
            item.key_value().ok_or_else(|| ZooError::Syntax { spec: spec.to_string(), item: item.text.to_string() })?;
        let bad = |message: &str| ZooError::BadValue {
            spec: spec.to_string(),
            key: key.to_string(),
            value: value.to_string(),
            message: message.to_string(),
        };
        let positive =
            || value.parse::<u64>().ok().filter(|&n| n > 0).ok_or_else(|| bad("expected a positive integer"));
        match key {
            "blocks" => {
                let parts: Vec<u64> = value
                    .split('-')
                    .map(|p| p.parse::<u64>().ok().filter(|&n| n > 0))
                    .collect::<Option<_>>()
                    .ok_or_else(|| bad("expected four positive counts like 3-4-6-3"))?;
                cfg.blocks = parts.try_into().map_err(|_| bad("expected four positive counts like 3-4-6-3"))?;
            }
            "width" => cfg.width = positive()?,
            "image" => cfg.image = positive()?,
            "classes" => cfg.classes = positive()?,
            "batch" => cfg.batch = positive()?,
            "dtype" => {
                cfg.dtype = match value {
                    "f32" | "fp32" => DType::F32,
                    "bf16" => DType::BF16,
                    "f16" | "fp16" => DType::F16,
                    _ => return Err(bad("expected f32, bf16 or f16")),
                }
            }
            _ => return Err(ZooError::UnknownKey { spec: spec.to_string(), key: key.to_string(), known: KEYS.into() }),
        }
    }
    if cfg.image < 32 {
        return Err(ZooError::Invalid {
            model: cfg.name,
            field: "image",
            message: "must be at least 32 (five stride-2 steps)".into(),
        });
    }
    Ok(cfg)
}

fn window(stride: i64, pad: i64) -> Window {
    Window { strides: [stride; 2], pads: [pad; 4], dilations: [1, 1] }
}

/// `conv` (no bias) then inference batch norm, then ReLU when `relu`.
fn conv_bn(
    b: &mut Builder,
    x: ValueId,
    name: &str,
    out: u64,
    kernel: u64,
    stride: i64,
    relu: bool,
) -> Result<ValueId, ZooError> {
    let c = b.shape(x)[1];
    let w = b.param(&format!("{name}.weight"), &[out, c, kernel, kernel]);
    let pad = (kernel / 2) as i64;
    let y = b.op(Op::Conv2d { window: window(stride, pad), groups: 1 }, &[x, w])?;
    let y = batch_norm(b, y, &format!("{name}.bn"))?;
    if relu {
        return b.unary(UnaryOp::Relu, y);
    }
    Ok(y)
}

/// Inference batch norm in the form the ONNX importer gives (see the module doc).
fn batch_norm(b: &mut Builder, x: ValueId, name: &str) -> Result<ValueId, ZooError> {
    let shape = b.shape(x);
    let c = shape[1];
    let [gamma, beta, mean, var] = ["scale", "bias", "mean", "var"].map(|p| b.param(&format!("{name}.{p}"), &[c]));
    let dtype = b.dtype;
    let eps = b.op(Op::Constant(Tensor::scalar(dtype, BN_EPSILON)), &[])?;
    let eps = b.broadcast(eps, &[c])?;
    let var_eps = b.binary(BinaryOp::Add, var, eps)?;
    let inv_std = b.unary(UnaryOp::Rsqrt, var_eps)?;
    let factor = b.binary(BinaryOp::Mul, gamma, inv_std)?;
    let mf = b.binary(BinaryOp::Mul, mean, factor)?;
    let shift = b.binary(BinaryOp::Sub, beta, mf)?;
    let factor = b.reshape(factor, &[c, 1, 1])?;
    let shift = b.reshape(shift, &[c, 1, 1])?;
    let factor = b.broadcast(factor, &shape)?;
    let shift = b.broadcast(shift, &shape)?;
    let y = b.binary(BinaryOp::Mul, x, factor)?;
    b.binary(BinaryOp::Add, y, shift)
}

/// One bottleneck: 1×1 reduce, 3×3 (stride), 1×1 expand, plus the shortcut.
fn bottleneck(b: &mut Builder, x: ValueId, name: &str, mid: u64, stride: i64) -> Result<ValueId, ZooError> {
    let out = 4 * mid;
    let c = b.shape(x)[1];
    let y = conv_bn(b, x, &format!("{name}.conv1"), mid, 1, 1, true)?;
    let y = conv_bn(b, y, &format!("{name}.conv2"), mid, 3, stride, true)?;
    let y = conv_bn(b, y, &format!("{name}.conv3"), out, 1, 1, false)?;
    let shortcut =
        if stride != 1 || c != out { conv_bn(b, x, &format!("{name}.downsample"), out, 1, stride, false)? } else { x };
    let sum = b.binary(BinaryOp::Add, y, shortcut)?;
    b.unary(UnaryOp::Relu, sum)
}

/// The whole network: `image [batch, 3, image, image]` to class logits `[batch, classes]`.
pub fn build(cfg: &ResNetConfig) -> Result<Graph, ZooError> {
    let name = cfg.name.replace(|c: char| !c.is_ascii_alphanumeric() && c != '_', "_");
    let mut b = Builder::new(&name, &cfg.name, cfg.dtype);
    let x = b.stream_input("image", cfg.dtype, &[cfg.batch, 3, cfg.image, cfg.image]);
    let y = conv_bn(&mut b, x, "stem", cfg.width, 7, 2, true)?;
    let mut y = b.op(Op::Pool2d { kind: PoolKind::Max, kernel: [3, 3], window: window(2, 1) }, &[y])?;
    for (stage, &n) in cfg.blocks.iter().enumerate() {
        let mid = cfg.width << stage;
        for i in 0..n {
            let stride = if stage > 0 && i == 0 { 2 } else { 1 };
            y = bottleneck(&mut b, y, &format!("layer{}.{i}", stage + 1), mid, stride)?;
        }
    }
    let s = b.shape(y);
    let pooled =
        b.op(Op::Pool2d { kind: PoolKind::Avg, kernel: [s[2] as i64, s[3] as i64], window: window(1, 0) }, &[y])?;
    let flat = b.reshape(pooled, &[s[0], s[1]])?;
    let w = b.param("fc.weight", &[s[1], cfg.classes]);
    let logits = b.matmul(flat, w)?;
    let bias = b.param("fc.bias", &[cfg.classes]);
    let logits = b.add_bias(logits, bias)?;
    let mut graph = b.finish(vec![logits]).graph;
    graph.rename_value(logits, "logits");
    Ok(graph)
}
