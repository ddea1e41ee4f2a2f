//! The ONNX protobuf types (`onnx.ModelProto`, `onnx.TensorProto`, ...), generated at build time
//! by prost from the vendored `frontend/proto/onnx.proto` (see `frontend/build.rs`).

// Generated code: its doc comments are the schema's, and it derives what prost derives.
#![allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]

include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
