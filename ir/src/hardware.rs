//! The one hardware description: accelerators, links and clusters, and the named presets.
//!
//! Fields are in the units of datasheets (TFLOP/s, GB/s with GB = 1e9 bytes, microseconds,
//! watts), which is also the JSON form of a cluster file; the methods give the SI values
//! (FLOP/s, bytes/s, seconds, bytes) the cost model, the planner and the e-graph's extraction
//! cost compute with. It lives here, below `frontend` (which reads cluster specs and files) and
//! `passes` (which prices against them), so that neither depends on the other.
//!
//! Besides datasheet peaks a device carries the fractions of them real kernels reach
//! (`gemm_efficiency`, `memory_efficiency`, per link `efficiency`) and a per-kernel overhead:
//! one set of these numbers for all models, which `tests/e2e/calibration.rs` checks against
//! published Megatron iteration times. Only the A100 numbers are calibrated; the H100 and H200
//! presets use the same fractions, and carry the share of them that kernels written for the
//! A100 reach (`prior_generation_kernel_fraction`, a published microbenchmark).
//!
//! ```
//! use tessera_ir::hardware::{preset, DeviceSpec};
//! let h100 = DeviceSpec::h100_80g_sxm();
//! assert_eq!(h100.peak_flops(tessera_ir::dtype::DType::BF16), 989e12);
//! assert_eq!(preset("h100-80g-sxm").map(|c| c.gpus), Some(8));
//! ```

use crate::dtype::DType;
use serde::{Deserialize, Serialize};

/// A cluster: identical nodes of identical devices, a fast link inside a node and a network
/// between nodes. Ranks are numbered node by node.
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

/// One accelerator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSpec {
    pub name: String,
    /// Dense (no sparsity) tensor-core peaks, TFLOP/s.
    pub peak_tflops: PeakTflops,
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
    /// The fraction of `gemm_efficiency` that tensor-core kernels written for the previous
    /// GPU generation reach on this device: 1 where that generation's instructions are this
    /// device's own (A100), less where the device's full rate needs instructions the older
    /// kernels do not issue (Hopper's asynchronous `wgmma` and TMA). Planning prices the
    /// device's own kernels; [`DeviceSpec::running_prior_generation_kernels`] prices an engine
    /// built for the previous generation (the SplitwiseSim profiles' engine, `BENCHMARKS.md`).
    #[serde(default = "native_kernel_fraction", skip_serializing_if = "is_native_kernel_fraction")]
    pub prior_generation_kernel_fraction: f64,
    /// Fraction of HBM bandwidth that streaming (memory-bound) kernels reach.
    pub memory_efficiency: f64,
    /// Launch and tail time every kernel pays, microseconds.
    pub kernel_overhead_us: f64,
    /// Memory the framework holds besides tensors (CUDA context, library workspaces,
    /// fragmentation), GB.
    pub reserved_gb: f64,
    /// Board power against SM clock and load, for energy and clock planning. A cluster file
    /// without one gets [`PowerModel::default`] (the A100's clock range and curve).
    #[serde(default)]
    pub power: PowerModel,
}

/// Board power against SM clock and load: `P(f) = idle + (tdp - idle) * load * (f / f_max)^k`.
///
/// `load` is 1 while compute-bound kernels run and [`PowerModel::memory_bound_load`] while
/// memory-bound ones do; between kernels (waiting on a collective, in a pipeline bubble) the
/// board draws `idle_w`. Compute-bound kernels take `f_max / f` times as long at clock `f`;
/// memory-bound kernels and transfers take the same time (HBM and links have their own
/// clocks). Dynamic power is `C V^2 f`: with the voltage proportional to the clock `k` is 3,
/// with the voltage at its floor 1; NVIDIA's DVFS tables keep the voltage flat over the lower
/// part of the range, so the presets use 2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerModel {
    /// Highest SM (graphics) clock the planner sets, MHz: the clock the datasheet's tensor
    /// peak is quoted at, so that compute-bound kernels run at the peak there and `f_max / f`
    /// times as long at `f`.
    pub max_sm_clock_mhz: f64,
    /// The board's boost clock when it is above `max_sm_clock_mhz`, MHz: light, latency-bound
    /// work (the synchronization rounds of a serving step) runs at it because it is far from
    /// the power limit. `None`: the same as `max_sm_clock_mhz`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boost_sm_clock_mhz: Option<f64>,
    /// Lowest clock the planner may pick, MHz.
    pub min_sm_clock_mhz: f64,
    /// Granularity of settable clocks (`nvidia-smi -lgc`), MHz.
    pub clock_step_mhz: f64,
    /// The exponent `k` of dynamic power against clock.
    pub dynamic_power_exponent: f64,
    /// Dynamic power of memory-bound kernels as a fraction of compute-bound ones.
    pub memory_bound_load: f64,
}

