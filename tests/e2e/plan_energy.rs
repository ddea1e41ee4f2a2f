//! `tessera plan --objective/--power-cap`: per-stage clocks, the time–energy frontier of a
//! pipeline-parallel GPT-175B plan (Perseus-style slack of non-critical stages), the
//! objectives, and the bad requests that exit 2.

use crate::support::{assert_usage_errors, tessera, GPT2_PLAN};

fn plan_json(args: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = tessera(dir.path(), args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    serde_json::from_str(&out.stdout).expect("plan JSON")
}

fn number(v: &serde_json::Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

/// GPT-3 175B on 1,536 A100s, 48 stages of two one-layer chunks: the last stage also holds
/// the vocabulary head, so the other 47 have slack.
const GPT3_PP48: [&str; 12] = [
    "plan",
    "gpt3-175b",
    "--cluster",
    "a100-80g-sxm:gpus=1536",
    "--global-batch",
    "1536",
    "--fix",
    "pp=48",
    "--alternatives",
    "0",
    "--objective",
    "time",
];

#[test]
fn a_pipeline_parallel_gpt3_saves_a_tenth_of_its_energy_within_one_percent_of_its_time() {
    let args: Vec<&str> = GPT3_PP48.iter().copied().chain(["--format", "json"]).collect();
    let plan = plan_json(&args);
    let energy = &plan["energy"];
    let max = &energy["max_clock"];
    let frontier = energy["frontier"].as_array().expect("a frontier");
    assert!(frontier.len() >= 5, "{energy}");
    // Fastest first, each slower point cheaper: a Pareto frontier.
    for pair in frontier.windows(2) {
        assert!(number(&pair[1], "step_time_s") > number(&pair[0], "step_time_s"));
        assert!(number(&pair[1], "energy_j") < number(&pair[0], "energy_j"));
    }
    let within = frontier
        .iter()
        .rfind(|p| number(p, "step_time_s") <= 1.01 * number(max, "step_time_s"))
        .expect("a point within 1%");
    let saving = 1.0 - number(within, "energy_j") / number(max, "energy_j");
    assert!(saving >= 0.10, "{saving} at {within}");
    // The saving comes from the stages without the head: the last stage keeps the full clock.
    let clocks: Vec<f64> =
        within["stage_clocks_mhz"].as_array().expect("clocks").iter().filter_map(|c| c.as_f64()).collect();
    assert_eq!(clocks.len(), 48);
    assert_eq!(clocks[47], 1410.0);
    assert!(clocks[1..47].iter().all(|&c| c < 1300.0), "{clocks:?}");
    let explanation = energy["explanation"].as_str().expect("an explanation");
    assert!(explanation.contains("stage 47 at the full 1410 MHz"), "{explanation}");
    // The time objective keeps every stage at the highest clock.
    assert_eq!(energy["chosen"], *max);
}

#[test]
fn the_frontier_text_lists_clocks_per_stage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = tessera(dir.path(), &GPT3_PP48);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let start = out.stdout.find("  clocks ").expect("a clocks line");
    let end = out.stdout.find("planned in").unwrap_or(out.stdout.len());
    insta::assert_snapshot!("gpt3_pp48_frontier", out.stdout[start..end].trim_end());
}

#[test]
fn the_energy_objective_trades_time_for_joules_and_a_power_cap_slows_the_clock() {
    let base =
        ["plan", "gpt3-175b", "--cluster", "h100-80g-sxm:gpus=256", "--global-batch", "512", "--alternatives", "0"];
    let with = |extra: &[&str]| {
        let args: Vec<&str> = base.iter().chain(extra).chain(&["--format", "json"]).copied().collect();
        plan_json(&args)
    };
    let time = with(&["--objective", "time"]);
    let energy = with(&["--objective", "energy"]);
    let per_token = |p: &serde_json::Value| number(p, "energy_per_step_j") / (512.0 * 2048.0);
    assert!(per_token(&energy) < 0.9 * per_token(&time), "{} vs {}", per_token(&energy), per_token(&time));
    assert!(number(&energy, "step_time_s") > number(&time, "step_time_s"));
    // 140 W idle + 560 W r^2 <= 500 W: r <= 0.802, at most 1467 MHz of 1830.
    let capped = with(&["--power-cap", "500"]);
    let clocks = capped["energy"]["chosen"]["stage_clocks_mhz"].as_array().expect("clocks");
    assert!(clocks.iter().all(|c| c.as_f64().is_some_and(|c| c <= 1467.0)), "{clocks:?}");
    assert!(number(&capped, "step_time_s") > number(&time, "step_time_s"));
    let cost = with(&["--objective", "cost", "--gpu-hour-price", "2", "--electricity-price", "0.1"]);
    assert_eq!(cost["energy"]["objective"], "cost");
}

#[test]
fn bad_energy_requests_exit_2_with_one_clear_line() {
    let cases: &[(&[&str], &str)] = &[
        (&["--objective", "speed"], "error: --objective speed: unknown objective (time, energy or cost)"),
        (
            &["--power-cap", "100"],
            "error: --power-cap 100: below the 280 W a h100-80g-sxm draws at its lowest planned clock (915 MHz)",
        ),
        (&["--power-cap", "-5"], "error: --power-cap -5: must be a positive number of watts"),
        (&["--objective", "cost", "--electricity-price", "-1"], "error: --electricity-price -1: must not be negative"),
        (&["--electricity-price", "0.1"], "error: --electricity-price prices the cost objective"),
        (&["--objective", "cost", "--pue", "0.5"], "error: --pue 0.5: must be at least 1"),
    ];
    assert_usage_errors(&GPT2_PLAN, cases);
}
