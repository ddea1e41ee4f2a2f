//! The interface of gradient rules: what reverse-mode differentiation asks of each op, and a
//! small graph builder the rules write their adjoint computations with.
//!
//! A rule is graph construction: given the op's operands and results in the graph being
//! differentiated and the adjoints of its results (`None` where a result does not reach the
//! loss, meaning zero), it appends nodes computing the adjoint of every operand whose gradient
//! is wanted, using existing ops only. Each family module states its rules beside its shape
//! rule and reference semantics (`grad_*`); [`super::Op::gradient`] dispatches to them.
//!
//! [`Differentiability`] says what an op promises. Ops whose float results are piecewise
//! constant in their operands (comparisons, `argmax`, casts to integers) have no float result,
//! so no adjoint ever reaches them and their derivative is zero, as math dictates; optimizer
//! updates are not differentiated at all and asking for it is an error.
//!
//! # Gradients and training ops
//!
//! **Gradients and training ops.** `ir::ops::gradient` is the interface of gradient rules: each
//! family module states, beside its shape rule and reference semantics, how to build the adjoints
//! of its operands from existing ops (`grad*`), and `Op::differentiability` says which ops are
//! piecewise constant (comparisons, `argmax`, boolean logic) or not differentiable at all
//! (optimizer updates). `ir::ops::optim` holds `cross_entropy` (stable, mean over tokens), `sgd`
//! and `adamw` (bias correction, decoupled weight decay) as ordinary ops. Rules that need index
//! arithmetic build constant index tensors (so they need static shapes, and say so otherwise):
//! `gather_elements` for `scatter`, one `scatter` per sliced axis for `slice`, and im2col through
//! `gather`/`scatter` add on the flattened image (padding taps read and write one extra element)
//! for `conv2d` and pooling.

use crate::dtype::DType;
use crate::graph::{AddNodeError, Graph, ValueId};
use crate::ops::reduce::ReduceKind;
use crate::ops::Op;
use crate::tensor::Tensor;
use crate::types::{Dim, TensorType};

/// Why an adjoint could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GradError {
    /// The op has no derivative with respect to this operand (an optimizer update, say).
    #[error("tsr.{op} is not differentiable with respect to operand {operand}: {reason}")]
    NotDifferentiable { op: &'static str, operand: usize, reason: String },
    /// The rule needs something the graph does not give it (a static shape, say).
    #[error("gradient of tsr.{op}: {message}")]
    Unsupported { op: &'static str, message: String },
    /// A node of the adjoint computation failed its shape rule: a bug in the rule.
    #[error("gradient rule built an ill-typed node: {0}")]
    Build(#[from] AddNodeError),
}

/// What differentiation may assume of an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Differentiability {
    /// Every float operand gets an adjoint from the op's rule.
    Differentiable,
    /// The results are not floats (booleans, indices, integers) or are floats rounded to
    /// integers (floor, ceil, round): the derivative is zero wherever it exists, and no adjoint
    /// flows through.
    PiecewiseConstant,
    /// State updates (optimizer steps): differentiating through them is an error.
    NotDifferentiable,
}

/// The adjoint of each operand (`None`: not wanted, or zero because it does not matter).
pub type GradResult = Result<Vec<Option<ValueId>>, GradError>;

/// What a rule sees: the graph to append to, the op's operands and results, the adjoints of
/// the results, and which operand adjoints are wanted.
pub struct GradContext<'g> {
    pub graph: &'g mut Graph,
    pub op: &'static str,
}

