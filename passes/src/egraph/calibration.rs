//! Measured kernel times for one machine (issue 20, item 3): a table per op family of measured
//! (work, microseconds) points, written by `tessera bench kernels --target cpu` with the machine
//! it came from, and read by extraction as its cost per e-node in place of the roofline.
//!
//! The work of a kernel is its FLOPs for `matmul` and `conv2d` (whose time follows their
//! multiply-adds) and the bytes it reads and writes for every other family (whose time follows
//! memory traffic). A kernel's time is interpolated linearly in work between the family's two
//! measured points around it; below the smallest point it costs that point's time (what one
//! step costs however little it does), above the largest it scales linearly from it. Views
//! (`reshape`, `slice`, `split`, `constant`) cost nothing, as under the roofline
//! ([`super::cost::is_view`]); ops of a family the table lacks are priced as `elementwise`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tessera_ir::ops::Op;

/// The family every op not listed in [`family`] falls back to, and the one a table must have.
pub const FALLBACK_FAMILY: &str = "elementwise";

/// The op family a kernel of `op` is priced by.
pub fn family(op: &Op) -> &'static str {
    match op {
        Op::MatMul => "matmul",
        Op::Conv2d { .. } => "conv2d",
        Op::Softmax { .. } => "softmax",
        Op::LayerNorm { .. } | Op::RmsNorm { .. } => "norm",
        Op::Reduce { .. } | Op::ArgMax { .. } => "reduce",
        Op::Transpose { .. } => "transpose",
        Op::Concat { .. } => "concat",
        Op::Pool2d { .. } => "pool2d",
        Op::WinogradInput { .. } | Op::WinogradWeight | Op::WinogradOutput { .. } => "winograd",
        _ => FALLBACK_FAMILY,
    }
}

/// Whether `family`'s work is counted in FLOPs (else in bytes moved).
pub fn work_is_flops(family: &str) -> bool {
    matches!(family, "matmul" | "conv2d")
}

/// Where a table was measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// The CPU's model name (`/proc/cpuinfo`).
    pub cpu: String,
    /// Logical CPUs the machine has.
    pub cpus: usize,
    /// Threads the kernels ran on (the measurement runs on one).
    pub threads: usize,
    /// Load average (1 minute) when the measurement started: the table is only as good as the
    /// machine was quiet, though process CPU time (what is measured) excludes waiting.
    pub load_average: f64,
    /// `release` or `debug`: the build of the runtime's library GEMM matters.
    pub build: String,
    /// When, as seconds since the Unix epoch.
    pub measured_at_unix_s: u64,
}

/// One measured kernel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// The shape class, as measured (e.g. `128x768 @ 768x768`), for readers.
    pub shape: String,
    /// FLOPs or bytes ([`work_is_flops`]).
    pub work: f64,
    /// Median time of the kernel's step, microseconds.
    pub us: f64,
    /// Bytes the kernel reads and writes, for `matmul` and `conv2d` points (absent in tables
    /// written before it was recorded): with the FLOPs it places a point by arithmetic
    /// intensity, see [`Table::kernel_us`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<f64>,
}

/// A calibration table: measured points per op family, sorted by work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table {
    pub machine: Machine,
    pub families: BTreeMap<String, Vec<Point>>,
}

/// Why a table cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("cannot read calibration table {path}: {message}")]
    Read { path: String, message: String },
    #[error("calibration table {path}: {message}")]
    Invalid { path: String, message: String },
}

impl Table {
    /// Parses and checks a table: every family's points have finite, positive work and time,
    /// and the fallback family is present.
    pub fn from_json(path: &str, text: &str) -> Result<Table, TableError> {
        let invalid = |message: String| TableError::Invalid { path: path.to_string(), message };
        let mut table: Table = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if !table.families.contains_key(FALLBACK_FAMILY) {
            return Err(invalid(format!("no '{FALLBACK_FAMILY}' family (every unlisted op is priced by it)")));
        }
        for (name, points) in &mut table.families {
            if points.is_empty() {
                return Err(invalid(format!("family '{name}' has no points")));
            }
            if let Some(p) =
                points.iter().find(|p| !(p.work.is_finite() && p.work > 0.0 && p.us.is_finite() && p.us > 0.0))
            {
                return Err(invalid(format!("family '{name}', shape {}: work and time must be positive", p.shape)));
            }
            points.sort_by(|a, b| a.work.total_cmp(&b.work));
        }
        Ok(table)
    }

