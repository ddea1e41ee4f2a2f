//! The closed set of tsr ops. Each family module holds the shape rule (and, beside it, the
//! reference semantics) of its ops; this module ties them into one [`Op`] enum with one text
//! spelling per op, so every `match` over ops is exhaustive.

pub mod attr;
pub mod conv;
pub mod elementwise;
pub mod indexing;
pub mod layout;
pub mod matmul;
pub mod normalization;
pub mod reduce;
pub mod rope;

use crate::dtype::DType;
use crate::tensor::Tensor;
use crate::types::{Dim, TensorType};
use attr::{Attr, AttrMap};
use conv::{PoolKind, Window};
use elementwise::{BinaryOp, CompareOp, UnaryOp};
use indexing::ScatterReduction;
use reduce::ReduceKind;

/// Result of a shape rule: the result types, or why the operands are ill-typed.
pub type ShapeResult = Result<Vec<TensorType>, String>;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", content = "attrs", rename_all = "snake_case")]
pub enum Op {
    /// A literal tensor (`value`).
    Constant(Tensor),
    Unary(UnaryOp),
    Binary(BinaryOp),
    Compare(CompareOp),
    Where,
    /// Element type conversion; the target is the result type's dtype.
    Cast { to: DType },
    MatMul,
    Softmax { axis: i64 },
    LayerNorm { axis: i64, epsilon: f64 },
    RmsNorm { axis: i64, epsilon: f64 },
    Reduce { kind: ReduceKind, axes: Vec<i64>, keepdims: bool },
    ArgMax { axis: i64, keepdims: bool },
    /// Broadcast to `shape` (the result type's dimensions).
    Broadcast { shape: Vec<Dim> },
    /// Reshape to `shape` (the result type's dimensions).
    Reshape { shape: Vec<Dim> },
    Transpose { perm: Vec<i64> },
    Slice { starts: Vec<i64>, ends: Vec<i64>, steps: Vec<i64> },
    Concat { axis: i64 },
    Split { axis: i64, sizes: Vec<i64> },
    Gather { axis: i64 },
    Scatter { axis: i64, reduction: ScatterReduction },
    Conv2d { window: Window, groups: i64 },
    Pool2d { kind: PoolKind, kernel: [i64; 2], window: Window },
    Rope,
}

