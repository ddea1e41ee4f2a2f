//! Calibration: the eight Megatron iteration times of Korthikanti et al. 2022 (A100-80GB,
//! Selene), predicted with the published configuration fixed, each within 15%; and the held-out
//! set of `calibration/heldout_training.json` (Megatron-LM's GPT-3 175B example, MT-NLG 530B
//! on three cluster sizes, BLOOM-176B, and eleven of BigScience's topology runs of 181B and
//! 196B models before BLOOM), which sets no number of the cost model. One device
//! description and one set of link numbers (the `a100-80g-sxm` preset) for all rows; a row
//! whose cluster had another network between nodes says so and only that link changes.
//!
//! `calibration/megatron_deepspeed_calibration.json` holds BigScience's one-node runs on
//! Megatron-DeepSpeed and its 40-node sweep over the micro-batch size, which set
//! `MEGATRON_DEEPSPEED_TP` (a time per ring time and per call of a tensor-parallel
//! collective) and nothing else.
//!
//! `tests/fixtures/korthikanti2022.json` is a copy of `shared/calibration/korthikanti2022.json`.

use crate::support::{cluster, zoo};
use serde_json::Value;
use tessera_passes::cost::step::{
    estimate, estimate_with, GradAccumulation, Job, LayerPartition, Mode, Parallelism, Recompute, Schedule,
    TimeBreakdown, TpCollectiveTime, MEGATRON_DEEPSPEED_TP,
};
use tessera_passes::cost::workload::ProfileCache;

const TOLERANCE: f64 = 0.15;

/// The held-out bounds: what the cost model reaches today (mean |error| 4.7%, max 8.2% over
/// all sixteen rows, with Megatron-DeepSpeed's tensor-parallel collectives priced by
/// `MEGATRON_DEEPSPEED_TP`, a time per ring time and per call fitted on its calibration rows;
/// 5.4% and 8.1% with a time per ring time alone, 18.4% and 26.7% over the first twelve rows
/// with neither: BENCHMARKS.md, "Held-out training runs") with a little slack, so that a change
/// that makes it worse fails. The aim is 5% mean and 10% max.
const HELD_OUT_MEAN: f64 = 0.05;
const HELD_OUT_MAX: f64 = 0.10;

/// (model, column, predicted, measured) for every row and column.
pub fn predictions() -> Vec<(String, &'static str, f64, f64)> {
    let data: Value = serde_json::from_str(include_str!("../fixtures/korthikanti2022.json")).expect("calibration json");
    let seq = data["common"]["seq_len"].as_u64().expect("seq_len");
    let int = |row: &Value, key: &str| row[key].as_u64().unwrap_or_else(|| panic!("{key} in {row}"));
    let mut out = Vec::new();
    for row in data["rows"].as_array().expect("rows") {
        let model = row["model"].as_str().expect("model");
        let workload = zoo(model);
        assert_eq!(
            (workload.cfg.layers, workload.cfg.hidden, workload.cfg.heads, workload.cfg.seq),
            (int(row, "layers"), int(row, "hidden"), int(row, "heads"), seq),
            "the {model} preset matches the table"
        );
        let gpus = int(row, "gpus");
        let c = cluster(&format!("a100-80g-sxm:gpus={gpus}"));
        let mut cache = ProfileCache::new(&workload, &c.device);
        let (tp, pp) = (int(row, "tp"), int(row, "pp"));
        let job = Job { mode: Mode::Train, global_batch: int(row, "global_batch"), seq };
        for (column, recompute, sp) in
            [("full_recompute", Recompute::Full, false), ("seqpar_selective", Recompute::Selective, true)]
        {
            let par = Parallelism {
                dp: gpus / (tp * pp),
                tp,
                pp,
                ep: 1,
                sp,
                micro_batch: int(row, "micro_batch"),
                interleave: int(row, "interleave"),
                recompute,
                zero: 0,
                schedule: Schedule::OneFOneB,
                grad_accumulation: GradAccumulation::Fused,
                layer_partition: LayerPartition::Layers,
            };
            let e = estimate(&mut cache, &c, &job, &par).unwrap_or_else(|err| panic!("{model} {column}: {err}"));
            assert!(e.memory.total <= c.device.memory_bytes(), "{model} {column} needs {:.1} GB", e.memory.total / 1e9);
            let measured = row["iter_time_s"][column].as_f64().expect("measured time");
            out.push((model.to_string(), column, e.step_time_s, measured));
        }
    }
    out
}

