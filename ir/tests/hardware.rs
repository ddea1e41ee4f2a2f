//! The hardware description: presets carry the datasheet numbers, the SI accessors convert
//! exactly, peaks fall back as the cost model expects, and the JSON form of peaks is a map.

use tessera_ir::dtype::DType;
use tessera_ir::hardware::{preset, DeviceSpec, PeakTflops, PRESETS};

#[test]
fn presets_are_named_and_self_consistent() {
    for name in PRESETS {
        let c = preset(name).expect(name);
        assert_eq!((c.name.as_str(), c.device.name.as_str()), (name, name));
        assert_eq!((c.gpus, c.nodes, c.gpus_per_node), (8, 1, 8));
        assert!(c.device.reserved_gb < c.device.memory_gb);
    }
    assert!(preset("tpu-v5").is_none());
}

#[test]
fn accessors_give_si_units() {
    let h100 = DeviceSpec::h100_80g_sxm();
    assert_eq!(h100.peak_flops(DType::BF16), 989e12);
    assert_eq!(h100.peak_flops(DType::F8E5M2), 1979e12);
    assert_eq!(h100.vector_flops(), 67e12);
    assert_eq!((h100.memory_bytes(), h100.hbm_bandwidth()), (80e9, 3350e9));
    assert_eq!(h100.stream_bandwidth(), 3350e9 * 0.8);
    // Microseconds scale by 1e-6 (the product, not the literal 5e-6: the planner's JSON
    // depends on these exact bits).
    assert_eq!((h100.kernel_overhead_s(), h100.reserved_bytes()), (5.0 * 1e-6, 2e9));
    let nvlink = preset("h100-80g-sxm").expect("preset").intra_node;
    assert_eq!(
        (nvlink.bandwidth(), nvlink.latency_s(), nvlink.effective_bandwidth()),
        (450e9, 5.0 * 1e-6, 450e9 * 0.8)
    );
}

#[test]
fn peaks_fall_back_to_half_precision_then_vector_units() {
    // The A100 has no fp8 tensor cores: fp8 matmuls run at the 16-bit peak.
    let a100 = DeviceSpec::a100_80g_sxm();
    assert_eq!(a100.peak_flops(DType::F8E4M3), 312e12);
    // No tensor-core path for f64: the vector peak.
    assert_eq!(a100.peak_flops(DType::F64), 19.5e12);
    let only_fp16 = DeviceSpec { peak_tflops: PeakTflops { fp16: Some(160.0), ..PeakTflops::default() }, ..a100 };
    assert_eq!(only_fp16.peak_flops(DType::BF16), 160e12);
    // Without an fp32 entry, vector units are 1/16 of the largest peak.
    assert_eq!(only_fp16.vector_flops(), 10e12);
}

#[test]
fn peaks_serialize_as_a_map_of_present_entries() {
    let a100 = DeviceSpec::a100_80g_sxm();
    let json = serde_json::to_string(&a100.peak_tflops).expect("serialize");
    assert_eq!(json, r#"{"bf16":312.0,"fp16":312.0,"fp32":19.5,"tf32":156.0}"#);
    let back: PeakTflops = serde_json::from_str(r#"{"bf16": 312}"#).expect("a partial map");
    assert_eq!(back, PeakTflops { bf16: Some(312.0), ..PeakTflops::default() });
    let err = serde_json::from_str::<PeakTflops>(r#"{"int4": 1}"#).expect_err("unknown type").to_string();
    assert!(err.contains("unknown field `int4`"), "{err}");
}

#[test]
fn prior_generation_kernels_slow_only_hopper_matmuls() {
    // The A100 runs its own generation's kernels: nothing changes.
    let a100 = DeviceSpec::a100_80g_sxm();
    assert_eq!(a100.running_prior_generation_kernels(), a100);
    // On the H100, Ampere's mma.sync reaches 2/3 of the tensor rate; the rest is unchanged, and
    // applying it twice changes nothing more.
    let h100 = DeviceSpec::h100_80g_sxm();
    let legacy = h100.running_prior_generation_kernels();
    assert_eq!(legacy.gemm_efficiency, 0.8 * (2.0 / 3.0));
    assert_eq!((legacy.memory_efficiency, legacy.hbm_gbps), (0.8, 3350.0));
    assert_eq!(legacy.peak_tflops, h100.peak_tflops);
    assert_eq!(legacy.running_prior_generation_kernels(), legacy);
    // The field is left out of a native device's JSON and read back as 1 when absent.
    let json = serde_json::to_value(&a100).expect("serialize");
    assert!(json.get("prior_generation_kernel_fraction").is_none(), "{json}");
    let back: DeviceSpec = serde_json::from_value(json).expect("deserialize");
    assert_eq!(back.prior_generation_kernel_fraction, 1.0);
    let json = serde_json::to_value(&h100).expect("serialize");
    assert_eq!(json["prior_generation_kernel_fraction"], 2.0 / 3.0);
}