fn native_kernel_fraction() -> f64 {
    1.0
}

fn is_native_kernel_fraction(fraction: &f64) -> bool {
    *fraction == 1.0
}

impl Default for PowerModel {
    fn default() -> Self {
        PowerModel::a100()
    }
}

impl PowerModel {
    /// A100 SXM: clocks 1410 MHz (the boost clock the 312 TFLOP/s peak is quoted at, NVIDIA
    /// A100 datasheet and nvidia-smi's supported clocks) down to 705 MHz (half: below it the
    /// energy per operation rises again because idle power dominates, Zeus, You et al.
    /// NSDI 2023), in nvidia-smi's 15 MHz steps. Memory-bound phases draw about 60% of the
    /// dynamic power of compute-bound ones (Patel et al., "Characterizing Power Management
    /// Opportunities for LLMs in the Cloud", ASPLOS 2024: token generation draws well below
    /// TDP, prompt processing near it).
    pub fn a100() -> PowerModel {
        PowerModel {
            max_sm_clock_mhz: 1410.0,
            boost_sm_clock_mhz: None,
            min_sm_clock_mhz: 705.0,
            clock_step_mhz: 15.0,
            dynamic_power_exponent: 2.0,
            memory_bound_load: 0.6,
        }
    }

    /// H100 and H200 SXM: the same curve over 1830 MHz down to 915 MHz. 1830 MHz is the clock
    /// the 989 TFLOP/s dense BF16 peak is quoted at (132 SMs x 4 tensor cores x 1024 FLOPs per
    /// clock x 1.83 GHz = 989.4 TFLOP/s: NVIDIA H100 whitepaper; G. Lockwood, "Peak FLOPS"),
    /// as 1410 MHz is the A100's (108 x 2048 x 1.41 GHz = 311.9). The board boosts to
    /// 1980 MHz (nvidia-smi's highest clock) under light load.
    pub fn h100() -> PowerModel {
        PowerModel {
            max_sm_clock_mhz: 1830.0,
            boost_sm_clock_mhz: Some(1980.0),
            min_sm_clock_mhz: 915.0,
            ..PowerModel::a100()
        }
    }

    /// The clock light, latency-bound work runs at, MHz.
    pub fn boost_clock_mhz(&self) -> f64 {
        self.boost_sm_clock_mhz.unwrap_or(self.max_sm_clock_mhz)
    }

    /// The settable clocks from the highest down, as fractions of the highest.
    pub fn clock_ratios(&self) -> Vec<f64> {
        let mut out = Vec::new();
        let mut mhz = self.max_sm_clock_mhz;
        while mhz >= self.min_sm_clock_mhz - 1e-9 && out.len() < 4096 {
            out.push(mhz / self.max_sm_clock_mhz);
            mhz -= self.clock_step_mhz;
        }
        out
    }
}

/// Dense tensor-core peak per element type, TFLOP/s; an absent entry is a type the device has
/// no tensor-core path for. Serialized as `{"bf16": 312.0, ...}` without the absent ones.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeakTflops {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bf16: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fp16: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fp32: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fp8: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tf32: Option<f64>,
}

/// A link class, per device and direction.
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

