//! The closed set of tsr ops. Each family module holds the shape rule and, beside it, the
//! reference semantics of its ops; this module ties them into one [`Op`] enum with one text
//! spelling per op, so every `match` over ops is exhaustive, and dispatches [`Op::infer`],
//! [`Op::eval`], [`Op::flops`] and [`Op::gradient`] (the rules' interface is [`gradient`]).
//! Mnemonics, arities and attributes are declared once, in [`table`].

pub mod attr;
pub mod collective;
pub mod constraint;
pub mod control;
pub mod conv;
pub mod elementwise;
pub mod gradient;
pub mod indexing;
pub mod layout;
pub mod matmul;
pub mod normalization;
pub mod optim;
pub mod recurrent;
pub mod reduce;
pub mod rope;
pub mod table;
pub mod winograd;

use crate::dtype::DType;
use crate::graph::ValueId;
use crate::sharding::ShardingRule;
use crate::tensor::{Buffer, BufferKind, Tensor};
use crate::types::{Dim, TensorType};
use conv::{PoolKind, Window};
use elementwise::{BinaryOp, CompareOp, UnaryOp};
use gradient::{Differentiability, GradContext, GradError, GradResult};
use indexing::ScatterReduction;
use optim::{AdamW, Sgd};
use recurrent::{Cell, RecurrentKind};
use reduce::ReduceKind;
use rope::RopeLayout;

/// Result of a shape rule: the result types, or why the operands are ill-typed.
pub type ShapeResult = Result<Vec<TensorType>, String>;

/// Result of a FLOP rule: the count, or why the operand shapes are impossible.
pub type FlopResult = Result<u128, String>;

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
    Cast {
        to: DType,
    },
    MatMul,
    Softmax {
        axis: i64,
    },
    LayerNorm {
        axis: i64,
        epsilon: f64,
    },
    RmsNorm {
        axis: i64,
        epsilon: f64,
    },
    Reduce {
        kind: ReduceKind,
        axes: Vec<i64>,
        keepdims: bool,
    },
    ArgMax {
        axis: i64,
        keepdims: bool,
    },
    /// Broadcast to `shape` (the result type's dimensions).
    Broadcast {
        shape: Vec<Dim>,
    },
    /// Reshape to `shape` (the result type's dimensions).
    Reshape {
        shape: Vec<Dim>,
    },
    /// An identity that pins the value's layout over the mesh for `shard` (see [`constraint`]).
    ShardingConstraint {
        #[serde(with = "constraint::as_text")]
        sharding: crate::sharding::Sharding,
    },
    Transpose {
        perm: Vec<i64>,
    },
    Slice {
        starts: Vec<i64>,
        ends: Vec<i64>,
        steps: Vec<i64>,
    },
    Concat {
        axis: i64,
    },
    Split {
        axis: i64,
        sizes: Vec<i64>,
    },
    Gather {
        axis: i64,
    },
    /// Each element's coordinate along `axis`, in the operand's type (see [`indexing::infer_iota`]).
    Iota {
        axis: i64,
    },
    Scatter {
        axis: i64,
        reduction: ScatterReduction,
    },
    Conv2d {
        window: Window,
        groups: i64,
    },
    Pool2d {
        kind: PoolKind,
        kernel: [i64; 2],
        window: Window,
    },
    /// Winograd F(2x2, 3x3) input-tile transform (`pads`: `[top, left, bottom, right]`); see
    /// [`winograd`].
    WinogradInput {
        pads: [i64; 4],
    },
    /// Winograd F(2x2, 3x3) kernel transform; see [`winograd`].
    WinogradWeight,
    /// Winograd F(2x2, 3x3) output transform to `shape` (the result type's dimensions); see
    /// [`winograd`].
    WinogradOutput {
        shape: Vec<Dim>,
    },
    /// Rotary embedding; `interleaved` picks GPT-J pairing over Llama/NeoX pairing.
    Rope {
        interleaved: bool,
    },
    /// Mean cross-entropy of logits `[..., V]` against integer targets `[...]`.
    CrossEntropy,
    /// One SGD update: `(param, grad, velocity) -> (param', velocity')`.
    Sgd(Sgd),
    /// One AdamW update: `(param, grad, m, v, step) -> (param', m', v')`.
    #[serde(rename = "adamw")]
    AdamW(AdamW),
    /// A whole recurrent layer (`lstm`, `gru`, `rnn`) over a sequence; see [`recurrent`].
    Recurrent {
        kind: RecurrentKind,
        cell: Cell,
    },
    /// Communication between ranks (only in per-rank programs; see [`collective`]).
    Collective(collective::Collective),
    /// Structured control flow: `(cond, captured...)` runs one of two regions; see [`control`].
    If(Box<control::IfRegions>),
    /// A while loop over carried values: `(carried...)` with a cond and a body region; see
    /// [`control`].
    Loop(Box<control::LoopRegions>),
    /// Fails when evaluated; results of the given types (see [`control::Trap`]).
    Trap(Box<control::Trap>),
}

impl Op {
    /// How many results the op has, when that is fixed by the op alone (`split` varies).
    pub fn num_results(&self) -> usize {
        match self {
            Op::Split { sizes, .. } => sizes.len(),
            Op::Sgd(_) => 2,
            Op::AdamW(_) => 3,
            Op::Recurrent { kind, .. } => kind.num_results(),
            Op::Collective(c) => c.num_results(),
            Op::If(regions) => regions.then_branch.outputs().len(),
            Op::Loop(regions) => regions.body.outputs().len(),
            Op::Trap(trap) => trap.types.len(),
            _ => 1,
        }
    }

    /// True when the op has no operands and no side effects, so it may be hoisted or shared.
    pub fn is_constant(&self) -> bool {
        matches!(self, Op::Constant(_))
    }