    /// Reads [`Table::from_json`] from a file.
    pub fn read(path: &str) -> Result<Table, TableError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| TableError::Read { path: path.to_string(), message: e.to_string() })?;
        Table::from_json(path, &text)
    }

    /// Microseconds of `work` in `family`, interpolated (see the module docs); `None` when the
    /// family is absent.
    pub fn family_us(&self, family: &str, work: f64) -> Option<f64> {
        let points = self.families.get(family)?;
        let first = points.first()?;
        let last = points.last()?;
        if work <= first.work {
            return Some(first.us);
        }
        if work >= last.work {
            return Some(last.us * work / last.work);
        }
        let upper = points.iter().position(|p| p.work >= work)?;
        let (a, b) = (&points[upper - 1], &points[upper]);
        let t = (work - a.work) / (b.work - a.work);
        Some(a.us + t * (b.us - a.us))
    }

    /// Microseconds of one kernel of `op` doing `flops` and moving `bytes` (as the roofline
    /// counts them).
    ///
    /// A GEMM's or convolution's rate depends on its shape as much as on its FLOPs: the 16
    /// batched GEMMs of a Winograd convolution over a 7x7 image (16 rows each, a 512x512
    /// operand each) run at a fifth of the rate of one GEMM of the same FLOPs with hundreds of
    /// rows. So where the family's points record their bytes, the kernel is priced from the
    /// measured point nearest to it in log FLOPs and log arithmetic intensity (FLOPs per byte,
    /// intensity counting double), at that point's rate; else by FLOPs alone.
    pub fn kernel_us(&self, op: &Op, flops: f64, bytes: f64) -> f64 {
        let own = family(op);
        let name = if self.families.contains_key(own) { own } else { FALLBACK_FAMILY };
        if work_is_flops(name) && flops > 0.0 && bytes > 0.0 {
            if let Some(us) = self.nearest_rate_us(name, flops, bytes) {
                return us;
            }
        }
        let work = if work_is_flops(name) { flops } else { bytes };
        self.family_us(name, work.max(0.0)).unwrap_or(f64::INFINITY)
    }

    /// `flops` at the rate of the point of `family` nearest in log FLOPs and log intensity
    /// (see [`Table::kernel_us`]); `None` when no point of the family records its bytes.
    fn nearest_rate_us(&self, family: &str, flops: f64, bytes: f64) -> Option<f64> {
        let intensity = (flops / bytes).ln();
        let distance = |p: &Point| -> Option<f64> {
            let b = p.bytes.filter(|&b| b > 0.0)?;
            let di = (p.work / b).ln() - intensity;
            let df = p.work.ln() - flops.ln();
            Some(4.0 * di * di + df * df)
        };
        let points = self.families.get(family)?;
        let nearest = points
            .iter()
            .filter_map(|p| distance(p).map(|d| (d, p)))
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, p)| p)?;
        Some(nearest.us * flops / nearest.work)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A calibration table in the file format, as in passes/tests/egraph.rs: each test states its
    // own rows, since the numbers are what it checks.
    fn table() -> Table {
        let text = r#"{
            "machine": {"cpu": "test", "cpus": 2, "threads": 1, "load_average": 0.0, "build": "debug", "measured_at_unix_s": 0},
            "families": {
                "elementwise": [{"shape": "1M", "work": 8000000, "us": 1000}, {"shape": "1K", "work": 8000, "us": 5}],
                "matmul": [{"shape": "a", "work": 1000, "us": 2}, {"shape": "b", "work": 3000, "us": 6}]
            }
        }"#;
        Table::from_json("t.json", text).expect("valid table")
    }

    #[test]
    fn interpolates_between_points_and_scales_past_the_last() {
        let t = table();
        assert_eq!(t.family_us("matmul", 500.0), Some(2.0));
        assert_eq!(t.family_us("matmul", 2000.0), Some(4.0));
        assert_eq!(t.family_us("matmul", 6000.0), Some(12.0));
        // Points are sorted on reading, whatever order the file has.
        assert_eq!(t.family_us("elementwise", 8000.0), Some(5.0));
        assert_eq!(t.family_us("softmax", 1.0), None);
    }

    #[test]
    fn unlisted_families_are_priced_as_elementwise_by_bytes() {
        let t = table();
        let softmax = Op::Softmax { axis: -1 };
        assert_eq!(t.kernel_us(&softmax, 1e12, 8000.0), 5.0);
        assert_eq!(t.kernel_us(&Op::MatMul, 3000.0, 1e12), 6.0);
    }

    /// Two GEMMs of the same FLOPs, one thin (few rows per GEMM: few FLOPs per byte) and slow,
    /// one square and fast: a kernel is priced at the rate of the one whose intensity it
    /// shares, and by FLOPs alone where the points record no bytes.
    #[test]
    fn gemms_are_priced_at_the_rate_of_the_nearest_intensity() {
        let text = r#"{
            "machine": {"cpu": "test", "cpus": 2, "threads": 1, "load_average": 0.0, "build": "release", "measured_at_unix_s": 0},
            "families": {
                "elementwise": [{"shape": "1K", "work": 8000, "us": 5}],
                "matmul": [{"shape": "thin", "work": 1e8, "us": 5000, "bytes": 1.6e7},
                           {"shape": "square", "work": 1e8, "us": 1000, "bytes": 1e6}]
            }
        }"#;
        let t = Table::from_json("t.json", text).expect("valid table");
        assert_eq!(t.kernel_us(&Op::MatMul, 2e8, 3e7), 10_000.0);
        assert_eq!(t.kernel_us(&Op::MatMul, 2e8, 2e6), 2_000.0);
        assert_eq!(table().kernel_us(&Op::MatMul, 2000.0, 10.0), 4.0);
    }

    #[test]
    fn rejects_tables_without_the_fallback_or_with_bad_points() {
        let no_fallback = r#"{"machine": {"cpu": "x", "cpus": 1, "threads": 1, "load_average": 0, "build": "debug", "measured_at_unix_s": 0}, "families": {"matmul": [{"shape": "a", "work": 1, "us": 1}]}}"#;
        assert!(matches!(Table::from_json("t", no_fallback), Err(TableError::Invalid { .. })));
        let negative = no_fallback.replace("\"matmul\"", "\"elementwise\"").replace("\"us\": 1", "\"us\": -1");
        assert!(matches!(Table::from_json("t", &negative), Err(TableError::Invalid { .. })));
        assert!(matches!(Table::from_json("t", "{"), Err(TableError::Invalid { .. })));
    }
}