impl<'g> GradContext<'g> {
    pub fn new(graph: &'g mut Graph, op: &'static str) -> GradContext<'g> {
        GradContext { graph, op }
    }

    pub fn ty(&self, v: ValueId) -> TensorType {
        self.graph.value(v).ty.clone()
    }

    pub fn add(&mut self, op: Op, inputs: &[ValueId]) -> Result<ValueId, GradError> {
        Ok(self.graph.add(op, inputs)?)
    }

    pub fn unsupported(&self, message: impl Into<String>) -> GradError {
        GradError::Unsupported { op: self.op, message: message.into() }
    }

    pub fn unary(&mut self, op: crate::ops::elementwise::UnaryOp, x: ValueId) -> Result<ValueId, GradError> {
        self.add(Op::Unary(op), &[x])
    }

    pub fn binary(
        &mut self,
        op: crate::ops::elementwise::BinaryOp,
        a: ValueId,
        b: ValueId,
    ) -> Result<ValueId, GradError> {
        self.add(Op::Binary(op), &[a, b])
    }

    pub fn mul(&mut self, a: ValueId, b: ValueId) -> Result<ValueId, GradError> {
        self.binary(crate::ops::elementwise::BinaryOp::Mul, a, b)
    }

    pub fn add2(&mut self, a: ValueId, b: ValueId) -> Result<ValueId, GradError> {
        self.binary(crate::ops::elementwise::BinaryOp::Add, a, b)
    }

    pub fn sub(&mut self, a: ValueId, b: ValueId) -> Result<ValueId, GradError> {
        self.binary(crate::ops::elementwise::BinaryOp::Sub, a, b)
    }

    pub fn div(&mut self, a: ValueId, b: ValueId) -> Result<ValueId, GradError> {
        self.binary(crate::ops::elementwise::BinaryOp::Div, a, b)
    }

    pub fn neg(&mut self, a: ValueId) -> Result<ValueId, GradError> {
        self.unary(crate::ops::elementwise::UnaryOp::Neg, a)
    }

    /// The literal `c` of dtype `dtype` broadcast to `dims`.
    pub fn splat(&mut self, dtype: DType, dims: &[Dim], c: f64) -> Result<ValueId, GradError> {
        let literal =
            if dtype.is_float() { Tensor::scalar(dtype, c) } else { Tensor::from_i64(dtype, vec![], vec![c as i64]) };
        let scalar = self.add(Op::Constant(literal), &[])?;
        if dims.is_empty() {
            return Ok(scalar);
        }
        self.add(Op::Broadcast { shape: dims.to_vec() }, &[scalar])
    }

    /// The literal `c` in the type of `like`.
    pub fn splat_like(&mut self, like: ValueId, c: f64) -> Result<ValueId, GradError> {
        let t = self.ty(like);
        self.splat(t.dtype, &t.dims, c)
    }

    /// `x * c` for a literal `c`.
    pub fn scale(&mut self, x: ValueId, c: f64) -> Result<ValueId, GradError> {
        let k = self.splat_like(x, c)?;
        self.mul(x, k)
    }

    pub fn zeros(&mut self, t: &TensorType) -> Result<ValueId, GradError> {
        self.splat(t.dtype, &t.dims, 0.0)
    }

    pub fn reshape(&mut self, x: ValueId, dims: &[Dim]) -> Result<ValueId, GradError> {
        if self.ty(x).dims == dims {
            return Ok(x);
        }
        self.add(Op::Reshape { shape: dims.to_vec() }, &[x])
    }

    pub fn broadcast(&mut self, x: ValueId, dims: &[Dim]) -> Result<ValueId, GradError> {
        if self.ty(x).dims == dims {
            return Ok(x);
        }
        self.add(Op::Broadcast { shape: dims.to_vec() }, &[x])
    }

    pub fn reduce(
        &mut self,
        kind: ReduceKind,
        x: ValueId,
        axes: &[usize],
        keepdims: bool,
    ) -> Result<ValueId, GradError> {
        if axes.is_empty() {
            return Ok(x);
        }
        let axes = axes.iter().map(|&a| a as i64).collect();
        self.add(Op::Reduce { kind, axes, keepdims }, &[x])
    }

    /// Sums `g` down to `target`, undoing a NumPy broadcast (trailing alignment): the leading
    /// dimensions `target` lacks and the dimensions where `target` has 1 are summed away.
    pub fn sum_to(&mut self, g: ValueId, target: &TensorType) -> Result<ValueId, GradError> {
        let gt = self.ty(g);
        if gt.dims == target.dims {
            return Ok(g);
        }
        let lead = gt
            .rank()
            .checked_sub(target.rank())
            .ok_or_else(|| self.unsupported(format!("adjoint {gt} has lower rank than its operand {target}")))?;
        let axes: Vec<usize> = (0..gt.rank())
            .filter(|&i| i < lead || (target.dims[i - lead] == Dim::Static(1) && gt.dims[i] != Dim::Static(1)))
            .collect();
        let summed = self.reduce(ReduceKind::Sum, g, &axes, true)?;
        self.reshape(summed, &target.dims)
    }

    /// The element count of the dimensions `axes` of `t`, which must be static.
    pub fn static_count(&self, t: &TensorType, axes: &[usize]) -> Result<u64, GradError> {
        axes.iter().try_fold(1u64, |acc, &a| {
            t.dims[a]
                .as_static()
                .map(|n| acc * n)
                .ok_or_else(|| self.unsupported(format!("dimension {a} of {t} must be static")))
        })
    }

    /// The static shape of `t`, or an error naming the rule that needs it.
    pub fn static_shape(&self, t: &TensorType) -> Result<Vec<usize>, GradError> {
        t.static_shape()
            .map(|s| s.into_iter().map(|d| d as usize).collect())
            .ok_or_else(|| self.unsupported(format!("needs a static shape, got {t}")))
    }

    /// `where(cond, a, b)`.
    pub fn select(&mut self, cond: ValueId, a: ValueId, b: ValueId) -> Result<ValueId, GradError> {
        self.add(Op::Where, &[cond, a, b])
    }

    pub fn compare(
        &mut self,
        op: crate::ops::elementwise::CompareOp,
        a: ValueId,
        b: ValueId,
    ) -> Result<ValueId, GradError> {
        self.add(Op::Compare(op), &[a, b])
    }

    /// `gather_elements(x, indices, axis)` (ONNX GatherElements) from existing ops: the row-major
    /// position of every index in `x`, as a computed linear index into `x` flattened. `x` and
    /// `indices` need static shapes; negative indices count from the end, as in `scatter`.
    pub fn gather_elements(&mut self, x: ValueId, indices: ValueId, axis: usize) -> Result<ValueId, GradError> {
        use crate::ops::elementwise::{BinaryOp, CompareOp};
        let xt = self.ty(x);
        let it = self.ty(indices);
        let x_shape = self.static_shape(&xt)?;
        let i_shape = self.static_shape(&it)?;
        let strides = crate::tensor::strides(&x_shape);
        let n: usize = i_shape.iter().product();
        // The offset every index position contributes from its coordinates off the axis.
        let offsets: Vec<i64> = (0..n)
            .map(|p| {
                let coords = crate::tensor::unravel(p, &i_shape);
                coords.iter().enumerate().filter(|&(d, _)| d != axis).map(|(d, &c)| (c * strides[d]) as i64).sum()
            })
            .collect();
        let offsets = self.add(Op::Constant(Tensor::from_i64(it.dtype, i_shape.clone(), offsets)), &[])?;
        let extent = self.splat(it.dtype, &it.dims, x_shape[axis] as f64)?;
        let zero = self.splat(it.dtype, &it.dims, 0.0)?;
        let negative = self.compare(CompareOp::Lt, indices, zero)?;
        let wrapped = self.binary(BinaryOp::Add, indices, extent)?;
        let normalized = self.select(negative, wrapped, indices)?;
        let stride = self.splat(it.dtype, &it.dims, strides[axis] as f64)?;
        let along = self.binary(BinaryOp::Mul, normalized, stride)?;
        let linear = self.binary(BinaryOp::Add, along, offsets)?;
        let total = x_shape.iter().product::<usize>() as u64;
        let flat = self.reshape(x, &[Dim::Static(total)])?;
        self.add(Op::Gather { axis: 0 }, &[flat, linear])
    }
}

/// Whether `v`'s type carries adjoints (floats do; integers and booleans do not).
pub fn carries_gradient(t: &TensorType) -> bool {
    t.dtype.is_float()
}
