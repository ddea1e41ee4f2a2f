//! `tessera compile --train`: the whole training step as a CPU artifact. One step through
//! `tessera run` gives the reference interpreter's loss, updated weights and optimizer state.

use crate::support::tessera;
use std::path::Path;
use tessera::train::{self, data::ByteCorpus, OptimizerKind, TrainConfig, Trainer};
use tessera_ir::tensor::Tensor;
use tessera_runtime::npy::{read_npy, write_npy};
use tessera_runtime::step::{InterpreterExecutor, StepError, StepExecutor};

/// One layer, dropout on (the step then takes keep-masks as inputs too).
const MODEL: &str = "gpt:layers=1,hidden=32,heads=2,seq=8,vocab=256,dtype=f32,dropout=0.1";

/// The interpreter, remembering what it was fed and what it returned (the carried state
/// included: the step graph's inputs and outputs, all of them).
struct Recording {
    inner: InterpreterExecutor,
    feeds: Vec<(String, Tensor)>,
    outputs: Vec<(String, Tensor)>,
}

impl StepExecutor for Recording {
    fn set_state(&mut self, state: &[(String, Tensor)]) -> Result<(), StepError> {
        self.inner.set_state(state)
    }

    fn run_step(&mut self, feeds: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>, StepError> {
        let before = self.inner.state()?;
        let outputs = self.inner.run_step(feeds)?;
        self.feeds = before.into_iter().chain(feeds.iter().cloned()).collect();
        // The graph's outputs: the loss, then the carried ones (named by the graph).
        let graph = self.inner.graph();
        let names: Vec<String> = graph.outputs().iter().map(|&v| graph.value(v).name.clone()).collect();
        let carried = self.inner.state()?.into_iter().map(|(_, t)| t);
        self.outputs = outputs.iter().cloned().chain(names[1..].iter().cloned().zip(carried)).collect();
        Ok(outputs)
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>, StepError> {
        self.inner.state()
    }

    fn describe(&self) -> String {
        "recording interpreter".into()
    }
}

/// Largest |got - want| / (atol + |want|).
fn worst(got: &Tensor, want: &Tensor, atol: f64) -> f64 {
    assert_eq!(got.shape, want.shape);
    got.to_f64_vec().iter().zip(want.to_f64_vec()).map(|(a, b)| (a - b).abs() / (atol + b.abs())).fold(0.0, f64::max)
}

fn one_step(cwd: &Path, optimizer: OptimizerKind, flag: &str) {
    let lr = 1e-2;
    let dir = format!("art-{flag}");
    let out = tessera(
        cwd,
        &[
            "compile",
            MODEL,
            "--train",
            "--optimizer",
            flag,
            "--lr",
            "1e-2",
            "--batch",
            "2",
            "--micro-batches",
            "2",
            "-o",
            &dir,
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("training step"), "{}", out.stdout);

    let model = train::load_model(MODEL, 2, None).expect("model");
    let config = TrainConfig { model: MODEL.into(), optimizer, lr, seed: 3, micro_batches: 2 };
    let step = train::build_step(&model, &config).expect("step");
    let carried = train::carried_state(&step).expect("carried state");
    let inner = InterpreterExecutor::carrying(step.graph.clone(), carried).expect("interpreter");
    let text: Vec<u8> = b"the quick brown fox jumps over the lazy dog; ".repeat(20);
    let recording = Recording { inner, feeds: Vec::new(), outputs: Vec::new() };
    let mut trainer = Trainer::new(model, step, config, ByteCorpus::from_bytes(text), recording).expect("trainer");
    trainer.train_step().expect("interpreter step");
    let (feeds, want) = (trainer.executor().feeds.clone(), trainer.executor().outputs.clone());

    let inputs = cwd.join(format!("inputs-{flag}"));
    std::fs::create_dir_all(&inputs).expect("mkdir");
    let mut args: Vec<String> = vec!["run".into(), dir.clone(), "-o".into(), format!("out-{flag}")];
    for (i, (name, tensor)) in feeds.iter().enumerate() {
        let file = inputs.join(format!("{i}.npy"));
        write_npy(&file, tensor).expect("write npy");
        args.push("--input".into());
        args.push(format!("{name}={}", file.display()));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = tessera(cwd, &args);
    assert_eq!(run.code, 0, "{}", run.stderr);

    let (loss_name, loss) = &want[0];
    let got_loss = read_npy(&cwd.join(format!("out-{flag}/{loss_name}.npy"))).expect("loss");
    assert!(worst(&got_loss, loss, 0.0) < 1e-5, "{flag}: loss {:?} vs {:?}", got_loss.to_f64_vec(), loss.to_f64_vec());
    for (name, tensor) in &want[1..] {
        let got = read_npy(&cwd.join(format!("out-{flag}/{name}.npy"))).unwrap_or_else(|e| panic!("{name}: {e}"));
        // AdamW's first update is lr·g/(|g| + eps), about lr·sign(g): where the gradient is
        // rounding noise (e.g. the key bias, whose exact gradient is 0 by softmax's shift
        // invariance), its sign and so the update are noise in either precision. Those
        // elements are left out of the weight comparison; `m` and `v` (linear and quadratic in
        // g) are compared everywhere.
        let m = want.iter().find(|(n, _)| *n == name.replace(".next", ".m.next")).map(|(_, m)| m.to_f64_vec());
        let noise =
            |i: usize| m.as_ref().is_some_and(|m| m[i].abs() < 1e-4 * m.iter().fold(0.0f64, |a, x| a.max(x.abs())));
        let (got, tensor) = (&got, tensor);
        // f32 kernels against the f64-evaluated, f32-rounded reference.
        // `p - update` cancels where the two nearly agree, so the error is relative to the larger.
        let input = name.strip_suffix(".next").unwrap_or_else(|| panic!("{flag}: output {name} is not a .next"));
        let (_, before) = feeds.iter().find(|(n, _)| n == input).unwrap_or_else(|| panic!("no input {input}"));
        let (gv, tv, bv) = (got.to_f64_vec(), tensor.to_f64_vec(), before.to_f64_vec());
        for i in (0..tv.len()).filter(|&i| !noise(i)) {
            let relative = (gv[i] - tv[i]).abs() / (1e-5 + tv[i].abs().max(bv[i].abs()));
            assert!(relative < 2e-3, "{flag}: {name}[{i}] is {}, the interpreter's {}", gv[i], tv[i]);
        }
        // The updates themselves agree to 1% (beyond f32 rounding of the values), and they are
        // well above that floor, so a missing or wrong update cannot pass.
        let (b, g, t) = (before.to_f64_vec(), got.to_f64_vec(), tensor.to_f64_vec());
        let largest_update = t.iter().zip(&b).map(|(t, b)| (t - b).abs()).fold(0.0, f64::max);
        for i in (0..t.len()).filter(|&i| !noise(i)) {
            let (want_update, got_update) = (t[i] - b[i], g[i] - b[i]);
            // Gradients are sums: their f32 error scales with the tensor's largest entries.
            let allowed = 1e-2 * want_update.abs()
                + 1e-3 * largest_update
                + 4.0 * f64::from(f32::EPSILON) * b[i].abs().max(t[i].abs());
            assert!(
                (got_update - want_update).abs() <= allowed,
                "{flag}: {name}[{i}] moved by {got_update:e}, the interpreter by {want_update:e}"
            );
        }
        let largest_value = t.iter().chain(&b).fold(0.0f64, |a, x| a.max(x.abs()));
        assert!(
            largest_update > 50.0 * f64::from(f32::EPSILON) * largest_value,
            "{flag}: {name} hardly changed ({largest_update:e}), too little for the comparison to mean anything"
        );
    }
}

#[test]
fn a_compiled_training_step_matches_the_interpreter_step() {
    let tmp = tempfile::tempdir().expect("tempdir");
    one_step(tmp.path(), OptimizerKind::Sgd, "sgd");
    one_step(tmp.path(), OptimizerKind::AdamW, "adamw");
}
