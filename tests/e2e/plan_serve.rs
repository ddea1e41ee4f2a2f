//! `tessera plan --mode serve --workload`: serving plans under latency targets, their phase
//! latencies against the SplitwiseSim profiles (calibrated on the DGX-A100 rows, held out on
//! the DGX-H100 rows), and the bad requests that exit 2.
//!
//! `tests/fixtures/splitwise_phases.json` is a copy of `shared/calibration/splitwise_phases.json`.

use crate::support::{assert_usage_errors, cluster, llama3_70b_serve_plan, tessera, zoo};
use serde_json::Value;
use tessera_passes::cost::workload::ProfileCache;
use tessera_passes::planner::serve::PhasePricer;

/// The zoo spelling of the profiled models (Llama-2-70B: 80 layers, GQA with 8 KV heads,
/// 32k vocabulary; BLOOM-176B: 70 layers of 14336, 112 heads, 250k vocabulary).
fn spec(model: &str) -> &'static str {
    match model {
        "llama2-70b" => "llama:layers=80,hidden=8192,heads=64,kv_heads=8,ffn=28672,vocab=32000,seq=8192",
        "bloom-176b" => "gpt:layers=70,hidden=14336,heads=112,vocab=250880,seq=8192",
        other => panic!("no zoo spelling of {other}"),
    }
}

/// One phase measurement and its prediction.
pub struct PhaseRow {
    pub label: String,
    /// The DGX-A100 rows calibrate; the DGX-H100 rows are held out.
    pub calibration: bool,
    pub phase: &'static str,
    pub predicted_ms: f64,
    pub measured_ms: f64,
}

pub fn phase_predictions() -> Vec<PhaseRow> {
    let data: Value = serde_json::from_str(include_str!("../fixtures/splitwise_phases.json")).expect("splitwise json");
    let mut out = Vec::new();
    for row in data["rows"].as_array().expect("rows") {
        let int = |k: &str| row[k].as_u64().unwrap_or_else(|| panic!("{k} in {row}"));
        let num = |k: &str| row[k].as_f64().unwrap_or_else(|| panic!("{k} in {row}"));
        let model = row["model"].as_str().expect("model");
        let gpu = row["gpu"].as_str().expect("gpu");
        let preset = if gpu.starts_with("a100") { "a100-80g-sxm" } else { "h100-80g-sxm" };
        let (tp, batch, prompt) = (int("tp"), int("batch"), int("prompt_tokens"));
        let workload = zoo(spec(model));
        let c = cluster(&format!("{preset}:gpus={tp}"));
        let mut cache = ProfileCache::new(&workload, &c.device);
        let mut pricer = PhasePricer::new(&mut cache, &c);
        let prefill = pricer.prefill(batch, prompt, tp, 1).expect("prefill");
        let decode = pricer.decode(batch, prompt, tp, 1).expect("decode");
        let label = format!("{model} {gpu} tp={tp} batch={batch} prompt={prompt}");
        let calibration = gpu.starts_with("a100");
        out.push(PhaseRow {
            label: label.clone(),
            calibration,
            phase: "prefill",
            predicted_ms: prefill * 1e3,
            measured_ms: num("prefill_ms"),
        });
        out.push(PhaseRow {
            label,
            calibration,
            phase: "decode",
            predicted_ms: decode * 1e3,
            measured_ms: num("decode_ms_per_token"),
        });
    }
    out
}

fn error(r: &PhaseRow) -> f64 {
    r.predicted_ms / r.measured_ms - 1.0
}

#[test]
fn phase_latencies_match_the_splitwise_profiles() {
    let rows = phase_predictions();
    assert_eq!(rows.len(), 60);
    for r in &rows {
        println!(
            "{:<8} {:<7} {:<52} predicted {:>8.1} ms measured {:>8.1} ms {:>+6.1}%",
            if r.calibration { "calib" } else { "held-out" },
            r.phase,
            r.label,
            r.predicted_ms,
            r.measured_ms,
            100.0 * error(r)
        );
    }
    for (set, calibration) in [("calibration", true), ("held-out", false)] {
        for phase in ["prefill", "decode"] {
            let errors: Vec<f64> = rows
                .iter()
                .filter(|r| r.calibration == calibration && r.phase == phase)
                .map(|r| error(r).abs())
                .collect();
            let mean = errors.iter().sum::<f64>() / errors.len() as f64;
            let max = errors.iter().fold(0.0f64, |a, &b| a.max(b));
            println!(
                "{set} {phase}: mean |error| {:.1}%, max {:.1}% over {} rows",
                100.0 * mean,
                100.0 * max,
                errors.len()
            );
            // Where the model stands today (BENCHMARKS.md), so that it cannot get worse
            // unnoticed: decode within 10% on the calibration rows and 12% held out (9.1% since
            // the synchronization rounds take SM cycles rather than a fixed time); prefill within
            // 25% (large prefill batches are the worst: the profiles slow down per token beyond
            // batch 8, the roofline does not).
            let bound = match (calibration, phase) {
                (true, "decode") => 0.10,
                (false, "decode") => 0.12,
                _ => 0.25,
            };
            assert!(mean <= bound, "{set} {phase}: mean |error| {mean}");
        }
    }
}

