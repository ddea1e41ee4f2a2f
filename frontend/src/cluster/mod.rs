//! Cluster specs: the accelerators and links a plan runs on, as JSON files or named presets.
//!
//! A spec is `PRESET[:key=value,...]` or `FILE.json[:key=value,...]`, with keys `gpus`,
//! `nodes` and `gpus_per_node`: `h100-80g-sxm:gpus=3072` is 384 DGX H100 nodes. The type, its
//! units and the presets are [`tessera_ir::hardware`]'s; this module reads the spec string and
//! JSON files (the serde form of [`ClusterSpec`]) and validates the numbers.
//!
//! ```
//! use tessera_frontend::cluster::parse;
//! let c = parse("h100-80g-sxm:gpus=3072").unwrap();
//! assert_eq!((c.gpus, c.nodes, c.gpus_per_node), (3072, 384, 8));
//! ```

use std::path::{Path, PathBuf};
use tessera_ir::hardware::{preset, ClusterSpec, PRESETS};

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
    /// An [`ClusterError::Invalid`] number read from a JSON file, located by the file.
    #[error("{path}: {source}")]
    InFile { path: PathBuf, source: Box<ClusterError> },
}

/// The largest number a cluster spec may hold in any unit (GB, GB/s, W, µs, TFLOP/s): far
/// above any real device, and small enough that bytes and FLOP/s derived from it stay finite
/// (`memory_gb` 1e300 printed as "inf GB" before this bound).
pub const MAX_NUMBER: f64 = 1e9;

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
    validate(&cluster).map_err(|e| ClusterError::InFile { path: path.to_path_buf(), source: Box::new(e) })?;
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
    let peaks = d.peak_tflops.entries();
    if !peaks.iter().any(|(_, p)| p.is_some_and(|p| p > 0.0)) {
        return invalid("device.peak_tflops", "needs at least one positive peak".into());
    }
    for (key, value) in peaks.iter().filter_map(|&(k, v)| Some((k, v?))) {
        if !(value.is_finite() && value >= 0.0) {
            return invalid(&format!("device.peak_tflops.{key}"), format!("{value} is not a non-negative number"));
        }
        if value > MAX_NUMBER {
            return invalid(&format!("device.peak_tflops.{key}"), out_of_range(value));
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
        if value > MAX_NUMBER {
            return invalid(field, out_of_range(value));
        }
    }
    let fractions = [
        ("device.gemm_efficiency", d.gemm_efficiency),
        ("device.prior_generation_kernel_fraction", d.prior_generation_kernel_fraction),
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
        if value > MAX_NUMBER {
            return invalid(field, out_of_range(value));
        }
    }
    let power = &d.power;
    let clocks = [
        ("device.power.max_sm_clock_mhz", power.max_sm_clock_mhz),
        ("device.power.min_sm_clock_mhz", power.min_sm_clock_mhz),
        ("device.power.clock_step_mhz", power.clock_step_mhz),
    ];
    for (field, value) in clocks {
        if !(value.is_finite() && value > 0.0 && value <= MAX_NUMBER) {
            return invalid(field, format!("{value} must be a positive number"));
        }
    }
    if power.min_sm_clock_mhz > power.max_sm_clock_mhz {
        let message = format!("{} is above max_sm_clock_mhz {}", power.min_sm_clock_mhz, power.max_sm_clock_mhz);
        return invalid("device.power.min_sm_clock_mhz", message);
    }
    if !(1.0..=4.0).contains(&power.dynamic_power_exponent) {
        return invalid(
            "device.power.dynamic_power_exponent",
            format!("{} must be in [1, 4]", power.dynamic_power_exponent),
        );
    }
    if !(power.memory_bound_load > 0.0 && power.memory_bound_load <= 1.0) {
        return invalid("device.power.memory_bound_load", format!("{} must be in (0, 1]", power.memory_bound_load));
    }
    if d.idle_w >= d.tdp_w {
        return invalid("device.idle_w", format!("{} W is not below the {} W TDP", d.idle_w, d.tdp_w));
    }
    if d.reserved_gb >= d.memory_gb {
        return invalid("device.reserved_gb", format!("{} leaves no memory of {} GB", d.reserved_gb, d.memory_gb));
    }
    Ok(())
}

fn out_of_range(value: f64) -> String {
    format!("{value:e} is out of range: a cluster spec's numbers are at most {MAX_NUMBER:e}")
}
