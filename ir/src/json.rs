//! The JSON view of a graph (serde), for tools and debugging; the MLIR text is the contract.
//!
//! Caveat: JSON has no NaN or infinity, so serde_json writes non-finite constant elements as
//! `null` and they do not load back; use the MLIR text form for such graphs.
//!
//! # Invariant
//!
//! - **Bad input is an error, not a panic.** The parser and JSON loader check structure before
//!   anything indexes the arena (`Graph`'s `Deserialize` goes through a checked representation);
//!   the verifier checks types; the interpreter checks input names, dtypes and shapes. Library
//!   errors are `thiserror` types; the CLI prints one line and exits 1.

use crate::graph::Graph;

/// The graph as pretty-printed JSON.
pub fn to_json(g: &Graph) -> String {
    // Serializing a graph cannot fail: it has no maps with non-string keys and no custom
    // serializers that error, so this is an internal invariant, not a user-data check.
    serde_json::to_string_pretty(g).expect("a graph always serializes to JSON")
}

/// Loads a graph from JSON; ids are checked to be in range (types are the verifier's job).
pub fn from_json(text: &str) -> Result<Graph, serde_json::Error> {
    serde_json::from_str(text)
}
