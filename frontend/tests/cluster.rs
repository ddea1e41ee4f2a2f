//! Cluster specs: presets carry the datasheet numbers, overrides size the cluster, JSON files
//! round-trip, and bad specs name the field or key at fault.

use tessera_frontend::cluster::{parse, ClusterError};
use tessera_ir::hardware::{preset, PRESETS};

#[test]
fn presets_carry_the_datasheet_numbers() {
    let a100 = parse("a100-80g-sxm").expect("preset");
    assert_eq!((a100.gpus, a100.nodes, a100.gpus_per_node), (8, 1, 8));
    assert_eq!(a100.device.peak_tflops.bf16, Some(312.0));
    assert_eq!((a100.device.memory_gb, a100.device.hbm_gbps, a100.device.tdp_w), (80.0, 2039.0, 400.0));
    // devices.json gives NVLink in both directions together; links are per direction here.
    assert_eq!((a100.intra_node.bandwidth_gbps, a100.inter_node.bandwidth_gbps), (300.0, 25.0));
    let h100 = parse("h100-80g-sxm").expect("preset");
    assert_eq!((h100.device.peak_tflops.bf16, h100.device.peak_tflops.fp8), (Some(989.0), Some(1979.0)));
    assert_eq!((h100.intra_node.bandwidth_gbps, h100.inter_node.bandwidth_gbps), (450.0, 50.0));
    let h200 = parse("h200-141g-sxm").expect("preset");
    assert_eq!((h200.device.memory_gb, h200.device.hbm_gbps), (141.0, 4800.0));
    for name in PRESETS {
        assert_eq!(preset(name).expect(name).name, name);
    }
}

#[test]
fn overrides_size_the_cluster() {
    let c = parse("h100-80g-sxm:gpus=3072").expect("gpus");
    assert_eq!((c.gpus, c.nodes, c.name.as_str()), (3072, 384, "h100-80g-sxm:gpus=3072"));
    let c = parse("a100-80g-sxm:nodes=35").expect("nodes");
    assert_eq!((c.gpus, c.nodes), (280, 35));
    let c = parse("a100-80g-sxm:gpus=4").expect("part of a node");
    assert_eq!((c.gpus, c.nodes), (4, 1));
    let c = parse("a100-80g-sxm:gpus_per_node=4,nodes=3").expect("smaller nodes");
    assert_eq!((c.gpus, c.nodes, c.gpus_per_node), (12, 3, 4));
    let c = parse("a100-80g-sxm:gpus=64,nodes=8").expect("consistent");
    assert_eq!(c.gpus, 64);
}

#[test]
fn json_files_round_trip() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cluster.json");
    let mut spec = parse("a100-80g-sxm:nodes=2").expect("preset");
    spec.name = "lab".into();
    std::fs::write(&path, serde_json::to_string_pretty(&spec).expect("serialize")).expect("write");
    let text = path.to_str().expect("utf-8 path");
    assert_eq!(parse(text).expect("load"), spec);
    let bigger = parse(&format!("{text}:nodes=4")).expect("override a file");
    assert_eq!((bigger.gpus, bigger.device), (32, spec.device.clone()));

    std::fs::write(&path, "{\"name\": \"x\",\n \"device\": 3}").expect("write");
    let err = parse(text).expect_err("bad json").to_string();
    assert!(err.starts_with(&format!("{text}:2:")) && err.contains("invalid type"), "{err}");
    let mut broken = spec.clone();
    broken.intra_node.efficiency = 1.5;
    std::fs::write(&path, serde_json::to_string(&broken).expect("serialize")).expect("write");
    assert_eq!(
        parse(text).expect_err("bad number").to_string(),
        format!("{text}: cluster 'lab': intra_node.efficiency: 1.5 must be in (0, 1]")
    );
    let mut broken = spec.clone();
    broken.device.prior_generation_kernel_fraction = 0.0;
    std::fs::write(&path, serde_json::to_string(&broken).expect("serialize")).expect("write");
    assert_eq!(
        parse(text).expect_err("bad fraction").to_string(),
        format!("{text}: cluster 'lab': device.prior_generation_kernel_fraction: 0 must be in (0, 1]")
    );
}

/// A finite but absurd number made the planner print "inf GB"; every field has an upper bound.
#[test]
fn huge_numbers_in_a_json_file_are_refused_with_the_field() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cluster.json");
    let text = path.to_str().expect("utf-8 path");
    let spec = parse("h100-80g-sxm:gpus=8").expect("preset");
    let mut huge_memory = spec.clone();
    huge_memory.device.memory_gb = 1e300;
    let mut huge_latency = spec.clone();
    huge_latency.inter_node.latency_us = 2e9;
    for (broken, field, value) in
        [(huge_memory, "device.memory_gb", "1e300"), (huge_latency, "inter_node.latency_us", "2e9")]
    {
        std::fs::write(&path, serde_json::to_string(&broken).expect("serialize")).expect("write");
        assert_eq!(
            parse(text).expect_err(field).to_string(),
            format!(
                "{text}: cluster '{}': {field}: {value} is out of range: a cluster spec's numbers are at most 1e9",
                spec.name
            )
        );
    }
}

#[test]
fn bad_specs_name_the_problem() {
    let err = |spec: &str| parse(spec).expect_err(spec).to_string();
    assert_eq!(
        err("tpu-v5"),
        "unknown cluster 'tpu-v5'; presets: a100-80g-sxm, h100-80g-sxm, h200-141g-sxm, or a .json file"
    );
    assert_eq!(
        err("a100-80g-sxm:gpus=12"),
        "cluster spec 'a100-80g-sxm:gpus=12': gpus=12 is not a whole number of 8-device nodes"
    );
    assert_eq!(err("a100-80g-sxm:gpus=0"), "cluster spec 'a100-80g-sxm:gpus=0': gpus=0: expected a positive integer");
    assert_eq!(
        err("a100-80g-sxm:racks=2"),
        "cluster spec 'a100-80g-sxm:racks=2': unknown key 'racks'; known keys: gpus, nodes, gpus_per_node"
    );
    assert_eq!(
        err("a100-80g-sxm:gpus=64,nodes=4"),
        "cluster spec 'a100-80g-sxm:gpus=64,nodes=4': gpus=64 does not fill nodes=4 of 8 devices"
    );
    assert!(matches!(parse("missing.json"), Err(ClusterError::Io { .. })));
}
