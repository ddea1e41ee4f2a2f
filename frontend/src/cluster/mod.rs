//! Cluster specs: the accelerators and links a plan runs on, as JSON files or named presets.
//!
//! A spec is `PRESET[:key=value,...]` or `FILE.json[:key=value,...]`, with keys `gpus`,
//! `nodes` and `gpus_per_node`: `h100-80g-sxm:gpus=3072` is 384 DGX H100 nodes. Numbers are in
//! the units of datasheets (TFLOP/s, GB/s with GB = 1e9 bytes, microseconds, watts); the cost
//! model converts them. Peaks come from `shared/calibration/devices.json`.
//!
//! Besides datasheet peaks a device carries the fractions of them that real kernels reach
//! (`gemm_efficiency`, `memory_efficiency`, per link `efficiency`) and a per-kernel overhead:
//! one set of these numbers for all models, which `tests/e2e/calibration.rs` checks against
//! published Megatron iteration times. Only the A100 numbers are calibrated; the H100 and H200
//! presets use the same fractions.
//!
//! ```
//! use tessera_frontend::cluster::parse;
//! let c = parse("h100-80g-sxm:gpus=3072").unwrap();
//! assert_eq!((c.gpus, c.nodes, c.gpus_per_node), (3072, 384, 8));
//! ```

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A cluster: identical nodes of identical devices, a fast link inside a node and a network
/// between nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    pub name: String,
    pub device: DeviceSpec,
    pub gpus_per_node: u64,
    pub nodes: u64,
    /// Devices in all; `nodes * gpus_per_node` except for a single partly used node.
    pub gpus: u64,
    /// NVLink/NVSwitch between the devices of a node.
    pub intra_node: LinkSpec,
    /// The network between nodes (InfiniBand), per device: each device has its own NIC.
    pub inter_node: LinkSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSpec {
    pub name: String,
    /// Dense tensor-core peak per element type (`bf16`, `fp16`, `fp32`, `tf32`, `fp8`), TFLOP/s.
    pub peak_tflops: BTreeMap<String, f64>,
    /// Memory, GB (1e9 bytes).
    pub memory_gb: f64,
    /// Memory bandwidth, GB/s.
    pub hbm_gbps: f64,
    /// Board power at full load and idle, W.
    pub tdp_w: f64,
    pub idle_w: f64,
    /// Fraction of peak that large matrix multiplications reach.
    pub gemm_efficiency: f64,
    /// A matmul dimension of this size runs at half the efficiency of a large one (tiles and
    /// waves only partly filled); smaller matmuls are slower per FLOP.
    pub gemm_half_dim: f64,
    /// Fraction of HBM bandwidth that streaming (memory-bound) kernels reach.
    pub memory_efficiency: f64,
    /// Launch and tail time every kernel pays, microseconds.
    pub kernel_overhead_us: f64,
    /// Memory the framework holds besides tensors (CUDA context, library workspaces,
    /// fragmentation), GB.
    pub reserved_gb: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    pub name: String,
    /// Per device and direction, GB/s.
    pub bandwidth_gbps: f64,
    /// Per message (per step of a collective), microseconds.
    pub latency_us: f64,
    /// Fraction of the bandwidth collectives reach.
    pub efficiency: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("unknown cluster '{name}'; presets: {presets}, or a .json file")]
    UnknownPreset { name: String, presets: String },
    #[error("cluster spec '{spec}': {message}")]
    BadOverride { spec: String, message: String },
    #[error("{path}: cannot read: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}:{column}: {message}")]
    Json { path: PathBuf, line: usize, column: usize, message: String },
    #[error("cluster '{name}': {field}: {message}")]
    Invalid { name: String, field: String, message: String },
}

/// The preset names.
pub const PRESETS: [&str; 3] = ["a100-80g-sxm", "h100-80g-sxm", "h200-141g-sxm"];