    /// True for ops that talk to other ranks (collectives, `send`, `recv`). They are not pure
    /// functions of their operands on one rank: passes must neither fold, merge, reorder across
    /// each other, nor delete them (a `send` has no result, yet it is needed).
    pub fn is_communication(&self) -> bool {
        matches!(self, Op::Collective(_))
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
            Op::ShardingConstraint { sharding } => constraint::infer(inputs, sharding),
            Op::Transpose { perm } => layout::infer_transpose(inputs, perm),
            Op::Slice { starts, ends, steps } => layout::infer_slice(inputs, starts, ends, steps),
            Op::Concat { axis } => layout::infer_concat(inputs, *axis),
            Op::Split { axis, sizes } => layout::infer_split(inputs, *axis, sizes),
            Op::Gather { axis } => indexing::infer_gather(inputs, *axis),
            Op::Iota { axis } => indexing::infer_iota(inputs, *axis),
            Op::Scatter { axis, .. } => indexing::infer_scatter(inputs, *axis),
            Op::Conv2d { window, groups } => conv::infer_conv2d(inputs, window, *groups),
            Op::WinogradInput { pads } => winograd::infer_input(inputs, *pads),
            Op::WinogradWeight => winograd::infer_weight(inputs),
            Op::WinogradOutput { shape } => winograd::infer_output(inputs, shape),
            Op::Pool2d { kernel, window, .. } => conv::infer_pool2d(inputs, *kernel, window),
            Op::Rope { .. } => rope::infer(inputs),
            Op::CrossEntropy => optim::infer_cross_entropy(inputs),
            Op::Sgd(h) => optim::infer_sgd(inputs, h),
            Op::AdamW(h) => optim::infer_adamw(inputs, h),
            Op::Recurrent { kind, cell } => recurrent::infer(inputs, *kind, cell),
            Op::Collective(c) => c.infer(inputs),
            Op::If(regions) => control::infer_if(inputs, regions),
            Op::Loop(regions) => control::infer_loop(inputs, regions),
            Op::Trap(trap) => {
                expect_arity(inputs, 0)?;
                Ok(trap.types.clone())
            }
        }
    }

    /// FLOPs of one application of the op to operands and results of the given concrete
    /// shapes; one multiply-add is two FLOPs. This is the one FLOP convention of the compiler:
    /// `tessera info`'s statistics, the planner's roofline and the e-graph's extraction cost all
    /// count with it (each binds symbolic dimensions its own way first).
    ///
    /// - `matmul`: `2 * M * N * K * batch` (batch broadcast); `conv2d`:
    ///   `2 * N * O * OH * OW * (C / groups) * KH * KW`.
    /// - elementwise ops (`where` and `cast` included): 1 per result element; transcendentals
    ///   (`exp`, `tanh`, `gelu`, ...) count 1 too, since their real cost depends on the hardware
    ///   and a cost model weighs them separately.
    /// - `softmax`: 5 per element (max, subtract, exp, sum, divide); `layer_norm` and `rms_norm`:
    ///   8 per element; reductions and `argmax`: 1 per input element; pooling: 1 per window
    ///   element per output; `rope`: 3 per element (two multiplies, one add); `scatter` with
    ///   `add`: 1 per update.
    /// - data movement (`broadcast`, `reshape`, `transpose`, `slice`, `concat`, `split`,
    ///   `gather`, `scatter` without reduction) and `constant`: 0.
    ///
    /// Counts saturate instead of overflowing. Errors only on a missing operand or one of an
    /// impossible rank, which a verified graph does not have.
    pub fn flops(&self, inputs: &[&[u64]], results: &[&[u64]]) -> FlopResult {
        let out = results.first().map_or(0, |r| num_elements(r));
        match self {
            Op::Constant(_) => Ok(0),
            Op::Unary(_) | Op::Binary(_) | Op::Compare(_) | Op::Where | Op::Cast { .. } => Ok(elementwise::flops(out)),
            Op::MatMul => matmul::flops(inputs, out),
            Op::Softmax { .. } => Ok(normalization::flops_softmax(out)),
            Op::LayerNorm { .. } | Op::RmsNorm { .. } => Ok(normalization::flops_norm(out)),
            Op::Reduce { .. } | Op::ArgMax { .. } => Ok(reduce::flops(inputs)),
            Op::Broadcast { .. }
            | Op::Reshape { .. }
            | Op::ShardingConstraint { .. }
            | Op::Transpose { .. }
            | Op::Slice { .. }
            | Op::Concat { .. }
            | Op::Split { .. } => Ok(layout::flops()),
            Op::Gather { .. } | Op::Iota { .. } => Ok(indexing::flops_gather()),
            Op::Scatter { reduction, .. } => indexing::flops_scatter(inputs, *reduction),
            Op::Conv2d { .. } => conv::flops_conv2d(inputs, out),
            Op::WinogradInput { .. } => winograd::flops_input(out),
            Op::WinogradWeight => winograd::flops_weight(out),
            Op::WinogradOutput { .. } => winograd::flops_output(out),
            Op::Pool2d { kernel, .. } => Ok(conv::flops_pool2d(out, *kernel)),
            Op::Rope { .. } => Ok(rope::flops(out)),
            Op::CrossEntropy => optim::flops_cross_entropy(num_elements(operand_shape(inputs, 0)?)),
            Op::Sgd(_) => Ok(optim::flops_sgd(out)),
            Op::AdamW(_) => Ok(optim::flops_adamw(out)),
            Op::Recurrent { kind, cell } => recurrent::flops(inputs, *kind, cell),
            // Communication moves data; the cost model prices it by bytes on links.
            Op::Collective(_) => Ok(0),
            Op::If(regions) => control::flops_if(regions),
            Op::Loop(regions) => control::flops_loop(regions),
            Op::Trap(_) => Ok(0),
        }
    }
}