impl Op {
    /// The mnemonic after `tsr.` (`matmul`, `reduce_sum`, ...).
    pub fn mnemonic(&self) -> &'static str {
        match self {
            Op::Constant(_) => "constant",
            Op::Unary(u) => u.mnemonic(),
            Op::Binary(b) => b.mnemonic(),
            Op::Compare(c) => c.mnemonic(),
            Op::Where => "where",
            Op::Cast { .. } => "cast",
            Op::MatMul => "matmul",
            Op::Softmax { .. } => "softmax",
            Op::LayerNorm { .. } => "layer_norm",
            Op::RmsNorm { .. } => "rms_norm",
            Op::Reduce { kind, .. } => kind.mnemonic(),
            Op::ArgMax { .. } => "argmax",
            Op::Broadcast { .. } => "broadcast",
            Op::Reshape { .. } => "reshape",
            Op::Transpose { .. } => "transpose",
            Op::Slice { .. } => "slice",
            Op::Concat { .. } => "concat",
            Op::Split { .. } => "split",
            Op::Gather { .. } => "gather",
            Op::Scatter { .. } => "scatter",
            Op::Conv2d { .. } => "conv2d",
            Op::Pool2d { kind, .. } => kind.mnemonic(),
            Op::Rope => "rope",
        }
    }

    /// Every mnemonic, in a stable order (for the IRDL dialect definition and docs).
    pub fn all_mnemonics() -> Vec<&'static str> {
        let mut names: Vec<&'static str> = vec![
            "constant", "where", "cast", "matmul", "softmax", "layer_norm", "rms_norm", "argmax",
            "broadcast", "reshape", "transpose", "slice", "concat", "split", "gather", "scatter",
            "conv2d", "rope",
        ];
        names.extend(UnaryOp::ALL.iter().map(|u| u.mnemonic()));
        names.extend(BinaryOp::ALL.iter().map(|b| b.mnemonic()));
        names.extend(CompareOp::ALL.iter().map(|c| c.mnemonic()));
        names.extend(ReduceKind::ALL.iter().map(|r| r.mnemonic()));
        names.extend(PoolKind::ALL.iter().map(|p| p.mnemonic()));
        names
    }

    /// How many results the op has, when that is fixed by the op alone (`split` varies).
    pub fn num_results(&self) -> usize {
        match self {
            Op::Split { sizes, .. } => sizes.len(),
            _ => 1,
        }
    }

    /// True when the op has no operands and no side effects, so it may be hoisted or shared.
    pub fn is_constant(&self) -> bool {
        matches!(self, Op::Constant(_))
    }

    /// The attributes the text form prints, sorted by name (MLIR's order). Attributes that the
    /// result type already carries (`cast`'s dtype, `reshape`'s and `broadcast`'s shape) are
    /// not repeated.
    pub fn attrs(&self) -> Vec<(&'static str, Attr)> {
        let window_attrs = |w: &Window| {
            vec![
                ("dilations", Attr::Ints(w.dilations.to_vec())),
                ("pads", Attr::Ints(w.pads.to_vec())),
                ("strides", Attr::Ints(w.strides.to_vec())),
            ]
        };
        let mut attrs = match self {
            Op::Constant(t) => vec![("value", Attr::Dense(t.clone()))],
            Op::Unary(_) | Op::Binary(_) | Op::Compare(_) | Op::Where | Op::MatMul | Op::Rope => vec![],
            Op::Cast { .. } | Op::Broadcast { .. } | Op::Reshape { .. } => vec![],
            Op::Softmax { axis } | Op::Concat { axis } | Op::Gather { axis } => vec![("axis", Attr::Int(*axis))],
            Op::LayerNorm { axis, epsilon } | Op::RmsNorm { axis, epsilon } => {
                vec![("axis", Attr::Int(*axis)), ("epsilon", Attr::Float(*epsilon))]
            }
            Op::Reduce { axes, keepdims, .. } => {
                vec![("axes", Attr::Ints(axes.clone())), ("keepdims", Attr::Bool(*keepdims))]
            }
            Op::ArgMax { axis, keepdims } => vec![("axis", Attr::Int(*axis)), ("keepdims", Attr::Bool(*keepdims))],
            Op::Transpose { perm } => vec![("perm", Attr::Ints(perm.clone()))],
            Op::Slice { starts, ends, steps } => vec![
                ("ends", Attr::Ints(ends.clone())),
                ("starts", Attr::Ints(starts.clone())),
                ("steps", Attr::Ints(steps.clone())),
            ],
            Op::Split { axis, sizes } => vec![("axis", Attr::Int(*axis)), ("sizes", Attr::Ints(sizes.clone()))],
            Op::Scatter { axis, reduction } => {
                vec![("axis", Attr::Int(*axis)), ("reduction", Attr::Str(reduction.mnemonic().to_string()))]
            }
            Op::Conv2d { window, groups } => {
                let mut a = window_attrs(window);
                a.push(("groups", Attr::Int(*groups)));
                a
            }
            Op::Pool2d { kernel, window, .. } => {
                let mut a = window_attrs(window);
                a.push(("kernel", Attr::Ints(kernel.to_vec())));
                a
            }
        };
        attrs.sort_by_key(|(name, _)| *name);
        attrs
    }

    /// Builds an op from its mnemonic, its attributes as written and its result types (which
    /// carry the target of `cast`, `reshape` and `broadcast`). Errors are one-line messages.
    pub fn from_parts(mnemonic: &str, mut attrs: AttrMap, results: &[TensorType]) -> Result<Op, String> {
        let single_result = |what: &str| -> Result<&TensorType, String> {
            match results {
                [t] => Ok(t),
                _ => Err(format!("'{what}' has exactly one result, got {}", results.len())),
            }
        };
        let window = |attrs: &mut AttrMap| -> Result<Window, String> {
            Ok(Window {
                strides: fixed(attrs.ints("strides")?, "strides")?,
                pads: fixed(attrs.ints("pads")?, "pads")?,
                dilations: fixed(attrs.ints("dilations")?, "dilations")?,
            })
        };
        let op = if let Some(u) = UnaryOp::from_mnemonic(mnemonic) {
            Op::Unary(u)
        } else if let Some(b) = BinaryOp::from_mnemonic(mnemonic) {
            Op::Binary(b)
        } else if let Some(c) = CompareOp::from_mnemonic(mnemonic) {
            Op::Compare(c)
        } else if let Some(kind) = ReduceKind::from_mnemonic(mnemonic) {
            Op::Reduce { kind, axes: attrs.ints("axes")?, keepdims: attrs.bool_or("keepdims", false)? }
        } else if let Some(kind) = PoolKind::from_mnemonic(mnemonic) {
            let kernel = fixed(attrs.ints("kernel")?, "kernel")?;
            Op::Pool2d { kind, kernel, window: window(&mut attrs)? }
        } else {
            match mnemonic {
                "constant" => Op::Constant(attrs.dense("value")?),
                "where" => Op::Where,
                "cast" => Op::Cast { to: single_result(mnemonic)?.dtype },
                "matmul" => Op::MatMul,
                "softmax" => Op::Softmax { axis: attrs.int("axis")? },
                "layer_norm" => Op::LayerNorm { axis: attrs.int("axis")?, epsilon: attrs.float("epsilon")? },
                "rms_norm" => Op::RmsNorm { axis: attrs.int("axis")?, epsilon: attrs.float("epsilon")? },
                "argmax" => Op::ArgMax { axis: attrs.int("axis")?, keepdims: attrs.bool_or("keepdims", false)? },
                "broadcast" => Op::Broadcast { shape: single_result(mnemonic)?.dims.clone() },
                "reshape" => Op::Reshape { shape: single_result(mnemonic)?.dims.clone() },
                "transpose" => Op::Transpose { perm: attrs.ints("perm")? },
                "slice" => Op::Slice {
                    starts: attrs.ints("starts")?,
                    ends: attrs.ints("ends")?,
                    steps: attrs.ints("steps")?,
                },
                "concat" => Op::Concat { axis: attrs.int("axis")? },
                "split" => Op::Split { axis: attrs.int("axis")?, sizes: attrs.ints("sizes")? },
                "gather" => Op::Gather { axis: attrs.int("axis")? },
                "scatter" => {
                    let axis = attrs.int("axis")?;
                    let text = attrs.string("reduction")?;
                    let reduction = ScatterReduction::from_mnemonic(&text)
                        .ok_or_else(|| format!("unknown scatter reduction '{text}' (expected none or add)"))?;
                    Op::Scatter { axis, reduction }
                }
                "conv2d" => Op::Conv2d { window: window(&mut attrs)?, groups: attrs.int("groups")? },
                "rope" => Op::Rope,
                _ => return Err(format!("unknown op 'tsr.{mnemonic}'")),
            }
        };
        attrs.finish()?;
        Ok(op)
    }

    /// The shape rule: result types for operands of types `inputs`, or why they are ill-typed.
    pub fn infer(&self, inputs: &[&TensorType]) -> ShapeResult {
        match self {
            Op::Constant(t) => {
                expect_arity(inputs, 0)?;
                Ok(vec![t.tensor_type()])
            }
            Op::Unary(u) => u.infer(inputs),
            Op::Binary(b) => b.infer(inputs),
            Op::Compare(c) => c.infer(inputs),
            Op::Where => elementwise::infer_where(inputs),
            Op::Cast { to } => elementwise::infer_cast(inputs, *to),
            Op::MatMul => matmul::infer(inputs),
            Op::Softmax { axis } => normalization::infer_softmax(inputs, *axis),
            Op::LayerNorm { axis, .. } => normalization::infer_norm(inputs, *axis, true),
            Op::RmsNorm { axis, .. } => normalization::infer_norm(inputs, *axis, false),
            Op::Reduce { kind, axes, keepdims } => reduce::infer(inputs, *kind, axes, *keepdims),
            Op::ArgMax { axis, keepdims } => reduce::infer_argmax(inputs, *axis, *keepdims),
            Op::Broadcast { shape } => layout::infer_broadcast(inputs, shape),
            Op::Reshape { shape } => layout::infer_reshape(inputs, shape),
            Op::Transpose { perm } => layout::infer_transpose(inputs, perm),
            Op::Slice { starts, ends, steps } => layout::infer_slice(inputs, starts, ends, steps),
            Op::Concat { axis } => layout::infer_concat(inputs, *axis),
            Op::Split { axis, sizes } => layout::infer_split(inputs, *axis, sizes),
            Op::Gather { axis } => indexing::infer_gather(inputs, *axis),
            Op::Scatter { axis, .. } => indexing::infer_scatter(inputs, *axis),
            Op::Conv2d { window, groups } => conv::infer_conv2d(inputs, window, *groups),
            Op::Pool2d { kernel, window, .. } => conv::infer_pool2d(inputs, *kernel, window),
            Op::Rope => rope::infer(inputs),
        }
    }
}

fn fixed<const N: usize>(v: Vec<i64>, name: &str) -> Result<[i64; N], String> {
    let len = v.len();
    v.try_into().map_err(|_| format!("attribute '{name}' needs {N} entries, got {len}"))
}

/// Checks the operand count.
pub fn expect_arity(inputs: &[&TensorType], n: usize) -> Result<(), String> {
    if inputs.len() != n {
        return Err(format!("expected {n} operand(s), got {}", inputs.len()));
    }
    Ok(())
}

/// NumPy broadcasting of two dimension lists (trailing alignment, 1 stretches); `None` when
/// they do not broadcast.
pub fn broadcast_dims(a: &[Dim], b: &[Dim]) -> Option<Vec<Dim>> {
    let n = a.len().max(b.len());
    let one = Dim::Static(1);
    (0..n)
        .map(|i| {
            let da = if i + a.len() >= n { &a[i + a.len() - n] } else { &one };
            let db = if i + b.len() >= n { &b[i + b.len() - n] } else { &one };
            match (da, db) {
                _ if da == db => Some(da.clone()),
                (Dim::Static(1), _) => Some(db.clone()),
                (_, Dim::Static(1)) => Some(da.clone()),
                _ => None,
            }
        })
        .collect()
}