/// A node of eight devices (DGX/HGX) of the named kind.
pub fn preset(name: &str) -> Option<ClusterSpec> {
    // (bf16 = fp16, fp32, tf32, fp8 TFLOP/s; memory GB; HBM GB/s; NVLink GB/s per direction;
    // InfiniBand GB/s per device; TDP W), from devices.json. NVLink numbers there are both
    // directions together.
    let (dense, fp32, tf32, fp8, memory, hbm, nvlink, ib, ib_name, tdp) = match name {
        "a100-80g-sxm" => (312.0, 19.5, 156.0, None, 80.0, 2039.0, 300.0, 25.0, "infiniband-hdr", 400.0),
        "h100-80g-sxm" => (989.0, 67.0, 494.0, Some(1979.0), 80.0, 3350.0, 450.0, 50.0, "infiniband-ndr", 700.0),
        "h200-141g-sxm" => (989.0, 67.0, 494.0, Some(1979.0), 141.0, 4800.0, 450.0, 50.0, "infiniband-ndr", 700.0),
        _ => return None,
    };
    let mut peak_tflops = BTreeMap::from([
        ("bf16".to_string(), dense),
        ("fp16".to_string(), dense),
        ("fp32".to_string(), fp32),
        ("tf32".to_string(), tf32),
    ]);
    if let Some(fp8) = fp8 {
        peak_tflops.insert("fp8".to_string(), fp8);
    }
    let nvlink_name = if name.starts_with("a100") { "nvlink3-nvswitch" } else { "nvlink4-nvswitch" };
    Some(ClusterSpec {
        name: name.to_string(),
        device: DeviceSpec {
            name: name.to_string(),
            peak_tflops,
            memory_gb: memory,
            hbm_gbps: hbm,
            tdp_w: tdp,
            idle_w: tdp * 0.2,
            gemm_efficiency: 0.8,
            gemm_half_dim: 64.0,
            memory_efficiency: 0.8,
            kernel_overhead_us: 5.0,
            reserved_gb: 2.0,
        },
        gpus_per_node: 8,
        nodes: 1,
        gpus: 8,
        intra_node: LinkSpec {
            name: nvlink_name.to_string(),
            bandwidth_gbps: nvlink,
            latency_us: 5.0,
            efficiency: 0.8,
        },
        inter_node: LinkSpec { name: ib_name.to_string(), bandwidth_gbps: ib, latency_us: 10.0, efficiency: 0.8 },
    })
}

/// Resolves a spec (preset or JSON file, then overrides) to a validated cluster.
pub fn parse(spec: &str) -> Result<ClusterSpec, ClusterError> {
    let spec = spec.trim();
    let (base, overrides) = match spec.split_once(':') {
        Some((b, o)) => (b.trim(), Some(o)),
        None => (spec, None),
    };
    let mut cluster = if base.ends_with(".json") {
        load(Path::new(base))?
    } else {
        preset(base)
            .ok_or_else(|| ClusterError::UnknownPreset { name: base.to_string(), presets: PRESETS.join(", ") })?
    };
    if let Some(overrides) = overrides {
        apply_overrides(&mut cluster, spec, overrides)?;
        cluster.name = spec.to_string();
    }
    validate(&cluster)?;
    Ok(cluster)
}