impl Op {
    /// How the op may be split over a device mesh ([`ShardingRule`]), for operands and results
    /// of the given (global) types. Each family states its own rule; ops without one
    /// (`constant`, `scatter`, collectives) replicate every dimension, which is always correct.
    pub fn sharding_rule(&self, operands: &[&TensorType], results: &[TensorType]) -> ShardingRule {
        let replicated = || ShardingRule::replicated(operands, results);
        let (Some(out), Some(first)) = (results.first(), operands.first()) else {
            return replicated();
        };
        let axis_of = |axis: i64| crate::types::normalize_axis(axis, first.rank());
        match self {
            Op::Unary(_) | Op::Binary(_) | Op::Compare(_) | Op::Where | Op::Cast { .. } => {
                ShardingRule::elementwise(operands.len(), out, 1)
            }
            Op::MatMul if operands.len() == 2 => matmul::sharding_rule(operands[0], operands[1], out),
            Op::Softmax { axis } => match axis_of(*axis) {
                // Softmax normalizes one axis: everything else is parallel.
                Some(ax) => {
                    let mut rule = ShardingRule::elementwise(1, out, 1);
                    rule.forbid(ax);
                    rule
                }
                None => replicated(),
            },
            Op::LayerNorm { axis, .. } | Op::RmsNorm { axis, .. } => match axis_of(*axis) {
                Some(ax) => normalization::sharding_rule(operands, out, ax),
                None => replicated(),
            },
            Op::Reduce { kind, axes, keepdims } => reduce::sharding_rule(first, out, Some(*kind), axes, *keepdims),
            Op::ArgMax { axis, keepdims } => reduce::sharding_rule(first, out, None, &[*axis], *keepdims),
            Op::Broadcast { .. } => layout::sharding_rule_broadcast(first, out),
            Op::Reshape { .. } => layout::sharding_rule_reshape(first, out),
            Op::ShardingConstraint { .. } => constraint::sharding_rule(first),
            Op::Transpose { perm } => layout::sharding_rule_transpose(first, out, perm),
            Op::Slice { starts, ends, steps } => layout::sharding_rule_slice(first, out, starts, ends, steps),
            Op::Concat { axis } | Op::Split { axis, .. } => {
                layout::sharding_rule_concat_split(operands, results, *axis)
            }
            Op::Gather { axis } if operands.len() == 2 => {
                indexing::sharding_rule_gather(operands[0], operands[1], out, *axis)
            }
            Op::Conv2d { groups, .. } => conv::sharding_rule(operands, out, Some(*groups)),
            Op::Pool2d { .. } => conv::sharding_rule(operands, out, None),
            Op::Rope { .. } if operands.len() == 3 => rope::sharding_rule(operands[0], operands[1], operands[2]),
            Op::CrossEntropy if operands.len() == 2 => optim::sharding_rule_cross_entropy(operands[0], operands[1]),
            Op::Sgd(_) | Op::AdamW(_) => optim::sharding_rule_update(operands, results),
            Op::MatMul
            | Op::Gather { .. }
            | Op::Iota { .. }
            | Op::Rope { .. }
            | Op::Constant(_)
            | Op::Scatter { .. }
            | Op::Collective(_)
            | Op::If(_)
            | Op::Loop(_)
            | Op::Trap(_)
            // Batch-parallel in principle; replicated until a rule splits `x`, the states and
            // `sequence_lens` together.
            | Op::Recurrent { .. }
            | Op::CrossEntropy
            // Tiles mix an image's rows and columns, and the tile axis mixes the batch.
            | Op::WinogradInput { .. }
            | Op::WinogradWeight
            | Op::WinogradOutput { .. } => replicated(),
        }
    }
}

/// Elements of a concrete shape (1 for a scalar), saturating at `u64::MAX`.
pub fn num_elements(shape: &[u64]) -> u128 {
    shape.iter().fold(1u64, |acc, &d| acc.saturating_mul(d)) as u128
}

/// Operand `i`'s shape, for the FLOP rules.
pub(crate) fn operand_shape<'a>(inputs: &[&'a [u64]], i: usize) -> Result<&'a [u64], String> {
    inputs.get(i).copied().ok_or_else(|| format!("operand {i} is missing"))
}

