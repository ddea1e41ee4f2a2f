//! The StableHLO importer: MLIR text as JAX writes it (`jax.jit(f).lower(...).as_text()`,
//! `jax.export`), in the custom assembly of the ops JAX emits or MLIR's generic op form, into a
//! verified tsr graph.
//!
//! [`syntax`] reads the text into a small tree with byte offsets; [`translate`] maps `@main`
//! onto tsr ops (inlining private functions, unrolling `while` loops whose trip count folds and
//! making the others `tsr.loop`, a `case` on a run-time index nested `tsr.if`s, `scatter` of
//! whole slices along one dimension `tsr.scatter`, other gathers and scatters index arithmetic
//! around a one-axis `tsr.gather`/`tsr.scatter` of the flattened operand, folding constants);
//! the verifier runs last.
//! Sharding annotations on `@main`'s arguments and results (`sdy.sharding` over an `sdy.mesh`,
//! `mhlo.sharding`) become the graph's boundary shardings ([`sharding`], `Graph::io_shardings`),
//! which the `shard` pass seeds its inputs from; shardings between ops (`sdy.sharding_constraint`,
//! `custom_call @Sharding`, an op's own one-result sharding) become `tsr.sharding_constraint`s
//! (`translate::constraint`), which `shard` reshards at. `@main`'s arguments keep their names
//! (`%arg0` becomes input `arg0`, a `?` dimension the symbol `arg0_dim0`), results are `out0`,
//! `out1`.
//! StableHLO collectives (`all_reduce`, `all_gather`, `reduce_scatter`, `all_to_all`,
//! `collective_permute`) of a replicated per-rank module become tsr collectives, their
//! `replica_groups` (or `source_target_pairs`) read as mesh axes ([`collective`]); `replica_id`
//! is known per replica at import, and the `dynamic_slice` at a `replica_id`-indexed offset
//! that tessera exports `all_slice` as reads back as `all_slice` (`translate::replica`). A
//! `jax.shard_map` body (Shardy's `sdy.manual_computation`, GSPMD's `@SPMDFullToShardShape` /
//! `@SPMDShardToFullShape`) makes the module a per-rank program over its mesh: every rank cuts
//! its blocks with `all_slice`, runs the body and joins the results with `all_gather`
//! (`translate::manual`). `send`/`recv` are refused: in a module every replica runs, they have no
//! partner program (tsr's join pipeline stages that run different programs). The reader stops
//! at the first op holding the `!stablehlo.token` that orders them, naming that op. Every
//! failure is a [`StablehloError`] at a line and column. [`export`] writes the other way,
//! per-rank programs with their collectives included, and pipeline stages as one module that
//! runs each replica's stage ([`export::pipeline`]).

pub mod collective;
pub mod export;
pub mod sharding;
pub mod syntax;
pub mod translate;

use tessera_ir::graph::Graph;

/// A located import error: `line:col: message` (1-based; columns count characters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{col}: {message}")]
pub struct StablehloError {
    pub line: u32,
    pub col: u32,
    pub message: String,
}

impl StablehloError {
    fn at(text: &str, offset: usize, message: String) -> StablehloError {
        let offset = offset.min(text.len());
        let before = text.get(..offset).unwrap_or(text);
        let line = before.matches('\n').count() as u32 + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before.get(line_start..).map_or(0, |s| s.chars().count()) as u32 + 1;
        StablehloError { line, col, message }
    }
}

/// True when `text` looks like StableHLO rather than the tsr dialect: a module whose ops come
/// from the `stablehlo` or `chlo` dialects.
pub fn looks_like_stablehlo(text: &str) -> bool {
    text.contains("stablehlo.") || text.contains("chlo.")
}

/// Imports StableHLO text into a verified graph.
pub fn import_text(text: &str) -> Result<Graph, StablehloError> {
    let located = |e: syntax::SyntaxError| StablehloError::at(text, e.offset, e.message);
    let top = syntax::parse_module(text).map_err(located)?;
    let graph = translate::translate(&top).map_err(located)?;
    tessera_ir::verify::verify(&graph)
        .map_err(|e| StablehloError::at(text, 0, format!("the imported graph does not verify: {e}")))?;
    Ok(graph)
}
