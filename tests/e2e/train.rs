//! Training end to end: a zoo GPT learns real text, checkpoints resume bit for bit, gradient
//! accumulation equals the whole-batch gradient, and `tessera train --format json` prints one
//! record per step.

use crate::support::tessera;
use std::path::Path;
use tessera::train::{self, data::ByteCorpus, OptimizerKind, TrainConfig, Trainer};
use tessera_ir::dtype::DType;
use tessera_ir::graph::InputRole;
use tessera_ir::ops::optim::Sgd;
use tessera_ir::tensor::Tensor;
use tessera_passes::train_step::{self, Optimizer, TrainStepConfig};
use tessera_runtime::interpreter;

/// Real English text on every Debian machine (base-files).
const CORPUS: &str = "/usr/share/common-licenses/GPL-3";

#[test]
fn a_small_gpt_halves_its_loss_on_real_text() {
    // bf16 compute with f32 master weights (the zoo's default dtype), untied head so the
    // embedding and the output projection can learn byte bigrams independently.
    let spec = "gpt:layers=1,hidden=32,heads=2,seq=32,vocab=256,dropout=0,tied=false";
    let model = train::load_model(spec, 8, None).expect("model");
    let config =
        TrainConfig { model: spec.into(), optimizer: OptimizerKind::AdamW, lr: 3e-3, seed: 0, micro_batches: 1 };
    let corpus = ByteCorpus::read(Path::new(CORPUS)).expect("corpus");
    let mut trainer = Trainer::on_interpreter(model, config, corpus).expect("trainer");
    let losses: Vec<f64> = (0..300).map(|_| trainer.train_step().expect("step").loss).collect();
    let first = losses[0];
    let last: f64 = losses[270..].iter().sum::<f64>() / 30.0;
    // A uniform guess over 256 bytes is ln 256 = 5.545.
    assert!((first - 256f64.ln()).abs() < 0.1, "initial loss {first}");
    assert!(last <= first / 2.0, "loss fell from {first} to only {last} (mean of the last 30 steps)");
}

fn json_losses(stdout: &str) -> Vec<(u64, f64)> {
    stdout
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object per line");
            for key in ["step", "loss", "step_time_s", "tokens_per_s", "cpu_time_s"] {
                assert!(v.get(key).is_some_and(|x| x.is_number()), "{key} missing in {line}");
            }
            assert!(v["tokens_per_s"].as_f64().is_some_and(|t| t > 0.0), "{line}");
            // A step's CPU time (every thread of the process) is positive and at most what the
            // machine's cores can give in its wall time (2 here; 4 leaves room for clock skew).
            let (cpu, wall) = (v["cpu_time_s"].as_f64().unwrap_or(-1.0), v["step_time_s"].as_f64().unwrap_or(0.0));
            assert!(cpu > 0.0 && cpu <= 4.0 * wall + 0.01, "{line}");
            (v["step"].as_u64().expect("step"), v["loss"].as_f64().expect("loss"))
        })
        .collect()
}

#[test]
fn resuming_from_a_checkpoint_reproduces_the_uninterrupted_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Dropout on (the GPT default, 0.1): the checkpoint must carry the mask stream too.
    let model = "gpt:layers=1,hidden=16,heads=2,seq=8,vocab=256";
    let common = ["--data", CORPUS, "--batch", "2", "--format", "json", "--seed", "5"];
    let run = |extra: &[&str]| {
        let mut args = vec!["train", model];
        args.extend(common);
        args.extend(extra);
        let out = tessera(dir.path(), &args);
        assert_eq!(out.code, 0, "{}", out.stderr);
        json_losses(&out.stdout)
    };
    let straight = run(&["--steps", "6"]);
    assert_eq!(straight.iter().map(|s| s.0).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6]);
    let first_half = run(&["--steps", "3", "--checkpoint-dir", "ckpt", "--checkpoint-every", "3"]);
    assert_eq!(first_half[..], straight[..3]);
    let saved = dir.path().join("ckpt");
    assert_eq!(crate::support::files_in(&saved), ["step-00000003"], "complete checkpoints only, no temporaries");
    let step_dir = saved.join("step-00000003");
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(step_dir.join("index.json")).expect("index")).expect("json");
    assert_eq!((index["step"].as_u64(), index["optimizer"].as_str()), (Some(3), Some("adamw")));
    let tensors = index["tensors"].as_array().expect("tensors");
    // Every parameter with its two AdamW moments, one file each.
    let params = tensors.iter().filter(|t| t["kind"] == "param").count();
    assert_eq!(tensors.len(), 3 * params);
    for t in tensors {
        assert!(step_dir.join(t["file"].as_str().expect("file")).is_file(), "{t}");
        // One process writes whole tensors: one block at the origin.
        assert_eq!(t["block"]["shape"], t["shape"], "{t}");
    }
    let resumed = run(&["--steps", "6", "--resume", "ckpt"]);
    assert_eq!(resumed[..], straight[3..], "losses after resuming differ from the uninterrupted run");
    // Nothing to resume from is a clear error.
    std::fs::create_dir(dir.path().join("empty")).expect("mkdir");
    let out = tessera(dir.path(), &["train", model, "--steps", "1", "--data", CORPUS, "--resume", "empty"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("no checkpoint"), "{}", out.stderr);
}

