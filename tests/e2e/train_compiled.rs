//! `tessera train` on the compiled step (the default executor): the same losses as the
//! reference interpreter, checkpoints that resume on either executor, and the steps that still
//! fall back to the interpreter inside the artifact, pinned.

use crate::support::tessera;
use std::path::Path;
use tessera::train::{self, compiled::compiled_trainer, data::ByteCorpus, OptimizerKind, TrainConfig, Trainer};
use tessera_runtime::step::StepExecutor;

/// Real English text on every Debian machine (base-files).
const CORPUS: &str = "/usr/share/common-licenses/GPL-3";

/// The benchmark's model (issue 16: two layers, f32, untied head, no dropout). With dropout
/// (0.1) the losses also agree to a few 1e-6 for most steps, but now and then one step's loss
/// differs by 1e-5 to 3e-4 and the next ones agree again (seen at steps 19-20 and 26 of three
/// seeds): f32 against f64 rounding on a batch whose loss is sensitive, not a drift.
const MODEL: &str = "gpt:layers=2,hidden=64,heads=4,seq=64,vocab=256,dtype=f32,tied=false,dropout=0";

fn relative(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-30)
}

#[test]
fn compiled_losses_equal_the_interpreters_over_20_steps() {
    let corpus = ByteCorpus::read(Path::new(CORPUS)).expect("corpus");
    let config =
        TrainConfig { model: MODEL.into(), optimizer: OptimizerKind::AdamW, lr: 3e-3, seed: 11, micro_batches: 1 };
    let model = train::load_model(MODEL, 4, None).expect("model");
    let mut reference = Trainer::on_interpreter(model.clone(), config.clone(), corpus.clone()).expect("interpreter");
    let (mut compiled, _) = compiled_trainer(model, config, corpus).expect("compiled");
    // Everything but the loss's cross-entropy and the embedding gradients' scatters is compiled.
    assert_eq!(compiled.executor().reference_ops(), ["cross_entropy", "scatter", "scatter"]);
    assert!(compiled.executor().describe().contains("3 reference steps (cross_entropy, scatter, scatter)"));
    let mut worst: f64 = 0.0;
    let mut losses = Vec::new();
    for _ in 0..20 {
        let want = reference.train_step().expect("interpreter step").loss;
        let got = compiled.train_step().expect("compiled step").loss;
        worst = worst.max(relative(got, want));
        losses.push(want);
    }
    assert!(worst < 1e-5, "compiled losses differ from the interpreter's by {worst:e} (relative)");
    // The run learns, so equal losses mean equal updates, not two runs standing still.
    assert!(losses[19] < losses[0] - 0.5, "losses {losses:?}");
    // The weights read back from the arena are the interpreter's too, but for the few elements
    // whose AdamW update follows the sign of a gradient that is rounding noise (about lr per
    // step either way, in either precision).
    let (got, want) = (compiled.state().expect("state").clone(), reference.state().expect("state").clone());
    assert_eq!((got.step, got.data_position, got.rng), (want.step, want.data_position, want.rng));
    let (mut close, mut total) = (0usize, 0usize);
    for (g, w) in got.params.iter().chain(&got.optimizer_state).zip(want.params.iter().chain(&want.optimizer_state)) {
        let w = w.to_f64_vec();
        let scale = w.iter().fold(0.0f64, |a, x| a.max(x.abs()));
        close += g.to_f64_vec().iter().zip(&w).filter(|(x, y)| (*x - *y).abs() <= 1e-4 * scale).count();
        total += w.len();
    }
    assert!(close as f64 >= 0.99 * total as f64, "only {close} of {total} state elements agree");
}

fn json_losses(stdout: &str) -> Vec<(u64, f64)> {
    stdout
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object per line");
            (v["step"].as_u64().expect("step"), v["loss"].as_f64().expect("loss"))
        })
        .collect()
}

