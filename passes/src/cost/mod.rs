//! The cost model: how long a step of a parallel configuration takes on a cluster, how much
//! memory each device needs and how many bytes cross each link class.
//!
//! Map:
//! - [`hardware`]: link classes; devices, links and clusters are [`tessera_ir::hardware`]'s.
//! - [`profile`]: one block's graph as kernels priced by the roofline, its stored activations,
//!   parameters and collectives, per micro-batch on one device.
//! - [`collective`]: all-reduce, all-gather, reduce-scatter, all-to-all and send/recv by the
//!   alpha-beta model over the link hierarchy (ring, tree, hierarchical).
//! - [`workload`]: models as runs of repeated blocks, built and profiled once per shape.
//! - [`step`]: pipeline schedules (GPipe, 1F1B, interleaved 1F1B) with bubbles, overlap of
//!   data-parallel traffic with backward, memory per device by ZeRO stage and recomputation,
//!   KV cache for serving, FLOPs and energy.
//!
//! Calibration: `tests/e2e/calibration.rs` predicts the eight Megatron iteration times of
//! Korthikanti et al. 2022 with one device description and one set of link numbers, and the
//! held-out runs of `calibration/heldout_training.json` (which set no number here) with the
//! same description: in-sample and held-out errors are in `BENCHMARKS.md`.

pub mod collective;
pub mod hardware;
pub mod profile;
pub mod step;
pub mod workload;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CostError {
    #[error("value '{value}' has a symbolic dimension; bind it before costing")]
    Symbolic { value: String },
    #[error("cannot build block {block}: {message}")]
    Build { block: String, message: String },
    #[error("malformed block: {0}")]
    Malformed(String),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}