/// Reads a cluster JSON file (the serde form of [`ClusterSpec`]) and validates it.
pub fn load(path: &Path) -> Result<ClusterSpec, ClusterError> {
    let text = std::fs::read_to_string(path).map_err(|source| ClusterError::Io { path: path.to_path_buf(), source })?;
    let cluster: ClusterSpec = serde_json::from_str(&text).map_err(|e| ClusterError::Json {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    validate(&cluster)?;
    Ok(cluster)
}

fn apply_overrides(c: &mut ClusterSpec, spec: &str, overrides: &str) -> Result<(), ClusterError> {
    let bad = |message: String| ClusterError::BadOverride { spec: spec.to_string(), message };
    let (mut gpus, mut nodes) = (None, None);
    for item in tessera_ir::key_value::non_empty_items(overrides) {
        let (key, value) = item.key_value().ok_or_else(|| bad(format!("expected key=value, found '{}'", item.text)))?;
        let n: u64 = value
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| bad(format!("{key}={value}: expected a positive integer")))?;
        match key {
            "gpus" => gpus = Some(n),
            "nodes" => nodes = Some(n),
            "gpus_per_node" => c.gpus_per_node = n,
            other => return Err(bad(format!("unknown key '{other}'; known keys: gpus, nodes, gpus_per_node"))),
        }
    }
    let per_node = c.gpus_per_node;
    match (gpus, nodes) {
        (Some(g), Some(n)) if g != n * per_node && !(n == 1 && g < per_node) => {
            return Err(bad(format!("gpus={g} does not fill nodes={n} of {per_node} devices")));
        }
        (Some(g), _) if g > per_node && g % per_node != 0 => {
            return Err(bad(format!("gpus={g} is not a whole number of {per_node}-device nodes")));
        }
        (Some(g), _) => {
            c.gpus = g;
            c.nodes = g.div_ceil(per_node);
        }
        (None, Some(n)) => {
            c.nodes = n;
            c.gpus = n * per_node;
        }
        (None, None) => c.gpus = c.nodes * per_node,
    }
    Ok(())
}

/// Checks that every number is usable; the error names the field.
pub fn validate(c: &ClusterSpec) -> Result<(), ClusterError> {
    let invalid = |field: &str, message: String| {
        Err(ClusterError::Invalid { name: c.name.clone(), field: field.to_string(), message })
    };
    if c.gpus_per_node == 0 || c.nodes == 0 || c.gpus == 0 {
        return invalid("gpus", "gpus, nodes and gpus_per_node must be positive".into());
    }
    let whole = c.gpus == c.nodes * c.gpus_per_node;
    let partial = c.nodes == 1 && c.gpus < c.gpus_per_node;
    if !whole && !partial {
        let message = format!("{} devices do not fill {} nodes of {}", c.gpus, c.nodes, c.gpus_per_node);
        return invalid("gpus", message);
    }
    let d = &c.device;
    if !d.peak_tflops.values().any(|&p| p > 0.0) {
        return invalid("device.peak_tflops", "needs at least one positive peak".into());
    }
    for (key, value) in &d.peak_tflops {
        if !["bf16", "fp16", "fp32", "tf32", "fp8"].contains(&key.as_str()) {
            return invalid(
                "device.peak_tflops",
                format!("unknown element type '{key}' (bf16, fp16, fp32, tf32, fp8)"),
            );
        }
        if !(value.is_finite() && *value >= 0.0) {
            return invalid(&format!("device.peak_tflops.{key}"), format!("{value} is not a non-negative number"));
        }
    }
    let positive = [
        ("device.memory_gb", d.memory_gb),
        ("device.hbm_gbps", d.hbm_gbps),
        ("device.tdp_w", d.tdp_w),
        ("intra_node.bandwidth_gbps", c.intra_node.bandwidth_gbps),
        ("inter_node.bandwidth_gbps", c.inter_node.bandwidth_gbps),
    ];
    for (field, value) in positive {
        if !(value.is_finite() && value > 0.0) {
            return invalid(field, format!("{value} must be a positive number"));
        }
    }
    let fractions = [
        ("device.gemm_efficiency", d.gemm_efficiency),
        ("device.memory_efficiency", d.memory_efficiency),
        ("intra_node.efficiency", c.intra_node.efficiency),
        ("inter_node.efficiency", c.inter_node.efficiency),
    ];
    for (field, value) in fractions {
        if !(value > 0.0 && value <= 1.0) {
            return invalid(field, format!("{value} must be in (0, 1]"));
        }
    }
    let non_negative = [
        ("device.idle_w", d.idle_w),
        ("device.gemm_half_dim", d.gemm_half_dim),
        ("device.kernel_overhead_us", d.kernel_overhead_us),
        ("device.reserved_gb", d.reserved_gb),
        ("intra_node.latency_us", c.intra_node.latency_us),
        ("inter_node.latency_us", c.inter_node.latency_us),
    ];
    for (field, value) in non_negative {
        if !(value.is_finite() && value >= 0.0) {
            return invalid(field, format!("{value} must be a non-negative number"));
        }
    }
    if d.reserved_gb >= d.memory_gb {
        return invalid("device.reserved_gb", format!("{} leaves no memory of {} GB", d.reserved_gb, d.memory_gb));
    }
    Ok(())
}