#[test]
fn korthikanti_iteration_times_within_15_percent() {
    let rows = predictions();
    assert_eq!(rows.len(), 8);
    let mut table = String::from("model     column            predicted  measured  error\n");
    for (model, column, predicted, measured) in &rows {
        let error = predicted / measured - 1.0;
        table += &format!("{model:<9} {column:<17} {predicted:>8.2} s {measured:>7.2} s {:>+6.1}%\n", 100.0 * error);
    }
    println!("{table}");
    for (model, column, predicted, measured) in &rows {
        let error = predicted / measured - 1.0;
        assert!(
            error.abs() <= TOLERANCE,
            "{model} {column}: predicted {predicted:.2} s, measured {measured:.2} s\n{table}"
        );
    }
}

/// One held-out row: its name, the predicted and the measured iteration time.
pub struct HeldOut {
    pub name: String,
    pub predicted_s: f64,
    pub measured_s: f64,
    /// The predicted step by cause (on the slowest stage), for the decomposition table.
    pub time: TimeBreakdown,
    pub micro_batches: u64,
}

/// Every row of `calibration/heldout_training.json`, predicted with its published
/// configuration fixed.
pub fn held_out_predictions() -> Vec<HeldOut> {
    published_run_predictions(include_str!("../../calibration/heldout_training.json"), "rows")
}

/// Every row under `key` of a file of published training runs (the held-out file's fields),
/// predicted with its published configuration fixed.
fn published_run_predictions(json: &str, key: &str) -> Vec<HeldOut> {
    published_run_predictions_with(json, key, MEGATRON_DEEPSPEED_TP)
}

/// [`published_run_predictions`] with Megatron-DeepSpeed's tensor-parallel collectives priced
/// by `deepspeed_tp`.
fn published_run_predictions_with(json: &str, key: &str, deepspeed_tp: TpCollectiveTime) -> Vec<HeldOut> {
    let data: Value = serde_json::from_str(json).expect("published runs json");
    let int = |row: &Value, key: &str| row[key].as_u64().unwrap_or_else(|| panic!("{key} in {row}"));
    let mut out = Vec::new();
    for row in data[key].as_array().expect("rows") {
        let name = row["name"].as_str().expect("name");
        let workload = zoo(row["model"].as_str().expect("model"));
        assert_eq!(
            (workload.cfg.layers, workload.cfg.hidden, workload.cfg.heads, workload.cfg.seq, workload.cfg.vocab),
            (int(row, "layers"), int(row, "hidden"), int(row, "heads"), int(row, "seq"), int(row, "vocab")),
            "{name}: the zoo spelling matches the row"
        );
        let gpus = int(row, "gpus");
        let device = row["device"].as_str().expect("device");
        let mut c = cluster(&format!("{device}:gpus={gpus}"));
        assert_eq!(c.gpus_per_node, int(row, "gpus_per_node"), "{name}");
        if let Some(link) = row["inter_node"].as_object() {
            c.inter_node.name = link["name"].as_str().expect("link name").to_string();
            c.inter_node.bandwidth_gbps = link["bandwidth_gbps"].as_f64().expect("link bandwidth");
        }
        let (tp, pp, dp) = (int(row, "tp"), int(row, "pp"), int(row, "dp"));
        assert_eq!(tp * pp * dp, gpus, "{name}: tp * pp * dp is the GPUs");
        let recompute = match row["recompute"].as_str().expect("recompute") {
            "full" => Recompute::Full,
            "selective" => Recompute::Selective,
            "none" => Recompute::None,
            other => panic!("{name}: recompute {other}"),
        };
        let par = Parallelism {
            dp,
            tp,
            pp,
            ep: 1,
            sp: false,
            micro_batch: int(row, "micro_batch"),
            interleave: int(row, "interleave"),
            recompute,
            zero: int(row, "zero") as u8,
            schedule: match row["schedule"].as_str().expect("schedule") {
                "1f1b" => Schedule::OneFOneB,
                "deepspeed" => Schedule::DeepSpeed,
                other => panic!("{name}: schedule {other}"),
            },
            grad_accumulation: match row["grad_accumulation"].as_str().unwrap_or("fused") {
                "fused" => GradAccumulation::Fused,
                "unfused" => GradAccumulation::Unfused,
                "bf16_optimizer" => GradAccumulation::Bf16Optimizer,
                other => panic!("{name}: grad_accumulation {other}"),
            },
            layer_partition: match row["layer_partition"].as_str().expect("layer_partition") {
                "time" => LayerPartition::Time,
                "layers" => LayerPartition::Layers,
                "layers_and_embeddings" => LayerPartition::LayersAndEmbeddings,
                other => panic!("{name}: layer_partition {other}"),
            },
        };
        let job = Job { mode: Mode::Train, global_batch: int(row, "global_batch"), seq: int(row, "seq") };
        let mut cache = ProfileCache::new(&workload, &c.device);
        let e = estimate_with(&mut cache, &c, &job, &par, deepspeed_tp).unwrap_or_else(|err| panic!("{name}: {err}"));
        assert!(e.memory.total <= c.device.memory_bytes(), "{name} needs {:.1} GB", e.memory.total / 1e9);
        let measured_s = row["iter_time_s"].as_f64().expect("iter_time_s");
        out.push(HeldOut {
            name: name.to_string(),
            predicted_s: e.step_time_s,
            measured_s,
            time: e.time,
            micro_batches: e.micro_batches,
        });
    }
    out
}

