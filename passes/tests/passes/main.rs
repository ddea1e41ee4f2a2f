//! Tests of the passes crate through its public API: pipelines, each pass, and statistics.

mod canonicalize;
mod cse;
mod dce;
mod examples;
mod fold_if;
mod fuse_scaling;
mod pipeline;
mod random_graphs;
mod shard;
mod stats;
mod support;
