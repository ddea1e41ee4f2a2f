//! Training steps partitioned over meshes: on dp, tp, pp and their combinations, in-process
//! ranks (one thread each) give the single-process trainer's losses and final weights.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tessera::train::data::ByteCorpus;
use tessera::train::distributed::{train_in_process, DistributedStep};
use tessera::train::{self, OptimizerKind, TrainConfig, TrainState, Trainer};
use tessera_ir::sharding::Mesh;

const CORPUS: &str = "/usr/share/common-licenses/GPL-3";
const STEPS: u64 = 5;

fn config(model: &str, optimizer: OptimizerKind, micro_batches: usize) -> TrainConfig {
    let lr = match optimizer {
        OptimizerKind::AdamW => 3e-3,
        OptimizerKind::Sgd => 0.1,
    };
    TrainConfig { model: model.to_string(), optimizer, lr, seed: 7, micro_batches }
}

/// The single-process losses and final state.
fn single(model: &str, batch: u64, cfg: &TrainConfig, corpus: &ByteCorpus) -> (Vec<f64>, TrainState) {
    let m = train::load_model(model, batch, None).expect("model");
    let mut trainer = Trainer::on_interpreter(m, cfg.clone(), corpus.clone()).expect("trainer");
    let losses = (0..STEPS).map(|_| trainer.train_step().expect("step").loss).collect();
    (losses, trainer.state.clone())
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-30)
}

/// Trains `STEPS` steps on `mesh` and compares losses and gathered state with one process.
fn check(model: &str, batch: u64, cfg: &TrainConfig, mesh: &str) {
    let corpus = ByteCorpus::read(Path::new(CORPUS)).expect("corpus");
    let (want_losses, want_state) = single(model, batch, cfg, &corpus);
    let m = train::load_model(model, batch, None).expect("model");
    let shared = Arc::new(DistributedStep::new(m, cfg.clone(), Mesh::parse(mesh).expect("mesh")).expect("partition"));
    let mut losses = Vec::new();
    let state = train_in_process(shared, &corpus, None, STEPS, Duration::from_secs(60), |r| {
        losses.push(r.loss);
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{mesh}: {e:#}"));
    assert_eq!(losses.len(), want_losses.len());
    for (i, (a, b)) in losses.iter().zip(&want_losses).enumerate() {
        assert!(close(*a, *b, 1e-9), "{mesh} step {}: loss {a} vs {b} on one process", i + 1);
    }
    assert_eq!(state.step, want_state.step);
    assert_eq!(state.data_position, want_state.data_position);
    for (which, (got, want)) in [
        ("params", (&state.params, &want_state.params)),
        ("state", (&state.optimizer_state, &want_state.optimizer_state)),
    ] {
        assert_eq!(got.len(), want.len());
        for (k, (x, y)) in got.iter().zip(want).enumerate() {
            assert_eq!(x.shape, y.shape);
            for (a, b) in x.to_f64_vec().iter().zip(y.to_f64_vec()) {
                assert!((a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-3), "{mesh} {which}[{k}]: {a} vs {b}");
            }
        }
    }
}

const GPT: &str = "gpt:layers=2,hidden=16,heads=4,seq=8,vocab=256,dtype=fp64";

#[test]
fn dp2_adamw() {
    check(GPT, 4, &config(GPT, OptimizerKind::AdamW, 1), "dp=2");
}

#[test]
fn tp2_sgd() {
    check(GPT, 4, &config(GPT, OptimizerKind::Sgd, 1), "tp=2");
}

#[test]
fn pp2_adamw_two_micro_batches() {
    check(GPT, 2, &config(GPT, OptimizerKind::AdamW, 2), "pp=2");
}
