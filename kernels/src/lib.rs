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
//!
//! # Templates and schedule
//!
//! **`kernels`**: what a *kernel graph* (one fusion group extracted into its own graph with static
//! shapes; inputs then outputs are the kernel's arguments) is computed with. `template` gives each
//! op its loop template: *pointwise* (elementwise math, casts, `where`, and the index maps
//! `broadcast`/`reshape`/`transpose`/`slice`/`concat`/`split`/`gather`/`rope`), or a reduction
//! template (`reduce_*`, `argmax`, softmax, layer/RMS norm, matmul, conv2d, pooling); `scatter`
//! has none. `schedule` decides storage: arguments for graph inputs/outputs, a temporary for
//! non-pointwise results, shared arithmetic values and values a matmul/conv re-reads, and *inline*
//! (recomputed inside the consumer's loops at the index it asks for) for everything else. That
//! inlining is the loop/input fusion: `softmax(mask + scale * scores)` reads `mask + scale * scores`
//! inside the softmax loops and never writes it.

pub mod attention;
pub mod builders;
pub mod schedule;
pub mod template;
