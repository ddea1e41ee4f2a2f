//! `tessera plan` through the CLI: a plan in JSON with every documented field, an infeasible
//! model (exit code 2 with the memory it would need), `--fix` values that cannot work and
//! numbers outside the planner's limits (exit code 2 too).

use crate::support::{example, tessera, PLAN_FIELDS};

#[test]
fn plan_json_has_every_documented_field() {
    let dir = tempfile::tempdir().unwrap();
    let out = tessera(
        dir.path(),
        &[
            "plan",
            "gpt3-175b",
            "--cluster",
            "a100-80g-sxm:gpus=64",
            "--global-batch",
            "64",
            "--format",
            "json",
            "-o",
            "plan.json",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("plan.json")).unwrap()).unwrap();
    for field in PLAN_FIELDS {
        assert!(!plan[field].is_null(), "plan.json lacks {field}");
    }
    let p = &plan["parallelism"];
    let gpus = p["dp"].as_u64().unwrap() * p["tp"].as_u64().unwrap() * p["pp"].as_u64().unwrap();
    assert_eq!(gpus, 64, "{p}");
    assert!(plan["memory_per_gpu_bytes"].as_f64().unwrap() <= 80e9);
    let mfu = plan["mfu"].as_f64().unwrap();
    assert!(mfu > 0.1 && mfu < 0.8, "implausible MFU {mfu}");
}

#[test]
fn plans_any_model_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = tessera(
        dir.path(),
        &["plan", &example("mlp.mlir"), "--cluster", "h100-80g-sxm:gpus=8", "--global-batch", "64"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("parallelism"), "{}", out.stdout);
}

#[test]
fn a_model_that_fits_nowhere_exits_2_and_says_what_it_needs() {
    let dir = tempfile::tempdir().unwrap();
    let out = tessera(dir.path(), &["plan", "gpt-1t", "--cluster", "a100-80g-sxm:gpus=8", "--global-batch", "8"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out
        .stderr
        .starts_with("error: gpt-1t does not fit on a100-80g-sxm:gpus=8: the smallest configuration needs"));
    assert!(out.stderr.contains("GB per GPU"), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1);
}

#[test]
fn impossible_fixes_name_the_knob() {
    let dir = tempfile::tempdir().unwrap();
    // README: infeasible plans exit with 2, a --fix that cannot work and a cluster spec that
    // cannot exist included.
    let cases = [
        ("a100-80g-sxm:gpus=64", "tp=7", 2, "error: --fix tp: tp=7 does not divide the 64 GPUs"),
        ("a100-80g-sxm:gpus=64", "pp=200", 2, "error: --fix pp: pp=200 is larger than the 96 layers"),
        ("a100-80g-sxm:gpus=64", "tp=64", 2, "--fix tp"),
        ("a100-80g-sxm:gpus=60", "tp=8", 2, "gpus=60 is not a whole number of 8-device nodes"),
    ];
    for (cluster, fix, code, expected) in cases {
        let out =
            tessera(dir.path(), &["plan", "gpt3-175b", "--cluster", cluster, "--global-batch", "64", "--fix", fix]);
        assert_eq!(out.code, code, "{fix}: {}", out.stderr);
        assert!(out.stderr.contains(expected), "{fix}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    }
}

#[test]
fn plans_tensor_parallelism_for_a_model_file() {
    // A 1.1 G-parameter MLP with 8 sequences per step on one 8-GPU node: every data-parallel
    // replica would stream all weights and sync all gradients; splitting them pays.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("wide_mlp.mlir"), crate::support::wide_mlp_mlir(2, 1024, 8192)).unwrap();
    let args = ["plan", "wide_mlp.mlir", "--cluster", "h100-80g-sxm:gpus=8", "--global-batch", "8", "--format", "json"];
    let out = tessera(dir.path(), &args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    for field in PLAN_FIELDS {
        assert!(!plan[field].is_null(), "plan lacks {field}");
    }
    assert!(plan["parallelism"]["tp"].as_u64().unwrap() > 1, "{}", plan["parallelism"]);
    let dp_only = plan["alternatives"].as_array().unwrap().iter().find(|a| a["parallelism"]["tp"] == 1);
    let dp_only = dp_only.expect("the data-parallel layout is among the alternatives");
    assert!(dp_only["why"].as_str().unwrap().contains("data-parallel sync"), "{dp_only}");
    insta::assert_json_snapshot!(plan);
}

/// Numbers the planner refuses before searching, with exit status 2: zero, sizes whose tensors
/// overflowed ("element counts differ"), and sizes that searched for minutes and grew to 10 GB.
#[test]
fn numbers_out_of_range_are_refused_before_the_search() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &str, &str, &str); 6] = [
        (
            "gpt3-175b",
            "a100-80g-sxm:gpus=64",
            "0",
            "--global-batch = 0 is out of range: the planner accepts 1 to 16777216",
        ),
        (
            "gpt3-175b",
            "a100-80g-sxm:gpus=64",
            "1099511627776",
            "--global-batch = 1099511627776 is out of range: the planner accepts 1 to 16777216",
        ),
        (
            "gpt3-175b",
            "a100-80g-sxm:gpus=64",
            "4611686018427387904",
            "--global-batch = 4611686018427387904 is out of range",
        ),
        (
            "gpt3-175b",
            "a100-80g-sxm:gpus=1000000000",
            "64",
            "the cluster's gpus = 1000000000 is out of range: the planner accepts 1 to 1048576",
        ),
        (
            "gpt:layers=100000,hidden=2048,heads=16",
            "a100-80g-sxm:gpus=64",
            "64",
            "the model's layers = 100000 is out of range: the planner accepts 1 to 1024",
        ),
        (
            "gpt:layers=24,hidden=2048,heads=16,seq=33554432",
            "a100-80g-sxm:gpus=64",
            "64",
            "the sequence length = 33554432 is out of range",
        ),
    ];
    for (model, cluster, batch, expected) in cases {
        let started = std::time::Instant::now();
        let out = tessera(dir.path(), &["plan", model, "--cluster", cluster, "--global-batch", batch]);
        assert_eq!(out.code, 2, "{model} {cluster} {batch}: {}", out.stderr);
        assert!(out.stderr.starts_with(&format!("error: {expected}")), "{}", out.stderr);
        assert!(started.elapsed().as_secs() < 10, "{model} {batch}: took {:?}", started.elapsed());
    }
}

/// The largest accepted values still plan, in seconds.
#[test]
fn the_largest_accepted_sizes_still_plan() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["plan", "gpt3-175b", "--cluster", "h100-80g-sxm:gpus=1048576", "--global-batch", "16777216"];
    let out = tessera(dir.path(), &args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("planned in"), "{}", out.stdout);
}
