//! tessera's graph IR, the `tsr` dialect.
//!
//! What it is for: the typed SSA graph every other crate reads and rewrites: element types,
//! tensor types with symbolic dimensions, the closed op set with one module per op family
//! (shape rule and reference semantics side by side), the verifier, and the MLIR text form
//! (printer, parser, and the check that MLIR itself accepts the text through an IRDL dialect).
//!
//! What it may depend on: serde and thiserror, `half` (16-bit floats) and `libm` (erf) for the
//! reference semantics, proptest for the shared graph generator in [`testing`], and
//! melior/mlir-sys only for the MLIR acceptance check. Never on another tessera crate.
//!
//! Map: [`dtype`], [`types`], [`tensor`] (values), [`graph`] (the arena, with the [`fusion`]
//! tags of the `fuse` pass), [`ops`] (one module per op family), [`verify`], [`mlir`] (text form
//! and MLIR check), [`json`], [`random`] (seeded tensors), [`sharding`] (device meshes, per-value
//! shardings, op sharding rules), [`testing`] (random well-typed graphs for property tests),
//! [`artifact`] (the ahead-of-time artifact format, shared by the writer in `codegen` and the
//! executors in `runtime`), [`files`] (the one crash-safe, confined writer of output files and
//! directories, used by every crate that writes), [`budget`] (the `--max-memory` limit that
//! input-driven allocations are checked against), [`quote`] (input quoted in messages, clipped).

pub mod artifact;
pub mod budget;
pub mod dtype;
pub mod files;
pub mod fusion;
pub mod graph;
pub mod json;
pub mod mlir;
pub mod ops;
pub mod quote;
pub mod random;
pub mod sharding;
pub mod tensor;
pub mod testing;
pub mod types;
pub mod verify;
