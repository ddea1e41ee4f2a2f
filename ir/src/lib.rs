//! tessera's graph IR, the `tsr` dialect.
//!
//! What it is for: the typed SSA graph every other crate reads and rewrites: element types,
//! tensor types with symbolic dimensions, the closed op set with one module per op family
//! (shape rule and reference semantics side by side), the verifier, and the MLIR text form
//! (printer, parser, and the check that MLIR itself accepts the text through an IRDL dialect).
//!
//! What it may depend on: serde and thiserror, `half` for 16-bit floats, and melior/mlir-sys
//! only for the MLIR acceptance check. Never on another tessera crate.

pub mod dtype;
pub mod graph;
pub mod ops;
pub mod tensor;
pub mod types;
pub mod verify;