#[test]
fn held_out_iteration_times_within_the_measured_bound() {
    let rows = held_out_predictions();
    assert_eq!(rows.len(), 16);
    let mut table = String::from("row                      predicted  measured  error\n");
    for r in &rows {
        let error = r.predicted_s / r.measured_s - 1.0;
        table += &format!("{:<24} {:>8.2} s {:>7.2} s {:>+6.1}%\n", r.name, r.predicted_s, r.measured_s, 100.0 * error);
    }
    let errors: Vec<f64> = rows.iter().map(|r| (r.predicted_s / r.measured_s - 1.0).abs()).collect();
    let mean = errors.iter().sum::<f64>() / errors.len() as f64;
    let max = errors.iter().fold(0.0f64, |a, &b| a.max(b));
    table += &format!("mean |error| {:.1}%, max {:.1}%\n", 100.0 * mean, 100.0 * max);
    // A fixed-width text table (its shape resembles the planner's HTML alternatives table; only
    // the layout of a row is shared, not the columns).
    table += "row                      m    compute recompute  tp comm  pp comm   bubble  dp exp.  adam\n";
    for r in &rows {
        let t = &r.time;
        table += &format!(
            "{:<24} {:>4} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>5.2}\n",
            r.name,
            r.micro_batches,
            t.compute_s,
            t.recompute_s,
            t.tp_comm_s,
            t.pp_comm_s,
            t.bubble_s,
            t.dp_comm_exposed_s,
            t.optimizer_s
        );
    }
    println!("{table}");
    for r in &rows {
        // The decomposition BENCHMARKS.md prints is the step but for one difference: the step
        // ends with the longest tail after the pipeline (the embedding's stage reduces more
        // gradients), the breakdown lists the slowest stage's own tail. Nothing else is
        // priced outside it. BLOOM's end stages (one layer fewer under its
        // `type:transformer|embedding` partition, so not the slowest) reduce the 250,880-token
        // embedding's fp32 gradients over Omni-Path after the pipeline: 1.0 s (1.1%) longer.
        let t = &r.time;
        let parts = t.compute_s
            + t.recompute_s
            + t.tp_comm_s
            + t.ep_comm_s
            + t.pp_comm_s
            + t.bubble_s
            + t.dp_comm_exposed_s
            + t.optimizer_s;
        let gap = (r.predicted_s - parts) / r.predicted_s;
        assert!((0.0..0.015).contains(&gap), "{}: parts {parts} s, step {} s", r.name, r.predicted_s);
    }
    assert!(mean <= HELD_OUT_MEAN, "held-out mean |error| {:.1}%\n{table}", 100.0 * mean);
    assert!(max <= HELD_OUT_MAX, "held-out max |error| {:.1}%\n{table}", 100.0 * max);
}

