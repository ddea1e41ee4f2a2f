//! tessera's graph IR, the `tsr` dialect.
//!
//! What it is for: the typed SSA graph every other crate reads and rewrites: element types,
//! tensor types with symbolic dimensions, the closed op set with one module per op family
//! (shape rule and reference semantics side by side), the verifier, and the MLIR text form
//! (printer and parser; the check that MLIR itself accepts the text is `tessera-mlir-check`).
//!
//! What it may depend on: serde and thiserror, `half` (16-bit floats) and `libm` (erf) for the
//! reference semantics, proptest for the shared graph generator in [`testing`], sha2 for
//! artifact checksums. No MLIR or LLVM (the runtime depends on this crate), and never on another
//! tessera crate (its tests use `tessera-mlir-check`).
//!
//! Map: [`dtype`], [`types`], [`tensor`] (values), [`graph`] (the arena, with the [`fusion`]
//! tags of the `fuse` pass), [`ops`] (one module per op family), [`verify`], [`mlir`] (text
//! form), [`json`], [`key_value`] (the `key=value` lists of specs), [`random`] (seeded
//! tensors), [`sharding`] (device meshes, per-value
//! shardings, op sharding rules), [`testing`] (random well-typed graphs for property tests),
//! [`artifact`] (the ahead-of-time artifact format, shared by the writer in `codegen` and the
//! executors in `runtime`), [`files`] (the one crash-safe, confined writer of output files and
//! directories, used by every crate that writes), [`budget`] (the `--max-memory` limit that
//! input-driven allocations are checked against), [`quote`] (input quoted in messages,
//! clipped), [`hardware`] (devices, links, clusters and their presets, shared by the cluster
//! specs of `frontend` and the cost model of `passes`), [`workload`] (the shape and sharding a
//! model block's graph is built for, shared by the zoo and the cost model), [`serving`] (the
//! serving programs' manifest and the model facts the serving engine reads).

pub mod artifact;
pub mod budget;
pub mod dtype;
pub mod files;
pub mod fusion;
pub mod graph;
pub mod hardware;
pub mod json;
pub mod key_value;
pub mod mlir;
pub mod ops;
pub mod quote;
pub mod random;
pub mod serving;
pub mod sharding;
pub mod symbolic;
pub mod tensor;
pub mod testing;
pub mod types;
pub mod verify;
pub mod workload;