impl PeakTflops {
    /// Every entry with its JSON key, absent ones as `None`.
    pub fn entries(&self) -> [(&'static str, Option<f64>); 5] {
        [("bf16", self.bf16), ("fp16", self.fp16), ("fp32", self.fp32), ("fp8", self.fp8), ("tf32", self.tf32)]
    }

    /// The entry an element type computes at (tf32 is no storage type, so no `DType` maps to it).
    pub fn for_dtype(&self, dtype: DType) -> Option<f64> {
        match dtype {
            DType::BF16 => self.bf16,
            DType::F16 => self.fp16,
            DType::F32 => self.fp32,
            DType::F8E4M3 | DType::F8E5M2 => self.fp8,
            _ => None,
        }
    }
}

impl DeviceSpec {
    /// Matmul peak for `dtype`, FLOP/s: its own entry, else bf16/f16 for 16-bit and 8-bit
    /// floats, and [`DeviceSpec::vector_flops`] for anything else.
    pub fn peak_flops(&self, dtype: DType) -> f64 {
        let find = |d: DType| self.peak_tflops.for_dtype(d).map(|v| v * 1e12).filter(|&v| v > 0.0);
        let half = || find(DType::BF16).or_else(|| find(DType::F16));
        let found = match dtype {
            DType::BF16 | DType::F16 => find(dtype).or_else(half),
            DType::F8E4M3 | DType::F8E5M2 => find(dtype).or_else(half),
            _ => find(dtype),
        };
        found.unwrap_or_else(|| self.vector_flops())
    }

    /// The same device running an engine whose tensor-core kernels were written for the
    /// previous GPU generation: its matmuls reach [`DeviceSpec::prior_generation_kernel_fraction`]
    /// of the efficiency of the device's own kernels; memory-bound kernels, links and clocks
    /// are unchanged.
    pub fn running_prior_generation_kernels(&self) -> DeviceSpec {
        DeviceSpec {
            gemm_efficiency: self.gemm_efficiency * self.prior_generation_kernel_fraction,
            prior_generation_kernel_fraction: 1.0,
            ..self.clone()
        }
    }

    /// Non-tensor-core f32 arithmetic (normalizations, softmax), FLOP/s: the fp32 entry, else
    /// 1/16 of the largest peak (A100: 19.5 against 312).
    pub fn vector_flops(&self) -> f64 {
        let largest = || self.peak_tflops.entries().iter().filter_map(|(_, v)| *v).fold(0.0, f64::max);
        self.peak_tflops.fp32.filter(|&v| v > 0.0).unwrap_or_else(|| largest() / 16.0) * 1e12
    }

    /// Memory, bytes.
    pub fn memory_bytes(&self) -> f64 {
        self.memory_gb * 1e9
    }

    /// HBM bandwidth, bytes/s.
    pub fn hbm_bandwidth(&self) -> f64 {
        self.hbm_gbps * 1e9
    }

    /// Bytes/s streaming kernels reach.
    pub fn stream_bandwidth(&self) -> f64 {
        self.hbm_bandwidth() * self.memory_efficiency
    }

    /// Launch and tail time of every kernel, seconds.
    pub fn kernel_overhead_s(&self) -> f64 {
        self.kernel_overhead_us * 1e-6
    }

    /// Memory not available to tensors, bytes.
    pub fn reserved_bytes(&self) -> f64 {
        self.reserved_gb * 1e9
    }
}

impl LinkSpec {
    /// Datasheet bandwidth, bytes/s per device and direction.
    pub fn bandwidth(&self) -> f64 {
        self.bandwidth_gbps * 1e9
    }

    /// Seconds per message.
    pub fn latency_s(&self) -> f64 {
        self.latency_us * 1e-6
    }