impl Op {
    /// The reference semantics: the op applied to concrete `inputs`, giving tensors of the
    /// concrete `results` types (which the caller got from [`Op::infer`] on the inputs' types,
    /// with any symbolic target shape of `reshape`/`broadcast` bound first).
    ///
    /// Float math is done in `f64` and each result rounded once to its dtype; integer math in
    /// `i64`, wrapped to the dtype. Errors are one-line messages (bad indices, integer division
    /// by zero, inconsistent `results`), never panics.
    pub fn eval(&self, inputs: &[&Tensor], results: &[TensorType]) -> Result<Vec<Tensor>, String> {
        if let Op::Collective(c) = self {
            return Err(c.eval_error());
        }
        if let Op::Trap(trap) = self {
            return Err(trap.message.clone());
        }
        for (i, t) in inputs.iter().enumerate() {
            check_tensor(t).map_err(|m| format!("operand {i} is malformed: {m}"))?;
        }
        // Checking `results` against the shape rule here lets every family's eval index its
        // operands without re-validating shapes, and makes a wrong caller an error, not a panic.
        let input_types: Vec<TensorType> = inputs.iter().map(|t| t.tensor_type()).collect();
        let refs: Vec<&TensorType> = input_types.iter().collect();
        let expected = match self {
            Op::Broadcast { shape } => layout::infer_broadcast(&refs, bound_target(shape, results)?)?,
            Op::Reshape { shape } => layout::infer_reshape(&refs, bound_target(shape, results)?)?,
            _ => self.infer(&refs)?,
        };
        if expected != results {
            return Err(format!(
                "result types ({}) differ from what the op gives for its operands ({})",
                type_list(results),
                type_list(&expected)
            ));
        }
        let shapes = results.iter().map(concrete_shape).collect::<Result<Vec<_>, _>>()?;
        let out = &shapes[0];
        let one = |t: Tensor| Ok(vec![t]);
        match self {
            Op::Constant(t) => {
                check_tensor(t).map_err(|m| format!("literal is malformed: {m}"))?;
                one(t.clone())
            }
            Op::Unary(u) => one(elementwise::eval_unary(*u, operand(inputs, 0)?)?),
            Op::Binary(b) => one(elementwise::eval_binary(*b, operand(inputs, 0)?, operand(inputs, 1)?)?),
            Op::Compare(c) => one(elementwise::eval_compare(*c, operand(inputs, 0)?, operand(inputs, 1)?)?),
            Op::Where => one(elementwise::eval_where(operand(inputs, 0)?, operand(inputs, 1)?, operand(inputs, 2)?)?),
            Op::Cast { to } => one(operand(inputs, 0)?.cast(*to)),
            Op::MatMul => one(matmul::eval(operand(inputs, 0)?, operand(inputs, 1)?, out)?),
            Op::Softmax { axis } => one(normalization::eval_softmax(operand(inputs, 0)?, *axis)?),
            Op::LayerNorm { axis, epsilon } => one(normalization::eval_layer_norm(
                operand(inputs, 0)?,
                operand(inputs, 1)?,
                operand(inputs, 2)?,
                *axis,
                *epsilon,
            )?),
            Op::RmsNorm { axis, epsilon } => {
                one(normalization::eval_rms_norm(operand(inputs, 0)?, operand(inputs, 1)?, *axis, *epsilon)?)
            }
            Op::Reduce { kind, axes, .. } => one(reduce::eval(operand(inputs, 0)?, *kind, axes, out)?),
            Op::ArgMax { axis, .. } => one(reduce::eval_argmax(operand(inputs, 0)?, *axis, out)?),
            Op::Broadcast { .. } => one(layout::eval_broadcast(operand(inputs, 0)?, out)?),
            Op::Reshape { .. } => one(layout::eval_reshape(operand(inputs, 0)?, out)?),
            Op::ShardingConstraint { .. } => one(constraint::eval(operand(inputs, 0)?)),
            Op::Transpose { perm } => one(layout::eval_transpose(operand(inputs, 0)?, perm, out)?),
            Op::Slice { starts, ends, steps } => {
                one(layout::eval_slice(operand(inputs, 0)?, starts, ends, steps, out)?)
            }
            Op::Concat { axis } => one(layout::eval_concat(inputs, *axis, out)?),
            Op::Split { axis, .. } => layout::eval_split(operand(inputs, 0)?, *axis, &shapes),
            Op::Gather { axis } => one(indexing::eval_gather(operand(inputs, 0)?, operand(inputs, 1)?, *axis, out)?),
            Op::Iota { axis } => one(indexing::eval_iota(operand(inputs, 0)?, *axis, out)?),
            Op::Scatter { axis, reduction } => one(indexing::eval_scatter(
                operand(inputs, 0)?,
                operand(inputs, 1)?,
                operand(inputs, 2)?,
                *axis,
                *reduction,
            )?),
            Op::Conv2d { window, groups } => {
                one(conv::eval_conv2d(operand(inputs, 0)?, operand(inputs, 1)?, window, *groups, out)?)
            }
            Op::Pool2d { kind, kernel, window } => {
                one(conv::eval_pool2d(operand(inputs, 0)?, *kind, *kernel, window, out)?)
            }
            Op::WinogradInput { pads } => one(winograd::eval_input(operand(inputs, 0)?, *pads, out)?),
            Op::WinogradWeight => one(winograd::eval_weight(operand(inputs, 0)?, out)?),
            Op::WinogradOutput { .. } => one(winograd::eval_output(operand(inputs, 0)?, out)?),
            Op::Rope { interleaved } => one(rope::eval(
                operand(inputs, 0)?,
                operand(inputs, 1)?,
                operand(inputs, 2)?,
                if *interleaved { RopeLayout::Interleaved } else { RopeLayout::NonInterleaved },
            )?),
            Op::CrossEntropy => one(optim::eval_cross_entropy(operand(inputs, 0)?, operand(inputs, 1)?)?),
            Op::Sgd(h) => optim::eval_sgd(operand(inputs, 0)?, operand(inputs, 1)?, operand(inputs, 2)?, h),
            Op::AdamW(h) => optim::eval_adamw(
                operand(inputs, 0)?,
                operand(inputs, 1)?,
                operand(inputs, 2)?,
                operand(inputs, 3)?,
                operand(inputs, 4)?,
                h,
            ),
            Op::Recurrent { kind, cell } => recurrent::eval(inputs, *kind, cell, results),
            Op::Collective(c) => Err(c.eval_error()),
            Op::If(regions) => control::eval_if(inputs, regions),
            Op::Loop(regions) => control::eval_loop(inputs, regions),
            Op::Trap(trap) => Err(trap.message.clone()),
        }
    }
}

/// The pattern of the ops that only move or select data (no arithmetic on the values): one list
/// for every exhaustive per-op match that treats them alike (`differentiability` here,
/// `template` and `is_data_movement` in `tessera-kernels`), so the lists cannot drift apart.
#[macro_export]
macro_rules! data_movement_ops {
    () => {
        $crate::ops::Op::Constant(_)
            | $crate::ops::Op::Broadcast { .. }
            | $crate::ops::Op::Reshape { .. }
            | $crate::ops::Op::ShardingConstraint { .. }
            | $crate::ops::Op::Transpose { .. }
            | $crate::ops::Op::Slice { .. }
            | $crate::ops::Op::Concat { .. }
            | $crate::ops::Op::Split { .. }
            | $crate::ops::Op::Gather { .. }
    };
}

impl Op {
    /// What reverse-mode differentiation may assume of the op (see [`gradient`]).
    pub fn differentiability(&self) -> Differentiability {
        // Every variant is named (directly or through `data_movement_ops!`), with no `_` arm, so
        // that a new op must state how it differentiates.
        match self {
            Op::Unary(u) => u.differentiability(),
            Op::Binary(b) => b.differentiability(),
            Op::Compare(_) | Op::ArgMax { .. } | Op::Iota { .. } => Differentiability::PiecewiseConstant,
            Op::Sgd(_)
            | Op::AdamW(_)
            | Op::Collective(_)
            | Op::If(_)
            | Op::Loop(_)
            | Op::Trap(_)
            | Op::WinogradInput { .. }
            | Op::WinogradWeight
            | Op::WinogradOutput { .. } => Differentiability::NotDifferentiable,
            crate::data_movement_ops!()
            | Op::Where
            | Op::Cast { .. }
            | Op::MatMul
            | Op::Softmax { .. }
            | Op::LayerNorm { .. }
            | Op::RmsNorm { .. }
            | Op::Reduce { .. }
            | Op::Scatter { .. }
            | Op::Conv2d { .. }
            | Op::Pool2d { .. }
            | Op::Rope { .. }
            | Op::Recurrent { .. }
            | Op::CrossEntropy => Differentiability::Differentiable,
        }
    }

