//! Kernel templates for fusion groups.
//!
//! What it is for: deciding, for one kernel graph (a fusion group extracted into its own graph),
//! which template computes each op and which values live in memory; the code generator
//! (`tessera-codegen`) instantiates the templates as MLIR loop nests.
//!
//! - [`template`]: the template of every op family the code generator supports (pointwise
//!   index maps, reductions, argmax, softmax, layer/RMS norm, matmul), and why the rest are not.
//! - [`schedule`]: the per-kernel materialization plan: which values get a buffer and which are
//!   recomputed inside their consumers' loops (loop fusion by index mapping).
//! - [`attention`]: scaled-dot-product attention sites (`softmax(f(q kᵀ)) v`), which fuse into
//!   one flash-style kernel.
//! - [`builders`]: the kernel graphs of fused transformer layers (bias+gelu, masked softmax,
//!   residual+norm, a whole attention head) at any size and dtype.
//!
//! What it may depend on: `tessera-ir` only.

pub mod attention;
pub mod builders;
pub mod schedule;
pub mod template;