    /// Bytes/s a transfer reaches.
    pub fn effective_bandwidth(&self) -> f64 {
        self.bandwidth() * self.efficiency
    }
}

/// The preset names, as `tessera plan --cluster` takes them.
pub const PRESETS: [&str; 3] = ["a100-80g-sxm", "h100-80g-sxm", "h200-141g-sxm"];

/// One node of eight devices (DGX/HGX) of the named kind.
pub fn preset(name: &str) -> Option<ClusterSpec> {
    let (device, intra_node, inter_node) = match name {
        "a100-80g-sxm" => (DeviceSpec::a100_80g_sxm(), LinkSpec::nvlink3_nvswitch(), LinkSpec::infiniband_hdr()),
        "h100-80g-sxm" => (DeviceSpec::h100_80g_sxm(), LinkSpec::nvlink4_nvswitch(), LinkSpec::infiniband_ndr()),
        "h200-141g-sxm" => (DeviceSpec::h200_141g_sxm(), LinkSpec::nvlink4_nvswitch(), LinkSpec::infiniband_ndr()),
        _ => return None,
    };
    Some(ClusterSpec { name: name.to_string(), device, gpus_per_node: 8, nodes: 1, gpus: 8, intra_node, inter_node })
}

/// [`DeviceSpec::prior_generation_kernel_fraction`] of the Hopper presets: Ampere's synchronous
/// `mma.sync` tensor-core instruction, which kernels written for the A100 issue, "can only
/// reach about 2/3 the peak throughput of Hopper Tensor Cores" without Hopper's `wgmma`
/// (Shah et al., "FlashAttention-3: Fast and Accurate Attention with Asynchrony and
/// Low-precision", PyTorch blog, July 2024, note 1, citing Luo et al., "Benchmarking and
/// Dissecting the Nvidia Hopper GPU Architecture", arXiv:2402.13499). A published
/// microbenchmark, fitted on none of our data.
pub const HOPPER_PRIOR_GENERATION_KERNEL_FRACTION: f64 = 2.0 / 3.0;

// The fractions of peak below are ours, not datasheet numbers: calibrated on A100 against the
// Megatron iteration times (tests/e2e/calibration.rs) and reused for the newer devices.
// Idle power is taken as 20% of TDP.

impl DeviceSpec {
    /// NVIDIA A100 80GB SXM. Source: NVIDIA A100 Tensor Core GPU datasheet (SXM column), as
    /// recorded in shared/calibration/devices.json; no fp8 tensor cores.
    pub fn a100_80g_sxm() -> DeviceSpec {
        DeviceSpec {
            name: "a100-80g-sxm".to_string(),
            peak_tflops: PeakTflops {
                bf16: Some(312.0),
                fp16: Some(312.0),
                fp32: Some(19.5),
                fp8: None,
                tf32: Some(156.0),
            },
            memory_gb: 80.0,
            hbm_gbps: 2039.0,
            tdp_w: 400.0,
            idle_w: 80.0,
            gemm_efficiency: 0.8,
            gemm_half_dim: 64.0,
            prior_generation_kernel_fraction: 1.0,
            memory_efficiency: 0.8,
            kernel_overhead_us: 5.0,
            reserved_gb: 2.0,
            power: PowerModel::a100(),
        }
    }

    /// NVIDIA H100 80GB SXM5. Source: NVIDIA H100 Tensor Core GPU datasheet (SXM column, dense
    /// numbers: the datasheet's headline figures are with 2:4 sparsity, twice these), as
    /// recorded in shared/calibration/devices.json; tf32 is the datasheet's 989 sparse / 2.
    pub fn h100_80g_sxm() -> DeviceSpec {
        DeviceSpec {
            name: "h100-80g-sxm".to_string(),
            peak_tflops: PeakTflops {
                bf16: Some(989.0),
                fp16: Some(989.0),
                fp32: Some(67.0),
                fp8: Some(1979.0),
                tf32: Some(494.0),
            },
            memory_gb: 80.0,
            hbm_gbps: 3350.0,
            tdp_w: 700.0,
            idle_w: 140.0,
            gemm_efficiency: 0.8,
            gemm_half_dim: 64.0,
            prior_generation_kernel_fraction: HOPPER_PRIOR_GENERATION_KERNEL_FRACTION,
            memory_efficiency: 0.8,
            kernel_overhead_us: 5.0,
            reserved_gb: 2.0,
            power: PowerModel::h100(),
        }
    }

