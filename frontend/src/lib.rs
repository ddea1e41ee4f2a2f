//! Model importers: everything that turns a file a user has into a verified [`tessera_ir`] graph.
//!
//! What it is for: picking the importer by file format (today the tsr MLIR text form and the
//! JSON view of a graph; ONNX, the model zoo and cluster specs arrive here too), and reporting
//! bad input as a located error (`file:line:col: message`), never a panic.
//!
//! What it may depend on: `tessera-ir` and format libraries. Frontends only translate; quirks of
//! a format stay in its importer.

pub mod cluster;
pub mod hf;
pub mod load;
pub mod onnx;
pub mod stablehlo;
pub mod zoo;