    /// The gradient rule: appends to `cx.graph` the adjoints of the operands `inputs` whose
    /// `wanted` flag is set, given the results `outputs` and their adjoints `grads` (`None`
    /// where a result does not reach the loss). Returns one entry per operand. Each family
    /// module states its rules beside its shape rule.
    pub fn gradient(
        &self,
        cx: &mut GradContext,
        inputs: &[ValueId],
        outputs: &[ValueId],
        grads: &[Option<ValueId>],
        wanted: &[bool],
    ) -> GradResult {
        let mnemonic = self.mnemonic();
        let missing = || GradError::Unsupported { op: mnemonic, message: "operand or result missing".into() };
        let x = |i: usize| inputs.get(i).copied().ok_or_else(missing);
        if let Op::Recurrent { kind, .. } = self {
            // Checked before the adjoints are looked at: an adjoint of `y_h` or `y_c` alone
            // must not read as "nothing reaches the operands".
            return Err(recurrent::no_gradient(*kind));
        }
        let y = outputs.first().copied().ok_or_else(missing)?;
        let want = |i: usize| wanted.get(i).copied().unwrap_or(false);
        // Every op but `split` has one result; its adjoint is there, or nothing is wanted.
        let g = match (self, grads.first().copied().flatten()) {
            (Op::Split { .. }, _) => y,
            (_, Some(g)) => g,
            (_, None) => return Ok(vec![None; inputs.len()]),
        };
        let one = |v: ValueId| -> GradResult { Ok(vec![Some(v)]) };
        match self {
            Op::Constant(_) => Ok(vec![]),
            Op::Unary(u) => one(u.grad(cx, x(0)?, y, g)?),
            Op::Binary(b) => b.grad(cx, (x(0)?, x(1)?, y, g), wanted),
            Op::Where => elementwise::grad_where(cx, x(0)?, g, wanted),
            Op::Cast { .. } => one(elementwise::grad_cast(cx, x(0)?, g)?),
            Op::MatMul => matmul::grad(cx, x(0)?, x(1)?, g, wanted),
            Op::Softmax { axis } => one(normalization::grad_softmax(cx, y, g, *axis)?),
            Op::LayerNorm { axis, epsilon } => {
                normalization::grad_layer_norm(cx, (x(0)?, x(1)?, x(2)?, g), *axis, *epsilon, wanted)
            }
            Op::RmsNorm { axis, epsilon } => {
                normalization::grad_rms_norm(cx, (x(0)?, x(1)?, g), *axis, *epsilon, wanted)
            }
            Op::Reduce { kind, axes, .. } => one(kind.grad(cx, (x(0)?, y, g), axes)?),
            Op::Broadcast { .. } => one(layout::grad_broadcast(cx, x(0)?, g)?),
            Op::Reshape { .. } => one(layout::grad_reshape(cx, x(0)?, g)?),
            // The gradient passes through (its layout is the shard pass's own choice).
            Op::ShardingConstraint { .. } => one(g),
            Op::Transpose { perm } => one(layout::grad_transpose(cx, g, perm)?),
            Op::Slice { starts, ends, steps } => one(layout::grad_slice(cx, x(0)?, g, (starts, ends, steps))?),
            Op::Concat { axis } => layout::grad_concat(cx, inputs, g, *axis, wanted),
            Op::Split { axis, .. } => layout::grad_split(cx, outputs, grads, *axis),
            Op::Gather { axis } => Ok(vec![Some(indexing::grad_gather(cx, x(0)?, x(1)?, g, *axis)?), None]),
            Op::Scatter { axis, reduction } => indexing::grad_scatter(cx, (x(1)?, x(2)?, g), *axis, *reduction, wanted),
            Op::Conv2d { window, groups } => conv::grad_conv2d(cx, (x(0)?, x(1)?, g), window, *groups, wanted),
            Op::Pool2d { kind, kernel, window } => one(conv::grad_pool2d(cx, (x(0)?, y, g), *kind, *kernel, window)?),
            Op::Rope { interleaved } => rope::grad(cx, (x(0)?, x(1)?, x(2)?, g), *interleaved, wanted),
            Op::CrossEntropy => Ok(vec![Some(optim::grad_cross_entropy(cx, x(0)?, x(1)?, g)?), None]),
            Op::Recurrent { kind, .. } => Err(recurrent::no_gradient(*kind)),
            Op::If(_) | Op::Trap(_) => Err(GradError::Unsupported {
                op: mnemonic,
                message: "control flow is not differentiated (differentiate each branch's graph)".into(),
            }),
            Op::Loop(_) => Err(GradError::Unsupported {
                op: mnemonic,
                message: "loops are not differentiated (reverse mode would have to keep every trip's values)".into(),
            }),
            Op::Compare(_)
            | Op::ArgMax { .. }
            | Op::Iota { .. }
            | Op::Sgd(_)
            | Op::AdamW(_)
            | Op::Collective(_)
            | Op::WinogradInput { .. }
            | Op::WinogradWeight
            | Op::WinogradOutput { .. } => {
                let operand = (0..inputs.len()).find(|&i| want(i)).unwrap_or(0);
                let reason = match self {
                    _ if self.differentiability() == Differentiability::PiecewiseConstant => {
                        "its result is not a float (piecewise constant)"
                    }
                    Op::Collective(_) => "it is communication in a per-rank program: differentiate before partitioning",
                    Op::WinogradInput { .. } | Op::WinogradWeight | Op::WinogradOutput { .. } => {
                        "it is a Winograd transform introduced by the e-graph for inference: differentiate before optimizing"
                    }
                    _ => "it is an optimizer state update",
                };
                Err(GradError::NotDifferentiable { op: mnemonic, operand, reason: reason.into() })
            }
        }
    }
}

fn operand<'a>(inputs: &[&'a Tensor], i: usize) -> Result<&'a Tensor, String> {
    inputs.get(i).copied().ok_or_else(|| format!("missing operand {i}"))
}

