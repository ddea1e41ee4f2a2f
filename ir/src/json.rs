//! The JSON view of a graph (serde), for tools and debugging; the MLIR text is the contract.
//!
//! Caveat: JSON has no NaN or infinity, so serde_json writes non-finite constant elements as
//! `null` and they do not load back; use the MLIR text form for such graphs.

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