/// The least-squares fit of Megatron-DeepSpeed's tensor-parallel collective time over the
/// relative errors of the rows under `key` of `json` (a sweep's rows, those with one `sweep`
/// name, about their mean), starting from `start`. The step is
/// piecewise linear in the two numbers (a pipeline's slowest stage can change), so the fit takes
/// Gauss-Newton steps with the slopes measured by moving each number.
fn fit_deepspeed_tp(json: &str, key: &str, start: TpCollectiveTime) -> TpCollectiveTime {
    let data: Value = serde_json::from_str(json).expect("published runs json");
    let sweeps: Vec<Option<&str>> =
        data[key].as_array().expect("rows").iter().map(|row| row["sweep"].as_str()).collect();
    // A sweep's rows count by their errors about the sweep's mean: the level is its own.
    let errors = |tp: TpCollectiveTime| -> Vec<f64> {
        let raw: Vec<f64> =
            published_run_predictions_with(json, key, tp).iter().map(|r| r.predicted_s / r.measured_s - 1.0).collect();
        let level = |sweep: &str| {
            let members: Vec<f64> =
                raw.iter().zip(&sweeps).filter(|(_, s)| **s == Some(sweep)).map(|(e, _)| *e).collect();
            members.iter().sum::<f64>() / members.len() as f64
        };
        raw.iter().zip(&sweeps).map(|(e, s)| e - s.map_or(0.0, level)).collect()
    };
    let (d_factor, d_call) = (0.5, 1e-4);
    let mut at = start;
    for _ in 0..3 {
        let e0 = errors(at);
        let ef = errors(TpCollectiveTime { ring_time_factor: at.ring_time_factor + d_factor, ..at });
        let ec = errors(TpCollectiveTime { call_s: at.call_s + d_call, ..at });
        let jf: Vec<f64> = ef.iter().zip(&e0).map(|(a, b)| (a - b) / d_factor).collect();
        let jc: Vec<f64> = ec.iter().zip(&e0).map(|(a, b)| (a - b) / d_call).collect();
        let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(a, b)| a * b).sum::<f64>();
        let (aff, afc, acc) = (dot(&jf, &jf), dot(&jf, &jc), dot(&jc, &jc));
        let (bf, bc) = (-dot(&jf, &e0), -dot(&jc, &e0));
        let det = aff * acc - afc * afc;
        assert!(det.abs() > 0.0, "the calibration rows do not tell the two numbers apart");
        at = TpCollectiveTime {
            ring_time_factor: at.ring_time_factor + (bf * acc - bc * afc) / det,
            call_s: at.call_s + (aff * bc - afc * bf) / det,
        };
    }
    at
}

/// The Megatron-DeepSpeed calibration rows (`calibration/megatron_deepspeed_calibration.json`:
/// BigScience's one-node TP 8 runs, no pipeline, data parallelism or network, and its 40-node
/// sweep of one model over micro-batch sizes 1 to 8) set `MEGATRON_DEEPSPEED_TP`: it is the
/// least-squares fit over their relative errors, and each is within 7%.
#[test]
fn megatron_deepspeed_calibration_rows_set_the_tensor_parallel_collective_time() {
    let json = include_str!("../../calibration/megatron_deepspeed_calibration.json");
    let rows = published_run_predictions(json, "rows");
    assert_eq!(rows.len(), 7);
    let mut table = String::from("row                                    predicted  measured  error   tp time\n");
    for r in &rows {
        let error = r.predicted_s / r.measured_s - 1.0;
        table += &format!(
            "{:<38} {:>8.2} s {:>7.2} s {:>+6.1}% {:>7.2} s\n",
            r.name,
            r.predicted_s,
            r.measured_s,
            100.0 * error,
            r.time.tp_comm_s
        );
    }
    let fit = fit_deepspeed_tp(json, "rows", MEGATRON_DEEPSPEED_TP);
    println!(
        "{table}least squares: {:.3} ring times + {:.3} ms per call (shipped: {:.3} + {:.3} ms)",
        fit.ring_time_factor,
        1e3 * fit.call_s,
        MEGATRON_DEEPSPEED_TP.ring_time_factor,
        1e3 * MEGATRON_DEEPSPEED_TP.call_s
    );
    assert!(
        (fit.ring_time_factor - MEGATRON_DEEPSPEED_TP.ring_time_factor).abs() <= 0.02
            && (fit.call_s - MEGATRON_DEEPSPEED_TP.call_s).abs() <= 2e-6,
        "the shipped numbers are off their fit {fit:?}\n{table}"
    );
    for r in &rows {
        let error = r.predicted_s / r.measured_s - 1.0;
        assert!(error.abs() <= 0.07, "{}: {:+.1}%\n{table}", r.name, 100.0 * error);
    }
    // The pair that chose the form: BLOOM's shape at TP 8 and TP 4 on the same day. Pricing the
    // collectives (not the kernels) gets the ratio of their steps.
    let pair = published_run_predictions(json, "form_evidence");
    let (tp8, tp4) = (&pair[0], &pair[1]);
    for r in &pair {
        println!(
            "{:<32} {:>8.2} s {:>7.2} s {:>+6.1}%",
            r.name,
            r.predicted_s,
            r.measured_s,
            100.0 * (r.predicted_s / r.measured_s - 1.0)
        );
    }
    let (predicted, measured) = (tp4.predicted_s / tp8.predicted_s, tp4.measured_s / tp8.measured_s);
    println!("TP 4 / TP 8 step: predicted {predicted:.3}, measured {measured:.3}");
    assert!(
        (predicted / measured - 1.0).abs() <= 0.03,
        "TP 4 / TP 8: predicted {predicted:.3}, measured {measured:.3}"
    );
}