    /// NVIDIA H200 141GB SXM: the H100 (same compute, power and efficiencies) with more and
    /// faster HBM3e, so only those fields differ. Source: NVIDIA H200 Tensor Core GPU datasheet
    /// (SXM column, dense), as recorded in shared/calibration/devices.json.
    pub fn h200_141g_sxm() -> DeviceSpec {
        DeviceSpec {
            name: "h200-141g-sxm".to_string(),
            memory_gb: 141.0,
            hbm_gbps: 4800.0,
            ..DeviceSpec::h100_80g_sxm()
        }
    }
}

// Link bandwidths are per device and direction: devices.json gives NVLink with both
// directions together (600 and 900 GB/s), so the presets carry half.

impl LinkSpec {
    /// Third-generation NVLink through NVSwitch (DGX A100): 12 links of 25 GB/s per direction.
    /// Source: NVIDIA A100 datasheet (600 GB/s both directions).
    pub fn nvlink3_nvswitch() -> LinkSpec {
        LinkSpec { name: "nvlink3-nvswitch".to_string(), bandwidth_gbps: 300.0, latency_us: 5.0, efficiency: 0.8 }
    }

    /// Fourth-generation NVLink through NVSwitch (DGX/HGX H100 and H200): 18 links of 25 GB/s
    /// per direction. Source: NVIDIA H100 datasheet (900 GB/s both directions).
    pub fn nvlink4_nvswitch() -> LinkSpec {
        LinkSpec { name: "nvlink4-nvswitch".to_string(), bandwidth_gbps: 450.0, latency_us: 5.0, efficiency: 0.8 }
    }

    /// InfiniBand HDR, one 200 Gb/s port per device (DGX A100 has eight compute ports).
    /// Source: shared/calibration/devices.json `links`.
    pub fn infiniband_hdr() -> LinkSpec {
        LinkSpec { name: "infiniband-hdr".to_string(), bandwidth_gbps: 25.0, latency_us: 10.0, efficiency: 0.8 }
    }

    /// InfiniBand NDR, one 400 Gb/s port per device (DGX H100 has eight compute ports).
    /// Source: shared/calibration/devices.json `links`.
    pub fn infiniband_ndr() -> LinkSpec {
        LinkSpec { name: "infiniband-ndr".to_string(), bandwidth_gbps: 50.0, latency_us: 10.0, efficiency: 0.8 }
    }
}

#[cfg(test)]
mod tests {
    use super::DeviceSpec;
    use crate::dtype::DType;

    /// The top planned clock is the one the tensor peak is quoted at: SMs x dense BF16 FLOPs
    /// per SM and clock x clock gives the datasheet peak (A100: 108 SMs of 2048 FLOPs per
    /// clock; H100 SXM: 132 of 4096), so a stage at the top clock runs at the peak.
    #[test]
    fn the_top_planned_clock_is_the_clock_of_the_tensor_peak() {
        for (device, sms, flops_per_clock) in
            [(DeviceSpec::a100_80g_sxm(), 108.0, 2048.0), (DeviceSpec::h100_80g_sxm(), 132.0, 4096.0)]
        {
            let at_clock = sms * flops_per_clock * device.power.max_sm_clock_mhz * 1e6;
            let peak = device.peak_flops(DType::BF16);
            assert!(
                (at_clock / peak - 1.0).abs() < 1e-3,
                "{}: {at_clock:e} at the top clock, peak {peak:e}",
                device.name
            );
        }
        let h100 = DeviceSpec::h100_80g_sxm().power;
        assert_eq!((h100.max_sm_clock_mhz, h100.boost_clock_mhz()), (1830.0, 1980.0));
        assert_eq!(DeviceSpec::a100_80g_sxm().power.boost_clock_mhz(), 1410.0);
    }
}
