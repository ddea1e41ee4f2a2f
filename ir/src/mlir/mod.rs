//! The MLIR text form of the `tsr` dialect: the contract between tessera and the outside world.
//!
//! - [`print`](mod@print): a [`Graph`](crate::graph::Graph) as one `func.func` in MLIR's generic op form
//!   (the only form an IRDL-defined dialect parses).
//! - [`parse`]: a hand-written lexer and recursive-descent parser for exactly that subset, with
//!   located one-line errors and a [`SourceMap`] side table from nodes to source positions.
//! - MLIR's own check of the text (with the `tsr` dialect defined through IRDL) lives in the
//!   `tessera-mlir-check` crate, so that this crate links no MLIR.
//!
//! Invariants, property-tested in `ir/tests/mlir.rs`: `parse_graph(&print_graph(g))` gives back
//! `g` and prints to the same text; MLIR accepts every printed graph; and MLIR's reprinting of
//! it parses back to `g` up to value names. The JSON view of a graph is in [`crate::json`].

pub mod parse;
pub mod print;

pub use parse::{parse_dense_at, parse_graph, parse_verified, Loc, ParseError, SourceMap};
pub use print::print_graph;
