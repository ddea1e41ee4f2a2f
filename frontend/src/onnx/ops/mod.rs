//! The op registry: ONNX op type -> builder function, one module per op family (tract style).
//! Opset quirks (attributes that became inputs, changed defaults) stay inside each builder.

mod attention;
pub(crate) mod control;
mod einsum;
mod elementwise;
mod grid_sample;
mod loops;
mod loss;
mod matmul;
mod nn;
mod normalization;
mod quantize;
mod recurrent;
mod reduce;
mod resize;
mod shape;
mod signal;

use super::import::{Importer, NodeCx, Slot};
use std::collections::HashMap;
use tessera_ir::dtype::DType;
use tessera_ir::graph::{AddNodeError, ValueId};
use tessera_ir::tensor::Tensor;
use tessera_ir::types::normalize_axis;

/// Why a builder could not import a node; the driver adds the node's name and op type.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum BuildError {
    /// Valid ONNX that tessera cannot import (yet).
    Unsupported(String),
    /// A malformed node, or one inconsistent with its inputs.
    Invalid(String),
    /// An input that must be known at import time is computed at run time: the ONNX value name
    /// and the input's role (`axes`, `shape`, ...).
    NotConstant { value: String, role: String },
    /// An `If` whose condition only the sizes decide and whose branches yield different types
    /// (a `squeeze` of a dimension that may be 1): no one type follows it, so the importer
    /// imports what follows once per branch ([`crate::onnx::ops::control::split_at_size_if`]).
    /// The message is the refusal, should that fail too.
    TypesDependOnSizes(String),
    /// The op's shape rule needs the size `size` to equal `value` (or to be at least `value`,
    /// as `relation` says), which holds for some sizes of the symbols only (PP-OCRv4's
    /// recognizer reshapes `[b, w' * floordiv(h + 15, 48), c]` to `[b, 1, w', c]`; Swin's
    /// shifted-window roll slices `[0:1]` of `2 * floordiv(h + 4, 8)` rows). The importer imports
    /// this node and what follows with that assumed, checked at run time before it
    /// ([`crate::onnx::ops::control::split_at_size_assumption`]).
    /// The message is the refusal, should that fail too.
    AssumesSize { size: tessera_ir::symbolic::DimExpr, relation: SizeRelation, value: i64, refusal: String },
}

/// How an assumed size relates to its constant ([`BuildError::AssumesSize`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SizeRelation {
    /// `size = value`: an axis a reshape or concat needs to be 1.
    Equal,
    /// `size >= value`: a slice of constant bounds fits the axis, `value mod size` is `value`.
    AtLeast,
}

impl SizeRelation {
    /// The comparison computed at run time to check the assumption.
    pub(crate) fn compare_op(self) -> tessera_ir::ops::elementwise::CompareOp {
        match self {
            SizeRelation::Equal => tessera_ir::ops::elementwise::CompareOp::Eq,
            SizeRelation::AtLeast => tessera_ir::ops::elementwise::CompareOp::Ge,
        }
    }

    /// The relation as the messages write it.
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            SizeRelation::Equal => "=",
            SizeRelation::AtLeast => ">=",
        }
    }
}

impl From<AddNodeError> for BuildError {
    fn from(e: AddNodeError) -> BuildError {
        BuildError::Invalid(e.to_string())
    }
}

/// Attribute accessors report a wrong kind as a plain message.
impl From<String> for BuildError {
    fn from(message: String) -> BuildError {
        BuildError::Invalid(message)
    }
}

pub(crate) type BuildResult<T> = Result<T, BuildError>;

/// Imports one node: returns one slot per ONNX output, in order (trailing optional outputs
/// the builder does not produce may be left off; asking for them is then an error).
pub(crate) type Builder = fn(&mut Importer, &NodeCx) -> BuildResult<Vec<Slot>>;

