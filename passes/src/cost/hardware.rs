//! The hardware the cost model prices against, in SI units (FLOP/s, bytes/s, seconds, bytes):
//! a device with its roofline and achievable fractions, links with alpha-beta numbers, and a
//! cluster of identical nodes.
//!
//! These are the cost model's own types so that `passes` depends on nothing but `ir`; the CLI
//! converts a `tessera_frontend::cluster::ClusterSpec` (datasheet units) into them.

use serde::Serialize;
use tessera_ir::dtype::DType;

/// One accelerator.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Device {
    pub name: String,
    /// Dense peak per element type, FLOP/s; [`Device::peak`] falls back sensibly.
    pub peak_flops: Vec<(DType, f64)>,
    /// Peak of non-tensor-core f32 arithmetic, FLOP/s (normalizations, softmax).
    pub vector_flops: f64,
    pub memory_bytes: f64,
    /// HBM bandwidth, bytes/s.
    pub hbm_bandwidth: f64,
    pub tdp_w: f64,
    pub idle_w: f64,
    /// Fraction of peak large matmuls reach.
    pub gemm_efficiency: f64,
    /// The matmul dimension at which efficiency halves (see [`crate::cost::profile::gemm_efficiency`]).
    pub gemm_half_dim: f64,
    /// Fraction of HBM bandwidth streaming kernels reach.
    pub memory_efficiency: f64,
    /// Launch and tail time of every kernel, seconds.
    pub kernel_overhead_s: f64,
    /// Memory not available to tensors (context, workspaces, fragmentation), bytes.
    pub reserved_bytes: f64,
}

impl Device {
    /// Matmul peak for `dtype`: its own entry, else bf16/f16 for 16-bit and 8-bit floats and
    /// the vector peak for anything else.
    pub fn peak(&self, dtype: DType) -> f64 {
        let find = |d: DType| self.peak_flops.iter().find(|(k, _)| *k == d).map(|(_, v)| *v).filter(|&v| v > 0.0);
        let half = || find(DType::BF16).or_else(|| find(DType::F16));
        let found = match dtype {
            DType::BF16 | DType::F16 => find(dtype).or_else(half),
            DType::F8E4M3 | DType::F8E5M2 => find(dtype).or_else(half),
            _ => find(dtype),
        };
        found.unwrap_or(self.vector_flops)
    }

    /// Bytes/s streaming kernels reach.
    pub fn stream_bandwidth(&self) -> f64 {
        self.hbm_bandwidth * self.memory_efficiency
    }
}

/// A link class: per device and direction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Link {
    pub name: String,
    /// Bytes/s per device per direction (datasheet).
    pub bandwidth: f64,
    /// Seconds per message.
    pub latency_s: f64,
    /// Fraction of `bandwidth` collectives reach.
    pub efficiency: f64,
}

impl Link {
    /// Bytes/s a transfer reaches.
    pub fn effective_bandwidth(&self) -> f64 {
        self.bandwidth * self.efficiency
    }
}

/// Identical nodes of `gpus_per_node` devices; ranks are numbered node by node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cluster {
    pub name: String,
    pub device: Device,
    pub gpus: u64,
    pub gpus_per_node: u64,
    /// Inside a node (NVLink/NVSwitch).
    pub intra: Link,
    /// Between nodes (InfiniBand, one NIC per device).
    pub inter: Link,
}

/// Which link class traffic crosses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkClass {
    IntraNode,
    InterNode,
}