/// Each held-out row's TFLOP/s per GPU, recomputed from its iteration time through the formula
/// its source used (`tflops_formula`), agrees with the TFLOP/s the source prints: so the times
/// are the ones the sources measured, and the sources counted a recomputed forward pass per
/// layer (full activation checkpointing, priced as `recompute: full`). The same time through the
/// formula without recomputation (3 forward-equivalents of FLOPs instead of 4) would miss the
/// printed figure by a quarter, so the check tells the two readings apart.
#[test]
fn held_out_tflops_count_the_recomputed_forward() {
    for json in [
        include_str!("../../calibration/heldout_training.json"),
        include_str!("../../calibration/megatron_deepspeed_calibration.json"),
    ] {
        tflops_count_the_recomputed_forward(json);
    }
}

fn tflops_count_the_recomputed_forward(json: &str) {
    let data: Value = serde_json::from_str(json).expect("published runs json");
    let number = |row: &Value, key: &str| row[key].as_f64().unwrap_or_else(|| panic!("{key} in {}", row["name"]));
    let rows: Vec<&Value> =
        ["rows", "form_evidence"].iter().filter_map(|key| data[*key].as_array()).flatten().collect();
    let mut checked = 0;
    // Rows whose source printed TFLOP/s through an estimate older than its iteration time's
    // (`tflops_formula: null`) are checked by their time alone.
    let rows: Vec<&Value> = rows.into_iter().filter(|row| !row["tflops_formula"].is_null()).collect();
    for row in rows.iter().copied() {
        let name = row["name"].as_str().expect("name");
        let (batch, seq, layers, hidden, vocab) = (
            number(row, "global_batch"),
            number(row, "seq"),
            number(row, "layers"),
            number(row, "hidden"),
            number(row, "vocab"),
        );
        // FLOPs of one iteration with full recomputation: four forward-equivalents per layer.
        let flops_with_recompute = match row["tflops_formula"].as_str().expect("tflops_formula") {
            // Narayanan et al. 2021, Section 5.1: 96 B s l h^2 (1 + s / 6h + V / 16 l h).
            "narayanan2021" => {
                96.0 * batch
                    * seq
                    * layers
                    * hidden
                    * hidden
                    * (1.0 + seq / (6.0 * hidden) + vocab / (16.0 * layers * hidden))
            }
            // BigScience: parameters * 8 * tokens (2 forward, 4 backward, 2 recomputed forward).
            "params_x8" => number(row, "params_b") * 1e9 * 8.0 * batch * seq,
            other => panic!("{name}: tflops_formula {other}"),
        };
        let per_gpu_second = number(row, "gpus") * number(row, "iter_time_s") * 1e12;
        let with_recompute = flops_with_recompute / per_gpu_second;
        let without_recompute = 0.75 * with_recompute;
        let printed = number(row, "tflops_per_gpu");
        assert!(
            (with_recompute / printed - 1.0).abs() <= 0.01,
            "{name}: {with_recompute:.1} TFLOP/s from the iteration time, the source prints {printed}"
        );
        assert!(
            (without_recompute / printed - 1.0).abs() >= 0.2,
            "{name}: without recomputation {without_recompute:.1} TFLOP/s would also match {printed}"
        );
        checked += 1;
    }
    assert_eq!(checked, rows.len());
}
