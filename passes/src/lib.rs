//! tessera's graph passes and the machinery that runs them.
//!
//! What it is for: the pass manager (textual pipelines like `canonicalize,cse{...},dce`, the
//! verifier after every pass, per-pass timing and print-IR-after hooks), the graph passes
//! themselves, and graph statistics (FLOPs, bytes, memory) for `tessera info`. Later the cost
//! model, the parallelization planner and the e-graph optimizer live here too.
//!
//! What it may depend on: `tessera-ir` (and `thiserror`), and `tessera-kernels` for the attention
//! site matcher the fusion pass shares with the code generator. Never on
//! `runtime`, `codegen` or MLIR; the reference interpreter (`tessera-runtime`) is only a
//! dev-dependency, for the numeric checks in tests.
//!
//! Map:
//! - [`pass`]: the interface every pass implements (`PassFn`, options, stats, errors).
//! - [`registry`]: the one table of passes, by kebab-case name.
//! - [`pipeline`]: pipeline text, `run_pipeline`, and the timing report.
//! - [`rewrite`]: value replacement that keeps graph-output names.
//! - passes: [`verify`], [`dce`], [`cse`], [`canonicalize`], [`fold_if`] (an `if` whose condition
//!   is constant becomes the region it takes), [`egraph`] (equality saturation),
//!   [`fuse`] (fusion groups for the code generator, and their extraction as kernel graphs).
//! - [`shard`]: partitioning over a device mesh (sharding propagation, collective insertion,
//!   pipeline stages) into per-rank programs.
//! - [`stats`]: per-op FLOPs and bytes, and the graph summary.
//! - [`autodiff`]: reverse-mode differentiation (gradient rules live beside each op's shape
//!   rule in `tessera_ir::ops`); [`train_step`]: forward, loss, backward and optimizer update
//!   as one graph, with micro-batch accumulation and mixed precision.
//! - [`cost`]: the cost model (roofline kernels, alpha-beta collectives, pipeline schedules,
//!   memory per device); [`planner`]: the auto-parallel search behind `tessera plan`.

pub mod autodiff;
pub mod canonicalize;
pub mod cost;
pub mod cse;
pub mod dce;
pub mod egraph;
pub mod fold_if;
pub mod fuse;
pub mod pass;
pub mod pipeline;
pub mod planner;
pub mod registry;
pub mod rewrite;
pub mod shard;
pub mod stats;
pub mod train_step;
pub mod verify;