/// One flipped bit in a tensor file resumed with loss 7.7e35, and a checkpoint of another model
/// resumed whenever its tensors had the same names and shapes (here: another head count).
#[test]
fn a_corrupt_or_foreign_checkpoint_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = "gpt:layers=1,hidden=16,heads=2,seq=8,vocab=256";
    let other = "gpt:layers=1,hidden=16,heads=4,seq=8,vocab=256";
    let train = |model: &str, extra: &[&str]| {
        let mut args = vec!["train", model, "--data", CORPUS, "--batch", "2", "--format", "json"];
        args.extend(extra);
        tessera(dir.path(), &args)
    };
    let out = train(model, &["--steps", "1", "--checkpoint-dir", "ckpt", "--checkpoint-every", "1"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let step_dir = dir.path().join("ckpt/step-00000001");
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(step_dir.join("index.json")).expect("index")).expect("json");
    assert_eq!(index["format"], "tessera-checkpoint/3");
    assert_eq!(index["fingerprint"].as_str().map(str::len), Some(64), "{index}");
    let first = &index["tensors"][0];
    let (name, file) = (first["name"].as_str().expect("name"), first["file"].as_str().expect("file"));
    assert_eq!(first["sha256"].as_str().map(str::len), Some(64), "{first}");
    let path = step_dir.join(file);
    let original = std::fs::read(&path).expect("read");
    let mut flipped = original.clone();
    // The last byte of a little-endian f32 holds its sign and exponent.
    *flipped.last_mut().expect("bytes") ^= 1;
    std::fs::write(&path, &flipped).expect("write");
    let out = train(model, &["--steps", "2", "--resume", "ckpt"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains(&format!("{file}: tensor '{name}' is corrupt: its SHA-256 is ")), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);

    std::fs::write(&path, &original).expect("write");
    let out = train(other, &["--steps", "2", "--resume", "ckpt"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let expected = format!("the checkpoint is of another model: it trained '{model}' (fingerprint ");
    assert!(out.stderr.contains(&expected), "{}", out.stderr);
    assert!(out.stderr.contains(&format!("this run trains '{other}' (fingerprint ")), "{}", out.stderr);
    // The restored checkpoint of the same model resumes, also under what a resumed run may
    // change: another learning rate, batch and micro-batch count (the fingerprint is the
    // model's, not the run's).
    let out = train(model, &["--steps", "2", "--resume", "ckpt"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(json_losses(&out.stdout).iter().map(|s| s.0).collect::<Vec<_>>(), [2]);
    let changed = ["--steps", "2", "--resume", "ckpt", "--lr", "0.001", "--batch", "4", "--micro-batches", "2"];
    let out =
        tessera(dir.path(), &[&["train", model, "--data", CORPUS, "--format", "json"][..], &changed[..]].concat());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(json_losses(&out.stdout).iter().map(|s| s.0).collect::<Vec<_>>(), [2]);
}

#[test]
fn text_output_and_argument_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = "gpt:layers=1,hidden=16,heads=2,seq=8,vocab=256";
    let out =
        tessera(dir.path(), &["train", model, "--steps", "2", "--data", CORPUS, "--optimizer", "sgd", "--lr", "0.1"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.starts_with("training gpt:layers=1"), "{}", out.stdout);
    assert_eq!(out.stdout.lines().filter(|l| l.starts_with("step ")).count(), 2, "{}", out.stdout);
    let out = tessera(dir.path(), &["train", model, "--steps", "1", "--data", "missing.txt"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("missing.txt: cannot read the training data"), "{}", out.stderr);
    let out = tessera(dir.path(), &["train", model, "--steps", "1", "--data", CORPUS, "--checkpoint-every", "2"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("--checkpoint-every needs --checkpoint-dir"), "{}", out.stderr);
}

#[test]
fn two_micro_batches_update_like_one_batch_of_both() {
    // f32 without dropout, so both graphs compute the same function of the same tokens.
    let spec = "gpt:layers=1,hidden=16,heads=2,seq=8,vocab=256,dtype=fp32,dropout=0";
    let sgd = Optimizer::Sgd(Sgd { lr: 0.5, momentum: 0.0, weight_decay: 0.0 });
    let whole = train::load_model(spec, 4, None).expect("batch 4");
    let halves = train::load_model(spec, 2, None).expect("batch 2");
    let one =
        train_step::build(&whole.forward, &TrainStepConfig { optimizer: sgd, micro_batches: 1, master: DType::F32 })
            .expect("step");
    let two =
        train_step::build(&halves.forward, &TrainStepConfig { optimizer: sgd, micro_batches: 2, master: DType::F32 })
            .expect("step");
    let state = train::init_state(&one, 3);
    let corpus = ByteCorpus::read(Path::new(CORPUS)).expect("corpus");
    let (tokens, targets) = corpus.next_batch(&mut 0, 4, 8, 11).expect("batch");
    let rows = |t: &Tensor, r: std::ops::Range<usize>| {
        Tensor::from_i64(DType::I64, vec![r.len(), 8], t.to_i64_vec()[r.start * 8..r.end * 8].to_vec())
    };
    let feeds_for = |step: &train_step::TrainStep, batches: &[(Tensor, Tensor)]| {
        let mut feeds: Vec<(String, Tensor)> = Vec::new();
        for (slot, t) in step.params.iter().zip(&state.params) {
            feeds.push((slot.name.clone(), t.clone()));
        }
        for slot in &step.state {
            let shape = slot.ty.static_shape().expect("static").iter().map(|&d| d as usize).collect();
            feeds.push((slot.name.clone(), Tensor::zeros(DType::F32, shape)));
        }
        for (micro, (x, y)) in step.micro_batches.iter().zip(batches) {
            for (name, forward_name) in &micro.activations {
                let v = step.graph.inputs().iter().find(|&&v| step.graph.value(v).name == *name).expect("input");
                let ty = &step.graph.value(*v).ty;
                let t = if forward_name == "tokens" {
                    x.clone()
                } else {
                    let mut rng = tessera_ir::random::SplitMix64::new(0);
                    train::data::auxiliary_input(forward_name, ty, 0.0, &mut rng).expect("aux")
                };
                feeds.push((name.clone(), t));
            }
            feeds.push((micro.targets.clone(), y.clone()));
        }
        interpreter::run(&step.graph, &feeds).expect("step runs")
    };
    let a = feeds_for(&one, &[(tokens.clone(), targets.clone())]);
    let b =
        feeds_for(&two, &[(rows(&tokens, 0..2), rows(&targets, 0..2)), (rows(&tokens, 2..4), rows(&targets, 2..4))]);
    assert_eq!(a.len(), b.len());
    let params = one.graph.inputs().iter().filter(|&&v| one.graph.input_role(v) == Some(InputRole::Parameter)).count();
    for ((name, x), (_, y)) in a.iter().zip(&b).take(1 + params) {
        let (x, y) = (x.to_f64_vec(), y.to_f64_vec());
        let scale = x.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
        for (p, q) in x.iter().zip(&y) {
            assert!((p - q).abs() <= 1e-5 * scale, "{name}: {p} vs {q}");
        }
    }
    // The step moved the weights (the comparison above is not between two untouched copies).
    let (name, moved) = &a[1];
    assert_ne!(moved, &state.params[0], "{name} did not change");
}
