//! The MLIR text form of the `tsr` dialect: the contract between tessera and the outside world.
//!
//! - [`print`](mod@print): a [`Graph`](crate::graph::Graph) as one `func.func` in MLIR's generic op form
//!   (the only form an IRDL-defined dialect parses).
//! - [`parse`]: a hand-written lexer and recursive-descent parser for exactly that subset, with
//!   located one-line errors and a [`SourceMap`] side table from nodes to source positions.
//! - [`check`]: asks MLIR itself (through melior) whether the text parses and verifies, with the
//!   `tsr` dialect defined through IRDL, and can return MLIR's own printing of it.
//!
//! Invariants, property-tested in `ir/tests/mlir.rs`: `parse_graph(&print_graph(g))` gives back
//! `g` and prints to the same text; MLIR accepts every printed graph; and MLIR's reprinting of
//! it parses back to `g` up to value names. The JSON view of a graph is in [`crate::json`].

pub mod check;
pub mod parse;
pub mod print;

pub use check::{check_with_mlir, irdl_dialect_text, print_with_mlir, MlirCheckError};
pub use parse::{parse_graph, parse_verified, Loc, ParseError, SourceMap};
pub use print::print_graph;