/// The concrete target of `reshape`/`broadcast`: the single result type's dimensions, which
/// must agree with every static dimension the op itself names.
fn bound_target<'a>(shape: &[Dim], results: &'a [TensorType]) -> Result<&'a [Dim], String> {
    let [result] = results else {
        return Err(format!("expected one result type, got {}", results.len()));
    };
    let agrees = shape.len() == result.rank()
        && shape.iter().zip(&result.dims).all(|(d, r)| matches!(d, Dim::Symbolic(_)) || d == r);
    if !agrees {
        let dims: Vec<String> = shape.iter().map(Dim::to_string).collect();
        return Err(format!("result type {result} does not match the target shape [{}]", dims.join(", ")));
    }
    Ok(&result.dims)
}

fn type_list(types: &[TensorType]) -> String {
    types.iter().map(TensorType::to_string).collect::<Vec<_>>().join(", ")
}

/// The shape of a fully static type in elements; an error names a symbolic dimension or an
/// element count that does not fit in memory addressing.
fn concrete_shape(t: &TensorType) -> Result<Vec<usize>, String> {
    let mut count: usize = 1;
    let mut shape = Vec::with_capacity(t.rank());
    for d in &t.dims {
        let n = match d {
            Dim::Static(n) => usize::try_from(*n).map_err(|_| format!("dimension {n} of {t} is too large"))?,
            Dim::Symbolic(s) => return Err(format!("result type {t} has unbound symbolic dimension '{s}'")),
        };
        count = count.checked_mul(n).ok_or_else(|| format!("{t} has too many elements"))?;
        shape.push(n);
    }
    Ok(shape)
}

/// A tensor is well formed when its storage holds one element per index of its shape, as
/// floats for a float dtype and as integers otherwise.
fn check_tensor(t: &Tensor) -> Result<(), String> {
    let count = t.shape.iter().try_fold(1usize, |acc, &n| acc.checked_mul(n));
    if count != Some(t.len()) {
        return Err(format!("{} elements stored for shape {:?}", t.len(), t.shape));
    }
    let float_storage = t.has_float_storage();
    if float_storage != t.dtype.is_float() {
        let kind = if float_storage { "floats" } else { "integers" };
        return Err(format!("{} values stored as {kind}", t.dtype));
    }
    if t.data.kind() != Buffer::kind_of(t.dtype) {
        let width = match t.data.kind() {
            BufferKind::F32 => "f32",
            BufferKind::F16 => "f16",
            BufferKind::BF16 => "bf16",
            BufferKind::Float | BufferKind::Int => "f64",
        };
        return Err(format!("{} values stored as {width} floats", t.dtype));
    }
    Ok(())
}

/// The float elements of `t` as `f64` (see [`Tensor::floats`]), for ops defined on floats only.
pub(crate) fn floats(t: &Tensor) -> Result<std::borrow::Cow<'_, [f64]>, String> {
    t.floats().ok_or_else(|| format!("expected a float tensor, got {}", t.dtype))
}

/// The integer storage of `t` (integers and booleans).
pub(crate) fn ints(t: &Tensor) -> Result<&[i64], String> {
    match &t.data {
        Buffer::Int(v) => Ok(v),
        Buffer::Float(_) | Buffer::F32(_) | Buffer::F16(_) | Buffer::BF16(_) => {
            Err(format!("expected an integer tensor, got {}", t.dtype))
        }
    }
}

/// Maps the row-major linear index `i` of `shape` to `offset + Σ idx[d] * coeffs[d]`: with
/// the right coefficients this is a broadcast, a transpose, a strided slice or a reduction's
/// output slot, computed without allocating a multi-index.
pub(crate) fn strided_index(mut i: usize, shape: &[usize], coeffs: &[i64], offset: i64) -> usize {
    let mut at = offset;
    for d in (0..shape.len()).rev() {
        let n = shape[d];
        if n > 0 {
            at += (i % n) as i64 * coeffs[d];
            i /= n;
        }
    }
    at as usize
}

/// Coefficients for [`strided_index`] that read `src` broadcast to `out` (NumPy trailing
/// alignment): a source dimension of 1 and a missing leading dimension contribute nothing.
pub(crate) fn broadcast_coeffs(src: &[usize], out: &[usize]) -> Vec<i64> {
    let src_strides = crate::tensor::strides(src);
    let lead = out.len().saturating_sub(src.len());
    (0..out.len())
        .map(|d| match d.checked_sub(lead) {
            Some(s) if src[s] != 1 => src_strides[s] as i64,
            _ => 0,
        })
        .collect()
}

/// Product of dimensions (1 for none).
pub(crate) fn product(dims: &[usize]) -> usize {
    dims.iter().product()
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

/// Whether two different dimensions may still broadcast, to be checked once their sizes are
/// known: both symbolic, and the symbols cannot decide whether they are equal
/// ([`DimExpr::decide_equal`](crate::symbolic::DimExpr::decide_equal) gives `None`). A symbolic
/// size against a static one is decided at import instead (it is refused unless 1).
pub fn checked_at_run_time(a: &Dim, b: &Dim) -> bool {
    match (a, b) {
        (Dim::Symbolic(x), Dim::Symbolic(y)) => x.decide_equal(y).is_none(),
        _ => false,
    }
}

/// NumPy broadcasting of two dimension lists (trailing alignment, 1 stretches); `None` when
/// they do not broadcast. Two symbolic sizes that only some sizes make equal
/// ([`checked_at_run_time`]) broadcast to `a`'s, checked at run time by `tsr.broadcast`'s rule.
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
                _ if checked_at_run_time(da, db) => Some(da.clone()),
                _ => None,
            }
        })
        .collect()
}

/// Helpers for the family modules' eval tests: run an op the way the interpreter does and
/// compare values.
#[cfg(test)]
pub(crate) mod test_support {
    use super::Op;
    use crate::dtype::DType;
    use crate::tensor::Tensor;
    use crate::types::TensorType;

    /// Infers the concrete result types from the operands and evaluates.
    pub fn eval(op: &Op, inputs: &[&Tensor]) -> Result<Vec<Tensor>, String> {
        let types: Vec<TensorType> = inputs.iter().map(|t| t.tensor_type()).collect();
        let refs: Vec<&TensorType> = types.iter().collect();
        let results = op.infer(&refs)?;
        op.eval(inputs, &results)
    }