/// ONNX op type -> builder. Each family module fills it in its `register`, a table of one
/// `insert` per op type; those rows look alike across families by design (the duplicates tool
/// lists them as repeated shape), and each stays beside the builders it names.
#[derive(Default)]
pub(crate) struct Registry {
    builders: HashMap<&'static str, Builder>,
    /// Op types registered more than once (the later builder wins); a test keeps it empty,
    /// so a unary op's table row and a hand-written builder cannot silently shadow each other.
    registered_twice: Vec<&'static str>,
}

impl Registry {
    pub fn get(&self, op_type: &str) -> Option<Builder> {
        self.builders.get(op_type).copied()
    }

    fn insert(&mut self, op_type: &'static str, builder: Builder) {
        if self.builders.insert(op_type, builder).is_some() {
            self.registered_twice.push(op_type);
        }
    }

    /// The op types with a builder, sorted (for docs and the conformance report).
    pub fn op_types(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self.builders.keys().copied().collect();
        names.sort_unstable();
        names
    }
}

/// Every builder. Of the subgraph ops, `If` imports (as `tsr.if`); `Loop` and `Scan` have no
/// builder and are reported as unsupported.
pub(crate) fn registry() -> Registry {
    let mut r = Registry::default();
    attention::register(&mut r);
    control::register(&mut r);
    loops::register(&mut r);
    einsum::register(&mut r);
    elementwise::register(&mut r);
    grid_sample::register(&mut r);
    loss::register(&mut r);
    matmul::register(&mut r);
    nn::register(&mut r);
    normalization::register(&mut r);
    quantize::register(&mut r);
    recurrent::register(&mut r);
    reduce::register(&mut r);
    resize::register(&mut r);
    shape::register(&mut r);
    signal::register(&mut r);
    r
}

pub(crate) fn unsupported<T>(message: impl Into<String>) -> BuildResult<T> {
    Err(BuildError::Unsupported(message.into()))
}

pub(crate) fn invalid<T>(message: impl Into<String>) -> BuildResult<T> {
    Err(BuildError::Invalid(message.into()))
}

/// A single-output node's result.
pub(crate) fn one(v: ValueId) -> BuildResult<Vec<Slot>> {
    Ok(vec![Slot::Value(v)])
}

/// An ONNX axis (negative counts from the end) checked against `rank`.
pub(crate) fn axis_of(axis: i64, rank: usize) -> BuildResult<usize> {
    normalize_axis(axis, rank)
        .ok_or_else(|| BuildError::Invalid(format!("axis {axis} is out of range for rank {rank}")))
}

/// Constants the importer makes up (masks, iotas, filled shapes) are capped at this many
/// elements, so a model naming an absurd shape gets an error instead of exhausting memory.
pub(crate) const MAX_GENERATED: u64 = 1 << 26;

/// `n` as an element count of a generated constant, checked against [`MAX_GENERATED`].
pub(crate) fn generated_len(n: u64, what: &str) -> BuildResult<usize> {
    if n > MAX_GENERATED {
        return unsupported(format!("{what} would need a constant of {n} elements (the limit is {MAX_GENERATED})"));
    }
    Ok(n as usize)
}

/// The int64 constant `0..n` laid along `axis` of a rank-`rank` shape of ones.
pub(crate) fn iota(imp: &mut Importer, rank: usize, axis: usize, n: u64) -> BuildResult<ValueId> {
    let len = generated_len(n, "an index range")?;
    let mut shape = vec![1usize; rank];
    shape[axis] = len;
    Ok(imp.constant(Tensor::from_i64(DType::I64, shape, (0..len as i64).collect())))
}

#[cfg(test)]
mod tests {
    use tessera_ir::ops::elementwise::UnaryOp;

    #[test]
    fn every_op_type_has_one_builder_and_unary_rows_are_registered() {
        let registry = super::registry();
        assert_eq!(registry.registered_twice, Vec::<&str>::new());
        let types = registry.op_types();
        for name in UnaryOp::ALL.iter().filter_map(|u| u.onnx_name()) {
            assert!(types.contains(&name), "{name} is not registered");
        }
    }
}
