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

/// The cluster a SplitwiseSim row ran on, with the profiled engine's kernels: written for the
/// A100 (synchronous `mma.sync` tensor-core code, no Hopper `wgmma`/TMA), so on the H100 they
/// reach `prior_generation_kernel_fraction` of a Hopper-native kernel's efficiency (see
/// `tessera_ir::hardware::HOPPER_PRIOR_GENERATION_KERNEL_FRACTION`); on the A100 that is the
/// device's own generation and nothing changes.
fn splitwise_cluster(preset: &str, tp: u64) -> tessera_ir::hardware::ClusterSpec {
    let mut c = cluster(&format!("{preset}:gpus={tp}"));
    c.device = c.device.running_prior_generation_kernels();
    c
}

/// One SplitwiseSim profile row: what ran, on which cluster.
struct ProfiledRow<'a> {
    row: &'a Value,
    model: &'a str,
    gpu: &'a str,
    tp: u64,
    batch: u64,
    prompt: u64,
}

impl<'a> ProfiledRow<'a> {
    fn read(row: &'a Value) -> Self {
        let int = |k: &str| row[k].as_u64().unwrap_or_else(|| panic!("{k} in {row}"));
        let (model, gpu) = (row["model"].as_str().expect("model"), row["gpu"].as_str().expect("gpu"));
        ProfiledRow { row, model, gpu, tp: int("tp"), batch: int("batch"), prompt: int("prompt_tokens") }
    }

    fn measured_ms(&self, key: &str) -> f64 {
        self.row[key].as_f64().unwrap_or_else(|| panic!("{key} in {}", self.row))
    }

    /// The DGX-A100 rows calibrate; the DGX-H100 rows are held out.
    fn calibration(&self) -> bool {
        self.gpu.starts_with("a100")
    }

    fn workload(&self) -> tessera::workload::ZooWorkload {
        zoo(spec(self.model))
    }

    fn cluster(&self) -> tessera_ir::hardware::ClusterSpec {
        splitwise_cluster(if self.calibration() { "a100-80g-sxm" } else { "h100-80g-sxm" }, self.tp)
    }

    fn label(&self) -> String {
        format!("{} {} tp={} batch={} prompt={}", self.model, self.gpu, self.tp, self.batch, self.prompt)
    }
}

fn splitwise_rows() -> Value {
    serde_json::from_str(include_str!("../fixtures/splitwise_phases.json")).expect("splitwise json")
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
    let data = splitwise_rows();
    let mut out = Vec::new();
    for row in data["rows"].as_array().expect("rows") {
        let r = ProfiledRow::read(row);
        let (workload, c) = (r.workload(), r.cluster());
        let mut cache = ProfileCache::new(&workload, &c.device);
        let mut pricer = PhasePricer::new(&mut cache, &c);
        let prefill = pricer.prefill(r.batch, r.prompt, r.tp, 1).expect("prefill");
        let decode = pricer.decode(r.batch, r.prompt, r.tp, 1).expect("decode");
        let (label, calibration) = (r.label(), r.calibration());
        out.push(PhaseRow {
            label: label.clone(),
            calibration,
            phase: "prefill",
            predicted_ms: prefill * 1e3,
            measured_ms: r.measured_ms("prefill_ms"),
        });
        out.push(PhaseRow {
            label,
            calibration,
            phase: "decode",
            predicted_ms: decode * 1e3,
            measured_ms: r.measured_ms("decode_ms_per_token"),
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
            // Where the model stands today (BENCHMARKS.md) plus a few points, so that it cannot
            // get worse unnoticed: decode within 10% on the calibration rows and 12% held out
            // (9.1% since the synchronization rounds take SM cycles rather than a fixed time);
            // prefill held out within 15% (12.2% since the profiled engine's A100 kernels are
            // priced at the 2/3 of the H100's tensor rate that `mma.sync` reaches; 21.6%
            // before), calibration within 25% (20.5%: large prefill batches are the worst, the
            // profiles slow down per token beyond batch 8, the roofline does not).
            let bound = match (calibration, phase) {
                (true, "decode") => 0.10,
                (false, "decode") => 0.12,
                (false, "prefill") => 0.15,
                _ => 0.25,
            };
            assert!(mean <= bound, "{set} {phase}: mean |error| {mean}");
        }
    }
}

/// Streaming multiprocessors of the two profiled devices (A100 and H100 SXM whitepapers), for
/// the tile-and-wave count of each prefill matmul printed below.
fn sm_count(gpu: &str) -> f64 {
    if gpu.starts_with("a100") {
        108.0
    } else {
        132.0
    }
}

/// The prefill of every profiled row split by cause (`PhasePricer::prefill_parts`), and each
/// layer matmul's modelled share of peak beside the share of the last wave that 128x128 output
/// tiles fill: the decomposition `BENCHMARKS.md` quotes. The parts must add up to the priced
/// prefill.
#[test]
fn prefill_parts_add_up_to_the_priced_prefill() {
    let data = splitwise_rows();
    for row in data["rows"].as_array().expect("rows") {
        let r = ProfiledRow::read(row);
        let (tp, batch, prompt, gpu) = (r.tp, r.batch, r.prompt, r.gpu);
        let (workload, c) = (r.workload(), r.cluster());
        let mut cache = ProfileCache::new(&workload, &c.device);
        let mut pricer = PhasePricer::new(&mut cache, &c);
        let total = pricer.prefill(batch, prompt, tp, 1).expect("prefill");
        let parts = pricer.prefill_parts(batch, prompt, tp, 1).expect("parts");
        assert!((parts.total() - total).abs() <= 1e-9 * total, "{parts:?} against {total}");
        let measured = r.measured_ms("prefill_ms");
        println!(
            "{}: measured {measured:.1} ms, predicted {:.1} ms = \
             matmul {:.1} + attention {:.1} + other {:.1} (launch {:.1} of these) + tp all-reduce {:.1} + sync {:.1}",
            r.label(),
            1e3 * total,
            1e3 * parts.matmul_s,
            1e3 * parts.attention_s,
            1e3 * parts.other_kernels_s,
            1e3 * parts.launch_s,
            1e3 * parts.tp_collective_s,
            1e3 * parts.sync_s
        );
        let shape = tessera_ir::workload::BlockShape { batch, seq: prompt, tp, ep: 1, training: false, kv_cache: 0 };
        let kind = tessera_passes::cost::workload::Workload::layer_runs(&workload)[0].0;
        let layer = cache.get(tessera_passes::cost::workload::BlockKind::Layer(kind), &shape).expect("layer");
        for k in layer.kernels.iter().filter(|k| k.matmul_dims.is_some()) {
            let (m, n, kk, products) = k.matmul_dims.expect("matmul");
            let tiles = products * (m / 128.0).ceil() * (n / 128.0).ceil();
            let waves = (tiles / sm_count(gpu)).ceil();
            let peak = c.device.peak_flops(tessera_ir::dtype::DType::F16);
            println!(
                "    {:<14} m={m:<6} n={n:<6} k={kk:<6} x{products:<4} {:>7.3} ms  {:>4.1}% of peak  {tiles} tiles in {waves} waves ({:.0}% filled)",
                k.name,
                1e3 * k.time_s,
                100.0 * k.flops / k.time_s / peak,
                100.0 * tiles / (waves * sm_count(gpu))
            );
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