    /// Evaluates a single-result op that must succeed.
    pub fn eval1(op: &Op, inputs: &[&Tensor]) -> Tensor {
        match eval(op, inputs) {
            Ok(mut outs) if outs.len() == 1 => outs.remove(0),
            other => panic!("{} did not give one result: {other:?}", op.mnemonic()),
        }
    }

    /// The error message of an evaluation that must fail.
    pub fn eval_err(op: &Op, inputs: &[&Tensor]) -> String {
        match eval(op, inputs) {
            Err(message) => message,
            Ok(outs) => panic!("{} unexpectedly gave {outs:?}", op.mnemonic()),
        }
    }

    pub fn f32s(shape: &[usize], values: &[f64]) -> Tensor {
        Tensor::from_f64(DType::F32, shape.to_vec(), values.to_vec())
    }

    pub fn f64s(shape: &[usize], values: &[f64]) -> Tensor {
        Tensor::from_f64(DType::F64, shape.to_vec(), values.to_vec())
    }

    pub fn i64s(shape: &[usize], values: &[i64]) -> Tensor {
        Tensor::from_i64(DType::I64, shape.to_vec(), values.to_vec())
    }

    /// Asserts shape, dtype and every value within `tol` (absolute).
    pub fn assert_close(t: &Tensor, dtype: DType, shape: &[usize], expected: &[f64], tol: f64) {
        assert_eq!((t.dtype, t.shape.as_slice()), (dtype, shape), "dtype and shape");
        let got = t.to_f64_vec();
        assert_eq!(got.len(), expected.len(), "element count");
        for (i, (g, e)) in got.iter().zip(expected).enumerate() {
            let same_nan = g.is_nan() && e.is_nan();
            assert!(
                g == e || same_nan || (g - e).abs() <= tol,
                "element {i}: got {g}, expected {e} (tol {tol}); all: {got:?}"
            );
        }
    }
}

#[cfg(test)]
mod eval_tests {
    use super::test_support::{eval1, f32s};
    use super::Op;
    use crate::dtype::DType;
    use crate::tensor::{Buffer, Tensor};
    use crate::types::{Dim, TensorType};

    #[test]
    fn constant_returns_its_literal() {
        let literal = f32s(&[2], &[1.5, -2.0]);
        assert_eq!(eval1(&Op::Constant(literal.clone()), &[]), literal);
    }

    #[test]
    fn symbolic_targets_take_the_concrete_result_shape() {
        let x = f32s(&[1, 2], &[1.0, 2.0]);
        let op = Op::Broadcast { shape: vec![Dim::sym("batch"), Dim::Static(2)] };
        let out = op.eval(&[&x], &[TensorType::of_static(DType::F32, &[3, 2])]).expect("broadcast");
        assert_eq!((out[0].shape.clone(), out[0].to_f64_vec()), (vec![3, 2], vec![1.0, 2.0, 1.0, 2.0, 1.0, 2.0]));
        // A static dimension of the op must agree with the result type.
        let err = op.eval(&[&x], &[TensorType::of_static(DType::F32, &[3, 4])]).expect_err("mismatch");
        assert_eq!(err, "result type tensor<3x4xf32> does not match the target shape [batch, 2]");
    }

    #[test]
    fn inconsistent_result_types_are_an_error() {
        let a = f32s(&[2], &[1.0, 2.0]);
        let op = Op::Unary(super::elementwise::UnaryOp::Neg);
        let err = op.eval(&[&a], &[TensorType::of_static(DType::F32, &[3])]).expect_err("mismatch");
        assert_eq!(err, "result types (tensor<3xf32>) differ from what the op gives for its operands (tensor<2xf32>)");
        let err = op.eval(&[], &[]).expect_err("arity");
        assert_eq!(err, "expected 1 operand(s), got 0");
    }

    #[test]
    fn zero_sized_tensors_evaluate_without_panicking() {
        use super::conv::{PoolKind, Window};
        use super::indexing::ScatterReduction;
        use super::reduce::ReduceKind;
        // Zero-filled; most cases below have a zero dimension somewhere.
        let zeros = |shape: &[usize]| Tensor::zeros(DType::F32, shape.to_vec());
        let ids = |shape: &[usize]| Tensor::from_i64(DType::I64, shape.to_vec(), vec![]);
        let window = Window { strides: [1, 1], pads: [0; 4], dilations: [1, 1] };
        // k = 0: every product sums nothing.
        let product = eval1(&Op::MatMul, &[&zeros(&[2, 0]), &zeros(&[0, 3])]);
        assert_eq!((product.shape.clone(), product.to_f64_vec()), (vec![2, 3], vec![0.0; 6]));
        let cases: Vec<(Op, Vec<Tensor>, Vec<usize>)> = vec![
            (Op::MatMul, vec![zeros(&[0, 2, 2]), zeros(&[2, 2])], vec![0, 2, 2]),
            (Op::Softmax { axis: 1 }, vec![zeros(&[2, 0])], vec![2, 0]),
            (Op::LayerNorm { axis: 1, epsilon: 1e-5 }, vec![zeros(&[2, 0]), zeros(&[0]), zeros(&[0])], vec![2, 0]),
            (Op::RmsNorm { axis: 0, epsilon: 1e-5 }, vec![zeros(&[0, 3]), zeros(&[0, 3])], vec![0, 3]),
            (Op::Reduce { kind: ReduceKind::Max, axes: vec![0], keepdims: false }, vec![zeros(&[3, 0])], vec![0]),
            (Op::ArgMax { axis: 1, keepdims: false }, vec![zeros(&[0, 4])], vec![0]),
            (Op::Gather { axis: 1 }, vec![zeros(&[2, 3]), ids(&[0])], vec![2, 0]),
            (Op::Gather { axis: 0 }, vec![zeros(&[0, 3]), ids(&[0])], vec![0, 3]),
            (
                Op::Scatter { axis: 0, reduction: ScatterReduction::Add },
                vec![zeros(&[0, 2]), ids(&[0, 2]), zeros(&[0, 2])],
                vec![0, 2],
            ),
            (
                Op::Conv2d { window: window.clone(), groups: 1 },
                vec![zeros(&[0, 1, 2, 2]), f32s(&[1, 1, 1, 1], &[1.0])],
                vec![0, 1, 2, 2],
            ),
            (Op::Pool2d { kind: PoolKind::Avg, kernel: [1, 1], window }, vec![zeros(&[1, 0, 2, 2])], vec![1, 0, 2, 2]),
            (Op::Rope { interleaved: false }, vec![zeros(&[0, 2]), zeros(&[0, 1]), zeros(&[0, 1])], vec![0, 2]),
            (Op::Transpose { perm: vec![1, 0] }, vec![zeros(&[0, 3])], vec![3, 0]),
            (Op::Concat { axis: 0 }, vec![zeros(&[0, 2]), zeros(&[0, 2])], vec![0, 2]),
        ];
        for (op, inputs, shape) in cases {
            let refs: Vec<&Tensor> = inputs.iter().collect();
            let t = eval1(&op, &refs);
            assert_eq!((t.shape.clone(), t.len()), (shape, 0), "{}", op.mnemonic());
        }
    }

