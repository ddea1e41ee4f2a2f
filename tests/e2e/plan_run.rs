//! `tessera plan --tokens N`: the cost of a whole run (days, GPU-hours, MWh, dollars, tCO2e,
//! goodput under failures and Young/Daly checkpointing), against Meta's published Llama 3 405B
//! run, and the bad specs that exit 2 (never a panic).

use crate::support::{assert_usage_errors, llama3_70b_serve_plan, tessera, GPT2_PLAN};

const LLAMA3_405B: [&str; 9] = [
    "plan",
    "llama3-405b",
    "--cluster",
    "h100-80g-sxm:gpus=16384",
    "--global-batch",
    "2048",
    "--seq",
    "8192",
    "--tokens",
];

fn run_of(args: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let out = tessera(dir.path(), args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).expect("plan JSON");
    plan["run"].clone()
}

fn number(v: &serde_json::Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("run lacks {key}: {v}"))
}

#[test]
fn llama3_405b_pretraining_costs_about_what_meta_published() {
    let args: Vec<&str> = LLAMA3_405B.iter().copied().chain(["15.6e12", "--format", "json"]).collect();
    let run = run_of(&args);
    for key in ["days", "gpu_hours", "energy_mwh", "cost_usd", "co2_t", "goodput"] {
        assert!(number(&run, key) > 0.0, "{key}: {run}");
    }
    // Internal consistency: the GPU-hours are the days on 16,384 GPUs; dollars, emissions and
    // energy follow from the documented defaults (USD 2/GPU-hour, 367 g/kWh).
    let (days, gpu_hours) = (number(&run, "days"), number(&run, "gpu_hours"));
    assert!((gpu_hours / (days * 24.0 * 16384.0) - 1.0).abs() < 1e-9);
    assert!((number(&run, "cost_usd") / (2.0 * gpu_hours) - 1.0).abs() < 1e-9);
    assert!((number(&run, "co2_t") / (number(&run, "energy_mwh") * 0.367) - 1.0).abs() < 1e-9);
    // Meta (Llama 3 paper and model card): 30.84 M GPU-hours, ~3.8e25 FLOPs, a failure every ~3 h.
    // The planner's MFU is below Meta's 38-43%, so it predicts more GPU-hours; BENCHMARKS.md
    // has the comparison.
    assert!((25e6..50e6).contains(&gpu_hours), "{gpu_hours} GPU-hours");
    let flops = number(&run, "model_flops");
    assert!((3.0e25..5.0e25).contains(&flops), "{flops} FLOPs");
    let goodput = number(&run, "goodput");
    assert!((0.85..0.99).contains(&goodput), "goodput {goodput}");
    let training = &run["training"];
    assert!((number(training, "cluster_mtbf_hours") - 6300.0 / 2048.0).abs() < 1e-9, "{training}");
    // 405.9 G parameters at 14 bytes.
    assert!((number(training, "checkpoint_bytes") / 5.68e12 - 1.0).abs() < 0.01, "{training}");
}

#[test]
fn slower_storage_and_flakier_nodes_lower_the_goodput() {
    let base: Vec<&str> = LLAMA3_405B.iter().copied().chain(["15.6e12", "--format", "json"]).collect();
    let default = number(&run_of(&base), "goodput");
    let slow: Vec<&str> = base.iter().copied().chain(["--storage-gbps", "20"]).collect();
    let flaky: Vec<&str> = base.iter().copied().chain(["--mtbf-hours", "1000"]).collect();
    assert!(number(&run_of(&slow), "goodput") < default - 0.05);
    assert!(number(&run_of(&flaky), "goodput") < default - 0.05);
}

#[test]
fn the_run_text_lists_days_money_energy_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<&str> = LLAMA3_405B
        .iter()
        .copied()
        .chain(["15.6e12", "--pue", "1.2", "--gpu-hour-price", "2.5", "--grid-carbon", "400", "--alternatives", "0"])
        .collect();
    let out = tessera(dir.path(), &args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let start = out.stdout.find("  run ").expect("a run section");
    let end = out.stdout[start..].find("\n\n").map_or(out.stdout.len(), |e| start + e);
    insta::assert_snapshot!("llama3_405b_run", &out.stdout[start..end]);
}

#[test]
fn serving_prices_a_million_tokens() {
    let run = run_of(&llama3_70b_serve_plan(&[
        "--global-batch",
        "64",
        "--seq",
        "4096",
        "--tokens",
        "1e9",
        "--format",
        "json",
    ]));
    assert_eq!(run["goodput"].as_f64(), Some(1.0));
    assert!(run["training"].is_null(), "{run}");
    let usd = number(&run, "usd_per_million_tokens");
    // 8 GPUs at USD 2/hour over the plan's tokens/s.
    assert!((usd / (number(&run, "cost_usd") / 1e3) - 1.0).abs() < 1e-9, "{run}");
    assert!(number(&run, "joules_per_million_tokens") > 0.0);
}

#[test]
fn without_tokens_the_plan_has_no_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = tessera(
        dir.path(),
        &["plan", "gpt2", "--cluster", "h100-80g-sxm:gpus=8", "--global-batch", "8", "--format", "json"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stdout.contains("\"run\""), "{}", out.stdout);
}

#[test]
fn bad_specs_exit_2_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--tokens", "1e9", "--gpu-hour-price", "-2"], "error: --gpu-hour-price -2: must not be negative"),
        (&["--tokens", "1e9", "--pue", "0.9"], "error: --pue 0.9: must be at least 1"),
        (&["--tokens", "0"], "error: --tokens 0: must be a positive number of tokens"),
        (&["--tokens", "-1e12"], "error: --tokens -1000000000000: must be a positive number of tokens"),
        (&["--tokens", "1e9", "--grid-carbon", "-5"], "error: --grid-carbon -5: must not be negative"),
        (&["--tokens", "1e9", "--mtbf-hours", "0"], "error: --mtbf-hours 0: must be positive"),
        (&["--tokens", "1e9", "--storage-gbps", "inf"], "error: --storage-gbps inf: must be positive"),
        (&["--pue", "1.2"], "error: --pue prices a whole run: give its --tokens too"),
    ];
    assert_usage_errors(&GPT2_PLAN, cases);
    let clusters = [
        ("h100-80g-sxm:gpus=8:foo=1", "expected a positive integer"),
        ("h100-80g-sxm:gpus=-8", "expected a positive integer"),
        ("h100-80g-sxm:warp=9", "warp"),
        ("tpu-v9:gpus=8", "tpu-v9"),
    ];
    for (cluster, expected) in clusters {
        let out = tessera(dir.path(), &["plan", "gpt2", "--cluster", cluster, "--global-batch", "8"]);
        assert_eq!(out.code, 2, "{cluster}: {}", out.stderr);
        assert!(out.stderr.contains(expected), "{cluster}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    }
}