#[test]
fn a_checkpoint_of_one_executor_resumes_on_the_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = "gpt:layers=1,hidden=16,heads=2,seq=8,vocab=256,dtype=f32";
    let run = |extra: &[&str]| {
        let mut args = vec!["train", model, "--data", CORPUS, "--batch", "2", "--format", "json", "--seed", "5"];
        args.extend(extra);
        let out = tessera(dir.path(), &args);
        assert_eq!(out.code, 0, "{}", out.stderr);
        json_losses(&out.stdout)
    };
    let compiled = run(&["--steps", "6"]);
    let reference = run(&["--steps", "6", "--executor", "reference"]);
    for (c, r) in compiled.iter().zip(&reference) {
        assert!(relative(c.1, r.1) < 1e-5, "{compiled:?} vs {reference:?}");
    }
    // Three steps on each executor, then three on the other.
    let save = |executor: &str, ckpt: &str| {
        run(&["--steps", "3", "--executor", executor, "--checkpoint-dir", ckpt, "--checkpoint-every", "3"])
    };
    save("reference", "from-reference");
    save("compiled", "from-compiled");
    let on_compiled = run(&["--steps", "6", "--resume", "from-reference"]);
    let on_reference = run(&["--steps", "6", "--resume", "from-compiled", "--executor", "reference"]);
    for resumed in [&on_compiled, &on_reference] {
        assert_eq!(resumed.iter().map(|s| s.0).collect::<Vec<_>>(), [4, 5, 6]);
        for (got, want) in resumed.iter().zip(&compiled[3..]) {
            assert!(relative(got.1, want.1) < 1e-5, "resumed {resumed:?}, uninterrupted {compiled:?}");
        }
    }
    // A compiled run resumed from its own checkpoint is the uninterrupted run, bit for bit.
    let again = run(&["--steps", "6", "--resume", "from-compiled"]);
    assert_eq!(again[..], compiled[3..]);
}

#[test]
fn the_start_line_names_the_executor_and_profile_needs_the_compiled_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = "gpt:layers=1,hidden=16,heads=2,seq=8,vocab=256,dtype=f32";
    let args = ["train", model, "--steps", "2", "--data", CORPUS, "--batch", "2"];
    let out = tessera(dir.path(), &[&args[..], &["--profile"]].concat());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("on compiled CPU artifact, 1 process, 3 reference steps"), "{}", out.stdout);
    assert!(out.stdout.contains("compiled the step in"), "{}", out.stdout);
    assert!(out.stderr.contains("profile of the compiled step, summed over 2 steps"), "{}", out.stderr);
    assert!(out.stderr.contains("carried outputs"), "{}", out.stderr);
    let out = tessera(dir.path(), &[&args[..], &["--executor", "reference"]].concat());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("on reference interpreter, 1 process"), "{}", out.stdout);
    let out = tessera(dir.path(), &[&args[..], &["--executor", "reference", "--profile"]].concat());
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("--profile times the compiled step"), "{}", out.stderr);
}

#[test]
fn carried_state_is_checked_when_bound() {
    use tessera_runtime::executor::{cpu::CpuExecutor, load};
    use tessera_runtime::step::{CarriedValue, CompiledExecutor, StepError};
    let dir = tempfile::tempdir().expect("tempdir");
    let model = "gpt:layers=1,hidden=16,heads=2,seq=8,vocab=256,dtype=f32,dropout=0";
    let out = tessera(dir.path(), &["compile", model, "--train", "--batch", "2", "-o", "art"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let artifact = || load::load(&dir.path().join("art")).expect("artifact");
    let step = train::build_step(
        &train::load_model(model, 2, None).expect("model"),
        &TrainConfig { model: model.into(), optimizer: OptimizerKind::AdamW, lr: 3e-3, seed: 0, micro_batches: 1 },
    )
    .expect("step");
    let carried = train::carried_state(&step).expect("carried");
    let state: Vec<(String, tessera_ir::tensor::Tensor)> = {
        let s = train::init_state(&step, 0);
        carried.iter().map(|c| c.input.clone()).zip(s.params.into_iter().chain(s.optimizer_state)).collect()
    };
    let error = |r: Result<CompiledExecutor, StepError>| r.err().map(|e| e.to_string()).unwrap_or_default();
    // A tensor missing from the state, and one output carried onto an input of another shape.
    let missing = error(CompiledExecutor::new(artifact(), carried.clone(), &state[1..]));
    assert!(missing.contains(&format!("{} tensors given, {} carried", state.len() - 1, state.len())), "{missing}");
    let mut crossed = carried.clone();
    let (first, last) = (crossed[0].output.clone(), crossed[crossed.len() - 1].output.clone());
    crossed[0].output = last;
    crossed.last_mut().expect("carried").output = first;
    let crossed = error(CompiledExecutor::new(artifact(), crossed, &state));
    assert!(crossed.contains("cannot carry output"), "{crossed}");
    // Only a resident input can take a carried output.
    let executor = CpuExecutor::new(artifact()).expect("executor");
    let bound = executor.bind::<tessera_ir::tensor::Tensor>(&[]).expect("bind");
    let CarriedValue { input, output } = &carried[0];
    let refused = bound.carry(&[(output.clone(), input.clone())]).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(refused.contains("only a resident input can carry an output"), "{refused}");
    let unknown = bound.carry(&[("nothing".into(), input.clone())]).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(unknown.contains("no output of this name"), "{unknown}");
}