const WORKLOAD_JSON_NO_ALTERNATIVES: [&str; 8] =
    ["--workload", "in=2048,out=256,rate=4", "--slo", "ttft=500,tpot=50", "--format", "json", "--alternatives", "0"];

fn serve_json(extra: &[&str]) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = llama3_70b_serve_plan(&WORKLOAD_JSON_NO_ALTERNATIVES);
    args.extend_from_slice(extra);
    let out = tessera(dir.path(), &args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    serde_json::from_str(&out.stdout).expect("plan JSON")
}

#[test]
fn llama3_70b_on_eight_h100s_meets_its_slo_at_four_requests_per_second() {
    let plan = serve_json(&[]);
    let serve = &plan["serve"];
    for key in [
        "prefill_s",
        "decode_step_s",
        "ttft_s",
        "tpot_s",
        "output_tokens_per_s",
        "requests_per_s",
        "kv_cache_bytes_per_gpu",
        "max_batch",
        "energy_j_per_token",
    ] {
        assert!(serve[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {serve}");
    }
    assert_eq!(serve["meets_slo"], true);
    assert!(serve["ttft_s"].as_f64().is_some_and(|t| t <= 0.5), "{serve}");
    assert!(serve["tpot_s"].as_f64().is_some_and(|t| t <= 0.05), "{serve}");
    assert!((serve["requests_per_s"].as_f64().unwrap_or(0.0) - 4.0).abs() < 1e-9, "{serve}");
    // 256 tokens per request.
    assert!((serve["output_tokens_per_s"].as_f64().unwrap_or(0.0) - 1024.0).abs() < 1e-6);
    // The frontier: larger batches, more tokens per GPU, slower tokens.
    let frontier = serve["frontier"].as_array().expect("frontier");
    assert!(frontier.len() >= 5, "{serve}");
    for pair in frontier.windows(2) {
        assert!(pair[1]["tpot_s"].as_f64() >= pair[0]["tpot_s"].as_f64());
        assert!(pair[1]["output_tokens_per_s_per_gpu"].as_f64() >= pair[0]["output_tokens_per_s_per_gpu"].as_f64());
    }
    // The other placement is priced too, for comparison.
    assert_ne!(serve["other_placement"]["placement"], serve["placement"]);
    insta::assert_json_snapshot!("llama3_70b_serve", plan);
}

#[test]
fn fp8_halves_the_weights_and_speeds_both_phases() {
    let bf16 = serve_json(&[]);
    let fp8 = serve_json(&["--dtype", "fp8"]);
    let (b, f) = (&bf16["serve"], &fp8["serve"]);
    assert_eq!(fp8["dtype"], "fp8");
    let goodput = |s: &Value| s["goodput_requests_per_s_per_gpu"].as_f64().unwrap_or(0.0);
    assert!(goodput(f) > 1.5 * goodput(b), "{} vs {}", goodput(f), goodput(b));
    assert!(f["energy_j_per_token"].as_f64() < b["energy_j_per_token"].as_f64());
}

#[test]
fn bad_serving_requests_exit_2_with_one_clear_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: &[(&[&str], &str)] = &[
        (
            &["--workload", "in=2048,out=256,rate=4", "--slo", "ttft=10,tpot=50"],
            "error: no serving plan of llama3-70b on h100-80g-sxm:gpus=8 meets the SLO (TTFT 10 ms, TPOT 50 ms): the closest",
        ),
        (&["--workload", "in=2048,out=256,rate=1000", "--slo", "ttft=500,tpot=50"], "error: no serving plan"),
        (&["--workload", "in=2048"], "error: --workload needs in=TOKENS and out=TOKENS"),
        (&["--workload", "in=2048,out=256,rate=-1"], "error: --workload rate=-1: must be a positive number"),
        (&["--workload", "in=2048,out=256,speed=1"], "error: --workload: unknown key 'speed'"),
        (&["--workload", "in=2048,out=256", "--slo", "ttft=-5"], "error: --slo ttft=-5: must be a positive number"),
        (&["--workload", "in=2048,out=256", "--dtype", "int4"], "error: --dtype int4: expected bf16 or fp8"),
        (&["--slo", "ttft=500"], "error: --slo needs a serving --workload"),
        (&["--workload", "in=0,out=256"], "error: --workload in=0,out=256: token counts must be 1 to"),
    ];
    let mlp = crate::support::example("mlp.mlir");
    let file =
        ["plan", mlp.as_str(), "--mode", "serve", "--cluster", "h100-80g-sxm:gpus=8", "--workload", "in=16,out=4"];
    let out = tessera(dir.path(), &file);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("a model file has no decode step"), "{}", out.stderr);
    assert_usage_errors(&llama3_70b_serve_plan(&[]), cases);
}
