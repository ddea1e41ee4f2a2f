//! What one rank's graph of a model block is built for: the shape of its batch and the
//! sharding it is one part of. The zoo's graph builders (`frontend`) take it, and the cost
//! model (`passes`) keys its profiles by it; it lives here so that both use the one type
//! without depending on each other.

/// The shapes and sharding one rank's graph of a block is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockShape {
    /// Sequences per micro-batch.
    pub batch: u64,
    /// New tokens per sequence (the whole sequence in training, 1 when decoding).
    pub seq: u64,
    /// Tensor-parallel ranks the graph is one of.
    pub tp: u64,
    /// Expert-parallel ranks the graph is one of (MoE layers only).
    pub ep: u64,
    /// Training graphs carry dropout (when the model has any); serving graphs do not.
    pub training: bool,
    /// Tokens already in the KV cache before these (serving); 0 builds no cache inputs.
    pub kv_cache: u64,
}