    #[test]
    fn malformed_operands_are_an_error() {
        let short = Tensor { dtype: DType::F32, shape: vec![3], data: Buffer::Float(vec![1.0]) };
        let op = Op::Unary(super::elementwise::UnaryOp::Neg);
        let err = op.eval(&[&short], &[TensorType::of_static(DType::F32, &[3])]).expect_err("short");
        assert_eq!(err, "operand 0 is malformed: 1 elements stored for shape [3]");
        let wrong = Tensor { dtype: DType::F32, shape: vec![1], data: Buffer::Int(vec![1]) };
        let err = op.eval(&[&wrong], &[TensorType::of_static(DType::F32, &[1])]).expect_err("storage");
        assert_eq!(err, "operand 0 is malformed: f32 values stored as integers");
    }
}

#[cfg(test)]
mod flops_tests {
    use super::conv::{PoolKind, Window};
    use super::elementwise::{BinaryOp, UnaryOp};
    use super::indexing::ScatterReduction;
    use super::reduce::ReduceKind;
    use super::Op;

    fn flops(op: &Op, inputs: &[&[u64]], result: &[u64]) -> u128 {
        op.flops(inputs, &[result]).expect("flops")
    }

    #[test]
    fn hand_computed_flops() {
        // 2 * M * N * K * batch: 2 * 3 * 7 * 5 * (4 * 2), the weight shared by the batch.
        assert_eq!(flops(&Op::MatMul, &[&[4, 2, 3, 5], &[5, 7]], &[4, 2, 3, 7]), 1680);
        // Batch dimensions [2, 1] and [4] broadcast to [2, 4]: 2 * 3 * 6 * 5 * 8.
        assert_eq!(flops(&Op::MatMul, &[&[2, 1, 3, 5], &[4, 5, 6]], &[2, 4, 3, 6]), 1440);
        // 2 * N * O * OH * OW * (C / groups) * KH * KW = 2 * 2 * 6 * 6 * 6 * (4 / 2) * 3 * 3.
        let window = Window { strides: [1, 1], pads: [0; 4], dilations: [1, 1] };
        let conv = Op::Conv2d { window: window.clone(), groups: 2 };
        assert_eq!(flops(&conv, &[&[2, 4, 8, 8], &[6, 2, 3, 3]], &[2, 6, 6, 6]), 15552);
        // Pooling: 1 per window element per output, 8 outputs * 2 * 2.
        let pool = Op::Pool2d { kind: PoolKind::Max, kernel: [2, 2], window: Window { strides: [2, 2], ..window } };
        assert_eq!(flops(&pool, &[&[1, 2, 4, 4]], &[1, 2, 2, 2]), 32);
        // Elementwise ops (transcendentals included) 1, softmax 5, norms 8 and rope 3 per element.
        assert_eq!(flops(&Op::Binary(BinaryOp::Add), &[&[3, 4], &[4]], &[3, 4]), 12);
        assert_eq!(flops(&Op::Unary(UnaryOp::Exp), &[&[3, 4]], &[3, 4]), 12);
        assert_eq!(flops(&Op::Softmax { axis: 1 }, &[&[3, 4]], &[3, 4]), 60);
        assert_eq!(flops(&Op::LayerNorm { axis: 1, epsilon: 1e-5 }, &[&[3, 4], &[4], &[4]], &[3, 4]), 96);
        assert_eq!(flops(&Op::RmsNorm { axis: 1, epsilon: 1e-5 }, &[&[3, 4], &[4]], &[3, 4]), 96);
        assert_eq!(flops(&Op::Rope { interleaved: false }, &[&[2, 4], &[2, 2], &[2, 2]], &[2, 4]), 24);
        // Reductions and argmax: 1 per input element.
        let sum = Op::Reduce { kind: ReduceKind::Sum, axes: vec![1], keepdims: false };
        assert_eq!(flops(&sum, &[&[3, 4]], &[3]), 12);
        assert_eq!(flops(&Op::ArgMax { axis: 0, keepdims: true }, &[&[3, 4]], &[1, 4]), 12);
        // Scatter with add: 1 per update; data movement: 0.
        let scatter = |reduction| Op::Scatter { axis: 0, reduction };
        assert_eq!(flops(&scatter(ScatterReduction::Add), &[&[5, 3], &[2, 3], &[2, 3]], &[5, 3]), 6);
        assert_eq!(flops(&scatter(ScatterReduction::None), &[&[5, 3], &[2, 3], &[2, 3]], &[5, 3]), 0);
        assert_eq!(flops(&Op::Transpose { perm: vec![1, 0] }, &[&[3, 4]], &[4, 3]), 0);
        assert_eq!(flops(&Op::Gather { axis: 0 }, &[&[5, 3], &[2]], &[2, 3]), 0);
    }

    #[test]
    fn flops_saturate_and_impossible_operands_are_errors() {
        let huge = u64::MAX;
        assert_eq!(flops(&Op::MatMul, &[&[huge, huge], &[huge, huge]], &[huge, huge]), u128::MAX);
        assert_eq!(Op::MatMul.flops(&[], &[&[2, 2]]), Err("operand 0 is missing".to_string()));
        assert_eq!(Op::MatMul.flops(&[&[], &[]], &[&[]]), Err("matmul operand has rank 0".to_string()));
    }
}
