//! Why an ONNX model could not be imported. Every message names the thing at fault: the node
//! (by name, or by position when it has none) and its op type, the tensor, or the graph input.

use std::fmt;
use std::path::PathBuf;

/// Which node an error is about: its name (ONNX names are optional), position and op type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRef {
    pub name: String,
    /// Position of the node in the ONNX graph's node list.
    pub index: usize,
    /// The op type, prefixed by its domain when that is not the default one.
    pub op_type: String,
}

impl fmt::Display for NodeRef {
    /// `node 'Conv_12' (Conv)`, or `node #12 (Conv)` for an unnamed node.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name.is_empty() {
            write!(f, "node #{} ({})", self.index, self.op_type)
        } else {
            write!(f, "node '{}' ({})", self.name, self.op_type)
        }
    }
}

/// An import failure. [`OnnxError::is_unsupported`] separates models tessera cannot import yet
/// (an op, data type or attribute value it lacks) from models that are malformed.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("{path}: cannot read: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The bytes are not a protobuf `ModelProto` (truncated file, random bytes, wrong format).
    #[error("not an ONNX model: {0}")]
    Decode(#[from] prost::DecodeError),
    /// A required part of the model is absent (no graph, no opset import, ...).
    #[error("invalid model: {0}")]
    Model(String),
    /// The default-domain opset is outside the range tessera implements.
    #[error("model uses ONNX opset {version}; tessera imports opsets {min} to {max}")]
    UnsupportedOpset { version: i64, min: i64, max: i64 },
    /// No importer for this op type (this is also how subgraph ops such as If/Loop/Scan end).
    #[error("{node}: unsupported op")]
    UnsupportedOp { node: NodeRef },
    /// The op is known but this use of it is not supported (an attribute value, a data type,
    /// an input that must be constant, ...).
    #[error("{node}: unsupported: {message}")]
    UnsupportedNode { node: NodeRef, message: String },
    /// An input the importer needs as a constant (a Reshape's shape, a Reduce's axes, ...) is
    /// computed at run time or fed as a graph input. Binding it with
    /// [`crate::onnx::ImportOptions::constants`] specializes the model.
    #[error("{node}: unsupported: input '{role}' ('{value}') must be a constant (known at import time)")]
    NotConstant { node: NodeRef, role: String, value: String },
    /// The node is malformed or inconsistent with its inputs.
    #[error("{node}: {message}")]
    Node { node: NodeRef, message: String },
    /// An initializer, a `Constant` attribute or a test-data tensor cannot be decoded.
    #[error("tensor '{name}': {message}")]
    Tensor { name: String, message: String, unsupported: bool },
    /// A graph input or output cannot be typed or bound.
    #[error("graph {kind} '{name}': {message}")]
    GraphValue { kind: &'static str, name: String, message: String, unsupported: bool },
    /// The imported graph fails tessera's verifier: an importer bug, reported instead of panicking.
    #[error("imported graph does not verify: {0}")]
    Verify(#[from] tessera_ir::verify::VerifyError),
}

impl OnnxError {
    /// True when the model may be valid ONNX but uses something tessera does not implement.
    pub fn is_unsupported(&self) -> bool {
        match self {
            OnnxError::UnsupportedOpset { .. }
            | OnnxError::UnsupportedOp { .. }
            | OnnxError::UnsupportedNode { .. }
            | OnnxError::NotConstant { .. } => true,
            OnnxError::Tensor { unsupported, .. } | OnnxError::GraphValue { unsupported, .. } => *unsupported,
            OnnxError::Io { .. }
            | OnnxError::Decode(_)
            | OnnxError::Model(_)
            | OnnxError::Node { .. }
            | OnnxError::Verify(_) => false,
        }
    }

    /// The ONNX value that would have to be a constant for the import to go on, if that is
    /// why it failed.
    pub fn needed_constant(&self) -> Option<&str> {
        match self {
            OnnxError::NotConstant { value, .. } => Some(value),
            _ => None,
        }
    }
}
