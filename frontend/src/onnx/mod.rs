//! The ONNX importer: `.onnx` files (protobuf `ModelProto`, opsets 7 to 28, a few ops from 1) to verified tsr
//! graphs, and the runner for ONNX's backend node conformance tests.
//!
//! How a model maps onto the IR:
//! - graph inputs that have no initializer become activation inputs, with `dim_param`
//!   dimensions as symbolic dimensions (unnamed dynamic ones get a name of their own);
//! - initializers become `tsr.constant` nodes, so an imported model is self-contained (an input
//!   that also has an initializer keeps the initializer's value); for planning
//!   ([`Initializers::Parameters`]) the floating-point ones are the model's parameters instead:
//!   graph inputs of their declared type whose payload is never read;
//! - each node goes through the builder registered for its op type (`ops/`); ONNX's implicit
//!   broadcasting becomes explicit `tsr.broadcast` nodes, composite ops are decomposed, and ops
//!   whose operands are all small constants are folded at import time (shape arithmetic);
//! - unused nodes are dropped and the result is verified.
//!
//! Errors ([`OnnxError`]) name the node (`node 'Conv_12' (If): unsupported op`), the tensor or
//! the graph input at fault; no input makes the importer panic.

mod attrs;
pub mod conformance;
mod error;
mod import;
mod legacy;
mod ops;
pub mod proto;
mod size_values;
pub mod tensor;

pub use error::{NodeRef, OnnxError};
pub use import::{ImportOptions, Initializers, MAX_OPSET, MIN_OPSET};

use bytes::Bytes;
use prost::Message;
use std::path::Path;
use tessera_ir::graph::Graph;

/// Imports an `.onnx` file; external data is resolved relative to the file's directory.
///
/// The file is memory-mapped for the protobuf structure, but tensor payloads are not read
/// through the map: each initializer's bytes are read from the file (`pread`) straight into the
/// constant's storage, so a model's weights are in memory once, not once as mapped pages and
/// again as constants (BENCHMARKS.md, "GPT-2 small: import and compile").
pub fn import_model(path: &Path) -> Result<Graph, OnnxError> {
    import_model_with(path, &ImportOptions::default())
}

/// [`import_model`] with [`ImportOptions`].
pub fn import_model_with(path: &Path, options: &ImportOptions) -> Result<Graph, OnnxError> {
    let (model, model_file) = read_model(path)?;
    let external = tensor::ExternalData::new(path.parent()).with_model_file(model_file);
    import::import_with_payloads(&model, external, options)
}

/// Decodes an `.onnx` file; also returns the open file and its map, from which `raw_data`
/// payloads are read ([`tensor::ModelFile`]).
fn read_model(path: &Path) -> Result<(proto::ModelProto, Option<tensor::ModelFile>), OnnxError> {
    let io = |source| OnnxError::Io { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len == 0 {
        return Ok((proto::ModelProto::decode(Bytes::new())?, None));
    }
    // SAFETY: the map is read-only and lives as long as the decoded model. Another process
    // truncating the file meanwhile could fault a read of it; that is the usual caveat of
    // memory-mapped model loading (onnxruntime and tract map weights the same way).
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    let bytes = Bytes::from_owner(map);
    let model = proto::ModelProto::decode(bytes.clone())?;
    Ok((model, Some(tensor::ModelFile::new(path, file, bytes))))
}

/// The activation inputs of an `.onnx` file as a graph with no nodes: their names and declared
/// types as [`import_model`] gives them, for reading input files before importing.
pub fn declared_inputs(path: &Path) -> Result<Graph, OnnxError> {
    import::declared_inputs(&read_model(path)?.0)
}

/// Imports a model from its serialized bytes; `base_dir` is where external data files live
/// (`None`: a model with external data is an error).
pub fn import_bytes(bytes: &[u8], base_dir: Option<&Path>) -> Result<Graph, OnnxError> {
    let model = proto::ModelProto::decode(bytes)?;
    import::import(&model, base_dir, &ImportOptions::default())
}

/// Imports an already decoded model (tests and tools that build models with [`proto`] types).
pub fn import_proto(
    model: &proto::ModelProto,
    base_dir: Option<&Path>,
    options: &ImportOptions,
) -> Result<Graph, OnnxError> {
    import::import(model, base_dir, options)
}

/// The ONNX op types the importer has a builder for, sorted.
pub fn supported_ops() -> Vec<&'static str> {
    ops::registry().op_types()
}
