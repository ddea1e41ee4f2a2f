//! Calibration: the eight Megatron iteration times of Korthikanti et al. 2022 (A100-80GB,
//! Selene), predicted with the published configuration fixed, each within 15%. One device
//! description and one set of link numbers (the `a100-80g-sxm` preset) for all rows.
//!
//! `tests/fixtures/korthikanti2022.json` is a copy of `shared/calibration/korthikanti2022.json`.

use crate::support::{cluster, zoo};
use serde_json::Value;
use tessera_passes::cost::step::{estimate, Job, Mode, Parallelism, Recompute, Schedule};
use tessera_passes::cost::workload::ProfileCache;

const TOLERANCE: f64 = 0.15;

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
